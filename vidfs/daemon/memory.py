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
    """Full collections of the cyclic collector at most every `full_after` middle ones (the essay above),
    and what the collector did: collections per generation and the seconds they took (`statistics()`)."""

    def __init__(self, full_after: int = FULL_AFTER) -> None:
        self._collections = [0, 0, 0]
        self._seconds = 0.0
        self._started = 0.0
        youngest, middle, _ = gc.get_threshold()
        gc.set_threshold(youngest, middle, full_after)
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self._seconds += time.perf_counter() - self._started
        generation = info.get("generation", 2)
        if 0 <= generation < len(self._collections):
            self._collections[generation] += 1

    def statistics(self) -> dict[str, Any]:
        return {
            "collections": list(self._collections),
            "seconds": round(self._seconds, 3),
            "full_after": gc.get_threshold()[2],
        }
