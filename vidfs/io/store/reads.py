"""`StoreReads`: the reading half of `DiskStore` (`vidfs.io.store.service`): blocks found and checked
(`get_run`), whole replies read from the disk and the next one read ahead (`read_span`,
`vidfs.io.store.spans`), a file's extents loaded from the index when first needed, and what a damaged block
or a failed read does to the ledger."""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable

import trio

from vidfs.io.remote_file import FileKey
from vidfs.io.store import disk
from vidfs.io.store.disk import ReadOutcome, direct_refused, read_stretches
from vidfs.io.store.index import Index
from vidfs.io.store.layout import file_name
from vidfs.io.store.ledger import Ledger, Plan
from vidfs.io.store.model import Extent, FileEntry
from vidfs.io.store.spans import SpanBuffers, read_span
from vidfs.stats import Stats

log = logging.getLogger("vidfs.io.store")

SPANS_AHEAD = 4  # spans read ahead and not asked for whole yet, at most (each holds its buffer)
# A span read ahead: four of the largest FUSE reads, in one read and one trip to a worker thread. A MiB at a
# time (one trip per FUSE read), the thread's wake-ups and trio's were the largest part of a re-read's CPU
# after the copies had gone: (f) at 0 ms, alternated, six runs each, 0.75-0.93 CPU s/GB (median 0.77) with
# 4 MiB, 0.78-1.08 (0.94) with 2, 0.86-1.25 (1.15) with 1; the daemon's peak RSS 55 MiB against 50.
SPAN_AHEAD_BYTES = 4 << 20
# Spans read ahead of the one a reader is in: one 4 MiB read at a time took longer than the reader took for
# the rest of the span, so the disk read one span at a time, on one of the store's two read threads, and a
# warm re-read waited for it. Two in flight, (d) and (f) alternated with one (three runs each, this machine
# busier than for the figures above): warm re-read 1404-1459 MB/s (median 1439) against 1326-1663 (1356),
# (f) 0.88-1.12 CPU s/GB (median 0.99) at 322-564 MB/s against 1.10-1.30 (1.19) at 284-358.
SPANS_IN_FLIGHT = 2


