"""One HTTP request as an emulated vendor sees it: the stdlib handler plus the helpers handlers use.

`Request` parses the target (``path_only``, ``query``), logs the request from its start in the site's
`RequestLog` (status and bytes kept current, so a client that has its answer always finds its request
there), dispatches to the site's control API or route table, and turns an `HttpError` into the vendor's
error body. Handlers answer through `send_json`, `send_bytes`, `start_response` + `write`, or, for media,
`vidfs.emulator.serving.serve_file`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import IO, TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from vidfs.emulator.server import Site

JSON = dict[str, Any]
Handler = Callable[["Request"], None]

_CHUNK = 1 << 20  # fallback copy size
_SENDFILE_MAX = 8 << 20  # per os.sendfile call
_MAX_DRAIN = 64 << 20  # unread request bodies larger than this close the connection instead
_MAX_LINE = 65536  # a request header line longer than this is refused (the stdlib's limit)
_MAX_FIELDS = 100  # … and so are more header fields than this
_HTTP_VERSION = re.compile(r"HTTP/(\d{1,10})\.(\d{1,10})")


class HttpError(Exception):
    """Raise in a handler to answer `status` with `body`, or else with `Site.error_body(status, message)`."""

    def __init__(
        self,
        status: int,
        message: str = "",
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.body = body
        self.headers = dict(headers or {})


class RequestLog:
    """Thread-safe log of answered requests (dicts), and how many of each method it took since it was last
    cleared. The entries are bounded (the oldest drop first, in O(1): a walk of 100,000 VALT videos is
    300,000 requests); the counts are not, so a count never stops at the bound (`counts`)."""

    def __init__(self, limit: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[JSON] = deque(maxlen=limit)
        self._seq = 0
        self._methods: Counter[str] = Counter()

    def append(self, entry: JSON) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            self._methods[entry["method"]] += 1

    def entries(self, *, method: str | None = None, path: str | None = None) -> list[JSON]:
        """Copies of the entries, optionally only one method and/or paths where regex `path` is found."""
        pattern = re.compile(path) if path else None
        with self._lock:
            items = list(self._entries)
        return [
            dict(e)
            for e in items
            if (method is None or e["method"] == method.upper())
            and (pattern is None or pattern.search(e["path"]))
        ]

    def count(self, *, method: str | None = None, path: str | None = None) -> int:
        return len(self.entries(method=method, path=path))

    def counts(self) -> dict[str, int]:
        """Requests per method since the last `clear`, however many the entries no longer hold."""
        with self._lock:
            return dict(self._methods)

    def clear(self) -> int:
        with self._lock:
            n = sum(self._methods.values())
            self._entries.clear()
            self._methods.clear()
            return n


class Fields(Mapping[str, str]):
    """A request's header fields by name, case-insensitively: `get` gives a field's first value, `joined`
    (lower-cased names, repeated fields joined with ", ") is what the request log shows. Instead of the
    stdlib's `HTTPMessage`, whose `email` policy parses every name and value again on each `get` and
    `items` (3.9 µs a request here for five fields, looked up four times and logged)."""

    __slots__ = ("_first", "joined")

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self.joined: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self.joined:
            self.joined[key] = f"{self.joined[key]}, {value}"
        else:
            self.joined[key] = self._first[key] = value

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:  # `Mapping.get`, without its try/except
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def values(self) -> ValuesView[str]:  # every value, repeated fields too (a token sent twice is seen)
        return self.joined.values()


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


class Request(BaseHTTPRequestHandler):
    """One HTTP request being answered (the stdlib handler, plus helpers). A per-site subclass sets `site`.

    Attributes for handlers: ``command`` (method), ``path`` (raw target, with query), ``path_only``,
    ``query`` (``{name: [values]}``), ``params`` (route groups), ``headers``, ``site``.
    """

    protocol_version = "HTTP/1.1"
    server_version = "vidfs-emulator"
    sys_version = ""
    site: ClassVar[Site]
    _entry: JSON | None = None  # this request's log entry (see _dispatch)
    _date: ClassVar[tuple[int, str]] = (0, "")  # (second, its `Date` value): `date_time_string`

    # per-request state (reset in _dispatch)
    path_only: str = "/"
    query: dict[str, list[str]]
    params: dict[str, str]
    faults_fired: list[str]
    fault_generation: int = 0  # the fault rules' generation when this request arrived
    _status: int = 0
    _bytes: int = 0
    _headers_sent: bool = False
    _body: bytes | None = None
    _aborted: bool = False
    headers: Fields  # type: ignore[assignment]  # ours (`parse_request`), not the stdlib's `HTTPMessage`
    # set by the stdlib handler, not declared in its stubs
    raw_requestline: bytes
    _headers_buffer: list[bytes]

    # ---- stdlib plumbing -------------------------------------------------------------------------------
    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        if self.site.verbose:
            sys.stderr.write(f"[{self.site.name}] {self.address_string()} {format % args}\n")

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` field, formatted once a second (the stdlib formats it anew for every answer)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, value = Request._date  # one tuple, replaced whole: threads never see half of one
        if second != now:
            value = super().date_time_string(now)
            Request._date = (now, value)
        return value

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        if self._entry is not None:
            self._entry["status"] = code  # visible in the log before the client has the answer
        super().send_response(code, message)

    def end_headers(self) -> None:
        super().end_headers()
        self._headers_sent = True

    def parse_request(self) -> bool:
        """The request line and header fields, read by hand. The stdlib's `parse_request` hands the head to
        the `email` package's feed parser, a third of the emulator's CPU in a 10,000-video walk (whose
        emulator runs on the same two cores as the mount it serves). Same answers as the stdlib's where it
        matters here: 400 for a bad request line, 505 for HTTP/2+, 431 for an overlong line or more than
        `_MAX_FIELDS` fields; keep-alive by version and `Connection`; `Expect: 100-continue` honoured.
        A folded field (obs-fold, RFC 9112 §5.2) is refused with 400."""
        self.command = ""  # an error answered before the method is known (the stdlib: None)
        self.request_version = "HTTP/1.0"  # an error gets a status line (the stdlib's HTTP/0.9: a bare body)
        self.close_connection = True
        self.requestline = line = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            return False
        version = words[-1] if len(words) == 3 else ""
        numbers = _HTTP_VERSION.fullmatch(version)
        if numbers is None:
            self.send_error(400, f"Bad request line ({line[:200]!r})")
            return False
        if int(numbers[1]) >= 2:
            self.send_error(505, f"Invalid HTTP version ({version})")
            return False
        self.command, self.path, self.request_version = words
        self.close_connection = (int(numbers[1]), int(numbers[2])) < (1, 1)
        if self.path.startswith("//"):  # as the stdlib: never read as a scheme-relative URL
            self.path = "/" + self.path.lstrip("/")
        headers = Fields()
        for _ in range(_MAX_FIELDS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                self.send_error(431, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon or not name or name[0] in " \t" or name != name.rstrip():
                self.send_error(400, f"Bad header line ({raw[:200]!r})")
                return False
            headers.add(name, value.strip(" \t\r\n"))
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expects = headers.get("Expect", "").lower() == "100-continue"
        if expects and self.request_version >= "HTTP/1.1":  # an HTTP/1.0 client is not sent a 100
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # ---- helpers for handlers --------------------------------------------------------------------------
    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of query parameter `name`."""
        values = self.query.get(name)
        return values[0] if values else default

    def body(self) -> bytes:
        """The request body (read once; Content-Length bodies only)."""
        if self._body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length > 0 else b""
        return self._body

    def json(self) -> Any:
        """The request body parsed as JSON (empty body → {}); malformed → HttpError 400."""
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HttpError(400, f"malformed JSON body: {exc}") from None

    def start_response(
        self, status: int, headers: Iterable[tuple[str, str]] | Mapping[str, str] = (), *, body: bytes = b""
    ) -> None:
        """Send the status line and headers (include Content-Length yourself), and `body` with them.

        One write for the head and a small body, as web servers send them: two writes on a TCP_NODELAY
        socket are two segments, and a client that reads the head first waits once more for the body."""
        self.send_response(status)
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            self.send_header(name, value)
        if body:
            self._count(len(body))  # before the write: the log never trails what the client has
            self._headers_buffer.append(b"\r\n" + body)  # the stdlib's own head buffer (end_headers)
            self.flush_headers()
            self._headers_sent = True
        else:
            self.end_headers()

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A whole response with a small in-memory body (no body sent for HEAD, 204, 304)."""
        hdrs: list[tuple[str, str]] = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        hdrs += list((headers or {}).items())
        with_body = self.command != "HEAD" and status not in (204, 304)
        self.start_response(status, hdrs, body=body if with_body else b"")

    def send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        """A JSON response (``Content-Type: application/json``)."""
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def send_text(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_bytes(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)

    def write(self, data: bytes) -> None:
        """Write body bytes (counted in the request log)."""
        self._count(len(data))  # before the write: the log never trails what the client has
        self.wfile.write(data)

    def _count(self, sent: int) -> None:
        self._bytes += sent
        if self._entry is not None:
            self._entry["bytes_sent"] = self._bytes

    def send_file_range(self, fh: IO[bytes], offset: int, length: int) -> int:
        """Send `length` bytes of `fh` from `offset`: os.sendfile on the socket, else 1 MiB chunks.

        Returns the bytes sent; fewer than asked (the file shrank) closes the connection afterwards.
        """
        sent = 0
        out_fd = self.connection.fileno()
        in_fd = fh.fileno()
        use_sendfile = hasattr(os, "sendfile")
        while sent < length:
            if use_sendfile:
                try:
                    n = os.sendfile(out_fd, in_fd, offset + sent, min(length - sent, _SENDFILE_MAX))
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP):
                        use_sendfile = False
                        continue
                    raise
            else:
                fh.seek(offset + sent)
                chunk = fh.read(min(_CHUNK, length - sent))
                if chunk:
                    self.wfile.write(chunk)
                n = len(chunk)
            if n == 0:
                break
            sent += n
            self._count(n)
        if sent < length:
            self.close_connection = True
        return sent

    def abort_connection(self) -> None:
        """Abort the TCP connection now with an RST (SO_LINGER 0), whatever was sent so far."""
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        self._aborted = True
        try:
            self.rfile.close()  # drop the makefile reference so close() really closes the fd
        finally:
            sock.close()

    # ---- dispatch ---------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        started = time.time()
        t0 = time.monotonic()
        self._status = 0
        self._bytes = 0
        self._headers_sent = False
        self._body = None
        self._aborted = False
        self.faults_fired = []
        self.fault_generation = self.site.faults.generation
        self.params = {}
        split = urlsplit(self.path)
        self.path_only = split.path or "/"
        self.query = parse_qs(split.query, keep_blank_values=True)
        control = self.path_only == "/_emulator" or self.path_only.startswith("/_emulator/")
        error: str | None = None
        # The log entry exists from the request's start (completed below): a client that got its answer
        # always finds its request in the log, with its status.
        self._entry = None
        if not control:
            self._entry = {
                "time": started,
                "duration": None,
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.joined),
                "status": None,
                "bytes_sent": 0,
                "faults": [],
                "error": None,
                "client_port": self.client_address[1] if self.client_address else None,
            }
            self.site.log.append(self._entry)
        try:
            if control:
                self.site._control(self)
            else:
                self.site._handle(self)
        except HttpError as exc:
            self._answer_error(exc)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            error = type(exc).__name__
            self.close_connection = True
        except Exception as exc:  # a bug in an emulator: answer 500 and say it on stderr
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
            if not self._headers_sent:
                try:
                    self.send_json(500, self.site.error_body(500, error))
                except OSError:
                    self.close_connection = True
            else:
                self.close_connection = True
        finally:
            if not self._aborted:
                self._drain_body()
            if self._entry is not None:
                self._entry.update(
                    duration=round(time.monotonic() - t0, 6),
                    status=self._status,
                    bytes_sent=self._bytes,
                    faults=list(self.faults_fired),
                    error=error,
                )

    def _answer_error(self, exc: HttpError) -> None:
        if self._headers_sent:
            self.close_connection = True
            return
        body = exc.body if exc.body is not None else self.site.error_body(exc.status, exc.message)
        if isinstance(body, (bytes, str)):
            raw = body.encode() if isinstance(body, str) else body
            self.send_bytes(exc.status, raw, "text/plain; charset=utf-8", exc.headers)
        else:
            self.send_json(exc.status, body, exc.headers)

    def _drain_body(self) -> None:
        if self._body is not None or self.close_connection:
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > _MAX_DRAIN:
            self.close_connection = True
        elif length > 0:
            try:
                self.rfile.read(length)
            except OSError:
                self.close_connection = True
