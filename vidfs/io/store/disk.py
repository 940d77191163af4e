"""The store's blocking file work, run in worker threads: read and verify stretches of blocks, and apply a
batch of operations (write, punch, delete; then one index transaction).

Reading: O_DIRECT, a stretch in reads of up to 1 MiB straight into one of a few reused page-aligned buffers,
each block checked there and copied out into the `bytes` that is served. Buffered reads (one `os.pread` per
block, as before) need page-cache pages for what they read, and on these VMs a page the guest has not used
lately costs a fault in the host the first time (see writing, below): after the bench drops the page cache,
512 MiB read from a data file cost 0.07-0.71 CPU s buffered, 0.09-0.11 direct (four runs each). The bench's
(f), a re-read after a remount (vidfs alone, 0 ms, six runs each): daemon system CPU 0.50-1.61 s against
0.23-0.26, 1.66-3.78 CPU s/GB against 1.27-1.49, and 296-641 against 523-658 MB/s: no readahead is lost,
because the block cache asks for whole windows ahead. A direct read waits for the disk in its worker
thread, never in the trio thread. A file system that refuses O_DIRECT (EINVAL: tmpfs before Linux 6.6, some
FUSE ones), or a block size that is not a multiple of 4 KiB, is read buffered. (Earlier, buffered: one
8 MiB `pread` per stretch cost 1.1 CPU s for 512 MiB, a fresh buffer each time being 2048 page faults;
`POSIX_FADV_WILLNEED` on a stretch first made it slower, the call waiting while it submits the I/O.)
Writing: one `os.pwritev` per run (up to IOV_MAX blocks), the checksums computed on the way.

Why buffered writes and not O_DIRECT (tried, measured, not kept). The buffered copy into the page cache
(`copy_folio_from_iter_atomic`) is 15% of the daemon's CPU in a cold read at 0 ms, and `dd` of 1 GiB
here costs 2.59 s of system CPU buffered against 0.34 s with O_DIRECT. But an O_DIRECT write waits for the
device, and the writer thread must then win the GIL back from the busy trio thread: with a batch's runs
joined into 8 MiB writes through one reused aligned buffer, a batch took 55 ms in the writer (buffered:
38 ms for 6.8 MiB), about 150 MB/s. Fetches then waited for room in the write queue (370 waits against 4),
holding their prefetch budget, so windows were cut into runs of 256 KiB to 1 MiB: 801 requests for 1 GiB
instead of 422, and the user CPU rose by more (+1.4 s/GB) than the system CPU fell (-1.2). Giving the
budget back before the disk took the blocks restored the requests (405) and gave 5.2-5.5 CPU s/GB against
6.0, but a peak RSS of 309 MiB (fetches waiting for the disk hold their blocks). O_DIRECT only while the
queue is short ended up buffered for 151 batches of 154 at 0 ms, and at 20 ms the bench's (a) CPU per GB
did not move (7.66 against 7.58, median of 3). Assembling blocks straight into page-aligned `bytearray`s
(no staging copy) is no way around it either: CPython copies a view assigned into a view through a
temporary (35 µs per 64 KiB, against 2-5 µs into the `bytearray` itself).

What that copy costs is mostly where its pages come from (`WriteBehind`). On these VMs (Firecracker, free page
reporting) a page the guest has not used lately costs about 10 µs the first time it is written, so a write
into the page cache costs 1.2-2.7 system CPU s/GB when its pages come cold, and 0.2 s/GB when they are pages
freed a moment before (512 MiB written in 8 MiB batches, 64 KiB blocks: 0.63-1.40 s against 0.10-0.12). The
cache's data file pages are a second copy of what the kernel holds for the mounted file anyway. So the writer
starts each run's writeback as soon as it is written and, 32 MiB of writes later, gives its pages back
(`POSIX_FADV_DONTNEED`, which drops only clean pages and never waits): the next batches are written into those
same pages. The same 512 MiB cost 0.22-0.42 s then. A disk too slow to keep up makes the kicks themselves
wait; then they pause for a while and the kernel's own writeback does the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from xxhash import xxh3_64_intdigest

from vidfs.io.store.index import (
    Change,
    Deleted,
    Dropped,
    Evicted,
    Index,
    Pins,
    Touched,
    Written,
)
from vidfs.io.store.layout import EXTENT_SHIFT, GOLDEN, MASK64, Layout, checksum
from vidfs.io.store.model import DeleteOp, DropOp, EvictOp, Op, PinsOp, Stretch, WriteOp

log = logging.getLogger("vidfs.io.store")

IOV_MAX = 1024
DROP_BEHIND = 32 << 20  # bytes written after a run before its pages are given back
SLOW_KICKS = 0.05  # seconds a batch's writeback kicks may take before they pause (a disk slower than us)
KICKS_PAUSE = 30.0  # seconds they pause then
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
DIRECT_READS = True  # read blocks with O_DIRECT where the file system takes it (see the module's essay)
DIRECT_ALIGN = 4096  # offsets, lengths and buffers of direct reads are multiples of this
DIRECT_READ_SIZE = 1 << 20  # bytes a direct read asks for at most (one reused buffer per reading thread)


# ----------------------------------------------------------------------------------------- reading
@dataclass(slots=True)
class ReadOutcome:
    """Per stretch, per block: its bytes, or None when missing or damaged. `error`: the data file could
    not be opened or read (the blocks not reached are missing from `blocks`)."""

    blocks: list[list[bytes | None]]
    error: OSError | None = None
    direct: bool = False  # read with O_DIRECT


class _DirectReads:
    """Page-aligned buffers for direct reads, kept for the next read: a fresh one would cost a page fault
    per 4 KiB again (the very cost direct reads avoid). At most READ_THREADS of them are in use at once.
    `refused`: the file system refused a direct read (EINVAL): buffered from then on."""

    def __init__(self, size: int, keep: int) -> None:
        self.size, self._keep = size, keep
        self.refused = False
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def buffer(self) -> Iterator[memoryview]:
        with self._lock:
            buffer = self._free.pop() if self._free else mmap.mmap(-1, self.size)
        view = memoryview(buffer)
        try:
            yield view
        finally:
            view.release()
            with self._lock:
                if len(self._free) < self._keep:
                    self._free.append(buffer)


_DIRECT = _DirectReads(DIRECT_READ_SIZE, keep=4)


def read_stretches(path: str, block_size: int, seed: int, stretches: list[Stretch]) -> ReadOutcome:
    """The blocks of `stretches`, each checked against its checksum (see the module's essay: read with
    O_DIRECT where the file system takes it, else buffered)."""
    if DIRECT_READS and not _DIRECT.refused and block_size % DIRECT_ALIGN == 0 and block_size <= _DIRECT.size:
        outcome = _read(path, block_size, seed, stretches, direct=True)
        if outcome.error is None or not direct_refused(outcome.error):
            return outcome
        # A file system without O_DIRECT (tmpfs before Linux 6.6, some FUSE ones), or a device that wants
        # more alignment: not an error of the data, which is read again, buffered, now and from now on.
        _DIRECT.refused = True
    return _read(path, block_size, seed, stretches, direct=False)


def direct_refused(exc: OSError) -> bool:
    """The file system (or the device's alignment) refuses O_DIRECT: not an error of the data."""
    return exc.errno == errno.EINVAL


def _read(path: str, block_size: int, seed: int, stretches: list[Stretch], *, direct: bool) -> ReadOutcome:
    try:
        fd = _open_for_reading(path, direct)
    except OSError as exc:
        return ReadOutcome([], exc, direct)
    out: list[list[bytes | None]] = []
    try:
        if direct:
            with _DIRECT.buffer() as buffer:
                for stretch in stretches:
                    out.append(_read_direct(fd, buffer, block_size, seed, stretch))
        else:
            for stretch in stretches:
                out.append(_read_buffered(fd, block_size, seed, stretch))
    except OSError as exc:
        return ReadOutcome(out, exc, direct)
    finally:
        os.close(fd)
    return ReadOutcome(out, direct=direct)


def _open_for_reading(path: str, direct: bool) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0))


