"""Size probes in process (httpx MockTransport for storage, trio's virtual clock): the number in flight grows
while storage keeps up, halves and pauses on 429 with Retry-After, and every size is learned once."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from vidfs.catalog.probes import START, SizeProbes
from vidfs.config.types import HttpSettings
from vidfs.errors import NotFoundError
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.stats import Stats


class Storage:
    """HEAD answers with a size; `busy_until` makes it answer 429 (Retry-After 2) until that instant."""

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.heads: list[tuple[float, int]] = []  # (virtual time, status)

    def handle(self, request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        if now < self.busy_until:
            self.heads.append((now, 429))
            return httpx.Response(429, headers={"Retry-After": "2"})
        self.heads.append((now, 200))
        size = 1000 + int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, headers={"Content-Length": str(size), "ETag": f'"{size}"'})


class Provider:
    def root(self) -> Folder:
        return Folder("root", "p")

    async def list(self, folder: Folder) -> Listing:
        raise AssertionError("not used")

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        return StreamLease(f"http://storage.test/v/{video.remote_id}")

    async def aclose(self) -> None:
        return None


def probes_over(storage: Storage) -> tuple[SizeProbes, Stats]:
    stats = Stats()
    http = HttpClient(HttpSettings(retries=0), stats, transport=httpx.MockTransport(storage.handle))
    return SizeProbes(http=http, resolver=Resolver(stats), stats=stats), stats


async def probe_all(probes: SizeProbes, count: int) -> dict[str, int]:
    sizes: dict[str, int] = {}

    async def one(i: int) -> None:
        sizes[str(i)] = (await probes.probe("p", Provider(), Video(str(i), f"{i}.mp4"))).size

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return sizes


async def test_probes_grow_while_storage_keeps_up(autojump_clock: trio.testing.MockClock) -> None:
    storage = Storage()
    probes, _stats = probes_over(storage)
    sizes = await probe_all(probes, 2_000)
    assert sizes == {str(i): 1000 + i for i in range(2_000)}
    assert len(storage.heads) == 2_000  # one HEAD per video
    assert probes.statistics()["concurrency"] > START


async def test_probes_back_off_on_429_and_wait_for_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = Storage()
    probes, stats = probes_over(storage)
    await probe_all(probes, 200)  # grown a little
    grown = probes.statistics()["concurrency"]
    storage.busy_until = trio.current_time() + 1.0
    started = trio.current_time()
    sizes = await probe_all(probes, 300)
    assert len(sizes) == 300
    refusals = [t for t, status in storage.heads if status == 429]
    assert refusals and stats.counters["metadata.probe_congestion"] == len(refusals)
    # After the first 429, nobody asked again before its Retry-After (2 s) was over: the 429s are the
    # probes that were already in flight when the first answer came.
    first = min(refusals)
    asked_too_soon = [t for t, status in storage.heads if first < t < first + 2.0 and status == 200]
    assert not asked_too_soon
    assert len(refusals) <= grown
    assert probes.statistics()["concurrency"] < grown
    assert trio.current_time() - started >= 2.0  # virtual time: the pause really happened


async def test_a_vanished_video_is_not_found_after_one_fresh_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked: list[str] = []

    def gone(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(410)

    stats = Stats()
    http = HttpClient(HttpSettings(retries=0), stats, transport=httpx.MockTransport(gone))
    probes = SizeProbes(http=http, resolver=Resolver(stats), stats=stats)
    with pytest.raises(NotFoundError):
        await probes.probe("p", Provider(), Video("7", "7.mp4"))
    assert len(asked) == 2  # the first URL, then one fresh one
