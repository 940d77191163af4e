"""The block pool (`vidfs.io.block_pool`): a block is received into again only when nothing else holds it."""

from __future__ import annotations

from vidfs.io.block_pool import BlockPool

BS = 64 * 1024


def test_a_block_nothing_holds_is_received_into_again() -> None:
    pool = BlockPool(BS, limit=4)
    blocks = [pool.take(BS)]
    made = id(blocks[0])
    pool.give(blocks.pop())  # as the memory LRU hands over what it evicts: a value no name holds
    assert pool.statistics() == {"pool_blocks": 1, "pool_made": 1, "pool_reused": 0}
    again = pool.take(BS)  # alive in the pool all along: the same id is the same object
    assert id(again) == made
    assert pool.statistics() == {"pool_blocks": 0, "pool_made": 1, "pool_reused": 1}


def test_a_block_held_elsewhere_is_never_kept() -> None:
    pool = BlockPool(BS)
    listed = bytearray(BS)
    keep = [listed]  # a reader's, or the disk store's write queue
    blocks = [listed]
    del listed
    pool.give(blocks.pop())
    viewed = bytearray(BS)
    view = memoryview(viewed)[10:20]  # a reply being sent
    blocks = [viewed]
    del viewed
    pool.give(blocks.pop())
    named = bytearray(BS)
    pool.give(named)  # the caller's own name holds it
    assert pool.statistics()["pool_blocks"] == 0
    assert len(keep) == 1 and view.nbytes == 10


def test_only_whole_bytearrays_are_kept_and_no_more_than_the_limit() -> None:
    pool = BlockPool(BS, limit=2)
    blocks: list[bytes | bytearray] = [
        bytes(BS),
        bytearray(BS - 1),
        bytearray(BS),
        bytearray(BS),
        bytearray(BS),
    ]
    while blocks:
        pool.give(blocks.pop())
    assert pool.statistics()["pool_blocks"] == 2
    assert len(pool.take(BS - 1)) == BS - 1  # a file's last block, shorter: made, not taken from the pool
    assert pool.statistics() == {"pool_blocks": 2, "pool_made": 1, "pool_reused": 0}
