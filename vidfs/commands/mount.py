"""`vidfs mount CONFIG MOUNTPOINT`: serve a config's providers at a directory (foreground, or `--daemon`)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import trio

from vidfs.commands.process import read_ready, report_ready, start_daemon
from vidfs.config.loader import load_config
from vidfs.daemon.mount import MountRequest, ignore_stop_signals, serve
from vidfs.daemon.mountpoint import claim_mountpoint
from vidfs.errors import UsageError
from vidfs.logs import say

HELP = "mount a config's providers at a directory (foreground)"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
READY_TIMEOUT = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the TOML config file")
    parser.add_argument("mountpoint", type=Path, help="an existing empty directory")
    parser.add_argument(
        "--daemon", action="store_true", help="return once the mount is ready; serve in the background"
    )
    parser.add_argument(
        "--allow-other", action="store_true", default=None, help="let other users see the mount"
    )
    parser.add_argument(
        "--subtree", metavar="PATH", help="mount only this directory of the tree (e.g. a provider)"
    )
    parser.add_argument(
        "--log-file", type=Path, help="write logs here (default with --daemon: in the cache dir)"
    )
    parser.add_argument("--fuse-debug", action="store_true", help="log every FUSE request (very verbose)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for warning in config.warnings:
        say(logging.WARNING, f"vidfs: warning: {warning}")
    mountpoint = args.mountpoint.resolve()
    # One mount per mount point: a live mount there is refused (exit 2), a dead one cleaned. Checked here,
    # before a daemon is started, and by the daemon again right before it mounts.
    for cleaned in claim_mountpoint(mountpoint):
        say(logging.WARNING, f"vidfs: warning: {cleaned}")
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {args.mountpoint} does not exist or is not a directory")
    if args.daemon:
        log_file = args.log_file or (config.cache.dir / "logs" / f"mount-{_slug(mountpoint)}.log")
        child_args = [a for a in args.argv if a != "--daemon"]
        if args.log_file is None:
            child_args += ["--log-file", str(log_file)]
        return spawn_and_wait(child_args, log_file=log_file)
    request = MountRequest(
        config=config,
        mountpoint=mountpoint,
        subtree=args.subtree,
        allow_other=args.allow_other,
        debug_fuse=args.fuse_debug,
    )
    ignore_stop_signals()  # `serve` watches SIGINT, SIGTERM and SIGHUP itself while it runs
    trio.run(serve, request, report_ready)
    return EXIT_OK


def _slug(path: Path) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(path)).strip("-") or "root"


def spawn_and_wait(child_args: list[str], *, log_file: Path, timeout: float = READY_TIMEOUT) -> int:
    """Start `vidfs <child_args>` detached and wait until it reports READY (or fails)."""
    child, read_fd = start_daemon(child_args, log_file=log_file)
    message = read_ready(read_fd, timeout)
    if message.startswith("READY"):
        print(f"vidfs: mounted ({message[6:].strip()}); pid {child.pid}; log {log_file}")
        return EXIT_OK
    code = child.poll()
    if message.startswith("ERROR"):
        print(f"vidfs: error: {message[6:].strip()}", file=sys.stderr)
        try:
            code = child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        return EXIT_USAGE if code == EXIT_USAGE else EXIT_FAILURE
    if code is None:
        child.terminate()
        print(
            f"vidfs: error: the mount did not become ready within {timeout:g}s (log: {log_file})",
            file=sys.stderr,
        )
    else:
        print(f"vidfs: error: the mount process exited with status {code} (log: {log_file})", file=sys.stderr)
    return EXIT_FAILURE