def _read_buffered(fd: int, block_size: int, seed: int, stretch: Stretch) -> list[bytes | None]:
    offset, index = stretch.first * block_size, stretch.first
    got: list[bytes | None] = []
    for length, expected in zip(stretch.lengths, stretch.sums, strict=True):
        data = os.pread(fd, length, offset)  # `checksum`, inlined: this loop runs per block
        ok = len(data) == length and xxh3_64_intdigest(data, (seed ^ (index * GOLDEN)) & MASK64) == expected
        got.append(data if ok else None)
        offset += block_size
        index += 1
    return got


def _read_direct(
    fd: int, buffer: memoryview, block_size: int, seed: int, stretch: Stretch
) -> list[bytes | None]:
    """A stretch in reads of up to the buffer's size, straight from the disk into it; each block checked
    there and copied out only when it is whole and right."""
    per_read = len(buffer) // block_size
    lengths, sums = stretch.lengths, stretch.sums
    got: list[bytes | None] = []
    for start in range(0, len(lengths), per_read):
        part = lengths[start : start + per_read]
        span = (len(part) - 1) * block_size + part[-1]
        filled = pread_aligned(
            fd, buffer[: -(-span // DIRECT_ALIGN) * DIRECT_ALIGN], (stretch.first + start) * block_size
        )
        index = stretch.first + start
        for at, length, expected in zip(
            range(0, len(part) * block_size, block_size), part, sums[start : start + per_read], strict=True
        ):
            block = buffer[at : at + length]
            ok = (
                at + length <= filled
                and xxh3_64_intdigest(block, (seed ^ (index * GOLDEN)) & MASK64) == expected
            )
            got.append(bytes(block) if ok else None)
            index += 1
    return got


def pread_aligned(fd: int, into: memoryview, offset: int) -> int:
    """Fill `into` from `offset` on (both aligned for O_DIRECT); the bytes read (fewer at the file's end)."""
    filled = 0
    while filled < len(into):
        count = os.preadv(fd, [into[filled:]], offset + filled)
        if count <= 0:
            break
        filled += count
        if count % DIRECT_ALIGN:  # the end of the file: the next offset would not be aligned
            break
    return filled


# ------------------------------------------------------------------------------------------ writing
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int] | None, function)


