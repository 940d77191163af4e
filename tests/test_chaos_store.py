"""Chaos for the disk store, through real mounts over the HTTP index emulator: the cache dir turns read-only
(a read-only bind mount over it) or fills up (the cache dir on a small tmpfs) in the middle of reads.

Reads keep returning the right bytes from the network; the condition is logged once (not per block) and
counted; the disk cache resumes by itself when the cache dir can be written again. Every mount made here is
undone by what was mounted (the bind mount, the tmpfs), after the vidfs mount above it is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Emulator,
    Mount,
    emulator_fixture,
    unmount,
    wait_until,
)

INSTANCE = "site"
BIG = "big reel.mp4"
READ_ONLY_LINE = "cannot be written"
FULL_LINE = "blocks are not stored until there is room again"  # the store's line, not sqlite's
RESUMED_LINE = "writing again"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts and tmpfs need root")


http_site = emulator_fixture("http", scope="function")


def files_of(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """path below the provider root → the emulator's record (size, sha256)."""
    return {f["path"]: f for f in emulator.catalog("http")["files"]}


def config_for(make_config: Any, emulator: Emulator, disk: str = "1GiB") -> Path:
    path: Path = make_config({INSTANCE: emulator.config("http")}, cache={"disk": disk, "block_size": "64KiB"})
    return path


def stats(mount: Mount) -> dict[str, Any]:
    return json.loads(os.getxattr(mount.path, "user.vidfs.stats"))


def sha256_range(path: Path, start: int, end: int, digest: Any) -> None:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            chunk = handle.read(min(left, 1 << 20))
            assert chunk, f"{path}: short read at {end - left}"
            digest.update(chunk)
            left -= len(chunk)


def sha256_fresh(path: Path) -> str:
    """The file's digest, read through the daemon: the kernel's cached pages of it are dropped first."""
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    digest = hashlib.sha256()
    sha256_range(path, 0, path.stat().st_size, digest)
    return digest.hexdigest()


def lines(mount: Mount, text: str) -> int:
    return sum(text in line for line in mount.log_text().splitlines())


def run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def read_only_bind(directory: Path) -> Iterator[None]:
    """A read-only bind mount of `directory` over itself, removed at the end."""
    run("mount", "--bind", str(directory), str(directory))
    try:
        # EBUSY while the daemon has a file open for writing through the new mount: try again.
        wait_until(
            lambda: (
                subprocess.run(
                    ["mount", "-o", "remount,bind,ro", str(directory)], capture_output=True, timeout=60
                ).returncode
                == 0
            ),
            "the bind mount to turn read-only",
            30,
        )
        yield
    finally:
        drop_mount(directory)


@contextlib.contextmanager
def small_tmpfs(directory: Path, size_mib: int) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(directory))
    try:
        yield
    finally:
        drop_mount(directory)


def drop_mount(directory: Path) -> None:
    """Unmount what we mounted on `directory` (lazily if something still holds it)."""
    if subprocess.run(["umount", str(directory)], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=60)


def resumed(mount: Mount, path: Path, expected_sha256: str, bytes_before: int) -> bool:
    """Read `path` again (the daemon stores what it fetches); has the disk cache resumed?"""
    assert sha256_fresh(path) == expected_sha256
    disk = stats(mount)["disk_cache"]
    return disk["unwritable"] == 0 and disk["bytes"] > bytes_before


