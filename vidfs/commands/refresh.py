"""`vidfs refresh MOUNTPOINT [PATH] [--recursive]`: drop cached listings so the next `ls` asks the vendor.

What `rclone rc vfs/refresh` does for rclone: a mount keeps listings for `metadata_ttl` (and serves stale
ones while it refreshes them in the background), so an item added or removed at the vendor shows up only
later. This asks the daemon, over its control socket (found through the root's `user.vidfs.control` xattr,
so only the user who mounted it can), to drop the cached listing of PATH (every cached listing when PATH is
left out; with `--recursive`, those below PATH too). The next access of each directory then waits for the
vendor's answer, and the kernel forgets the names it cached in them, so the change is visible at once.
"""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path

from vidfs.commands.process import control_call
from vidfs.errors import UsageError, VidfsError
from vidfs.fs.videofs import CONTROL_XATTR

HELP = "drop cached listings so the next ls asks the vendor (PATH, or everything)"
TIMEOUT = 90.0  # the daemon gives up on an answer after 60 s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path, help="the root of a vidfs mount")
    parser.add_argument(
        "path",
        nargs="?",
        default="",
        help="a directory: relative to the mount root, or a path below MOUNTPOINT (default: every listing)",
    )
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="also drop the cached listings below PATH"
    )


def run(args: argparse.Namespace) -> int:
    mountpoint = Path(os.path.abspath(args.mountpoint))
    try:
        control = os.getxattr(mountpoint, CONTROL_XATTR).decode()
    except OSError as exc:
        reason = "no control socket published" if exc.errno == errno.ENODATA else exc.strerror
        raise UsageError(f"{args.mountpoint} is not the root of a vidfs mount ({reason})") from None
    rel = relative_path(mountpoint, args.path)
    request = {"op": "refresh", "path": rel, "recursive": args.recursive}
    try:
        answer = control_call(control, request, timeout=TIMEOUT)
    except PermissionError:
        who = f"only the user who mounted {mountpoint} can"
        raise UsageError(f"{control}: permission denied ({who})") from None
    except OSError as exc:
        raise VidfsError(f"cannot reach the daemon of {mountpoint}: {exc.strerror or exc}") from None
    where = f"/{rel}" if rel else "everything"
    if not answer.get("ok"):
        raise UsageError(f"refresh {where}: {answer.get('error', 'refused')}")
    print(f"vidfs: refreshed {where}: {answer.get('listings', 0)} cached listing(s) dropped")
    return 0


def relative_path(mountpoint: Path, path: str) -> str:
    """PATH as the daemon wants it: "/"-separated, relative to the mount root. A path below the mount point
    (as a shell completes it) is taken relative to it; anything else is already relative to the root."""
    if not path:
        return ""
    absolute = Path(os.path.abspath(path))
    if absolute == mountpoint or mountpoint in absolute.parents:
        rel = absolute.relative_to(mountpoint).as_posix()
        return "" if rel == "." else rel
    return path.strip("/")
