"""The HTTP failure policy: what every status and every httpx exception means, and when to try again.

One table decides what an error status means, for a provider's API calls and for storage (the ranged GETs
and size probes of a lease). Providers may say *more* (their vendor's explanation in the message, AIPIX's
419), never something else: every final answer is one of our exceptions, and its errno is what a reader sees.

    status   API call                                      storage (a lease's URL)
    401      log in again once (TokenKeeper.call),         renew the lease once (new token or signature),
             then AuthError → EACCES                       then AuthError → EACCES
    403      AuthError → EACCES                            renew once (S3/GCS answer 403 to an expired
                                                           signature), then AuthError → EACCES
    404      NotFoundError → ENOENT                        renew once (a signed URL may have moved),
                                                           then NotFoundError → ENOENT
    410      NotFoundError → ENOENT                        renew once (some CDNs answer 410 to an expired
                                                           link), then NotFoundError → ENOENT
    416      RemoteIOError → EIO                           past the end we know: StaleError → ESTALE
                                                           (the range reader answers EOF itself)
    429      retried after a pause (Retry-After honoured, capped), then RemoteIOError → EIO
    5xx      500/502/503/504 retried (idempotent methods), then RemoteIOError → EIO
    other    RemoteIOError → EIO

Why 410 is ENOENT: "Gone" says the thing is not there and will not come back, which is what ENOENT tells a
program; it says nothing about permissions, so it is never EACCES. Storage still renews the lease first,
because on a signed URL the thing that is gone may be only the link.

Retries: one `RetryPolicy` (full-jitter exponential backoff, `Retry-After` honoured up to a cap, a bounded
number of attempts) runs the client's requests, the range reader's GETs and, through the client, the size
probes. What is worth another attempt is decided by one predicate, `is_temp_failure`: timeouts, dropped
connections, 429 and 5xx — never a TLS failure, a malformed URL, an undecodable body, a redirect loop, or an
origin that just failed to connect (that one fails fast for a few seconds; see `HttpClient`).

Every httpx exception becomes one of ours here (`from_httpx`): none escapes as a traceback.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx
import trio

from vidfs.errors import (
    AuthError,
    InvalidRemoteData,
    NotFoundError,
    RemoteError,
    RemoteIOError,
    RemoteTimeoutError,
    StaleError,
    UnreachableError,
    redact_url,
)

if TYPE_CHECKING:
    from vidfs.config.types import HttpSettings

T = TypeVar("T")

RETRY_STATUSES = frozenset({500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is cut to this (a reader is waiting)


# ------------------------------------------------------------------------------------- the status table
@dataclass(frozen=True, slots=True)
class Meaning:
    """What one error status means: the final error of an API call and of a storage request, and whether
    storage first asks the provider for a fresh lease."""

    api: type[RemoteError]
    storage: type[RemoteError]
    renew_lease: bool = False


# The table of the essay above; every status not in it (400, 405, 422, 429 and 5xx after their retries, ...)
# is RemoteIOError → EIO. 401 on an API call is first TokenKeeper.call's business (one new login).
STATUS_TABLE: dict[int, Meaning] = {
    401: Meaning(AuthError, AuthError, renew_lease=True),  # credentials (token, signature) refused
    403: Meaning(AuthError, AuthError, renew_lease=True),  # forbidden; an expired S3/GCS signature
    404: Meaning(NotFoundError, NotFoundError, renew_lease=True),  # not there; a signed URL that moved
    410: Meaning(NotFoundError, NotFoundError, renew_lease=True),  # gone for good; an expired CDN link
    416: Meaning(RemoteIOError, StaleError),  # a range past the end we know: the file shrank
}
_OTHER = Meaning(RemoteIOError, RemoteIOError)


def meaning(status: int) -> Meaning:
    return STATUS_TABLE.get(status, _OTHER)


def error_for(status: int, message: str, *, storage: bool = False) -> RemoteError:
    """The exception an error status finally is (the table above), carrying the status."""
    found = meaning(status)
    kind = found.storage if storage else found.api
    return kind(message, status=status)


def renews_lease(status: int) -> bool:
    """Whether storage answering `status` to a lease means: ask the provider for a fresh one, once."""
    return meaning(status).renew_lease


def raise_for_status(
    response: httpx.Response,
    what: str,
    *,
    explain: Callable[[httpx.Response], str] | None = None,
    storage: bool = False,
) -> None:
    """Nothing for a success or a redirect; else the table's exception. `explain` turns the vendor's error
    body into words (it must never quote a credential); by default the message says only the status."""
    status = response.status_code
    if status < 400:
        return
    detail = explain(response) if explain is not None else f"HTTP {status}"
    raise error_for(status, f"{what}: {detail}", storage=storage)


def is_temp_status(status: int, method: str = "GET") -> bool:
    """429 is always worth another try (the server did not act); a 5xx only for idempotent methods."""
    return status == 429 or (status in RETRY_STATUSES and method.upper() in IDEMPOTENT)


# ------------------------------------------------------------------------------------ httpx exceptions
def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an exception, if any: those are not worth retrying."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


ExceptionKinds = type[BaseException] | tuple[type[BaseException], ...]


def caused_by(exc: BaseException | None, kinds: ExceptionKinds) -> bool:
    """Whether `exc` or one of its causes is of `kinds`."""
    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_temp_failure(exc: BaseException) -> bool:
    """Worth another attempt after a pause: timeouts, dropped or refused connections, 429 and 5xx."""
    if isinstance(exc, UnreachableError):
        return False  # the origin failed to connect a moment ago: fail fast, do not wait on it again
    if isinstance(exc, RemoteError):
        if exc.status is not None:
            return is_temp_status(exc.status)
        return exc.__cause__ is not None and is_temp_failure(exc.__cause__)
    if tls_failure(exc) is not None:
        return False
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def describe(exc: BaseException) -> str:
    """A short reason for an exception, fit for logs: no URL query, a hint for TLS failures."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, RemoteError):
        return str(exc)
    tls = tls_failure(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        return f"TLS failure: {reason} (a private CA can be added with [http] ca_bundle)"
    if isinstance(exc, httpx.DecodingError):
        return "the body could not be decoded (bad Content-Encoding or charset)"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.InvalidURL):
        return "an invalid URL (in a redirect?)"
    name = type(exc).__name__
    text = str(exc)
    if not text:
        cause = exc.__cause__ or exc.__context__
        text = str(cause) if cause is not None else ""
    # httpx messages may embed the URL; keep only the class name and a short reason without query strings.
    if "?" in text:
        text = text.split("?", 1)[0]
    return f"{name}: {text}" if text else name


