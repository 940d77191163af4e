"""The disk store on its own: persistence, LRU eviction by extent under the cap, pins, damaged blocks never
served, leftovers and old formats, backpressure instead of skipped blocks."""

from __future__ import annotations

import errno
import logging
import os
import random
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from vidfs.io.remote_file import FileKey
from vidfs.io.store import DiskStore, backlog, running
from vidfs.io.store import disk as store_disk
from vidfs.io.store import service as store_service
from vidfs.io.store.layout import EXTENT_BLOCKS, Layout, file_name
from vidfs.stats import Stats

BS = 4096
EXTENT = EXTENT_BLOCKS * BS  # the unit of eviction
SIZE = 10 * EXTENT - 100  # every test file: ten extents, a short last block


def key(name: str = "a", fingerprint: str = 'etag:"1"') -> FileKey:
    return FileKey("site", f"video-{name}", fingerprint)


def block(index: int, seed: str = "a", size: int = SIZE) -> bytes:
    length = max(0, min(BS, size - index * BS))
    return random.Random(f"{seed}:{index}").randbytes(length)


def data_path(root: Path, file_key: FileKey, block_size: int = BS) -> Path:
    return Path(Layout(root).data_path(file_name(file_key, block_size)))


@asynccontextmanager
async def opened(
    root: Path, *, capacity: int = 8 * EXTENT, stats: Stats | None = None, block_size: int = BS
) -> AsyncIterator[DiskStore]:
    store = DiskStore(root, capacity=capacity, block_size=block_size, stats=stats or Stats())
    async with running(store):
        yield store


async def fill(store: DiskStore, file_key: FileKey, first: int, count: int, seed: str = "a") -> None:
    """Put blocks first..first+count-1 as one run, and wait until they are on disk."""
    await store.put_run(file_key, first, [block(i, seed) for i in range(first, first + count)], SIZE)
    await store.drain()


async def read(store: DiskStore, file_key: FileKey, first: int, count: int) -> dict[int, bytes]:
    return await store.get_run(file_key, first, first + count - 1, SIZE)


def expected(first: int, count: int, seed: str = "a") -> dict[int, bytes]:
    return {i: block(i, seed) for i in range(first, first + count)}


def index_totals(root: Path) -> tuple[int, int]:
    """(bytes, blocks) the index holds, summed over its files."""
    with sqlite3.connect(root / "index.sqlite3") as db:
        nbytes, blocks = db.execute(
            "SELECT coalesce(sum(bytes), 0), coalesce(sum(blocks), 0) FROM files"
        ).fetchone()
    return int(nbytes), int(blocks)


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512 if path.exists() else 0


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def corrupt(path: Path, offset: int, how: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        if how == "flip":
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ 0x01]))
        else:  # the second half of the block never reached the disk
            handle.write(bytes(BS // 2))


@pytest.fixture(params=["direct", "buffered"])
def reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test reads its blocks both ways (`disk.DIRECT_READS`); direct reads in 16-block pieces, so a
    stretch takes several."""
    monkeypatch.setattr(store_disk, "DIRECT_READS", request.param == "direct")
    monkeypatch.setattr(store_disk, "_DIRECT", store_disk._DirectReads(16 * BS, keep=1))
    return str(request.param)


def takes_direct_io(directory: Path) -> bool:
    """Whether the file system under `directory` opens files with O_DIRECT (else the store reads them
    buffered: tmpfs before Linux 6.6, for one)."""
    probe = directory / "direct-probe"
    probe.write_bytes(bytes(BS))
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


# ------------------------------------------------------------------------------------------- basics
async def test_put_get_roundtrip(tmp_path: Path, reads: str) -> None:
    last = (SIZE - 1) // BS
    async with opened(tmp_path) as store:
        await store.put_run(key(), 0, [block(0), block(1), block(2)], SIZE)
        await store.put_run(key(), last, [block(last)], SIZE)  # the short last block
        assert await read(store, key(), 0, 3) == expected(0, 3)  # queued: served from memory
        await store.drain()
        assert await read(store, key(), 0, 4) == expected(0, 3)  # from disk; block 3 is missing
        assert await read(store, key(), last, 1) == {last: block(last)}
        assert len(block(last)) == BS - 100
        assert await read(store, key("other"), 0, 3) == {}
        stats = store.statistics()
        assert (stats["bytes"], stats["blocks"], stats["files"]) == (4 * BS - 100, 4, 1)
        assert (stats["hits"], stats["misses"]) == (7, 4)
        assert stats["reads_direct"] == (
            stats["reads"] if reads == "direct" and takes_direct_io(tmp_path) else 0
        )
        assert index_totals(tmp_path) == (4 * BS - 100, 4)
    path = data_path(tmp_path, key())
    assert path.stat().st_size == SIZE  # block i at offset i × block size, holes between
    assert allocated(path) < SIZE // 4


async def test_a_file_system_that_refuses_direct_reads_is_read_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_DIRECT refused (EINVAL, as tmpfs before Linux 6.6 answers the open): the blocks are read buffered,
    then and from then on, and nothing is dropped or counted as a read error."""
    real_open = store_disk._open_for_reading

    def refusing(path: str, direct: bool) -> int:
        if direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, direct)

    monkeypatch.setattr(store_disk, "_open_for_reading", refusing)
    monkeypatch.setattr(store_disk, "_DIRECT", store_disk._DirectReads(16 * BS, keep=1))
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 20)
        assert await read(store, key(), 0, 20) == expected(0, 20)
        assert store_disk._DIRECT.refused
        assert await read(store, key(), 0, 20) == expected(0, 20)
        stats = store.statistics()
        counted = ("reads", "reads_direct", "read_errors", "torn_detected")
        assert [stats[name] for name in counted] == [2, 0, 0, 0]


