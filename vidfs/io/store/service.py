"""`DiskStore`: the store as a trio service (see the package essay for the design)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio

from vidfs.io.remote_file import FileKey
from vidfs.io.store.backlog import Backlog
from vidfs.io.store.disk import (
    DIRECT_ALIGN,
    DIRECT_READS,
    BatchOutcome,
    Space,
    WriteBehind,
    apply_batch,
    space_of,
)
from vidfs.io.store.index import Change, Index
from vidfs.io.store.layout import (
    file_name,
    remove_set_aside,
)
from vidfs.io.store.ledger import Ledger
from vidfs.io.store.model import FileEntry, WriteOp
from vidfs.io.store.opening import Opening, open_blocking
from vidfs.io.store.reads import SpanAhead, StoreReads, describe
from vidfs.io.store.spans import SpanBuffers
from vidfs.stats import Stats

log = logging.getLogger("vidfs.io.store")

READ_THREADS = 2
QUEUE_BYTES = 16 << 20  # accepted blocks waiting for their write (kept in memory meanwhile)
BACKLOG_BYTES = 2 * QUEUE_BYTES  # downloads to be stored plus the write queue (`Backlog`)
BATCH_BYTES = 8 << 20  # data per writer-thread call
# A batch not yet full waits this long for more blocks. A batch per random read (one block or two) was an
# index transaction, a statfs, an open and a close each, and the writer thread's turns with the GIL came in
# the middle of the next read: p50 of 200 random 64 KiB reads at 0 ms was 0.86-1.06 ms.
GATHER = 0.25
TOUCH_INTERVAL = 30.0  # recency is saved this often (and at close)
SPACE_INTERVAL = 2.0  # while the file system is short of room, it is measured again this often
CLOSE_TIMEOUT = 30.0
PAUSE_FIRST, PAUSE_LONGEST = 0.5, 8.0  # writes paused on a full or read-only disk, retried this often
RETRY_FIRST, RETRY_LONGEST = 1.0, 60.0  # an index that cannot be opened: tried again this often
PUT_ROUNDS = 64  # make-room / load rounds of one put (each round loads one file's extents)
RESERVE_LEAST, RESERVE_MOST = 8 << 20, 1 << 30  # free space the store leaves on its file system
LOG_EVERY = 1000  # repeated errors of one kind: logged the first time, then every LOG_EVERY

FULL = "full"
READ_ONLY = "read_only"
COUNTERS = (
    "hits", "misses", "reads", "reads_direct", "spans", "spans_ahead",
    "torn_detected", "rejected", "write_errors",
    "read_errors", "other_errors", "skipped_unwritable", "waits", "batches", FULL, READ_ONLY,
)  # fmt: skip
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM = 13, 8, 14, 3
_CONDITION_TEXT = {
    FULL: "the file system under %s is full (%s): blocks are not stored until there is room again",
    READ_ONLY: "the cache dir %s cannot be written (%s): blocks are not stored until it can",
}


def condition_of(exc: BaseException) -> str | None:
    """Which lasting condition an error shows: the disk is full, or read-only; None for anything else."""
    if isinstance(exc, OSError):
        return FULL if exc.errno in _FULL_ERRNOS else READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else None
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_FULL:
            return FULL
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM):
            return READ_ONLY
    return None


class DiskStore(StoreReads):
    """Implements `vidfs.io.block_cache.BlockStore`. Start it with ``await nursery.start(store.run)``: until
    then, and if its directory cannot be used, it stores nothing and finds nothing."""

    def __init__(self, root: Path, *, capacity: int, block_size: int, stats: Stats) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if capacity < block_size:
            raise ValueError(f"disk cache capacity {capacity} is smaller than one block ({block_size})")
        self.root = Path(root)
        self.capacity = capacity
        self.block_size = block_size
        self._stats = stats
        self._ledger = Ledger(self.root, block_size=block_size, capacity=capacity)
        self._layout = self._ledger.layout
        self._queue_limit = max(QUEUE_BYTES, 4 * block_size)
        backlog_limit = max(BACKLOG_BYTES, 8 * block_size)
        self._backlog = Backlog(backlog_limit, block_size, self._queued_bytes, self._open_for_writes)
        self._index: Index | None = None
        self._lock_fd: int | None = None
        self._ready = False
        self._closing = False
        self._in_flight = False
        self._carried: list[Change] = []
        self._work = trio.lowlevel.ParkingLot()  # the writer waits here for operations
        self._room = trio.lowlevel.ParkingLot()  # puts wait here for room in the write queue
        self._idle = trio.lowlevel.ParkingLot()  # `drain` waits here
        self._draining = 0  # `drain` callers waiting: the writer does not gather then
        self._read_limiter = trio.CapacityLimiter(READ_THREADS)
        self._write_limiter = trio.CapacityLimiter(1)
        self._behind = WriteBehind()  # the writer thread's: pages of written runs given back
        self._condition: str | None = None  # FULL or READ_ONLY while writes are paused
        self._paused_until = 0.0
        self._pause = PAUSE_FIRST
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._written: Callable[[bytes], None] | None = None  # `hand_back_to`
        self._spans = DIRECT_READS and block_size % DIRECT_ALIGN == 0  # replies read whole from the disk
        self._span_buffers = SpanBuffers()
        self._spans_ahead: list[SpanAhead] = []
        self._nursery: trio.Nursery | None = None

    # ---------------------------------------------------------------------------------- the service
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, report started, write until cancelled; then write what is queued (bounded by
        CLOSE_TIMEOUT) and close. Never raises but `Cancelled`: a store that cannot open is retried."""
        try:
            state = await self._open()
            task_status.started()
            delay = RETRY_FIRST
            while state is Opening.RETRY:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_LONGEST)
                state = await self._open()
            if state is Opening.OPEN:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._tidy)
                    await self._writer()
        finally:
            self._nursery = None
            self._spans_ahead.clear()
            with trio.CancelScope(shield=True):
                await self._close()

    async def _open(self) -> Opening:
        try:
            opened = await trio.to_thread.run_sync(open_blocking, self._layout, self.block_size)
        except Exception as exc:  # OSError, sqlite3.Error, or damage not foreseen: never the mount's end
            if self._counts["read_errors"] == 0:
                log.warning(
                    "disk cache at %s cannot be opened (%s); trying again later", self.root, describe(exc)
                )
            self._counts["read_errors"] += 1
            return Opening.RETRY
        if opened is None:
            log.warning(
                "disk cache %s is in use by another vidfs process: this mount runs without it", self.root
            )
            return Opening.DISABLED
        self._lock_fd, self._index = opened.lock, opened.index
        for note in opened.notes:
            log.warning("disk cache %s: %s", self.root, note)
        contents = opened.contents
        self._ledger.install(contents.files, contents.pins, contents.clock)
        self._ready = True
        self._fit_to(opened.space)
        await self._evict_to_capacity()
        log.info(
            "disk cache at %s: %d file(s), %d bytes of %d",
            self.root,
            len(self._ledger.files),
            self._ledger.total,
            self.capacity,
        )
        return Opening.OPEN

    async def _evict_to_capacity(self) -> None:
        """The capacity may have shrunk since the last run."""
        for _ in range(PUT_ROUNDS * 16):
            room = self._make_room(0, None)
            if not isinstance(room, FileEntry):
                break
            if not await self._load(room):
                break
        if self._ledger.total > self._ledger.capacity:
            log.warning(
                "disk cache %s: pinned files hold more than the %d bytes it may use",
                self.root,
                self._ledger.capacity,
            )

    async def _tidy(self) -> None:
        try:
            await trio.to_thread.run_sync(remove_set_aside, self._layout)
        except OSError as exc:
            log.debug("disk cache: cannot remove set-aside data: %s", exc)

    async def _close(self) -> None:
        if self._ready:
            self._closing = True
            self._room.unpark_all()
            self._backlog.admit()  # every waiting download goes on
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                for _ in range(1000):
                    ledger = self._ledger
                    if not (ledger.ops or ledger.pins_dirty or ledger.touched or self._carried):
                        break
                    if not await self._write_batch(touches=True):
                        break
            if scope.cancelled_caught:
                log.warning("disk cache: writes still pending after %gs; giving up on them", CLOSE_TIMEOUT)
            self._ready = False
            self._idle.unpark_all()
        if self._index is not None:
            index, self._index = self._index, None
            try:
                await trio.to_thread.run_sync(index.close)
            except sqlite3.Error as exc:
                log.debug("disk cache: closing the index: %s", exc)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def drain(self) -> None:
        """Wait until every queued operation is written (tests, and `vidfs` tools that need it on disk)."""
        self._draining += 1
        self._work.unpark()
        try:
            while self._ready and (self._ledger.ops or self._ledger.pins_dirty or self._in_flight):
                await self._idle.park()
        finally:
            self._draining -= 1

    # -------------------------------------------------------------------------------------- writing
    async def put_run(self, key: FileKey, first: int, blocks: Sequence[bytes], file_size: int) -> None:
        """Store blocks first.. of a file. Waits while the write queue is full (the caller is a background
        fetch whose readers have their bytes already); returns at once when the disk refuses writes."""
        if not blocks or not self._accepting(len(blocks)):
            return
        await self._wait_for_room(sum(len(block) for block in blocks))
        batch = list(blocks)
        for _ in range(PUT_ROUNDS):
            if not self._accepting(len(blocks)):
                return
            ledger = self._ledger
            entry = ledger.entry_for(key, file_size)
            if entry.size != file_size:
                ledger.remove_file(entry)
                continue
            if entry.extents is None:
                if not await self._load(entry):
                    return
                continue
            fresh = ledger.fresh_blocks(entry, first, batch)
            ledger.touch(entry, first, first + len(batch) - 1)
            if not fresh:
                return
            room = self._make_room(sum(len(data) for _index, data in fresh), entry)
            if room is True:
                ledger.accept(entry, fresh)
                self._work.unpark()
                return
            if room is False:
                self._counts["rejected"] += len(fresh)
                return
            if not await self._load(room):
                return

    def incoming(self, nbytes: int) -> AbstractAsyncContextManager[bool]:
        """Around a download of `nbytes` to be stored: waits while the disk is behind (`Backlog`); gives
        whether to hand them to `put_run`."""
        return self._backlog.incoming(nbytes)

    def _queued_bytes(self) -> int:
        return self._ledger.queued_bytes

    def _open_for_writes(self) -> bool:
        """Ready, not closing, writes not paused (`_accepting` without its count)."""
        if not self._ready or self._closing:
            return False
        return self._condition is None or trio.current_time() >= self._paused_until

    def _accepting(self, blocks: int) -> bool:
        if self._open_for_writes():
            return True
        if self._ready and not self._closing:  # writes paused: these blocks are let pass
            self._counts["skipped_unwritable"] += blocks
        return False

    async def _wait_for_room(self, nbytes: int) -> None:
        """Backpressure: the disk is behind; the fetching task waits, readers do not."""
        ledger = self._ledger
        if ledger.queued_bytes == 0 or ledger.queued_bytes + nbytes <= self._queue_limit:
            return
        self._counts["waits"] += 1
        while ledger.queued_bytes > 0 and ledger.queued_bytes + nbytes > self._queue_limit:
            if not self._ready or self._closing:
                return
            await self._room.park()

    def _make_room(self, need: int, keep: FileEntry | None) -> FileEntry | bool:
        before = self._ledger.evictions
        room = self._ledger.make_room(need, keep)
        evicted = self._ledger.evictions - before
        if evicted:
            self._stats.incr("disk.evictions", evicted)
            self._work.unpark()
        return room

    def invalidate(self, key: FileKey) -> None:
        self._spans_ahead[:] = [ahead for ahead in self._spans_ahead if ahead.key != key]
        entry = self._ledger.files.get(file_name(key, self.block_size))
        if entry is not None:
            self._ledger.remove_file(entry)
            self._work.unpark()

    def pin(self, key: FileKey) -> None:
        self._ledger.pin(key)
        self._work.unpark()

    def unpin(self, key: FileKey) -> None:
        self._ledger.unpin(key)
        self._work.unpark()

    def pinned(self) -> set[FileKey]:
        return set(self._ledger.pins.values())

    # ----------------------------------------------------------------------------------- the writer
    async def _writer(self) -> None:
        """Runs the queued operations in order, a batch per worker-thread call; saves recency now and then;
        while the file system is short of room, looks again every SPACE_INTERVAL."""
        ledger = self._ledger
        last_touch = trio.current_time()
        while True:
            if not (ledger.ops or ledger.pins_dirty or self._carried):
                cramped = ledger.capacity < self.capacity or self._condition is not None
                with trio.move_on_after(SPACE_INTERVAL if cramped else TOUCH_INTERVAL):
                    await self._work.park()
                if cramped and not ledger.ops:
                    self._fit_to(await trio.to_thread.run_sync(space_of, self._layout))
            await self._gather()
            touches = trio.current_time() - last_touch >= TOUCH_INTERVAL
            if touches:
                last_touch = trio.current_time()
            await self._write_batch(touches=touches)

    async def _gather(self) -> None:
        """Wait up to GATHER for a batch's worth of blocks, unless someone drains (see GATHER)."""
        ledger = self._ledger
        with trio.move_on_after(GATHER):
            while ledger.queued_bytes < BATCH_BYTES and not self._draining and not self._closing:
                await self._work.park()

    async def _write_batch(self, *, touches: bool) -> bool:
        """One batch; False when the index could not be written."""
        ledger, index = self._ledger, self._index
        if index is None:
            return False
        batch = ledger.take_batch(BATCH_BYTES)
        touch = ledger.take_touches() if touches else None
        if touch is not None:
            batch.append(touch)
        if not batch and not self._carried:
            return True
        carried, self._carried = self._carried, []
        self._in_flight = True
        self._counts["batches"] += 1
        try:
            outcome = await trio.to_thread.run_sync(
                apply_batch, index, batch, self.block_size, carried, self._layout, self._behind,
                limiter=self._write_limiter,
            )  # fmt: skip
        except trio.Cancelled:  # before the thread started: nothing was done, put it all back
            ledger.ops.extendleft(reversed(batch))
            self._carried = carried
            raise
        except Exception as exc:  # a bug: logged, the mount goes on
            log.exception("disk cache: a batch of writes failed")
            outcome = BatchOutcome(index_error=OSError(errno.EIO, describe(exc)))
            for op in batch:
                if isinstance(op, WriteOp) and op.error is None:
                    op.error = outcome.index_error
        finally:
            self._in_flight = False
        wrote = False
        for op in batch:
            if isinstance(op, WriteOp):
                ledger.finish_write(op)
                wrote = True
                self._hand_back(op)
        self._carried = outcome.carried
        self._judge(outcome, wrote)
        self._fit_to(outcome.space)
        self._room.unpark_all()
        self._backlog.admit()
        self._idle.unpark_all()
        return outcome.index_error is None

    def hand_back_to(self, written: Callable[[bytes], None]) -> None:
        """Hand each block to `written` once the writer is done with it (`BlockStore`)."""
        self._written = written

    def _hand_back(self, op: WriteOp) -> None:
        # Each block taken out of the op as a value no name holds: `BlockPool.give` keeps it only if
        # nothing else does (the memory LRU may still have it; then it is handed over when evicted).
        written = self._written
        if written is not None:
            for _first, blocks in op.runs:
                while blocks:
                    written(blocks.pop())

    def _judge(self, outcome: BatchOutcome, wrote: bool) -> None:
        """Count the batch's errors; pause writes on a full or read-only disk, resume when writes work."""
        errors: list[BaseException] = [*outcome.write_errors]
        if outcome.index_error is not None:
            errors.append(outcome.index_error)
        lasting = [(condition, exc) for exc in errors if (condition := condition_of(exc)) is not None]
        if lasting:
            self._pause_writes(*lasting[0])
        elif wrote and self._condition is not None:
            log.warning("disk cache: writing again under %s", self.root)
            self._condition = None
            self._pause = PAUSE_FIRST
        if outcome.write_errors:
            self._counts["write_errors"] += len(outcome.write_errors)
            self._stats.incr("disk.write_errors", len(outcome.write_errors))
        if errors and not lasting:
            self._log_counted(
                "write_errors", "disk cache: cannot write under %s: %s", self.root, describe(errors[0])
            )
        for exc in outcome.other_errors:
            self._counts["other_errors"] += 1
            self._log_counted(
                "other_errors", "disk cache: cannot free space under %s: %s", self.root, describe(exc)
            )

    def _fit_to(self, space: Space | None) -> None:
        """Never fill the file system: use at most what we hold plus what is free, less a reserve (2% of the
        file system, 8 MiB to 1 GiB). Shrinks when others fill the disk, grows back when room returns."""
        if space is None:
            return
        ledger = self._ledger
        reserve = min(max(space.size // 50, RESERVE_LEAST), RESERVE_MOST)
        room = (ledger.total - ledger.queued_bytes) + space.free - reserve
        fitted = max(0, min(self.capacity, room))
        if fitted < self.capacity and ledger.capacity == self.capacity:
            log.info("disk cache: %s has room for %d bytes of cache, below its capacity", self.root, fitted)
        ledger.capacity = fitted

    def _pause_writes(self, condition: str, exc: BaseException) -> None:
        self._paused_until = trio.current_time() + self._pause
        self._pause = min(self._pause * 2, PAUSE_LONGEST)
        if self._condition != condition:
            self._condition = condition
            self._counts[condition] += 1
            self._stats.incr(f"disk.{condition}")
            log.warning("disk cache: " + _CONDITION_TEXT[condition], self.root, describe(exc))
        ledger = self._ledger
        for op in [op for op in ledger.ops if isinstance(op, WriteOp)]:  # no use trying: drop them now
            self._counts["skipped_unwritable"] += sum(len(blocks) for _first, blocks in op.runs)
            ledger.failed_to_queue(op)

    def _log_counted(self, kind: str, message: str, *args: object) -> None:
        count = self._counts[kind]
        if count <= 1 or count % LOG_EVERY == 0:
            log.warning(message + " (%d so far)", *args, count)

    # ------------------------------------------------------------------------------------- statistics
    def statistics(self) -> dict[str, int]:
        ledger = self._ledger
        return {
            "bytes": ledger.total,
            "blocks": ledger.blocks,
            "files": len(ledger.files),
            "capacity": self.capacity,
            "usable": ledger.capacity,  # the capacity, or less while the file system has less room
            "evictions": ledger.evictions,
            "pinned_bytes": ledger.pinned_bytes(),
            "pinned_files": len(ledger.pins),
            "queued_bytes": ledger.queued_bytes,
            **self._backlog.statistics(),
            "unwritable": int(self._condition is not None),
            "pages_given_back": self._behind.dropped,
            "span_buffers_made": self._span_buffers.fresh,
            "writeback_pauses": self._behind.pauses,
            **self._counts,
        }


@asynccontextmanager
async def running(store: DiskStore) -> AsyncIterator[DiskStore]:
    """`store` running in a nursery of its own for the body of an ``async with`` (for an AsyncExitStack)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            nursery.cancel_scope.cancel()
