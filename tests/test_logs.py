"""Logs under a service manager: `<N>` journal priorities, no timestamps of ours, one line per record.

systemd connects a service's stderr to journald and names that stream in `JOURNAL_STREAM=<dev>:<ino>`.
Here the "journal" is a pipe the test reads, and `JOURNAL_STREAM` names that pipe's device and inode, as
systemd would name its socket. The mount runs for real through the CLI, in the foreground; a warning is
provoked with the emulator's fault switch (a listing answered 503), and every line the mount wrote is read.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REPO,
    Emulator,
    Mount,
    emulator_fixture,
    unmount,
    vidfs_cmd,
    wait_until,
)
from vidfs.commands.demo import write_config

PROVIDER = "web"
PREFIXED = re.compile(r"<([0-7])>(\S.*)$")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\b\d\d:\d\d:\d\d\b")


@dataclass
class Journal:
    """A pipe standing in for journald's stream socket: its `dev:ino`, and the lines written to it."""

    read_fd: int
    write_fd: int
    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @classmethod
    def open(cls) -> Journal:
        read_fd, write_fd = os.pipe()
        journal = cls(read_fd, write_fd)
        journal._reader = threading.Thread(target=journal._read, name="journal-reader", daemon=True)
        journal._reader.start()
        return journal

    @property
    def stream_id(self) -> str:
        status = os.fstat(self.write_fd)
        return f"{status.st_dev}:{status.st_ino}"

    def run(
        self, command: list[str], env: dict[str, str], **options: Any
    ) -> subprocess.CompletedProcess[Any]:
        """`command` with this journal as its stderr (stdin closed, in the repository, status not checked)."""
        return subprocess.run(
            command, stdin=subprocess.DEVNULL, stderr=self.write_fd, env=env, cwd=REPO, check=False, **options
        )

    def _read(self) -> None:
        pending = b""
        while chunk := os.read(self.read_fd, 65536):  # ends at EOF: every writer closed its end
            pending += chunk
            *complete, pending = pending.split(b"\n")
            with self._lock:
                self.lines.extend(line.decode("utf-8", "replace") for line in complete)
        if pending:
            with self._lock:
                self.lines.append(pending.decode("utf-8", "replace"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def close_writer(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def finish(self) -> list[str]:
        """All lines, once every writer is gone (the reader saw EOF)."""
        self.close_writer()
        assert self._reader is not None
        self._reader.join(timeout=30)
        assert not self._reader.is_alive(), "a process still holds the journal pipe open"
        os.close(self.read_fd)
        return self.snapshot()


http_site = emulator_fixture("http")


@pytest.fixture
def config(tmp_path: Path, http_site: Emulator) -> Path:
    http_site.post("http", "faults", {"rules": []})
    # No retries: the 503 below becomes the listing's failure at once.
    return write_config(
        tmp_path / "vidfs.toml",
        {PROVIDER: http_site.config("http")},
        cache_dir=tmp_path / "cache",
        extra="[http]\nretries = 0\n",
    )


def run_in_foreground(config: Path, mountpoint: Path, journal: Journal) -> subprocess.Popen[bytes]:
    mountpoint.mkdir()
    env = {**os.environ, "JOURNAL_STREAM": journal.stream_id}
    env.pop("INVOCATION_ID", None)
    return subprocess.Popen(
        vidfs_cmd("mount", str(config), str(mountpoint), "-v"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=journal.write_fd,
        env=env,
        cwd=REPO,
    )


def end_mount(process: subprocess.Popen[bytes], mountpoint: Path) -> int:
    """SIGTERM to the mount's PID (it unmounts and exits), with fusermount3 as the fallback."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if os.path.ismount(mountpoint):
            subprocess.run(
                ["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=60, check=False
            )
    return code


def assert_journal_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Every line is `<N>text` without a timestamp of ours; returns (priority, text) pairs."""
    assert lines, "the mount wrote nothing to stderr"
    records = []
    for line in lines:
        match = PREFIXED.match(line)
        assert match, f"not a journal line (no <N> prefix, or a continuation line): {line!r}"
        assert not TIMESTAMP.search(match.group(2)), f"a timestamp of our own: {line!r}"
        records.append((int(match.group(1)), match.group(2)))
    return records


def test_mount_logs_journal_priorities_under_systemd(
    tmp_path: Path, config: Path, http_site: Emulator
) -> None:
    journal = Journal.open()
    mountpoint = tmp_path / "mnt"
    process = run_in_foreground(config, mountpoint, journal)
    journal.close_writer()  # the mount holds the only write end now: its exit is the reader's EOF
    try:
        wait_until(lambda: os.path.ismount(mountpoint) or process.poll() is not None, "the mount", 120)
        assert os.path.ismount(mountpoint), journal.snapshot()
        # The vendor answers the folder's listing with 503 from now on (before the root is listed: the
        # mount lists subdirectories ahead, in the background, when their parent is listed).
        http_site.post("http", "faults", {"rules": [{"kind": "status", "status": 503, "path": "Archive"}]})
        assert "interview.mp4" in os.listdir(mountpoint / PROVIDER)
        # A missing name is not a warning (ls and players probe for names all the time)...
        assert not (mountpoint / PROVIDER / "no such video.mp4").exists()
        # ...a listing the vendor answers with 503 is.
        with pytest.raises(OSError):
            os.listdir(mountpoint / PROVIDER / "Archive 1987")
        wait_until(lambda: any(line.startswith("<4>") for line in journal.snapshot()), "the warning", 60)
    finally:
        http_site.post("http", "faults", {"rules": []})
        code = end_mount(process, mountpoint)
    lines = journal.finish()
    assert code == 0, lines
    records = assert_journal_lines(lines)

    warnings = [text for priority, text in records if priority == 4]
    assert len(warnings) == 1, records  # logged once, with its cause
    assert "opendir" in warnings[0] and "Archive" in warnings[0] and "503" in warnings[0], warnings
    infos = [text for priority, text in records if priority == 6]
    assert any(text.startswith("vidfs.daemon.mount: mounted ") for text in infos), records
    assert any(text.startswith("vidfs.daemon.mount: unmounted ") for text in infos), records
    assert not any("no such video" in text for _, text in records), records
    assert {priority for priority, _ in records} <= {4, 6}, records  # -v: info and up, nothing failed more


def test_daemon_log_file_keeps_its_timestamps_under_systemd(
    tmp_path: Path, config: Path, http_site: Emulator
) -> None:
    """`JOURNAL_STREAM` is inherited by the daemon's serving child, but its stderr is a log file: no <N>."""
    journal = Journal.open()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log_file = tmp_path / "mount.log"
    env = {**os.environ, "JOURNAL_STREAM": journal.stream_id}
    command = vidfs_cmd("mount", "--daemon", str(config), str(mountpoint), "--log-file", str(log_file), "-v")
    result = journal.run(command, env, stdout=subprocess.PIPE, timeout=180, text=True)
    journal.close_writer()
    assert result.returncode == 0, (result.stdout, journal.snapshot())
    mount = Mount(mountpoint, config, log_file, int(result.stdout.split("pid ", 1)[1].split(";", 1)[0]))
    try:
        assert "interview.mp4" in os.listdir(mountpoint / PROVIDER)
    finally:
        unmount(mount)
    assert journal.finish() == []
    lines = log_file.read_text().splitlines()
    assert any(" INFO vidfs.daemon.mount: mounted " in line for line in lines), lines
    for line in lines:
        assert not line.startswith("<"), line
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ", line), line


PROGRAM = """
import logging, sys, warnings
from vidfs.logs import say, setup_logging
setup_logging(verbose=2)
log = logging.getLogger("vidfs.probe")
log.debug("debug record")
log.info("info record")
log.warning("warning record\\nwith a second line")
log.error("error record")
try:
    {}["missing key"]
except KeyError:
    log.exception("failed on purpose")
warnings.warn("a Python warning")
say(logging.ERROR, "vidfs: error: one line for the user")
raise RuntimeError("uncaught on purpose")
"""


def run_program(stream_id: str | None) -> tuple[int, list[str]]:
    journal = Journal.open()
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    if stream_id is not None:
        env["JOURNAL_STREAM"] = journal.stream_id if stream_id == "this pipe" else stream_id
    process = journal.run([sys.executable, "-c", PROGRAM], env, stdout=subprocess.DEVNULL, timeout=60)
    return process.returncode, journal.finish()


def test_every_level_and_traceback_is_one_prefixed_line() -> None:
    code, lines = run_program("this pipe")
    assert code == 1, lines
    records = assert_journal_lines(lines)
    assert [priority for priority, _ in records] == [7, 6, 4, 3, 3, 4, 3, 2], records
    texts = [text for _, text in records]
    assert texts[0] == "vidfs.probe: debug record"
    assert texts[2] == "vidfs.probe: warning record ⏎ with a second line"
    assert texts[4].startswith("vidfs.probe: failed on purpose ⏎ Traceback (most recent call last):")
    assert texts[4].endswith("KeyError: 'missing key'")
    assert texts[5].startswith("py.warnings: ") and "UserWarning: a Python warning" in texts[5]
    assert texts[6] == "vidfs: error: one line for the user"
    assert texts[7].startswith("vidfs: uncaught exception ⏎ Traceback (most recent call last):")
    assert texts[7].endswith("RuntimeError: uncaught on purpose")


@pytest.mark.parametrize(
    "stream_id", [None, "1:1", "not a stream"], ids=["unset", "another stream", "garbage"]
)
def test_no_journal_format_unless_stderr_is_the_named_stream(stream_id: str | None) -> None:
    code, lines = run_program(stream_id)
    assert code == 1, lines
    assert not any(PREFIXED.match(line) for line in lines), lines
    assert any(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING vidfs.probe: warning record$", ln)
        for ln in lines
    )
    assert "vidfs: error: one line for the user" in lines
    assert "Traceback (most recent call last):" in lines  # Python's own multi-line report, untouched
