"""The disk block store on its own: persistence, LRU under the cap, pins, torn-block detection, leftovers."""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from vidfs.io.disk_store import HEADER, DiskStore, dir_name
from vidfs.io.remote_file import FileKey
from vidfs.stats import Stats

BS = 4096


def key(name: str = "a", fingerprint: str = 'etag:"1"') -> FileKey:
    return FileKey("site", f"video-{name}", fingerprint)


def block(index: int, seed: str = "a", size: int = BS) -> bytes:
    return random.Random(f"{seed}:{index}").randbytes(size)


def block_path(root: Path, file_key: FileKey, index: int, block_size: int = BS) -> Path:
    name = dir_name(file_key, block_size)
    return root / "data" / name[:2] / name / f"{index}.blk"


def block_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.blk"))


@asynccontextmanager
async def opened(
    root: Path, *, capacity: int = 64 * BS, stats: Stats | None = None
) -> AsyncIterator[DiskStore]:
    store = DiskStore(root, capacity=capacity, block_size=BS, stats=stats or Stats())
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


async def fill(store: DiskStore, file_key: FileKey, indices: range, seed: str = "a") -> None:
    for index in indices:
        await store.put(file_key, index, block(index, seed))


async def test_put_get_roundtrip(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.put(key(), 0, block(0))
        await store.put(key(), 1, block(1, size=100))  # a short last block
        # Served from memory while the write is still queued, then from disk.
        assert await store.get(key(), 0, BS) == block(0)
        await store.drain()
        assert await store.get(key(), 0, BS) == block(0)
        assert await store.get(key(), 1, 100) == block(1, size=100)
        assert await store.get(key(), 2, BS) is None
        assert await store.get(key("other"), 0, BS) is None
        stats = store.statistics()
        assert stats["bytes"] == BS + 100
        assert stats["blocks"] == 2
        assert stats["hits"] == 3
        assert stats["misses"] == 2
        assert stats["capacity"] == 64 * BS
        assert block_path(tmp_path, key(), 0).stat().st_size == HEADER.size + BS


async def test_survives_a_new_store_on_the_same_root(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), range(5), "a")
        await fill(store, key("b"), range(3), "b")
    async with opened(tmp_path) as again:
        assert again.statistics()["bytes"] == 8 * BS
        assert again.statistics()["blocks"] == 8
        for index in range(5):
            assert await again.get(key("a"), index, BS) == block(index, "a")
        for index in range(3):
            assert await again.get(key("b"), index, BS) == block(index, "b")
        # Another fingerprint is another file.
        assert await again.get(key("a", 'etag:"2"'), 0, BS) is None


