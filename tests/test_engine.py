"""Unit tests of the engine pieces: prefetch decisions, the block cache's single flight, range checks."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from vidfs.config.types import HttpSettings
from vidfs.emulator.server import Request, Site, serve_file
from vidfs.errors import StaleError
from vidfs.http.client import HttpClient
from vidfs.io.block_cache import BlockCache
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import read_range
from vidfs.io.readahead import ASK_FRACTION, Readahead
from vidfs.io.remote_file import RemoteFile
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.providers.auth import expiry_from_url, jwt_expiry
from vidfs.stats import Stats

KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB


# ------------------------------------------------------------------------------------------ prefetch
def test_window_grows_while_sequential_and_resets_on_seek() -> None:
    p = Readahead(block_size=64 * KiB, max_window=1 * MiB, quiet_bytes=0)
    size = 100 * MiB
    assert p.on_read(0, 128 * KiB, size) is None  # a new cursor prefetches nothing yet
    windows = []
    offset = 128 * KiB
    for _ in range(8):
        p.on_read(offset, 128 * KiB, size)
        windows.append(p.cursors[0].window)
        offset += 128 * KiB
    assert windows == sorted(windows) and windows[-1] == 1 * MiB and windows[0] < windows[-1]
    # A seek far away starts a new cursor with a one-block window.
    assert p.on_read(50 * MiB, 128 * KiB, size) is None
    assert len(p.cursors) == 2 and p.cursors[1].window == 64 * KiB


def test_independent_cursors_do_not_reset_each_other() -> None:
    p = Readahead(block_size=64 * KiB, max_window=4 * MiB, max_cursors=4, quiet_bytes=0)
    size = 1000 * MiB
    starts = [0, 300 * MiB, 600 * MiB, 900 * MiB]
    positions = list(starts)
    for _ in range(20):  # four interleaved sequential readers, 2.5 MiB each
        for i in range(4):
            p.on_read(positions[i], 128 * KiB, size)
            positions[i] += 128 * KiB
    assert len(p.cursors) == 4
    assert all(c.window == 4 * MiB for c in p.cursors)
    # A fifth stream evicts only the least recently used cursor.
    p.on_read(100 * MiB, 128 * KiB, size)
    assert len(p.cursors) == 4
    assert sum(c.window == 4 * MiB for c in p.cursors) == 3


def test_prefetch_range_is_issued_in_large_steps() -> None:
    """Asks are contiguous, fewer than the reads, and once the window is whole each is at least an
    `ASK_FRACTION` of it, ahead of the reader by nearly the whole window."""
    p = Readahead(block_size=64 * KiB, max_window=8 * MiB, quiet_bytes=0)
    size = 100 * MiB
    issued = []
    offset = 0
    lowest_ahead = size  # the least asked for ahead of the reader once its window is whole
    for _ in range(200):
        got = p.on_read(offset, 128 * KiB, size)
        offset += 128 * KiB
        if got:
            issued.append((got, offset))
        if offset >= 4 * MiB:
            lowest_ahead = min(lowest_ahead, max(c.ahead for c in p.cursors) - offset)
    for ((_, end), _), ((start, _), _) in itertools.pairwise(issued):
        assert start >= end
    assert len(issued) < 200 // 4
    whole = [(start, end, at) for (start, end), at in issued if at >= 4 * MiB]  # window 2 × read: whole
    assert whole and all(end - start >= 8 * MiB // ASK_FRACTION for start, end, _at in whole)
    assert lowest_ahead >= 6 * MiB  # the window stays nearly full (asking at half of it: 4 MiB)


def test_a_prober_gets_only_what_the_kernel_asks_for_until_it_reads_on() -> None:
    """Below `quiet_bytes` a cursor prefetches nothing (the kernel's readahead asks for what a prober
    reads); past it, the window follows the bytes read (twice them, capped)."""
    p = Readahead(block_size=64 * KiB, max_window=64 * MiB, quiet_bytes=4 * MiB)
    size = 1000 * MiB
    p.on_read(0, 128 * KiB, size)
    offset, read = 128 * KiB, 128 * KiB
    while offset + read < 4 * MiB:
        assert p.on_read(offset, read, size) is None
        offset += read
        read = min(2 * read, 1 * MiB)
    got = None
    for _ in range(8):  # a reader that goes on gets a window that grows with what it read
        got = p.on_read(offset, read, size) or got
        offset += read
    assert got is not None and got[1] - offset > 8 * MiB


# ------------------------------------------------------------------------------------- block cache
@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3 * MiB + 12345))
    return path


@pytest.fixture
def origin(blob: Path) -> Iterator[Site]:
    site = Site("test")

    def handler(req: Request) -> None:
        serve_file(
            req, blob, etag=hashlib.sha256(blob.read_bytes()).hexdigest()[:16], content_type="video/mp4"
        )

    site.add_route(("GET", "HEAD"), r"/blob", handler)
    site.start()
    try:
        yield site
    finally:
        site.close()


class _Provider:
    def __init__(self, url: str) -> None:
        self.url = url
        self.resolves = 0

    def root(self) -> Folder:
        return Folder("root", "root")

    async def list(self, folder: Folder) -> Listing:
        return Listing(())

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        self.resolves += 1
        return StreamLease(self.url)

    async def aclose(self) -> None:
        return None


def blob_file(provider: _Provider, video: Video, http: HttpClient, stats: Stats) -> RemoteFile:
    return RemoteFile(
        instance="t",
        provider=provider,
        video=video,
        size=video.size or 0,
        http=http,
        resolver=Resolver(stats),
    )


async def test_concurrent_readers_of_one_block_cause_one_request(origin: Site, blob: Path) -> None:
    stats = Stats()
    http = HttpClient(HttpSettings(retries=1), stats)
    provider = _Provider(origin.url + "/blob")
    video = Video("v1", "blob.mp4", size=blob.stat().st_size)
    source = blob.read_bytes()
    try:
        async with trio.open_nursery() as nursery:
            cache = BlockCache(memory_bytes=8 * MiB, block_size=64 * KiB, nursery=nursery, stats=stats)
            file = blob_file(provider, video, http, stats)
            results: list[bytes] = []

            async def reader() -> None:
                results.append(await cache.read(file, 70 * KiB, 1000))

            async with trio.open_nursery() as readers:
                for _ in range(16):
                    readers.start_soon(reader)
            assert results == [source[70 * KiB : 70 * KiB + 1000]] * 16
            # Reads spanning two blocks, and the tail of the file.
            assert await cache.read(file, 64 * KiB - 10, 20) == source[64 * KiB - 10 : 64 * KiB + 10]
            assert await cache.read(file, len(source) - 5, 100) == source[-5:]
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()
    gets = origin.log.entries(method="GET")
    block_one = [g for g in gets if g["headers"].get("range", "").startswith(f"bytes={64 * KiB}-")]
    assert len(block_one) == 1, gets
    assert provider.resolves == 1


@contextlib.asynccontextmanager
async def cached_blob(
    origin: Site, blob: Path, memory_blocks: int
) -> AsyncIterator[tuple[BlockCache, RemoteFile]]:
    """A block cache of `memory_blocks` 64 KiB blocks, and the origin's blob as a file to read through it."""
    stats = Stats()
    http = HttpClient(HttpSettings(retries=1), stats)
    video = Video("v1", "blob.mp4", size=blob.stat().st_size)
    try:
        async with trio.open_nursery() as nursery:
            cache = BlockCache(
                memory_bytes=memory_blocks * BLOCK, block_size=BLOCK, nursery=nursery, stats=stats
            )
            yield cache, blob_file(_Provider(origin.url + "/blob"), video, http, stats)
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()


