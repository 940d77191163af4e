"""The shared tier failing under real mounts: a Redis node killed during a read, every node paused
(`CLIENT PAUSE`), no Redis at all when the mount starts; and one plain Redis node instead of a cluster.

What must hold: identical bytes; no read waits `timeout` more than once per call while Redis is sick,
shown by the counters: once the breaker is open, a whole file is read with no call waiting but the
breaker's probes (one per backoff period), the other calls answered at once (`skipped`); the breaker opens,
and closes again once Redis is back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount, sha256_file, wait_until
from tests.fleet_origin import Origin
from tests.redis_cluster import HAVE_REDIS, Cluster, start_plain
from tests.test_fleet_shared import INSTANCE, SICK_TIMEOUT, fleet_config, publish_file, published, stats

pytestmark = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server is not installed (.ci/run installs it)")

SIZE = 16 << 20
PAUSE_MS = 15_000  # long enough for two 16 MiB reads from the origin on a loaded machine


def read_with(path: Path, at: int, action: Callable[[], None]) -> str:
    """sha256 of the file, read in 1 MiB chunks; `action()` runs once `at` bytes were read (0: the file is
    open, nothing read yet)."""
    import hashlib

    digest = hashlib.sha256()
    done = False
    with open(path, "rb") as handle:
        while True:
            if not done and handle.tell() >= at:
                action()
                done = True
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def redis_stats(mount: Mount) -> dict[str, Any]:
    return dict(stats(mount)["shared"]["redis"])


def waits(redis: dict[str, Any]) -> tuple[int, int, int]:
    """(calls that waited the whole timeout, breaker probes, calls the open breaker answered at once)."""
    return redis["timeouts"], redis["breaker_probes"], redis["skipped"]


def test_fleet_a_redis_node_killed_during_a_read(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    fresh = origin.add("other.bin", os.urandom(2 << 20))
    _, expected = publish_file(tmp_path, origin, cluster, mounts, SIZE)
    second = mounts(fleet_config(tmp_path, origin, cluster, "b", timeout=SICK_TIMEOUT), name="b")
    # The node dies once the file is open, before its first read. Killed after 2 MiB read, no call noticed
    # it in 1 of 3 CI runs (the readahead, whose window doubles, may have asked for every block by then).
    got = read_with(second.path / INSTANCE / "big.bin", 0, lambda: cluster.kill(1))
    assert got == expected
    redis = redis_stats(second)
    assert redis["errors"] + redis["timeouts"] > 0, redis
    # The breaker opens on three failures *in a row*; with one node of three dead, the calls to the two
    # live ones succeed in between, so whether it opens depends on the order calls end in (under -n 4 it
    # stayed closed in 1 run of 3, before and after stop 20's changes). When it opened, calls were skipped.
    assert redis["breaker_opens"] == 0 or redis["skipped"] > 0, redis
    cluster.restart(1)
    wait_until(lambda: redis_stats(second)["breaker"] == "closed", "the breaker closed again", 90)
    assert redis_stats(second)["breaker_closes"] >= min(1, redis["breaker_opens"])  # if it opened
    assert sha256_file(second.path / INSTANCE / "other.bin") == fresh
    wait_until(lambda: published(second) > 0, "publishing again after the node returned", 60)


def test_fleet_client_pause_makes_misses_not_waits(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    other = origin.add("other.bin", os.urandom(SIZE))
    _, expected = publish_file(tmp_path, origin, cluster, mounts, SIZE)
    second = mounts(fleet_config(tmp_path, origin, cluster, "b", timeout=SICK_TIMEOUT), name="b")
    # Paused before the mount's client had connected (a loaded machine, -n 4), its lookups were skipped as
    # unconnected, never timed out, and the breaker had nothing to open on: connected first, then paused.
    wait_until(lambda: redis_stats(second)["connected"], "the second mount connected to Redis", 60)
    cluster.pause(PAUSE_MS)  # CLIENT UNPAUSE would wait for its end too: it ends by itself
    assert sha256_file(second.path / INSTANCE / "big.bin") == expected
    before = redis_stats(second)
    assert before["breaker_opens"] >= 1 and before["breaker"] != "closed", before
    assert sha256_file(second.path / INSTANCE / "other.bin") == other  # the breaker open all along
    after = redis_stats(second)
    timeouts, probes, skipped = (a - b for a, b in zip(waits(after), waits(before), strict=True))
    assert timeouts <= probes and skipped > 0, (before, after)
    wait_until(lambda: redis_stats(second)["breaker"] == "closed", "the breaker closed again", 90)
    assert redis_stats(second)["breaker_closes"] >= 1


def test_fleet_mounts_without_redis_and_finds_it_later(
    tmp_path: Path, origin: Origin, cluster: Cluster, mounts: Any
) -> None:
    expected = origin.add("big.bin", os.urandom(4 << 20))
    fresh = origin.add("other.bin", os.urandom(2 << 20))
    for index in range(len(cluster.nodes)):
        cluster.kill(index)
    mount = mounts(fleet_config(tmp_path, origin, cluster, "a", timeout=SICK_TIMEOUT), name="a")
    assert sha256_file(mount.path / INSTANCE / "big.bin") == expected
    # The read needs no Redis: it may end before the first attempt to connect has failed (a loaded machine,
    # -n 4), and the breaker opens on that failure. Wait for it, not for a time.
    wait_until(lambda: redis_stats(mount)["connect_failures"] >= 1, "the first connection refused", 60)
    redis = redis_stats(mount)
    assert (redis["connected"], redis["breaker"], redis["calls"]) == (0, "open", 0), redis
    assert redis["breaker_opens"] == 1, redis
    for index in sorted(cluster.down):
        cluster.nodes[index].start()
    cluster.down.clear()
    wait_until(cluster.healthy, "the cluster back", 60)
    wait_until(lambda: redis_stats(mount)["connected"] == 1, "the mount connected", 90)
    assert redis_stats(mount)["breaker"] == "closed"
    assert sha256_file(mount.path / INSTANCE / "other.bin") == fresh
    wait_until(lambda: published(mount) >= 32, "publishing once Redis is there", 60)


def test_fleet_one_plain_redis_node_works_too(tmp_path: Path, origin: Origin, mounts: Any) -> None:
    plain = start_plain(tmp_path / "plain")
    try:
        first, expected = publish_file(tmp_path, origin, plain, mounts, 8 << 20)
        assert redis_stats(first)["cluster"] == 0
        second = mounts(fleet_config(tmp_path, origin, plain, "b"), name="b")
        assert sha256_file(second.path / INSTANCE / "big.bin") == expected
        assert origin.bytes_served("big.bin") <= 1.05 * (8 << 20)
    finally:
        plain.stop()
