"""The Prometheus endpoint of a real mount (issue 17): `[metrics] listen` in the config, `GET /metrics` with a
real HTTP client, the answer parsed by `prometheus_client`'s own parser.

1. names, types and label names of the families a dashboard relies on; no label value carries a URL, a
   path, a file name, a remote id or a secret;
2. the metrics move with reads: reading a file grows the bytes served and fetched by its size; reading it
   again (its pages dropped from the kernel's page cache) grows the memory and disk sources, not the
   network, and fetches nothing; the FUSE read latency histogram counts the reads;
3. an address that cannot be bound is one line in the log and the mount serves anyway;
4. a bad `listen` is refused with one line naming the file, the table and the key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Emulator, Mount, emulator_fixture, sha256_file, vidfs_cmd, wait_until
from tests.providers import Expect, expected_in_mount
from vidfs.commands.demo import write_config
from vidfs.fs.videofs import STATS_XATTR

INSTANCE = "a"
MiB = 1 << 20
# name → (type, label names) of the families checked by name.
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "vidfs_build_info": ("gauge", {"version"}),
    "vidfs_uptime_seconds": ("gauge", set()),
    "vidfs_start_time_seconds": ("gauge", set()),
    "vidfs_served_bytes": ("counter", {"source"}),
    "vidfs_fetched_bytes": ("counter", set()),
    "vidfs_http_requests": ("counter", {"provider", "kind", "status"}),
    "vidfs_http_retries": ("counter", {"kind"}),
    "vidfs_http_failures": ("counter", set()),
    "vidfs_url_resolutions": ("counter", set()),
    "vidfs_url_renewals": ("counter", {"reason"}),
    "vidfs_fuse_errors": ("counter", {"errno"}),
    "vidfs_cache_size_bytes": ("gauge", {"tier"}),
    "vidfs_cache_budget_bytes": ("gauge", {"tier"}),
    "vidfs_cache_blocks": ("counter", {"result"}),
    "vidfs_open_files": ("gauge", set()),
    "vidfs_fuse_read_duration_seconds": ("histogram", {"le"}),
    "vidfs_service_failures": ("counter", {"service"}),
    "vidfs_service_running": ("gauge", {"service"}),
    "vidfs_listing_fetches": ("counter", set()),
    "vidfs_listing_refreshes_deferred": ("counter", set()),
    "vidfs_listing_refreshes_queued": ("gauge", set()),
    "vidfs_control_connections": ("counter", {"outcome"}),
    "process_cpu_seconds": ("counter", set()),
}


# ------------------------------------------------------------------------------------------------ fixtures
pixop = emulator_fixture("pixop")


@pytest.fixture(scope="module")
def expected(pixop: Emulator) -> dict[str, Expect]:
    return expected_in_mount(pixop, "pixop", INSTANCE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metrics_config(tmp_path: Path, pixop: Emulator, listen: str, **cache: Any) -> Path:
    return write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: pixop.config("pixop")},
        cache_dir=tmp_path / "cache",
        cache=cache,
        extra=f'\n[metrics]\nlisten = "{listen}"\n',
    )


# ------------------------------------------------------------------------------------------------- helpers
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[dict[str, Any], Samples]:
    """The families by name and every sample by (name, sorted labels)."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def served(samples: Samples, source: str) -> float:
    return value(samples, "vidfs_served_bytes_total", source=source)


# Bytes served may exceed the file by a page or a few: under memory pressure (CI runs four workers, some
# reading 512 MiB) the kernel can drop a page it read ahead before the reader takes it, and ask for it again
# (seen once in five CI runs: 4,096 bytes more than the file).
SLACK = 64 * 1024


