"""A stale listing's refresh waits for the file system to be idle (`vidfs.tasks.Lull`), in process.

The listing is served stale at once either way; what changes is when the vendor is asked: not while the
kernel keeps asking (a walk after a remount), at the first lull, never later than
`REFRESH_DEFERRED_AT_MOST`, and at once for someone who waits for a fresher answer. Time is trio's autojump
clock: "busy for 10 s" is a request every second of virtual time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from tests.test_catalog import FakeProvider, videos
from vidfs.catalog.listings import (
    BUSY_REFRESH_EVERY,
    BUSY_REFRESHES_AT_ONCE,
    REFRESH_DEFERRED_AT_MOST,
    REFRESHES_AT_ONCE,
    ListingCache,
)
from vidfs.model import Folder, Listing, Video
from vidfs.stats import Stats
from vidfs.tasks import Lull

QUIET = 2.0
ROOT = Folder("root", "fake")


async def kept_busy(lull: Lull, seconds: int) -> None:
    """A request every second for `seconds` (virtual) seconds."""
    for _ in range(seconds):
        lull.busy()
        await trio.sleep(1.0)


async def refreshed(provider: FakeProvider, calls: int) -> float:
    """The (virtual) time at which the vendor was asked `calls` times in all."""
    with trio.fail_after(3600):
        while provider.calls.get("root", 0) < calls:
            await trio.sleep(0.1)
    return trio.current_time()


@asynccontextmanager
async def serving(listings: ListingCache, *, lull_served: bool = True) -> AsyncIterator[trio.Nursery]:
    """A mount's background: the lull's service (unless not `lull_served`) and the listings' nursery."""
    async with trio.open_nursery() as nursery:
        if lull_served:
            await nursery.start(listings.lull.run)
        listings.attach(nursery)
        yield nursery
        nursery.cancel_scope.cancel()


def stale_root(stats: Stats | None = None) -> tuple[FakeProvider, ListingCache, Lull]:
    """The vendor (3 videos now), and listings that hold an older listing of it (2 videos) whose age is not
    known (stale, as after a remount), with their lull."""
    listings = ListingCache(ttl=300, negative_ttl=10, stats=stats or Stats(), lull=Lull(QUIET))
    listings.seed("fake", "root", Listing(tuple(videos(2))))
    return FakeProvider({"root": videos(3)}), listings, listings.lull


async def test_a_stale_listing_is_refreshed_at_the_first_lull_not_while_the_kernel_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stats = Stats()
    provider, listings, lull = stale_root(stats)
    async with serving(listings):
        lull.busy()
        served = await listings.listing("fake", provider, ROOT)  # type: ignore[arg-type]
        assert len(served.entries) == 2  # the stale one, at once
        await kept_busy(lull, 10)
        assert provider.calls == {}  # deferred all along the walk
        busy_until = lull.last
        asked_at = await refreshed(provider, 1)
        assert asked_at >= busy_until + QUIET  # after the lull, not before
        assert len((await listings.listing("fake", provider, ROOT)).entries) == 3  # type: ignore[arg-type]
    assert stats.counters["metadata.refreshes_deferred"] == 1


async def test_a_refresh_waits_for_a_lull_no_longer_than_its_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider, listings, lull = stale_root()
    async with serving(listings) as nursery:
        lull.busy()
        started = trio.current_time()
        await listings.listing("fake", provider, ROOT)  # type: ignore[arg-type]
        nursery.start_soon(kept_busy, lull, int(REFRESH_DEFERRED_AT_MOST * 3))  # never idle
        asked_at = await refreshed(provider, 1)
        assert asked_at - started <= REFRESH_DEFERRED_AT_MOST + 1
        assert lull.last + QUIET > asked_at  # still busy when it went


