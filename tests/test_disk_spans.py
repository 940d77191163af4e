"""Replies read whole from the disk store (`vidfs.io.store.spans`): exact bytes, every block checked (a
damaged one is dropped and never served), the next two spans read ahead for a sequential reader, a buffer
never reused while a reply holds it, and the usual way taken whenever a span cannot be read whole."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.test_disk_cache import BS, SIZE, block, corrupt, data_path, fill, key, opened, takes_direct_io
from vidfs.io.store import disk as store_disk
from vidfs.io.store import reads as store_reads
from vidfs.io.store.layout import EXTENT_BLOCKS
from vidfs.io.store.service import DiskStore
from vidfs.io.store.spans import SpanBuffers

BLOCKS = 2 * EXTENT_BLOCKS


@pytest.fixture(autouse=True)
def direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not takes_direct_io(tmp_path):
        pytest.skip("the file system under the test's directory refuses O_DIRECT")
    monkeypatch.setattr(store_disk, "_DIRECT", store_disk._DirectReads(16 * BS, keep=1))


def whole(count: int = BLOCKS) -> bytes:
    return b"".join(block(i) for i in range(count))


async def settled(store: DiskStore) -> None:
    """Every span read ahead has been read: the counts no longer depend on how fast the threads were."""
    for ahead in list(store._spans_ahead):
        await ahead.result()


async def test_a_span_is_read_whole_and_the_next_one_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_reads, "SPAN_AHEAD_BYTES", 8 * BS)  # spans shorter than the file
    count = -(-SIZE // BS)  # the whole file, its short last block too
    async with opened(tmp_path, capacity=2 * SIZE) as store:
        await fill(store, key(), 0, count)
        assert store.on_disk(key(), 0, count - 1, SIZE)
        start, stop = BS // 2, 5 * BS + 7  # within blocks 0 and 5
        got = await store.read_span(key(), start, stop, SIZE)
        assert got is not None and bytes(got) == whole()[start:stop]
        assert [(a.start, a.stop) for a in store._spans_ahead] == [
            (stop, stop + 8 * BS),
            (stop + 8 * BS, stop + 16 * BS),
        ]
        end = await store.read_span(key(), SIZE - 3 * BS, SIZE, SIZE)  # in no span ahead: read now
        assert end is not None and bytes(end) == whole(count)[SIZE - 3 * BS :]
        # The next span was asked of the disk at once; a read within it is served from it, and the span
        # after the two ahead of it is asked for.
        following = await store.read_span(key(), stop, stop + 3 * BS, SIZE)
        assert following is not None and bytes(following) == whole()[stop : stop + 3 * BS]
        await settled(store)
        stats = store.statistics()
        assert (stats["spans"], stats["spans_ahead"], stats["torn_detected"]) == (5, 1, 0)


async def test_a_damaged_block_in_a_span_is_dropped_and_never_served(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, BLOCKS)
        damaged = EXTENT_BLOCKS // 2
        corrupt(data_path(tmp_path, key()), damaged * BS + BS // 2, "flip")
        assert await store.read_span(key(), 0, BLOCKS * BS, SIZE) is None
        assert store.statistics()["torn_detected"] == 1
        assert not store.on_disk(key(), 0, BLOCKS - 1, SIZE)
        # The usual way now: every block but that one (fetched again by the block cache).
        found = await store.get_run(key(), 0, BLOCKS - 1, SIZE)
        assert sorted(found) == [i for i in range(BLOCKS) if i != damaged]
        assert all(found[i] == block(i) for i in found)


async def test_a_span_not_all_on_disk_goes_the_usual_way(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 4)
        await fill(store, key(), 5, 4)  # block 4 missing
        assert await store.read_span(key(), 0, 9 * BS, SIZE) is None
        await store.put_run(key(), 4, [block(4)], SIZE)  # queued for its write, not on disk yet
        assert not store.on_disk(key(), 0, 8, SIZE)
        assert await store.read_span(key(), 0, 9 * BS, SIZE) is None
        assert await store.read_span(key(), 0, 4 * BS, SIZE) is not None
        assert await store.read_span(key("other"), 0, 4 * BS, SIZE) is None
        assert store.statistics()["torn_detected"] == 0


async def test_no_span_where_direct_reads_are_refused(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 8)
        store_disk._DIRECT.refused = True
        assert not store.on_disk(key(), 0, 7, SIZE)
        assert await store.read_span(key(), 0, 8 * BS, SIZE) is None
        assert await store.get_run(key(), 0, 7, SIZE) == {i: block(i) for i in range(8)}


def test_a_buffer_is_never_reused_while_a_reply_holds_it() -> None:
    buffers = SpanBuffers(keep=1)
    first = buffers.take(2 * BS)
    first[:] = random.Random(1).randbytes(2 * BS)
    kept = bytes(first)
    reply = first[10:100]
    first.release()
    second = buffers.take(2 * BS)  # the one kept buffer is still held by `reply`: a new one
    second[:] = bytes(2 * BS)
    assert bytes(reply) == kept[10:100] and buffers.fresh == 2
    for view in (reply, second):
        view.release()
    third = buffers.take(BS)
    assert buffers.fresh == 2  # free again: reused
    assert all(address % 4096 == 0 for address in [_address(third)])


def _address(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


async def test_a_failing_read_ahead_never_ends_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = store_reads.read_span

    def failing_ahead(*args: Any) -> memoryview | list[int]:
        if args[3].first != 0:  # the stretch read ahead, not the one asked for
            raise RuntimeError("a bug in reading ahead")
        return real(*args)

    monkeypatch.setattr(store_reads, "read_span", failing_ahead)
    count = -(-SIZE // BS)
    async with opened(tmp_path, capacity=2 * SIZE) as store:
        await fill(store, key(), 0, count)
        got = await store.read_span(key(), 0, 4 * BS, SIZE)
        assert got is not None and bytes(got) == whole()[: 4 * BS]
        monkeypatch.setattr(store_reads, "read_span", real)
        following = await store.read_span(key(), 4 * BS, 8 * BS, SIZE)  # read now, the read ahead failed
        assert following is not None and bytes(following) == whole()[4 * BS : 8 * BS]
        assert store.statistics()["spans_ahead"] == 0
    assert "reading ahead" in caplog.text


async def test_a_span_whose_blocks_changed_before_its_turn_is_not_read(tmp_path: Path) -> None:
    """A span read ahead runs later than it was planned: a block of it evicted meanwhile (here the first,
    then the last) makes it go the usual way, never a reply shifted or cut short."""
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 8)
        entry = store._ledger.files[next(iter(store._ledger.files))]
        assert entry.extents is not None
        extent = entry.extents[0]
        for index in (0, 7):
            store._ledger.drop_blocks(entry, [(extent, index)])
            assert await store._span_now(entry, 0, 8 * BS) is None
        got = await store._span_now(entry, BS, 7 * BS)
        assert got is not None and bytes(got) == whole(7)[BS:]


async def test_a_sequential_reader_has_the_next_two_spans_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two spans are read ahead of a reader (one at a time, the disk read a span while the reader waited);
    a read within the second is served from it, whole and exact."""
    monkeypatch.setattr(store_reads, "SPAN_AHEAD_BYTES", 8 * BS)
    async with opened(tmp_path, capacity=2 * SIZE) as store:
        await fill(store, key(), 0, BLOCKS)
        got = await store.read_span(key(), 0, 4 * BS, SIZE)
        assert got is not None and bytes(got) == whole()[: 4 * BS]
        assert [(a.start, a.stop) for a in store._spans_ahead] == [(4 * BS, 12 * BS), (12 * BS, 20 * BS)]
        later = await store.read_span(key(), 12 * BS, 16 * BS, SIZE)
        assert later is not None and bytes(later) == whole()[12 * BS : 16 * BS]
        assert store.statistics()["spans_ahead"] == 1
