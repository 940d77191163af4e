"""The shared HTTP client: per-origin limits, redirects followed by us, the failure policy applied.

Every request of every provider goes through `HttpClient`. It:
- retries through the one failure policy (`vidfs.http.policy`): idempotent requests on timeouts, dropped
  connections and 5xx, any request on 429, with full-jitter exponential backoff that honours `Retry-After`
  (capped), for at most `retries` extra attempts; every httpx exception becomes one of ours;
- limits concurrent requests per origin (a `trio.CapacityLimiter` per scheme://host:port and pool) so a
  burst of prefetches cannot starve listings of connections or hammer one vendor;
- never lets httpx follow redirects: `follow_redirects=True` here means *we* follow them, and headers,
  query and auth given by the caller (credentials) are sent only while the target stays on the caller's
  origin; a request with a body is not followed off its origin at all (the body may be a password);
- fails fast for a few seconds on an origin that could not be connected to after a full retry budget;
- keeps TLS verification on (a CA bundle may be added, there is no switch to turn it off);
- counts every response in `Stats` under the caller's tag, and logs URLs only through `redact_url`.

`transport=` takes any httpx transport (in-process tests give an `httpx.MockTransport`).

Two ways to the network. The lean path (`vidfs.http.lean`: httptools on kept-alive HTTP/1.1 connections, a
quarter of httpx's CPU per request or less) carries the API calls (`pool="api"`), the size probes' HEADs
(`head`) and the ranged GETs of plain URLs (`stream`, the body read straight off the socket); API calls still
go through an httpx client (over a `LeanTransport`) for its request building and login auth flows. httpx's
own HTTP/1.1 pool carries the rest (a URL that is not plain, a streamed request that is not a GET) and is
made at its first use, if ever: its TLS context and CA bundle were 26-35 ms of every mount's start. (HTTP/2
for HEADs and API calls, one connection per origin, was dropped for the lean path: four to five times the CPU
per request; see `vidfs.http.lean`.)

On httpx's pool, bodies are read in pieces of up to `READ_SIZE` (httpcore asks for 64 KiB otherwise, and
each piece is a trip through httpcore, h11 and trio: when ranged reads went that way, 256 KiB pieces took a
cold read on loopback from 5.1 to 2.8 CPU s per GB). httpcore has no option for it: its class constant is set
once, here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
import trio

from vidfs.config.types import HttpSettings
from vidfs.errors import InvalidRemoteData, RemoteError, RemoteIOError, UnreachableError, redact_url
from vidfs.http.adaptive import CONGESTED, AdaptiveLimit
from vidfs.http.lean import Answer, LeanPool, SinkFor
from vidfs.http.lean_httpx import LeanResponse, LeanTransport
from vidfs.http.policy import (
    HTTPX_ERRORS,
    IDEMPOTENT,
    RetryPolicy,
    TempFailure,
    caused_by,
    describe,
    from_httpx,
    is_temp_failure,
    is_temp_status,
    retry_after_seconds,
)
from vidfs.http.streamed import Streamed, httpx_stream
from vidfs.http.wire import content_coded, prefix_end
from vidfs.stats import Stats
from vidfs.tasks import Holding, stepped

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
UNREACHABLE_HOLD = 5.0  # seconds an unreachable origin fails fast before it is tried again
RANGE_HEADERS = ("range", "if-range")  # what a ranged read still sends after leaving the lease's origin
READ_SIZE = 256 * 1024

httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE

# A URL the lean path sends as it is: printable ASCII without space, "#" or "@" (httpx percent-encodes
# anything else, drops a fragment and makes user info a Basic auth: those go through httpx).
_PLAIN_URL = re.compile(r'[!"$-?A-~]+')


_ORIGINS: dict[str, tuple[str, str, int]] = {}  # "scheme://netloc" → its origin
MAX_ORIGINS = 1024


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port), lower case, the port filled in. An origin depends only on the URL's
    `scheme://netloc`, so it is parsed once per prefix: each request asks it several times (reachability,
    windows, same-origin checks), and parsing each whole signed URL was a twentieth of a HEAD's CPU."""
    if "://" not in url:
        return _parse_origin(url)
    prefix = url[: prefix_end(url)]
    origin = _ORIGINS.get(prefix)
    if origin is None:
        if len(_ORIGINS) >= MAX_ORIGINS:
            _ORIGINS.clear()
        origin = _ORIGINS[prefix] = _parse_origin(prefix)
    return origin


