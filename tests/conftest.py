"""Shared fixtures: emulators in subprocesses, real mounts through the CLI, cleanup by PID."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from vidfs.commands.demo import write_config

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 600.0  # the first emulator start generates the sample media


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long tests (soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: use --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared across runs when set (CI sets it once); else the user cache like the demo.
    configured = os.environ.get("VIDFS_MEDIA_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "vidfs" / "emulator-media"


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60.0, poll: float = 0.05) -> None:
    """Wait for a condition, polling, with a deadline (the one way tests wait for something)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout}s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    endpoints: dict[str, Any]
    workdir: Path

    def config(self, name: str) -> dict[str, Any]:
        return dict(self.endpoints[name]["config"])

    def control(self, name: str) -> str:
        """The control API root of an emulated provider, ending in `/_emulator`."""
        return str(self.endpoints[name]["control_url"]).rstrip("/")

    def catalog(self, name: str) -> dict[str, Any]:
        return httpx.get(f"{self.control(name)}/catalog", timeout=30).json()

    def requests(self, name: str) -> list[dict[str, Any]]:
        return httpx.get(f"{self.control(name)}/requests", timeout=30).json()

    def post(self, name: str, what: str, body: Any) -> Any:
        response = httpx.post(f"{self.control(name)}/{what}", json=body, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None


def start_emulator(workdir: Path, providers: list[str], media_dir: Path, *extra: str) -> Emulator:
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "emulator.json"
    args = [sys.executable, "-m", "vidfs.emulator", "--ready-file", str(ready), "--media-dir", str(media_dir)]
    for name in providers:
        args += ["--provider", name]
    log = open(workdir / "emulator.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    log.close()
    try:
        _wait_for_file(ready, process, "emulator", START_TIMEOUT)
    except RuntimeError:
        stop_process(process)
        raise RuntimeError((workdir / "emulator.log").read_text()[-4000:]) from None
    return Emulator(process, json.loads(ready.read_text()), workdir)


@dataclass
class Mount:
    path: Path
    config: Path
    log_file: Path
    pid: int
    extra_args: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


def vidfs_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidfs", *args]


def mount_config(config: Path, mountpoint: Path, log_file: Path, *extra: str) -> Mount:
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        vidfs_cmd(
            "mount", "--daemon", str(config), str(mountpoint), "--log-file", str(log_file), "-v", *extra
        ),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        log = log_file.read_text() if log_file.exists() else ""
        raise RuntimeError(f"mount failed ({result.returncode}): {result.stderr}\n{log}")
    pid = int(result.stdout.split("pid ", 1)[1].split(";", 1)[0])
    return Mount(mountpoint, config, log_file, pid, list(extra))


def unmount(mount: Mount) -> None:
    subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True, check=False, timeout=60)
    deadline = time.monotonic() + 20
    while _alive(mount.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(mount.pid):
        os.kill(mount.pid, signal.SIGKILL)
        subprocess.run(["fusermount3", "-uz", str(mount.path)], capture_output=True, check=False, timeout=60)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (it is not: --daemon detaches), else probe.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(providers: dict[str, dict[str, Any]], *, extra: str = "", name: str = "vidfs.toml") -> Path:
        return write_config(tmp_path / name, providers, cache_dir=tmp_path / "cache", extra=extra)

    return make


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Any]:
    """Mount configs through the CLI; every mount is unmounted and its daemon ended at teardown."""
    made: list[Mount] = []

    def mount(config: Path, *extra: str, name: str = "mnt") -> Mount:
        m = mount_config(config, tmp_path / name, tmp_path / f"{name}.log", *extra)
        made.append(m)
        return m

    yield mount
    for m in made:
        unmount(m)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
