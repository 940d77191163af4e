"""Small requests on a lean path: HTTP/1.1 straight on trio streams, connections kept alive per origin.

A catalog of 10,000 videos can cost a request per video: a HEAD for each size (AIPIX archives, Hour One
videos, VALT recordings), an API call for each video's details (Pixop) or download URL (VALT). Through
httpcore's pools (their bookkeeping, a `poll()` of every idle connection before each request, the stream,
trace and timeout layers) or h2, one such request cost this daemon 1.0 to 1.4 ms of CPU, and a cold walk of
those catalogs was bound by it: 14.4 s of daemon CPU in a 14.7 s walk of 10,000 AIPIX archives on loopback.
The same exchange written straight on a trio stream costs a fraction of that (64 at once, nginx on
loopback, daemon CPU per request; "h11": this path with h11, the parser httpcore uses, as it was until
answers went to httptools, `vidfs.http.wire`):

    HEAD, HTTP/1.1 through httpx      0.97 ms        this path, plain (h11)   0.23 ms
    HEAD, HTTP/2 through httpx (TLS)  1.0–1.3 ms     this path, TLS (h11)     0.26 ms

With httptools, and a plain socket written and read without trio's extra checkpoints, against the VALT
emulator (10,000 videos, in process, daemon CPU): an API call 0.284 → 0.205 ms, a HEAD 0.250 → 0.172 ms.

Four front doors over one pool:
- `LeanPool.request` gives an `Answer` (status, headers, body) and no httpx object at all: the size
  probes' HEADs (`HttpClient.head`);
- API calls (`HttpClient.request`) go on `LeanPool.request` too, their query and JSON body encoded as httpx
  would, and come back as a `LeanResponse` (`vidfs.http.lean_httpx`: an `httpx.Response`, body read);
  httpx's request building (two parses of the URL, header merging) was 40% of an API call's CPU (0.51 ms
  against 0.30, 32 at once);
- `LeanTransport` (`vidfs.http.lean_httpx`) is an httpx transport over the same pool, for what httpx must
  still build: a login's auth flow (Basic), and a URL that is not plain ASCII (httpx percent-encodes it).
- `LeanPool.stream`: ranged reads (`HttpClient.stream`), their bodies read straight off the socket
  (`vidfs.http.streamed.LeanStream`). A URL that is not plain ASCII still goes through httpx's own pool.

What it keeps from httpx, so a request behaves the same either way:
- the failures are httpx's exception types (ConnectError, ConnectTimeout, ReadTimeout, ReadError,
  RemoteProtocolError, LocalProtocolError), raised `from` the cause (a TLS error stays visible), so the
  one failure policy (`vidfs.http.policy`) classifies, describes and retries them as all others;
- TLS with verification, from the same CA bundle (`[http] ca_bundle`, else certifi's, as httpx uses);
  HTTP/1.1 only (ALPN says so): one request per connection at a time, the connection kept for the next;
- the same timeouts: `connect_timeout` for connecting and the handshake, `read_timeout` for each wait on
  the server (sending, and each read of the answer), give or take a hundredth of it: a wait moves the
  deadline only when that is later by more (`_wait_ahead`; moving a scope's deadline is a generator context
  manager inside trio, and the second wait of an exchange is microseconds after the first);
- no proxy (the client has `trust_env=False` too); redirects are followed by `HttpClient`.

This replaced HTTP/2 for HEADs and API calls, which issue 16 first asked for: one TLS connection per origin
instead of up to as many as requests in flight (the probes' and API windows bound those: 64 and 32), but
four to five times the CPU per request, and at 20 ms of round trip CPU was what bounded a big walk.

Connections. Each origin keeps its idle connections (at most `MAX_IDLE` per origin, for `KEEPALIVE_S`). A
request takes the most recently used one; a connection the server closed while it was idle shows as an
end of stream (or a reset) before any byte of the answer, and the request is then sent once more on a new
connection, if it is idempotent (httpcore instead polls every idle connection before each request: a sixth
of its cost). A request that may not be sent twice (a POST: VALT's record list, a login) polls the idle
connection it would take first, and takes it only when nothing arrived on it. A connection goes back
only after a whole, clean exchange: a cancelled or failed one is closed, so a half-read answer never
reaches the next request. How many requests run at once is the callers' business (the probes' and API
windows): this pool opens what they ask for.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import certifi
import httpx
import trio

from vidfs.http.streamed import BODY_RECEIVE_SIZE, MAX_BODY_EVENTS, RECEIVE_SIZE, LeanStream, as_httpx
from vidfs.http.wire import (
    Framing,
    Head,
    MalformedAnswer,
    Origin,
    UnsendableRequest,
    encode_request,
    parse_head,
    split_url,
)

MAX_IDLE = 128  # idle connections kept per origin
KEEPALIVE_S = 30.0  # an idle connection older than this is closed, not reused
MAX_HEAD_EVENTS = 1024  # reads of one answer's heads (interim 1xx ones too), at most
MAX_WAITS = 1024  # wake-ups of one read with nothing to read (spurious ones: epoll may say so), at most
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
T = TypeVar("T")

Fields = Iterable[tuple[bytes, bytes]]


class BodySink(Protocol):
    """Where an answer's body goes as it arrives, instead of into `Answer.content`."""

    def write(self, data: bytes, /) -> object: ...