async def test_key_json_and_private_modes(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.put(key(), 0, block(0))
        await store.drain()
    path = block_path(tmp_path, key(), 0)
    document = json.loads((path.parent / "key.json").read_text())
    assert document == {
        "instance": "site",
        "remote_id": "video-a",
        "fingerprint": 'etag:"1"',
        "block_size": BS,
    }
    for directory in (tmp_path, tmp_path / "data", path.parent.parent, path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_eviction_keeps_the_cap_and_evicts_least_recently_used_first(tmp_path: Path) -> None:
    capacity = 4 * BS
    async with opened(tmp_path, capacity=capacity) as store:
        await fill(store, key(), range(4))
        assert await store.get(key(), 0, BS) == block(0)  # 0 is now the most recently used
        for index in range(4, 7):
            await store.put(key(), index, block(index))
            assert store.statistics()["bytes"] <= capacity
        await store.drain()
        # 1, 2, 3 went, in that order; 0 was refreshed and stays.
        assert {p.name for p in block_files(tmp_path)} == {"0.blk", "4.blk", "5.blk", "6.blk"}
        assert store.statistics()["evictions"] == 3
        for index in range(1, 4):
            assert await store.get(key(), index, BS) is None, index
        for index in (0, 4, 5, 6):
            assert await store.get(key(), index, BS) == block(index)


async def test_lru_order_survives_a_remount(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=4 * BS) as store:
        await fill(store, key(), range(4))
        await store.drain()
        assert await store.get(key(), 0, BS) == block(0)
    async with opened(tmp_path, capacity=4 * BS) as again:
        await again.put(key(), 4, block(4))
        await again.drain()
        assert await again.get(key(), 0, BS) == block(0)  # refreshed before the remount: kept
        assert await again.get(key(), 1, BS) is None  # the least recently used one went


async def test_open_evicts_down_to_a_smaller_capacity(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=8 * BS) as store:
        await fill(store, key(), range(8))
    async with opened(tmp_path, capacity=3 * BS) as smaller:
        assert smaller.statistics()["bytes"] == 3 * BS
        assert {p.name for p in block_files(tmp_path)} == {"5.blk", "6.blk", "7.blk"}


async def test_pinned_files_are_never_evicted_and_pins_persist(tmp_path: Path) -> None:
    capacity = 6 * BS
    async with opened(tmp_path, capacity=capacity) as store:
        store.pin(key("keep"))
        await fill(store, key("keep"), range(3), "keep")
        await fill(store, key("other"), range(20), "other")
        assert store.statistics()["bytes"] <= capacity
        assert store.statistics()["pinned_bytes"] == 3 * BS
        await store.drain()
        for index in range(3):
            assert await store.get(key("keep"), index, BS) == block(index, "keep")
        assert store.pinned() == {key("keep")}
    assert json.loads((tmp_path / "pins.json").read_text())["pins"] == [
        {"instance": "site", "remote_id": "video-keep", "fingerprint": 'etag:"1"'}
    ]
    async with opened(tmp_path, capacity=capacity) as again:
        assert again.pinned() == {key("keep")}
        assert again.statistics()["pinned_bytes"] == 3 * BS
        await fill(again, key("more"), range(20), "more")
        for index in range(3):
            assert await again.get(key("keep"), index, BS) == block(index, "keep")
        # Unpinned, the file is ordinary LRU data again.
        again.unpin(key("keep"))
        await fill(again, key("last"), range(6), "last")
        assert await again.get(key("keep"), 0, BS) is None
        assert again.pinned() == set()


async def test_a_block_that_cannot_fit_beside_pinned_data_is_not_stored(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=2 * BS) as store:
        store.pin(key("keep"))
        await fill(store, key("keep"), range(3), "keep")
        await store.put(key("other"), 0, block(0))
        stats = store.statistics()
        assert stats["bytes"] == 2 * BS
        assert stats["rejected"] == 2
        assert await store.get(key("other"), 0, BS) is None


async def test_a_truncated_block_is_detected_removed_and_counted(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), range(3))
    path = block_path(tmp_path, key(), 1)
    os.truncate(path, HEADER.size + BS // 2)
    stats = Stats()
    async with opened(tmp_path, stats=stats) as again:
        assert await again.get(key(), 1, BS) is None
        assert not path.exists()
        assert again.statistics()["torn_detected"] == 1
        assert stats.counters["disk.torn_detected"] == 1
        assert await again.get(key(), 0, BS) == block(0)  # its neighbours are fine
        assert await again.get(key(), 2, BS) == block(2)
        assert again.statistics()["bytes"] == 2 * BS
        # Fetched again and stored again, it is served.
        await again.put(key(), 1, block(1))
        await again.drain()
        assert await again.get(key(), 1, BS) == block(1)


async def test_flipped_data_bytes_are_detected(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), range(2))
        await store.drain()
        path = block_path(tmp_path, key(), 0)
        with open(path, "r+b") as handle:
            handle.seek(HEADER.size + 1000)
            byte = handle.read(1)
            handle.seek(HEADER.size + 1000)
            handle.write(bytes([byte[0] ^ 0x01]))
        # The same store notices too (the index only knows the length, which did not change).
        assert await store.get(key(), 0, BS) is None
        assert not path.exists()
        assert store.statistics()["torn_detected"] == 1
        assert store.statistics()["bytes"] == BS
        assert await store.get(key(), 1, BS) == block(1)


async def test_a_block_file_under_the_wrong_index_or_file_is_not_served(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), range(2), "a")
        await fill(store, key("b"), range(1), "b")
    a0, a1 = block_path(tmp_path, key("a"), 0), block_path(tmp_path, key("a"), 1)
    os.replace(a0, a1)  # block 0's bytes under block 1's name
    b0 = block_path(tmp_path, key("b"), 0)
    a0.write_bytes(b0.read_bytes())  # file b's block 0 under file a's directory
    async with opened(tmp_path) as again:
        assert await again.get(key("a"), 1, BS) is None
        assert await again.get(key("a"), 0, BS) is None
        assert again.statistics()["torn_detected"] == 2
        assert await again.get(key("b"), 0, BS) == block(0, "b")


