"""The disk store across remounts, through real mounts: a 512 MiB file read once at full speed is then read
whole with its origin stopped (the store kept up with the network: nothing was skipped); pins set through
the control socket (`vidfs prefetch --pin`) survive a remount."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount, sha256_file, start_emulator, stop_process, unmount, vidfs_cmd, wait_until
from vidfs.commands.demo import write_config
from vidfs.emulator.server import Request, Site, serve_file

INSTANCE = "site"
NAME = "big.bin"
SIZE = 512 << 20


def stats(mount: Mount) -> dict[str, Any]:
    return json.loads(os.getxattr(mount.path, "user.vidfs.stats"))


class Origin:
    """A plain web server on 127.0.0.1: an nginx-style index of /pub/ and one file, served with Range."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.site = Site("origin")
        self.site.add_route(("GET", "HEAD"), r"/pub/", self.index)
        self.site.add_route(("GET", "HEAD"), r"/pub/big\.bin", self.file)

    def index(self, req: Request) -> None:
        size = self.path.stat().st_size
        line = f'<a href="{NAME}">{NAME}</a>{" " * (51 - len(NAME))}22-Nov-2026 10:00 {size:>19}\r\n'
        head = '<html><body><h1>Index of /pub/</h1><hr><pre><a href="../">../</a>\r\n'
        page = f"{head}{line}</pre><hr></body></html>"
        req.send_bytes(200, page.encode(), "text/html")

    def file(self, req: Request) -> None:
        serve_file(req, self.path, etag='"big-1"', content_type="application/octet-stream")


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "www" / NAME
    path.parent.mkdir()
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for _ in range(SIZE >> 24):
            chunk = os.urandom(16 << 20)
            digest.update(chunk)
            handle.write(chunk)
    return path, digest.hexdigest()


@pytest.fixture
def origin(big_file: tuple[Path, str]) -> Iterator[Origin]:
    served = Origin(big_file[0])
    served.site.start()
    try:
        yield served
    finally:
        served.site.close()


def test_a_file_read_once_is_then_read_whole_with_its_origin_stopped(
    tmp_path: Path, origin: Origin, big_file: tuple[Path, str], mounts: Any
) -> None:
    _path, expected = big_file
    config = write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: {"type": "http", "url": origin.site.url + "/pub/"}},
        cache_dir=tmp_path / "cache",
        cache={"disk": "1GiB"},
        extra="[http]\nretries = 1\nconnect_timeout = 2\n",
    )
    mount = mounts(config)
    assert sha256_file(mount.path / INSTANCE / NAME) == expected  # one sequential read, as fast as it goes
    wait_until(lambda: stats(mount)["disk_cache"]["bytes"] == SIZE, "the whole file in the disk cache", 120)
    disk = stats(mount)["disk_cache"]
    assert disk["skipped_unwritable"] == 0 and disk["rejected"] == 0, disk
    unmount(mount)
    origin.site.close()

    again = mounts(config, name="again")
    assert stats(again)["disk_cache"]["bytes"] == SIZE
    assert sha256_file(again.path / INSTANCE / NAME) == expected
    document = stats(again)
    assert document["disk_cache"]["misses"] == 0, document["disk_cache"]
    assert document["counters"].get("bytes.fetched", 0) == 0


def test_pins_survive_a_remount(tmp_path: Path, media_dir: Path, mounts: Any) -> None:
    emulator = start_emulator(tmp_path / "emulator", ["http"], media_dir)
    try:
        config = write_config(
            tmp_path / "vidfs.toml", {INSTANCE: emulator.config("http")}, cache_dir=tmp_path / "cache"
        )
        mount = mounts(config)
        target = mount.path / INSTANCE / "interview.mp4"
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "client-cache")}
        pinned = subprocess.run(
            vidfs_cmd("prefetch", "--pin", str(target)), capture_output=True, text=True, env=env, timeout=300
        )
        assert pinned.returncode == 0, pinned.stderr
        size = target.stat().st_size
        wait_until(lambda: stats(mount)["disk_cache"]["pinned_bytes"] == size, "the pinned file on disk", 60)
        unmount(mount)

        again = mounts(config, name="again")
        disk = stats(again)["disk_cache"]
        assert (disk["pinned_files"], disk["pinned_bytes"]) == (1, size), disk
        target = again.path / INSTANCE / "interview.mp4"
        unpinned = subprocess.run(
            vidfs_cmd("prefetch", "--unpin", str(target)),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert unpinned.returncode == 0, unpinned.stderr
        assert stats(again)["disk_cache"]["pinned_files"] == 0
    finally:
        stop_process(emulator.process)
