"""What background work is started with: anything with a nursery's `start_soon`.

A trio nursery is one; so is the supervisor's `TaskGuard` (vidfs.daemon.supervisor), which a mount gives
the block cache, `VideoFS` and the listing cache so that a failure of their background work is logged and
counted instead of ending the mount. Typed here, in a leaf module, so that those parts need not import the
daemon that runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Spawner(Protocol):
    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None: ...
