"""Blocks no one holds any more, handed to the next download instead of new ones.

Why. A download receives straight into its blocks (`vidfs.io.assembler.Assembler`), each a `bytearray` of
`block_size`, and `bytearray(n)` first zeroes its n bytes, on heap pages that glibc may just have given back
to the kernel (it trims the top of the heap), which then fault in again, and a page the guest has not used
lately costs the host a fault too (`vidfs.daemon.memory`). A sequential reader lets go of a block for each
block it fetches, so a block let go is what the next download needs: taken from here, it is received into
as it is. A cold read of 512 MiB at 0 ms through the disk store (`perf`, the daemon): the zeroing was 2.85%
of the samples, 0.58% with the pool; 86-89% of the blocks came from the pool, and the daemon took 11,400-
13,100 minor faults against 11,800-18,200 (four runs each, alternated). The daemon's CPU for the read moves
more than that between runs on this host (1.24-1.45 s both ways), so the figure is the profile's.

Where blocks come back from: the memory LRU when it evicts one (`ByteLRU`), and the disk store when it has
written one (`DiskStore.hand_back_to`); the block goes to whichever lets go of it last.

Safety. A block is kept only when nothing else holds it: not a reader between two awaits, not the disk
store's write queue, not a reply being sent (a `memoryview` holds its block), not a waiter's `_Pending`. The
reference count says so exactly (CPython). What an unheld block counts is measured once, at start, the way
`give` counts (a block passed as a call's result, held by no name), so a Python that counts differently
keeps nothing rather than a held block. A kept block is overwritten whole before anyone reads it: a download
hands a block on only once it is full. Only blocks of exactly `block_size` are kept (a file's last block is
shorter), at most `limit` of them (8 MiB: the disk store hands back a batch of up to 8 MiB at once).
"""

from __future__ import annotations

import sys

POOL_BLOCKS = 128  # at 64 KiB: 8 MiB, one batch of the disk store's writes (see the essay)


class BlockPool:
    """`take` a block to receive into; `give` one let go of (kept if nothing else holds it)."""

    __slots__ = ("_blocks", "_unheld", "block_size", "limit", "made", "reused")

    def __init__(self, block_size: int, limit: int = POOL_BLOCKS) -> None:
        self.block_size = block_size
        self.limit = limit
        self._blocks: list[bytearray] = []
        self.made = 0
        self.reused = 0
        # What an unheld block counts inside `give`, measured with a block passed the way the LRU passes
        # the ones it evicts (a value returned by a call, held by no name). Until then nothing is kept.
        self._unheld = 0
        self._unheld = self._count(bytearray(1))

    @staticmethod
    def _count(block: object) -> int:
        return sys.getrefcount(block)

    def take(self, size: int) -> bytearray:
        """A block of `size` bytes to fill (what it holds is not zeros: it is to be overwritten whole)."""
        if size == self.block_size and self._blocks:
            self.reused += 1
            return self._blocks.pop()
        self.made += 1
        return bytearray(size)

    def give(self, block: object) -> None:
        """Keep `block` for a later `take` if it is a whole block that nothing else holds. Pass it as a value
        no name holds (a call's result): a name is one more reference, and then it is never kept."""
        if (
            type(block) is bytearray
            and len(block) == self.block_size
            and len(self._blocks) < self.limit
            and sys.getrefcount(block) <= self._unheld
        ):
            self._blocks.append(block)

    def statistics(self) -> dict[str, int]:
        return {"pool_blocks": len(self._blocks), "pool_made": self.made, "pool_reused": self.reused}