async def test_blocks_read_whole_leave_the_memory_before_unread_ones(origin: Site, blob: Path) -> None:
    """A block a reader has had whole goes first (the page cache holds it); prefetched blocks not yet read,
    and a block read in part, stay. Plain recency would evict blocks 3 and 4 here, read next."""
    source, block = blob.read_bytes(), BLOCK
    async with cached_blob(origin, blob, 8) as (cache, file):
        assert await cache.read(file, 0, 8 * block, reader=False) == source[: 8 * block]  # "prefetched"
        assert await cache.read(file, 0, 2 * block) == source[: 2 * block]  # blocks 0, 1 whole
        assert await cache.read(file, 2 * block + 10, 1000) == source[2 * block + 10 : 2 * block + 1010]
        gets = len(origin.log.entries(method="GET"))
        assert await cache.read(file, 8 * block, 2 * block, reader=False) == source[8 * block : 10 * block]
        assert len(origin.log.entries(method="GET")) == gets + 1  # blocks 8, 9: two blocks evicted
        assert await cache.read(file, 2 * block, 6 * block) == source[2 * block : 8 * block]
        assert len(origin.log.entries(method="GET")) == gets + 1  # 2..7 still in memory
        assert await cache.read(file, 0, 100) == source[:100]
        assert len(origin.log.entries(method="GET")) == gets + 2  # block 0 was one of the two


