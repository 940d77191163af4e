"""Backpressure on downloads, before they start: the disk's backlog.

A block the origin sends is served to its reader at once, then stored: its fetch hands the run to the store
and waits while the write queue is full (`DiskStore.put_run`), so that a file read to its end is entirely in
the disk cache afterwards. But that wait held nothing back: the reader, served already, asked for more, and
each new fetch joined the others waiting for the queue with its blocks in memory. With a network faster than
the disk (a cold `dd` of 512 MiB at 0 ms, nginx on loopback, about 500 MB/s against a disk cache written
at less) 57-137 MiB of blocks waited so: the daemon's peak RSS was 81-262 MiB in 27 runs, over 100 MiB in
25 of them (75-88 MiB only in runs that another process slowed down, polling the daemon every 20 ms).

So a download to be stored first asks for room (`Backlog.incoming`): what is being downloaded for the disk
plus the write queue stays within `limit`. When it is over, the download waits before its request goes out,
and its readers with it: the network is slowed to the disk's pace instead of memory filling up. Measured on
that read: peak RSS 76.1-82.6 MiB in seven runs, 466-607 MB/s (443-582 before), every block stored.

Two rules keep this from hurting reads:
- first come, first in: a waiting download is let in before any later one (`admit` takes the line in
  order), so one cannot starve while others keep taking the room it waits for;
- a disk that takes nothing for `WAIT` seconds (stalled, or far too slow) must not stall reads: the
  download then goes on unstored (`skipped_busy` counts its blocks; they are fetched again when read). A
  disk that refuses writes (full, read-only) lets every download go at once; the store then refuses their
  blocks as it always did (`skipped_unwritable`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

WAIT = 2.0  # seconds a download waits for room before it goes unstored


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    event: trio.Event = field(default_factory=trio.Event)
    admitted: bool = False  # let in and counted (else let go as writes stopped: not counted)


class Backlog:
    """The downloads being made for the disk, and those waiting to start (see the module)."""

    def __init__(
        self, limit: int, block_size: int, queued: Callable[[], int], open_for_writes: Callable[[], bool]
    ) -> None:
        self.limit = limit
        self._block_size = block_size
        self._queued = queued  # bytes in the write queue now
        self._open_for_writes = open_for_writes  # False: the store is closing or its writes are paused
        self._incoming = 0  # bytes of the downloads let in, until they are stored or given up
        self._line: deque[_Waiter] = deque()
        self._waits = 0
        self._skipped = 0  # blocks downloaded unstored because the disk took nothing for WAIT

    @asynccontextmanager
    async def incoming(self, nbytes: int) -> AsyncIterator[bool]:
        """Around a download of `nbytes`: waits for room; yields whether to store them."""
        storing, counted = await self._admission(nbytes)
        try:
            yield storing
        finally:
            if counted:
                self._incoming -= nbytes
                self.admit()

    def admit(self) -> None:
        """Let waiting downloads in, in their order, while they fit (all of them, uncounted, when the store
        takes no writes). Call whenever the write queue shrinks or writes stop."""
        line = self._line
        writable = self._open_for_writes()
        while line and (not writable or not self._behind_by(line[0].nbytes)):
            waiter = line.popleft()
            if writable:
                waiter.admitted = True
                self._incoming += waiter.nbytes
            waiter.event.set()

    def statistics(self) -> dict[str, int]:
        return {
            "incoming_bytes": self._incoming,
            "backlog_waiting": len(self._line),
            "backlog_waits": self._waits,
            "skipped_busy": self._skipped,
        }

    async def _admission(self, nbytes: int) -> tuple[bool, bool]:
        """(whether to store, whether the bytes are counted in the backlog until the download ends). A
        store that takes no writes is no reason to wait: its `put_run` returns at once and counts them."""
        if not self._open_for_writes():
            return True, False
        if not self._line and not self._behind_by(nbytes):
            self._incoming += nbytes
            return True, True
        self._waits += 1
        waiter = _Waiter(nbytes)
        self._line.append(waiter)
        try:
            with trio.move_on_after(WAIT):
                await waiter.event.wait()
        except BaseException:  # cancelled in the line, or just as it was let in
            self._leave(waiter)
            raise
        if waiter.event.is_set():
            return True, waiter.admitted
        self._leave(waiter)  # WAIT went by
        self._skipped += -(-nbytes // self._block_size)
        return False, False

    def _leave(self, waiter: _Waiter) -> None:
        if waiter.admitted:
            self._incoming -= waiter.nbytes
        elif not waiter.event.is_set():
            self._line.remove(waiter)
        self.admit()  # those behind it may fit now

    def _behind_by(self, nbytes: int) -> bool:
        """Letting `nbytes` in would take the backlog over its limit (one download always may start)."""
        backlog = self._queued() + self._incoming
        return backlog > 0 and backlog + nbytes > self.limit
