"""The FUSE peers: how each is mounted over the origin, from inside the namespace, stopped by PID.

vidfs (`type = "http"`, `--subtree`), `rclone mount` of an `:http:` remote (VFS cache off, and
`--vfs-cache-mode full`), httpdirfs (without and with `--cache`). The cache dir is the caller's, so a
remount can find what the first mount kept (measurement f).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    SYSTEM_TICKS,
    Cleanup,
    cpu_seconds,
    cpu_settled,
    is_mounted,
    run,
    stop_pid,
    vm_hwm_mib,
    wait_for,
)
from bench.netns import Netns


def command(peer: str, url: str, path: Path, cache: Path, vidfs_set: list[str]) -> list[str]:
    """The foreground command that mounts `peer` at `path` with its cache (if any) in `cache`."""
    if peer == "vidfs":
        config = cache.parent / "vidfs.toml"
        tables: dict[str, list[str]] = {"cache": [f'dir = "{cache}"']}
        for item in vidfs_set:
            key, _, value = item.partition("=")
            table, _, name = key.strip().rpartition(".")
            tables.setdefault(table or "cache", []).append(f"{name} = {value.strip()}")
        tables["providers.bench"] = ['type = "http"', f'url = "{url}"']
        config.touch(mode=0o600)  # vidfs warns about a config others can read
        config.write_text("".join(f"[{t}]\n" + "\n".join(lines) + "\n\n" for t, lines in tables.items()))
        return [sys.executable, "-m", "vidfs", "mount", str(config), str(path), "--subtree", "bench"]
    if peer in ("rclone", "rclone-full"):
        rc = cache.parent / "rclone.conf"
        rc.write_text("")
        mode = "full" if peer == "rclone-full" else "off"
        return [
            "rclone", "mount", ":http:", str(path), "--http-url", url, "--read-only",
            "--config", str(rc), "--cache-dir", str(cache), "--vfs-cache-mode", mode,
        ]  # fmt: skip
    # --no-range-check: httpdirfs 1.2.5 wrongly finds that nginx cannot do ranges and exits
    # (httpdirfs issue 188); nginx can.
    if peer == "httpdirfs":
        return ["httpdirfs", "-f", "--no-range-check", url, str(path)]
    if peer == "httpdirfs-cache":
        return [
            "httpdirfs",
            "-f",
            "--no-range-check",
            "--cache",
            "--cache-location",
            str(cache),
            url,
            str(path),
        ]
    raise ValueError(peer)


class Mount:
    """One FUSE mount of one peer, its daemon started in the namespace (nsenter execs it: its PID is
    the daemon's), in a session of its own so a terminal's Ctrl-C reaches only the bench."""

    def __init__(
        self, name: str, ns: Netns, cmd: list[str], path: Path, log: Path, timeout: float = 120
    ) -> None:
        self.peer = name
        self.path = path
        self.log = log
        path.mkdir(exist_ok=True)
        with open(self.log, "ab") as out:
            self.process: subprocess.Popen[Any] = subprocess.Popen(
                [*ns.prefix, *cmd], stdout=out, stderr=out, cwd=REPO, start_new_session=True
            )
        try:
            wait_for(self._mounted, timeout, f"{name} mount", step=0.02)
        except BaseException:
            self.stop()
            raise

    def _mounted(self) -> bool:
        if self.process.poll() is not None:
            lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
            tail = " | ".join(lines[-3:])  # the log is kept with --keep-workdir
            raise RuntimeError(f"{self.peer} exited with status {self.process.returncode}: {tail}")
        return os.path.ismount(self.path)

    def rss_mib(self) -> float | None:
        return vm_hwm_mib(self.process.pid)

    def cpu_s(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def system_s(self) -> float | None:
        """The system (kernel) part of `cpu_s`."""
        return cpu_seconds(self.process.pid, which=SYSTEM_TICKS)

    def cpu_settled_s(self) -> float | None:
        return cpu_settled(self.process.pid)

    def stop(self) -> None:
        """Unmount and wait for the daemon to end (it may write its cache's state on the way out)."""
        if is_mounted(self.path):
            run(["fusermount3", "-u", str(self.path)], check=False, timeout=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_pid(self.process)
        if is_mounted(self.path):
            run(["fusermount3", "-uz", str(self.path)], check=False, timeout=60)


@contextlib.contextmanager
def mounted(
    peer: str, ns: Netns, url: str, cache: Path, vidfs_set: list[str], cleanup: Cleanup
) -> Iterator[Mount]:
    cache.mkdir(exist_ok=True)
    path = cache.parent / "mnt"
    cmd = command(peer, url, path, cache, vidfs_set)
    mount = Mount(peer, ns, cmd, path, cache.parent / "mount.log")
    undo = cleanup.push(f"{peer} mount", mount.stop)
    try:
        yield mount
    finally:
        undo()