def describe(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


class SpanAhead:
    """A span `[start, stop)` of a file being read ahead of its reader: `result` waits for it (None: it could
    not be read whole). The reads it holds are views of its one buffer."""

    def __init__(self, key: FileKey, start: int, stop: int) -> None:
        self.key, self.start, self.stop = key, start, stop
        self._done = trio.Event()
        self._got: memoryview | None = None

    async def run(
        self, read: Callable[[FileEntry, int, int], Awaitable[memoryview | None]], entry: FileEntry
    ) -> None:
        try:
            self._got = await read(entry, self.start, self.stop)
        except Exception:  # never the store's end: the reader goes the usual way
            log.exception("disk cache: reading ahead in %s failed", entry.path)
        finally:
            self._done.set()

    async def result(self) -> memoryview | None:
        await self._done.wait()
        return self._got


class StoreReads:
    """Mixed into `DiskStore`, whose `__init__` makes what is declared here."""

    block_size: int
    _ready: bool
    _ledger: Ledger
    _index: Index | None
    _counts: dict[str, int]
    _stats: Stats
    _work: trio.lowlevel.ParkingLot
    _read_limiter: trio.CapacityLimiter
    _spans: bool  # replies may be read whole from the disk (O_DIRECT and aligned blocks)
    _span_buffers: SpanBuffers
    _spans_ahead: list[SpanAhead]  # oldest first
    _nursery: trio.Nursery | None  # the service's, while it runs: spans are read ahead there

    def _log_counted(self, kind: str, message: str, *args: object) -> None:
        raise NotImplementedError

    async def get_run(self, key: FileKey, first: int, last: int, file_size: int) -> dict[int, bytes]:
        """The blocks first..last of the file that are cached (checked), by index; one worker-thread hop."""
        count = last - first + 1
        if not self._ready or count <= 0:
            return {}
        ledger = self._ledger
        entry = ledger.files.get(file_name(key, self.block_size))
        if entry is not None and entry.size != file_size:  # the same fingerprint, another size: not ours
            ledger.remove_file(entry)
            self._work.unpark()
            entry = None
        if (
            entry is None
            or (entry.extents is None and not await self._load(entry))
            or not ledger.current(entry)
        ):
            self._counts["misses"] += count
            return {}
        plan = ledger.plan_read(entry, first, last)
        found = plan.found
        if plan.stretches:
            outcome = await trio.to_thread.run_sync(
                read_stretches,
                entry.path,
                self.block_size,
                entry.seed,
                plan.stretches,
                limiter=self._read_limiter,
            )
            self._counts["reads"] += 1
            self._counts["reads_direct"] += outcome.direct
            self._take_reads(entry, plan, outcome)
        if found:
            ledger.touch(entry, first, last)
        self._counts["hits"] += len(found)
        self._counts["misses"] += count - len(found)
        return found

    def on_disk(self, key: FileKey, first: int, last: int, file_size: int) -> bool:
        """Blocks first..last are all on disk (not queued for their write), as far as known without waiting:
        they are read when asked for (`read_span`), never prefetched (see `vidfs.io.store.spans`)."""
        entry = self._span_entry(key, file_size)
        return entry is not None and self._ledger.all_on_disk(entry, first, last)

    def _span_entry(self, key: FileKey, file_size: int) -> FileEntry | None:
        if not self._ready or disk._DIRECT.refused or not self._spans:
            return None
        entry = self._ledger.files.get(file_name(key, self.block_size))
        if (
            entry is None
            or entry.size != file_size
            or entry.extents is None
            or not self._ledger.current(entry)
        ):
            return None
        return entry

    async def read_span(self, key: FileKey, start: int, stop: int, file_size: int) -> memoryview | None:
        """Bytes `[start, stop)` of the file as one checked view when all its blocks are on disk (and its file
        system reads O_DIRECT); else None: the caller goes the usual way (`vidfs.io.store.spans`). From a span
        read ahead when one holds it; the spans after it are read ahead now, so that the disk is never idle
        while a sequential reader takes what it got (the kernel asks for a MiB or two ahead at most)."""
        ahead = next(
            (a for a in self._spans_ahead if a.key == key and a.start <= start and stop <= a.stop), None
        )
        if ahead is not None:
            self._read_ahead(key, ahead.stop, file_size)  # asked now: the kernel has the next read on its way
            whole = await ahead.result()
            if whole is not None:
                self._counts["spans_ahead"] += 1
                if stop == ahead.stop and ahead in self._spans_ahead:
                    self._spans_ahead.remove(ahead)
                return whole[start - ahead.start : stop - ahead.start]
        entry = self._span_entry(key, file_size)
        first, last = start // self.block_size, (stop - 1) // self.block_size
        if entry is None or not self._ledger.all_on_disk(entry, first, last):
            return None
        self._read_ahead(key, stop, file_size)
        return await self._span_now(entry, start, stop)

    def _read_ahead(self, key: FileKey, start: int, file_size: int) -> None:
        """The SPANS_IN_FLIGHT spans from `start` on read ahead, those not read or being read already."""
        for number in range(SPANS_IN_FLIGHT):
            self._read_ahead_one(key, start + number * SPAN_AHEAD_BYTES, file_size)

    def _read_ahead_one(self, key: FileKey, start: int, file_size: int) -> None:
        stop = min(file_size, start + SPAN_AHEAD_BYTES)
        nursery = self._nursery
        if (
            nursery is None
            or stop <= start
            or any(a.key == key and a.start == start for a in self._spans_ahead)
        ):
            return
        entry = self._span_entry(key, file_size)
        if entry is None or not self._ledger.all_on_disk(
            entry, start // self.block_size, (stop - 1) // self.block_size
        ):
            return
        ahead = SpanAhead(key, start, stop)
        self._spans_ahead.append(ahead)
        if len(self._spans_ahead) > SPANS_AHEAD:  # a reader that went elsewhere: its span is let go
            del self._spans_ahead[0]
        nursery.start_soon(ahead.run, self._span_now, entry)

    async def _span_now(self, entry: FileEntry, start: int, stop: int) -> memoryview | None:
        first, last = start // self.block_size, (stop - 1) // self.block_size
        plan = self._ledger.plan_read(entry, first, last)
        # A read ahead waits its turn: by then a block may have been evicted, dropped or queued anew. Only one
        # stretch of all the blocks lines up with `start`.
        if plan.found or len(plan.stretches) != 1 or len(plan.stretches[0].lengths) != last - first + 1:
            return None
        base, (stretch,) = first * self.block_size, plan.stretches
        try:
            got = await trio.to_thread.run_sync(
                read_span, entry.path, self.block_size, entry.seed, stretch, start - base, stop - base,
                self._span_buffers, limiter=self._read_limiter,
            )  # fmt: skip
        except OSError as exc:
            if direct_refused(exc):
                disk._DIRECT.refused = True
            else:
                self._read_failed(entry, exc, plan.refs)
            return None
        self._counts["reads"] += 1
        self._counts["reads_direct"] += 1
        if isinstance(got, list):  # damaged: those dropped, the read goes the usual way (fetched again)
            refs = [plan.refs[position] for position in got]
            current = [
                (x, index) for x, index, value in refs if self._ledger.still_damaged(entry, x, index, value)
            ]
            if current:
                self._drop_damaged(entry, current)
            return None
        self._ledger.touch(entry, first, last)
        self._counts["hits"] += last - first + 1
        self._counts["spans"] += 1
        return got

    def _take_reads(self, entry: FileEntry, plan: Plan, outcome: ReadOutcome) -> None:
        found, refs = plan.found, plan.refs
        damaged: list[tuple[Extent, int]] = []
        position = 0
        for blocks in outcome.blocks:
            for data in blocks:
                extent, index, value = refs[position]
                position += 1
                if data is not None:
                    found[index] = data
                elif self._ledger.still_damaged(entry, extent, index, value):
                    damaged.append((extent, index))
        if damaged:
            self._drop_damaged(entry, damaged)
        if outcome.error is not None:
            self._read_failed(entry, outcome.error, refs[position:])

    def _drop_damaged(self, entry: FileEntry, damaged: list[tuple[Extent, int]]) -> None:
        self._ledger.drop_blocks(entry, damaged)
        self._counts["torn_detected"] += len(damaged)
        self._stats.incr("disk.torn_detected", len(damaged))
        log.warning(
            "disk cache: %d damaged block(s) of %s (first: %d) were dropped; fetching them again",
            len(damaged),
            entry.key.remote_id,
            damaged[0][1],
        )
        self._work.unpark()

    def _read_failed(self, entry: FileEntry, exc: OSError, unread: list[tuple[Extent, int, int]]) -> None:
        ledger = self._ledger
        current = [
            (extent, index)
            for extent, index, value in unread
            if ledger.still_damaged(entry, extent, index, value)
        ]
        if not current:
            return  # evicted meanwhile: nothing to say
        self._counts["read_errors"] += 1
        self._stats.incr("disk.read_errors")
        if exc.errno == errno.ENOENT:
            log.warning("disk cache: the data of %s is gone; fetching it again", entry.key.remote_id)
            ledger.remove_file(entry)
        else:  # EIO and the like: those blocks may sit on a bad spot; store them anew
            self._log_counted("read_errors", "disk cache: cannot read %s: %s", entry.path, describe(exc))
            ledger.drop_blocks(entry, current)
        self._work.unpark()

    async def _load(self, entry: FileEntry) -> bool:
        """Read a file's extents from the index (once; concurrent callers wait for the first)."""
        for _ in range(3):
            if entry.extents is not None:
                return True
            if entry.loading is not None:
                await entry.loading.wait()
                continue
            index = self._index
            if index is None:
                return False
            event = entry.loading = trio.Event()
            try:
                rows = await trio.to_thread.run_sync(index.extents, entry.name, limiter=self._read_limiter)
            except (sqlite3.Error, OSError) as exc:
                self._counts["read_errors"] += 1
                self._log_counted("read_errors", "disk cache: cannot read the index: %s", describe(exc))
                return False
            finally:
                entry.loading = None
                event.set()
            if entry.extents is None:
                self._ledger.install_extents(entry, rows)
        return entry.extents is not None
