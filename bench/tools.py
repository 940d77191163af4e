"""The programs the bench runs: installed from Debian when missing (a peer that cannot be installed is
reported as missing in the table, not dropped), and their versions for the JSON."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import REPO, run, say
from bench.options import PEERS, Options

# binary → Debian package, needed by every read run
NEEDED = {"nginx": "nginx", "ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "curl": "curl", "ip": "iproute2"}
NEEDED |= {"nsenter": "util-linux", "fusermount3": "fuse3"}
_updated = [False]


def apt_install(packages: list[str]) -> dict[str, str]:
    """apt-get install each package; returns package → "" (installed) or why not."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _updated[0]:
        run(["apt-get", "update", "-qq"], timeout=600, check=False, env=env)
        _updated[0] = True
    status: dict[str, str] = {}
    for package in packages:
        policy = run(["apt-cache", "policy", package], check=False).stdout
        candidate = re.search(r"Candidate:\s*(\S+)", policy)
        if candidate is None or candidate.group(1) == "(none)":
            status[package] = f"apt has no candidate for {package}"
            continue
        result = run(["apt-get", "install", "-y", "-qq", package], timeout=900, check=False, env=env)
        status[package] = (
            "" if result.returncode == 0 else f"apt-get install {package} failed: {result.stderr[-200:]}"
        )
    return status


def ensure_binaries(wanted: dict[str, str], install: bool) -> dict[str, str]:
    """binary → "" (present) or the reason it is missing, installing the missing ones when allowed."""
    missing = {binary: package for binary, package in wanted.items() if shutil.which(binary) is None}
    status = {binary: "" for binary in wanted}
    if not missing:
        return status
    if not install:
        return status | {
            b: f"not installed (apt package {p}; --no-install given)" for b, p in missing.items()
        }
    say(f"installing {', '.join(sorted(set(missing.values())))} from Debian …")
    installed = apt_install(sorted(set(missing.values())))
    for binary, package in missing.items():
        if installed.get(package):
            status[binary] = installed[package]
        elif shutil.which(binary) is None:
            status[binary] = f"{binary} still missing after installing {package}"
    return status


def ensure_tools(opts: Options) -> dict[str, str]:
    wanted = dict(NEEDED)
    for name in opts.peers:
        peer = PEERS[name]
        if peer.binary and peer.package:
            wanted[peer.binary] = peer.package
    return ensure_binaries(wanted, opts.install)


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        lines = (r.stdout + r.stderr).strip().splitlines() or ["?"]
        name = Path(cmd[0]).name.lower()
        return next((line for line in lines if name in line.lower()), lines[0])

    git = first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain"], check=False).stdout.strip()
    return {
        "vidfs": first([sys.executable, "-c", "import vidfs; print(vidfs.__version__)"])
        + f" ({git}{'+changes' if dirty else ''}, {REPO})",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nginx": first(["nginx", "-v"]),
        "rclone": first(["rclone", "version"]),
        "httpdirfs": first(["httpdirfs", "-V"]),
        "curl": first(["curl", "-V"]),
        "ffprobe": first(["ffprobe", "-version"]),
    }
