"""A circuit breaker for the shared tier: after repeated failures, stop asking for a while, then probe.

Closed: every call goes to Redis. `FAILURES_TO_OPEN` failures in a row (errors or timeouts) open it; a
timeout of a call that was already in flight when a failure was counted counts as that one failure (a stall
of the host, not of Redis, times out every call in flight at once: on the fleet bench's 2 cores, four
mounts opened their breakers on such stalls and read 2.6× the file from the origin). Open: for a
backoff period (1 s doubling to 30 s, each drawn between half and all of it) no call is made: every lookup
is a miss at once, so a dead or paused Redis costs readers nothing after the first few `timeout`s. When the
period is over, the next call is the probe (half-open; other calls still miss meanwhile): when it works the
breaker closes and the backoff starts from the beginning again; when it fails it opens for the next, longer
period. The clock is trio's.
"""

from __future__ import annotations

import math
import random
from enum import Enum

import trio

FAILURES_TO_OPEN = 3
BACKOFF_FIRST, BACKOFF_LONGEST = 1.0, 30.0


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    def __init__(
        self,
        *,
        failures_to_open: int = FAILURES_TO_OPEN,
        first: float = BACKOFF_FIRST,
        longest: float = BACKOFF_LONGEST,
        rng: random.Random | None = None,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.first = first
        self.longest = longest
        self.state = State.CLOSED
        self._rng = rng or random.Random()
        self._failures = 0  # in a row
        self._last_failure = -math.inf  # when the last one was counted (trio clock)
        self._opened_times = 0  # in a row, for the backoff
        self._retry_at = 0.0
        self.opens = 0
        self.closes = 0
        self.probes = 0

    def allow(self) -> bool | None:
        """May a call go to Redis now? None: no. False: yes, a normal call. True: yes, and it is the probe
        (the first call once the backoff is over). Hand the answer to `success` / `failure`."""
        if self.state is State.CLOSED:
            return False
        if self.state is State.OPEN and trio.current_time() >= self._retry_at:
            self.state = State.HALF_OPEN
            self.probes += 1
            return True
        return None

    def due(self) -> bool:
        """An open breaker whose backoff is over (the next call will be its probe)."""
        return self.state is State.OPEN and trio.current_time() >= self._retry_at

    def success(self, probe: bool = False) -> None:
        """A call answered. Only the probe closes an open breaker: a call that started before it opened
        and happened to reach a node that works says nothing about the others."""
        if self.state is State.CLOSED:
            self._failures = 0
        elif probe:
            self.state = State.CLOSED
            self._failures = 0
            self._opened_times = 0
            self.closes += 1

    def failure(self, probe: bool = False, started: float | None = None) -> bool:
        """Count a failure of a call that began at `started` (trio clock; None: count it); True when it
        opened the breaker (the caller logs that once). A call that began before the last counted failure
        overlapped it and counts with it; failures of calls that started before the breaker opened change
        nothing more."""
        if self.state is State.CLOSED:
            now = trio.current_time()
            if started is not None and started < self._last_failure:
                return False
            self._last_failure = now
            self._failures += 1
            if self._failures >= self.failures_to_open:
                self._open()
                return True
        elif self.state is State.HALF_OPEN and probe:
            self._open()
        return False

    def trip(self) -> None:
        """Open now (the connection itself is gone): counted as an opening when it was closed."""
        if self.state is State.CLOSED:
            self._open()
        else:
            self.state = State.OPEN

    def _open(self) -> None:
        self.state = State.OPEN
        self._failures = 0
        self._opened_times += 1
        if self._opened_times == 1:
            self.opens += 1
        ceiling = min(self.longest, self.first * 2 ** min(self._opened_times - 1, 30))
        self._retry_at = trio.current_time() + self._rng.uniform(ceiling / 2, ceiling)

    @property
    def failed_probes(self) -> int:
        """Probes that failed since the breaker last opened (a reason to connect afresh)."""
        return max(0, self._opened_times - 1)

    def statistics(self) -> dict[str, int | str]:
        return {"state": self.state.value, "opens": self.opens, "closes": self.closes, "probes": self.probes}
