"""The mount point: whether something is mounted there already, and how the kernel reads from ours.

`claim_mountpoint` reads `/proc/self/mountinfo`. Something live mounted exactly there (vidfs or not) is
refused with one line (exit 2), as `rclone mount` refuses a mount point in use; a dead FUSE mount (its
daemon was killed: `ENOTCONN`) is detached (`fusermount3 -u -z`) and the mount goes ahead. An automount
trigger (autofs) is not in the way: mounting over it is how it works.

`tune_readahead` raises the kernel's readahead for our mount (its backing device's `read_ahead_kb`, 128 KiB
by default): the kernel then asks for up to 1 MiB per FUSE read (libfuse's limit) and keeps several in
flight, so a sequential reader costs one request, one Python call and one reply per MiB instead of per
128 KiB. Only root may write it; anyone else keeps the default (a debug line, nothing else). The device
is found in mountinfo, never by `stat`ing the mount point: the daemon must not call into its own mount.
It is written once the kernel's INIT has been answered: the INIT reply sets the device's readahead (to
libfuse's default), so a value written before it would be overwritten.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from vidfs.errors import UsageError

log = logging.getLogger(__name__)

DEAD_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})  # a FUSE mount whose daemon is gone
NOT_IN_THE_WAY = frozenset({"autofs"})  # an automount trigger: mounting over it is how it works
MAX_STACKED = 8  # dead mounts cleaned from one mount point, at most
KERNEL_READAHEAD_KIB = 1024  # one FUSE request at most (libfuse: 1 MiB); more only feeds probers bytes
_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _mounts_at(mountpoint: Path) -> list[tuple[str, str]]:
    """(file system type, device major:minor) of each mount exactly at `mountpoint`, bottom to top."""
    target = os.fsencode(mountpoint)
    found = []
    with open("/proc/self/mountinfo", "rb") as handle:
        for line in handle:
            fields, _, tail = line.partition(b" - ")
            parts = fields.split()
            point = _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), parts[4])
            if point == target:
                found.append((os.fsdecode(tail.split()[0]), os.fsdecode(parts[2])))
    return found


def mounted_types(mountpoint: Path) -> list[str]:
    """The file system types mounted exactly at `mountpoint`, bottom to top."""
    return [fstype for fstype, _device in _mounts_at(mountpoint)]


def tune_readahead(mountpoint: Path, kib: int = KERNEL_READAHEAD_KIB) -> bool:
    """Set the kernel readahead of the FUSE mount at `mountpoint` (the top one); False when not allowed."""
    mounts = [device for fstype, device in _mounts_at(mountpoint) if fstype.startswith("fuse")]
    if not mounts:
        return False
    path = Path("/sys/class/bdi") / mounts[-1] / "read_ahead_kb"
    try:
        path.write_text(f"{kib}\n")
    except OSError as exc:
        log.debug("kernel readahead stays at its default (%s: %s)", path, exc.strerror)
        return False
    log.info("kernel readahead of %s: %d KiB", mountpoint, kib)
    return True


def claim_mountpoint(mountpoint: Path) -> list[str]:
    """Nothing live may be mounted at `mountpoint`: a live one is refused (UsageError), a dead one cleaned.
    Returns what was cleaned, one line each, for the caller to tell."""
    cleaned: list[str] = []
    for _ in range(MAX_STACKED):
        types = [t for t in mounted_types(mountpoint) if t not in NOT_IN_THE_WAY]
        if not types:
            return cleaned
        try:
            os.statvfs(mountpoint)
        except OSError as exc:
            if exc.errno not in DEAD_ERRNOS:
                raise UsageError(f"mount point {mountpoint}: {exc.strerror}") from None
            _detach_dead_mount(mountpoint, types[-1])
            cleaned.append(f"cleaned a dead {types[-1]} mount at {mountpoint} (its daemon had ended)")
            continue
        raise UsageError(
            f"{mountpoint} is already a mount point ({types[-1]}); unmount it first "
            f"(fusermount3 -u {mountpoint}) or choose another directory"
        )
    raise UsageError(f"{mountpoint}: more than {MAX_STACKED} dead mounts could not all be cleaned")


def _detach_dead_mount(mountpoint: Path, fstype: str) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", "-z", str(mountpoint)] if tool else ["umount", "-l", str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        reason = result.stderr.strip() or f"{command[0]} exited with {result.returncode}"
        raise UsageError(f"{mountpoint}: a dead {fstype} mount is in the way and cannot be cleaned: {reason}")
