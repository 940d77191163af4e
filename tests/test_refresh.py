"""`vidfs refresh MOUNTPOINT [PATH] [--recursive]` on a real mount (issue 17): a change at the vendor that the
mount's cached listings hide (`metadata_ttl = "1h"`) becomes visible as soon as the command returns.

The vendor is the Pixop emulator; its control API deletes and renames videos (`POST /_emulator/mutate`).
Each test lists a project folder, changes it at the vendor, sees the old listing still served, refreshes,
and sees the change at once, also through names the kernel had cached (a `stat` of the deleted file right
after the refresh fails: the kernel's entry was dropped, not left to its 1 s timeout):

1. PATH: the folder itself;
2. `--recursive` from the provider's root (a plain refresh of the root does not reach the folder);
3. no PATH: everything;
4. refusals: a file, a missing path, a directory that is not a vidfs mount: one line, exit 2;
5. more names than the daemon hands the kernel at once (`FORGET_BATCH`): the last ones are dropped too.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Emulator, Mount, emulator_fixture, vidfs_cmd
from tests.providers import CASES, Expect
from vidfs.commands.demo import write_config
from vidfs.commands.process import control_call
from vidfs.daemon.control import FORGET_BATCH
from vidfs.fs.videofs import CONTROL_XATTR

INSTANCE = "a"


pixop = emulator_fixture("pixop")
pixop_scaled = emulator_fixture("pixop", extra=("--scale", "2500"))  # projects of 1,000, 1,000 and 500


def mount_of(pixop: Emulator, tmp_path: Path, mounts: Any, *args: str) -> Mount:
    """A mount of `pixop` whose listings are cached for an hour."""
    config = write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: pixop.config("pixop")},
        cache_dir=tmp_path / "cache",
        cache={"metadata_ttl": "1h", "negative_ttl": "1h", "disk": "0"},
    )
    mounted: Mount = mounts(config, *args)
    return mounted


@pytest.fixture
def mount(tmp_path: Path, pixop: Emulator, mounts: Any) -> Mount:
    return mount_of(pixop, tmp_path, mounts)


def current(pixop: Emulator) -> dict[str, Expect]:
    """What the vendor holds now, as paths in the mount."""
    return {f"{INSTANCE}/{path}": e for path, e in CASES["pixop"].expected(pixop.catalog("pixop")).items()}


def a_video(pixop: Emulator) -> tuple[Path, Expect]:
    """A video of the folder holding the most videos (the tests delete one each)."""
    videos = current(pixop)
    folders: dict[Path, int] = {}
    for path in videos:
        folders[Path(path).parent] = folders.get(Path(path).parent, 0) + 1
    folder = max(sorted(folders), key=lambda f: folders[f])
    path = sorted(p for p in videos if Path(p).parent == folder)[-1]
    return Path(path), videos[path]


def refresh(mount: Mount, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vidfs_cmd("refresh", str(mount.path), *args), capture_output=True, text=True, timeout=120, check=False
    )


def delete_at_vendor(pixop: Emulator, video: Expect) -> None:
    pixop.post("pixop", "mutate", {"action": "delete", "video_id": video.remote_id})


def seen_then_deleted(mount: Mount, pixop: Emulator) -> tuple[Path, Path]:
    """A video listed and looked up through the mount, then deleted at the vendor while the mount still
    lists it (its listing is cached for an hour). Returns (its folder, its path) in the mount."""
    rel, video = a_video(pixop)
    folder, path = mount.path / rel.parent, mount.path / rel
    assert rel.name in os.listdir(folder)
    assert os.stat(path).st_size == video.size  # the kernel now holds the name
    delete_at_vendor(pixop, video)
    assert rel.name not in {Path(p).name for p in current(pixop) if Path(p).parent == rel.parent}
    assert rel.name in os.listdir(folder)  # the cached listing still shows it
    return folder, path


def test_refresh_a_folder_shows_a_deletion_at_once(mount: Mount, pixop: Emulator) -> None:
    folder, path = seen_then_deleted(mount, pixop)
    rel = folder.relative_to(mount.path).as_posix()
    socket_path = os.getxattr(mount.path, CONTROL_XATTR).decode()
    assert path.exists()  # the kernel holds the name again, for its 1 s entry timeout...
    answer = control_call(socket_path, {"op": "refresh", "path": rel})  # (the socket itself: milliseconds)
    assert answer["ok"] and answer["listings"] == 1 and answer["entries"] >= 1, answer
    assert not path.exists()  # ...which the refresh ended at once
    assert path.name not in os.listdir(folder)

    folder, other = seen_then_deleted(mount, pixop)  # the same through the command
    rel = folder.relative_to(mount.path).as_posix()
    result = refresh(mount, rel)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"vidfs: refreshed /{rel}: 1 cached listing(s) dropped\n"
    assert other.name not in os.listdir(folder) and not other.exists()


def test_refresh_of_the_provider_root_reaches_its_folders_only_when_recursive(
    mount: Mount, pixop: Emulator
) -> None:
    rel, video = a_video(pixop)
    renamed_from = mount.path / rel
    assert renamed_from.name in os.listdir(renamed_from.parent)
    pixop.post(
        "pixop", "mutate", {"action": "rename", "video_id": video.remote_id, "file_name": "renamed.mp4"}
    )
    provider_root = mount.path / INSTANCE
    result = refresh(mount, str(provider_root))  # a path below the mount point works too
    assert result.returncode == 0, result.stderr
    assert f"refreshed /{INSTANCE}: 1 cached listing(s) dropped" in result.stdout
    assert renamed_from.name in os.listdir(renamed_from.parent)  # the folder's own listing was kept

    result = refresh(mount, INSTANCE, "--recursive")
    assert result.returncode == 0, result.stderr
    dropped = re.fullmatch(
        rf"vidfs: refreshed /{INSTANCE}: (\d+) cached listing\(s\) dropped\n", result.stdout
    )
    assert dropped is not None and int(dropped[1]) >= 2, result.stdout  # the provider root and its folders
    names = os.listdir(renamed_from.parent)
    assert "renamed.mp4" in names and renamed_from.name not in names
    assert (renamed_from.parent / "renamed.mp4").stat().st_size == video.size
    assert not renamed_from.exists()


def test_refresh_of_everything(mount: Mount, pixop: Emulator) -> None:
    folder, path = seen_then_deleted(mount, pixop)
    result = refresh(mount)
    assert result.returncode == 0, result.stderr
    assert "refreshed everything" in result.stdout
    assert not path.exists()
    assert path.name not in os.listdir(folder)
    assert os.listdir(mount.path) == [INSTANCE]


def test_refusals_are_one_line(mount: Mount, pixop: Emulator, tmp_path: Path) -> None:
    rel, _ = a_video(pixop)
    for args, words in [
        ((rel.as_posix(),), "not a directory"),
        ((f"{INSTANCE}/no such folder",), "not found"),
    ]:
        result = refresh(mount, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidfs: error: refresh /") and words in lines[0], lines
    (tmp_path / "plain").mkdir()
    result = subprocess.run(
        vidfs_cmd("refresh", str(tmp_path / "plain")), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidfs: error: {tmp_path / 'plain'} is not the root of a vidfs mount (no control socket published)"
    ]
    assert "Traceback" not in mount.log_text()


def test_refresh_of_everything_in_a_subtree_mount(tmp_path: Path, pixop: Emulator, mounts: Any) -> None:
    rel, video = a_video(pixop)
    mount = mount_of(pixop, tmp_path, mounts, "--subtree", rel.parent.as_posix())
    path = mount.path / rel.name
    assert os.stat(path).st_size == video.size
    delete_at_vendor(pixop, video)
    assert rel.name in os.listdir(mount.path)
    result = refresh(mount)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "vidfs: refreshed everything: 1 cached listing(s) dropped\n"
    assert rel.name not in os.listdir(mount.path) and not path.exists()


def test_refresh_of_everything_drops_names_past_the_first_batch(
    tmp_path: Path, pixop_scaled: Emulator, mounts: Any
) -> None:
    mount = mount_of(pixop_scaled, tmp_path, mounts)
    videos = current(pixop_scaled)
    assert len(videos) > 2 * FORGET_BATCH
    walked: list[Path] = []  # every name looked up, so the kernel holds them all, in this order
    for folder in sorted({Path(path).parent for path in videos}):
        for name in sorted(os.listdir(mount.path / folder)):
            os.lstat(mount.path / folder / name)
            walked.append(folder / name)
    assert len(walked) >= len(videos)
    # The last one looked up is the tree's last node: in the refresh's last batch.
    gone = [walked[0], walked[len(walked) // 2], walked[-1]]
    for rel in gone:
        delete_at_vendor(pixop_scaled, videos[rel.as_posix()])
    # The cached listings still show them, and these lookups renew the kernel's entries (1 s): the names it
    # held longer ago are gone from its cache already (FUSE lets an expired entry go when it is last used).
    assert all((mount.path / rel).exists() for rel in gone)

    socket_path = os.getxattr(mount.path, CONTROL_XATTR).decode()
    answer = control_call(socket_path, {"op": "refresh", "path": ""})
    assert answer["ok"] and answer["listings"] >= 4 and answer["entries"] >= len(gone), answer
    assert not any((mount.path / rel).exists() for rel in gone)
    for rel in gone:
        assert rel.name not in os.listdir(mount.path / rel.parent)