async def test_a_block_still_held_is_never_received_into_again(origin: Site, blob: Path) -> None:
    """Blocks the memory lets go are received into again (`vidfs.io.block_pool`), but only those nothing
    else holds: two blocks a reply still holds (here, the test) keep their bytes while the whole file goes
    through a memory of four blocks, and every read gets the file's bytes."""
    source, block = blob.read_bytes(), BLOCK
    async with cached_blob(origin, blob, 4) as (cache, file):
        held = [await cache.read_reply(file, index * block, block) for index in (0, 1)]  # the blocks
        for offset in range(2 * block, len(source), 2 * block):  # not read whole: the two go first
            got = await cache.read(file, offset, 2 * block, reader=False)
            assert got == source[offset : offset + 2 * block]
        assert not cache.available(file.key, 0) and not cache.available(file.key, 1)
        assert [bytes(reply) for reply in held] == [source[:block], source[block : 2 * block]]
        assert cache.statistics()["pool_reused"] > 0


async def test_range_reader_detects_a_changed_file(origin: Site, blob: Path) -> None:
    http = HttpClient(HttpSettings(retries=1), Stats())
    try:
        lease = StreamLease(origin.url + "/blob")
        first = await read_range(http, lease, 0, 100, tag="t", etag=None, size=blob.stat().st_size)
        assert first.etag and first.data == blob.read_bytes()[:100]
        with pytest.raises(StaleError):
            await read_range(http, lease, 0, 100, tag="t", etag='"other"', size=blob.stat().st_size)
        with pytest.raises(StaleError):
            await read_range(http, lease, 0, 100, tag="t", etag=first.etag, size=blob.stat().st_size + 1)
    finally:
        await http.aclose()


async def test_range_reader_survives_faults(origin: Site, blob: Path) -> None:
    source = blob.read_bytes()
    http = HttpClient(HttpSettings(retries=4, backoff_base=0.01), Stats())
    lease = StreamLease(origin.url + "/blob")
    cases = [
        {"kind": "reset_after", "bytes": 1000, "count": 2},
        {"kind": "short_body", "bytes": 10, "count": 1},
        {"kind": "ignore_range", "count": 1},
        {"kind": "status", "status": 503, "count": 2},
        {"kind": "retry_after", "seconds": 0, "count": 1},
        {"kind": "wrong_content_range", "shift": 7, "count": 1},
    ]
    try:
        for rule in cases:
            origin.faults.set_rules([rule])
            got = await read_range(http, lease, 5000, 5000 + 300_000, tag="t", etag=None, size=len(source))
            assert got.data == source[5000:305_000], rule
            assert origin.faults.snapshot()["rules"][0]["fired"] >= 1, rule
    finally:
        origin.faults.set_rules([])
        await http.aclose()


# ------------------------------------------------------------------------------------------ leases
def test_expiry_from_signed_urls() -> None:
    import base64
    import json

    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1746565216}).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig"
    assert jwt_expiry(token) == 1746565216
    assert expiry_from_url(f"https://h:8000/d/1.mp4?filename=a.mp4&access_token={token}") == 1746565216
    assert expiry_from_url("https://s3/x?X-Amz-Date=20260101T000000Z&X-Amz-Expires=600") == 1767225600 + 600
    assert expiry_from_url("https://cdn/x?Expires=1800000000&Signature=abc") == 1800000000
    assert expiry_from_url("https://cdn/x") is None
