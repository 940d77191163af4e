"""Ranged GETs that never return wrong bytes.

`read_range()` asks storage for `[start, end)` with `Range` and, once the ETag is known, `If-Range`. It
accepts an answer only when it is provably the bytes asked for:
- 206 with a `Content-Range` whose first byte is `start` and whose total matches the known size;
- 200 (Range ignored) with the same ETag/size: the body is streamed and the wanted slice cut out;
- an ETag, total size or If-Range outcome that shows the file changed raises `StaleError` (→ ESTALE);
- a status the failure policy (`vidfs.http.policy`) says renews a lease (401/403/404/410) raises
  `LeaseRefused`, carrying the error it finally is, so the caller can resolve a fresh URL once;
- a body cut short (reset, short body, stall past the read timeout) resumes from the bytes received,
  a bounded number of times; 429/5xx and dropped connections back off and retry (honouring Retry-After)
  within the same bound — the policy's `RetryPolicy`, as for every other request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import httpx

from vidfs.errors import RemoteError, RemoteIOError, StaleError, redact_url
from vidfs.http.client import HttpClient
from vidfs.http.policy import (
    HTTPX_ERRORS,
    TempFailure,
    describe,
    error_for,
    is_temp_failure,
    is_temp_status,
    renews_lease,
)
from vidfs.http.streamed import BODY_RECEIVE_SIZE, LeanStream, Streamed
from vidfs.model import StreamLease

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
DRAIN_LIMIT = 64 * 1024  # bytes past the wanted range we still read to keep the connection alive


class LeaseRefused(Exception):
    """Storage refused a lease (401/403/404/410): resolve again, once. `error` is what it finally is."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"storage refused the download URL (HTTP {status})")
        self.status = status
        self.error = error_for(status, f"GET {redact_url(url)}: HTTP {status}", storage=True)


@dataclass(frozen=True, slots=True)
class RangeResult:
    data: bytes  # empty when a sink took the bytes
    etag: str | None
    total: int | None
    received: int = 0


class Sink(Protocol):
    """Where a ranged body goes, in order, as it arrives: handed over (`add`), or received straight into
    buffers the sink gives (`rooms`, then `filled`) when the answer can (`LeanStream.receive_into`)."""

    def add(self, offset: int, chunk: bytes) -> None: ...

    def rooms(self, offset: int, limit: int) -> list[memoryview]:
        """Buffers for the bytes from `offset` on, in order, at most `limit` bytes in all."""
        ...

    def filled(self, offset: int, count: int) -> None:
        """The first `count` bytes of the last `rooms` now hold the bytes from `offset` on."""
        ...


class _Receiver:
    """Where a body goes as it arrives: a buffer, or a sink that gets each byte at its file offset, so the
    caller can hand out the first blocks of a large request before the last ones have arrived."""

    __slots__ = ("buffer", "count", "sink", "start")

    def __init__(self, start: int, sink: Sink | None) -> None:
        self.start = start
        self.count = 0
        self.sink = sink
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        if self.sink is not None:
            self.sink.add(self.start + self.count, chunk)
        else:
            self.buffer += chunk
        self.count += len(chunk)

    def rooms(self, limit: int) -> list[memoryview]:
        assert self.sink is not None
        return self.sink.rooms(self.start + self.count, limit)

    def filled(self, count: int) -> None:
        assert self.sink is not None
        self.sink.filled(self.start + self.count, count)
        self.count += count


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
    receiver = _Receiver(start, sink)
    known = _Known(etag, size)
    where = f"GET {redact_url(lease.url)} bytes {start}-{end - 1}"

    async def once(_attempt: int) -> None:
        position = start + receiver.count
        if position >= end:
            return
        try:
            done = await _one_request(
                http, lease, position, end, receiver, known, tag=tag, slot_held=slot_held
            )
        except RemoteError as exc:
            if is_temp_failure(exc):
                raise TempFailure(describe(exc.__cause__ or exc)) from exc
            raise
        if not done:
            raise TempFailure("body ended early", pause=False)  # go on at once from the bytes received

    def again(failure: TempFailure) -> None:
        http.stats.incr("range.retries" if failure.pause else "range.resumes")

    try:
        await http.retry_policy(attempts=attempts).run(once, what=where, on_retry=again)
    except RemoteIOError as exc:
        http.gave_up(lease.url, exc)
        raise
    return RangeResult(bytes(receiver.buffer), known.etag, known.size, receiver.count)


@dataclass(slots=True)
class _Known:
    """What the answers so far told about the file: an answer that contradicts it means the file changed."""

    etag: str | None
    size: int | None


