"""The shared HTTP client: retries, per-host limits, redirects followed by us.

Every request of every provider goes through `HttpClient`. It:
- retries idempotent requests on transport errors and 5xx, and any request on 429, with full-jitter
  exponential backoff that honours `Retry-After` (capped), for at most `retries` extra attempts;
- limits concurrent requests per origin (a `trio.CapacityLimiter` per scheme://host:port) so a burst of
  prefetches cannot starve listings of connections or hammer one vendor;
- never lets httpx follow redirects: `follow_redirects=True` here means *we* follow them, and headers
  given by the caller (credentials) are sent only while the target stays on the caller's origin;
- keeps TLS verification on (a CA bundle may be added, there is no switch to turn it off);
- counts every response in `Stats` under the caller's tag, and logs URLs only through `redact_url`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from vidfs.config.types import HttpSettings
from vidfs.errors import (
    AuthError,
    InvalidRemoteData,
    NotFoundError,
    RemoteError,
    RemoteIOError,
    RemoteTimeoutError,
    UnreachableError,
    redact_url,
)
from vidfs.stats import Stats

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 30.0
UNREACHABLE_HOLD = 5.0  # seconds an unreachable origin fails fast before it is tried again


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    return origin_of(a) == origin_of(b)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The response body as a JSON object, or InvalidRemoteData saying what was being asked."""
    try:
        data = response.json()
    except ValueError as exc:
        raise InvalidRemoteData(f"{what}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidRemoteData(f"{what}: expected a JSON object")
    return data


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Map an error status to our exception tree (providers call this after their own re-auth logic)."""
    status = response.status_code
    if status < 400:
        return
    message = f"{what}: HTTP {status}"
    if status in (404, 410):
        raise NotFoundError(message, status=status)
    if status in (401, 403):
        raise AuthError(message, status=status)
    raise RemoteIOError(message, status=status)


class HttpClient:
    """One `httpx.AsyncClient` shared by every provider of a mount."""

    def __init__(self, settings: HttpSettings | None = None, stats: Stats | None = None) -> None:
        self.settings = settings or HttpSettings()
        self.stats = stats or Stats()
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_bundle:
            verify = ssl.create_default_context(cafile=self.settings.ca_bundle)
        timeout = httpx.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout,
            write=self.settings.read_timeout,
            pool=max(self.settings.connect_timeout, self.settings.read_timeout) * 3,
        )
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=timeout,
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=64, keepalive_expiry=30),
            follow_redirects=False,
            headers={"User-Agent": self.settings.user_agent},
            trust_env=False,
        )
        self._limiters: dict[tuple[tuple[str, str, int], str], trio.CapacityLimiter] = {}
        # Origins that could not be connected to after a full retry budget: requests to them fail at once
        # until this instant, so uncached reads fail fast while cached data is still served.
        self._down_until: dict[tuple[str, str, int], float] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def slot(self, url: str, kind: str = "data") -> trio.CapacityLimiter:
        """The concurrency limit of one origin. API calls ("api") and byte transfers ("data") have separate
        pools, so a listing or a login never waits behind a burst of downloads to the same host, and a
        reader may hold a data slot while its URL is renewed through the API."""
        key = (origin_of(url), kind)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = trio.CapacityLimiter(self.settings.max_connections_per_host)
        return limiter

    def check_reachable(self, url: str) -> None:
        until = self._down_until.get(origin_of(url))
        if until is not None and time.monotonic() < until:
            self.stats.incr("http.fast_failures")
            raise UnreachableError(
                f"{redact_url(url)}: the host is unreachable (retrying in {until - time.monotonic():.0f}s)"
            )

    def note_unreachable(self, url: str, cause: BaseException) -> None:
        if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout) or "ConnectError" in str(cause):
            self._down_until[origin_of(url)] = time.monotonic() + UNREACHABLE_HOLD

    def note_reachable(self, url: str) -> None:
        self._down_until.pop(origin_of(url), None)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.settings.backoff_cap, self.settings.backoff_base * (2**attempt))
        return random.uniform(0, cap)  # full jitter: spreads retries of many readers apart

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
    ) -> httpx.Response:
        """Send a request and read its whole body. Error statuses are returned, not raised, except that
        retryable ones (5xx, 429) that persist beyond the retry budget raise RemoteIOError."""
        attempts = self.settings.retries + 1 if retry else 1
        retryable_method = method.upper() in IDEMPOTENT
        last_error: str = ""
        self.check_reachable(url)
        last_exc: BaseException | None = None
        for attempt in range(attempts):
            try:
                response = await self._send(
                    method, url, tag, headers, params, json, content, auth, follow_redirects, pool
                )
            except UnreachableError:
                raise
            except (httpx.TransportError, RemoteIOError) as exc:
                last_error = _describe(exc)
                last_exc = exc
                if not retryable_method or attempt + 1 >= attempts or _tls_failure(exc) is not None:
                    attempts = attempt + 1
                    break
                self.stats.incr("http.retries")
                log.debug("retrying %s %s after %s", method, redact_url(url), last_error)
                await trio.sleep(self._backoff(attempt))
                continue
            self.note_reachable(url)
            status = response.status_code
            retry_this = status == 429 or (status in RETRY_STATUSES and retryable_method)
            if not retry_this or attempt + 1 >= attempts:
                if retry_this:
                    last_error = f"HTTP {status}"
                    break
                return response
            delay = self._backoff(attempt)
            hinted = retry_after_seconds(response.headers.get("Retry-After"))
            if hinted is not None:
                delay = min(MAX_RETRY_AFTER, max(delay, hinted))
            self.stats.incr("http.retries")
            log.debug("retrying %s %s after HTTP %s in %.2fs", method, redact_url(url), status, delay)
            await trio.sleep(delay)
        self.stats.incr("http.errors")
        if last_exc is not None:
            self.note_unreachable(url, last_exc)
        raise RemoteIOError(f"{method} {redact_url(url)}: {last_error} (after {attempts} attempts)")

    async def _send(
        self,
        method: str,
        url: str,
        tag: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        json: Any,
        content: bytes | None,
        auth: httpx.Auth | tuple[str, str] | None,
        follow_redirects: bool,
        pool: str | None,
    ) -> httpx.Response:
        first_url = url
        for _hop in range(MAX_REDIRECTS + 1):
            on_origin = same_origin(first_url, url)
            # pool None: the caller already holds a slot of this origin (see RemoteFile.fetch).
            async with contextlib.nullcontext() if pool is None else self.slot(url, pool):
                response = await self._client.request(
                    method,
                    url,
                    headers=dict(headers or {}) if on_origin else None,
                    params=params if on_origin else None,
                    json=json,
                    content=content,
                    auth=auth if on_origin else None,
                )
            self.stats.count_request(tag, response.status_code)
            if not (follow_redirects and response.status_code in REDIRECT_STATUSES):
                return response
            location = response.headers.get("Location")
            if not location:
                return response
            url = urljoin(str(response.url), location)
            params = None  # the Location already carries the query
            if response.status_code == 303:
                method, json, content = "GET", None, None
        raise RemoteIOError(f"{method} {redact_url(first_url)}: too many redirects")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        tag: str,
        headers: Mapping[str, str] | None = None,
        slot_held: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed request (for ranged reads). Redirects are followed by us, credentials kept on the
        first origin only; no retries here: the range reader resumes from the bytes it has. The caller may
        already hold the origin's data slot (`slot_held`)."""
        first_url = url
        async with contextlib.nullcontext() if slot_held else self.slot(url, "data"):
            for _hop in range(MAX_REDIRECTS + 1):
                send_headers = dict(headers or {}) if same_origin(first_url, url) else {}
                if not same_origin(first_url, url):
                    # Keep only the range-related headers when leaving the provider's origin.
                    send_headers = {
                        k: v for k, v in (headers or {}).items() if k.lower() in ("range", "if-range")
                    }
                request = self._client.build_request(method, url, headers=send_headers)
                self.check_reachable(url)
                try:
                    response = await self._client.send(request, stream=True)
                except httpx.TimeoutException as exc:
                    raise RemoteTimeoutError(f"{method} {redact_url(url)}: timed out") from exc
                except httpx.TransportError as exc:
                    raise RemoteIOError(f"{method} {redact_url(url)}: {_describe(exc)}") from exc
                self.note_reachable(url)
                self.stats.count_request(tag, response.status_code)
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUSES and location:
                    await response.aclose()
                    url = urljoin(str(response.url), location)
                    continue
                try:
                    yield response
                finally:
                    await response.aclose()
                return
        raise RemoteIOError(f"{method} {redact_url(first_url)}: too many redirects")


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error, if any: those are not worth retrying."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, RemoteError):
        return str(exc)
    tls = _tls_failure(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        return f"TLS failure: {reason} (a private CA can be added with [http] ca_bundle)"
    name = type(exc).__name__
    text = str(exc)
    if not text:
        cause = exc.__cause__ or exc.__context__
        text = str(cause) if cause is not None else ""
    # httpx messages may embed the URL; keep only the class name and a short reason without query strings.
    if "?" in text:
        text = text.split("?", 1)[0]
    return f"{name}: {text}" if text else name
