"""PNG charts next to the JSON, drawn with matplotlib's headless backend (Agg).

matplotlib is the `bench` extra (`pip install -e '.[bench]'`; bench/run.sh installs it into the venv when
missing). Without it the bench still runs and says why there is no chart.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.options import PEERS
from bench.report import Summary

PANELS = (  # (key, title, digits)
    ("seq_mbps", "(a) sequential cold, MB/s ↑", 0),
    ("seq_cpu_s_per_gb", "(a) daemon CPU, s per GB ↓", 2),
    ("remount_mbps", "(f) after a remount, MB/s ↑ (hatched: no cache)", 0),
    ("remount_cpu_s_per_gb", "(f) daemon CPU, s per GB ↓", 2),
    ("warm_mbps", "(d) warm re-read, MB/s ↑", 0),
    ("ffprobe_mb", "(b) ffprobe, MB served ↓", 2),
    ("ffprobe_requests", "(b) ffprobe, requests ↓", 0),
    ("ffprobe_s", "(b) ffprobe, s ↓", 2),
    ("rand_p50_ms", "(c) random 64 KiB p50, ms ↓", 1),
    ("rand_mb", "(c) random, MB served ↓", 0),
    ("rss_mib", "(e) peak RSS, MiB ↓", 0),
)
COLORS = {
    "curl": "#7f7f7f",
    "vidfs": "#d62728",
    "rclone": "#1f77b4",
    "rclone-full": "#aec7e8",
    "httpdirfs": "#2ca02c",
    "httpdirfs-cache": "#98df8a",
}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a string saying why it is not there."""
    try:  # imported here (and untyped): the bench runs without it
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        return f"no chart: matplotlib is missing ({exc}); pip install -e '.[bench]'"
    return plt


def read_chart(path: Path, summary: dict[str, Summary], peers: Sequence[str], title: str) -> str | None:
    """One bar chart per figure of the table, a bar per peer; returns why not, or None when written."""
    plt = pyplot()
    if isinstance(plt, str):
        return plt
    shown = [p for p in peers if p in summary]
    columns = 4
    rows = -(-len(PANELS) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (key, name, digits) in zip(axes.flat, PANELS, strict=False):
        values = [summary[p].get(key) for p in shown]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(range(len(shown)), heights, color=[COLORS.get(p, "#333333") for p in shown])
        if key.startswith("remount_"):  # hatched: no persistent cache, (f) fetched everything again
            for bar, peer in zip(bars, shown, strict=True):
                bar.set_hatch("" if PEERS[peer].persistent_cache else "//")
        for bar, value in zip(bars, values, strict=True):
            label = "—" if value is None else f"{value:.{digits}f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(shown)), [PEERS[p].label for p in shown], rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
