"""Counters the daemon keeps about itself (requests, cache, renewals, errors, latencies); read by
`vidfs stats` and, at scrape time, by the Prometheus endpoint (`vidfs.daemon.metrics`).

Everything here is touched only from the trio thread: the metrics endpoint, which answers in threads of its
own, takes a snapshot through `trio.from_thread`, so no lock is needed and a counter costs a dict update.
"""

from __future__ import annotations

import bisect
import math
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# Upper bounds (seconds) of the latency histograms: from a memory hit (tens of µs) to a slow vendor.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket (`bounds` are upper bounds, inclusive; one more bucket for +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    @classmethod
    def with_bounds(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def as_dict(self) -> dict[str, Any]:
        """Cumulative buckets as Prometheus counts them: `[upper bound, observations <= it]`, "+Inf" last."""
        running = 0
        buckets: list[list[Any]] = []
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += count
            buckets.append([bound if bound != math.inf else "+Inf", running])
        return {"count": running, "sum": self.total, "buckets": buckets}


class _Timer:
    """Observes the seconds its `with` (or `async with`) body took, whether it returned or raised."""

    __slots__ = ("_histogram", "_started")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._histogram.observe(time.perf_counter() - self._started)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, value, tb)


@dataclass
class Stats:
    started_at: float = field(default_factory=time.time)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tag, status) → count
    counters: Counter[str] = field(default_factory=Counter)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    # Named sections computed when the document is made (e.g. "services": the supervisor's statistics()).
    sections: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def count_request(self, tag: str, status: int | str) -> None:
        self.requests[(tag, str(status))] += 1

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def histogram(self, name: str, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        found = self.histograms.get(name)
        if found is None:
            found = self.histograms[name] = Histogram.with_bounds(bounds)
        return found

    def observe(self, name: str, value: float) -> None:
        """One observation (seconds, by default buckets) of the histogram `name`."""
        self.histogram(name).observe(value)

    def timed(self, name: str) -> _Timer:
        """`with stats.timed("fuse.read"):` (or `async with`): the body's duration, observed in `name`."""
        return _Timer(self.histogram(name))

    def add_section(self, name: str, statistics: Callable[[], Any]) -> None:
        """Show `statistics()` under `name` in every snapshot (and so in `vidfs stats --json`)."""
        self.sections[name] = statistics

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "started_at": round(self.started_at, 3),
            "uptime_s": round(time.time() - self.started_at, 3),
            "max_rss_kib": usage.ru_maxrss,
            "requests": [
                {"tag": tag, "status": status, "count": count}
                for (tag, status), count in sorted(self.requests.items())
            ],
            "counters": dict(sorted(self.counters.items())),
            "histograms": {name: h.as_dict() for name, h in sorted(self.histograms.items())},
            **{name: statistics() for name, statistics in self.sections.items()},
        }