async def test_whoever_waits_for_a_fresher_listing_is_not_deferred(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider, listings, lull = stale_root()
    async with serving(listings) as nursery:
        nursery.start_soon(kept_busy, lull, 60)
        await trio.sleep(0.5)
        await listings.listing("fake", provider, ROOT)  # type: ignore[arg-type]  # stale: deferred
        await trio.sleep(5)
        assert provider.calls == {}
        # A name not in the listing: its caller waits for a fresher one, and the deferred fetch goes now.
        with trio.fail_after(1):
            fresh = await listings.listing("fake", provider, ROOT, max_age=0.0)  # type: ignore[arg-type]
        assert len(fresh.entries) == 3 and provider.calls == {"root": 1}


class CountingProvider(FakeProvider):
    """Tells how many of its listings were in flight at most, and in which order they were asked."""

    def __init__(self, folders: dict[str, list[Folder | Video]]) -> None:
        super().__init__(folders)
        self.in_flight = self.most_in_flight = 0
        self.order: list[str] = []

    async def list(self, folder: Folder) -> Listing:
        self.order.append(folder.remote_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().list(folder)
        finally:
            self.in_flight -= 1


async def test_queued_refreshes_go_in_order_after_the_lull_a_bounded_number_at_once_with_no_task_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folders = {f"d{i:03d}": videos(1, prefix=f"d{i}v") for i in range(300)}
    provider = CountingProvider(folders)
    provider.delay = 1.0
    lull = Lull(QUIET)
    listings = ListingCache(ttl=300, negative_ttl=10, stats=Stats(), lull=lull)
    async with serving(listings) as nursery:
        for name in folders:  # a walk over stale directories
            listings.seed("fake", name, Listing(()))
            lull.busy()
            await listings.listing("fake", provider, Folder(name, name))  # type: ignore[arg-type]
            await trio.sleep(0.01)
        await kept_busy(lull, 5)
        assert provider.calls == {}
        assert listings.statistics()["refreshes_queued"] == len(folders)
        assert len(nursery.child_tasks) <= 2  # the lull's service and the queue's drain: no task per refresh
        with trio.fail_after(60):
            while sum(provider.calls.values()) < len(folders):
                await trio.sleep(0.1)
    assert provider.calls == dict.fromkeys(folders, 1)
    assert provider.order == list(folders)  # oldest first
    assert 1 < provider.most_in_flight <= REFRESHES_AT_ONCE


@pytest.mark.parametrize("vendor_delay", [1.0, 0.001])  # a slow vendor (slots bind) and a fast one (the rate)
async def test_past_the_bound_a_walk_that_goes_on_gets_a_trickle_of_refreshes_and_the_lull_the_rest(
    autojump_clock: trio.testing.MockClock, vendor_delay: float
) -> None:
    # A walk longer than the bound (100,000 VALT records: a minute): the refreshes queued at its start are
    # due, but going 64 at a time would take its CPU; a few go at a time until it ends, the rest after.
    folders = {f"d{i:03d}": videos(1, prefix=f"d{i}v") for i in range(300)}
    provider = CountingProvider(folders)
    provider.delay = vendor_delay
    lull = Lull(QUIET)
    listings = ListingCache(ttl=300, negative_ttl=10, stats=Stats(), lull=lull)
    past_bound = 20
    async with serving(listings):
        for name in folders:
            listings.seed("fake", name, Listing(()))
            lull.busy()
            await listings.listing("fake", provider, Folder(name, name))  # type: ignore[arg-type]
        await kept_busy(lull, int(REFRESH_DEFERRED_AT_MOST) + past_bound)  # still asking past the bound
        during_walk = sum(provider.calls.values())
        assert 0 < during_walk < len(folders)  # a trickle went, not the queue
        assert during_walk <= past_bound / BUSY_REFRESH_EVERY + BUSY_REFRESHES_AT_ONCE
        assert provider.most_in_flight <= BUSY_REFRESHES_AT_ONCE
        with trio.fail_after(60):
            while sum(provider.calls.values()) < len(folders):
                await trio.sleep(0.1)
    assert provider.calls == dict.fromkeys(folders, 1)
    if vendor_delay >= 1.0:  # the lull: the rest at once
        assert BUSY_REFRESHES_AT_ONCE < provider.most_in_flight <= REFRESHES_AT_ONCE


async def test_without_its_service_nothing_waits_for_a_lull(autojump_clock: trio.testing.MockClock) -> None:
    # `vidfs ls` and `vidfs check` list without a mount: no one answers the kernel, so no lull is awaited.
    provider, listings, lull = stale_root()
    async with serving(listings, lull_served=False):
        lull.busy()
        await listings.listing("fake", provider, ROOT)  # type: ignore[arg-type]
        with trio.fail_after(0.5):
            await refreshed(provider, 1)
