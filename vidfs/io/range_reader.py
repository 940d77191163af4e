"""Ranged GETs that never return wrong bytes.

`read_range()` asks storage for `[start, end)` with `Range` and, once the ETag is known, `If-Range`. It
accepts an answer only when it is provably the bytes asked for:
- 206 with a `Content-Range` whose first byte is `start` and whose total matches the known size;
- 200 (Range ignored) with the same ETag/size: the body is streamed and the wanted slice cut out;
- an ETag, total size or If-Range outcome that shows the file changed raises `StaleError` (→ ESTALE);
- 401/403/410 raise `LeaseRefused` so the caller can resolve a fresh URL once;
- a body cut short (reset, short body, stall past the read timeout) resumes from the bytes received,
  a bounded number of times; 429/5xx back off and retry (honouring Retry-After) within the same bound.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio

from vidfs.errors import (
    NotFoundError,
    RemoteIOError,
    RemoteTimeoutError,
    StaleError,
    UnreachableError,
    redact_url,
)
from vidfs.http.client import MAX_RETRY_AFTER, HttpClient, retry_after_seconds
from vidfs.model import StreamLease

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
DRAIN_LIMIT = 64 * 1024  # bytes past the wanted range we still read to keep the connection alive


class LeaseRefused(Exception):
    """Storage answered 401/403/410 to a lease: resolve again (once)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"storage refused the download URL (HTTP {status})")
        self.status = status


@dataclass(frozen=True, slots=True)
class RangeResult:
    data: bytes  # empty when a sink took the bytes
    etag: str | None
    total: int | None
    received: int = 0


Sink = Callable[[int, bytes], None]


class _Receiver:
    """Where a body goes as it arrives: a buffer, or a sink called with (file offset, bytes) so the caller
    can hand out the first blocks of a large request before the last ones have arrived."""

    __slots__ = ("buffer", "count", "sink", "start")

    def __init__(self, start: int, sink: Sink | None) -> None:
        self.start = start
        self.count = 0
        self.sink = sink
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        if self.sink is not None:
            self.sink(self.start + self.count, chunk)
        else:
            self.buffer += chunk
        self.count += len(chunk)


def _strong(etag: str | None) -> str | None:
    if etag and not etag.startswith("W/"):
        return etag
    return None


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


async def read_range(
    http: HttpClient,
    lease: StreamLease,
    start: int,
    end: int,
    *,
    tag: str,
    etag: str | None,
    size: int | None,
    attempts: int | None = None,
    slot_held: bool = False,
    sink: Sink | None = None,
) -> RangeResult:
    """The bytes `[start, end)` of the file behind `lease` (fewer only at end of file), returned, or passed
    to `sink` in order as they arrive."""
    if end <= start:
        return RangeResult(b"", etag, size)
    attempts = attempts if attempts is not None else http.settings.retries + 1
    buffer = _Receiver(start, sink)
    known_etag = etag
    known_size = size
    failure = ""
    last_cause: BaseException | None = None
    for attempt in range(attempts):
        position = start + buffer.count
        if position >= end:
            break
        try:
            known_etag, known_size, done = await _one_request(
                http,
                lease,
                position,
                end,
                buffer,
                tag=tag,
                etag=known_etag,
                size=known_size,
                slot_held=slot_held,
            )
            if done:
                break
            failure = "body ended early"
        except _Retry as retry:
            failure = retry.reason
            last_cause = retry.__cause__
            http.stats.incr("range.retries")
            if attempt + 1 < attempts:
                await trio.sleep(retry.delay if retry.delay is not None else _backoff(http, attempt))
            continue
        http.stats.incr("range.resumes")
    else:
        http.stats.incr("http.errors")
        if last_cause is not None:
            http.note_unreachable(lease.url, last_cause)
        raise RemoteIOError(
            f"GET {redact_url(lease.url)} bytes {start}-{end - 1}: {failure} (after {attempts} attempts)"
        )
    return RangeResult(bytes(buffer.buffer), known_etag, known_size, buffer.count)


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def _backoff(http: HttpClient, attempt: int) -> float:
    return random.uniform(0, min(http.settings.backoff_cap, http.settings.backoff_base * 2**attempt))


