"""The provider contract suite: every provider, mounted for real over its emulator, read by real programs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Emulator,
    Mount,
    ffprobe,
    ffprobe_duration,
    running_emulator,
    running_mount,
    sha256_file,
    vidfs_cmd,
)
from tests.providers import CASES, Case, Expect, case_emulator
from vidfs.commands.demo import write_config

INSTANCE = "site"
UNSUPPORTED = "xattr.unsupported"  # the stats counter of xattr names outside `user.`


class World:
    def __init__(self, case: Case, emulator: Emulator, mount: Mount) -> None:
        self.case = case
        self.emulator = emulator
        self.mount = mount
        self.root = mount.path / INSTANCE
        self.expected: dict[str, Expect] = case.expected(emulator.catalog(case.name))


@pytest.fixture(scope="module", params=sorted(CASES))
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, media_dir: Path
) -> Iterator[World]:
    with case_emulator(request, tmp_path_factory, media_dir, "contract") as (case, emulator, workdir):
        config = write_config(
            workdir / "vidfs.toml", {INSTANCE: emulator.config(case.name)}, cache_dir=workdir / "cache"
        )
        with running_mount(config, workdir / "mnt", workdir / "mount.log") as mount:
            yield World(case, emulator, mount)


def test_listing_shows_every_file_with_size_and_mtime(world: World) -> None:
    seen: dict[str, os.stat_result] = {}
    for dirpath, _dirs, files in os.walk(world.root):
        for name in files:
            path = Path(dirpath) / name
            seen[str(path.relative_to(world.root))] = path.stat()
    assert sorted(seen) == sorted(world.expected)
    for rel, expect in world.expected.items():
        assert seen[rel].st_size == expect.size, rel
        if expect.mtime is not None:
            assert int(seen[rel].st_mtime) == int(expect.mtime), rel
        assert seen[rel].st_mode & 0o777 == 0o444
    # `ls -l` agrees with stat.
    listing = subprocess.run(
        ["ls", "-lR", str(world.root)], capture_output=True, text=True, check=True
    ).stdout
    for rel, expect in world.expected.items():
        assert re.search(rf"\s{expect.size}\s.*{re.escape(Path(rel).name)}$", listing, re.M), rel


def test_every_directory_lists_dot_and_dotdot_first(world: World) -> None:
    """`ls -a` shows "." and ".." in every directory, first (`ls -f` keeps the file system's order), with the
    directory's own inode and its parent's (the instance directory's parent is the mount root), and then
    every other name once."""
    for dirpath, _dirs, _files in os.walk(world.root):
        directory = Path(dirpath)
        lines = subprocess.run(
            ["ls", "-f1i", str(directory)], capture_output=True, text=True, check=True, timeout=60
        ).stdout.splitlines()
        listed = [line.lstrip().split(" ", 1) for line in lines]
        assert [name for _inode, name in listed[:2]] == [".", ".."], directory
        assert int(listed[0][0]) == directory.stat().st_ino, directory
        assert int(listed[1][0]) == directory.parent.stat().st_ino, directory
        assert sorted(name for _inode, name in listed[2:]) == sorted(os.listdir(directory)), directory


def test_cp_gives_identical_bytes(world: World, tmp_path: Path) -> None:
    for index, (rel, expect) in enumerate(sorted(world.expected.items())):
        target = tmp_path / f"copy-{index}"
        subprocess.run(["cp", str(world.root / rel), str(target)], check=True, timeout=300)
        assert sha256_file(target) == expect.sha256, rel
        target.unlink()


def test_random_preads_match_the_source(world: World) -> None:
    rng = random.Random(20261122)
    files = sorted(world.expected.items())
    handles: dict[str, tuple[int, Any]] = {}
    try:
        for _ in range(500):
            rel, expect = rng.choice(files)
            if rel not in handles:
                handles[rel] = (os.open(world.root / rel, os.O_RDONLY), open(expect.source, "rb"))  # noqa: SIM115
            fd, source = handles[rel]
            offset = rng.randrange(0, max(1, expect.size))
            length = rng.choice([1, 17, 4096, 65536, 131072, 1 << 20, rng.randrange(1, 3 << 20)])
            got = os.pread(fd, length, offset)
            source.seek(offset)
            assert got == source.read(length), (rel, offset, length)
    finally:
        for fd, source in handles.values():
            os.close(fd)
            source.close()


def test_ffprobe_reads_every_video(world: World) -> None:
    if not shutil.which("ffprobe"):
        pytest.skip("ffprobe missing")
    from vidfs.emulator.media import moov_at_end

    moov_end_seen = False
    for rel, expect in sorted(world.expected.items()):
        result = ffprobe(world.root / rel, "-show_entries", "format=duration", "-of", "csv=p=0")
        if rel.endswith((".mp4", ".mov")) and "variant" not in expect.source:
            assert result.returncode == 0, (rel, result.stderr)
            assert float(result.stdout.strip()) > 0
            moov_end_seen |= moov_at_end(Path(expect.source))
    assert moov_end_seen, "the catalog must include a moov-at-end sample"


def test_ffmpeg_seeks_and_decodes_a_frame(world: World, tmp_path: Path) -> None:
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg missing")
    rel = max((r for r in world.expected if r.endswith(".mp4")), key=lambda r: world.expected[r].size)
    path = world.root / rel
    duration = ffprobe_duration(path)
    frame = tmp_path / "frame.png"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            f"{duration / 2:.2f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-y",
            str(frame),
        ],
        check=True,
        timeout=120,
    )
    assert frame.stat().st_size > 1000


def test_write_type_calls_fail_with_erofs(world: World) -> None:
    rel = sorted(world.expected)[0]
    path = world.root / rel
    some_dir = path.parent
    attempts = {
        "write": lambda: os.open(path, os.O_WRONLY),
        "create": lambda: os.open(some_dir / "new-file", os.O_WRONLY | os.O_CREAT, 0o644),
        "rename": lambda: os.rename(path, some_dir / "renamed"),
        "unlink": lambda: os.unlink(path),
        "mkdir": lambda: os.mkdir(some_dir / "new-dir"),
        "rmdir": lambda: os.rmdir(some_dir),
        "truncate": lambda: os.truncate(path, 0),
    }
    for what, call in attempts.items():
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EROFS, what


def test_unknown_path_is_enoent(world: World) -> None:
    for path in (world.root / "no-such-dir", world.root / "no-such-dir" / "x.mp4", world.mount.path / "nope"):
        with pytest.raises(FileNotFoundError):
            os.stat(path)


def test_xattrs_name_provider_and_id(world: World) -> None:
    rel = sorted(world.expected)[0]
    names = os.listxattr(world.root / rel)
    assert "user.vidfs.remote_id" in names
    assert os.getxattr(world.root / rel, "user.vidfs.provider") == INSTANCE.encode()


def test_ls_l_learns_once_that_labels_and_acls_are_not_supported(world: World) -> None:
    """`ls -l` asks every entry's `security.selinux` and POSIX ACLs. They are not supported here (EOPNOTSUPP,
    where an absent `user.` name is ENODATA), and coreutils then stops asking for the whole mount: a
    `ls -lR` costs a request or two of them, not two or three per entry."""
    path = world.root / sorted(world.expected)[0]
    for name in ("security.selinux", "system.posix_acl_access", "system.posix_acl_default", "trusted.x"):
        with pytest.raises(OSError) as refused:
            os.getxattr(path, name)
        assert refused.value.errno == errno.EOPNOTSUPP, name
    with pytest.raises(OSError) as absent:
        os.getxattr(path, "user.vidfs.no_such_value")
    assert absent.value.errno == errno.ENODATA

    def asked() -> int:
        return int(json.loads(os.getxattr(world.mount.path, "user.vidfs.stats"))["counters"][UNSUPPORTED])

    before = asked()
    listed = subprocess.run(["ls", "-lR", str(world.root)], capture_output=True, check=True, timeout=120)
    assert listed.stdout.count(b"\n") > len(world.expected) >= 2
    assert asked() - before <= 3


def test_names_cost_no_size_request_and_each_size_is_learned_when_needed(
    world: World, tmp_path: Path
) -> None:
    """Sizes a listing lacks (a HEAD each) are learned when `stat` or `open` needs them, not for `ls`: on a
    fresh mount, reading every directory costs no HEAD; then a `stat` shows the true size (the kernel was
    told it had none yet), a file opened and read to its end without any `stat` gives every byte, and an
    `ls -l` after them shows every size."""
    config = write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: world.emulator.config(world.case.name)},
        cache_dir=tmp_path / "cache",
    )

    def heads() -> int:
        return sum(r["method"] == "HEAD" for r in world.emulator.requests(world.case.name))

    with running_mount(config, tmp_path / "mnt", tmp_path / "mount.log") as mount:
        root = mount.path / INSTANCE
        before = heads()
        names = sorted(
            str((Path(dirpath) / name).relative_to(root))
            for dirpath, _dirs, files in os.walk(root)
            for name in files
        )  # os.walk reads directories only: the kind of each entry comes with it
        assert names == sorted(world.expected)
        assert heads() == before
        first, *rest = sorted(world.expected.items())
        assert (root / first[0]).stat().st_size == first[1].size
        assert heads() - before <= 1
        if rest:
            rel, expect = rest[-1]
            fd = os.open(root / rel, os.O_RDONLY)  # no stat first: its size comes with the read
            try:
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
            finally:
                os.close(fd)
            assert hashlib.sha256(b"".join(chunks)).hexdigest() == expect.sha256, rel
        listing = subprocess.run(["ls", "-lR", str(root)], capture_output=True, text=True, check=True).stdout
        for rel, expect in world.expected.items():
            assert re.search(rf"\s{expect.size}\s.*{re.escape(Path(rel).name)}$", listing, re.M), rel


def test_auth_renewal_mid_read(world: World, tmp_path: Path, media_dir: Path) -> None:
    """A long read spanning the token/URL expiry (lifetime of seconds) completes with identical bytes."""
    case = world.case
    if not case.renewal:
        pytest.skip(f"{case.name}: nothing expires (no token, no signed URL)")
    with running_emulator(tmp_path / "emulator", [case.name], media_dir, *case.short_lived_args) as emulator:
        expected = case.expected(emulator.catalog(case.name))
        # A few MB: long enough (one connection, latency per request) to span several lifetimes.
        small = {rel: e for rel, e in expected.items() if e.size <= 8 << 20}
        rel, expect = max(small.items(), key=lambda item: item[1].size)
        # Slow storage down so the read lasts several token lifetimes.
        emulator.post(
            case.name, "faults", {"rules": [{"kind": "latency", "seconds": 1.0, "path": case.storage_path}]}
        )
        # One connection per host and no readahead: a ranged GET per FUSE read (1 MiB), one after another,
        # each paying the latency.
        config = write_config(
            tmp_path / "vidfs.toml",
            {INSTANCE: emulator.config(case.name)},
            cache_dir=tmp_path / "cache",
            extra="[http]\nmax_connections_per_host = 1\n",
            cache={"readahead_max": "64KiB"},
        )
        with running_mount(config, tmp_path / "mnt", tmp_path / "mount.log") as mount:
            assert sha256_file(mount.path / INSTANCE / rel) == expect.sha256
        logins = [r for r in emulator.requests(case.name) if re.search(case.login_path, r["path"])]
        assert len(logins) >= 2, "the token/URL was never renewed"


def test_wrong_password_gives_one_clear_line(world: World, tmp_path: Path) -> None:
    table = world.case.wrong_password(world.emulator.config(world.case.name))
    config = write_config(tmp_path / "bad.toml", {INSTANCE: table}, cache_dir=tmp_path / "cache")
    result = subprocess.run(
        vidfs_cmd("check", str(config)), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "FAIL" in result.stdout and INSTANCE in result.stdout
    assert "not-the-password" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
