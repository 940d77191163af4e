"""From every run's figures to the medians, the Markdown table and the JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench.measure import Figures
from bench.options import PEERS

NUMERIC = (
    "seq_mbps", "seq_cpu_s_per_gb", "seq_system_s_per_gb", "seq_stolen_s", "ffprobe_s", "ffprobe_requests",
    "ffprobe_mb", "rand_p50_ms", "rand_p95_ms", "rand_mb", "warm_mbps", "rss_mib",
    "remount_mbps", "remount_cpu_s_per_gb", "remount_system_s_per_gb", "remount_stolen_s",
    "remount_requests", "remount_mb",
)  # fmt: skip
CHECKS = ("seq_ok", "warm_ok", "ffprobe_ok", "rand_ok", "remount_ok")
CHECK_NAMES = {
    "seq_ok": "seq",
    "warm_ok": "warm",
    "rand_ok": "random",
    "ffprobe_ok": "probe",
    "remount_ok": "f",
}

Summary = dict[str, Any]


def summarize(runs: list[Figures]) -> Summary:
    """Medians of the figures, and of the checks: all true (None when never checked)."""
    out: Summary = {}
    for key in NUMERIC:
        values = [getattr(f, key) for f in runs if getattr(f, key) is not None]
        out[key] = statistics.median(values) if values else None
    for key in CHECKS:
        values = [getattr(f, key) for f in runs if getattr(f, key) is not None]
        out[key] = all(values) if values else None
    for key in ("seq_partial", "warm_partial", "remount_partial"):
        out[key] = any(getattr(f, key) for f in runs)
    out["remount_note"] = next((f.remount_note for f in runs if f.remount_note), None)
    out["errors"] = [e for f in runs for e in f.errors]
    return out


def num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _remount_cell(s: Summary) -> str:
    if s["remount_mbps"] is None:
        return f"— ({s['remount_note']})" if s["remount_note"] else "—"
    cell = num(s["remount_mbps"]) + ("*" if s["remount_partial"] else "")
    cell += f" ({num(s['remount_mb'])} MB served)"
    return cell + (" †" if s["remount_note"] else "")


def _checks_cell(s: Summary) -> str:
    marks = [f"{CHECK_NAMES[k]} {'ok' if s[k] else 'WRONG'}" for k in CHECKS if s[k] is not None]
    return ", ".join(marks) or "—"


def table(summary: dict[str, Summary], status: dict[str, str], peers: list[str], reads: int) -> str:
    rows = ["| | " + " | ".join(PEERS[p].label for p in peers) + " |", "|---|" + "---:|" * len(peers)]

    def row(title: str, cell: Callable[[Summary], str]) -> None:
        cells = [status[p] if status.get(p) else cell(summary[p]) for p in peers]
        rows.append(f"| {title} | " + " | ".join(cells) + " |")

    row("(a) sequential cold, MB/s", lambda s: num(s["seq_mbps"]) + ("*" if s["seq_partial"] else ""))
    row("(a) daemon CPU, s per GB", lambda s: num(s["seq_cpu_s_per_gb"], 2))
    row("(a) of it the kernel's (system CPU), s per GB", lambda s: num(s["seq_system_s_per_gb"], 2))
    row(
        "(b) ffprobe cold: s / requests / MB served",
        lambda s: f"{num(s['ffprobe_s'], 2)} / {num(s['ffprobe_requests'], 0)} / {num(s['ffprobe_mb'], 2)}",
    )
    row(
        f"(c) random 64 KiB: p50 / p95 ms (MB served, {reads} reads)",
        lambda s: f"{num(s['rand_p50_ms'])} / {num(s['rand_p95_ms'])} ({num(s['rand_mb'])})",
    )
    row("(d) warm re-read, MB/s", lambda s: num(s["warm_mbps"]) + ("*" if s["warm_partial"] else ""))
    row("(e) peak RSS, MiB", lambda s: num(s["rss_mib"]))
    row("(f) after a remount, page cache dropped, MB/s", _remount_cell)
    row("(f) daemon CPU, s per GB", lambda s: num(s["remount_cpu_s_per_gb"], 2))
    row("(f) of it the kernel's (system CPU), s per GB", lambda s: num(s["remount_system_s_per_gb"], 2))
    row(
        "(a) / (f) CPU s the host stole during the read",
        lambda s: f"{num(s['seq_stolen_s'], 2)} / {num(s['remount_stolen_s'], 2)}",
    )
    row("checksums / bytes compared", _checks_cell)
    return "\n".join(rows)


def footnotes(summary: dict[str, Summary], max_read_seconds: float) -> list[str]:
    out = []
    if any(s.get(k) for s in summary.values() for k in ("seq_partial", "warm_partial", "remount_partial")):
        out.append(
            f"\\* read stopped after {max_read_seconds:g} s (--max-read-seconds): the rate of what was read"
        )
    if any(s.get("remount_note") and s.get("remount_mbps") is not None for s in summary.values()):
        out.append("† no persistent cache: (f) fetched everything again (a reference, not a cache figure)")
    if "curl" in summary:
        out.append("curl's CPU is that of the curl process itself (no daemon)")
    return out


def brief(fig: Figures) -> str:
    """One line per peer and run, for the progress output."""
    parts = [
        f"(a) {num(fig.seq_mbps)} MB/s {num(fig.seq_cpu_s_per_gb, 2)} s/GB"
        f" ({num(fig.seq_system_s_per_gb, 2)} system, {num(fig.seq_stolen_s, 2)} s stolen)",
        f"(b) {num(fig.ffprobe_s, 2)} s/{num(fig.ffprobe_requests, 0)} req/{num(fig.ffprobe_mb, 2)} MB",
        f"(c) p50 {num(fig.rand_p50_ms)} ms ({num(fig.rand_mb)} MB)",
        f"(d) {num(fig.warm_mbps)} MB/s",
        f"(e) {num(fig.rss_mib)} MiB",
        f"(f) {num(fig.remount_mbps)} MB/s {num(fig.remount_cpu_s_per_gb, 2)} s/GB"
        f" ({num(fig.remount_system_s_per_gb, 2)} system, {num(fig.remount_stolen_s, 2)} s stolen)",
        f"({num(fig.remount_mb)} MB served)",
    ]
    if fig.errors:
        parts.append(f"errors: {'; '.join(fig.errors)}")
    return ", ".join(parts)


def runs_json(results: dict[str, list[Figures]]) -> dict[str, list[dict[str, Any]]]:
    return {peer: [asdict(f) for f in figs] for peer, figs in results.items()}
