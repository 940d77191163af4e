"""The fleet bench (issue 15): 1, 2 and 4 mounts with separate local caches and one Redis Cluster, reading
the same file one after another and at once. For each: the bytes the origin served (as a multiple of the
file) and, per mount, the time of its read and its daemon's CPU seconds.

    .venv/bin/python -m bench.fleet [--size-mib 128] [--mounts 1,2,4] [--timeout 100ms]
                                    [--out bench/results/fleet.json]

Everything runs on 127.0.0.1: a 3-master Redis Cluster (`redis-server` from Debian, started and ended
here), the origin (a plain web server in this process, `tests/fleet_origin.py`), the mounts through the CLI
(`vidfs mount --daemon`). It reuses the test suite's helpers (`tests/redis_cluster.py`), so it needs the
test extras (`pip install -e '.[test]'`). Nothing is asserted: the figures are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.common import MiB, cpu_seconds, say, wait_for
from tests.conftest import Mount, mount_config, unmount
from tests.fleet_origin import Origin, start_origin
from tests.redis_cluster import Cluster, start_cluster
from vidfs.commands.demo import write_config

INSTANCE = "site"
SECRET = "bench-fleet-secret"


def _mount(work: Path, origin: Origin, cluster: Cluster, name: str, timeout: str) -> Mount:
    config = write_config(
        work / f"{name}.toml",
        {INSTANCE: {"type": "http", "url": origin.url}},
        cache_dir=work / f"cache-{name}",
        cache={"disk": "2GiB"},
        extra=cluster.table(SECRET, timeout=timeout),
    )
    return mount_config(config, work / f"mnt-{name}", work / f"{name}.log")


def _read(mount: Mount, name: str) -> tuple[str, float, float]:
    """(sha256, seconds, daemon CPU seconds) of one whole read."""
    cpu_before = cpu_seconds(mount.pid) or 0.0
    started = time.monotonic()
    digest = hashlib.sha256()
    with open(mount.path / INSTANCE / name, "rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    elapsed = time.monotonic() - started
    return digest.hexdigest(), elapsed, (cpu_seconds(mount.pid) or 0.0) - cpu_before


def _published(mount: Mount) -> bool:
    """Its publisher has nothing queued (what it fetched is in Redis, or was dropped)."""
    document = json.loads(os.getxattr(mount.path, "user.vidfs.stats"))
    return int(document["shared"]["blocks"]["queued_bytes"]) == 0


def _shared_stats(mount: Mount) -> dict[str, Any]:
    shared = json.loads(os.getxattr(mount.path, "user.vidfs.stats"))["shared"]
    blocks, redis = shared["blocks"], shared["redis"]
    keep = ("hits", "misses", "rejected", "waited_hits", "claims_lost", "published", "publish_dropped")
    return {
        **{key: blocks[key] for key in keep},
        **{key: redis[key] for key in ("errors", "timeouts", "skipped", "breaker_opens")},
    }


def _scenario(
    work: Path, origin: Origin, cluster: Cluster, count: int, size: int, together: bool, timeout: str
) -> dict[str, Any]:
    name = f"file-{count}-{'together' if together else 'sequential'}.bin"
    expected = origin.add(name, os.urandom(size))
    cluster.flush()
    origin.clear()
    label = f"{count}{'t' if together else 's'}"
    mounts = [_mount(work, origin, cluster, f"{label}-{i}", timeout) for i in range(count)]
    results: dict[int, tuple[str, float, float]] = {}
    try:
        if together:
            threads = [
                threading.Thread(target=lambda i=i, m=m: results.__setitem__(i, _read(m, name)))
                for i, m in enumerate(mounts)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=1800)
        else:
            for i, mount in enumerate(mounts):
                results[i] = _read(mount, name)
                wait_for(lambda m=mount: _published(m), 120, "the publisher drained")
        shared = [_shared_stats(mount) for mount in mounts]
    finally:
        for mount in mounts:
            unmount(mount)
    served = origin.bytes_served(name)
    return {
        "mounts": count,
        "at_once": together,
        "file_mib": size / MiB,
        "origin_served_x": round(served / size, 3),
        "all_identical": all(r[0] == expected for r in results.values()) and len(results) == count,
        "seconds": [round(results[i][1], 2) for i in sorted(results)],
        "daemon_cpu_s": [round(results[i][2], 2) for i in sorted(results)],
        "shared": shared,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--mounts", default="1,2,4")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fleet.json"))
    parser.add_argument("--timeout", default="100ms", help="[cache.shared] timeout (default: the issue's)")
    args = parser.parse_args()
    counts = [int(n) for n in args.mounts.split(",")]
    rows: list[dict[str, Any]] = []
    with TemporaryDirectory(prefix="vidfs-bench-fleet-") as temp:
        work = Path(temp)
        cluster = start_cluster(work / "redis")
        origin = start_origin(work / "www")
        try:
            for count in counts:
                for together in (False, True):
                    say(f"fleet: {count} mount(s), {'at once' if together else 'one after another'}")
                    size = args.size_mib * MiB
                    rows.append(_scenario(work, origin, cluster, count, size, together, args.timeout))
        finally:
            origin.site.close()
            cluster.stop()
    print(f"{'mounts':>6} {'how':>10} {'origin x':>8}  {'seconds per mount':<28} daemon CPU s per mount")
    for row in rows:
        how = "at once" if row["at_once"] else "in turn"
        seconds = " ".join(f"{s:.2f}" for s in row["seconds"])
        cpu = " ".join(f"{c:.2f}" for c in row["daemon_cpu_s"])
        ok = "" if row["all_identical"] else "  (BYTES DIFFER)"
        print(f"{row['mounts']:>6} {how:>10} {row['origin_served_x']:>8.3f}  {seconds:<28} {cpu}{ok}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"size_mib": args.size_mib, "timeout": args.timeout, "rows": rows}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    say(f"fleet: written {args.out}")


if __name__ == "__main__":
    main()