# Given an answer's status and header fields (lower-case names): a sink for its body, or None to read it
# into `Answer.content`. Called once per answer, so a request sent again gets a fresh sink.
SinkFor = Callable[[int, list[tuple[bytes, bytes]]], BodySink | None]


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: status, header fields (lower-case names, as `vidfs.http.wire` gives them), body, and
    the URL."""

    status_code: int
    fields: list[tuple[bytes, bytes]]
    content: bytes
    url: str
    streamed: bool = False  # the body went to a sink (`SinkFor`), `content` is empty

    def header(self, name: str) -> str | None:
        """The last value of header `name` (any case), None when absent."""
        wanted = name.lower().encode()
        for key, value in reversed(self.fields):
            if key == wanted:
                return value.decode("latin-1")
        return None

    @property
    def headers(self) -> dict[str, str]:
        return {key.decode("latin-1"): value.decode("latin-1") for key, value in self.fields}


class _Connection:
    __slots__ = ("fd", "heard", "idle_since", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # A plain connection's socket, written and read straight (`_send`, `_receive`): trio's socket
        # methods yield to the scheduler after each call that did not have to wait (a checkpoint), two
        # trips through the run loop per request that bought nothing here.
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self.idle_since = 0.0
        self.heard = False  # a byte of the current exchange's answer arrived


class _StaleConnection(Exception):
    """A kept-alive connection ended before any byte of the answer: the server closed it while idle."""


class LeanPool:
    """Kept-alive HTTP/1.1 connections per origin, and requests over them (see the module's essay)."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        user_agent: str,
        ca_bundle: str | os.PathLike[str] | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._user_agent = user_agent
        self._ca_bundle = ca_bundle
        self._tls: ssl.SSLContext | None = None  # made at the first https origin (loading a CA bundle)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._opened = 0
        self._reused = 0
        self._stale = 0
        self._in_flight = 0

    def statistics(self) -> dict[str, int]:
        return {
            "idle": sum(len(idle) for idle in self._idle.values()),
            "in_flight": self._in_flight,
            "opened": self._opened,
            "reused": self._reused,
            "stale": self._stale,
        }

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                _close_now(connection)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        sink_for: SinkFor | None = None,
    ) -> Answer:
        """A request to `url` with `headers` besides Host and User-Agent (and Accept: */* unless they name
        one); a `body` is sent with its Content-Length. The answer's body goes where `sink_for` says."""
        origin, target, fields = self._prepare(url, headers, body)
        return await self.send(origin, method, target, fields, body, url, sink_for=sink_for)

    def _prepare(
        self, url: str, headers: Mapping[str, str] | None, body: bytes
    ) -> tuple[Origin, str, list[tuple[bytes, bytes]]]:
        """`url`'s origin and request target, and the request's header fields."""
        origin, host, target = split_url(url)
        named = [("Host", host), ("User-Agent", self._user_agent)]
        if headers:
            if not any(name.lower() == "accept" for name in headers):
                named.append(("Accept", "*/*"))
            named += headers.items()
        else:
            named.append(("Accept", "*/*"))
        if body:
            named.append(("Content-Length", str(len(body))))
        try:
            fields = [(name.encode("ascii"), value.encode("latin-1")) for name, value in named]
        except UnicodeEncodeError as exc:
            raise httpx.LocalProtocolError(f"a header that HTTP cannot carry: {exc.reason}") from exc
        return origin, target, fields

    async def send(
        self,
        origin: Origin,
        method: str | bytes,
        target: str | bytes,
        fields: Fields,
        body: bytes,
        url: str,
        *,
        sink_for: SinkFor | None = None,
    ) -> Answer:
        """One exchange with `origin`; `fields` are all the request's header fields (Host among them)."""
        method = method if isinstance(method, bytes) else method.encode("ascii")
        request = _encoded(method, target, fields, body)
        answers_head = method == b"HEAD"
        self._in_flight += 1
        try:

            async def exchange(connection: _Connection) -> Answer:
                return await self._exchange(origin, connection, request, answers_head, url, sink_for)

            return await self._on_a_connection(origin, method in IDEMPOTENT, exchange)
        finally:
            self._in_flight -= 1

    # -------------------------------------------------------------------------------- connections
    async def _on_a_connection(
        self, origin: Origin, idempotent: bool, attempt: Callable[[_Connection], Awaitable[T]]
    ) -> T:
        """`attempt` on the most recently used idle connection of `origin`, else on a new one; once more on a
        new one when the idle one turns out closed while idle (`_StaleConnection`), if that is safe."""
        connection = self._idle_connection(origin, checked=not idempotent)
        if connection is not None:
            try:
                return await attempt(connection)
            except _StaleConnection as exc:
                self._stale += 1
                if not idempotent:
                    raise httpx.RemoteProtocolError("the server closed a kept-alive connection") from exc
        connection = await self._connect(origin)
        try:
            return await attempt(connection)
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError("the server closed the connection without an answer") from exc

    def _idle_connection(self, origin: Origin, *, checked: bool) -> _Connection | None:
        """The most recently used idle connection of `origin`. `checked`, for a request that may not be sent
        twice: one the server has said anything on since (its close, mostly) is not taken."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < KEEPALIVE_S and not (checked and _readable(connection)):
                self._reused += 1
                return connection
            _close_now(connection)
        return None

    def _put_back(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE:
            _close_now(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(cafile=self._ca_bundle or certifi.where())
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        return self._tls

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    context = self._tls_context()
                    tls = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
                    stream = tls
                    await tls.do_handshake()
        except trio.TooSlowError as exc:
            await _discard(stream)
            raise httpx.ConnectTimeout(f"no connection within {self._connect_timeout:g}s") from exc
        except (OSError, trio.BrokenResourceError) as exc:
            await _discard(stream)
            raise httpx.ConnectError(str(exc.__cause__ or exc) or type(exc).__name__) from exc
        self._opened += 1
        return _Connection(stream)

    # ----------------------------------------------------------------------------------- exchange
    async def _exchange(
        self,
        origin: Origin,
        connection: _Connection,
        request: bytes,
        answers_head: bool,
        url: str,
        sink_for: SinkFor | None,
    ) -> Answer:
        """Send the request and read its whole answer; the connection goes back only after a clean end."""
        clean = False
        # One cancel scope whose deadline each wait moves (to `read_timeout` ahead, as httpx's: a large answer
        # may take longer in all), not a `fail_after` per wait (a generator context manager and a scope each:
        # a tenth of a HEAD's Python calls).
        waits = trio.CancelScope(deadline=trio.current_time() + self._read_timeout)
        try:
            with waits:
                head, rest = await self._answer_head(connection, request, answers_head, waits)
                sink = sink_for(head.status_code, head.fields) if sink_for else None
                body = io.BytesIO()  # grows in place: chunks joined at the end held the body twice
                whole = await self._read_body(connection, head, rest, sink or body, waits)
                clean = whole and head.keep_alive
                return Answer(head.status_code, head.fields, body.getvalue(), url, sink is not None)
            raise trio.TooSlowError  # only when `waits` caught its own deadline's cancellation
        except BaseException as exc:
            failure = _as_failure(exc, connection, self._read_timeout)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            if clean:
                self._put_back(origin, connection)
            else:
                _close_now(connection)

    async def _answer_head(
        self, connection: _Connection, request: bytes, answers_head: bool, waits: trio.CancelScope
    ) -> tuple[Head, bytes]:
        """Send `request`, then read up to the end of its answer's final head (interim 1xx heads skipped):
        that head, and the bytes that came after it."""
        connection.heard = False
        _wait_ahead(waits, self._read_timeout)
        await _send(connection, request)
        buffer = b""
        for _ in range(MAX_HEAD_EVENTS):
            parsed = parse_head(buffer, answers_head=answers_head) if buffer else None
            if parsed is None:
                _wait_ahead(waits, self._read_timeout)
                buffer += await _receive(connection, RECEIVE_SIZE)
                continue
            head, buffer = parsed
            if head.status_code >= 200:
                return head, buffer
        raise httpx.RemoteProtocolError(f"no final answer after {MAX_HEAD_EVENTS} reads")

    async def _read_body(
        self, connection: _Connection, head: Head, rest: bytes, out: BodySink, waits: trio.CancelScope
    ) -> bool:
        """The answer's body into `out`, starting with `rest` (what came with the head): whether it ended
        where its framing says, with not a byte more (so the connection may serve another request)."""
        framing = head.framing
        if framing is Framing.NONE:
            return not rest
        if framing is Framing.LENGTH:
            assert head.length is not None
            left = head.length
            whole = len(rest) <= left
            if rest:
                out.write(rest[:left])
                left -= min(left, len(rest))
            for _ in range(MAX_BODY_EVENTS):
                if not left:
                    return whole
                _wait_ahead(waits, self._read_timeout)
                ended = f"{left} bytes before the body's end"
                data = await _receive(connection, min(BODY_RECEIVE_SIZE, left), ended=ended)
                out.write(data)
                left -= len(data)
        elif framing is Framing.CHUNKED:
            chunked = head.chunked_body()
            data = rest
            for _ in range(MAX_BODY_EVENTS):
                for part in chunked.feed(data):
                    out.write(part)
                if chunked.complete:
                    return not chunked.spoiled
                _wait_ahead(waits, self._read_timeout)
                data = await _receive(connection, RECEIVE_SIZE, ended="before its last chunk")
        else:  # until the connection ends: never kept
            data = rest
            for _ in range(MAX_BODY_EVENTS):
                out.write(data)
                _wait_ahead(waits, self._read_timeout)
                data = await _receive(connection, RECEIVE_SIZE, ended=None)
                if not data:
                    return False
        raise httpx.RemoteProtocolError(f"a body of more than {MAX_BODY_EVENTS} parts")

    # ------------------------------------------------------------------------------------ streams
    @contextlib.asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str] | None = None) -> AsyncIterator[LeanStream]:
        """A GET whose body is read as it arrives (`LeanStream.aiter_raw`). Its connection goes back to the
        pool when the body was read to its end, and is closed otherwise."""
        origin, target, fields = self._prepare(url, headers, b"")
        request = _encoded(b"GET", target, fields, b"")
        self._in_flight += 1
        try:

            async def opened(connection: _Connection) -> tuple[_Connection, Head, bytes]:
                return connection, *await self._head(connection, request)

            connection, head, rest = await self._on_a_connection(origin, True, opened)
            answer = LeanStream(connection, head, rest, self._read_timeout)
            try:
                yield answer
            finally:
                if answer.clean:
                    self._put_back(origin, connection)
                else:
                    _close_now(connection)
        finally:
            self._in_flight -= 1

    async def _head(self, connection: _Connection, request: bytes) -> tuple[Head, bytes]:
        """Send a request without a body and read its answer's head (a connection that fails is closed)."""
        waits = trio.CancelScope(deadline=trio.current_time() + self._read_timeout)
        try:
            with waits:
                return await self._answer_head(connection, request, False, waits)
            raise trio.TooSlowError  # only when `waits` caught its own deadline's cancellation
        except BaseException as exc:
            _close_now(connection)
            failure = _as_failure(exc, connection, self._read_timeout)
            if failure is exc:
                raise
            raise failure from exc


