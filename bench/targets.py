"""Issue 13's "What it must show", checked against one table: each target met, not met, or n/a (a figure
it needs was not measured), with the figures that decide it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.report import CHECKS, Summary

# Issue 13 measured (f) at 79–94 MB/s before its work; the target is 5× that (of the better figure).
F_BEFORE_MBPS = 94.0
F_CPU_PER_GB = 1.0
PROBE_MB, PROBE_REQUESTS, PROBE_TIME = 3.0, 6, 1.1
RANDOM_P50, RANDOM_BYTES = 1.2, 2.0
WARM_MBPS, RSS_MIB = 1500.0, 100.0


@dataclass(frozen=True)
class Target:
    what: str
    met: bool | None  # None: a figure it needs is missing
    figures: str

    @property
    def mark(self) -> str:
        return "met" if self.met else ("NOT met" if self.met is False else "n/a")


class _Checker:
    def __init__(self, summary: dict[str, Summary]) -> None:
        self.summary = summary
        self.out: list[Target] = []

    def get(self, peer: str, key: str) -> Any:
        return self.summary.get(peer, {}).get(key)

    def ratio(self, what: str, mine: str, peer: str, key: str, op: Callable[[float, float], bool]) -> None:
        """A vidfs figure against another peer's (or its multiple), e.g. op = lambda v, o: v >= o."""
        v, o = self.get("vidfs", key), self.get(peer, key)
        if v is None or o is None:
            pairs = (("vidfs", v), (peer, o))
            shown = ", ".join(f"{name} {'—' if x is None else f'{x:{mine}}'}" for name, x in pairs)
            self.out.append(Target(what, None, shown + " (not measured)"))
            return
        text = f"{v:{mine}} vs {peer} {o:{mine}}" + (f" ({v / o:.2f}×)" if o else "")
        self.out.append(Target(what, op(v, o), text))

    def limit(self, what: str, key: str, ok: Callable[[float], bool], unit: str, digits: int = 1) -> None:
        v = self.get("vidfs", key)
        self.out.append(
            Target(what, None if v is None else ok(v), "—" if v is None else f"{v:.{digits}f} {unit}")
        )


def _read_targets(c: _Checker, rtt_ms: float) -> None:
    c.ratio(
        "(f) after a remount ≥ rclone (cache full)'s (f)",
        ".1f",
        "rclone-full",
        "remount_mbps",
        lambda v, o: v >= o,
    )
    f_goal = 5 * F_BEFORE_MBPS
    c.limit(f"(f) ≥ 5× today's ({f_goal:.0f} MB/s)", "remount_mbps", lambda v: v >= f_goal, "MB/s")
    c.limit(
        f"(f) daemon CPU ≤ {F_CPU_PER_GB:g} s per GB",
        "remount_cpu_s_per_gb",
        lambda v: v <= F_CPU_PER_GB,
        "s/GB",
        2,
    )
    if rtt_ms > 0:
        c.ratio("(a) cold ≥ 1.0× curl", ".1f", "curl", "seq_mbps", lambda v, o: v >= o)
        c.ratio(
            "(a) cold ≥ 2× curl (the goal beyond, parallel streams)",
            ".1f",
            "curl",
            "seq_mbps",
            lambda v, o: v >= 2 * o,
        )
    c.ratio("(a) cold ≥ rclone (VFS off)", ".1f", "rclone", "seq_mbps", lambda v, o: v >= o)
    c.ratio(
        "(a) daemon CPU per GB ≤ rclone (VFS off)'s", ".2f", "rclone", "seq_cpu_s_per_gb", lambda v, o: v <= o
    )


def _probe_and_rest(c: _Checker) -> None:
    c.limit(f"(b) ffprobe ≤ {PROBE_MB:g} MB", "ffprobe_mb", lambda v: v <= PROBE_MB, "MB", 2)
    c.limit(
        f"(b) ffprobe ≤ {PROBE_REQUESTS} requests",
        "ffprobe_requests",
        lambda v: v <= PROBE_REQUESTS,
        "requests",
        0,
    )
    c.ratio(
        f"(b) ffprobe time ≤ {PROBE_TIME:g}× curl's",
        ".2f",
        "curl",
        "ffprobe_s",
        lambda v, o: v <= PROBE_TIME * o,
    )
    c.ratio(
        f"(c) random p50 ≤ {RANDOM_P50:g}× curl",
        ".1f",
        "curl",
        "rand_p50_ms",
        lambda v, o: v <= RANDOM_P50 * o,
    )
    c.ratio(
        f"(c) random bytes ≤ {RANDOM_BYTES:g}× curl's",
        ".1f",
        "curl",
        "rand_mb",
        lambda v, o: v <= RANDOM_BYTES * o,
    )
    c.limit(f"(d) warm re-read ≥ {WARM_MBPS / 1000:g} GB/s", "warm_mbps", lambda v: v >= WARM_MBPS, "MB/s", 0)
    c.limit(f"(e) peak RSS ≤ {RSS_MIB:g} MiB", "rss_mib", lambda v: v <= RSS_MIB, "MiB")


def _checksums(c: _Checker) -> None:
    """vidfs's bytes, every one compared; another peer's wrong bytes are named, not vidfs's failure."""
    mine = [c.get("vidfs", key) for key in CHECKS if c.get("vidfs", key) is not None]
    others = [
        f"{peer} {key}"
        for peer, s in c.summary.items()
        if peer != "vidfs"
        for key in CHECKS
        if s.get(key) is False
    ]
    figures = f"vidfs: {sum(bool(x) for x in mine)} of {len(mine)} checks ok"
    figures += f"; wrong bytes from other peers: {', '.join(others)}" if others else ""
    c.out.append(Target("every checksum equal", all(mine) if mine else None, figures))


def issue13(summary: dict[str, Summary], rtt_ms: float) -> list[Target]:
    """The targets for one table; empty when vidfs was not measured."""
    if "vidfs" not in summary:
        return []
    checker = _Checker(summary)
    _read_targets(checker, rtt_ms)
    _probe_and_rest(checker)
    _checksums(checker)
    return checker.out
