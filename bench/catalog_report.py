"""The catalog run's report: a table per RTT, issue 16's targets, the JSON and a chart of time and memory
against N (bench/results/catalog-<time>.json and .png)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.catalog import SIZE_REQUESTS, CatalogFigures
from bench.chart import pyplot
from bench.common import say
from bench.delay import Delay
from bench.floor import Floor
from bench.options import Options
from bench.tools import versions

# Issue 16, at 20 ms: 10,000 videos in 3 s with sizes listed and 10 s with a HEAD each, 100,000 in 30 s and
# 100 s: linear in N, so the same budget per video applies to any N.
LISTED_S_PER_VIDEO = 3.0 / 10_000
HEAD_S_PER_VIDEO = 10.0 / 10_000
WARM_S, RSS_MIB, REMOUNT_S = 2.0, 150.0, 3.0
NUMERIC = (
    "files", "dirs", "cold_s", "cold_cpu_s", "cold_emulator_cpu_s", "cold_stolen_s", "api_requests",
    "storage_heads", "storage_other", "duplicates", "zero_size", "failures", "warm_s", "warm_requests",
    "remount_ready_s", "remount_first_answer_s", "remount_requests_before", "remount_changed", "rss_mib",
    "warm_ls_s", "remount_ls_s", "remount_ls_requests_before", "names_s", "names_api", "names_heads",
    "open_one_s", "open_one_heads", "relist_s", "relist_requests", "relist_rss_mib", "remount_cpu_s",
    "remount_stolen_s", "remount_ls_cpu_s", "remount_ls_stolen_s",
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    """The median of a (shape, N)'s runs."""

    shape: str
    n: int
    figures: dict[str, Any]
    unfinished: frozenset[str]  # the walks ("cold", "warm", "re-listing", "remount") not finished in a run

    @property
    def partial(self) -> bool:
        return bool(self.unfinished)

    errors: list[str]

    def get(self, key: str) -> Any:
        return self.figures.get(key)

    @property
    def sizes(self) -> str:
        """How the shape's sizes are learned: "listed", or a request per video (known per vendor, else a
        HEAD each when the request log shows one)."""
        known = SIZE_REQUESTS.get(self.shape)
        if known is not None:
            return known
        heads, files = self.get("storage_heads"), self.get("files")
        return "a HEAD each" if heads is not None and bool(files) and heads >= 0.5 * files else "listed"

    @property
    def request_each(self) -> bool:
        return self.sizes != "listed"


def rows(figs: list[CatalogFigures]) -> list[Row]:
    groups: dict[tuple[str, int], list[CatalogFigures]] = {}
    for fig in figs:
        groups.setdefault((fig.shape, fig.n), []).append(fig)
    out = []
    for (shape, n), runs in groups.items():
        medians: dict[str, Any] = {}
        for key in NUMERIC:
            values = [getattr(f, key) for f in runs if getattr(f, key) is not None]
            medians[key] = statistics.median(values) if values else None
        unfinished = frozenset(
            name
            for f in runs
            for name, done in (
                ("cold", f.cold_complete),
                ("warm", f.warm_complete),
                ("remount", f.remount_complete),
                ("re-listing", f.relist_complete),
            )
            if done is False
        )
        out.append(Row(shape, n, medians, unfinished, [e for f in runs for e in f.errors]))
    return out


