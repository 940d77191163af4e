"""glibc's malloc, set for a daemon that allocates and frees a 1 MiB buffer many times a second.

Each FUSE read of 1 MiB is one `bytes` of 1 MiB (the blocks joined), each socket read up to 1 MiB, each
block read from the disk cache 64 KiB. With glibc's defaults the first of those sizes goes to `mmap` until
a free raises the threshold, and the heap's top is given back to the kernel whenever 2 × that threshold is
free there: so a steady reader keeps asking the kernel for fresh pages. A minor fault is not cheap on these
VMs (about 3 µs a page touching fresh anonymous memory, 10 µs when the host must back it again), and a
re-read from the disk cache after a remount (the bench's (f)) took 35,000-40,000 faults per 512 MiB.

With the heap serving up to 4 MiB and keeping up to 32 MiB free at its top, the same read takes 11,000-16,000
and 0.84-0.91 CPU s/GB against 0.86-1.12 (four runs each, alternated); the read bench's peak RSS did not
move (83-92 MiB either way), nor did the peak of a cold walk of 100,000 AIPIX archives (206.3 MiB before,
204.5 after). An operator's own `MALLOC_*_` settings win: nothing is changed then. Not glibc
(musl): nothing to set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # allocations below this come from the heap
TRIM_THRESHOLD = 32 << 20  # free memory at the heap's top kept, up to this
_OPERATOR_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)


def tune_malloc() -> bool:
    """Set the thresholds above; False when the C library has no `mallopt` or the operator set them."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
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
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("malloc thresholds not set (mallopt refused them)")
    return done
