"""The FUSE reply buffer (`vidfs.io.reply_buffer`): a reply is exactly the bytes asked, whatever the cut; a
reply still held is never written over by the next; a released one's buffer serves the next reply."""

from __future__ import annotations

import pytest

from vidfs.io.reply_buffer import ReplyBuffer


def blocks_of(seed: int, count: int, size: int = 64, last: int = 64) -> list[bytes]:
    blocks = [bytes((seed + i * 7 + j) % 251 for j in range(size)) for i in range(count)]
    blocks[-1] = blocks[-1][:last]
    return blocks


def test_every_cut_of_the_blocks_is_their_join() -> None:
    buffer = ReplyBuffer()
    blocks = blocks_of(1, 4, last=40)  # a file's short last block
    whole = b"".join(blocks)
    for start in range(0, 64, 9):
        for stop in range(len(whole), 64 * 3, -5):  # the largest first: one buffer serves them all
            reply = buffer.assemble(blocks, start, stop)
            assert bytes(reply) == whole[start:stop]
            del reply
    assert buffer.statistics()["fresh"] == 1


def test_a_reply_still_held_is_never_written_over() -> None:
    buffer = ReplyBuffer()
    first = buffer.assemble(blocks_of(1, 3), 10, 150)
    kept = bytes(first)
    second = buffer.assemble(blocks_of(2, 3), 0, 192)
    assert bytes(first) == kept
    assert bytes(second) == b"".join(blocks_of(2, 3))
    assert buffer.statistics()["fresh"] == 2


def test_a_released_reply_gives_its_buffer_to_the_next() -> None:
    buffer = ReplyBuffer()
    for seed in range(5):
        reply = buffer.assemble(blocks_of(seed, 2), 3, 120)
        assert bytes(reply) == b"".join(blocks_of(seed, 2))[3:120]
        del reply  # as pyfuse3 does once the reply is sent
    assert buffer.statistics() == {"bytes": 117, "reused": 4, "fresh": 1}


def test_blocks_short_of_the_range_asked_are_an_error_not_old_bytes() -> None:
    buffer = ReplyBuffer()
    del_me = buffer.assemble(blocks_of(1, 3), 0, 192)
    del del_me
    with pytest.raises(ValueError):
        buffer.assemble(blocks_of(2, 3, last=10), 0, 192)
