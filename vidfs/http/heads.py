"""HEADs on a lean path: h11 on trio streams, connections kept alive per origin, no httpx objects.

A catalog whose listings tell no sizes (AIPIX archives, Hour One videos, VALT recordings) costs a HEAD per
video before `ls -l` can answer: 100,000 HEADs for a big camera. Through httpx and httpcore (a Request and a
Response object, the pool's bookkeeping, its per-connection `poll()`, the stream and timeout layers), a HEAD
cost this daemon about 1.4 ms of CPU, and a cold walk of 10,000 such videos on loopback was bound by it:
14.4 s of daemon CPU in 14.7 s. The same HEAD written straight to h11 (the parser httpcore itself uses) on a
trio stream costs 0.15 ms (20,000 HEADs to nginx on loopback, 32 connections). So size probes take this
path; everything else (API calls, ranged reads) stays on httpx.

What it keeps from the httpx path, so a probe behaves the same either way:
- the failures are httpx's exception types (ConnectError, ConnectTimeout, ReadTimeout, ReadError,
  RemoteProtocolError, LocalProtocolError), raised `from` the cause (a TLS error stays visible), so the
  one failure policy (`vidfs.http.policy`) classifies, describes and retries them as it does all others;
- TLS with verification, from the same CA bundle (`[http] ca_bundle`, else certifi's, as httpx uses);
  HTTP/1.1 only (ALPN says so): one HEAD per connection at a time, kept alive for the next;
- the same timeouts: `connect_timeout` for connecting and the handshake, `read_timeout` for the exchange;
- the User-Agent; no proxy (the client has `trust_env=False` too); redirects are followed by
  `HttpClient.head`, with the same rule for credentials.

Connections. Each origin keeps its idle connections (at most `MAX_IDLE` per origin, for `KEEPALIVE_S`). A
request takes the most recently used one; a connection the server closed while it was idle shows as an
end of stream before any byte of the answer, and the HEAD is then sent once more on a new connection (it is
idempotent; httpcore instead polls every idle connection before each request, which was a sixth of its
cost). A connection is put back only after a whole, clean exchange: a cancelled or failed one is closed, so
a half-read answer never reaches the next request. How many HEADs run at once is the callers' business (the
probes' adaptive window per origin): this pool opens what they ask for.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import h11
import httpx
import trio

MAX_IDLE = 128  # idle connections kept per origin
KEEPALIVE_S = 30.0  # an idle connection older than this is closed, not reused
RECEIVE_SIZE = 16 * 1024


@dataclass(frozen=True, slots=True)
class HeadAnswer:
    """A HEAD's answer: the status, and the headers with lower-case names (the last of repeated ones)."""

    status_code: int
    headers: Mapping[str, str]
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Connection:
    __slots__ = ("idle_since", "protocol", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0


Origin = tuple[str, str, int]


class _StaleConnection(Exception):
    """A kept-alive connection ended before any byte of the answer: the server closed it while idle."""


class HeadPool:
    """Sends HEADs over kept-alive HTTP/1.1 connections (see the module's essay)."""

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

    def statistics(self) -> dict[str, int]:
        return {
            "idle": sum(len(idle) for idle in self._idle.values()),
            "opened": self._opened,
            "reused": self._reused,
            "stale": self._stale,
        }

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await trio.aclose_forcefully(connection.stream)

    async def head(self, url: str, headers: Mapping[str, str] | None = None) -> HeadAnswer:
        """One HEAD of `url` with `headers` (besides Host and User-Agent)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {scheme or '(none)'}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise httpx.InvalidURL(f"bad port in {parts.netloc.rpartition('@')[2]!r}") from exc
        origin = (scheme, parts.hostname.lower(), port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = [("Host", parts.netloc.rpartition("@")[2]), ("User-Agent", self._user_agent)]
        fields += [("Accept", "*/*")]
        if headers:
            fields += headers.items()
        try:
            request = h11.Request(method="HEAD", target=target, headers=fields)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(f"cannot send this request: {exc}") from exc
        connection = self._idle_connection(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, url)
            except _StaleConnection:
                self._stale += 1  # closed while idle: once more on a new connection (HEAD is idempotent)
        connection = await self._connect(origin)
        try:
            return await self._exchange(origin, connection, request, url)
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError("the server closed the connection without an answer") from exc

    # -------------------------------------------------------------------------------- connections
    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < KEEPALIVE_S:
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
        self, origin: Origin, connection: _Connection, request: h11.Request, url: str
    ) -> HeadAnswer:
        """Send the HEAD and read its answer; the connection goes back to the pool only after a clean end."""
        protocol = connection.protocol
        clean = False
        received = False
        try:
            with trio.fail_after(self._read_timeout):
                await connection.stream.send_all(protocol.send(request) + protocol.send(h11.EndOfMessage()))
                response: h11.Response | None = None
                while True:
                    event = protocol.next_event()
                    if event is h11.NEED_DATA:
                        data = await connection.stream.receive_some(RECEIVE_SIZE)
                        if not data and not received:
                            raise _StaleConnection()
                        received = True
                        protocol.receive_data(bytes(data))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
            assert response is not None  # h11 gives the Response before its EndOfMessage
            if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
                protocol.start_next_cycle()
                clean = True
            return HeadAnswer(
                response.status_code,
                {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers},
                url,
            )
        except trio.TooSlowError as exc:
            raise httpx.ReadTimeout(f"no answer within {self._read_timeout:g}s") from exc
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"a malformed answer: {exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not received and connection.idle_since:
                raise _StaleConnection() from exc  # reset while idle: the same as an end of stream
            raise httpx.ReadError(str(exc.__cause__ or exc) or type(exc).__name__) from exc
        finally:
            if clean:
                self._put_back(origin, connection)
            else:
                _close_now(connection)


def _close_now(connection: _Connection) -> None:
    """Close without waiting: a plain socket closes at once; a TLS stream skips its close_notify (what
    trio's aclose_forcefully does too), which a HEAD's server does not need."""
    stream = connection.stream
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        inner.socket.close()


async def _discard(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)


__all__ = ["HeadAnswer", "HeadPool"]
