"""Faults: nothing hangs, nothing is corrupt. Every provider in the contract table runs every test.

Each test switches a fault on in the provider's emulator (on the byte-serving requests), reads through a
fresh mount, and checks the outcome: byte-identical data, or the right errno within the mount's request
timeout. Faults are switched off again at the end of each test.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Emulator, Mount, start_emulator, stop_process, wait_until
from tests.providers import CASES, Case, Expect, case_emulator
from vidfs.commands.demo import write_config

INSTANCE = "p"
REQUEST_TIMEOUT = 12  # room for a fault's retries within one FUSE request
STALL_TIMEOUT = 4  # where nothing can succeed: the bound the test waits for (twice: the kernel reads again)
FAULT_CONFIG = """
[mount]
request_timeout = {request_timeout}

[http]
retries = 4
read_timeout = 2.0
connect_timeout = 2.0
"""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class Scene:
    def __init__(self, case: Case, emulator: Emulator, workdir: Path) -> None:
        self.case = case
        self.emulator = emulator
        self.workdir = workdir

    def expected(self) -> dict[str, Expect]:
        return self.case.expected(self.emulator.catalog(self.case.name))

    def faults(self, *rules: dict[str, Any]) -> None:
        body = [{"path": self.case.storage_path, **rule} for rule in rules]
        self.emulator.post(self.case.name, "faults", {"rules": body, "seed": 7})

    def fired(self) -> int:
        snapshot = self.emulator.post(self.case.name, "faults", {"rules": [], "seed": 7})
        return sum(rule.get("fired", 0) for rule in snapshot.get("rules", []))

    def fired_now(self) -> int:
        import httpx

        data = httpx.get(f"{self.emulator.control(self.case.name)}/faults", timeout=30).json()
        return sum(rule.get("fired", 0) for rule in data.get("rules", []))

    def mid_file(self) -> tuple[str, Expect]:
        """A file of a few MB: big enough for several requests, small enough to read often."""
        files = {rel: e for rel, e in self.expected().items() if 1 << 20 <= e.size <= 8 << 20}
        return max(files.items(), key=lambda item: (item[1].size, item[0]))

    def big_file(self) -> tuple[str, Expect]:
        return max(self.expected().items(), key=lambda item: (item[1].size, item[0]))


@pytest.fixture(scope="module", params=sorted(CASES))
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, media_dir: Path
) -> Iterator[Scene]:
    with case_emulator(request, tmp_path_factory, media_dir, "faults") as (case, emulator, workdir):
        yield Scene(case, emulator, workdir)


@pytest.fixture
def mounted(scene: Scene, tmp_path: Path, mounts: Any, request: pytest.FixtureRequest) -> Iterator[Mount]:
    """A fresh mount (no disk cache) with FAULT_CONFIG; a test marked `request_timeout(N)` gets N seconds."""
    marker = request.node.get_closest_marker("request_timeout")
    config = write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: scene.emulator.config(scene.case.name)},
        cache_dir=tmp_path / "cache",
        cache={"disk": "0", "memory": "64MiB"},
        extra=FAULT_CONFIG.format(request_timeout=marker.args[0] if marker else REQUEST_TIMEOUT),
    )
    mount = mounts(config)
    try:
        yield mount
    finally:
        scene.faults()  # switch every fault off


TRANSIENT = {
    "5xx burst": [
        {"kind": "status", "status": 503, "count": 3},
        {"kind": "status", "status": 502, "count": 2},
    ],
    "429 + Retry-After": [{"kind": "retry_after", "seconds": 1, "count": 2}],
    "reset mid-body": [{"kind": "reset_after", "bytes": 100_000, "count": 3}],
    "stall past the read timeout": [{"kind": "stall", "seconds": 4, "count": 1}],
    "Range ignored": [{"kind": "ignore_range", "count": 2}],
    "short body": [{"kind": "short_body", "bytes": 1000, "count": 2}],
    "wrong Content-Range": [{"kind": "wrong_content_range", "shift": 4096, "count": 2}],
    "latency": [{"kind": "latency", "seconds": 0.3, "count": 5}],
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_transient_faults_give_identical_bytes(scene: Scene, mounted: Mount, fault: str) -> None:
    rel, expect = scene.mid_file()
    scene.faults(*TRANSIENT[fault])
    data = _read_all(mounted.path / INSTANCE / rel)
    assert len(data) == expect.size
    assert _sha256(data) == expect.sha256
    assert scene.fired_now() >= 1, "the fault never fired: the test proved nothing"


def test_persistent_5xx_is_eio_within_the_timeout(scene: Scene, mounted: Mount) -> None:
    rel, _ = scene.mid_file()
    os.stat(mounted.path / INSTANCE / rel)  # the listing is cached before the storage breaks
    scene.faults({"kind": "status", "status": 503})
    with pytest.raises(OSError) as info:
        _read_all(mounted.path / INSTANCE / rel)
    assert info.value.errno == errno.EIO
    assert "Traceback" not in mounted.log_text()


@pytest.mark.request_timeout(STALL_TIMEOUT)
def test_stall_longer_than_the_request_timeout_is_eio_not_a_hang(scene: Scene, mounted: Mount) -> None:
    rel, _ = scene.mid_file()
    os.stat(mounted.path / INSTANCE / rel)
    scene.faults({"kind": "stall", "seconds": 120, "before_headers": True})
    # The stalled server would answer correctly after 120 s: EIO proves the request timeout cut it short.
    with pytest.raises(OSError) as info:
        _read_all(mounted.path / INSTANCE / rel)
    assert info.value.errno == errno.EIO
    assert "no answer within" in mounted.log_text() or "timed out" in mounted.log_text()


def _need(scene: Scene) -> Any:
    if scene.case.mutate is None:
        pytest.skip(f"the {scene.case.name} emulator has no mutate hook in tests/providers.py")
    return scene.case.mutate


def test_changed_file_fails_with_estale_never_mixed_bytes(scene: Scene, mounted: Mount) -> None:
    mutate = _need(scene)
    rel, expect = scene.big_file()
    path = mounted.path / INSTANCE / rel
    with open(path, "rb", buffering=0) as handle:
        head = handle.read(64 * 1024)
        with open(expect.source, "rb") as source:
            assert head == source.read(64 * 1024)
        mutate(scene.emulator, "change_content", expect.remote_id)
        with pytest.raises(OSError) as info:
            os.pread(handle.fileno(), 256 * 1024, expect.size // 2)
        assert info.value.errno == errno.ESTALE
    # The listing is refreshed: a new open reads the new content, whole and identical.
    changed = {e.remote_id: e for e in scene.expected().values()}[expect.remote_id]

    def reads_new_content() -> bool:
        try:
            return _sha256(_read_all(path)) == changed.sha256
        except OSError as exc:
            assert exc.errno == errno.ESTALE, exc  # until the kernel's cached attributes expire
            return False

    wait_until(reads_new_content, "the changed file to read whole and new", 30)


def test_vanished_video_is_enoent(scene: Scene, mounted: Mount) -> None:
    mutate = _need(scene)
    rel, expect = min(scene.expected().items(), key=lambda item: (item[1].size, item[0]))
    path = mounted.path / INSTANCE / rel
    os.stat(path)
    mutate(scene.emulator, "delete", expect.remote_id)
    with pytest.raises(OSError) as info:
        _read_all(path)
    assert info.value.errno == errno.ENOENT
    wait_until(lambda: not path.exists(), "the vanished video to leave the listing", 30)


def test_expired_tokens_are_renewed(scene: Scene, mounted: Mount) -> None:
    mutate = _need(scene)
    rel, expect = scene.mid_file()
    path = mounted.path / INSTANCE / rel
    os.stat(path)
    mutate(scene.emulator, "expire_tokens", "")
    assert _sha256(_read_all(path)) == expect.sha256


@pytest.mark.parametrize("name", sorted(CASES))
def test_remote_down_serves_cached_data_and_fails_uncached_reads(
    name: str, tmp_path: Path, media_dir: Path, mounts: Any
) -> None:
    case = CASES[name]
    emulator = start_emulator(tmp_path / "emulator", [name], media_dir)
    try:
        expected = case.expected(emulator.catalog(name))
        config = write_config(
            tmp_path / "vidfs.toml",
            {INSTANCE: emulator.config(name)},
            cache_dir=tmp_path / "cache",
            cache={"disk": "0"},
            extra=FAULT_CONFIG.format(request_timeout=REQUEST_TIMEOUT),
        )
        mount = mounts(config)
        root = mount.path / INSTANCE
        files = sorted(expected, key=lambda rel: (expected[rel].size, rel))
        cached, uncached = files[0], files[-1]
        data = _read_all(root / cached)
        assert _sha256(data) == expected[cached].sha256
        listing = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    finally:
        stop_process(emulator.process)
    # The remote is gone: the tree and the cached file are still there, an uncached read is EIO.
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == listing
    assert _sha256(_read_all(root / cached)) == expected[cached].sha256
    for _ in range(2):
        with pytest.raises(OSError) as info, open(root / uncached, "rb") as handle:
            handle.seek(expected[uncached].size // 2)
            handle.read(65536)
        assert info.value.errno == errno.EIO
    assert "unreachable" in mount.log_text()