async def test_runs_put_one_read_at_a_time_are_written_in_one_batch(tmp_path: Path) -> None:
    """Random reads put a block or two each: the writer gathers them into one batch (one index transaction,
    one thread hop), not one batch per read, even when it may run between the puts."""
    async with opened(tmp_path) as store:
        for first in range(0, 10, 2):
            await store.put_run(key(), first, [block(first), block(first + 1)], SIZE)
            await trio.lowlevel.checkpoint()  # the writer may run here, as it may between two reads
        await store.drain()
        assert store.statistics()["batches"] == 1
        assert await read(store, key(), 0, 10) == expected(0, 10)


async def test_survives_a_new_store_on_the_same_root(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), 0, 100, "a")
        await fill(store, key("b"), 5, 3, "b")
    async with opened(tmp_path) as again:
        assert again.statistics()["bytes"] == 103 * BS
        assert await read(again, key("a"), 0, 100) == expected(0, 100, "a")
        assert await read(again, key("b"), 0, 10) == expected(5, 3, "b")
        assert await read(again, key("a", 'etag:"2"'), 0, 100) == {}  # another fingerprint: another file


async def test_files_are_private(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 1)
    path = data_path(tmp_path, key())
    for directory in (tmp_path, tmp_path / "files", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in (path, tmp_path / "index.sqlite3", tmp_path / "lock"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_capacity_below_one_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smaller than one block"):
        DiskStore(tmp_path, capacity=BS - 1, block_size=BS, stats=Stats())


async def test_a_second_store_on_the_same_root_runs_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 2)
        async with opened(tmp_path) as second:
            assert "in use by another vidfs process" in caplog.text
            await second.put_run(key("b"), 0, [block(0, "b")], SIZE)
            assert await read(second, key(), 0, 2) == {}
            assert second.statistics()["bytes"] == 0
        assert await read(store, key(), 0, 2) == expected(0, 2)


# ----------------------------------------------------------------------------------- LRU and the cap
async def test_eviction_keeps_the_cap_and_evicts_least_recently_used_extents(tmp_path: Path) -> None:
    capacity = 4 * EXTENT
    async with opened(tmp_path, capacity=capacity) as store:
        for extent in range(4):
            await fill(store, key(), extent * EXTENT_BLOCKS, EXTENT_BLOCKS)
        assert await read(store, key(), 0, 1) == expected(0, 1)  # extent 0 is now the most recently used
        for extent in range(4, 7):
            await store.put_run(
                key(), extent * EXTENT_BLOCKS, [block(i) for i in range(extent * 64, extent * 64 + 64)], SIZE
            )
            assert store.statistics()["bytes"] <= capacity
        await store.drain()
        assert store.statistics()["evictions"] == 3
        for extent in (1, 2, 3):  # went, in that order; 0 was refreshed and stays
            assert await read(store, key(), extent * EXTENT_BLOCKS, EXTENT_BLOCKS) == {}, extent
        for extent in (0, 4, 5, 6):
            first = extent * EXTENT_BLOCKS
            assert await read(store, key(), first, EXTENT_BLOCKS) == expected(first, EXTENT_BLOCKS), extent
        assert index_totals(tmp_path) == (capacity, 4 * EXTENT_BLOCKS)
        # The evicted extents were punched out of the data file: the disk holds about the capacity.
        assert allocated(data_path(tmp_path, key())) <= capacity + EXTENT


async def test_the_least_recently_used_file_gives_way_first(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=3 * EXTENT) as store:
        await fill(store, key("old"), 0, EXTENT_BLOCKS, "old")
        await fill(store, key("mid"), 0, EXTENT_BLOCKS, "mid")
        await fill(store, key("new"), 0, EXTENT_BLOCKS, "new")
        assert await read(store, key("old"), 0, 1) == expected(0, 1, "old")  # "mid" is now the oldest
        await fill(store, key("last"), 0, EXTENT_BLOCKS, "last")
        assert await read(store, key("mid"), 0, EXTENT_BLOCKS) == {}
        assert not data_path(tmp_path, key("mid")).exists()  # a file left with nothing loses its data file
        for name in ("old", "new", "last"):
            assert len(await read(store, key(name), 0, EXTENT_BLOCKS)) == EXTENT_BLOCKS, name


async def test_lru_order_survives_a_remount(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=4 * EXTENT) as store:
        for extent in range(4):
            await fill(store, key(), extent * EXTENT_BLOCKS, EXTENT_BLOCKS)
        assert len(await read(store, key(), 0, 1)) == 1  # extent 0: most recently used
    async with opened(tmp_path, capacity=4 * EXTENT) as again:
        await fill(again, key(), 4 * EXTENT_BLOCKS, EXTENT_BLOCKS)
        assert len(await read(again, key(), 0, EXTENT_BLOCKS)) == EXTENT_BLOCKS  # refreshed: kept
        assert await read(again, key(), EXTENT_BLOCKS, EXTENT_BLOCKS) == {}  # the oldest went


async def test_open_evicts_down_to_a_smaller_capacity(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=8 * EXTENT) as store:
        for extent in range(8):
            await fill(store, key(), extent * EXTENT_BLOCKS, EXTENT_BLOCKS)
    async with opened(tmp_path, capacity=3 * EXTENT) as smaller:
        assert smaller.statistics()["bytes"] == 3 * EXTENT
        assert len(await read(smaller, key(), 5 * EXTENT_BLOCKS, 3 * EXTENT_BLOCKS)) == 3 * EXTENT_BLOCKS
        await smaller.drain()
    assert index_totals(tmp_path) == (3 * EXTENT, 3 * EXTENT_BLOCKS)


# -------------------------------------------------------------------------------------------- pins
async def test_pinned_files_are_never_evicted_and_pins_survive_a_remount(tmp_path: Path) -> None:
    capacity = 4 * EXTENT
    async with opened(tmp_path, capacity=capacity) as store:
        store.pin(key("keep"))
        await fill(store, key("keep"), 0, 2 * EXTENT_BLOCKS, "keep")
        for extent in range(6):
            await fill(store, key("other"), extent * EXTENT_BLOCKS, EXTENT_BLOCKS, "other")
        assert store.statistics()["bytes"] <= capacity
        assert store.statistics()["pinned_bytes"] == 2 * EXTENT
        assert store.pinned() == {key("keep")}
    async with opened(tmp_path, capacity=capacity) as again:
        assert again.pinned() == {key("keep")}
        assert again.statistics()["pinned_bytes"] == 2 * EXTENT
        for extent in range(6):
            await fill(again, key("more"), extent * EXTENT_BLOCKS, EXTENT_BLOCKS, "more")
        assert await read(again, key("keep"), 0, 128) == expected(0, 128, "keep")
        again.unpin(key("keep"))  # ordinary LRU data again (just read: the most recently used)
        await fill(again, key("last"), 0, 3 * EXTENT_BLOCKS, "last")
        assert await read(again, key("more"), 0, 6 * EXTENT_BLOCKS) == {}  # older: gone first
        assert await read(again, key("keep"), 0, EXTENT_BLOCKS) == {}  # then the oldest extent of "keep"
        assert len(await read(again, key("keep"), EXTENT_BLOCKS, EXTENT_BLOCKS)) == EXTENT_BLOCKS
        assert again.pinned() == set()
    async with opened(tmp_path, capacity=capacity) as third:
        assert third.pinned() == set()


async def test_a_block_that_cannot_fit_beside_pinned_data_is_not_stored(tmp_path: Path) -> None:
    async with opened(tmp_path, capacity=2 * EXTENT) as store:
        store.pin(key("keep"))
        await fill(store, key("keep"), 0, 2 * EXTENT_BLOCKS, "keep")
        await fill(store, key("other"), 0, 2)
        stats = store.statistics()
        assert (stats["bytes"], stats["rejected"]) == (2 * EXTENT, 2)
        assert await read(store, key("other"), 0, 2) == {}


# ------------------------------------------------------------------------------------- damaged data
@pytest.mark.parametrize("how", ["flip", "half"])
async def test_a_damaged_block_in_the_middle_of_an_extent_is_never_served(
    tmp_path: Path, how: str, reads: str
) -> None:
    stats = Stats()
    async with opened(tmp_path, stats=stats) as store:
        await fill(store, key(), 0, 2 * EXTENT_BLOCKS)
        damaged = EXTENT_BLOCKS + EXTENT_BLOCKS // 2
        corrupt(data_path(tmp_path, key()), damaged * BS + BS // 2 - 1, how)
        # The same store notices (its books only know the checksums, which did not change).
        got = await read(store, key(), 0, 2 * EXTENT_BLOCKS)
        want = expected(0, 2 * EXTENT_BLOCKS)
        del want[damaged]
        assert got == want
        assert store.statistics()["torn_detected"] == 1
        assert stats.counters["disk.torn_detected"] == 1
        assert await read(store, key(), damaged, 1) == {}  # dropped: a plain miss now
        assert store.statistics()["torn_detected"] == 1
        await fill(store, key(), damaged, 1)  # fetched again, stored again
        assert await read(store, key(), damaged, 1) == expected(damaged, 1)


async def test_a_torn_extent_is_detected_and_stored_again(tmp_path: Path, reads: str) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 2 * EXTENT_BLOCKS)
    cut = EXTENT_BLOCKS + 10  # the data file ends in the middle of block 74 (extent 1)
    os.truncate(data_path(tmp_path, key()), cut * BS + 100)
    async with opened(tmp_path) as again:
        got = await read(again, key(), 0, 2 * EXTENT_BLOCKS)
        assert got == expected(0, cut)
        assert again.statistics()["torn_detected"] == 2 * EXTENT_BLOCKS - cut
        assert again.statistics()["bytes"] == cut * BS
        await fill(again, key(), cut, 2 * EXTENT_BLOCKS - cut)
        assert await read(again, key(), 0, 2 * EXTENT_BLOCKS) == expected(0, 2 * EXTENT_BLOCKS)


async def test_blocks_in_the_wrong_place_are_not_served(tmp_path: Path, reads: str) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), 0, 2, "a")
        await fill(store, key("b"), 0, 2, "b")
    a, b = data_path(tmp_path, key("a")), data_path(tmp_path, key("b"))
    with open(a, "r+b") as handle:  # block 0's bytes under block 1
        handle.seek(BS)
        handle.write(block(0, "a"))
    b.write_bytes(a.read_bytes())  # file a's blocks in file b's data file
    async with opened(tmp_path) as again:
        assert await read(again, key("a"), 0, 2) == expected(0, 1, "a")
        assert await read(again, key("b"), 0, 2) == {}
        assert again.statistics()["torn_detected"] == 3