def _raw_socket(connection: _Connection) -> trio.socket.SocketType | None:
    stream = connection.stream
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    return inner.socket if isinstance(inner, trio.SocketStream) else None


def _readable(connection: _Connection) -> bool:
    """Whether an idle connection has anything to read: its close, or bytes no request asked for (a TLS
    session ticket, too: such a connection is not taken for a POST, to be safe). One poll, no wait."""
    sock = _raw_socket(connection)
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _encoded(method: bytes, target: str | bytes, fields: Fields, body: bytes) -> bytes:
    """The request as sent (`vidfs.http.wire.encode_request`), or httpx's error for one HTTP cannot carry."""
    try:
        raw_target = target if isinstance(target, bytes) else target.encode("ascii")
        return encode_request(method, raw_target, list(fields), body)
    except (UnsendableRequest, UnicodeEncodeError) as exc:
        raise httpx.LocalProtocolError(f"cannot send this request: {exc}") from exc


DEADLINE_SLACK = 0.01  # of `read_timeout`: how much later a wait's deadline must be to be moved


def _wait_ahead(waits: trio.CancelScope, read_timeout: float) -> None:
    """`waits` ends `read_timeout` from now, or up to DEADLINE_SLACK of it sooner (see the module's essay)."""
    deadline = trio.current_time() + read_timeout
    if deadline - waits.deadline > read_timeout * DEADLINE_SLACK:
        waits.deadline = deadline


