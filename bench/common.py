"""What every part of the bench shares: paths, units, running commands, undoing what was started, and the
figures the kernel keeps about a process (its CPU time and peak RSS in /proc).

CPU time is read from /proc/PID/stat (utime + stime, in clock ticks) for the daemon and every descendant
still alive, plus cutime + cstime for the children it already waited for, so a peer that forks helpers
is charged for them. A peer that runs its daemon in the foreground (all of ours do: rclone mount without
--daemon, httpdirfs -f, vidfs mount) has the PID we started, since nsenter execs its command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MB = 1_000_000
GB = 1_000_000_000
MiB = 1 << 20
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str], *, timeout: float = 120, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return result


class Cleanup:
    """Undo actions, run last-in first-out, each at most once, whatever happens."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        """Register `action`; the function returned runs it now (and forgets it)."""
        entry = (what, action)
        self._actions.append(entry)

        def now() -> None:
            if entry in self._actions:
                self._actions.remove(entry)
                action()

        return now

    def run_all(self) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep cleaning up
                say(f"cleanup of {what} failed: {exc}")


def stop_pid(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this process, by its PID."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g}s")
        time.sleep(step)


def is_mounted(path: Path) -> bool:
    """From /proc/self/mountinfo: os.path.ismount() says False for a FUSE mount whose daemon died
    (stat fails with ENOTCONN), and such a mount must still be unmounted."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


def drop_page_cache() -> None:
    """Write back and drop the page cache (and dentries/inodes), so the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def warm_page_cache(path: Path) -> None:
    """Read a file once so it is in the page cache (the origin's files, after a drop)."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * MiB)
        while fh.readinto(buf):
            pass


# ------------------------------------------------------------------------------------ /proc figures
def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, list[int]]:
    """PID → its children, from every /proc/PID/stat (this kernel has no /proc/PID/task/*/children)."""
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := _stat_fields(int(name))) is not None:
            out.setdefault(int(fields[1]), []).append(int(name))
    return out


# After the name: state is index 0, so utime/stime/cutime/cstime (fields 14-17) are 11..14.
ALL_TICKS = (11, 12, 13, 14)
SYSTEM_TICKS = (12, 14)  # stime, cstime: the kernel's work for the process (copies, faults, syscalls)


def _own_ticks(pid: int, which: tuple[int, ...] = ALL_TICKS) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else sum(int(fields[i]) for i in which)


def stolen_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests, summed over this machine's CPUs since boot (`steal` in
    /proc/stat): on a shared VM it was 4-18 s in 40 s of bench here, and a walk that lost it is slower for a
    reason that is not ours, so the catalog table shows it next to each walk."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, descendants: bool = True, which: tuple[int, ...] = ALL_TICKS) -> float | None:
    """utime + stime + cutime + cstime of `pid` (and of its live descendants), in seconds; `which`:
    SYSTEM_TICKS for the system part alone."""
    ticks = _own_ticks(pid, which)
    if ticks is None:
        return None
    if descendants:
        tree = _parents()
        todo = list(tree.get(pid, []))
        for _ in range(10_000):  # bounded: a process tree is never that large here
            if not todo:
                break
            child = todo.pop()
            ticks += _own_ticks(child, which) or 0
            todo += tree.get(child, [])
    return ticks / CLOCK_TICK


def cpu_times(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of one process, without its children."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) / CLOCK_TICK, int(fields[12]) / CLOCK_TICK)


def cpu_settled(pid: int, *, quiet: float = 0.5, timeout: float = 15.0) -> float | None:
    """The process's CPU seconds once it stops using CPU (no new tick for `quiet` seconds, at most
    `timeout`): what a read costs includes the work it leaves behind (writing a disk cache)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    since = time.monotonic()
    while last is not None and time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_seconds(pid)
        if now is None:
            return last
        if now - last >= 1.5 / CLOCK_TICK:
            last, since = now, time.monotonic()
    return last


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class HwmWatcher:
    """The peak RSS of a short-lived process (VmHWM, polled until it exits). Not rusage: a child's
    ru_maxrss also counts the Python image it was forked from before exec."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while (value := vm_hwm_mib(self.pid)) is not None:
            self.peak = value
            time.sleep(0.05)