async def _one_request(
    http: HttpClient,
    lease: StreamLease,
    position: int,
    end: int,
    receiver: _Receiver,
    known: _Known,
    *,
    tag: str,
    slot_held: bool,
) -> bool:
    """One GET from `position`; appends to `receiver` and updates `known`. Returns whether it is complete."""
    headers = dict(lease.headers)
    headers["Range"] = f"bytes={position}-{end - 1}"
    strong = _strong(known.etag)
    if strong:
        headers["If-Range"] = strong
    async with http.stream("GET", lease.url, tag=tag, headers=headers, slot_held=slot_held) as response:
        status = response.status_code
        if renews_lease(status):
            raise LeaseRefused(status, lease.url)
        if is_temp_status(status):
            raise TempFailure(
                f"HTTP {status}", retry_after=response.headers.get("Retry-After"), status=status
            )
        got_etag = response.headers.get("ETag")
        if known.etag and got_etag and got_etag != known.etag:
            raise StaleError(f"{redact_url(lease.url)} changed (ETag {known.etag} → {got_etag})")
        known.etag = known.etag or got_etag
        if status == 416:
            return _past_the_end(response, lease, position, known)
        if status == 206:
            return await _partial(response, lease, position, end, receiver, known)
        if status == 200:
            if strong and not got_etag:
                # If-Range failed without telling why: the representation changed.
                raise StaleError(f"{redact_url(lease.url)} changed (If-Range not honoured)")
            http.stats.incr("range.ignored")
            return await _whole(response, lease, position, end, receiver, known)
        raise error_for(status, f"GET {redact_url(lease.url)}: HTTP {status}", storage=True)


def _changed_size(lease: StreamLease, size: int | None, total: int | str | None) -> StaleError:
    return StaleError(f"{redact_url(lease.url)} changed size ({size} → {total})")


def _past_the_end(response: Streamed, lease: StreamLease, position: int, known: _Known) -> bool:
    """416: the end of the file when we asked from (or past) its known end, else the file shrank."""
    total = (parse_content_range(response.headers.get("Content-Range")) or (0, 0, None))[2]
    if total is not None and known.size is not None and total != known.size:
        raise _changed_size(lease, known.size, total)
    if known.size is not None and position >= known.size:
        return True
    raise error_for(416, f"{redact_url(lease.url)}: range {position}- not satisfiable", storage=True)


async def _partial(
    response: Streamed, lease: StreamLease, position: int, end: int, receiver: _Receiver, known: _Known
) -> bool:
    """206: the bytes from `position`, when Content-Range proves they are."""
    parsed = parse_content_range(response.headers.get("Content-Range"))
    if parsed is None:
        raise TempFailure("206 without a valid Content-Range")
    first, last, total = parsed
    if total is not None:
        if known.size is not None and total != known.size:
            raise _changed_size(lease, known.size, total)
        known.size = total
    if first != position or last < first:
        raise TempFailure(f"Content-Range {first}-{last} does not start at {position}")
    wanted = min(end, last + 1) - position
    await _read_body(response, receiver, skip=0, wanted=wanted)
    return position + wanted >= end or (known.size is not None and position + wanted >= known.size)


async def _whole(
    response: Streamed, lease: StreamLease, position: int, end: int, receiver: _Receiver, known: _Known
) -> bool:
    """200: Range ignored; the whole file comes, the wanted slice is cut out of it."""
    length = response.headers.get("Content-Length")
    total = int(length) if length is not None and length.isdigit() else None
    if total is not None and known.size is not None and total != known.size:
        raise _changed_size(lease, known.size, total)
    wanted = min(end, total if total is not None else end) - position
    await _read_body(response, receiver, skip=position, wanted=wanted)
    known.size = known.size or total
    return True


async def _read_body(response: Streamed, buffer: _Receiver, *, skip: int, wanted: int) -> None:
    """Append up to `wanted` bytes after skipping `skip`; short bodies keep what arrived.

    The body is read to its end when only a little is left (a 206 that is exactly the range asked for):
    a response read to its end gives its connection back to the pool, an abandoned one closes it, and a new
    connection costs a round trip."""
    taken = 0
    surplus = 0
    try:
        if (
            isinstance(response, LeanStream)
            and response.can_receive_into
            and buffer.sink is not None
            and not skip
        ):
            # Straight into the sink's buffers; what the answer has beyond `wanted` is drained below.
            while taken < wanted:  # each turn receives at least one byte, or raises
                count = await response.receive_into(buffer.rooms(min(wanted - taken, BODY_RECEIVE_SIZE)))
                buffer.filled(count)
                taken += count
        # No chunk size: httpx would re-chunk (copy) every network read; the sink places the bytes anyway.
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
    except HTTPX_ERRORS as exc:
        if taken >= wanted:
            return  # everything wanted arrived; only the drain failed
        reason = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        raise TempFailure(f"body broken after {taken} bytes ({reason})") from exc
    if taken < wanted:
        raise TempFailure(f"body ended after {taken} of {wanted} bytes")
