"""How many parallel ranged streams a sequential reader gets: decided from measured throughput.

Why
---
At a 20 ms round trip one TCP stream is capped by its window, not by the link: the bytes in flight of one
connection bound its rate. Several ranged GETs of one file at once (a window split into runs) fill the link
where one cannot. More streams also cost: a request per run, a connection each, CPU per request. So the
number is measured, not fixed: at 0 ms one stream may carry all a host can take, at 20 ms several are
needed, and a reader that consumes slowly (a player) gains nothing from more.

How
---
Per provider instance (its storage origin), `StreamPlanner` keeps a stream count, starting at 2. Downloads
report their bytes as they end; every `PERIOD_BYTES` (and at least `PERIOD_SECONDS`) the aggregate rate of
the period is compared with the rate measured at one stream fewer: a gain of more than `GAIN` adds a
stream (up to the origin's connection limit, `[http] max_connections_per_host`); a loss goes back one;
otherwise the count holds. Rates are smoothed (EWMA) so one slow period does not swing the count.

The block cache asks `run_bytes(instance)` when it cuts a prefetch window into runs: the reader's window
divided by the stream count, between `MIN_RUN` and the largest request. So with one stream a 16 MiB
window is two 8 MiB runs (one in flight while the next is asked for), with eight it is eight runs of 2 MiB
at once. A demand read (a reader waiting for its bytes) is never cut finer than the largest request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

START_STREAMS = 2
MIN_RUN = 1 << 20
PERIOD_BYTES = 32 << 20
PERIOD_SECONDS = 0.25
GAIN = 1.10  # a rate this much higher than one stream fewer earned the extra stream
SMOOTHING = 0.5  # weight of a new measurement in the rate kept for a stream count


@dataclass(slots=True)
class _Origin:
    streams: int = START_STREAMS
    period_bytes: int = 0
    period_start: float | None = None
    rates: dict[int, float] = field(default_factory=dict)  # stream count → smoothed bytes per second

    def measure(self, rate: float) -> None:
        old = self.rates.get(self.streams)
        self.rates[self.streams] = rate if old is None else (1 - SMOOTHING) * old + SMOOTHING * rate


class StreamPlanner:
    def __init__(self, *, max_streams: int, window: int, max_run: int) -> None:
        self.max_streams = max(1, max_streams)
        self.window = window
        self.max_run = max(MIN_RUN, max_run)
        self._origins: dict[str, _Origin] = {}

    def _origin(self, instance: str) -> _Origin:
        origin = self._origins.get(instance)
        if origin is None:
            origin = self._origins[instance] = _Origin(streams=min(START_STREAMS, self.max_streams))
        return origin

    def streams(self, instance: str) -> int:
        return self._origin(instance).streams

    def run_bytes(self, instance: str) -> int:
        """How long a prefetch run of this instance's files is."""
        share = self.window // self._origin(instance).streams
        return max(MIN_RUN, min(self.max_run, share))

    def downloaded(self, instance: str, nbytes: int) -> None:
        """A download of `nbytes` ended; every period, the stream count is reconsidered."""
        origin = self._origin(instance)
        now = trio.current_time()
        if origin.period_start is None:
            origin.period_start = now
        origin.period_bytes += nbytes
        elapsed = now - origin.period_start
        if origin.period_bytes < PERIOD_BYTES or elapsed < PERIOD_SECONDS:
            return
        origin.measure(origin.period_bytes / elapsed)
        origin.period_bytes, origin.period_start = 0, now
        self._decide(origin)

    def _decide(self, origin: _Origin) -> None:
        rate = origin.rates[origin.streams]
        fewer = origin.rates.get(origin.streams - 1)
        more = origin.rates.get(origin.streams + 1)
        paid_off = fewer is None or rate > fewer * GAIN
        if fewer is not None and rate * GAIN < fewer:
            origin.streams -= 1  # the last stream added made things worse
        elif origin.streams < self.max_streams and paid_off and (more is None or more > rate):
            origin.streams += 1  # it paid off so far, or one more was better before: try it

    def statistics(self) -> dict[str, int]:
        return {f"streams.{instance}": origin.streams for instance, origin in self._origins.items()}
