"""glibc's malloc, set to one arena: blocks read by worker threads and freed by the trio thread.

A block read from the disk cache is a 64 KiB `bytes` made by `os.pread` in one of the store's reader threads;
it lives in the memory LRU and is freed, later, by the trio thread when the LRU evicts it. With glibc's
defaults each thread allocates from an arena of its own (up to 8 per core), and a thread arena gives the
pages at its top back to the kernel as soon as 128 KiB or more lie free there. The readers' arenas kept
shrinking behind the LRU and growing again under the next reads, so each new block first took page faults:
a re-read of 512 MiB from the disk cache after a remount (the bench's (f)) took 20,000-37,000 minor faults,
and a fault is not cheap on these VMs (about 3 µs a page touching fresh memory, 10 µs when the host must
back the page again). With one arena, the blocks the LRU frees are the ones the next reads are given:
10,000-11,500 faults, 0.91-1.02 CPU s/GB against 1.01-1.15 (three runs each, alternated), peak RSS 80 MiB
against 84-86.

Why not the thresholds instead (raise the mmap threshold, keep more free at the heap's top): tried, and
reverted (see the history of this file): the 1 MiB FUSE replies then came from the heap and fragmented it,
+10 MiB of peak RSS. Replies are now assembled in one resident buffer (`vidfs.io.reply_buffer`) anyway.

An operator's own `MALLOC_ARENA_MAX` wins: nothing is changed then. Not glibc (musl): nothing to set.

Giving back (`HeapTrimmer`): catalog work leaves free pages inside the heap that glibc keeps (it only gives
back the top): a 100,000-video listing's pages and JSON, the xattr values saved to the snapshot, the old
tables of dicts that grew. At the end of a cold walk of 100,000 AIPIX archives 10.6 MiB of the heap was free
and resident; `malloc_trim(0)` hands such pages to the kernel. The trimmer does so twice a second while the
catalog is at work (requests, saves, new nodes), never because of reads: the LRU's freed blocks are the next
reads' (above). Peak RSS of that walk: 154 MiB without it, 148 with it, for 65 trims of 6 ms each.

Python's cyclic collector (`CollectorPacing`): a full collection scans every container the daemon holds,
and by default one runs whenever the oldest generation has grown by a quarter since the last and ten
collections of the middle one have run. A cold walk of 100,000 VALT videos grows the heap by millions of
containers (entries, names, tree nodes), and requests in flight when a young collection runs reach the
oldest generation before they die: 36 full collections, 6.8-7.9 s of the daemon's 58-59 CPU s on loopback.
With a full collection at most every hundred middle ones (`FULL_AFTER`), 3 ran, for 2.3 s in all (daemon:
56 CPU s). Cycles that reach the oldest generation are freed later, not never: a full collection can still
run every thousand young ones (700,000 containers allocated and not freed), under the same quarter rule as
before. Raising the youngest generation's threshold as well (10,000) cut collections to 1.1 s but not the
daemon's CPU (57.8 s): collections of larger young generations miss the CPU caches.

A full collection costs as much as the heap is large, so past a size no count of middle collections paces
them well: in a cold walk of 100,000 VALT records at 20 ms (a directory each: 200,000 nodes and 100,000
listings held) 15 ran, about 0.8 s each, 14.3 s of the daemon's 95 CPU s. So after a full collection of d
seconds there is none for `FULL_PAUSE` * d seconds (at most a twentieth of the time goes to them): that
walk 107.6/119.4 -> 97.1 s, the daemon 96.6/95.2 -> 87.4 CPU s, peak RSS unchanged (294 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import Any

import trio

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
OPERATOR_SETTING = "MALLOC_ARENA_MAX"
TRIM_INTERVAL = 0.5  # seconds between looks at the catalog's work: 1 s left a peak 2.5 MiB higher
FULL_AFTER = 100  # middle-generation collections between two full ones, at least (Python's default: 10)
FULL_PAUSE = 20.0  # after a full collection of d seconds, none for FULL_PAUSE * d seconds (≤ 5% of the time)
_NO_FULL = 1 << 30  # a threshold no count of middle collections reaches


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None


def one_arena() -> bool:
    """Every thread allocates from the main arena from now on; False when the C library has no `mallopt`,
    refuses it, or the operator chose the arena count. Call before the daemon starts its threads: a thread
    keeps the arena it was first given."""
    if OPERATOR_SETTING in os.environ:
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, 1) == 1)
    if not done:
        log.debug("malloc arena count not set (mallopt refused it)")
    return done


class HeapTrimmer:
    """A service: after catalog work, the heap's free pages go back to the kernel (the essay above).
    `work_done()` is any value that changes with that work; it is looked at every `interval` seconds."""

    def __init__(self, work_done: Callable[[], Hashable], interval: float = TRIM_INTERVAL) -> None:
        self._work_done = work_done
        self._interval = interval
        self._trim = getattr(_libc(), "malloc_trim", None)  # None: not glibc, nothing to do
        if self._trim is not None:
            self._trim.argtypes = [ctypes.c_size_t]
            self._trim.restype = ctypes.c_int
        self._looks = 0
        self._trims = 0
        self._seconds = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._trim is None:
            return
        seen = self._work_done()
        while True:  # for the mount's life, a look every interval
            await trio.sleep(self._interval)
            now = self._work_done()
            self._looks += 1
            if now == seen:
                continue
            seen = now
            started = time.perf_counter()
            # In a thread: glibc holds the heap's lock meanwhile, and other threads only wait for it if
            # they allocate, whereas the trio thread would wait the whole trim.
            await trio.to_thread.run_sync(self._trim, 0)
            self._trims += 1
            self._seconds += time.perf_counter() - started

    def statistics(self) -> dict[str, Any]:
        return {
            "looks": self._looks,
            "trims": self._trims,
            "seconds": round(self._seconds, 3),
            "available": self._trim is not None,
        }


class CollectorPacing:
    """Full collections of the cyclic collector at most every `full_after` middle ones, and none for
    FULL_PAUSE times as long as the last one took (the essay above); what the collector did: collections per
    generation and the seconds they took (`statistics()`). `clock`: seconds, for tests."""

    def __init__(
        self, full_after: int = FULL_AFTER, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._collections = [0, 0, 0]
        self._seconds = 0.0
        self._started = 0.0
        self._full_after = full_after
        self._clock = clock
        self._paused_until: float | None = None  # no full collection before then
        self._pauses = 0
        self._before = gc.get_threshold()
        youngest, middle, _ = self._before
        gc.set_threshold(youngest, middle, full_after)
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, in whichever thread allocated: only counting and thresholds here.
        now = self._clock()
        if phase == "start":
            self._started = now
            if self._paused_until is not None and now >= self._paused_until:
                self._paused_until = None
                self._threshold(self._full_after)
            return
        took = now - self._started
        self._seconds += took
        generation = info.get("generation", 2)
        if 0 <= generation < len(self._collections):
            self._collections[generation] += 1
        if generation == 2 and took > 0:
            self._paused_until = now + FULL_PAUSE * took
            self._pauses += 1
            self._threshold(_NO_FULL)

    @staticmethod
    def _threshold(full: int) -> None:
        youngest, middle, _ = gc.get_threshold()
        gc.set_threshold(youngest, middle, full)

    def close(self) -> None:
        """Python's own pacing again (tests; the daemon paces until it exits)."""
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)
        gc.set_threshold(*self._before)

    def statistics(self) -> dict[str, Any]:
        return {
            "collections": list(self._collections),
            "seconds": round(self._seconds, 3),
            "full_after": self._full_after,
            "full_paused": self._paused_until is not None,
            "pauses": self._pauses,
        }