# Every exception httpx raises on a request (HTTPError: transport, decoding, redirects, status; InvalidURL
# and CookieConflict are not HTTPErrors; StreamError is a RuntimeError).
HTTPX_ERRORS: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
)


def from_httpx(exc: BaseException, method: str, url: str) -> RemoteError:
    """Our exception for an httpx one (raise it `from exc`, so `is_temp_failure` can see the cause)."""
    where = f"{method} {redact_url(url)}"
    if isinstance(exc, httpx.TimeoutException):
        return RemoteTimeoutError(f"{where}: timed out")
    if isinstance(exc, httpx.InvalidURL):
        return InvalidRemoteData(f"{where}: {describe(exc)}")
    return RemoteIOError(f"{where}: {describe(exc)}")


# ----------------------------------------------------------------------------------------- retrying
class TempFailure(Exception):
    """One attempt failed in a way worth another: why, and the server's `Retry-After` if it gave one.
    `pause=False`: go on at once (a body cut short after some bytes arrived: resume from there)."""

    def __init__(
        self, reason: str, *, retry_after: str | None = None, pause: bool = True, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.pause = pause
        self.status = status  # the HTTP status that failed, if one did (429, 503, …)


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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most `attempts` tries; between two, a full-jitter exponential pause (uniform in [0, min(cap,
    base·2^n)]: many readers retrying at once spread apart), or the server's Retry-After when longer, cut
    to `retry_after_cap`."""

    attempts: int
    base: float
    cap: float
    retry_after_cap: float = MAX_RETRY_AFTER

    @classmethod
    def from_settings(cls, settings: HttpSettings, *, retry: bool = True) -> RetryPolicy:
        return cls(settings.retries + 1 if retry else 1, settings.backoff_base, settings.backoff_cap)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        pause = random.uniform(0, min(self.cap, self.base * 2**attempt))
        hinted = retry_after_seconds(retry_after)
        if hinted is not None:
            pause = min(self.retry_after_cap, max(pause, hinted))
        return pause

    async def run(
        self,
        attempt_once: Callable[[int], Awaitable[T]],
        *,
        what: str | Callable[[], str],
        on_retry: Callable[[TempFailure], None] | None = None,
    ) -> T:
        """`attempt_once(n)` until it returns; a `TempFailure` is tried again (after a pause) within the
        budget, any other exception goes through. The budget spent: RemoteIOError (RemoteTimeoutError when
        the last try timed out) saying `what`, why, and how many tries, raised from the last cause. `what`
        may be a function that says it: then it is made only for that error (a redacted URL each time was
        a twentieth of an API call's CPU)."""
        failure: TempFailure | None = None
        tries = max(1, self.attempts)
        for attempt in range(tries):
            try:
                return await attempt_once(attempt)
            except TempFailure as exc:
                failure = exc
            if attempt + 1 >= tries:
                break
            if on_retry is not None:
                on_retry(failure)
            if failure.pause:
                await trio.sleep(self.delay(attempt, failure.retry_after))
        assert failure is not None
        cause = failure.__cause__
        kind = RemoteTimeoutError if caused_by(cause, httpx.TimeoutException) else RemoteIOError
        raise kind(
            f"{what if isinstance(what, str) else what()}: {failure.reason} (after {tries} attempts)",
            status=failure.status,
            retry_after=retry_after_seconds(failure.retry_after),
        ) from cause


def laravel_messages(response: httpx.Response) -> str:
    """A Laravel error body (`{"message", "errors": {"field": ["..."]}}`, AIPIX's) as one line: an
    `explain` for `raise_for_status`."""
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(data, dict):
        return f"HTTP {response.status_code}"
    errors = data.get("errors")
    parts: list[str] = []
    if isinstance(errors, Mapping):
        for key, messages in errors.items():
            text = " ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
            parts.append(f"{key}: {text}")
    detail = "; ".join(parts) or str(data.get("message") or "").strip()
    return f"HTTP {response.status_code}" + (f": {one_line(detail, 400)}" if detail else "")


def one_line(text: object, limit: int = 200) -> str:
    """A vendor's message as one short line (whitespace folded, cut with an ellipsis)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