async def test_short_files_and_temp_leftovers_are_removed_at_open(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), range(2))
    directory = block_path(tmp_path, key(), 0).parent
    leftover = directory / ".tmp7.0123abcd"
    leftover.write_bytes(b"half a block")
    (tmp_path / ".tmppins.json.0011").write_text("{")
    empty = directory / "5.blk"  # renamed into place, bytes never written (power cut)
    empty.write_bytes(b"")
    async with opened(tmp_path) as again:
        assert not leftover.exists()
        assert not (tmp_path / ".tmppins.json.0011").exists()
        assert not empty.exists()
        assert again.statistics()["torn_detected"] == 1
        assert again.statistics()["blocks"] == 2
        assert await again.get(key(), 0, BS) == block(0)


async def test_invalidate_drops_a_files_blocks(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), range(4), "a")
        await fill(store, key("b"), range(2), "b")
        await store.drain()
        await fill(store, key("a"), range(4, 6), "a")  # two still queued when invalidated
        store.invalidate(key("a"))
        await store.drain()
        assert await store.get(key("a"), 0, BS) is None
        assert await store.get(key("a"), 5, BS) is None
        assert store.statistics()["bytes"] == 2 * BS
        assert not block_path(tmp_path, key("a"), 0).parent.exists()
        assert await store.get(key("b"), 1, BS) == block(1, "b")
        # The file can be cached again afterwards.
        await store.put(key("a"), 0, block(0, "a"))
        await store.drain()
        assert await store.get(key("a"), 0, BS) == block(0, "a")
    async with opened(tmp_path) as again:
        assert again.statistics()["bytes"] == 3 * BS


async def test_expected_length_mismatch_is_a_miss(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.put(key(), 0, block(0))
        await store.put(key(), 1, block(1))
        assert await store.get(key(), 0, BS - 1) is None  # queued
        await store.drain()
        assert await store.get(key(), 1, 100) is None  # on disk
        assert store.statistics()["torn_detected"] == 0
        assert store.statistics()["bytes"] == 0


def test_capacity_below_one_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smaller than one block"):
        DiskStore(tmp_path, capacity=BS - 1, block_size=BS, stats=Stats())


async def test_parallel_puts_and_gets_keep_the_accounting_exact(tmp_path: Path) -> None:
    capacity = 20 * BS
    files = [key(str(n)) for n in range(5)]
    wrong: list[tuple[FileKey, int]] = []
    async with opened(tmp_path, capacity=capacity) as store:
        store.pin(files[0])

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(300):
                file_key = rng.choice(files)
                index = rng.randrange(12)
                if rng.random() < 0.5:
                    await store.put(file_key, index, block(index, file_key.remote_id))
                    assert store.statistics()["bytes"] <= capacity
                else:
                    data = await store.get(file_key, index, BS)
                    if data is not None and data != block(index, file_key.remote_id):
                        wrong.append((file_key, index))
                if rng.random() < 0.01:
                    store.invalidate(rng.choice(files[1:]))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for seed in range(8):
                nursery.start_soon(worker, seed)
        await store.drain()
        expected = store.statistics()
        on_disk = sum(p.stat().st_size - HEADER.size for p in block_files(tmp_path))
        assert on_disk == expected["bytes"] <= capacity
        assert len(block_files(tmp_path)) == expected["blocks"]
    assert wrong == []
    assert expected["pinned_bytes"] <= capacity
    async with opened(tmp_path, capacity=capacity) as again:
        assert again.statistics()["bytes"] == expected["bytes"]


async def test_a_full_write_queue_skips_unpinned_blocks_and_holds_pinned_ones(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        store._queue_limit = BS  # a disk slower than the network, in miniature
        store.pin(key("pinned"))
        for index in range(40):
            await store.put(key("pinned"), index, block(index, "pinned"))
            await store.put(key("other"), index, block(index, "other"))
            assert store.statistics()["queued_bytes"] <= BS
        stats = store.statistics()
        assert stats["skipped_busy"] > 0
        await store.drain()
        assert store.statistics()["queued_bytes"] == 0
        for index in range(40):  # the pinned file is whole
            assert await store.get(key("pinned"), index, BS) == block(index, "pinned")
        on_disk = len(block_files(tmp_path))
        assert on_disk == 40 + 40 - stats["skipped_busy"] == store.statistics()["blocks"]


async def test_a_failed_write_is_not_indexed(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await store.put(key(), 0, block(0))
        await store.drain()
        block_path(tmp_path, key(), 1).mkdir()  # the rename onto it fails
        stats_before = store.statistics()["bytes"]
        await store.put(key(), 1, block(1))
        await store.drain()
        assert store.statistics()["write_errors"] == 1
        assert store.statistics()["bytes"] == stats_before
        assert await store.get(key(), 1, BS) is None
        assert [
            p.name for p in block_path(tmp_path, key(), 0).parent.iterdir() if p.name.startswith(".tmp")
        ] == []
