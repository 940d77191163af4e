"""Chaos at the daemon: nothing a client, a signal or a second `vidfs mount` does may take a mount away.

Real mounts through the CLI over the Pixop emulator, read from this process with ordinary file calls:

1. the control socket is abused by 1,000 connections, 100 at once (clients that close before the answer,
   garbage, a 4 MiB line, clients that never send): the mount answers `ls` and reads identical bytes
   throughout, a well-formed request is still answered, and every abusive connection ends in bounded time;
2. SIGINT, SIGTERM or SIGHUP during reads, sent again and again until the daemon exits (an impatient user,
   a service manager's SIGTERM then SIGHUP): the mount is unmounted cleanly and the daemon exits 0;
3. a second `vidfs mount` (foreground, `--daemon`, the mount.fuse.vidfs helper) on a live mount point, vidfs
   or not, is refused with one line and exit 2, and the first mount is unharmed;
4. after `kill -9` of a daemon, `vidfs mount` on its dead mount point cleans it and mounts;
5. the supervisor itself, in process on a virtual clock: a failing service is restarted with bounded,
   jittered backoff, logged once and counted; a failing task never reaches its nursery; cancellation and
   KeyboardInterrupt pass through;
6. no log of these tests holds a traceback: every condition above is an expected one.

Figures (connections handled, seconds per round) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import (
    REPO,
    Emulator,
    Mount,
    alive,
    emulator_fixture,
    pid_from,
    sha256_file,
    unmount,
    vidfs_cmd,
    wait_until,
)
from tests.providers import Expect, expected_in_mount
from vidfs.daemon.supervisor import Supervisor
from vidfs.stats import Stats

INSTANCE = "a"
FOLDER = "Restoration demo"
CONTROL_XATTR = "user.vidfs.control"
ROUNDS, AT_ONCE = 10, 100  # 1,000 abusive connections, 100 at a time
BIG_LINE = b"x" * (4 << 20)  # a 4 MiB "request" without a newline
CLIENT_TIMEOUT = 60.0  # no abusive connection may stay open longer than this
GARBAGE = (
    b"\xff\xfe\x00\x80 not utf-8\n",
    b"[1, 2, 3]\n",
    b'"stats"\n',
    b"42\n",
    b'{"op": 7}\n',
    b"{not json\n",
    b'{"op": "pin", "path": ["x"]}\n',
    b'{"op": "pin", "path": "../../etc/passwd"}\n',
    b"\n",
    b"[" * 60_000 + b"\n",  # deeper than the JSON parser recurses
    b'{"op": "stats"',  # no newline: the answer comes at EOF
)
OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline, backslash as \NNN
LOGS: list[Path] = []  # every log these tests made, for the final traceback sweep


# ------------------------------------------------------------------------------------------------ fixtures
pixop = emulator_fixture("pixop")


@pytest.fixture(scope="module")
def expected(pixop: Emulator) -> dict[str, Expect]:
    """The files the mount must show and their digests, from the emulator's catalog."""
    return expected_in_mount(pixop, "pixop", INSTANCE)


@pytest.fixture
def config(pixop: Emulator, make_config: Any) -> Path:
    # A small memory cache and no disk cache: reads keep going to the emulator while the chaos runs.
    path: Path = make_config({INSTANCE: pixop.config("pixop")}, cache={"disk": "0", "memory": "4MiB"})
    return path


# ------------------------------------------------------------------------------------------------- helpers
def mount_types(path: Path) -> list[str]:
    """The file system types mounted exactly at `path`, bottom to top (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields, _, tail = line.partition(" - ")
            mount_point = OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields.split()[4])
            if mount_point == str(path):
                found.append(tail.split()[0])
    return found


def check_reads(root: Path, expected: dict[str, Expect], names: list[str]) -> None:
    """`ls` answers with every expected name, and each file reads back identical bytes."""
    listing = set(os.listdir(root / INSTANCE / FOLDER))
    assert {Path(p).name for p in expected if p.startswith(f"{INSTANCE}/{FOLDER}/")} <= listing
    for name in names:
        assert sha256_file(root / name) == expected[name].sha256, name


def mid_files(expected: dict[str, Expect], count: int) -> list[str]:
    """A few files of a few MB: several requests each, quick to read."""
    files = sorted(p for p, e in expected.items() if 1 << 20 <= e.size <= 8 << 20)
    return files[:count]


def control_path(mount: Path) -> str:
    return os.getxattr(mount, CONTROL_XATTR).decode()


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes (a reset counts as closed); bounded by the socket's
    timeout, which raises if the daemon keeps the connection open."""
    data = b""
    while len(data) < 1 << 20:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def refused_answer(data: bytes) -> bool:
    """An answer that says no (`{"ok": false, ...}` on one line), or no answer at all."""
    if not data:
        return True
    answer = json.loads(data.decode())
    return data.endswith(b"\n") and data.count(b"\n") == 1 and answer.get("ok") is False