async def _receive(connection: _Connection, size: int, *, ended: str | None = "mid-answer") -> bytes:
    """Up to `size` bytes of the answer. An end of stream before its first byte is a connection the server
    closed while it was idle (`_StaleConnection`); after it, an error saying where the answer was `ended`
    (None: an end the caller expects, given as no bytes)."""
    fd = connection.fd
    if fd is None:
        data = await connection.stream.receive_some(size)
    else:
        for _ in range(MAX_WAITS):
            try:
                data = os.read(fd, size)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
        else:
            raise httpx.ReadError(f"nothing to read after {MAX_WAITS} wake-ups")
    if not data:
        if not connection.heard:
            raise _StaleConnection()
        if ended is not None:
            raise httpx.RemoteProtocolError(f"the server closed the connection {ended}")
        return b""
    connection.heard = True
    return data if type(data) is bytes else bytes(data)


async def _send(connection: _Connection, data: bytes) -> None:
    """`data` on the connection: straight into a plain socket's buffer when it fits (it nearly always does:
    a request is a few hundred bytes), through trio's `send_all` otherwise."""
    fd = connection.fd
    if fd is not None:
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    await connection.stream.send_all(data)


def _as_failure(exc: BaseException, connection: _Connection, read_timeout: float) -> BaseException:
    """What a failed exchange raises: httpx's exception for it (`as_httpx`), `_StaleConnection` for a
    connection reset before the answer's first byte (the same as one closed while idle), else `exc`."""
    if isinstance(exc, (trio.TooSlowError, MalformedAnswer)):
        return as_httpx(exc, read_timeout)
    if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
        if not connection.heard and connection.idle_since:
            return _StaleConnection()
        return as_httpx(exc, read_timeout)
    return exc


def _close_now(connection: _Connection) -> None:
    """Close without waiting: a plain socket closes at once; a TLS stream skips its close_notify (what
    trio's aclose_forcefully does too), which no server here needs."""
    sock = _raw_socket(connection)
    if sock is not None:
        sock.close()


async def _discard(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)


__all__ = ["Answer", "LeanPool", "LeanStream"]