async def test_leftovers_are_reconciled_at_open(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), 0, 3, "a")
        await fill(store, key("b"), 0, 3, "b")
    orphan = data_path(tmp_path, key("never indexed"))  # written, then a crash before its index commit
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x" * BS)
    data_path(tmp_path, key("b")).unlink()  # data gone behind the store's back
    async with opened(tmp_path) as again:
        assert not orphan.exists()
        assert again.statistics()["files"] == 1
        assert again.statistics()["bytes"] == 3 * BS
        assert await read(again, key("b"), 0, 3) == {}
        assert await read(again, key("a"), 0, 3) == expected(0, 3, "a")


async def test_data_that_vanishes_while_open_is_fetched_again(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 3)
        data_path(tmp_path, key()).unlink()
        assert await read(store, key(), 0, 3) == {}
        assert store.statistics()["bytes"] == 0
        await fill(store, key(), 0, 3)
        assert await read(store, key(), 0, 3) == expected(0, 3)


# -------------------------------------------------------------------------------------- old formats
async def test_an_old_format_cache_dir_is_discarded_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = "3f" + "0" * 30
    old = tmp_path / "data" / name[:2] / name
    old.mkdir(parents=True)
    (old / "key.json").write_text('{"instance": "site", "remote_id": "video-a", "fingerprint": "x"}')
    (old / "0.blk").write_bytes(b"VFSB" + bytes(36) + block(0))
    (tmp_path / "pins.json").write_text('{"version": 1, "pins": []}')
    with caplog.at_level(logging.INFO, logger="vidfs"):
        async with opened(tmp_path) as store:
            assert await read(store, key(), 0, 1) == {}
            assert store.statistics()["bytes"] == 0
            await eventually(lambda: not list(tmp_path.glob(".discard-*")), "the old data to be removed")
            assert not (tmp_path / "data").exists() and not (tmp_path / "pins.json").exists()
            await fill(store, key(), 0, 1)
            assert await read(store, key(), 0, 1) == expected(0, 1)
    lines = [r.getMessage() for r in caplog.records if "old one-file-per-block format" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_an_index_of_another_format_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 3)
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    async with opened(tmp_path) as again:
        assert "started afresh" in caplog.text
        assert await read(again, key(), 0, 3) == {}
        await eventually(lambda: not list(tmp_path.glob(".discard-*")), "the old index to be removed")
        await fill(again, key(), 0, 3)
        assert await read(again, key(), 0, 3) == expected(0, 3)


