"""A small framework of local HTTP servers that emulate vendor APIs, quirks included.

One `Site` is one origin (one port on 127.0.0.1) served by the standard library's
``http.server.ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per connection). A site has a route
table (method + regular expression on the path → handler), a request log, a fault switchboard
(`vidfs.emulator.faults`) and a control API under ``/_emulator/``:

==========================================  ==============================================================
``GET  /_emulator/info``                    url, control_url, config (the vidfs TOML table)
``GET  /_emulator/requests``                the request log, a JSON list (``?method=HEAD&path=<regex>``);
                                            a parent's includes its subsites' (``origin`` names the site)
``POST /_emulator/requests/clear``          empty the log (and the subsites' logs)
``GET  /_emulator/faults``                  rules with their ``fired`` counters and the RNG seed
``POST /_emulator/faults``                  ``{"rules": [...], "seed": 0}`` replaces every rule (subsites too)
``GET  /_emulator/catalog``                 what the emulated vendor holds (emulator-specific JSON)
``GET|POST /_emulator/settings``            read / change emulator knobs (``{"jwt_lifetime": 3}``)
``POST /_emulator/mutate``                  emulator-specific changes (``{"action": "delete", ...}``)
==========================================  ==============================================================

Control requests are neither logged nor faulted. Every other request is logged once answered: method,
path with query, headers (lower-cased names), status, body bytes sent, start time, duration, faults fired.

Writing a new emulator module (``vidfs/emulator/<vendor>.py``)
----------------------------------------------------------------
1. Subclass `Site`; in ``__init__`` call ``super().__init__("<vendor>", host=..., port=..., seed=...)``
   and register routes::

       self.add_route("GET", r"/api/v1/videos", self.list_videos)
       self.add_route(("GET", "HEAD"), r"/files/(?P<id>[^/]+)", self.download)

   Patterns must match the whole path (no query); named groups land in ``req.params`` (URL-decoded).
2. A handler takes the `Request` and answers through it::

       def list_videos(self, req: Request) -> None:
           page = int(req.arg("page", "1"))
           req.send_json(200, {"data": [...]}, headers={"X-Total": "3"})

       def download(self, req: Request) -> None:
           serve_file(req, path, etag=sha, content_type="video/mp4", filename_for_disposition="a.mp4")

   ``raise HttpError(404, "no such video")`` answers with `Site.error_body` (override it to give the
   vendor's error shape) or with an explicit ``body=``. ``req.json()`` parses the request body;
   ``req.query`` / ``req.arg()`` give query parameters; ``req.headers`` the request headers.
   Use `serve_file` for every media download: it does Range/HEAD/ETag/304/If-Range and the body faults.
3. Override the hooks the control API calls: `Site.catalog` (JSON the tests compare the mount with),
   `Site.settings` / `Site.update_settings`, `Site.mutate`, and `Site.config` (the provider's vidfs TOML
   table, e.g. ``{"type": "valt", "base_url": self.url + "/api/v3", ...}``).
4. Need a second origin (e.g. a storage host that download URLs redirect to)? Create another `Site`
   (only routes, no hooks needed) and append it to ``self.subsites``: it starts and stops with its parent
   and shows in the ready line.
5. Expose ``create_site(options: EmulatorOptions) -> Site`` at module level (generate media there with
   `vidfs.emulator.media.ensure_media`), and add one line to ``EMULATORS`` in ``vidfs/emulator/__init__.py``.

In-process use (tests)::

    with start_sites("pixop", page_size=2) as sites:
        site = sites["pixop"]          # .url, .faults, .log, .catalog(), .mutate(), .close()

From the command line: ``python -m vidfs.emulator --provider pixop`` (see ``__main__.py``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, ClassVar, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from vidfs.emulator import faults as fault_kinds
from vidfs.emulator.faults import FaultRule, Faults

JSON = dict[str, Any]
Handler = Callable[["Request"], None]

_CHUNK = 1 << 20  # fallback copy size
_SENDFILE_MAX = 8 << 20  # per os.sendfile call
_MAX_DRAIN = 64 << 20  # unread request bodies larger than this close the connection instead


@dataclass
class EmulatorOptions:
    """Options every emulator module's ``create_site`` receives. None means "the module's default"."""

    host: str = "127.0.0.1"
    port: int = 0
    media_dir: Path | None = None
    page_size: int | None = None
    jwt_lifetime: int | None = None
    catalog: str = "small"  # small | big
    videos_per_project: int | None = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # extra knobs, applied via update_settings
    verbose: bool = False


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
    """Thread-safe list of answered requests (dicts). Bounded: the oldest entries drop first."""

    def __init__(self, limit: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._entries: list[JSON] = []
        self._seq = 0
        self._limit = limit

    def append(self, entry: JSON) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            if len(self._entries) > self._limit:
                del self._entries[: len(self._entries) - self._limit]

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

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            return n


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

    # per-request state (reset in _dispatch)
    path_only: str = "/"
    query: dict[str, list[str]]
    params: dict[str, str]
    faults_fired: list[str]
    _status: int = 0
    _bytes: int = 0
    _headers_sent: bool = False
    _body: bytes | None = None
    _aborted: bool = False

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

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        if self._entry is not None:
            self._entry["status"] = code  # visible in the log before the client has the answer
        super().send_response(code, message)

    def end_headers(self) -> None:
        super().end_headers()
        self._headers_sent = True

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
        self, status: int, headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()
    ) -> None:
        """Send the status line and headers (include Content-Length yourself)."""
        self.send_response(status)
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            self.send_header(name, value)
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
        self.start_response(status, hdrs)
        if self.command != "HEAD" and status not in (204, 304):
            self.write(body)

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
                "headers": _header_dict(self.headers),
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


