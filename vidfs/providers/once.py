"""Values asked for once per key during a scan, as the scan first meets each key.

A provider's list may name a related object by id only (AIPIX archives name their camera; the camera's
display name is another call). The list's pages arrive concurrently, and the first page to name a key asks
for its value while the other pages that name it wait for that same answer (single flight), so each key is
asked once per scan, at most `concurrency` keys at once, and a page's entries are made whole as it arrives.
(AIPIX made its entries without the camera name and again with it once the last page came: 100,000 videos,
and their metadata maps, built twice.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

import trio


class AskedOnce:
    """`values[key]` once `learn` has returned for it; `ask(key)` is called at most once per key unless it
    failed (a later `learn` of that key asks again)."""

    def __init__(
        self, ask: Callable[[str], Awaitable[str]], *, concurrency: int, known: Mapping[str, str] = {}
    ) -> None:
        self._ask = ask
        self.values: dict[str, str] = dict(known)
        self._asked: dict[str, trio.Event] = {}
        self._limiter = trio.CapacityLimiter(concurrency)

    async def learn(self, keys: Iterable[str]) -> None:
        """Until each of `keys` has its value; a failure of `ask` is raised."""
        missing = sorted({key for key in keys if key not in self.values})
        if missing:
            async with trio.open_nursery() as nursery:
                for key in missing:
                    nursery.start_soon(self._learn_one, key)

    async def _learn_one(self, key: str) -> None:
        asked = self._asked.get(key)
        if asked is not None:  # another caller is asking: its answer is this one's too
            await asked.wait()
            if key in self.values:
                return
        asked = self._asked[key] = trio.Event()
        try:
            async with self._limiter:
                self.values[key] = await self._ask(key)
        finally:
            asked.set()
