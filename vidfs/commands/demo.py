"""`vidfs demo`: local emulators of every vendor, one mount over them, a tour, Ctrl-C to leave.

The demo process only orchestrates: the emulators and the mount run as child processes (a mount is never
read from the process that serves it), the tree is printed by walking the mount like any user would.

The tour is printed line by line as it happens (stdout is line-buffered here, so under a service manager
or into a log file it shows at once, not at exit). Ctrl-C (or SIGTERM, SIGHUP) at the prompt unmounts,
stops the emulators and exits 0. The work dir (`$TMPDIR/vidfs-demo-*`: config, cache, logs, and the mount
point when none is given) is removed on the way out, whether or not a mount point was given; only a mount
that could not be unmounted keeps it, rather than deleting through a live mount.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vidfs.commands.process import read_ready, start_daemon, unmount
from vidfs.daemon.mountpoint import mounted_types
from vidfs.errors import UsageError

HELP = "mount the built-in demo catalogs (local emulators) and show them"

READY_TIMEOUT = 600.0  # the first run generates the sample videos with ffmpeg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mountpoint", type=Path, nargs="?", help="where to mount (default: a new temporary directory)"
    )
    parser.add_argument("--check", action="store_true", help="mount, list, ffprobe one video, unmount, exit")
    parser.add_argument("--provider", action="append", help="only these emulated providers (repeatable)")


def run(args: argparse.Namespace) -> int:
    return run_demo(args.mountpoint, check=args.check, providers=args.provider)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_config(
    path: Path,
    providers: dict[str, dict[str, Any]],
    *,
    cache_dir: Path,
    extra: str = "",
    cache: dict[str, Any] | None = None,
) -> Path:
    """A private TOML config: a [cache] table (dir + `cache` overrides), then one table per provider."""
    cache_table = {"dir": str(cache_dir), "metadata_ttl": "5m", **(cache or {})}
    lines = ["[cache]", *(f"{key} = {toml_value(value)}" for key, value in cache_table.items()), ""]
    for name, table in providers.items():
        lines.append(f'[providers."{name}"]')
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines) + extra)
    path.chmod(0o600)
    return path


def start_emulators(
    names: list[str], workdir: Path, extra_args: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    ready_file = workdir / "emulator.json"
    log = open(workdir / "emulator.log", "ab")  # noqa: SIM115 - owned by the child for its whole life
    args = [sys.executable, "-m", "vidfs.emulator", "--ready-file", str(ready_file)]
    for name in names:
        args += ["--provider", name]
    process = subprocess.Popen(
        args + (extra_args or []), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready_file.exists():
        if process.poll() is not None:
            raise UsageError(
                f"the emulator exited with status {process.returncode}; see {workdir / 'emulator.log'}"
            )
        if time.monotonic() > deadline:
            process.terminate()
            raise UsageError("the emulator did not start in time")
        time.sleep(0.1)
    return process, json.loads(ready_file.read_text())


def _tree(root: Path, limit: int = 60) -> list[str]:
    lines: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        depth = len(Path(dirpath).relative_to(root).parts)
        indent = "  " * depth
        if depth:
            lines.append(f"{indent[:-2]}{Path(dirpath).name}/")
        for name in sorted(filenames):
            size = (Path(dirpath) / name).stat().st_size
            lines.append(f"{indent}{name}  ({size / 1e6:.1f} MB)")
            if len(lines) >= limit:
                lines.append(f"{indent}…")
                return lines
    return lines


def _first_video(root: Path) -> Path | None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".mp4", ".mov")):
                return Path(dirpath) / name
    return None


def run_demo(mountpoint: Path | None, *, check: bool = False, providers: list[str] | None = None) -> int:
    from vidfs.emulator import known_emulators

    names = providers or known_emulators()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # each line of the tour shows when it is printed
    workdir = Path(tempfile.mkdtemp(prefix="vidfs-demo-"))
    mountpoint = (mountpoint or workdir / "mnt").resolve()
    mount_process: subprocess.Popen[bytes] | None = None
    emulator: subprocess.Popen[bytes] | None = None
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
        print(f"vidfs demo: starting emulators for {', '.join(names)} (a first run makes sample videos)…")
        emulator, endpoints = start_emulators(names, workdir)
        config = write_config(
            workdir / "demo.toml",
            {name: endpoints[name]["config"] for name in names},
            cache_dir=workdir / "cache",
        )
        mount_process, read_fd = start_daemon(
            ["mount", str(config), str(mountpoint), "-v"], log_file=workdir / "mount.log"
        )
        message = read_ready(read_fd, 60)
        if not message.startswith("READY"):
            print(
                f"vidfs demo: the mount failed: {message or 'no answer'} (log: {workdir / 'mount.log'})",
                file=sys.stderr,
            )
            return 1
        print(f"\nMounted the demo catalogs at {mountpoint}\n")
        for line in _tree(mountpoint):
            print("  " + line)
        video = _first_video(mountpoint)
        print("\nTry, in another shell:")
        print(f"  ls -lR {mountpoint}")
        if video is not None:
            print(f"  ffprobe -hide_banner '{video}'")
            print(f"  ffmpeg -ss 2 -i '{video}' -frames:v 1 /tmp/frame.png")
            print(f"  getfattr -d '{video}'")
        print(f"  cp -r {mountpoint} /tmp/vidfs-copy")
        print(f"\nConfig: {config}   Logs: {workdir / 'mount.log'}")
        if check:
            if video is None:
                print("vidfs demo: no video found in the mount", file=sys.stderr)
                return 1
            probe = subprocess.run(
                ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(video)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            print(f"ffprobe {video.name}: duration {probe.stdout.strip() or probe.stderr.strip()}")
            return 0 if probe.returncode == 0 else 1
        print("Press Ctrl-C to unmount and stop.")
        _wait_for_a_stop_signal()
        return 0
    finally:
        if mount_process is not None:
            unmount(mountpoint)
            _stop(mount_process)
        if emulator is not None:
            _stop(emulator)
        if mountpoint.is_relative_to(workdir) and mounted_types(mountpoint):
            print(f"vidfs demo: {mountpoint} is still mounted; keeping {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _wait_for_a_stop_signal() -> None:
    """Until Ctrl-C, SIGTERM or SIGHUP. They stay blocked afterwards: a second Ctrl-C while the demo cleans
    up is held, not raised in the middle of it, and dies with the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.sigwait(STOP_SIGNALS)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
