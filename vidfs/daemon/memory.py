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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
OPERATOR_SETTING = "MALLOC_ARENA_MAX"


def one_arena() -> bool:
    """Every thread allocates from the main arena from now on; False when the C library has no `mallopt`,
    refuses it, or the operator chose the arena count. Call before the daemon starts its threads: a thread
    keeps the arena it was first given."""
    if OPERATOR_SETTING in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, 1) == 1)
    if not done:
        log.debug("malloc arena count not set (mallopt refused it)")
    return done
