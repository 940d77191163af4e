"""What background work is started with: anything with a nursery's `start_soon`; and `for_each`, the one
way a long list of calls runs concurrently.

A trio nursery is one; so is the supervisor's `TaskGuard` (vidfs.daemon.supervisor), which a mount gives
the block cache, `VideoFS` and the listing cache so that a failure of their background work is logged and
counted instead of ending the mount. Typed here, in a leaf module, so that those parts need not import the
daemon that runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class Spawner(Protocol):
    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None: ...


async def for_each(items: Iterable[T], call: Callable[[T], Awaitable[object]], *, workers: int) -> None:
    """`call(item)` for every item, `workers` at a time, by that many tasks taking items from one iterator:
    not a task per item (a camera of 100,000 archives started 100,000 tasks at once, 887 MiB of RSS)."""
    todo = iter(items)

    async def worker() -> None:
        for item in todo:  # shared: each item is taken by one worker
            await call(item)

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, workers)):
            nursery.start_soon(worker)
