"""vidfs against curl (the limit), rclone mount and httpdirfs, on one nginx, at given round-trip times.

    sudo bench/run.sh                          # 3 runs at 20 ms and at 0 ms RTT, a table each (medians)
    sudo bench/run.sh --runs 1 --rtt-ms 50 --peers vidfs,curl
    sudo bench/run.sh --quick --rtt-ms 20,0    # smoke run: 64 MiB file, a small movie, 1 run
    sudo bench/run.sh --catalog 10000,100000   # the catalog run instead (bench/catalog.py, issue 16)

What one invocation does:
1. installs what it lacks from Debian (nginx rclone httpdirfs curl ffmpeg, and for the delay gcc,
   iptables, libnetfilter-queue-dev) and matplotlib into the venv (bench/run.sh); a peer whose package
   cannot be installed is reported as missing in the table, not dropped;
2. makes its data once and keeps it (bench/data.py): a 512 MiB file of seeded random bytes and an MP4 of
   about 230 MB with the moov atom at the end;
3. creates a network namespace of its own and serves the data from nginx inside it (bench/netns.py);
4. for each `--rtt-ms` (default 20,0) sets up the delay on the namespace's loopback with the best method
   the kernel allows (bench/delay.py: netem, else an NFQUEUE program in C built here, else a Python
   proxy; 0 = none) and measures the RTT it gives;
5. for every peer, `--runs` times (bench/measure.py): (a) cold sequential MB/s and the daemon's CPU s
   per GB, (b) ffprobe of the MP4, (c) random 64 KiB reads, (d) warm re-read, (e) peak RSS, (f) re-read
   after a remount on the same cache dir with the page cache dropped, and its CPU s per GB;
6. prints a Markdown table per RTT (bench/report.py), checks issue 13's targets against it
   (bench/targets.py), and writes everything, every run's raw figures included, to
   `bench/results/bench-<time>.json`, with a PNG chart per table next to it (bench/chart.py).

Everything it starts is stopped by PID, every mount unmounted, the namespace deleted, on success,
failure or Ctrl-C (bench/common.py's Cleanup). MB = 10^6 bytes, GB = 10^9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.catalog import run_catalog
from bench.chart import read_chart
from bench.common import Cleanup, say
from bench.data import MOVIE_NAME, RANDOM_NAME, Truth, prepare
from bench.delay import Delay, proxy_check, start_delay
from bench.measure import Figures, Stage, measure_curl, measure_mount
from bench.netns import Netns, Origin
from bench.options import PEERS, Options, parse_args
from bench.reading import Sink
from bench.report import CHECKS, brief, footnotes, runs_json, summarize, table
from bench.targets import issue13
from bench.tools import ensure_tools, versions

REQUIRED = ("nginx", "ffmpeg", "ffprobe", "curl", "ip", "nsenter", "fusermount3")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args((__doc__ or "").split("\n\n")[0], argv)
    if os.geteuid() != 0:
        say("needs root (network namespaces, apt-get, FUSE mounts of other tools): sudo bench/run.sh")
        return 2
    cleanup = Cleanup()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a shell that starts
        signal.signal(signum, on_signal)  # us in the background has Python ignore it otherwise
    work = Path(tempfile.mkdtemp(prefix="vidfs-bench-"))
    if not opts.keep_workdir:
        cleanup.push("work dir", lambda: shutil.rmtree(work, ignore_errors=True))
    try:
        if opts.catalog:
            return run_catalog(opts, work, cleanup)
        return _read_bench(opts, work, cleanup)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        cleanup.run_all()
        if opts.keep_workdir:
            say(f"logs and configs kept in {work}")


def _peer_status(opts: Options) -> dict[str, str] | None:
    """peer → why it cannot run ("" or absent: it can); None: the bench itself cannot run."""
    tools = ensure_tools(opts)
    for required in REQUIRED:
        if tools.get(required):
            say(f"cannot run without {required}: {tools[required]}")
            return None
    status: dict[str, str] = {}
    for name in opts.peers:
        binary = PEERS[name].binary
        if binary and tools.get(binary):
            status[name] = f"missing ({tools[binary]})"
    return status


def _read_bench(opts: Options, work: Path, cleanup: Cleanup) -> int:
    status = _peer_status(opts)
    if status is None:
        return 1
    truth = prepare(opts)
    ns = Netns(cleanup)
    origin = Origin(ns, work, {RANDOM_NAME: truth.random_path, MOVIE_NAME: truth.movie_path}, cleanup)
    sink = Sink(truth.random_size)
    results = Results(opts, truth)
    for rtt_ms in opts.rtts_ms:
        delay = start_delay(ns, rtt_ms, opts.delay, origin.port, work, cleanup, opts.install)
        try:
            url = f"http://127.0.0.1:{delay.port}/"
            stage = Stage(ns, origin, url, work, opts, truth, cleanup, sink)
            results.add(_one_table(stage, delay, dict(status)))  # written at once: a later failure
        finally:  # or Ctrl-C keeps the tables done
            delay.close()
    wrong = [
        f"{PEERS[p].label} at {t['rtt_ms']:g} ms"
        for t in results.tables
        for p, s in t["summary"].items()
        if any(s.get(k) is False for k in CHECKS)
    ]
    if wrong:
        say(f"wrong bytes from: {', '.join(wrong)}")
    return 0


def _measure_all(stage: Stage, status: dict[str, str]) -> dict[str, list[Figures]]:
    opts = stage.opts
    results: dict[str, list[Figures]] = {peer: [] for peer in opts.peers}
    for index in range(opts.runs):
        for peer in opts.peers:
            if status.get(peer):
                continue
            say(f"run {index + 1}/{opts.runs}: {PEERS[peer].label} …")
            began = time.monotonic()
            fig = measure_curl(stage) if peer == "curl" else measure_mount(stage, peer)
            say(f"  {PEERS[peer].label}: {brief(fig)} ({time.monotonic() - began:.0f} s)")
            results[peer].append(fig)
    return results


def _one_table(stage: Stage, delay: Delay, status: dict[str, str]) -> dict[str, Any]:
    """Every peer at one RTT: the table, the targets, the raw runs."""
    opts, truth = stage.opts, stage.truth
    say(f"RTT {delay.rtt_ms:g} ms: {delay.description}, measured {delay.measured_rtt_ms:.2f} ms")
    check = proxy_check(stage.ns, delay, stage.origin.port, RANDOM_NAME)
    cpu_before = delay.cpu()
    began = time.monotonic()
    results = _measure_all(stage, status)
    summary = {peer: summarize(runs) for peer, runs in results.items() if runs}
    for peer in opts.peers:
        if not status.get(peer) and not results[peer]:
            status[peer] = "not run"
    text = table(summary, status, opts.peers, opts.reads)
    goals = issue13(summary, delay.rtt_ms) if "vidfs" in summary else []
    header = (
        f"RTT {delay.rtt_ms:g} ms ({delay.method}: {delay.description}; measured"
        f" {delay.measured_rtt_ms:.2f} ms); {opts.runs} run(s), median; {truth.random_size / 2**20:.0f} MiB"
        f" random file, {truth.movie_size / 1e6:.0f} MB MP4 (moov at the end); {opts.reads} random reads"
        f" of {opts.read_size // 1024} KiB"
    )
    notes = footnotes(summary, opts.max_read_seconds)
    print(f"\n{header}\n\n{text}\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else ""))
    if goals:
        print("vidfs against issue 13's targets:\n")
        print("\n".join(f"- {g.what}: **{g.mark}** ({g.figures})" for g in goals) + "\n", flush=True)
    return {
        "rtt_ms": delay.rtt_ms,
        "delay": {
            "method": delay.method,
            "description": delay.description,
            "measured_rtt_ms": delay.measured_rtt_ms,
            "not_used": delay.notes,
            "delayer_cpu_before": cpu_before,
            "delayer_cpu_after": delay.cpu(),
        },
        "proxy_check": check,
        "seconds": time.monotonic() - began,
        "status": status,
        "summary": summary,
        "targets": [{"target": g.what, "met": g.met, "figures": g.figures} for g in goals],
        "table_markdown": text,
        "header": header,
        "footnotes": notes,
        "runs": runs_json(results),
    }


class Results:
    """bench/results/bench-<time>.json, written again after every table, and a PNG per table."""

    def __init__(self, opts: Options, truth: Truth) -> None:
        self.opts = opts
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.base = opts.results_dir / f"bench-{stamp}{'-quick' if opts.quick else ''}"
        self.tables: list[dict[str, Any]] = []
        self.document = {
            "started": stamp,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
            "versions": versions(),
            "data": {
                name: {"path": str(path), "size": size, "sha256": sha}
                for name, path, size, sha in (
                    ("random", truth.random_path, truth.random_size, truth.random_sha),
                    ("movie", truth.movie_path, truth.movie_size, truth.movie_sha),
                )
            },
            "tables": self.tables,
        }

    def add(self, entry: dict[str, Any]) -> None:
        self.opts.results_dir.mkdir(parents=True, exist_ok=True)
        if self.opts.chart:
            png = self.base.with_name(f"{self.base.name}-rtt{entry['rtt_ms']:g}ms.png")
            try:
                why = read_chart(png, entry["summary"], self.opts.peers, entry["header"])
            except Exception as exc:  # a chart is never worth the figures
                why = f"no chart: {exc!r}"
            entry["chart"] = why or png.name
            say(why or f"wrote {png}")
        self.tables.append(entry)
        out = self.base.with_name(self.base.name + ".json")
        out.write_text(json.dumps(self.document, indent=1, default=str) + "\n")
        say(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