async def test_a_new_block_size_drops_the_old_files(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 3)
    async with opened(tmp_path, block_size=2 * BS) as bigger:
        assert bigger.statistics()["bytes"] == 0
        assert not data_path(tmp_path, key()).exists()
    assert index_totals(tmp_path) == (0, 0)


# ------------------------------------------------------------------------------------ invalidation
async def test_invalidate_drops_a_files_blocks(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), 0, 4, "a")
        await fill(store, key("b"), 0, 2, "b")
        await store.put_run(key("a"), 4, [block(4, "a"), block(5, "a")], SIZE)  # still queued
        store.invalidate(key("a"))
        await store.drain()
        assert await read(store, key("a"), 0, 6) == {}
        assert store.statistics()["bytes"] == 2 * BS
        assert not data_path(tmp_path, key("a")).exists()
        assert await read(store, key("b"), 0, 2) == expected(0, 2, "b")
        await fill(store, key("a"), 0, 1, "a")  # cached again afterwards
        assert await read(store, key("a"), 0, 1) == expected(0, 1, "a")
    async with opened(tmp_path) as again:
        assert again.statistics()["bytes"] == 3 * BS


async def test_another_size_under_the_same_key_is_never_served(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key(), 0, 3)
        assert await store.get_run(key(), 0, 2, SIZE + 1) == {}
        assert store.statistics()["bytes"] == 0
        assert await read(store, key(), 0, 3) == {}


