"""Shared listings and the fleet-wide API budget through three real mounts and a real Redis Cluster; and a
scan of everything the fleet left in Redis (issue 15).

The origin (`fleet_origin`) is a plain web server whose index pages are its "API": its log says which
directory was listed when.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount, sha256_file, wait_until
from tests.fleet_origin import Origin
from tests.redis_cluster import HAVE_REDIS, Cluster
from tests.test_fleet_shared import INSTANCE, SECRET, TIMEOUT, published, stats
from vidfs.commands.demo import write_config

pytestmark = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server is not installed (.ci/run installs it)")

USERNAME = "fleet-user-7c1e"
PASSWORD = "fleet-password-93d4b0"
RATE = 4  # API requests per second for the whole fleet
BURST = RATE  # one second's worth (vidfs.fleet.budget)


def folder(index: int) -> str:
    return f"folder-alpha-{index:02d}"


def clip(index: int) -> str:
    return f"clip-secret-name-{index:02d}.bin"


def populate(origin: Origin, folders: int) -> None:
    for index in range(folders):
        origin.folders.append(folder(index) + "/")
        origin.add(f"{folder(index)}/{clip(index)}", os.urandom(2048))


def config(tmp_path: Path, origin: Origin, cluster: Cluster, name: str, *, ttl: str, rate: bool) -> Path:
    table: dict[str, Any] = {"type": "http", "url": origin.url, "username": USERNAME, "password": PASSWORD}
    if rate:
        table["api_rate"] = f"{RATE}/s"
    return write_config(
        tmp_path / f"{name}.toml",
        {INSTANCE: table},
        cache_dir=tmp_path / f"cache-{name}",
        cache={"metadata_ttl": ttl},
        extra=cluster.table(SECRET, timeout=TIMEOUT),
    )


def walk_all(mounts: list[Mount], folders: list[list[str]] | None = None) -> None:
    """Each mount lists its folders (all of them by default) at the same time as the others."""
    errors: list[BaseException] = []

    def walk(mount: Mount, names: list[str] | None) -> None:
        try:
            top = mount.path / INSTANCE
            for name in names if names is not None else sorted(os.listdir(top)):
                os.listdir(top / name)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=walk, args=(mount, None if folders is None else folders[i]))
        for i, mount in enumerate(mounts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors


def settled(mount: Mount, refreshes: int) -> bool:
    document = stats(mount)
    done = document["counters"].get("metadata.refreshes", 0) >= refreshes
    return done and document["listings"]["fetching"] == 0


def test_fleet_three_mounts_list_each_directory_once_per_ttl(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    folders = 6
    populate(origin, folders)
    fleet = [
        mounts(config(tmp_path, origin, cluster, name, ttl="6s", rate=False), name=name) for name in "abc"
    ]
    directories = ["/pub/"] + [f"/pub/{folder(i)}/" for i in range(folders)]
    walk_all(fleet)
    assert origin.listing_calls() == dict.fromkeys(directories, 1)
    refreshes = [stats(mount)["counters"].get("metadata.refreshes", 0) for mount in fleet]
    # Once the fleet's listings expired (Redis dropped them after the TTL), each host refreshes them again.
    wait_until(lambda: not any(key.startswith(b"vl{") for key in cluster.items()), "the listings expired", 60)
    walk_all(fleet)
    for mount, before in zip(fleet, refreshes, strict=True):
        wait_until(lambda m=mount, b=before: settled(m, b + len(directories)), "every refresh done", 60)
    assert origin.listing_calls() == dict.fromkeys(directories, 2)
    shared = [stats(mount)["shared"]["listings"] for mount in fleet]
    assert sum(s["vendor_calls"] for s in shared) == 2 * len(directories), shared
    assert sum(s["hits"] for s in shared) >= 2 * 2 * len(directories) - len(directories), shared


def test_fleet_api_rate_holds_across_three_mounts_and_redis_holds_no_secret(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    folders = 30
    populate(origin, folders)
    big = origin.add("movie-private-title.bin", os.urandom(2 << 20))
    fleet = [
        mounts(config(tmp_path, origin, cluster, name, ttl="5m", rate=True), name=name) for name in "abc"
    ]
    origin.clear()
    # Each host lists its own third of the folders: without a fleet-wide budget each would go at RATE.
    shares = [[folder(i) for i in range(folders) if i % 3 == n] for n in range(3)]
    walk_all(fleet, shares)
    calls = sorted(entry["time"] for entry in origin.entries(method="GET", path=r"/$"))
    assert len(calls) >= folders, len(calls)
    window = 3.0
    busiest = max(sum(1 for t in calls if start <= t < start + window) for start in calls)
    budgets = [stats(mount)["shared"]["api_budget"][INSTANCE] for mount in fleet]
    # 2: margin for clocks and rounding
    assert busiest <= RATE * window + BURST + 2, (busiest, [round(t - calls[0], 3) for t in calls], budgets)
    assert sum(b["requests"] for b in budgets) >= folders and all(b["local_requests"] == 0 for b in budgets)

    assert sha256_file(fleet[0].path / INSTANCE / "movie-private-title.bin") == big
    wait_until(lambda: published(fleet[0]) >= 32, "the file published", 60)
    everything = cluster.items()
    kinds = {key[:3] for key in everything}
    assert {b"vb{", b"vl{", b"va{", b"vm{"} <= kinds, kinds
    forbidden = [SECRET, USERNAME, PASSWORD, base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()]
    forbidden += [origin.url, origin.site.url, f"127.0.0.1:{origin.site.port}", "http://", "Basic "]
    forbidden += [folder(i) for i in range(folders)] + [clip(i) for i in range(folders)]
    forbidden += ["movie-private-title", "/pub/", INSTANCE + ":api"]
    for key, value in everything.items():
        for needle in forbidden:
            assert needle.encode() not in key, (needle, key)
            assert needle.encode() not in value, (needle, key)
