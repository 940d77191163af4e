"""The `vidfs` command: mount, umount, demo, check, ls. Errors become one line and an exit code:
0 success, 1 a remote or runtime failure, 2 a config or usage error."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from vidfs import __version__
from vidfs.errors import ConfigError, UsageError, VidfsError, leaf_error

log = logging.getLogger("vidfs")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
READY_FD_ENV = "VIDFS_READY_FD"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"vidfs: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidfs", description="Mount remote video catalogs as a read-only filesystem.")
    parser.add_argument("--version", action="version", version=f"vidfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
        p.add_argument("--debug", action="store_true", help="debug logging (same as -vv)")

    mount = sub.add_parser("mount", help="mount a config's providers at a directory (foreground)")
    mount.add_argument("config", type=Path, help="the TOML config file")
    mount.add_argument("mountpoint", type=Path, help="an existing empty directory")
    mount.add_argument(
        "--daemon", action="store_true", help="return once the mount is ready; serve in the background"
    )
    mount.add_argument(
        "--allow-other", action="store_true", default=None, help="let other users see the mount"
    )
    mount.add_argument(
        "--subtree", metavar="PATH", help="mount only this directory of the tree (e.g. a provider)"
    )
    mount.add_argument(
        "--log-file", type=Path, help="write logs here (default with --daemon: in the cache dir)"
    )
    mount.add_argument("--fuse-debug", action="store_true", help="log every FUSE request (very verbose)")
    common(mount)

    umount = sub.add_parser("umount", help="unmount a vidfs mount")
    umount.add_argument("mountpoint", type=Path)
    common(umount)

    demo = sub.add_parser("demo", help="mount the built-in demo catalogs (local emulators) and show them")
    demo.add_argument(
        "mountpoint", type=Path, nargs="?", help="where to mount (default: a new temporary directory)"
    )
    demo.add_argument("--check", action="store_true", help="mount, list, ffprobe one video, unmount, exit")
    demo.add_argument("--provider", action="append", help="only these emulated providers (repeatable)")
    common(demo)

    check = sub.add_parser("check", help="validate a config, log in, list each provider's top level")
    check.add_argument("config", type=Path)
    common(check)

    stats = sub.add_parser(
        "stats", help="show a mounted vidfs's statistics (cache, requests, renewals, errors)"
    )
    stats.add_argument("mountpoint", type=Path)
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    common(stats)

    ls = sub.add_parser(
        "ls", help="browse a config's tree without mounting (shows items that are not files too)"
    )
    ls.add_argument("config", type=Path)
    ls.add_argument(
        "path", nargs="?", default="", help="a path below the mount root, e.g. my-provider/project"
    )
    common(ls)

    prefetch = sub.add_parser(
        "prefetch",
        help="warm a mount's disk cache: read files or directories through it, in parallel, resumably",
    )
    prefetch.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="files or directories in a mount"
    )
    prefetch.add_argument("-j", "--jobs", type=int, default=4, help="files read in parallel (default 4)")
    pinning = prefetch.add_mutually_exclusive_group()
    pinning.add_argument("--pin", action="store_true", help="also pin the files: never evicted from disk")
    pinning.add_argument("--unpin", action="store_true", help="only unpin the files (reads nothing)")
    prefetch.add_argument(
        "--force", action="store_true", help="read again files an earlier run completed (ignore the state)"
    )
    prefetch.add_argument(
        "--no-progress", action="store_true", help="no progress bar or per-file lines, only the summary"
    )
    common(prefetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from vidfs.logs import setup_logging

    verbose = 2 if getattr(args, "debug", False) else getattr(args, "verbose", 0)
    log_file = getattr(args, "log_file", None)
    if not (args.command == "mount" and args.daemon):
        setup_logging(verbose=max(verbose, 1 if args.command == "mount" else 0), log_file=log_file)
    try:
        handler = {
            "mount": cmd_mount,
            "umount": cmd_umount,
            "demo": cmd_demo,
            "check": cmd_check,
            "ls": cmd_ls,
            "stats": cmd_stats,
            "prefetch": cmd_prefetch,
        }[args.command]
        return handler(args)
    except (ConfigError, UsageError) as exc:
        _report_ready_failure(str(exc))
        print(f"vidfs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VidfsError as exc:
        _report_ready_failure(str(exc))
        print(f"vidfs: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vidfs stats M | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except BaseExceptionGroup as group:
        leaf = leaf_error(group)
        if not isinstance(leaf, VidfsError):
            raise
        _report_ready_failure(str(leaf))
        print(f"vidfs: error: {leaf}", file=sys.stderr)
        return EXIT_USAGE if isinstance(leaf, ConfigError | UsageError) else EXIT_FAILURE


# ---------------------------------------------------------------------------------------------- mount
def _report_ready_failure(message: str) -> None:
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), f"ERROR {message}\n".encode())
        os.close(int(fd))
    except OSError:
        pass


def _report_ready(summary: str) -> None:
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), f"READY {summary}\n".encode())
        os.close(int(fd))
    except OSError:
        pass


def cmd_mount(args: argparse.Namespace) -> int:
    from vidfs.config import load_config

    config = load_config(args.config)
    for warning in config.warnings:
        print(f"vidfs: warning: {warning}", file=sys.stderr)
    mountpoint = args.mountpoint.resolve()
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {args.mountpoint} does not exist or is not a directory")
    if args.daemon:
        log_file = args.log_file or (config.cache.dir / "logs" / f"mount-{_slug(mountpoint)}.log")
        child_args = [a for a in args.argv if a != "--daemon"]
        if args.log_file is None:
            child_args += ["--log-file", str(log_file)]
        return spawn_and_wait(child_args, log_file=log_file)
    from vidfs.mount import MountRequest, serve

    request = MountRequest(
        config=config,
        mountpoint=mountpoint,
        subtree=args.subtree,
        allow_other=args.allow_other,
        debug_fuse=args.fuse_debug,
    )
    trio.run(serve, request, _report_ready)
    return EXIT_OK


def _slug(path: Path) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(path)).strip("-") or "root"


def spawn_and_wait(child_args: list[str], *, log_file: Path, timeout: float = 120.0) -> int:
    """Start `vidfs <child_args>` detached and wait until it reports READY (or fails)."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[READY_FD_ENV] = str(write_fd)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log_handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "vidfs", *child_args],
            env=env,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            start_new_session=True,
        )
    os.close(write_fd)
    message = _read_ready(read_fd, timeout)
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


def _read_ready(fd: int, timeout: float) -> str:
    import select

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


def cmd_umount(args: argparse.Namespace) -> int:
    return unmount(args.mountpoint)


def unmount(mountpoint: Path) -> int:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", str(mountpoint)] if tool else ["umount", str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"vidfs: error: cannot unmount {mountpoint}: {result.stderr.strip()}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from vidfs.demo import run_demo

    return run_demo(args.mountpoint, check=args.check, providers=args.provider)


# ---------------------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from vidfs.browse import run_check

    return trio.run(run_check, args.config)


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from vidfs.filesystem import STATS_XATTR

    try:
        raw = os.getxattr(args.mountpoint, STATS_XATTR)
    except OSError as exc:
        raise UsageError(f"{args.mountpoint} is not a vidfs mount ({exc.strerror})") from None
    document = json.loads(raw)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return EXIT_OK
    from vidfs.browse import render_stats

    render_stats(document)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from vidfs.browse import run_ls

    return trio.run(run_ls, args.config, args.path)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from vidfs.prefetch_cmd import run_prefetch

    return run_prefetch(
        args.paths,
        jobs=args.jobs,
        pin=args.pin,
        unpin=args.unpin,
        progress=not args.no_progress,
        force=args.force,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
