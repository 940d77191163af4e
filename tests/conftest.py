"""Shared fixtures: emulators in subprocesses, real mounts through the CLI, cleanup by PID.

- `running_emulator` / `emulator_fixture`: the vendor emulators in a subprocess, ended by PID at the end
  (`pixop = emulator_fixture("pixop")` in a module gives it a module-scoped `pixop` fixture);
- `mounts` (a fixture), `running_mount`, `mount_config` / `unmount`: real mounts through the CLI;
- `redis_cluster` / `cluster` / `origin`: a 3-master Redis Cluster (one per test session and
  worker, flushed and healed around each test) and the plain web server the fleet tests read from;
- `wait_until`: the one way a test waits for something.

`pytest -n N` runs the suite in N worker processes: tests/parallel.py says which tests run together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from vidfs.commands.demo import write_config
from vidfs.emulator import media

if TYPE_CHECKING:
    from tests.fleet_origin import Origin
    from tests.redis_cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 600.0  # the first emulator start generates the sample media


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long tests (soak)")


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):  # `-n N`: the groups and their order (tests/parallel.py)
        from tests.parallel import Parallel

        config.pluginmanager.register(Parallel(config), "vidfs-parallel")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: use --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The emulators' sample media, generated once (with ffmpeg) on first use: $VIDFS_MEDIA_DIR, else the
    user cache like the demo. Test processes that start together (pytest-xdist workers) wait for each
    other: each sample is generated under an exclusive lock (vidfs.emulator.media)."""
    directory = media.media_dir()
    media.ensure_all(directory)
    return directory


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60.0, poll: float = 0.05) -> None:
    """Wait for a condition, polling, with a deadline (the one way tests wait for something)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def most_in_flight(entries: list[dict[str, Any]]) -> int:
    """The most requests an emulator was answering at once, from its log entries' start and duration. An
    entry without a duration yet counts as in flight to the end: the emulator completes an entry after the
    last byte of its answer went out, so a client may have its answer (and its test read the log) first."""
    ends = [e["time"] + e["duration"] if e["duration"] is not None else math.inf for e in entries]
    edges = sorted([(e["time"], 1) for e in entries] + [(end, -1) for end in ends])
    current = most = 0
    for _when, step in edges:
        current += step
        most = max(most, current)
    return most


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


@contextlib.contextmanager
def running_emulator(
    workdir: Path, providers: Sequence[str], media_dir: Path, *extra: str
) -> Iterator[Emulator]:
    """The emulators of `providers` for the block's duration (ended by PID after it)."""
    emulator = start_emulator(workdir, list(providers), media_dir, *extra)
    try:
        yield emulator
    finally:
        stop_process(emulator.process)


def emulator_fixture(*providers: str, extra: Sequence[str] = (), scope: str = "module") -> Any:
    """A fixture running the emulators of `providers` (with `extra` command-line arguments) for `scope`.
    Assign it to the fixture's name in a test module: `pixop = emulator_fixture("pixop")`."""

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Iterator[Emulator]:
        workdir = tmp_path_factory.mktemp("-".join(providers) + "-emulator")
        with running_emulator(workdir, providers, media_dir, *extra) as emulator:
            yield emulator

    return fixture


@dataclass
class Mount:
    path: Path
    config: Path
    log_file: Path
    pid: int
    extra_args: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def stats(self) -> dict[str, Any]:
        """The daemon's statistics document (the `user.vidfs.stats` xattr of the mount root)."""
        document: dict[str, Any] = json.loads(os.getxattr(self.path, "user.vidfs.stats"))
        return document


def pid_from(output: str) -> int:
    """The daemon's PID from `vidfs mount --daemon`'s line ("mounted …; pid N; …")."""
    assert "pid " in output, output
    return int(output.split("pid ", 1)[1].split(";", 1)[0])


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
    return Mount(mountpoint, config, log_file, pid_from(result.stdout), list(extra))


def unmount(mount: Mount) -> None:
    subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True, check=False, timeout=60)
    deadline = time.monotonic() + 20
    while alive(mount.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(mount.pid):
        os.kill(mount.pid, signal.SIGKILL)
        subprocess.run(["fusermount3", "-uz", str(mount.path)], capture_output=True, check=False, timeout=60)


@contextlib.contextmanager
def running_mount(config: Path, mountpoint: Path, log_file: Path, *extra: str) -> Iterator[Mount]:
    """A mount for the block's duration (unmounted, its daemon ended, after it)."""
    mount = mount_config(config, mountpoint, log_file, *extra)
    try:
        yield mount
    finally:
        unmount(mount)


def alive(pid: int) -> bool:
    """Is process `pid` running (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`make_config(providers, extra=..., cache=...)`: a private config in the test's directory, its cache
    dir there too (`cache`: [cache] keys besides `dir`)."""

    def make(
        providers: dict[str, dict[str, Any]],
        *,
        extra: str = "",
        name: str = "vidfs.toml",
        cache: dict[str, Any] | None = None,
    ) -> Path:
        return write_config(
            tmp_path / name, providers, cache_dir=tmp_path / "cache", extra=extra, cache=cache
        )

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


def ffprobe(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ffprobe -v error ARGS PATH` (within 120 s), its output as text; the caller judges the status."""
    command = ["ffprobe", "-v", "error", *args, str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def ffprobe_duration(path: Path) -> float:
    """The container's duration in seconds, as ffprobe reads it from `path`."""
    result = ffprobe(path, "-show_entries", "format=duration", "-of", "csv=p=0")
    assert result.returncode == 0, (path, result.stderr)
    return float(result.stdout)


# ------------------------------------------------------------------------------------------------ the fleet
@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master Redis Cluster on 127.0.0.1 (skips where redis-server is not installed)."""
    from tests.redis_cluster import HAVE_REDIS, start_cluster

    if not HAVE_REDIS:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    started = start_cluster(tmp_path_factory.mktemp("redis"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster, empty; nodes a test killed are started again after it."""
    redis_cluster.flush()
    yield redis_cluster
    if redis_cluster.down:
        for index in sorted(redis_cluster.down):
            redis_cluster.nodes[index].start()
        redis_cluster.down.clear()
    wait_until(redis_cluster.healthy, "the cluster healthy", 60)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    """The fleet tests' vendor: a plain web server in this process (tests/fleet_origin.py)."""
    from tests.fleet_origin import start_origin

    served = start_origin(tmp_path / "www")
    try:
        yield served
    finally:
        served.site.close()
