"""Counters the daemon keeps about itself (requests, cache, renewals, errors); read by `vidfs stats`."""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    started_at: float = field(default_factory=time.time)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tag, status) → count
    counters: Counter[str] = field(default_factory=Counter)
    # Named sections computed when the document is made (e.g. "services": the supervisor's statistics()).
    sections: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def count_request(self, tag: str, status: int | str) -> None:
        self.requests[(tag, str(status))] += 1

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def add_section(self, name: str, statistics: Callable[[], Any]) -> None:
        """Show `statistics()` under `name` in every snapshot (and so in `vidfs stats --json`)."""
        self.sections[name] = statistics

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "max_rss_kib": usage.ru_maxrss,
            "requests": [
                {"tag": tag, "status": status, "count": count}
                for (tag, status), count in sorted(self.requests.items())
            ],
            "counters": dict(sorted(self.counters.items())),
            **{name: statistics() for name, statistics in self.sections.items()},
        }