async def _one_request(
    http: HttpClient,
    lease: StreamLease,
    position: int,
    end: int,
    buffer: _Receiver,
    *,
    tag: str,
    etag: str | None,
    size: int | None,
    slot_held: bool,
) -> tuple[str | None, int | None, bool]:
    """One GET from `position`; appends to `buffer`. Returns (etag, size, complete)."""
    headers = dict(lease.headers)
    headers["Range"] = f"bytes={position}-{end - 1}"
    strong = _strong(etag)
    if strong:
        headers["If-Range"] = strong
    try:
        async with http.stream("GET", lease.url, tag=tag, headers=headers, slot_held=slot_held) as response:
            status = response.status_code
            if status in (401, 403, 410):
                raise LeaseRefused(status)
            if status == 404:
                raise NotFoundError(f"GET {redact_url(lease.url)}: HTTP 404", status=404)
            if status == 429 or status >= 500:
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                raise _Retry(f"HTTP {status}", None if hinted is None else min(hinted, MAX_RETRY_AFTER))
            got_etag = response.headers.get("ETag")
            if etag and got_etag and got_etag != etag:
                raise StaleError(f"{redact_url(lease.url)} changed (ETag {etag} → {got_etag})")
            etag = etag or got_etag
            if status == 416:
                total = (parse_content_range(response.headers.get("Content-Range")) or (0, 0, None))[2]
                if total is not None and size is not None and total != size:
                    raise StaleError(f"{redact_url(lease.url)} changed size ({size} → {total})")
                if size is not None and position >= size:
                    return etag, size, True
                raise StaleError(f"{redact_url(lease.url)}: range {position}- not satisfiable")
            if status == 206:
                parsed = parse_content_range(response.headers.get("Content-Range"))
                if parsed is None:
                    raise _Retry("206 without a valid Content-Range")
                first, last, total = parsed
                if total is not None:
                    if size is not None and total != size:
                        raise StaleError(f"{redact_url(lease.url)} changed size ({size} → {total})")
                    size = total
                if first != position or last < first:
                    raise _Retry(f"Content-Range {first}-{last} does not start at {position}")
                wanted = min(end, last + 1) - position
                await _read_body(response, buffer, skip=0, wanted=wanted)
                complete = position + wanted >= end or (size is not None and position + wanted >= size)
                return etag, size, complete
            if status == 200:
                length = response.headers.get("Content-Length")
                if length is not None and size is not None and int(length) != size:
                    raise StaleError(f"{redact_url(lease.url)} changed size ({size} → {length})")
                if strong and not got_etag:
                    # If-Range failed without telling why: the representation changed.
                    raise StaleError(f"{redact_url(lease.url)} changed (If-Range not honoured)")
                http.stats.incr("range.ignored")
                total_len = int(length) if length is not None else None
                wanted = min(end, total_len if total_len is not None else end) - position
                await _read_body(response, buffer, skip=position, wanted=wanted)
                return etag, size or total_len, True
            raise RemoteIOError(f"GET {redact_url(lease.url)}: HTTP {status}", status=status)
    except (httpx.TransportError, RemoteIOError) as exc:
        if isinstance(exc, UnreachableError) or (isinstance(exc, RemoteIOError) and exc.status is not None):
            raise
        timed_out = isinstance(exc, httpx.TimeoutException | RemoteTimeoutError)
        raise _Retry("timed out" if timed_out else type(exc).__name__) from exc


async def _read_body(response: httpx.Response, buffer: _Receiver, *, skip: int, wanted: int) -> None:
    """Append up to `wanted` bytes after skipping `skip`; short bodies keep what arrived.

    The body is read to its end when only a little is left (a 206 that is exactly the range asked for):
    a response read to its end gives its connection back to the pool, an abandoned one closes it, and a new
    connection costs a round trip."""
    taken = 0
    surplus = 0
    try:
        # No chunk size: httpx would re-chunk (copy) every network read; the block assembler cuts anyway.
        async for chunk in response.aiter_raw():
            if taken >= wanted:
                surplus += len(chunk)
                if surplus > DRAIN_LIMIT:
                    return  # much more than we asked for (Range ignored): cheaper to close
                continue
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk = chunk[skip:]
                skip = 0
            room = wanted - taken
            if len(chunk) >= room:
                buffer.add(chunk[:room])
                taken += room
                continue
            buffer.add(chunk)
            taken += len(chunk)
    except httpx.HTTPError as exc:
        if taken >= wanted:
            return  # everything wanted arrived; only the drain failed
        reason = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        raise _Retry(f"body broken after {taken} bytes ({reason})") from exc
    if taken < wanted:
        raise _Retry(f"body ended after {taken} of {wanted} bytes")
