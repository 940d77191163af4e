"""`Holding` and the resolver's per-video locks: a free lock or slot is taken without letting another task
run first, a held one is waited for, and a waiter cancelled meanwhile leaves nothing held or behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from vidfs.io.leases import Resolver
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.stats import Stats
from vidfs.tasks import Holding


@pytest.mark.parametrize("make", [trio.Lock, lambda: trio.CapacityLimiter(1)], ids=["lock", "limiter"])
async def test_a_free_one_is_taken_before_any_other_task_runs(make: Callable[[], Any]) -> None:
    sync = make()
    order: list[str] = []

    async def note(what: str) -> None:
        order.append(what)

    # trio's own `async with` yields first: then either task may run first (trio shuffles its batches), so
    # a yield shows at least once in 16 rounds but for a chance of 2**-16.
    for _ in range(16):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(note, "other task")  # runs at the first yield of this task
            async with Holding(sync):
                order.append("held")
    assert order == ["held", "other task"] * 16


@pytest.mark.parametrize("make", [trio.Lock, lambda: trio.CapacityLimiter(1)], ids=["lock", "limiter"])
async def test_a_held_one_is_waited_for_and_given_back_after_an_error(make: Callable[[], Any]) -> None:
    sync = make()
    order: list[str] = []
    release = trio.Event()

    async def first() -> None:
        async with Holding(sync):
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def second() -> None:
        with pytest.raises(KeyError):
            async with Holding(sync):
                order.append("second in")
                raise KeyError("an error inside gives the lock back")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first in"]  # the second waits
        release.set()
    assert order == ["first in", "first out", "second in"]
    async with Holding(sync):  # free again
        pass


class SlowProvider:
    """Resolves a URL once `go` is set, counting the calls."""

    def __init__(self) -> None:
        self.go = trio.Event()
        self.calls = 0

    def root(self) -> Folder:
        return Folder("root", "p")

    async def list(self, folder: Folder) -> Listing:
        raise AssertionError("not used")

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        self.calls += 1
        await self.go.wait()
        return StreamLease(f"http://storage.test/{video.remote_id}", expires_at=None)

    async def aclose(self) -> None:
        return None


async def test_a_video_is_resolved_once_and_its_lock_goes_even_after_a_cancelled_waiter() -> None:
    resolver, provider, video = Resolver(Stats()), SlowProvider(), Video("7", "7.mp4")
    leases: list[StreamLease] = []

    async def lease() -> None:
        leases.append(await resolver.lease("p", provider, video))

    cancelled = trio.CancelScope()

    async def gives_up() -> None:  # a reader that gives up while another resolves
        with cancelled:
            await resolver.lease("p", provider, video)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lease)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lease)
        nursery.start_soon(gives_up)
        await trio.testing.wait_all_tasks_blocked()
        assert resolver.statistics()["resolving"] == 1
        cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert resolver.statistics()["resolving"] == 1  # still held by the first, waited for by one
        provider.go.set()
    assert cancelled.cancelled_caught
    assert provider.calls == 1  # the second waiter found the first one's lease
    assert [lease.url for lease in leases] == ["http://storage.test/7"] * 2
    assert resolver.statistics()["resolving"] == 0  # no lock left behind
    assert await resolver.lease("p", provider, video) is leases[0]
