"""Connection lanes: many requests at once without paying httpcore's pool a price per connection squared.

httpcore's connection pool, on every request it takes and every response it closes, walks all its
connections: one `poll()` per idle connection (has the server closed it?) and, per idle connection, a
count of the idle ones. So each request costs time in the square of the connections the pool holds.
Measured here (HEADs to nginx on loopback, through trio, daemon CPU per request):

    requests in flight      1       4       16      32
    one pool              0.77    1.02    1.43    3.75 ms
    lanes of 8 (32 then)                          1.0–1.3 ms

The size probes keep up to 64 HEADs in flight (`vidfs.catalog.probes`) and the API fan-outs of a big
listing add theirs: a listing of 10,000 videos that needs a request each spent most of its CPU there.

A `LanedTransport` gives each origin several small pools ("lanes"), each an ordinary
`httpx.AsyncHTTPTransport` of at most `LANE_CONNECTIONS` connections. Lanes are an origin's own: a pool
shared by two origins (VALT's API and its storage) closes one's idle connections to open the other's, over
and over. A request goes to the first lane of its origin with room, so the first lanes carry most requests
and their connections stay in use (a connection left idle starts slow again); a new lane opens only when
every lane is full, up to `max_lanes`, then the least busy one takes the request. A request counts as in
flight until its response body is closed, as its connection is busy until then.

HTTP/2 (`http2=True`): one connection carries every request to an origin that speaks it, and spreading that
origin over lanes would open a connection per lane. So an https origin stays on the first lane until it
answered in HTTP/1.1; then its requests spread. Plain http origins spread at once (HTTP/2 is only
negotiated over TLS).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

LANE_CONNECTIONS = 8

Origin = tuple[bytes, bytes, int | None]


@dataclass(slots=True, eq=False)
class _Lane:
    transport: httpx.AsyncHTTPTransport
    in_flight: int = 0


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its lane's slot back when closed (once, however often it is closed)."""

    __slots__ = ("_inner", "_lane")

    def __init__(self, inner: httpx.AsyncByteStream, lane: _Lane) -> None:
        self._inner = inner
        self._lane: _Lane | None = lane

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._inner.__aiter__()  # the body's own iterator: no extra hop per chunk

    async def aclose(self) -> None:
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.in_flight -= 1
        await self._inner.aclose()


class LanedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool,
        http2: bool = False,
        max_lanes: int = 16,  # per origin
        keepalive_expiry: float = 30.0,
    ) -> None:
        # One TLS context for every lane: httpx makes one per transport otherwise, loading the CA bundle
        # each time (51 ms of CPU per lane, measured).
        self._verify = httpx.create_ssl_context(verify=verify, trust_env=False) if verify is True else verify
        self._http2 = http2
        self._max_lanes = max(1, max_lanes)
        self._limits = httpx.Limits(
            max_connections=LANE_CONNECTIONS,
            max_keepalive_connections=LANE_CONNECTIONS,
            keepalive_expiry=keepalive_expiry,
        )
        self._lanes: dict[Origin, list[_Lane]] = {}  # each origin its own: no pool churns between two
        self._spread: set[Origin] = set()  # https origins that answered in HTTP/1.1

    def _new_lane(self) -> _Lane:
        transport = httpx.AsyncHTTPTransport(
            verify=self._verify,
            limits=self._limits,
            http2=self._http2,
            trust_env=False,
        )
        return _Lane(transport)

    def _lane_for(self, origin: Origin) -> _Lane:
        lanes = self._lanes.get(origin)
        if lanes is None:
            lanes = self._lanes[origin] = [self._new_lane()]
        if self._http2 and origin[0] == b"https" and origin not in self._spread:
            return lanes[0]
        for lane in lanes:
            if lane.in_flight < LANE_CONNECTIONS:
                return lane
        if len(lanes) < self._max_lanes:
            lanes.append(self._new_lane())
            return lanes[-1]
        return min(lanes, key=_in_flight)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        lane = self._lane_for(origin)
        lane.in_flight += 1
        try:
            response = await lane.transport.handle_async_request(request)
        except BaseException:
            lane.in_flight -= 1
            raise
        if self._http2 and response.extensions.get("http_version") == b"HTTP/1.1":
            self._spread.add(origin)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Counted(stream, lane)
        return response

    def statistics(self) -> dict[str, int]:
        lanes = [lane for of_origin in self._lanes.values() for lane in of_origin]
        return {"lanes": len(lanes), "in_flight": sum(lane.in_flight for lane in lanes)}

    async def aclose(self) -> None:
        for of_origin in self._lanes.values():
            for lane in of_origin:
                await lane.transport.aclose()


def _in_flight(lane: _Lane) -> int:
    return lane.in_flight
