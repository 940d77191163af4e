"""Walks of a mount for the catalog run (`bench/catalog.py`): every directory read and every entry
lstat-ed, as `ls -lR` or `find` do, or the program itself (`ls -R`, `ls -lR`), each call watched so that a
hung mount cannot hang the bench."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import say

MAX_ENTRIES = 5_000_000
OP_HANG_S = 120.0  # one readdir or lstat unanswered this long: the mount is hung (vidfs answers in 30 s)


@dataclass(frozen=True)
class Walk:
    """One `ls -lR`: every directory read, every entry lstat-ed."""

    seconds: float
    hung: bool  # a call went unanswered for OP_HANG_S and the daemon was stopped
    files: int
    dirs: int
    total_bytes: int
    zero_size: int  # files whose size is 0 (a size the listing did not know)
    duplicates: int  # names a directory listed twice
    failures: int  # readdir or lstat calls that failed (the walk goes on, like ls -lR)
    first_failure: str | None
    complete: bool
    entries: dict[str, tuple[int, int]]  # path under the mount → (inode, size)


@dataclass
class _Tally:
    files: int = 0
    dirs: int = 0
    total: int = 0
    zero: int = 0
    duplicates: int = 0
    failures: int = 0
    first_failure: str | None = None

    def failed(self, exc: OSError) -> None:
        self.failures += 1
        self.first_failure = self.first_failure or f"{exc.strerror}: {exc.filename}"


class Watchdog:
    """Ends the mount daemon (by its PID) when one call of a walk goes unanswered for OP_HANG_S.

    A FUSE request the daemon has taken cannot be given up from our side: the caller waits for it
    uninterruptibly, even through SIGKILL. Only the daemon going away ends it (with ENOTCONN). Without
    this, one lost answer would hang the bench for good; with it the walk ends, marked hung."""

    def __init__(self, on_hang: Callable[[], None]) -> None:
        self.on_hang = on_hang
        self.since: float | None = None  # when the call in progress began
        self.hung = False
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="walk-watchdog").start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            since = self.since
            if since is not None and time.monotonic() - since > OP_HANG_S:
                self.hung = True
                say(f"a call on the mount had no answer for {OP_HANG_S:g} s: stopping its daemon")
                self.on_hang()
                return

    def close(self) -> None:
        self._stop.set()


def _listing(directory: str, tally: _Tally, watchdog: Watchdog) -> list[str]:
    watchdog.since = time.monotonic()
    try:
        names = os.listdir(directory)
    except OSError as exc:
        tally.failed(exc)
        return []
    finally:
        watchdog.since = None
    tally.duplicates += len(names) - len(set(names))
    return names


def walk(root: Path, limit_s: float, on_hang: Callable[[], None]) -> Walk:
    watchdog = Watchdog(on_hang)
    try:
        return _walk(root, limit_s, watchdog)
    finally:
        watchdog.close()


def _walk(root: Path, limit_s: float, watchdog: Watchdog) -> Walk:
    # Paths as strings, not pathlib objects: at 100,000 entries pathlib's joins and relative_to cost the
    # walker itself seconds, which are not the file system's. The order is `os.walk`'s (top-down) and
    # `find`'s: a directory's entries in readdir order, each `lstat`ed, then its subdirectories in that
    # order, depth first. (It went through them last first until 2026-12-05: no program walks that way, and
    # a file system that reads ahead the way walkers go was measured against the one that does not.)
    started = time.monotonic()
    entries: dict[str, tuple[int, int]] = {}
    tally = _Tally()
    top = str(root)
    cut = len(top) + 1
    todo = [top]
    complete = True
    while todo and not watchdog.hung:
        if time.monotonic() - started > limit_s or len(entries) > MAX_ENTRIES:
            complete = False
            break
        directory = todo.pop()
        subdirectories = []
        for name in _listing(directory, tally, watchdog):
            path = f"{directory}/{name}"
            watchdog.since = time.monotonic()
            try:
                st = os.lstat(path)
            except OSError as exc:
                tally.failed(exc)
                continue
            finally:
                watchdog.since = None
            entries[path[cut:]] = (st.st_ino, st.st_size)
            if stat.S_ISDIR(st.st_mode):
                tally.dirs += 1
                subdirectories.append(path)
            else:
                tally.files += 1
                tally.total += st.st_size
                tally.zero += st.st_size == 0
        todo.extend(reversed(subdirectories))  # the first one on top: next to be walked
    t = tally
    seconds = time.monotonic() - started
    return Walk(
        seconds,
        watchdog.hung,
        t.files,
        t.dirs,
        t.total,
        t.zero,
        t.duplicates,
        t.failures,
        t.first_failure,
        complete,
        entries,
    )


def _ls(args: list[str], root: Path, limit_s: float, on_hang: Callable[[], None]) -> bytes | None:
    """`ls ARGS root`'s output, None when it failed or ran over `limit_s`. A hung mount is ended as in
    `walk`: ls waits on a FUSE request through SIGKILL."""
    process = subprocess.Popen(["ls", *args, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    what = " ".join(["ls", *args, str(root)])
    try:
        out, err = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        say(f"{what}: not done within {limit_s:g} s: stopping the mount's daemon")
        on_hang()
        process.kill()
        process.communicate(timeout=60)
        return None
    if process.returncode != 0:
        say(f"{what} exited {process.returncode}: {err.decode(errors='replace').strip()[-300:]}")
        return None
    return out


def ls_names(root: Path, limit_s: float, on_hang: Callable[[], None]) -> dict[str, list[str]] | None:
    """`ls -R -p` of `root`: each directory's entries (directories with a `/`). Output to a pipe, without
    -l or colours, ls reads directories and stats nothing: what `ls`, `find -name` and a shell's
    completion ask of a mount."""
    out = _ls(["-R", "-p"], root, limit_s, on_hang)
    if out is None:
        return None
    listed: dict[str, list[str]] = {}
    names: list[str] = []
    for line in out.decode(errors="surrogateescape").split("\n"):
        if line.endswith(":") and line.startswith(str(root)):
            names = listed.setdefault(line[:-1], [])
        elif line:
            names.append(line)
    return listed


def ls_lr(root: Path, limit_s: float, on_hang: Callable[[], None]) -> float | None:
    """Seconds of one `ls -lR` of `root` (its output read and thrown away), None when it failed."""
    began = time.monotonic()
    return None if _ls(["-lR"], root, limit_s, on_hang) is None else time.monotonic() - began
