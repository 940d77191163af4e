"""What background work is started with: anything with a nursery's `start_soon`; `for_each`, the one
way a long list of calls runs concurrently; `STEP`, how work tells whoever waits for it that it moves; and
`Holding`, how the hot paths hold a lock or a slot; and `Lull`, how work that can wait lets the kernel's
requests go first.

A trio nursery is one; so is the supervisor's `TaskGuard` (vidfs.daemon.supervisor), which a mount gives
the block cache, `VideoFS` and the listing cache so that a failure of their background work is logged and
counted instead of ending the mount. Typed here, in a leaf module, so that those parts need not import the
daemon that runs them.
"""

from __future__ import annotations

import math
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


class Lull:
    """When the file system last answered the kernel (`busy`), and a wait for a pause in that (`wait`).

    Why. A remount serves every listing from its snapshot at once; those older than `metadata_ttl` are also
    listed again, in the background (`vidfs.catalog.listings`). That background work shares the daemon's
    one thread with the kernel's requests, so it came in the middle of the first walk: `ls -lR` of 100,000
    AIPIX videos after a remount took 3.5-3.7 s with a snapshot younger than the TTL, and 10.5-19.7 s with
    an older one (8.8-17.1 s of the daemon's CPU during it, and requests to the vendor before it ended).
    Work that can wait (a listing already served) waits for `quiet` seconds without a request, or
    `longest` at most, so a walker gets its answers first, and the vendor is asked after: that `ls -lR` then
    took as long with an old snapshot as with a young one (3.3-4.2 s both, alternated). The mount's
    `quiet` (`refresh_idle`) is 2 s: `ls -lR` reads a directory of 100,000 entries through the daemon, then
    stats and sorts them from the kernel's cache, about a second without a request; with 0.5 s the
    refreshes began there, and that `ls -lR` took as long as without a wait.

    How. One service (`run`) watches the clock while anyone waits, and wakes the waiters at the lull, each
    once. (The listing cache waits with one task for all its queued refreshes: a remount of VALT records
    a day later queues one per record directory walked.) Without the service running (a `vidfs ls`, no
    mount) nothing waits."""

    __slots__ = ("_lull", "_running", "_wanted", "last", "quiet")

    MAX_TURNS = 1_000_000  # the service's looks at the clock for one lull (each follows a request)

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet  # 0: no wait
        self.last = -math.inf
        self._running = False
        self._wanted = trio.Event()  # someone waits for the next lull
        self._lull = trio.Event()  # set at the next lull

    def busy(self) -> None:
        """A request of the kernel's is being answered."""
        self.last = trio.current_time()

    def pending(self) -> bool:
        """Whether `wait` would wait: the service runs and the last request was less than `quiet` ago."""
        return self._running and self.last + self.quiet > trio.current_time()

    async def wait(self, longest: float) -> bool:
        """Until `quiet` seconds without a request, or `longest`; True if there was a wait at all."""
        if not self.pending():
            return False
        self._wanted.set()
        with trio.move_on_after(longest):
            await self._lull.wait()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the waiters at each lull, until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wanted.wait()
                for _ in range(self.MAX_TURNS):
                    due = self.last + self.quiet
                    if due <= trio.current_time():
                        break
                    await trio.sleep_until(due)
                lull, self._lull, self._wanted = self._lull, trio.Event(), trio.Event()
                lull.set()
        finally:
            self._running = False
            self._lull.set()  # nothing waits for a service that is gone


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
