"""HTTP/1.1 on the wire for the lean pool (`vidfs.http.lean`): URLs split, requests written, answers framed.

Why not h11: h11 is a state machine in Python, and a HEAD through it (its events, their validation, the
state transitions of both sides) cost 40 µs of CPU here, a sixth of a whole request on the lean path, in a
cold walk of a 100,000-video catalog that was bound by the daemon's CPU (0.25 ms a HEAD, 0.28 ms an API
call). httptools is llhttp (Node.js's parser, in C) for Python: the same answer's head costs 3 µs.

How an answer is read:
- Its head ends at the first empty line (`\\r\\n\\r\\n`; llhttp takes no bare LF either). Only the head goes
  to a fresh parser, which checks it as strictly as llhttp does (a malformed status line, a bad header
  token, two Content-Lengths or one beside Transfer-Encoding are errors) and gives the status and fields.
- How its body is framed is decided here, as RFC 9112 §6.3 says, because only the caller knows the request
  was a HEAD: none (HEAD, 1xx, 204, 304), a length, chunked (the last transfer coding), or until the
  connection ends. A body of known length is then counted by the caller, off the socket (or into its
  buffers) with no parser at all; a chunked one goes through the same parser (`ChunkedBody`).
- The connection can carry another request when the answer is HTTP/1.1, did not say `Connection: close`,
  and its body had a known end, and nothing came after it.
"""

from __future__ import annotations

import enum
import re
from urllib.parse import urlsplit

import httptools
import httpx


class MalformedAnswer(Exception):
    """The server's answer is not HTTP/1.1 as llhttp reads it (an httpx RemoteProtocolError to callers)."""


class UnsendableRequest(Exception):
    """A request HTTP/1.1 cannot carry (an httpx LocalProtocolError to callers)."""


Origin = tuple[str, str, int]  # (scheme, host as sent to DNS, port)
MAX_HEAD_BYTES = 64 * 1024  # an answer's head larger than this is refused (h11's own limit is 16 KiB)
HEAD_END = b"\r\n\r\n"
NO_BODY_STATUSES = frozenset({204, 304})
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a method or a field name
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: a URL's path and query, already encoded
_NETLOC = re.compile(r"[^/?#]*")  # up to where a URL's path, query or fragment starts (one scan, not three)
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")  # anything but controls (tab allowed)


_PREFIXES: dict[str, tuple[Origin, str]] = {}  # "scheme://netloc" → (origin, Host field)
MAX_PREFIXES = 1024


