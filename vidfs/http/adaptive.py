"""How many requests of one kind one origin gets at once: a window that adapts like TCP's congestion window.

Used for the size probes of a storage origin (`vidfs.catalog.probes`) and for the API calls of an API origin
(`HttpClient`'s "api" slots). A listing of 10,000 videos that needs a request each is bound by round trips:
at 20 ms, 8 requests in flight are at most 400 a second, and the CPU of this daemon allows about three times
that. So the window:
- starts at `start` and grows by one each time a window's worth of requests answered no slower than twice
  the fastest answer seen (more in flight costs nothing while the server keeps up), up to `highest`;
- shrinks by a quarter when answers slow down to three times the fastest, at most once per window's worth
  of answers (as TCP halves once per round trip, not per lost segment): a pause of this daemon (a snapshot
  save holding the GIL for a moment) slows every answer in flight at once, and shrinking on each of them took
  the HEAD window of a 10,000-video walk from 50 to 12 in one such pause, and the walk's rate with it; and
  never below `steady` by slowness alone (API calls differ in cost: a page of records takes longer than a
  token refresh, and must not drive the window below what a fixed limit would have allowed);
- halves on a 429 or 503, down to `lowest`, and pauses the origin for the server's `Retry-After` (else a
  doubling backoff), both capped as the retry policy caps them (`MAX_RETRY_AFTER`): a server that says
  "too many" gets fewer at once, and none until it said it is ready.
"""

from __future__ import annotations

import math

import trio

from vidfs.http.policy import MAX_RETRY_AFTER

START, LOWEST, HIGHEST = 8, 1, 64
SLOW, SLOWER = 2.0, 3.0  # an answer this many times the fastest one: hold (2×), shrink (3×)
CONGESTED = frozenset({429, 503})


class AdaptiveLimit:
    """A `trio.CapacityLimiter` (`limiter`) whose size follows the answers (see the module's essay)."""

    def __init__(
        self, start: int = START, lowest: int = LOWEST, highest: int = HIGHEST, steady: int | None = None
    ) -> None:
        self.lowest, self.highest = lowest, max(lowest, highest)
        self.steady = lowest if steady is None else max(lowest, min(steady, self.highest))
        self.limiter = trio.CapacityLimiter(max(lowest, min(start, self.highest)))
        self.fastest = math.inf
        self.calm = 0  # fast answers since the limit last changed
        self.held = 0  # answers still to come from calls sent before the last shrink
        self.paused_until = 0.0
        self.congestions = 0

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    def _set(self, limit: int) -> None:
        self.limiter.total_tokens = max(self.lowest, min(self.highest, limit))
        self.calm = 0

    def answered(self, seconds: float) -> None:
        self.fastest = min(self.fastest, seconds)
        # Answers to calls sent before the last shrink (the others in flight then) tell nothing of the limit
        # it set.
        held, self.held = self.held > 0, max(0, self.held - 1)
        if seconds > SLOWER * self.fastest:
            if self.limit > self.steady and not held:
                self.held = self.limit - 1
                self._set(max(self.steady, self.limit * 3 // 4))
        elif seconds <= SLOW * self.fastest:
            self.calm += 1
            if self.calm >= self.limit:
                self._set(self.limit + 1)

    def congested(self, retry_after: float | None) -> float:
        """A 429/503: halve, and pause this origin; returns the pause."""
        self.congestions += 1
        self._set(self.limit // 2)
        backoff = 0.5 * 2 ** min(self.congestions, 6)
        # A server's hint is honoured up to the retry policy's cap, as its retries are: an hour's
        # `Retry-After` must not stop every call to that origin for an hour.
        pause = min(MAX_RETRY_AFTER, backoff if retry_after is None else retry_after)
        self.paused_until = max(self.paused_until, trio.current_time() + pause)
        return pause

    async def wait_if_paused(self) -> None:
        while (left := self.paused_until - trio.current_time()) > 0:
            await trio.sleep(left)

    def relieved(self) -> None:
        self.congestions = 0
