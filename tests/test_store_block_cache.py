"""The block cache over a real disk store and a real origin: a run the store splits at a hole.

A prefetch asks for blocks 0..7; the store has block 4, so 0..3 and 5..7 are downloaded as two stretches.
When the first download fails, a reader waiting for block 6 must still get its bytes (no spurious EIO for
other readers), and while the second stretch is in flight it holds its share of the prefetch budget.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from vidfs.config.types import HttpSettings
from vidfs.emulator.server import HttpError, Request, Site, serve_file
from vidfs.errors import VidfsError
from vidfs.http.client import HttpClient
from vidfs.io.block_cache import BlockCache
from vidfs.io.leases import Resolver
from vidfs.io.remote_file import FileKey, RemoteFile
from vidfs.io.store import DiskStore, running
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.stats import Stats

BS = 64 * 1024


class Origin:
    """Serves a blob; a range starting at block 0 fails (503), one starting at block 5 waits for `release`."""

    def __init__(self, blob: Path) -> None:
        self.blob = blob
        self.second_arrived = threading.Event()
        self.release = threading.Event()
        self.site = Site("origin")
        self.site.add_route(("GET", "HEAD"), r"/blob", self.handle)

    def handle(self, req: Request) -> None:
        spec = req.headers.get("Range") or ""
        if spec.startswith("bytes=0-"):
            raise HttpError(503, "the first stretch fails")
        if spec.startswith(f"bytes={5 * BS}-"):
            self.second_arrived.set()
            self.release.wait(60)
        etag = hashlib.sha256(self.blob.read_bytes()).hexdigest()[:16]
        serve_file(req, self.blob, etag=etag, content_type="video/mp4")


class _Provider:
    def __init__(self, url: str) -> None:
        self.url = url

    def root(self) -> Folder:
        return Folder("root", "root")

    async def list(self, folder: Folder) -> Listing:
        return Listing(())

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        return StreamLease(self.url)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(16 * BS))
    served = Origin(blob)
    served.site.start()
    try:
        yield served
    finally:
        served.release.set()
        served.site.close()


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def _remote(origin: Origin, stats: Stats) -> tuple[HttpClient, RemoteFile]:
    """An http client (closed by the caller) and the origin's blob as a remote file."""
    http = HttpClient(HttpSettings(retries=1, backoff_base=0.01), stats)
    size = origin.blob.stat().st_size
    video = Video("v1", "blob.mp4", size=size)
    resolver = Resolver(stats)
    provider = _Provider(origin.site.url + "/blob")
    file = RemoteFile(instance="t", provider=provider, video=video, size=size, http=http, resolver=resolver)
    return http, file


async def test_a_failed_stretch_does_not_fail_the_readers_of_the_next_one(
    origin: Origin, tmp_path: Path
) -> None:
    source = origin.blob.read_bytes()
    stats = Stats()
    http, file = _remote(origin, stats)
    store = DiskStore(tmp_path / "cache", capacity=64 * BS, block_size=BS, stats=stats)
    got: list[bytes | BaseException] = []
    try:
        async with running(store), trio.open_nursery() as nursery:
            await store.put_run(file.key, 4, [source[4 * BS : 5 * BS]], len(source))
            await store.drain()
            cache = BlockCache(memory_bytes=8 << 20, block_size=BS, nursery=nursery, stats=stats, store=store)
            assert cache.prefetch(file, 0, 8 * BS) == 8 * BS

            async def reader() -> None:
                try:
                    got.append(await cache.read(file, 6 * BS + 10, 100))
                except VidfsError as exc:
                    got.append(exc)

            nursery.start_soon(reader)
            await eventually(origin.second_arrived.is_set, "the second stretch's request")
            await eventually(
                lambda: not any(cache.available(file.key, i) for i in range(4)), "block 0-3 to fail"
            )
            # The first stretch is done (failed); the second, in flight, still holds its share of the budget.
            assert got == []
            assert cache.statistics()["prefetch_in_flight_bytes"] == 3 * BS
            origin.release.set()
            await eventually(lambda: got, "the reader of block 6")
            assert got == [source[6 * BS + 10 : 6 * BS + 110]]
            # ...and gives its budget back once its blocks are handed to the disk store.
            await eventually(lambda: cache.statistics()["prefetch_in_flight_bytes"] == 0, "the budget back")
            assert stats.counters["cache.disk_hits"] == 1
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()


async def test_a_read_of_blocks_all_on_disk_is_read_whole_and_a_damaged_one_fetched_again(
    origin: Origin, tmp_path: Path
) -> None:
    """Several blocks, all on disk and none in memory: one span read from the disk (`vidfs.io.store.spans`),
    not a prefetch. A byte flipped in a block further on: the span read ahead finds it, and that block comes
    from the origin when it is read; every reply exact."""
    source = origin.blob.read_bytes()
    stats = Stats()
    http, file = _remote(origin, stats)
    store = DiskStore(tmp_path / "cache", capacity=64 * BS, block_size=BS, stats=stats)
    try:
        async with running(store), trio.open_nursery() as nursery:
            blocks = [source[i * BS : (i + 1) * BS] for i in range(16)]
            await store.put_run(file.key, 0, blocks, len(source))
            await store.drain()
            if not store.on_disk(file.key, 0, 15, len(source)):
                pytest.skip("the file system under the test's directory refuses O_DIRECT")
            data_file = next((tmp_path / "cache").rglob("*.dat"))
            with open(data_file, "r+b") as handle:  # block 10, a byte in its middle
                handle.seek(10 * BS + BS // 2)
                byte = handle.read(1)[0]
                handle.seek(10 * BS + BS // 2)
                handle.write(bytes([byte ^ 0x01]))
            cache = BlockCache(memory_bytes=8 << 20, block_size=BS, nursery=nursery, stats=stats, store=store)
            assert cache.prefetch(file, 0, 16 * BS) == 0  # read when asked for, not ahead
            reply = await cache.read_reply(file, BS // 2, 5 * BS)
            assert bytes(reply) == source[BS // 2 : BS // 2 + 5 * BS]
            assert store.statistics()["spans"] >= 1
            assert stats.counters["bytes.served.disk"] == 5 * BS
            assert "bytes.fetched" not in stats.counters

            reply = await cache.read_reply(file, 9 * BS, 3 * BS)
            assert bytes(reply) == source[9 * BS : 12 * BS]
            assert store.statistics()["torn_detected"] == 1
            assert stats.counters["bytes.fetched"] == BS  # block 10 alone, from the origin
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()


async def test_the_disk_store_hands_back_each_block_it_has_written(tmp_path: Path) -> None:
    """Once written, each block of a run goes to the block cache's pool (`hand_back_to`), once, and the list
    it came in is the caller's still."""
    store = DiskStore(tmp_path / "cache", capacity=64 * BS, block_size=BS, stats=Stats())
    key = FileKey("t", "v1", "sm:3:1.0")
    handed: list[bytes] = []
    blocks = [bytearray(os.urandom(BS)) for _ in range(3)]
    async with running(store):
        store.hand_back_to(handed.append)
        await store.put_run(key, 0, blocks, 3 * BS)
        await store.drain()
        assert sorted(map(id, handed)) == sorted(map(id, blocks)) and len(blocks) == 3
        got = await store.get_run(key, 0, 2, 3 * BS)
    assert [got[index] for index in range(3)] == blocks