def abuse(path: str, kind: str, serial: int) -> str:
    """One abusive connection of `kind`; returns the kind once the daemon has dealt with it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(path)
        if kind == "closes-early":  # asks, then leaves before the answer (`vidfs stats | head -c1`)
            sock.sendall(b'{"op": "stats"}\n')
            return kind
        if kind == "garbage":
            sock.sendall(GARBAGE[serial % len(GARBAGE)])
            sock.shutdown(socket.SHUT_WR)
            data = read_until_eof(sock)
            assert data and refused_answer(data), data[:200]
            return kind
        if kind == "big-line":
            try:
                sock.sendall(BIG_LINE)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon stopped reading and closed: what it should do
            assert refused_answer(read_until_eof(sock))
            return kind
        assert kind == "silent"  # connects and never sends: the daemon must hang up on its own
        assert refused_answer(read_until_eof(sock))
        return kind


def one_round(path: str, round_number: int) -> Counter[str]:
    kinds = ("closes-early", "garbage", "big-line", "silent")
    handled: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        serials = range(round_number * AT_ONCE, (round_number + 1) * AT_ONCE)
        futures = [pool.submit(abuse, path, kinds[serial % len(kinds)], serial) for serial in serials]
        handled.update(future.result(timeout=CLIENT_TIMEOUT * 2) for future in futures)
    return handled


def control_call(path: str, request: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer: dict[str, Any] = json.loads(read_until_eof(sock).decode())
        return answer


class Readers:
    """Threads reading files over and over (64 KiB at a time) until told to stop or the mount goes."""

    def __init__(
        self, root: Path, names: list[str], expected: dict[str, Expect] | None = None, pause: float = 0.0
    ) -> None:
        self.root = root
        self.expected = expected
        self.pause = pause  # between two passes over a file: readers need not take a whole core
        self.stop = threading.Event()
        self.bytes_read = 0
        self.mismatches: list[str] = []
        self.errors: list[int] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._read, args=(n,), daemon=True) for n in names]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT)
        assert not any(thread.is_alive() for thread in self.threads), "a reader hung"

    def _read(self, name: str) -> None:
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            digest = hashlib.sha256()
            try:
                with open(self.root / name, "rb") as handle:
                    while chunk := handle.read(64 << 10):
                        digest.update(chunk)
                        with self._lock:
                            self.bytes_read += len(chunk)
            except OSError as exc:
                if exc.errno == errno.ENOENT and not os.path.ismount(self.root):
                    return  # opened after the unmount: the bare mount point has no such file
                self.errors.append(exc.errno or 0)
                return
            if self.expected is not None and digest.hexdigest() != self.expected[name].sha256:
                self.mismatches.append(name)
            self.stop.wait(self.pause)


def mount_and_read(
    mounts: Any, config: Path, expected: dict[str, Expect], count: int
) -> tuple[Mount, list[str]]:
    """A mount of `config` (its log kept for the sweep) that lists and reads `count` files correctly."""
    mount: Mount = mounts(config)
    keep_log(mount.log_file)
    names = mid_files(expected, count)
    check_reads(mount.path, expected, names)
    return mount, names


def keep_log(log: Path) -> Path:
    """Remember a log for the final sweep (at once: a test that fails later still leaves it to be read)."""
    LOGS.append(log)
    return log


def no_traceback(*logs: Path) -> None:
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        assert "Traceback" not in text, f"{log}:\n{text[-6000:]}"


# ---------------------------------------------------------------------------------------------------- tests
def test_chaos_control_socket_abuse_never_reaches_the_mount(
    config: Path, expected: dict[str, Expect], mounts: Any
) -> None:
    mount, names = mount_and_read(mounts, config, expected, 3)
    path = control_path(mount.path)
    started = time.monotonic()
    handled: Counter[str] = Counter()
    with Readers(mount.path, names[:2], expected, pause=0.2) as readers:
        for round_number in range(ROUNDS):
            handled += one_round(path, round_number)
            assert alive(mount.pid), f"the daemon died in round {round_number}"
            check_reads(mount.path, expected, names[2:])
            assert control_call(path, {"op": "stats"})["ok"] is True
    elapsed = time.monotonic() - started
    assert readers.mismatches == [] and readers.errors == []
    assert sum(handled.values()) == ROUNDS * AT_ONCE
    document = control_call(path, {"op": "stats"})["stats"]
    counters = document["counters"]
    assert counters.get("control.connections", 0) >= ROUNDS * AT_ONCE
    for kind in ("too_long", "silent"):  # each of these abuses was seen for what it is
        assert counters.get(f"control.{kind}", 0) >= ROUNDS * AT_ONCE // 4, kind
    # A client that closes at once is usually gone before its answer is sent, but the answer may also
    # make it into the socket buffer first: both are fine, neither harms the mount.
    assert counters.get("control.client_gone", 0) > 0
    services = document["services"]
    assert services["control"]["running"] == 1 and services["control"]["failures"] == 0
    assert services["control-connection"]["failures"] == 0  # every abuse was an expected condition
    assert mount_types(mount.path) == ["fuse.vidfs"]
    print(
        f"\nchaos control socket: {sum(handled.values())} abusive connections ({dict(handled)}), "
        f"{AT_ONCE} at once, in {elapsed:.1f} s; {readers.bytes_read / 1e6:.0f} MB read meanwhile; "
        f"daemon counters: { {k: v for k, v in counters.items() if k.startswith('control.')} }"
    )
    no_traceback(mount.log_file)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_chaos_signal_during_reads_unmounts_cleanly(
    tmp_path: Path, config: Path, expected: dict[str, Expect], signum: signal.Signals
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log_file, output = keep_log(tmp_path / "mount.log"), keep_log(tmp_path / "mount.out")
    with open(output, "wb") as out:
        process = subprocess.Popen(
            vidfs_cmd("mount", str(config), str(mountpoint), "--log-file", str(log_file), "-v"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        wait_until(lambda: mount_types(mountpoint) == ["fuse.vidfs"], "the mount", 120)
        with Readers(mountpoint, mid_files(expected, 4)) as readers:
            wait_until(lambda: readers.bytes_read > 4 << 20, "reads under way", 120)
            code = keep_signalling(process, signum)
        assert code == 0, output.read_text()
        assert mount_types(mountpoint) == []
        assert set(readers.errors) <= {errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENODEV}
        log = log_file.read_text()
        assert f"received {signum.name}" in log and f"unmounted {mountpoint}" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if mount_types(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=60)
    no_traceback(log_file, output)


def keep_signalling(process: subprocess.Popen[bytes], signum: signal.Signals) -> int:
    """Send `signum`, and again every 20 ms until the process exits (a user hammering Ctrl-C, a service
    manager's SIGTERM and SIGHUP): later ones land while it unmounts. Returns the exit status."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        process.send_signal(signum)
        try:
            return process.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError(f"the mount did not exit within 120 s of {signum.name}")


def refused(result: subprocess.CompletedProcess[str], code: int, mountpoint: Path) -> None:
    if result.returncode == 0 and "; pid " in result.stdout:  # it mounted on top: end that one first
        pid = pid_from(result.stdout)
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=60)
        wait_until(lambda: not alive(pid), "the stacked daemon to exit", 60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stdout + result.stderr
    assert len(lines) == 1 and str(mountpoint) in lines[0] and "already" in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr


def test_chaos_second_mount_is_refused_and_the_first_unharmed(
    tmp_path: Path, config: Path, expected: dict[str, Expect], mounts: Any
) -> None:
    first, names = mount_and_read(mounts, config, expected, 2)
    second_log = keep_log(tmp_path / "second.log")
    attempts = {
        "daemon": vidfs_cmd("mount", "--daemon", str(config), str(first.path), "--log-file", str(second_log)),
        "foreground": vidfs_cmd("mount", str(config), str(first.path), "--log-file", str(second_log)),
    }
    with Readers(first.path, names[:1], expected) as readers:
        for command in attempts.values():
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
            refused(result, 2, first.path)
        helper = [sys.executable, "-m", "vidfs.commands.mount_helper", str(config), str(first.path)]
        result = subprocess.run(helper, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode != 0 and "already" in result.stderr, result.stderr
        assert mount_types(first.path) == ["fuse.vidfs"]
        check_reads(first.path, expected, names)
    assert readers.mismatches == [] and readers.errors == []
    assert alive(first.pid)
    # Not only vidfs: any live mount there is refused.
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(other)], check=True, timeout=60)
    try:
        command = vidfs_cmd("mount", "--daemon", str(config), str(other), "--log-file", str(second_log))
        refused(subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO), 2, other)
        assert mount_types(other) == ["tmpfs"]
    finally:
        subprocess.run(["umount", str(other)], capture_output=True, timeout=60)
    no_traceback(first.log_file, second_log)