# ------------------------------------------------------------------------------------------- tests
def test_chaos_cache_dir_turns_read_only_in_the_middle_of_reads(
    tmp_path: Path, http_site: Emulator, mounts: Any, make_config: Any
) -> None:
    files = files_of(http_site)
    mount = mounts(config_for(make_config, http_site))
    root = mount.path / INSTANCE
    big = root / BIG
    size = files[BIG]["size"]
    digest = hashlib.sha256()
    sha256_range(big, 0, size // 4, digest)  # the first quarter: read and cached
    wait_until(lambda: stats(mount)["disk_cache"]["bytes"] >= size // 8, "part of the file on disk", 60)
    cache_dir = tmp_path / "cache"
    with read_only_bind(cache_dir):
        sha256_range(big, size // 4, size, digest)  # the rest, while the cache dir is read-only
        assert digest.hexdigest() == files[BIG]["sha256"]
        for name in ("interview.mp4", "Café #1.mp4"):
            assert sha256_fresh(root / name) == files[name]["sha256"], name
        wait_until(lambda: stats(mount)["disk_cache"]["read_only"] == 1, "the condition counted", 60)
        document = stats(mount)
        disk = document["disk_cache"]
        assert disk["unwritable"] == 1 and disk["skipped_unwritable"] > 0, disk
        assert document["counters"]["disk.read_only"] == 1
        assert lines(mount, READ_ONLY_LINE) == 1, mount.log_text()
        bytes_before = disk["bytes"]
    # Writable again: the next blocks fetched are stored (the big file is larger than the memory cache, so
    # reading it again fetches what the disk did not take), and the store says so once.
    wait_until(
        lambda: resumed(mount, big, files[BIG]["sha256"], bytes_before), "the disk cache to resume", 90
    )
    assert lines(mount, RESUMED_LINE) == 1
    assert lines(mount, READ_ONLY_LINE) == 1
    assert stats(mount)["disk_cache"]["read_only"] == 1


def test_chaos_cache_dir_fills_up_in_the_middle_of_reads(
    tmp_path: Path, http_site: Emulator, mounts: Any, make_config: Any
) -> None:
    files = files_of(http_site)
    cache_dir = tmp_path / "cache"
    # A cap well inside the file system: until someone else fills it, the store has all the room it may use
    # and does not look at the free space between batches (it does every 2 s while it is short of room,
    # and one such look between the filling and the next write would shrink it in time: no ENOSPC to meet).
    with small_tmpfs(cache_dir, 64):
        mount = mounts(config_for(make_config, http_site, disk="24MiB"))
        try:
            root = mount.path / INSTANCE
            assert sha256_fresh(root / "interview.mp4") == files["interview.mp4"]["sha256"]
            first = files["interview.mp4"]["size"]
            wait_until(lambda: idle_with(stats(mount)["disk_cache"], first), "the first file all on disk", 60)
            fill_up(cache_dir / "filler")  # someone else fills the file system
            assert sha256_fresh(root / BIG) == files[BIG]["sha256"]
            assert sha256_fresh(root / "Café #1.mp4") == files["Café #1.mp4"]["sha256"]
            # Blocks are written behind the reads: the last of them may meet the full disk after sha256 ends.
            wait_until(lambda: stats(mount)["disk_cache"]["full"] == 1, "the full disk counted", 60)
            document = stats(mount)
            disk = document["disk_cache"]
            assert disk["full"] == 1 and disk["unwritable"] == 1, disk
            assert disk["usable"] < disk["capacity"], disk
            assert document["counters"]["disk.full"] == 1
            assert lines(mount, FULL_LINE) == 1, mount.log_text()
            # Room again: the store resumes by itself, within the file system's room.
            (cache_dir / "filler").unlink()
            bytes_before = disk["bytes"]
            wait_until(
                lambda: resumed(mount, root / BIG, files[BIG]["sha256"], bytes_before),
                "the disk cache to resume",
                90,
            )
            assert lines(mount, RESUMED_LINE) == 1
            assert lines(mount, FULL_LINE) == 1
            assert stats(mount)["disk_cache"]["bytes"] <= 64 << 20
        finally:
            unmount(mount)  # before the tmpfs under it goes


def idle_with(disk: dict[str, Any], size: int) -> bool:
    """The store holds at least `size` bytes, and nothing waits to be written."""
    return bool(disk["bytes"] >= size and disk["queued_bytes"] == 0 and disk["incoming_bytes"] == 0)


def fill_up(path: Path) -> None:
    """Write zeros to `path` until the file system is full (bounded by its size)."""
    st = os.statvfs(path.parent)
    with open(path, "wb", buffering=0) as handle:
        for _ in range(st.f_blocks * st.f_frsize // (1 << 20) + 1):
            try:
                handle.write(bytes(1 << 20))
            except OSError:
                break
        for _ in range(256):  # the last partial MiB, in 4 KiB steps
            try:
                handle.write(bytes(4096))
            except OSError:
                break