# ---------------------------------------------------------------------------------- concurrency
async def test_parallel_puts_and_gets_keep_the_accounting_exact(tmp_path: Path) -> None:
    capacity = 6 * EXTENT
    files = [key(str(n)) for n in range(5)]
    wrong: list[tuple[FileKey, int]] = []
    async with opened(tmp_path, capacity=capacity) as store:
        store.pin(files[0])

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(150):
                file_key = rng.choice(files)
                first = rng.randrange(0, 4 * EXTENT_BLOCKS)
                count = rng.randrange(1, 40)
                if rng.random() < 0.5:
                    blocks = [block(i, file_key.remote_id) for i in range(first, first + count)]
                    await store.put_run(file_key, first, blocks, SIZE)
                    assert store.statistics()["bytes"] <= capacity
                else:
                    got = await read(store, file_key, first, count)
                    wrong.extend(
                        (file_key, i) for i, data in got.items() if data != block(i, file_key.remote_id)
                    )
                if rng.random() < 0.02:
                    store.invalidate(rng.choice(files[1:]))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for seed in range(6):
                nursery.start_soon(worker, seed)
        await store.drain()
        final = store.statistics()
        assert index_totals(tmp_path) == (final["bytes"], final["blocks"])
    assert wrong == []
    assert final["bytes"] <= capacity and final["evictions"] > 0
    async with opened(tmp_path, capacity=capacity) as again:
        assert again.statistics()["bytes"] == final["bytes"]


