"""Starting a mount daemon, hearing back from it, and talking to it (`mount --daemon`, the demo, prefetch).

A daemon is started with the write end of a pipe in `$VIDFS_READY_FD`; it writes one line, `READY <summary>`
once the mount answers or `ERROR <message>` when it cannot mount, and closes it. The parent waits for that
line (bounded), so `vidfs mount --daemon` returns only when the mount is usable, or fails with the reason.
Once it serves, `control_call()` talks to its control socket (one JSON line each way).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READY_FD_ENV = "VIDFS_READY_FD"


def report_ready(summary: str) -> None:
    _report(f"READY {summary}")


def report_failure(message: str) -> None:
    _report(f"ERROR {message}")


def _report(line: str) -> None:
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), f"{line}\n".encode())
        os.close(int(fd))
    except OSError:
        pass


def start_daemon(args: list[str], *, log_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start `python -m vidfs <args>` in its own session, output to `log_file`; returns it and the read end
    of its READY pipe."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[READY_FD_ENV] = str(write_fd)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log_handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "vidfs", *args],
            env=env,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            start_new_session=True,
        )
    os.close(write_fd)
    return child, read_fd


def read_ready(fd: int, timeout: float) -> str:
    """The daemon's one line (READY… or ERROR…), or "" when it closed the pipe or the time ran out."""
    deadline = time.monotonic() + timeout
    chunks = b""
    try:
        while b"\n" not in chunks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            data = os.read(fd, 4096)
            if not data:
                break
            chunks += data
    finally:
        os.close(fd)
    return chunks.decode(errors="replace").strip()


def unmount(mountpoint: Path) -> int:
    """`fusermount3 -u`; 0, or 1 with the reason on stderr."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", str(mountpoint)] if tool else ["umount", str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"vidfs: error: cannot unmount {mountpoint}: {result.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


def control_call(path: str | Path, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Blocking client: send one request, read one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data.decode() or "{}")
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}