def prefix_end(url: str) -> int:
    """Where `url`'s `scheme://netloc` ends: at the first `/`, `?` or `#` after `://` (or from the start
    when it has none), else at the URL's end."""
    start = url.find("://")
    match = _NETLOC.match(url, start + 3 if start >= 0 else 0)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def content_coded(fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether an answer's body comes with a Content-Encoding (gzip, br...) besides identity."""
    return any(
        name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity")
        for name, value in fields
    )


def split_url(url: str) -> tuple[Origin, str, str]:
    """`url`'s origin, its Host field and its request target (path and query, no fragment). The part before
    the path is parsed once per `scheme://netloc`: every request of an origin shares it, and `urlsplit` of
    each whole signed URL was 4% of an API call's CPU."""
    end = prefix_end(url)
    prefix = url[:end]
    known = _PREFIXES.get(prefix)
    if known is None:
        known = _parse_prefix(prefix)
        if len(_PREFIXES) >= MAX_PREFIXES:
            _PREFIXES.clear()
        _PREFIXES[prefix] = known
    rest = url[end:].partition("#")[0]
    target = rest if rest.startswith("/") else "/" + rest
    return known[0], known[1], target


def _parse_prefix(prefix: str) -> tuple[Origin, str]:
    parts = urlsplit(prefix)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {scheme or '(none)'}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise httpx.InvalidURL(f"bad port in {parts.netloc.rpartition('@')[2]!r}") from exc
    return (scheme, parts.hostname.lower(), port), parts.netloc.rpartition("@")[2]


def encode_request(method: bytes, target: bytes, fields: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request as sent: its line, its header fields as given (Host among them), and its body."""
    if not _TOKEN.fullmatch(method):
        raise UnsendableRequest(f"a method HTTP cannot carry: {method!r}")
    if not _TARGET.fullmatch(target):
        raise UnsendableRequest("a request target with spaces or control characters")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in fields:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise UnsendableRequest(f"a header field HTTP cannot carry: {name!r}")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class Framing(enum.Enum):
    """Where an answer's body ends."""

    NONE = "none"  # no body: an answer to HEAD, 1xx, 204, 304
    LENGTH = "length"  # after Content-Length bytes
    CHUNKED = "chunked"  # at the last chunk
    UNTIL_CLOSE = "until close"  # when the connection ends


class _Heard:
    """What the parser reported (httptools calls these methods by name)."""

    __slots__ = ("complete", "extra", "fields", "head_complete", "parts")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.head_complete = False
        self.parts: list[bytes] = []
        self.complete = False
        self.extra = False  # another message began after this one: bytes nobody asked for

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Head:
    """An answer's status line and header fields (lower-case names), and how its body is framed."""

    __slots__ = ("_heard", "_parser", "fields", "framing", "keep_alive", "length", "status_code")

    def __init__(self, head: bytes, *, answers_head: bool) -> None:
        heard = _Heard()
        parser = httptools.HttpResponseParser(heard)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError as exc:
            raise MalformedAnswer(str(exc) or type(exc).__name__) from exc
        if not heard.head_complete:
            raise MalformedAnswer("a head without its end")
        self.status_code: int = parser.get_status_code()
        self.fields = heard.fields
        self._heard, self._parser = heard, parser
        self.length: int | None = None
        coding = self.header(b"transfer-encoding")
        if answers_head or self.status_code < 200 or self.status_code in NO_BODY_STATUSES:
            self.framing = Framing.NONE
        elif coding is not None:
            last = coding.rpartition(b",")[2].strip().lower()
            self.framing = Framing.CHUNKED if last == b"chunked" else Framing.UNTIL_CLOSE
        elif (length := self.header(b"content-length")) is not None:
            self.framing, self.length = Framing.LENGTH, int(length)  # llhttp checked: digits, given once
        else:
            self.framing = Framing.UNTIL_CLOSE
        connection = (self.header(b"connection") or b"").lower()
        self.keep_alive = (
            parser.get_http_version() == "1.1"
            and b"close" not in connection
            and self.framing is not Framing.UNTIL_CLOSE
        )

    def header(self, name: bytes) -> bytes | None:
        """The last value of field `name` (lower case), None when absent."""
        for key, value in reversed(self.fields):
            if key == name:
                return value
        return None

    def chunked_body(self) -> ChunkedBody:
        assert self.framing is Framing.CHUNKED
        return ChunkedBody(self._parser, self._heard)


def parse_head(buffer: bytes, *, answers_head: bool) -> tuple[Head, bytes] | None:
    """The head at the start of `buffer` and the bytes after it; None when the head has not all arrived."""
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise MalformedAnswer(f"a head of more than {MAX_HEAD_BYTES} bytes")
        return None
    end += len(HEAD_END)
    return Head(buffer[:end], answers_head=answers_head), buffer[end:]


class ChunkedBody:
    """A chunked body, decoded by the parser that read its head."""

    __slots__ = ("_heard", "_parser")

    def __init__(self, parser: httptools.HttpResponseParser, heard: _Heard) -> None:
        self._parser, self._heard = parser, heard

    @property
    def complete(self) -> bool:
        return self._heard.complete

    @property
    def spoiled(self) -> bool:
        """Bytes came after the last chunk: the connection is not used again."""
        return self._heard.extra

    def feed(self, data: bytes) -> list[bytes]:
        """The body's bytes in `data` (none past its end)."""
        heard = self._heard
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not heard.complete:
                raise MalformedAnswer(str(exc) or type(exc).__name__) from exc
            heard.extra = True  # whatever followed the body is not ours to read
        parts, heard.parts = heard.parts, []
        return parts