def test_chaos_mount_on_the_dead_mount_point_of_a_killed_daemon(
    tmp_path: Path, config: Path, expected: dict[str, Expect], mounts: Any
) -> None:
    first, names = mount_and_read(mounts, config, expected, 1)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not alive(first.pid), "the daemon to die", 60)
    with pytest.raises(OSError) as dead:
        os.listdir(first.path)
    assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert mount_types(first.path) == ["fuse.vidfs"]  # dead, but still there
    log = keep_log(tmp_path / "second.log")
    command = vidfs_cmd("mount", "--daemon", str(config), str(first.path), "--log-file", str(log), "-v")
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO)
    second = None
    try:
        assert result.returncode == 0, result.stdout + result.stderr + log.read_text()
        second = Mount(first.path, config, log, pid_from(result.stdout))
        assert mount_types(second.path) == ["fuse.vidfs"]  # the dead one is gone, not stacked under
        check_reads(second.path, expected, names)
        assert alive(second.pid)
        assert f"cleaned a dead fuse.vidfs mount at {first.path}" in result.stderr
    finally:
        if second is not None:
            unmount(second)
    no_traceback(log)


# ------------------------------------------------------------------------------ the supervisor, in process
async def test_chaos_supervisor_restarts_a_failing_service_with_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vidfs.daemon.supervisor")
    stats = Stats()
    supervisor = Supervisor(stats, seed=12)
    runs: list[float] = []
    healthy = trio.Event()

    async def writer(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(trio.current_time())
        if len(runs) <= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        task_status.started()
        healthy.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await supervisor.bind(nursery).start_service("writer", writer)  # returns though the first run failed
        await healthy.wait()
        assert supervisor.statistics()["writer"]["running"] == 1
        nursery.cancel_scope.cancel()
    assert supervisor.statistics()["writer"] == {
        "kind": "service",
        "running": 0,
        "starts": 4,
        "failures": 3,
        "last_error": "OSError: [Errno 28] No space left on device",
    }
    assert stats.counters["services.writer.failures"] == 3 and stats.counters["services.writer.restarts"] == 3
    backoff = supervisor.backoff  # virtual time: the delays are the policy's, jittered within their bounds
    for attempt, (before, after) in enumerate(itertools.pairwise(runs), 1):
        ceiling = min(backoff.longest, backoff.first * 2 ** (attempt - 1))
        assert ceiling / 2 <= after - before <= ceiling
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # once, with its traceback
    assert "writer failed: OSError" in errors[0].getMessage()


async def test_chaos_task_guard_keeps_failures_from_the_nursery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vidfs.daemon.supervisor")
    stats = Stats()
    supervisor = Supervisor(stats)
    done: list[int] = []

    async def fails(serial: int) -> None:
        raise RuntimeError("dictionary changed size during iteration")

    async def works(serial: int) -> None:
        await trio.lowlevel.checkpoint()
        done.append(serial)

    async with trio.open_nursery() as nursery:  # ends normally: no failure reached it
        guard = supervisor.bind(nursery).tasks("block-fetch")
        for serial in range(5):
            guard.start_soon(fails, serial)
            guard.start_soon(works, serial)
    assert sorted(done) == list(range(5))
    assert stats.counters["services.block-fetch.failures"] == 5
    assert supervisor.statistics()["block-fetch"]["starts"] == 10
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_chaos_supervisor_lets_cancellation_and_keyboard_interrupt_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor(Stats())
    ended: list[str] = []

    async def service() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append("service")

    with trio.move_on_after(10) as deadline:
        async with trio.open_nursery() as nursery:
            await supervisor.bind(nursery).start_service("idle", service)
    assert deadline.cancelled_caught and ended == ["service"]
    assert supervisor.statistics()["idle"]["starts"] == 1  # cancelled, not restarted
    assert supervisor.statistics()["idle"]["failures"] == 0

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            supervisor.bind(nursery).tasks("interrupted").start_soon(interrupted)
    assert raised.value.subgroup(KeyboardInterrupt) is not None
    assert supervisor.statistics()["interrupted"]["failures"] == 0


def test_chaos_no_traceback_in_any_log() -> None:
    """The sweep: every log the tests above wrote (each also checked its own) is free of tracebacks."""
    if not LOGS:
        pytest.skip("run with the other chaos tests of this module: they make the logs")
    for log in LOGS:
        assert log.exists(), log
        assert "Traceback" not in log.read_text(errors="replace"), log