async def test_a_full_write_queue_makes_the_putter_wait_and_everything_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_service, "GATHER", 0.01)  # a batch never fills here: don't wait for it
    async with opened(tmp_path, capacity=12 * EXTENT) as store:
        store._queue_limit = 4 * BS  # a disk slower than the network, in miniature
        largest = 0

        async def putter(name: str) -> None:
            nonlocal largest
            for first in range(0, 4 * EXTENT_BLOCKS, 8):
                await store.put_run(key(name), first, [block(i, name) for i in range(first, first + 8)], SIZE)
                largest = max(largest, store.statistics()["queued_bytes"])

        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(putter, name)
        await store.drain()
        stats = store.statistics()
        assert stats["waits"] > 0
        assert largest <= 4 * BS + 3 * 8 * BS  # the limit, overshot by at most one run per putter
        assert stats["blocks"] == 3 * 4 * EXTENT_BLOCKS  # nothing skipped
        for name in ("a", "b", "c"):
            assert await read(store, key(name), 0, 4 * EXTENT_BLOCKS) == expected(0, 4 * EXTENT_BLOCKS, name)


async def test_downloads_wait_while_the_disk_is_behind_and_everything_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is being downloaded for the disk plus its write queue stays within the backlog limit: the
    downloads wait before they start, instead of piling their blocks up in front of the queue."""
    monkeypatch.setattr(store_service, "GATHER", 0.01)
    async with opened(tmp_path, capacity=12 * EXTENT) as store:
        store._queue_limit = 4 * BS  # a disk slower than the network, in miniature
        store._backlog.limit = 8 * BS
        largest = 0

        async def downloader(name: str) -> None:
            nonlocal largest
            for first in range(0, 4 * EXTENT_BLOCKS, 8):
                async with store.incoming(8 * BS) as storing:
                    assert storing
                    now = store.statistics()
                    largest = max(largest, now["queued_bytes"] + now["incoming_bytes"])
                    await trio.lowlevel.checkpoint()  # the bytes arriving
                    blocks = [block(i, name) for i in range(first, first + 8)]
                    await store.put_run(key(name), first, blocks, SIZE)

        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(downloader, name)
        await store.drain()
        stats = store.statistics()
    assert stats["backlog_waits"] > 0 and stats["skipped_busy"] == 0
    assert largest <= 8 * BS  # three downloads at once would be 24 blocks
    assert stats["incoming_bytes"] == 0
    assert stats["blocks"] == 3 * 4 * EXTENT_BLOCKS  # nothing skipped


async def test_a_stalled_disk_lets_downloads_go_unstored_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that takes nothing for `backlog.WAIT` must not stall reads: the download goes on, unstored,
    and is counted; once the disk moves again, downloads are stored again."""
    monkeypatch.setattr(backlog, "WAIT", 0.2)
    async with opened(tmp_path, capacity=12 * EXTENT) as store:
        store._queue_limit = 4 * BS
        store._backlog.limit = 8 * BS
        async with store._write_limiter:  # the writer cannot write: a stalled disk
            await store.put_run(key("a"), 0, [block(i) for i in range(8)], SIZE)
            assert store.statistics()["queued_bytes"] == 8 * BS
            async with store.incoming(8 * BS) as storing:
                assert not storing
            assert store.statistics()["skipped_busy"] == 8
        await store.drain()
        async with store.incoming(8 * BS) as storing:
            assert storing
        assert store.statistics()["incoming_bytes"] == 0
        assert await read(store, key("a"), 0, 8) == expected(0, 8)


async def test_a_failed_write_is_not_indexed_and_the_store_goes_on(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        await fill(store, key("a"), 0, 1, "a")
        path = data_path(tmp_path, key("b"))
        path.mkdir(parents=True)  # opening the data file fails (EISDIR)
        await fill(store, key("b"), 0, 2, "b")
        stats = store.statistics()
        assert (stats["write_errors"], stats["bytes"], stats["unwritable"]) == (1, BS, 0)
        assert await read(store, key("b"), 0, 2) == {}
        path.rmdir()
        await fill(store, key("b"), 0, 2, "b")
        assert await read(store, key("b"), 0, 2) == expected(0, 2, "b")
