"""Replies read straight from the disk store: a FUSE read whose blocks are all on disk, and none in memory,
is read with one O_DIRECT `preadv` into a page-aligned buffer, checked there block by block, and that buffer
is the reply. No block object, no memory-LRU entry, no copy in user space.

Why. The other way, a block read from the disk becomes a `bytes` of its own (a copy out of the read buffer),
goes through the memory LRU and its waiters, and is copied again into the reply: per 64 KiB block about
20 µs of Python and two copies. A re-read after a remount (the bench's (f): 512 MiB in 1 MiB FUSE reads, all
from the disk cache, 0 ms) cost 1.30-1.62 CPU s/GB that way, about half of it that per-block work (the same
read with 1 MiB blocks: 0.76-0.99). Blocks read from the disk gain nothing in the memory LRU either: the
kernel's page cache holds what the reader got, and the disk still holds them.

Such blocks are therefore not prefetched from the disk (`DiskStore.on_disk` tells the block cache which).
Instead, the store reads the next two 4 MiB after a span ahead as soon as the span is asked for
(`vidfs.io.store.reads`, `SPAN_AHEAD_BYTES`): the kernel keeps only a request or two in flight, and a 1 MiB
O_DIRECT read here takes about 1 ms, so without it the disk sat idle while each reply went out (530-600
MB/s). Measured on (f), alternated, six runs each: before 1.19-1.40 CPU s/GB (median 1.33) at 544-680 MB/s;
spans 0.86-1.42 (median 1.13); spans against spans without the read ahead, 0.82-1.19 (median 0.96) at
565-784 MB/s (median 710) against 0.93-1.17 (median 1.06) at 550-797 (median 615); those read a MiB ahead,
four at once cost 0.75-0.93 (median 0.77). Blocks in memory, being fetched or queued for their write, a read
smaller than `SPAN_MIN_BLOCKS` blocks (a prober coming back for the rest of a block), a file system without
O_DIRECT, a damaged block: all go the usual way (`get_run`), which drops a damaged block and fetches it
again. A reply is never made of unchecked bytes.

The buffers. A fresh buffer per read would cost a page fault per 4 KiB (what O_DIRECT avoids; see
`vidfs.io.store.disk`), so a few are kept and reused, each one only once no reply holds a view of it any
more (`unexported`, as for `vidfs.io.reply_buffer`): pyfuse3 sends the reply in the step the read handler
returns in, so a buffer is free again by the next read.
"""

from __future__ import annotations

import ctypes
import os
import threading

from xxhash import xxh3_64_intdigest

from vidfs.io.reply_buffer import unexported
from vidfs.io.store.disk import DIRECT_ALIGN, pread_aligned
from vidfs.io.store.layout import GOLDEN, MASK64
from vidfs.io.store.model import Stretch

SPAN_MIN_BLOCKS = 2  # a read of fewer blocks goes the usual way (the memory LRU keeps a block read in part)
KEEP_BUFFERS = 4  # spans read at once are at most the store's read threads (2), and a reply being sent


class SpanBuffers:
    """Page-aligned views into a few reused `bytearray`s (see the module's essay)."""

    def __init__(self, keep: int = KEEP_BUFFERS) -> None:
        self._buffers: list[bytearray] = []
        self._keep = keep
        self._lock = threading.Lock()
        self.fresh = 0  # buffers made (the first ones, larger ones, or all kept ones still in a reply)

    def take(self, size: int) -> memoryview:
        """`size` bytes starting on a page boundary, in a buffer no reply holds any more."""
        with self._lock:  # the view is made before another thread may look: it is then exported
            buffer = next((b for b in self._buffers if len(b) >= size + DIRECT_ALIGN and unexported(b)), None)
            if buffer is None:
                buffer = bytearray(size + DIRECT_ALIGN)
                self.fresh += 1
                if len(self._buffers) >= self._keep:
                    self._buffers.pop(0)
                self._buffers.append(buffer)
            # Where it starts, asked now: `unexported` may have moved it (a bytearray grows once when it is).
            address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
            pad = -address % DIRECT_ALIGN
            return memoryview(buffer)[pad : pad + size]


def read_span(
    path: str, block_size: int, seed: int, stretch: Stretch, start: int, stop: int, buffers: SpanBuffers
) -> memoryview | list[int]:
    """Bytes `[start, stop)` of `stretch` (counted from its first block), read with O_DIRECT and every block
    checked; or the positions in `stretch` of the blocks that are short or fail their check. OSError: the
    data file cannot be opened or read (EINVAL: the file system refuses O_DIRECT)."""
    lengths, sums = stretch.lengths, stretch.sums
    span = (len(lengths) - 1) * block_size + lengths[-1]
    view = buffers.take(-(-span // DIRECT_ALIGN) * DIRECT_ALIGN)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        try:
            filled = pread_aligned(fd, view, stretch.first * block_size)
        finally:
            os.close(fd)
        damaged: list[int] = []
        at, index = 0, stretch.first
        for position, (length, expected) in enumerate(zip(lengths, sums, strict=True)):
            if at + length > filled or (
                xxh3_64_intdigest(view[at : at + length], (seed ^ (index * GOLDEN)) & MASK64) != expected
            ):
                damaged.append(position)
            at += block_size
            index += 1
        return damaged if damaged else view[start:stop]
    finally:
        view.release()  # the reply's own view keeps the buffer exported until pyfuse3 lets go of it
