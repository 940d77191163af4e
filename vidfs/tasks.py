"""What background work is started with: anything with a nursery's `start_soon`; `for_each`, the one
way a long list of calls runs concurrently; `STEP`, how work tells whoever waits for it that it moves; and
`Holding`, how the hot paths hold a lock or a slot.

A trio nursery is one; so is the supervisor's `TaskGuard` (vidfs.daemon.supervisor), which a mount gives
the block cache, `VideoFS` and the listing cache so that a failure of their background work is logged and
counted instead of ending the mount. Typed here, in a leaf module, so that those parts need not import the
daemon that runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


# Told of each step of the work running in this context (an HTTP answer: `HttpClient` calls `stepped`). A
# listing fetch sets it for its provider's call, so a FUSE request waiting for a listing that is slow but
# moving keeps moving its deadline (a Pixop project of 1,000 videos is 1,000 detail calls, and with 100
# projects sharing the API window one was still arriving after the 30 s request timeout: EIO). Tasks a
# provider starts inside its call inherit it; a stuck listing still fails one request timeout after its
# last step.
Progress = Callable[[], None]  # told of each step of a wait that is not stuck
STEP: ContextVar[Progress | None] = ContextVar("vidfs_step", default=None)


def stepped() -> None:
    """Tell whoever waits for the work running here that it made a step."""
    hook = STEP.get()
    if hook is not None:
        hook()


class _Acquirable(Protocol):
    def acquire_nowait(self) -> None: ...
    async def acquire(self) -> None: ...
    def release(self) -> None: ...


class Holding:
    """`async with Holding(lock or limiter)`: held for the block, and taken without a wait when it is free.

    trio's own `async with` yields to the scheduler even then: every trio call that may wait is a
    checkpoint. A cold walk of VALT records paid that on each record's API calls and HEAD (their origin's
    slot) and lease (its lock), a scheduler pass each with nothing to wait for: 4% of the daemon's CPU
    (10,000 records, 0 ms, 3 runs each: 7.05 -> 6.77 s). What follows such a block is a request, whose
    answer is waited for: that wait is the checkpoint (where a cancellation lands), so none is missed."""

    __slots__ = ("_sync",)

    def __init__(self, sync: _Acquirable) -> None:
        self._sync = sync

    async def __aenter__(self) -> None:
        try:
            self._sync.acquire_nowait()
        except trio.WouldBlock:
            await self._sync.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._sync.release()


class Spawner(Protocol):
    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None: ...


async def for_each(items: Iterable[T], call: Callable[[T], Awaitable[object]], *, workers: int) -> None:
    """`call(item)` for every item, `workers` at a time, by that many tasks taking items from one iterator:
    not a task per item (a camera of 100,000 archives started 100,000 tasks at once, 887 MiB of RSS)."""
    todo = iter(items)
    if workers <= 1:  # in this task: no nursery and task (a VALT record's one video, 10,000 records)
        for item in todo:
            await call(item)
        return

    async def worker() -> None:
        for item in todo:  # shared: each item is taken by one worker
            await call(item)

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, workers)):
            nursery.start_soon(worker)
