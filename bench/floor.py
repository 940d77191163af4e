"""The machine's FUSE floor: what one directory listing costs through pyfuse3 + trio when the filesystem
does no work at all, so that a warm walk's seconds can be read against what no handler of ours could go
below on this machine.

A warm walk of a tree with a directory per video (VALT's layout "records": 100,000 of them) asks four
FUSE requests of each directory however warm every cache is (opendir, readdir, the readdir that finds
the end, releasedir: pyfuse3 cannot let the kernel keep listings, `FOPEN_CACHE_DIR`), and their cost is
mostly the kernel's round trip and pyfuse3's request loop, not the handlers. That cost differs from one
machine to the next (virtual machines differ most in what a context switch costs, and every request is
two), so a warm walk's figure alone says little across machines. The catalog run measures it first
(`measure`) and prints, next to each row's warm walk, its floor: directories × the cost of one listing.

The filesystem (run as `python -m bench.floor MOUNTPOINT COUNTS_JSON`): a root with one directory `d`
holding one file `f`; names and attributes kept by the kernel for a minute (as long as a walk needs: ours
keep them 10 s, `vidfs.fs.operations.KERNEL_TTL`), so a listing of `d` is exactly the four requests above.
On unmount it writes the count of each request it answered to COUNTS_JSON, and the measurement divides
them by the listings it made: a kernel that asks more or fewer shows it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Cleanup, cpu_seconds, is_mounted, run, say, stop_pid, wait_for

LISTINGS = 3_000  # timed listings of `d` (a second or so at 100-400 µs each)
WARM_UP = 200  # listings first, untimed: the daemon's first requests import and allocate
MOUNT_WAIT_S = 30.0
ROOT, DIRECTORY, FILE = 1, 2, 3
TTL_S = 60.0


@dataclass(frozen=True)
class Floor:
    """One listing of a one-file directory through a no-op pyfuse3 filesystem."""

    listing_us: float  # wall time of one `os.listdir`, in the bench process (the median)
    listing_cpu_us: float | None  # the no-op daemon's CPU for one (the mean)
    requests_per_listing: float  # FUSE requests it answered per listing (4 expected)
    listings: int

    @property
    def request_us(self) -> float:
        return self.listing_us / self.requests_per_listing if self.requests_per_listing else self.listing_us

    def walk_s(self, directories: int) -> float:
        """The least a warm walk of this many directories costs on this machine: their listings alone."""
        return directories * self.listing_us / 1e6

    def describe(self) -> str:
        cpu = "—" if self.listing_cpu_us is None else f"{self.listing_cpu_us:.0f}"
        return (
            f"a listing of a one-file directory through a no-op pyfuse3 filesystem: {self.listing_us:.0f} µs"
            f" ({self.requests_per_listing:.2f} FUSE requests, {self.request_us:.0f} µs each), the median of"
            f" {self.listings:,} listings in one run; the daemon's CPU, {cpu} µs a listing on average"
        )


def _filesystem(mountpoint: str, counts_path: str) -> None:
    import pyfuse3  # the bench's own process never needs pyfuse3
    import trio

    counts: Counter[str] = Counter()
    now_ns = time.time_ns()

    def entry(inode: int) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_mode = stat.S_IFREG | 0o444 if inode == FILE else stat.S_IFDIR | 0o555
        attrs.st_nlink = 1 if inode == FILE else 2
        attrs.st_size = 0
        attrs.st_mtime_ns = attrs.st_ctime_ns = attrs.st_atime_ns = now_ns
        attrs.entry_timeout = attrs.attr_timeout = TTL_S
        return attrs

    children = {ROOT: ((b"d", DIRECTORY),), DIRECTORY: ((b"f", FILE),), FILE: ()}

    class NoOp(pyfuse3.Operations):
        async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
            counts["lookup"] += 1
            for child, inode in children.get(parent_inode, ()):
                if child == name:
                    return entry(inode)
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
            counts["getattr"] += 1
            return entry(inode)

        async def opendir(self, inode: int, ctx: Any = None) -> int:
            counts["opendir"] += 1
            return inode

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            counts["readdir"] += 1
            for position, (name, inode) in enumerate(children[fh][start_id:], start_id + 1):
                if not pyfuse3.readdir_reply(token, name, entry(inode), position):
                    return

        async def releasedir(self, fh: int) -> None:
            counts["releasedir"] += 1

    pyfuse3.init(NoOp(), mountpoint, {"fsname=vidfs-bench-floor", "ro"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)  # a no-op once `fusermount3 -u` has unmounted it
        Path(counts_path).write_text(json.dumps(counts))


def measure(work: Path, cleanup: Cleanup) -> Floor | None:
    """The floor on this machine, or None (said why) when the no-op filesystem would not mount."""
    mountpoint, counts_path = work / "floor-mnt", work / "floor-counts.json"
    mountpoint.mkdir(exist_ok=True)
    counts_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.floor", str(mountpoint), str(counts_path)]
    with open(work / "floor.log", "ab") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=log, start_new_session=True, cwd=Path(__file__).parents[1]
        )
    stop_now = cleanup.push("floor filesystem", lambda: _stop(process, mountpoint))
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the no-op filesystem exited with status {process.returncode}")
            return is_mounted(mountpoint)

        wait_for(up, MOUNT_WAIT_S, "floor filesystem")
        directory = str(mountpoint / "d")
        for _ in range(WARM_UP):
            os.listdir(directory)
        cpu_before = cpu_seconds(process.pid)
        times = []
        for _ in range(LISTINGS):
            began = time.perf_counter()
            os.listdir(directory)
            times.append(time.perf_counter() - began)
        cpu_after = cpu_seconds(process.pid)
    except Exception as exc:
        say(f"no FUSE floor: {exc}")
        stop_now()
        return None
    stop_now()
    try:
        counts = Counter(json.loads(counts_path.read_text()))
    except (OSError, ValueError) as exc:
        say(f"no FUSE floor: the no-op filesystem left no counts ({exc})")
        return None
    listed = LISTINGS + WARM_UP
    asked = sum(counts[op] for op in ("opendir", "readdir", "releasedir"))
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / LISTINGS * 1e6
    return Floor(statistics.median(times) * 1e6, cpu, asked / listed, LISTINGS)


def _stop(process: subprocess.Popen[Any], mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        run(["fusermount3", "-u", str(mountpoint)], check=False, timeout=30)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop_pid(process)


if __name__ == "__main__":
    _filesystem(sys.argv[1], sys.argv[2])