def _parse_origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    return origin_of(a) == origin_of(b)


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The response body as a JSON object, or InvalidRemoteData saying what was being asked."""
    try:
        data = response.json()
    except ValueError as exc:
        raise InvalidRemoteData(f"{what}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidRemoteData(f"{what}: expected a JSON object")
    return data


def dig(data: Any, *path: str) -> Any:
    """`data[path[0]][path[1]]...` of a JSON document, None where a level is missing or not an object."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _query(query: str, params: Mapping[str, Any]) -> str:
    """`params` merged into a URL's `query` as httpx encodes them (`httpx.QueryParams`), each pair encoded
    once: an API's calls repeat the same few (a token, a page size), and encoding them was 2% of a call."""
    try:
        # Each value's type in the key: True and 1 are equal keys, and httpx writes "true" and "1".
        return _known_query(query, tuple((name, type(value), value) for name, value in params.items()))
    except TypeError:  # a list among the values: not hashable, encoded each time
        return _encode_query(query, params)


@functools.lru_cache(maxsize=256)
def _known_query(query: str, pairs: tuple[tuple[str, type, Any], ...]) -> str:
    return _encode_query(query, {name: value for name, _type, value in pairs})


def _encode_query(query: str, params: Mapping[str, Any]) -> str:
    return str(httpx.QueryParams(query).merge(params) if query else httpx.QueryParams(params))


