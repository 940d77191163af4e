"""The fleet's shared block cache through real mounts and a real 3-master Redis Cluster (issue 15).

Each mount has its own local cache dir (memory and disk of its own); they share only the cluster. The
origin (`fleet_origin`) is a plain web server in this process: its request log is what the vendor served.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount, sha256_file, wait_until
from tests.fleet_origin import Origin, start_origin
from tests.redis_cluster import HAVE_REDIS, Cluster, start_cluster
from vidfs.commands.demo import write_config

pytestmark = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server is not installed (.ci/run installs it)")

INSTANCE = "site"
SECRET = "fleet-test-secret-0f3a"
SIZE = 24 << 20


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("redis"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    served = start_origin(tmp_path / "www")
    try:
        yield served
    finally:
        served.site.close()


def stats(mount: Mount) -> dict[str, Any]:
    return json.loads(os.getxattr(mount.path, "user.vidfs.stats"))


def fleet_config(tmp_path: Path, origin: Origin, cluster: Cluster, name: str, **shared: Any) -> Path:
    table = cluster.table(SECRET, **{"timeout": "250ms", **shared})
    return write_config(
        tmp_path / f"{name}.toml",
        {INSTANCE: {"type": "http", "url": origin.url}},
        cache_dir=tmp_path / f"cache-{name}",
        cache={"disk": "256MiB", "memory": "16MiB"},
        extra=table,
    )


def published(mount: Mount) -> int:
    return int(stats(mount)["shared"]["blocks"]["published"])


def test_fleet_two_mounts_one_after_the_other_fetch_the_file_once(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    expected = origin.add("big.bin", os.urandom(SIZE))
    first = mounts(fleet_config(tmp_path, origin, cluster, "a"), name="a")
    second = mounts(fleet_config(tmp_path, origin, cluster, "b"), name="b")
    assert sha256_file(first.path / INSTANCE / "big.bin") == expected
    blocks = SIZE // (64 << 10)
    wait_until(lambda: published(first) >= blocks, "the file published", 60)
    assert sha256_file(second.path / INSTANCE / "big.bin") == expected
    served = origin.bytes_served("big.bin")
    assert served <= 1.05 * SIZE, served
    shared = stats(second)["shared"]
    assert shared["blocks"]["hits"] >= blocks - 1, shared
    assert shared["blocks"]["rejected"] == 0


def test_fleet_two_mounts_at_once_share_the_work(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    expected = origin.add("big.bin", os.urandom(SIZE))
    first = mounts(fleet_config(tmp_path, origin, cluster, "a"), name="a")
    second = mounts(fleet_config(tmp_path, origin, cluster, "b"), name="b")
    sums: dict[str, str] = {}

    def read(mount: Mount) -> None:
        sums[mount.path.name] = sha256_file(mount.path / INSTANCE / "big.bin")

    readers = [threading.Thread(target=read, args=(mount,)) for mount in (first, second)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=300)
    assert sums == {"a": expected, "b": expected}
    served = origin.bytes_served("big.bin")
    assert served <= 1.5 * SIZE, served
