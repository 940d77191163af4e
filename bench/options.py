"""The bench's command line, and the peers it knows."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    label: str
    binary: str | None  # the tool it needs (None: vidfs itself)
    package: str | None  # the Debian package that has it
    persistent_cache: bool  # keeps what it read across a remount (measurement f)


PEER_LIST = (
    Peer("curl", "curl", "curl", "curl", False),
    Peer("vidfs", "vidfs", None, None, True),
    Peer("rclone", "rclone (VFS off)", "rclone", "rclone", False),
    Peer("rclone-full", "rclone (cache full)", "rclone", "rclone", True),
    Peer("httpdirfs", "httpdirfs", "httpdirfs", "httpdirfs", False),
    Peer("httpdirfs-cache", "httpdirfs (cache)", "httpdirfs", "httpdirfs", True),
)
PEERS = {peer.name: peer for peer in PEER_LIST}
DELAY_METHODS = ("auto", "netem", "nfqueue", "proxy")


@dataclass(frozen=True)
class Options:
    rtts_ms: list[float]
    delay: str
    runs: int
    quick: bool
    peers: list[str]
    data_dir: Path
    results_dir: Path
    seed: int
    file_mib: int
    movie_seconds: int
    reads: int
    read_size: int
    vidfs_set: list[str]
    max_read_seconds: float
    install: bool
    keep_workdir: bool
    chart: bool
    catalog: list[int]  # not empty: the catalog run (bench/catalog.py) instead of the read run
    providers: list[str]  # of the catalog run
    max_walk_seconds: float


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(item.replace("_", "")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: a comma list of numbers, not {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{what}: a comma list of numbers ≥ 0, not {text!r}")
    return values


def _parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run.sh", description=description, allow_abbrev=False)
    add = p.add_argument
    add("--rtt-ms", default="20,0", help="round-trip time(s) to emulate, a table each (default 20,0)")
    add("--delay", choices=DELAY_METHODS, default="auto", help="how the RTT is made (default: the best)")
    add("--runs", type=int, help="runs; each figure is the median (default 3; 1 for --catalog)")
    add("--quick", action="store_true", help="smoke run: 64 MiB file, short movie, 1 run")
    add("--peers", default=",".join(PEERS), help=f"comma list of {', '.join(PEERS)}")
    add("--data-dir", type=Path, help="where the data is kept (default ~/.cache/vidfs/bench)")
    add("--results-dir", type=Path, default=BENCH / "results", help="where the JSON and PNG go")
    add("--seed", type=int, default=20261122, help="seed of the data and the random offsets")
    add("--reads", type=int, default=200, help="random reads (default 200)")
    add(
        "--max-read-seconds",
        type=float,
        default=60.0,
        help="stop a sequential read after this long and report the rate so far (default 60)",
    )
    add(
        "--vidfs-set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help='a vidfs config value (TOML) for experiments, e.g. cache.disk=\x27"0"\x27 (repeatable)',
    )
    add("--no-install", action="store_true", help="do not apt-get/pip install missing tools")
    add("--no-chart", action="store_true", help="no PNG chart")
    add("--keep-workdir", action="store_true", help="keep logs and configs (the path is printed)")
    add("--catalog", metavar="N[,N]", help="the catalog run instead (issue 16): N videos per provider shape")
    add("--providers", help="provider shapes of the catalog run (default: every emulator; also valt-rooms)")
    add("--max-walk-seconds", type=float, default=900.0, help="stop a catalog walk after this long (900)")
    return p


def parse_args(description: str, argv: Sequence[str] | None = None) -> Options:
    p = _parser(description)
    a = p.parse_args(argv)
    peers = [name.strip() for name in a.peers.split(",") if name.strip()]
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        p.error(f"unknown peers: {', '.join(unknown)}")
    if a.runs is not None and a.runs < 1:
        p.error("--runs must be at least 1")
    try:
        rtts = _numbers(a.rtt_ms, "--rtt-ms")
        catalog = [int(v) for v in _numbers(a.catalog, "--catalog")] if a.catalog else []
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    providers = _providers(p, a.providers) if catalog else []
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Options(
        rtts_ms=rtts,
        delay=a.delay,
        runs=1 if a.quick else (a.runs or (1 if catalog else 3)),
        quick=a.quick,
        peers=peers,
        data_dir=a.data_dir or home_cache / "vidfs" / "bench",
        results_dir=a.results_dir,
        seed=a.seed,
        file_mib=64 if a.quick else 512,
        movie_seconds=6 if a.quick else 48,
        reads=min(a.reads, 50) if a.quick else a.reads,
        read_size=64 * 1024,
        vidfs_set=list(a.vidfs_set),
        max_read_seconds=a.max_read_seconds,
        install=not a.no_install,
        keep_workdir=a.keep_workdir,
        chart=not a.no_chart,
        catalog=catalog,
        providers=providers,
        max_walk_seconds=a.max_walk_seconds,
    )


def _providers(p: argparse.ArgumentParser, text: str | None) -> list[str]:
    from bench.catalog import SHAPE_VARIANTS
    from vidfs.emulator import known_emulators  # only the catalog run needs vidfs itself here

    known = known_emulators()
    names = [name.strip() for name in (text or ",".join(known)).split(",") if name.strip()]
    if bad := [name for name in names if name not in known and name not in SHAPE_VARIANTS]:
        shapes = ", ".join([*known, *SHAPE_VARIANTS])
        p.error(f"unknown provider shapes {', '.join(bad)} (known shapes: {shapes})")
    return names