def _into_sink(response: httpx.Response, sink_for: SinkFor | None) -> httpx.Response:
    """A response read whole whose body its caller's sink asks for: written to the sink, taken out of it."""
    sink = sink_for(response.status_code, response.headers.raw) if sink_for is not None else None
    if sink is None:
        return response
    sink.write(response.content)
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        request=response.request,
        extensions=response.extensions,
    )


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One request as the caller asked for it; a redirect gives the next one."""

    method: str
    url: str
    headers: Mapping[str, str] | None = None
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    auth: httpx.Auth | tuple[str, str] | None = None
    sink_for: SinkFor | None = None

    def redirected(self, response: httpx.Response) -> _Outgoing | None:
        """The request a redirect answer asks for next, or None when `response` is not one to follow."""
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return None
        url = urljoin(str(response.url), location)
        if (self.json is not None or self.content is not None) and not same_origin(url, self.url):
            return None  # a body (a login's password?) never follows a redirect to another origin
        if response.status_code == 303:
            return replace(self, method="GET", url=url, params=None, json=None, content=None)
        return replace(self, url=url, params=None)  # the Location carries its own query


@dataclass(frozen=True, slots=True)
class _Channel:
    """An httpx client and its transport. `exchange` sends a request straight to the transport and reads the
    raw body stream: the client's per-request machinery (auth flows, the cookie jar, event hooks, its
    redirect loop, elapsed timers) and the response's decoder layers are none of them needed here (no
    cookies are kept: every request carries its own credentials; redirects are followed by `HttpClient`).
    Measured with py-spy on 10,000 size probes (AIPIX, loopback): 2.5 ms of daemon CPU per HEAD through
    `AsyncClient.request`, 1.2 ms this way; the cold walk of that catalog went from 31.6 s to 13.7 s."""

    client: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport

    async def exchange(self, request: httpx.Request) -> httpx.Response:
        """The whole response, body read, connection back in the pool."""
        answer = await self.transport.handle_async_request(request)
        stream = answer.stream
        if isinstance(stream, httpx.ByteStream):  # the body is read already (the lean path's answers)
            answer.request = request
            return answer
        assert isinstance(stream, httpx.AsyncByteStream)
        try:  # the raw stream, not Response.aread's decoder and chunker layers (a sixth of a HEAD's CPU)
            body = b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()
        # A response whose body is read already (httpx reads bytes content at once); the headers are the
        # server's as they came (a HEAD's Content-Length stays the size of the resource).
        return httpx.Response(
            answer.status_code,
            headers=answer.headers,
            content=body,
            request=request,
            extensions=answer.extensions,
        )


_Answer = TypeVar("_Answer", httpx.Response, Answer)


class ApiBudget(Protocol):
    """The API budget (`api_rate`, vidfs.fleet.budget): waits until a request of `tag` may be sent."""

    async def take(self, tag: str) -> None: ...


class HttpClient:
    """One `httpx.AsyncClient` shared by every provider of a mount."""

    def __init__(
        self,
        settings: HttpSettings | None = None,
        stats: Stats | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or HttpSettings()
        # One policy each way, not one made per request.
        self._retry_policies = {
            retry: RetryPolicy.from_settings(self.settings, retry=retry) for retry in (False, True)
        }
        self.stats = stats or Stats()
        timeout = httpx.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout,
            write=self.settings.read_timeout,
            pool=max(self.settings.connect_timeout, self.settings.read_timeout) * 3,
        )
        common: dict[str, Any] = {
            "timeout": timeout,
            "follow_redirects": False,
            "headers": {"User-Agent": self.settings.user_agent},
            "trust_env": False,
        }
        # Small requests (API calls, HEADs) on the lean path; none with a given transport (it serves every
        # request: in-process tests give an httpx.MockTransport).
        self._lean: LeanPool | None = None
        self._api: _Channel | None = None
        if transport is None:
            self._lean = LeanPool(
                connect_timeout=self.settings.connect_timeout,
                read_timeout=self.settings.read_timeout,
                user_agent=self.settings.user_agent,
                ca_bundle=self.settings.ca_bundle,
            )
            lean = LeanTransport(self._lean)
            self._api = _Channel(httpx.AsyncClient(**common, transport=lean), lean)
            self._accept_encoding = self._api.client.headers.get("Accept-Encoding", "gzip, deflate")
        self._common = common
        self._httpx: _Channel | None = None  # httpx's own pool, made at its first use (module essay)
        if transport is not None:
            self._httpx = _Channel(httpx.AsyncClient(**common, transport=transport), transport)
        self._limiters: dict[tuple[tuple[str, str, int], str], trio.CapacityLimiter] = {}
        self._api_windows: dict[tuple[str, str, int], AdaptiveLimit] = {}
        # Origins that could not be connected to after a full retry budget: requests to them fail at once
        # until this instant, so uncached reads fail fast while cached data is still served.
        self._down_until: dict[tuple[str, str, int], float] = {}
        self.budget: ApiBudget | None = None  # `api_rate` of the providers (set by the engine)

    def statistics(self) -> dict[str, int]:
        """The lean path's connections (idle, opened, reused, found closed) and requests in flight; the widest
        API window."""
        totals = dict(self._lean.statistics()) if self._lean is not None else {}
        windows = [window.limit for window in self._api_windows.values()]
        totals["api_window"] = max(windows, default=0)
        return totals

    @property
    def _client(self) -> _Channel:
        if self._httpx is None:
            ca = self.settings.ca_bundle
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=64, keepalive_expiry=30)
            transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
            self._httpx = _Channel(httpx.AsyncClient(**self._common, transport=transport), transport)
        return self._httpx

    async def aclose(self) -> None:
        for channel in (self._httpx, self._api):  # the lean pool closes with the second's transport
            if channel is not None:
                await channel.client.aclose()

    def _client_for(self, method: str, pool: str | None) -> _Channel:
        """The lean path's client for API calls and HEADs, httpx's pool for everything else."""
        if self._api is not None and (method.upper() == "HEAD" or pool == "api"):
            return self._api
        return self._client

    def retry_policy(self, *, retry: bool = True, attempts: int | None = None) -> RetryPolicy:
        policy = self._retry_policies[retry]
        return policy if attempts is None else replace(policy, attempts=attempts)

    def slot(self, url: str, kind: str = "data") -> trio.CapacityLimiter:
        """The concurrency limit of one origin. API calls ("api") and byte transfers ("data") have separate
        pools, so a listing or a login never waits behind a burst of downloads to the same host, and a
        reader may hold a data slot while its URL is renewed through the API. The API's adapts (see
        `api_window`); the others hold `max_connections_per_host`."""
        if kind == "api":
            return self.api_window(url).limiter
        key = (origin_of(url), kind)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = trio.CapacityLimiter(self.settings.max_connections_per_host)
        return limiter

    def api_window(self, url: str) -> AdaptiveLimit:
        """The API calls of one origin in flight at once (`vidfs.http.adaptive`): from
        `max_connections_per_host`, up to `max_api_requests_per_host` while answers keep their pace, halved
        on 429/503. A listing that needs a call per video (Pixop's details, VALT's download URLs) is bound by
        round trips, not by this daemon's CPU, at a fixed 8."""
        origin = origin_of(url)
        window = self._api_windows.get(origin)
        if window is None:
            highest = self.settings.max_api_requests_per_host
            steady = min(self.settings.max_connections_per_host, highest)
            window = self._api_windows[origin] = AdaptiveLimit(
                start=steady, lowest=1, highest=highest, steady=steady
            )
        return window

    def check_reachable(self, url: str) -> None:
        until = self._down_until.get(origin_of(url))
        if until is not None and time.monotonic() < until:
            self.stats.incr("http.fast_failures")
            raise UnreachableError(
                f"{redact_url(url)}: the host is unreachable (retrying in {until - time.monotonic():.0f}s)"
            )

    def note_unreachable(self, url: str, cause: BaseException | None) -> None:
        if caused_by(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
            self._down_until[origin_of(url)] = time.monotonic() + UNREACHABLE_HOLD

    def note_reachable(self, url: str) -> None:
        self._down_until.pop(origin_of(url), None)

    def gave_up(self, url: str, error: BaseException) -> None:
        """A request failed for good: counted, and its origin held down when it could not be connected."""
        self.stats.incr("http.errors")
        self.note_unreachable(url, error)

    async def request(
        self,
        method: str,
        url: str,
        *,
        tag: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        follow_redirects: bool = False,
        retry: bool = True,
        pool: str | None = "api",
        sink_for: SinkFor | None = None,
    ) -> httpx.Response:
        """Send a request and read its whole body. Error statuses are returned, not raised, except that
        retryable ones (5xx, 429) that persist beyond the retry budget raise RemoteIOError; every transport
        failure is one of our RemoteErrors. `pool` None: the caller already holds a slot of this origin.

        `sink_for(status, fields)` may take an answer's body (decoded, as `content` would be) into a sink of
        its own instead: then `content` is empty. On the lean path the body goes to the sink as it arrives
        (a body of 100 MB is never held whole), otherwise it is written to it once read. It is asked once
        for each answer, so the sink of a request sent again is a fresh one: the last one given is the one
        with the body of the returned response."""
        self.check_reachable(url)
        outgoing = _Outgoing(method, url, headers, params, json, content, auth, sink_for)

        async def send() -> httpx.Response:
            return await self._send(outgoing, tag, follow_redirects, pool)

        return await self._attempts(method, url, tag, send, retry=retry)

    async def head(
        self, url: str, *, tag: str, headers: Mapping[str, str] | None = None, retry: bool = True
    ) -> Answer:
        """A HEAD, redirects followed (credentials only on `url`'s origin), on the lean path
        (`vidfs.http.lean`) unless the client was given a transport. Errors as for `request`; the caller
        holds whatever slot limits it (the probes' window)."""
        if self._lean is None:
            response = await self.request(
                "HEAD", url, tag=tag, headers=headers, follow_redirects=True, retry=retry, pool=None
            )
            # Lower-case names, as the lean path gives them.
            fields = [(name.lower(), value) for name, value in response.headers.raw]
            return Answer(response.status_code, fields, response.content, str(response.url))
        self.check_reachable(url)
        lean = self._lean

        async def send() -> Answer:
            target = url
            for _hop in range(MAX_REDIRECTS + 1):
                answer = await lean.request("HEAD", target, headers if same_origin(url, target) else None)
                self.stats.count_request(tag, answer.status_code)
                location = answer.header("location")
                if answer.status_code not in REDIRECT_STATUSES or not location:
                    return answer
                target = urljoin(target, location)
            raise RemoteIOError(f"HEAD {redact_url(url)}: too many redirects")

        return await self._attempts("HEAD", url, tag, send, retry=retry)

    async def _attempts(
        self, method: str, url: str, tag: str, send: Callable[[], Awaitable[_Answer]], *, retry: bool
    ) -> _Answer:
        """`send` through the retry policy: every httpx failure becomes one of ours, temporary ones and
        retryable statuses are tried again within the budget."""
        idempotent = method.upper() in IDEMPOTENT

        def where() -> str:
            return f"{method} {redact_url(url)}"

        async def once(_attempt: int) -> _Answer:
            if self.budget is not None:  # every attempt is a request the vendor counts
                await self.budget.take(tag)
            try:
                answer = await send()
            except HTTPX_ERRORS as exc:
                if idempotent and is_temp_failure(exc):
                    raise TempFailure(describe(exc)) from exc
                raise from_httpx(exc, method, url) from exc
            stepped()  # an answer, whatever it says: the work that asked is not stuck
            self.note_reachable(url)
            if is_temp_status(answer.status_code, method):
                raise TempFailure(
                    f"HTTP {answer.status_code}",
                    retry_after=answer.headers.get("retry-after"),  # httpx.Headers: any case
                    status=answer.status_code,
                )
            return answer

        try:
            return await self.retry_policy(retry=retry).run(
                once, what=where, on_retry=functools.partial(self._retrying, where)
            )
        except RemoteError as exc:
            self.gave_up(url, exc)
            raise

    def _retrying(self, where: Callable[[], str], failure: TempFailure) -> None:
        self.stats.incr("http.retries")
        log.debug("retrying %s after %s", where(), failure.reason)

    async def _send(
        self, outgoing: _Outgoing, tag: str, follow_redirects: bool, pool: str | None
    ) -> httpx.Response:
        first_url = outgoing.url
        for _hop in range(MAX_REDIRECTS + 1):
            home = same_origin(first_url, outgoing.url)  # credentials stay on the caller's origin
            channel = self._client_for(outgoing.method, pool)
            window = self.api_window(outgoing.url) if pool == "api" else None
            # pool None: the caller already holds a slot of this origin (see RemoteFile.fetch).
            async with contextlib.nullcontext() if pool is None else Holding(self.slot(outgoing.url, pool)):
                if window is not None:
                    await window.wait_if_paused()  # with a slot held: queued calls must not rush in
                started = trio.current_time()
                auth = outgoing.auth if home else None
                if channel is self._api and auth is None and _PLAIN_URL.fullmatch(outgoing.url):
                    response = await self._lean_exchange(outgoing, home)
                else:
                    request = channel.client.build_request(
                        outgoing.method,
                        outgoing.url,
                        headers=dict(outgoing.headers or {}) if home else None,
                        params=outgoing.params if home else None,
                        json=outgoing.json,
                        content=outgoing.content,
                    )
                    if auth is not None:  # a login (Basic): the client's auth flow
                        response = await channel.client.send(request, auth=auth)
                    else:
                        response = await channel.exchange(request)
                if window is not None:
                    if response.status_code in CONGESTED:
                        window.congested(retry_after_seconds(response.headers.get("Retry-After")))
                    else:
                        window.answered(trio.current_time() - started)
                        window.relieved()
            self.stats.count_request(tag, response.status_code)
            if outgoing.sink_for is not None and not (
                isinstance(response, LeanResponse) and response.streamed
            ):
                response = _into_sink(response, outgoing.sink_for)
            following = outgoing.redirected(response) if follow_redirects else None
            if following is None:
                return response
            outgoing = following
        raise RemoteIOError(f"{outgoing.method} {redact_url(first_url)}: too many redirects")

    async def _lean_exchange(self, outgoing: _Outgoing, home: bool) -> httpx.Response:
        """An API call straight on the lean pool, encoded as httpx's `build_request` would: the query merged
        into the URL's (`httpx.QueryParams`), a JSON body compact and UTF-8, the Accept-Encoding httpx
        offers (its decoders still read the answer)."""
        assert self._lean is not None
        url = outgoing.url
        headers = {"Accept-Encoding": self._accept_encoding}
        if home:
            if outgoing.params:
                base, _, query = url.partition("?")
                url = f"{base}?{_query(query, outgoing.params)}"
            if outgoing.headers:
                headers.update(outgoing.headers)
        body = b""
        if outgoing.content is not None:
            body = outgoing.content
        elif outgoing.json is not None:
            body = json.dumps(
                outgoing.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            headers["Content-Type"] = "application/json"
        if not body and outgoing.method.upper() in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = "0"  # as httpx sends: a server may refuse a POST without a length
        sink_for = outgoing.sink_for
        if sink_for is not None:
            given = sink_for

            def sink_for(status: int, fields: list[tuple[bytes, bytes]]) -> Any:
                # A compressed body is decoded by httpx's decoders first: written to the sink once read.
                return None if content_coded(fields) else given(status, fields)

        answer = await self._lean.request(outgoing.method, url, headers, body, sink_for=sink_for)
        return LeanResponse(answer, outgoing.method)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        tag: str,
        headers: Mapping[str, str] | None = None,
        slot_held: bool = False,
    ) -> AsyncIterator[Streamed]:
        """A streamed request (for ranged reads). Redirects are followed by us, credentials kept on the
        first origin only (off it, only the range headers go); no retries here: the range reader resumes
        from the bytes it has. The caller may already hold the origin's data slot (`slot_held`)."""
        first_url = url
        async with contextlib.nullcontext() if slot_held else self.slot(url, "data"):
            for _hop in range(MAX_REDIRECTS + 1):
                send_headers = dict(headers or {})
                if not same_origin(first_url, url):
                    send_headers = {k: v for k, v in send_headers.items() if k.lower() in RANGE_HEADERS}
                self.check_reachable(url)
                async with contextlib.AsyncExitStack() as answer:
                    try:
                        response = await answer.enter_async_context(self._open(method, url, send_headers))
                    except HTTPX_ERRORS as exc:
                        raise from_httpx(exc, method, url) from exc
                    self.note_reachable(url)
                    self.stats.count_request(tag, response.status_code)
                    location = response.headers.get("Location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        url = urljoin(url, location)
                        continue
                    yield response
                    return
        raise RemoteIOError(f"{method} {redact_url(first_url)}: too many redirects")

    def _open(self, method: str, url: str, headers: dict[str, str]) -> AsyncContextManager[Streamed]:
        """A GET of a plain URL on the lean path (`LeanStream`: its body read straight off the socket), any
        other request through httpx."""
        if self._lean is not None and method == "GET" and _PLAIN_URL.fullmatch(url):
            return self._lean.stream(url, headers)
        return httpx_stream(self._client.client, method, url, headers)