def read_uncached(path: Path) -> str:
    """The file's sha256, read through FUSE: its pages are dropped from the page cache first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return sha256_file(path)


def stats_document(mount: Mount) -> dict[str, Any]:
    return json.loads(os.getxattr(mount.path, STATS_XATTR))


def pick_file(expected: dict[str, Expect], low: int, high: int) -> tuple[str, Expect]:
    path = sorted(p for p, e in expected.items() if low <= e.size <= high)[0]
    return path, expected[path]


# --------------------------------------------------------------------------------------------------- tests
def test_families_types_labels_and_no_secret_in_labels(
    tmp_path: Path, pixop: Emulator, expected: dict[str, Expect], mounts: Any
) -> None:
    port = free_port()
    mount = mounts(metrics_config(tmp_path, pixop, f"127.0.0.1:{port}"))
    path, entry = pick_file(expected, 1 * MiB, 8 * MiB)
    assert sha256_file(mount.path / path) == entry.sha256
    assert not (mount.path / INSTANCE / "no such folder").exists()  # one ENOENT answered
    families, samples = scrape(port)

    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, (name, family.type)
        for sample in family.samples:
            assert set(sample.labels) <= labels, (name, sample.labels)
    names = [n for n in families if n.startswith("vidfs_")]
    assert all(n.islower() and " " not in n for n in names)
    counters = [n for n in names if families[n].type == "counter"]
    assert all(not n.endswith("_total") for n in counters)  # the parser strips it: the samples carry it
    assert {s.name for n in counters for s in families[n].samples} <= {f"{n}_total" for n in counters} | {
        f"{n}_created" for n in counters
    }

    sources = {s.labels["source"] for s in families["vidfs_served_bytes"].samples}
    assert {"memory", "disk", "shared", "network"} <= sources
    assert value(samples, "vidfs_served_bytes_total", source="shared") == 0
    providers = {(s.labels["provider"], s.labels["kind"]) for s in families["vidfs_http_requests"].samples}
    assert {(INSTANCE, "api"), (INSTANCE, "storage")} <= providers
    assert value(samples, "vidfs_http_requests_total", provider=INSTANCE, kind="storage", status="206") > 0
    assert value(samples, "vidfs_fuse_errors_total", errno="ENOENT") >= 1
    assert value(samples, "vidfs_cache_budget_bytes", tier="memory") > 0
    assert value(samples, "vidfs_cache_budget_bytes", tier="disk") > 0
    assert value(samples, "vidfs_service_running", service="metrics") == 1
    assert value(samples, "vidfs_service_running", service="control") == 1
    assert value(samples, "vidfs_uptime_seconds") > 0

    # No label value is a URL, a path, a file or folder name, a remote id or a secret.
    config = pixop.config("pixop")
    secrets = {str(v) for k, v in config.items() if k not in ("type",) and isinstance(v, str) and len(v) >= 4}
    secrets -= {config.get("type", "")}
    names_in_mount = set()
    for p, e in expected.items():
        names_in_mount |= set(Path(p).parts[1:]) | {Path(p).stem, e.remote_id}
    label_values = {v for family in families.values() for s in family.samples for v in s.labels.values()}
    for label in label_values:
        assert "/" not in label and "://" not in label and "?" not in label, label
        assert label not in names_in_mount, label
        assert not any(secret in label for secret in secrets), label


def test_metrics_move_with_reads(
    tmp_path: Path, pixop: Emulator, expected: dict[str, Expect], mounts: Any
) -> None:
    # A memory cache smaller than the file, a disk cache: the second read comes from disk and memory.
    port = free_port()
    mount = mounts(metrics_config(tmp_path, pixop, f"127.0.0.1:{port}", memory="1MiB", disk="256MiB"))
    path, entry = pick_file(expected, 3 * MiB, 16 * MiB)
    _, before = scrape(port)

    assert read_uncached(mount.path / path) == entry.sha256
    _, first = scrape(port)
    grown = {s: served(first, s) - served(before, s) for s in ("memory", "disk", "shared", "network")}
    assert entry.size <= sum(grown.values()) <= entry.size + SLACK, grown
    fetched = value(first, "vidfs_fetched_bytes_total") - value(before, "vidfs_fetched_bytes_total")
    assert fetched == entry.size
    # (the moov at the end was fetched ahead at open and may be read back from disk: memory is 1 MiB)
    assert grown["network"] > 0 and grown["shared"] == 0, grown
    reads = value(first, "vidfs_fuse_read_duration_seconds_count")
    assert reads > value(before, "vidfs_fuse_read_duration_seconds_count")
    assert value(first, "vidfs_fuse_read_duration_seconds_bucket", le="+Inf") == reads
    assert value(first, "vidfs_fuse_read_duration_seconds_sum") > 0

    def written() -> bool:  # the disk store writes behind the readers
        disk = stats_document(mount)["disk_cache"]
        return disk["queued_bytes"] == 0 and disk["bytes"] >= entry.size

    wait_until(written, "the disk cache to hold the file")
    assert read_uncached(mount.path / path) == entry.sha256
    _, second = scrape(port)
    again = {s: served(second, s) - served(first, s) for s in ("memory", "disk", "shared", "network")}
    assert entry.size <= sum(again.values()) <= entry.size + SLACK, again
    assert again["network"] == 0 and again["disk"] > 0, again
    assert value(second, "vidfs_fetched_bytes_total") == value(first, "vidfs_fetched_bytes_total")
    assert value(second, "vidfs_fuse_read_duration_seconds_count") > reads
    assert value(second, "vidfs_cache_size_bytes", tier="disk") >= entry.size


def test_an_address_in_use_is_one_line_and_the_mount_serves(
    tmp_path: Path, pixop: Emulator, expected: dict[str, Expect], mounts: Any
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        mount = mounts(metrics_config(tmp_path, pixop, f"127.0.0.1:{port}"))
        path, entry = pick_file(expected, 1 * MiB, 8 * MiB)
        assert sha256_file(mount.path / path) == entry.sha256
    lines = [line for line in mount.log_text().splitlines() if "metrics" in line]
    assert len(lines) == 1 and "no metrics endpoint" in lines[0] and "in use" in lines[0], lines
    assert "Traceback" not in mount.log_text()
    document = stats_document(mount)
    assert document["metrics"]["listening"] == 0
    assert document["services"]["metrics"]["failures"] == 0


@pytest.mark.parametrize(
    ("listen", "message"),
    [("9580", 'expected "HOST:PORT"'), ("127.0.0.1:0", "the port must be"), ("[::1]9580", "expected")],
)
def test_a_bad_listen_is_one_line(tmp_path: Path, pixop: Emulator, listen: str, message: str) -> None:
    config = metrics_config(tmp_path, pixop, listen)
    (tmp_path / "mnt").mkdir()
    result = subprocess.run(
        vidfs_cmd("mount", str(config), str(tmp_path / "mnt")), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"vidfs: error: {config}: [metrics] key 'listen': "), lines
    assert message in lines[0]


def test_the_commands_own_lines_carry_journal_priorities(tmp_path: Path, pixop: Emulator) -> None:
    """Under systemd (stderr is the stream JOURNAL_STREAM names) `vidfs: warning:` is `<4>` and `vidfs:
    error:` is `<3>`, with the same text (logs.say)."""
    config = metrics_config(tmp_path, pixop, f"127.0.0.1:{free_port()}")
    config.chmod(0o644)  # a warning: readable by others
    journal = tmp_path / "journal"
    with open(journal, "w") as stream:
        status = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        result = subprocess.run(
            vidfs_cmd("mount", str(config), str(tmp_path / "no such dir")),
            stderr=stream,
            stdout=subprocess.DEVNULL,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    lines = journal.read_text().splitlines()
    assert lines[0].startswith(f"<4>vidfs: warning: config file {config} is readable by group/others"), lines
    assert lines[-1].startswith("<3>vidfs: error: mount point "), lines