def _n(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


COLUMNS = (
    "shape", "sizes", "N", "cold ls -R, names only: s (API requests / HEADs)",
    "then one video opened: s (HEADs)", "files (failed calls)",
    "cold walk s (CPU s: daemon / emulator / stolen)",
    "API requests", "storage HEADs", "warm: walk / ls -lR s (requests)",
    "remount: mounted / first walk s (requests before; CPU s: daemon / stolen)",
    "remount, listings stale: first ls -lR s (requests before; CPU s: daemon / stolen)",
    "changed after remount", "re-listing: walk s (requests) / peak RSS MiB", "peak RSS MiB",
)  # fmt: skip


def table(rows_: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows_:
        g = r.get
        cells = [
            r.shape + ("*" if r.partial else ""),
            r.sizes,
            f"{r.n:,}",
            f"{_n(g('names_s'), 2)} ({_n(g('names_api'), 0)} / {_n(g('names_heads'), 0)})",
            f"{_n(g('open_one_s'), 2)} ({_n(g('open_one_heads'), 0)})",
            f"{_n(g('files'), 0)} ({_n(g('failures'), 0)})",
            f"{_n(g('cold_s'), 2)} ({_n(g('cold_cpu_s'))} / {_n(g('cold_emulator_cpu_s'))}"
            f" / {_n(g('cold_stolen_s'))})",
            _n(g("api_requests"), 0),
            _n(g("storage_heads"), 0),
            f"{_n(g('warm_s'), 2)} / {_n(g('warm_ls_s'), 2)} ({_n(g('warm_requests'), 0)})",
            f"{_n(g('remount_ready_s'), 2)} / {_n(g('remount_first_answer_s'), 2)}"
            f" ({_n(g('remount_requests_before'), 0)};"
            f" {_n(g('remount_cpu_s'))} / {_n(g('remount_stolen_s'))})",
            f"{_n(g('remount_ls_s'), 2)} ({_n(g('remount_ls_requests_before'), 0)};"
            f" {_n(g('remount_ls_cpu_s'))} / {_n(g('remount_ls_stolen_s'))})",
            _n(g("remount_changed"), 0),
            f"{_n(g('relist_s'), 2)} ({_n(g('relist_requests'), 0)}) / {_n(g('relist_rss_mib'))}",
            _n(g("rss_mib")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row_json(r: Row, floor: Floor | None) -> dict[str, Any]:
    dirs = r.get("dirs")
    return asdict(r) | {
        "targets": [
            {"target": what, "met": ok, "figures": figures} for what, ok, figures in targets(r, floor)
        ],
        "warm_floor_s": None if floor is None or dirs is None else floor.walk_s(int(dirs)),
    }


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def _all_known(*values: Any) -> bool:
    return all(v is not None for v in values)


def targets(r: Row, floor: Floor | None = None) -> list[tuple[str, bool | None, str]]:
    """Issue 16's targets for one row: (what, met or None when a figure is missing, figures); `floor`, the
    machine's FUSE floor, adds the least its warm walk could take here to the warm walk's figures."""
    g = r.get
    budget = r.n * (HEAD_S_PER_VIDEO if r.request_each else LISTED_S_PER_VIDEO)
    out: list[tuple[str, bool | None, str]] = []
    cold = g("cold_s")
    kind = r.sizes if r.request_each else "sizes listed"
    out.append(
        (
            f"cold walk ≤ {budget:g} s ({kind})",
            None if cold is None else cold <= budget and "cold" not in r.unfinished,
            f"{_n(cold, 2)} s",
        )
    )
    warm, warm_ls, warm_req = g("warm_s"), g("warm_ls_s"), g("warm_requests")
    ok = (
        warm_req == 0 and max(warm, warm_ls) <= WARM_S and "warm" not in r.unfinished
        if _all_known(warm, warm_ls, warm_req)
        else None
    )
    figures = f"{_n(warm_req, 0)} requests, walk {_n(warm, 2)} s, ls -lR {_n(warm_ls, 2)} s"
    if floor is not None and g("dirs") is not None:
        figures += f"; floor {floor.walk_s(int(g('dirs'))):.2f} s ({_n(g('dirs'), 0)} directory listings)"
    out.append((f"warm walk and ls -lR 0 requests, ≤ {WARM_S:g} s", ok, figures))
    rss = g("rss_mib")
    out.append((f"peak RSS ≤ {RSS_MIB:g} MiB", None if rss is None else rss <= RSS_MIB, f"{_n(rss)} MiB"))
    first, before = g("remount_first_answer_s"), g("remount_requests_before")
    first_ls, before_ls = g("remount_ls_s"), g("remount_ls_requests_before")
    ok = (
        before == before_ls == 0 and max(first, first_ls) <= REMOUNT_S and "remount" not in r.unfinished
        if _all_known(first, before, first_ls, before_ls)
        else None
    )
    what = f"after a remount, the first walk and ls -lR with 0 requests before them, ≤ {REMOUNT_S:g} s"
    figures = f"walk {_n(before, 0)} requests, {_n(first, 2)} s ({_n(g('remount_stolen_s'))} s stolen);"
    figures += f" ls -lR (stale) {_n(before_ls, 0)} requests, {_n(first_ls, 2)} s"
    out.append((what, ok, figures + f" ({_n(g('remount_ls_stolen_s'))} s stolen)"))
    dup, zero, files, failed = g("duplicates"), g("zero_size"), g("files"), g("failures")
    ok = (
        dup == 0 and zero == 0 and failed == 0 and files >= r.n
        if _all_known(dup, zero, files, failed)
        else None
    )
    figures = f"{_n(files, 0)} files, {_n(dup, 0)} listed twice, {_n(zero, 0)} without a size"
    figures += f", {_n(failed, 0)} failed calls"
    out.append(("every entry once, with its size", ok, figures))
    changed = g("remount_changed")
    ok = None if changed is None else changed == 0
    out.append(("names, inodes and sizes stable across the remount", ok, f"{_n(changed, 0)} changed"))
    return out


def chart(path: Path, tables: list[dict[str, Any]]) -> str | None:
    """Time and memory against N: a line per shape (colour) and RTT (solid: the first RTT)."""
    plt = pyplot()
    if isinstance(plt, str):
        return plt
    panels = (
        ("cold_s", "cold walk, s"),
        ("warm_s", "warm walk, s"),
        ("remount_first_answer_s", "remount → first complete walk, s"),
        ("rss_mib", "peak RSS, MiB"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for t_index, entry in enumerate(tables):
            shapes = sorted({r["shape"] for r in entry["rows"]})
            for s_index, shape in enumerate(shapes):
                points = sorted((r["n"], r["figures"].get(key)) for r in entry["rows"] if r["shape"] == shape)
                points = [(n, v) for n, v in points if v is not None]
                if points:
                    label = f"{shape}, {entry['rtt_ms']:g} ms"
                    ax.plot(
                        *zip(*points, strict=True),
                        styles[t_index % 4],
                        marker="o",
                        color=f"C{s_index}",
                        label=label,
                    )
        ax.set_xscale("log")
        if key == "rss_mib":
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale("log")  # seconds span 0.1 to 100s
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("videos (N)", fontsize=8)
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("vidfs catalog run (issue 16): time and memory against N", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


class CatalogResults:
    """bench/results/catalog-<time>.json, written again after every RTT, and its chart."""

    def __init__(self, opts: Options, floor: Floor | None = None) -> None:
        self.opts = opts
        self.floor = floor
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.base = opts.results_dir / f"catalog-{stamp}"
        self.tables: list[dict[str, Any]] = []
        self.document: dict[str, Any] = {
            "started": stamp,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
            "versions": versions(),
            "fuse_floor": None if floor is None else asdict(floor) | {"request_us": floor.request_us},
            "tables": self.tables,
        }

    def skipped(self, rtt_ms: float, why: str) -> None:
        self.tables.append({"rtt_ms": rtt_ms, "skipped": why, "rows": []})
        self._write()

    def add(self, delay: Delay, figs: list[CatalogFigures]) -> None:
        made = rows(figs)
        header = (
            f"Catalog run at RTT {delay.rtt_ms:g} ms ({delay.method}: {delay.description}; measured"
            f" {_n(delay.measured_rtt_ms, 2)} ms); {self.opts.runs} run(s), median; fresh cache,"
            " metadata_ttl 10m"
        )
        text = table(made)
        partial = (
            "\n\\* a walk of this row did not finish: --max-walk-seconds, or a call without an answer"
            " (see the errors below)\n"
            if any(r.partial for r in made)
            else ""
        )
        floor = "" if self.floor is None else f"\nFUSE floor on this machine: {self.floor.describe()}\n"
        print(f"\n{header}\n\n{text}\n{partial}{floor}\nissue 16's targets at {delay.rtt_ms:g} ms:\n")
        for r in made:
            marked = targets(r, self.floor)
            marks = "; ".join(f"{what}: **{_mark(ok)}** ({figures})" for what, ok, figures in marked)
            print(f"- {r.shape}, {r.n:,}: {marks}" + (f"; errors: {'; '.join(r.errors)}" if r.errors else ""))
        print(flush=True)
        described = {"method": delay.method, "description": delay.description}
        self.tables.append(
            {
                "rtt_ms": delay.rtt_ms,
                "delay": described | {"measured_rtt_ms": delay.measured_rtt_ms},
                "header": header,
                "table_markdown": text,
                "rows": [_row_json(r, self.floor) for r in made],
                "runs": [asdict(f) for f in figs],
            }
        )
        self._write()

    def _write(self) -> None:
        self.opts.results_dir.mkdir(parents=True, exist_ok=True)
        if self.opts.chart and any(t["rows"] for t in self.tables):
            png = self.base.with_name(self.base.name + ".png")
            try:
                why = chart(png, [t for t in self.tables if t["rows"]])
            except Exception as exc:  # a chart is never worth the figures
                why = f"no chart: {exc!r}"
            self.document["chart"] = why or png.name
            say(why or f"wrote {png}")
        out = self.base.with_name(self.base.name + ".json")
        out.write_text(json.dumps(self.document, indent=1, default=str) + "\n")
        say(f"wrote {out}")
