"""Readahead per open file: sequential cursors with growing windows.

How it works
------------
Each open handle keeps up to `max_cursors` (4) read cursors. A cursor remembers where the next sequential
read should start (`next_offset`), how far ahead it has already asked for (`ahead`), and its window.

On every read the prefetcher looks for a cursor that the read continues: the read starts within
[`next_offset` - slack, `next_offset` + 2 blocks] (the kernel issues its own readahead requests
concurrently, so they may arrive slightly out of order). If one matches, the read is sequential: the cursor
advances and its window grows to twice the bytes it has read sequentially, up to `max_window`. Otherwise
a new cursor starts with a one-block window, replacing the least recently used one. So a player reading the
middle of a file and an index reader at its end do not reset each other's windows.

A cursor asks the block cache for `[next_offset, next_offset + window)` once at least an eighth of its
window is not yet requested (`ASK_FRACTION`), so requests come in runs of several blocks (several GETs in
parallel) instead of one small request per read, and the window stays nearly full. A lone random read
prefetches nothing: random access costs exactly the blocks it touches.

The prefetcher only decides *what* to fetch; the block cache does the fetching under its global budget.
"""

from __future__ import annotations

from dataclasses import dataclass

# The window is this many times the bytes read sequentially so far (like the kernel's own readahead): a
# reader that has consumed 256 KiB gets 512 KiB ahead, one that has consumed 32 MiB gets the cap.
GROWTH = 2
# Until a cursor has read this much in sequence it prefetches nothing: the kernel's own readahead (1 MiB, see
# vidfs.daemon.mountpoint) already runs ahead of every reader, so a prober (ffprobe, a player's open) that
# reads the head and seeks away costs exactly the bytes the kernel asked for, while `cp` gets the growing
# window a few MiB in. Measured on the bench movie (moov at the end): ffprobe itself reads 640 KB; the
# kernel asks for 2.06 MB in 6 requests; prefetching the size of each read on top (the kernel's next ask,
# it doubles) made it 3.11 MB.
QUIET_BYTES = 4 << 20
# A cursor asks for more once this fraction of its window is free. Half (as before) emptied the window to
# half before it asked again: at 20 ms of round trip a reader waited for runs of several MiB, each a round
# trip plus its transfer on one connection. An eighth keeps the pipe full with smaller runs on more
# streams: a cold `dd` of 512 MiB at 20 ms, 24 MiB window, 300-311 MB/s against 222-256 with a quarter.
ASK_FRACTION = 8


@dataclass(slots=True)
class Cursor:
    start: int
    next_offset: int
    ahead: int
    window: int
    sequential_reads: int = 0
    last_used: int = 0


class Readahead:
    def __init__(
        self, *, block_size: int, max_window: int, max_cursors: int = 4, quiet_bytes: int = QUIET_BYTES
    ) -> None:
        self.block_size = block_size
        self.quiet_bytes = quiet_bytes
        self.max_window = max(block_size, max_window)
        self.max_cursors = max_cursors
        self.cursors: list[Cursor] = []
        self._clock = 0

    def _match(self, offset: int) -> Cursor | None:
        slack = max(4 * self.block_size, 512 * 1024)
        for cursor in self.cursors:
            if cursor.next_offset - slack <= offset <= cursor.next_offset + 2 * self.block_size:
                return cursor
        return None

    def missed(self, offset: int) -> None:
        """A read found its block neither cached nor in flight (a prefetch failed or was evicted): the
        cursor must ask again from here instead of believing it is ahead."""
        cursor = self._match(offset)
        if cursor is not None:
            cursor.ahead = min(cursor.ahead, offset)

    def on_read(self, offset: int, size: int, file_size: int) -> tuple[int, int] | None:
        """Record a read; return the byte range to prefetch, if any."""
        self._clock += 1
        end = offset + size
        cursor = self._match(offset)
        if cursor is None:
            cursor = Cursor(
                start=offset, next_offset=end, ahead=end, window=self.block_size, last_used=self._clock
            )
            if len(self.cursors) >= self.max_cursors:
                self.cursors.remove(min(self.cursors, key=lambda c: c.last_used))
            self.cursors.append(cursor)
            return None
        cursor.last_used = self._clock
        cursor.next_offset = max(cursor.next_offset, end)
        cursor.sequential_reads += 1
        # Growth follows the bytes consumed, not the number of reads: `cp` of a big file reaches the cap
        # within a few requests past the quiet bytes, and random readers (who never match a cursor) get
        # nothing.
        consumed = cursor.next_offset - cursor.start
        cursor.ahead = max(cursor.ahead, cursor.next_offset)
        if consumed < self.quiet_bytes:
            return None  # a prober, or a reader just starting: the kernel's readahead asks for it
        cursor.window = max(cursor.window, min(self.max_window, GROWTH * consumed))
        target = min(file_size, cursor.next_offset + cursor.window)
        if target - cursor.ahead < cursor.window // ASK_FRACTION and target < file_size:
            return None
        if target <= cursor.ahead:
            return None
        start = cursor.ahead
        cursor.ahead = target
        return start, target