def _header_dict(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    site: Site

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.site._track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.site._track(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away, connection aborted on purpose, ...
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Site:
    """One emulated origin. Subclass it per vendor (see the module docstring)."""

    def __init__(
        self,
        name: str = "site",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.name = name
        self.verbose = verbose
        self.routes: list[Route] = []
        self.log = RequestLog()
        self.faults = Faults(seed)
        self.subsites: list[Site] = []
        self.closing = threading.Event()
        self._connections: set[Any] = set()
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._work_dir: Path | None = None
        handler_cls = type(f"{type(self).__name__}Request", (Request,), {"site": self})
        server_cls = _Server6 if ":" in host else _Server
        self.server = server_cls((host, port), handler_cls, bind_and_activate=False)
        self.server.site = self
        try:
            self.server.server_bind()
            self.server.server_activate()
        except BaseException:
            self.server.server_close()
            raise
        self.host = host
        self.port = self.server.server_port

    # ---- identity ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The origin, e.g. ``http://127.0.0.1:43121`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.url}/_emulator"

    def info(self) -> JSON:
        """What the CLI prints for this site in its ready line."""
        out: JSON = {"url": self.url, "control_url": self.control_url, "config": self.config()}
        if self.subsites:
            out["subsites"] = {s.name: {"url": s.url, "control_url": s.control_url} for s in self.subsites}
        return out

    # ---- routes -----------------------------------------------------------------------------------------
    def add_route(self, methods: str | Iterable[str], pattern: str, handler: Handler) -> None:
        """Answer `methods` on paths fully matching regex `pattern` with `handler(req)`."""
        names = [methods] if isinstance(methods, str) else list(methods)
        self.routes.append(Route(frozenset(m.upper() for m in names), re.compile(pattern), handler))

    def route(self, methods: str | Iterable[str], pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(methods, pattern, handler)
            return handler

        return register

    # ---- hooks (override per vendor) ----------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        """The vendor's error body for `status` (used by HttpError without body, 404/405 routes, 500)."""
        return {"error": message, "status": status}

    def catalog(self) -> JSON:
        return {}

    def settings(self) -> JSON:
        return {}

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        """Apply knobs (unknown names → ValueError) and return every current setting."""
        if changes:
            raise ValueError(f"unknown settings: {', '.join(changes)}")
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        """Apply an emulator-specific change (KeyError → 404, ValueError → 400)."""
        raise ValueError(f"{self.name} supports no mutations")

    def config(self) -> JSON:
        """The provider's table in vidfs's TOML config, pointing at this site."""
        return {}

    # ---- helpers ----------------------------------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns False (early) when the site is closing."""
        return not self.closing.wait(max(0.0, float(seconds)))

    def _track(self, conn: Any, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, req: Request) -> None:
        method, target = req.command, req.path
        if self.faults:
            rule = self.faults.take({fault_kinds.LATENCY}, method, target)
            if rule is not None:
                req.faults_fired.append(rule.kind)
                self.wait(rule["seconds"])
            rule = self.faults.take({fault_kinds.STALL}, method, target, lambda r: bool(r["before_headers"]))
            if rule is not None:
                req.faults_fired.append("stall_before_headers")
                self.wait(rule["seconds"])
            rule = self.faults.take(fault_kinds.PRE_RESPONSE_KINDS, method, target)
            if rule is not None:
                req.faults_fired.append(rule.kind)
                _answer_fault(req, rule)
                return
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.fullmatch(req.path_only)
            if match is None:
                continue
            if method not in route.methods:
                allowed |= route.methods
                continue
            req.params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            route.handler(req)
            if req._status == 0:  # a handler must answer: never leave the client waiting
                raise RuntimeError(f"handler for {method} {req.path_only} sent no response")
            return
        if allowed:
            raise HttpError(
                405, f"method {method} not allowed", headers={"Allow": ", ".join(sorted(allowed))}
            )
        raise HttpError(404, f"no such resource: {req.path_only}")

    def _fault_boards(self) -> list[Faults]:
        """This site's switchboard and its subsites' (once each: a subsite may share its parent's)."""
        boards: list[Faults] = []
        for site in (self, *self.subsites):
            if all(site.faults is not b for b in boards):
                boards.append(site.faults)
        return boards

    def _faults_snapshot(self) -> JSON:
        """The rules with `fired` summed over every switchboard of this vendor."""
        boards = self._fault_boards()
        snapshot = boards[0].snapshot()
        for board in boards[1:]:
            for rule, other in zip(snapshot["rules"], board.snapshot()["rules"], strict=False):
                rule["fired"] = rule.get("fired", 0) + other.get("fired", 0)
        return snapshot

    def _control(self, req: Request) -> None:
        path, method = req.path_only.rstrip("/"), req.command
        try:
            if path in ("/_emulator", "/_emulator/info") and method == "GET":
                req.send_json(200, {"name": self.name, **self.info()})
            elif path == "/_emulator/requests" and method == "GET":
                # A parent's log includes its subsites' (each entry names its `origin`), so one control URL
                # shows every request of an emulated vendor, API and storage alike.
                entries = []
                for site in (self, *self.subsites):
                    for entry in site.log.entries(method=req.arg("method"), path=req.arg("path")):
                        entry["origin"] = site.name
                        entries.append(entry)
                entries.sort(key=lambda e: (e["time"], e["origin"], e["seq"]))
                req.send_json(200, entries)
            elif path == "/_emulator/requests/clear" and method == "POST":
                cleared = sum(site.log.clear() for site in (self, *self.subsites))
                req.send_json(200, {"cleared": cleared})
            elif path == "/_emulator/faults" and method == "GET":
                req.send_json(200, self._faults_snapshot())
            elif path == "/_emulator/faults" and method == "POST":
                body = req.json()
                if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
                    raise ValueError('expected {"rules": [...]}')
                # Rules posted to a parent apply to its subsites too (each rule filters by path itself).
                snapshot = self._faults_snapshot()  # the counters of the rules being replaced
                for board in self._fault_boards():
                    board.set_rules(body["rules"], body.get("seed"))
                req.send_json(200, snapshot)
            elif path == "/_emulator/catalog" and method == "GET":
                req.send_json(200, self.catalog())
            elif path == "/_emulator/settings" and method == "GET":
                req.send_json(200, self.settings())
            elif path == "/_emulator/settings" and method == "POST":
                body = req.json()
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object of settings")
                req.send_json(200, self.update_settings(body))
            elif path == "/_emulator/mutate" and method == "POST":
                body = req.json()
                if not isinstance(body, dict):
                    raise ValueError('expected {"action": ...}')
                req.send_json(200, self.mutate(body))
            else:
                req.send_json(404, {"error": f"no control endpoint {method} {path}"})
        except HttpError:
            raise
        except KeyError as exc:
            req.send_json(404, {"error": f"not found: {exc.args[0] if exc.args else exc}"})
        except (ValueError, TypeError) as exc:
            req.send_json(400, {"error": str(exc)})

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve in a background (daemon) thread. Idempotent; starts subsites too."""
        for sub in self.subsites:
            sub.start()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"emulator-{self.name}"
            )
            self._thread.daemon = True
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end open connections (stalled handlers wake up), close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.closing.set()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()
        for sub in self.subsites:
            sub.close()
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    @property
    def work_dir(self) -> Path:
        """A private scratch directory (changed-content variants...), removed when the site closes."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix=f"vidfs-{self.name}-"))
        return self._work_dir

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer_fault(req: Request, rule: FaultRule) -> None:
    if rule.kind == fault_kinds.RETRY_AFTER:
        status = int(rule["status"])
        req.send_text(status, "Too Many Requests (emulated)\n", headers={"Retry-After": str(rule["seconds"])})
    else:
        status = int(rule["status"])
        body = rule["body"] if rule["body"] is not None else f"emulated fault: HTTP {status}\n"
        req.send_text(status, str(body))


# ---------------------------------------------------------------------------------------------------------
# serving files

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_UNSATISFIABLE = (-1, -1)


def quote_etag(etag: str) -> str:
    """``abc`` → ``"abc"``; already quoted or weak (``W/"..."``) values are kept."""
    if etag.startswith('"') or etag.startswith("W/"):
        return etag
    return f'"{etag}"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def _etag_list_matches(current: str, header: str) -> bool:
    """If-None-Match semantics: weak comparison against a comma list (or ``*``)."""
    if header.strip() == "*":
        return True
    wanted = _opaque(current)
    return any(_opaque(item) == wanted for item in header.split(",") if item.strip())


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` (+ ``filename*`` RFC 5987 when not plain ASCII)."""
    # Control characters (NUL, newline...) can never go raw into a header: they take the RFC 5987 path.
    printable = "".join(c if 32 <= ord(c) < 127 else "\ufffd" for c in filename)
    ascii_name = printable.encode("ascii", "replace").decode("ascii").replace("?", "_")
    escaped = ascii_name.replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{escaped}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """A single byte range → (first, last) inclusive; None = ignore (absent, malformed, multi-range);
    `_UNSATISFIABLE` = answer 416."""
    if not header or "," in header:
        return None
    m = _RANGE_RE.match(header)
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if n == 0 or total == 0:
            return _UNSATISFIABLE
        return (max(0, total - n), total - 1)
    first = int(first_s)
    last = int(last_s) if last_s else total - 1
    if last_s and last < first:
        return None  # syntactically invalid: ignore the header
    if first >= total:
        return _UNSATISFIABLE
    return (first, min(last, total - 1))


def _if_range_allows(value: str, etag: str | None, last_modified: float | None) -> bool:
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        # strong comparison: weak tags never match
        return etag is not None and not value.startswith("W/") and not etag.startswith("W/") and value == etag
    if last_modified is None:
        return False
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    return int(when) == int(last_modified)


def serve_file(
    req: Request,
    path_on_disk: str | os.PathLike[str],
    *,
    etag: str | None = None,
    content_type: str = "application/octet-stream",
    filename_for_disposition: str | None = None,
    last_modified: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer GET/HEAD for a file: Range (single; multi → 200), 206/416, ETag, 304, If-Range, faults.

    `etag` is quoted if it is not already; `last_modified` is epoch seconds; `headers` are added as is.
    """
    method = req.command
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method} not allowed", headers={"Allow": "GET, HEAD"})
    try:
        fh = open(path_on_disk, "rb")  # noqa: SIM115 - closed by the with-block below
    except FileNotFoundError:
        raise HttpError(404, "media file not found") from None
    with fh:
        total = os.fstat(fh.fileno()).st_size
        tag = quote_etag(etag) if etag else None
        base: list[tuple[str, str]] = [("Accept-Ranges", "bytes")]
        if tag:
            base.append(("ETag", tag))
        if last_modified is not None:
            base.append(("Last-Modified", formatdate(last_modified, usegmt=True)))
        if filename_for_disposition:
            base.append(("Content-Disposition", content_disposition(filename_for_disposition)))
        base += list((headers or {}).items())

        inm = req.headers.get("If-None-Match")
        if inm is not None and tag is not None and _etag_list_matches(tag, inm):
            req.start_response(304, base)
            return

        rng = parse_range(req.headers.get("Range"), total)
        if_range = req.headers.get("If-Range")
        if rng is not None and if_range is not None and not _if_range_allows(if_range, tag, last_modified):
            rng = None
        if rng == _UNSATISFIABLE:
            req.start_response(
                416,
                [
                    *base,
                    ("Content-Range", f"bytes */{total}"),
                    ("Content-Type", content_type),
                    ("Content-Length", "0"),
                ],
            )
            return

        status = 206 if rng is not None else 200
        first, last = rng if rng is not None else (0, total - 1)
        content_range = f"bytes {first}-{last}/{total}" if rng is not None else None
        length = last - first + 1 if total else 0

        rule: FaultRule | None = None
        if req.site.faults:

            def applicable(r: FaultRule) -> bool:
                if r.kind in (fault_kinds.IGNORE_RANGE, fault_kinds.WRONG_CONTENT_RANGE):
                    return status == 206
                if r.kind == fault_kinds.STALL:
                    return method == "GET" and not r["before_headers"]
                return method == "GET"  # reset_after, short_body

            rule = req.site.faults.take(fault_kinds.BODY_KINDS, method, req.path, applicable)
        if rule is not None:
            req.faults_fired.append(rule.kind)
            if rule.kind == fault_kinds.IGNORE_RANGE:
                status, first, length, content_range = 200, 0, total, None
            elif rule.kind == fault_kinds.WRONG_CONTENT_RANGE:
                shift = int(rule["shift"])
                content_range = f"bytes {first + shift}-{last + shift}/{total}"

        hdrs = [*base, ("Content-Type", content_type), ("Content-Length", str(length))]
        if content_range is not None:
            hdrs.append(("Content-Range", content_range))
        req.start_response(status, hdrs)
        if method == "HEAD":
            return
        if rule is not None and rule.kind == fault_kinds.STALL and not req.site.wait(rule["seconds"]):
            req.close_connection = True  # the site is closing
            return
        if rule is not None and rule.kind == fault_kinds.RESET_AFTER:
            req.send_file_range(fh, first, min(length, max(0, int(rule["bytes"]))))
            req.abort_connection()
            return
        if rule is not None and rule.kind == fault_kinds.SHORT_BODY:
            req.send_file_range(fh, first, max(0, length - int(rule["bytes"])))
            req.close_connection = True
            return
        req.send_file_range(fh, first, length)


# ---------------------------------------------------------------------------------------------------------
# several sites in one process


def create_site(provider: str, options: EmulatorOptions | None = None, **overrides: Any) -> Site:
    """Build (bind, not start) the site of a registered emulator. `overrides` set `EmulatorOptions` fields."""
    from vidfs.emulator import load_emulator  # late: the package imports this module

    opts = options or EmulatorOptions()
    if overrides:
        opts = EmulatorOptions(**{**opts.__dict__, **overrides})
    site: Site = load_emulator(provider).create_site(opts)
    if opts.settings:
        site.update_settings(opts.settings)
    return site


class SiteGroup:
    """Started sites by provider name; a context manager that closes them all."""

    def __init__(self, sites: Mapping[str, Site]) -> None:
        self.sites: dict[str, Site] = dict(sites)

    def __getitem__(self, name: str) -> Site:
        return self.sites[name]

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites.values())

    def __len__(self) -> int:
        return len(self.sites)

    def info(self) -> JSON:
        """``{provider: {"url", "control_url", "config"}}`` — the CLI's ready line."""
        return {name: site.info() for name, site in self.sites.items()}

    def close(self) -> None:
        for site in self.sites.values():
            site.close()

    def __enter__(self) -> SiteGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_sites(
    *providers: str | Site, options: EmulatorOptions | None = None, **overrides: Any
) -> SiteGroup:
    """Create and start sites (provider names, or ready-made `Site` objects), each in its own thread.

    With a fixed port P, the i-th site created by name gets port P + i.
    """
    opts = options or EmulatorOptions()
    if overrides:
        opts = EmulatorOptions(**{**opts.__dict__, **overrides})
    sites: dict[str, Site] = {}
    try:
        for i, item in enumerate(providers):
            if isinstance(item, Site):
                site = item
            else:
                port = opts.port + i if opts.port else 0
                site = create_site(item, EmulatorOptions(**{**opts.__dict__, "port": port}))
            sites[site.name if isinstance(item, Site) else item] = site
            site.start()
    except BaseException:
        for site in sites.values():
            site.close()
        raise
    return SiteGroup(sites)