_FALLOCATE = _fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free `[offset, offset + length)` of a file, keeping its size (`fallocate(PUNCH_HOLE)`)."""
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    if _FALLOCATE(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _pwrite_all(fd: int, blocks: list[bytes], offset: int) -> None:
    for start in range(0, len(blocks), IOV_MAX):
        views = [memoryview(block) for block in blocks[start : start + IOV_MAX]]
        while views:
            written = os.pwritev(fd, views, offset)
            if written <= 0:
                raise OSError(errno.EIO, "pwritev wrote nothing")
            offset += written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]


@dataclass(slots=True)
class BatchOutcome:
    write_errors: list[OSError] = field(default_factory=list)
    other_errors: list[OSError] = field(default_factory=list)  # punches and unlinks (space not freed)
    index_error: sqlite3.Error | OSError | None = None
    carried: list[Change] = field(default_factory=list)  # index changes to try again with the next batch
    space: Space | None = None  # the file system's room after the batch


@dataclass(frozen=True, slots=True)
class Space:
    free: int  # bytes available to us
    size: int  # the file system's size


def space_of(layout: Layout) -> Space | None:
    try:
        st = os.statvfs(layout.root)
    except OSError:
        return None
    return Space(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


class _OpenFiles:
    """The data files a batch writes to, each opened once."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def get(self, path: str, *, create: bool) -> int:
        fd = self._fds.get(path)
        if fd is None:
            if create:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except FileNotFoundError:  # its fan-out directory is new
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            self._fds[path] = fd
        return fd

    def forget(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class WriteBehind:
    """The runs written lately, whose page cache pages are given back once `DROP_BEHIND` bytes were written
    after them (see the essay). Used by the writer thread only, one batch at a time."""

    def __init__(self, drop_behind: int = DROP_BEHIND) -> None:
        self._drop_behind = drop_behind
        self._runs: deque[tuple[str, int, int]] = deque()  # (data file, offset, length), oldest first
        self._held = 0  # bytes in `_runs`
        self._spent = 0.0  # seconds this batch's kicks took …
        self._kicks = 0  # … and how many there were
        self._paused_until = 0.0
        self.dropped = 0  # bytes whose pages were given back
        self.pauses = 0

    def written(self, fd: int, path: str, offset: int, length: int) -> None:
        """A run was written: its writeback starts now (DONTNEED on dirty pages starts it, drops nothing)."""
        if time.monotonic() < self._paused_until:
            return
        started = time.monotonic()
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # advice only: the write itself went well
            return
        self._spent += time.monotonic() - started
        self._kicks += 1
        self._runs.append((path, offset, length))
        self._held += length

    def drop(self, files: _OpenFiles) -> None:
        """End of a batch: the pages of the runs far enough behind go back (those still dirty or under
        writeback stay, for the kernel's own writeback); kicks that took too long pause."""
        if self._kicks and self._spent > SLOW_KICKS:
            self._paused_until = time.monotonic() + KICKS_PAUSE
            self.pauses += 1
            log.info(
                "disk cache: starting the writeback of one batch took %.0f ms; the kernel's own writeback "
                "takes over for %.0f s",
                self._spent * 1000,
                KICKS_PAUSE,
            )
        self._spent, self._kicks = 0.0, 0
        while self._runs and self._held - self._runs[0][2] >= self._drop_behind:
            path, offset, length = self._runs.popleft()
            self._held -= length
            try:
                os.posix_fadvise(files.get(path, create=False), offset, length, os.POSIX_FADV_DONTNEED)
            except OSError:  # evicted or deleted meanwhile: nothing to give back
                continue
            self.dropped += length

    def forget(self, path: str) -> None:
        """A data file was deleted: its runs have no pages left."""
        kept = [run for run in self._runs if run[0] != path]
        if len(kept) != len(self._runs):
            self._runs = deque(kept)
            self._held = sum(length for _path, _offset, length in kept)


def apply_batch(
    index: Index,
    ops: list[Op],
    block_size: int,
    carried: list[Change],
    layout: Layout,
    behind: WriteBehind | None = None,
) -> BatchOutcome:
    """Do the data work of `ops` in order, then record it (and `carried`) in one index transaction; then
    measure the room left."""
    outcome = BatchOutcome()
    try:
        changes: list[Change] = list(carried)
        files = _OpenFiles()
        try:
            for op in ops:
                changes.extend(_do(op, files, block_size, outcome, behind))
            if behind is not None:
                behind.drop(files)
        finally:
            files.close()
        try:
            emptied = index.apply(changes)
        except (sqlite3.Error, OSError) as exc:
            outcome.index_error = exc
            outcome.carried = [c for c in changes if not isinstance(c, Written)]
            for op in ops:
                if isinstance(op, WriteOp) and op.error is None:
                    op.error = exc
            return outcome
        for name in emptied:  # no block left: its data file goes too
            _unlink_quietly(layout.data_path(name), outcome)
        return outcome
    finally:
        outcome.space = space_of(layout)


def _do(
    op: Op, files: _OpenFiles, block_size: int, outcome: BatchOutcome, behind: WriteBehind | None
) -> list[Change]:
    if isinstance(op, WriteOp):
        return _write(op, files, block_size, outcome, behind)
    if isinstance(op, EvictOp):
        entry = op.entry
        try:
            fd = files.get(entry.path, create=False)
            for number, length in _ranges(op.extents):
                punch_hole(fd, (number << EXTENT_SHIFT) * block_size, (length << EXTENT_SHIFT) * block_size)
        except FileNotFoundError:
            pass
        except OSError as exc:
            outcome.other_errors.append(exc)
        return [Evicted(entry.info, op.extents)]
    if isinstance(op, DropOp):
        return [Dropped(op.entry.info, op.indices)]
    if isinstance(op, DeleteOp):
        files.forget(op.path)
        if behind is not None:
            behind.forget(op.path)
        _unlink_quietly(op.path, outcome)
        return [Deleted(op.name)]
    if isinstance(op, PinsOp):
        return [Pins(op.keys)]
    return [Touched(name, used, extents) for name, used, extents in op.entries]


def _write(
    op: WriteOp, files: _OpenFiles, block_size: int, outcome: BatchOutcome, behind: WriteBehind | None
) -> list[Change]:
    entry = op.entry
    try:
        fd = files.get(entry.path, create=True)
        all_sums: list[list[int]] = []
        for first, blocks in op.runs:
            all_sums.append([checksum(block, entry.seed, first + i) for i, block in enumerate(blocks)])
            _pwrite_all(fd, blocks, first * block_size)
            if behind is not None:
                behind.written(fd, entry.path, first * block_size, sum(len(block) for block in blocks))
    except OSError as exc:
        op.error = exc
        outcome.write_errors.append(exc)
        return []
    op.sums = all_sums
    written = [
        (first + i, value)
        for (first, _blocks), sums in zip(op.runs, all_sums, strict=True)
        for i, value in enumerate(sums)
    ]
    return [Written(entry.info, written, op.used)]


def _ranges(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive extent numbers as (first, count)."""
    ordered = sorted(set(numbers))
    start = 0
    for position in range(1, len(ordered) + 1):
        if position == len(ordered) or ordered[position] != ordered[position - 1] + 1:
            yield ordered[start], position - start
            start = position


def _unlink_quietly(path: str, outcome: BatchOutcome) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        outcome.other_errors.append(exc)
