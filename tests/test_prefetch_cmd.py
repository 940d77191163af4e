"""`vidfs prefetch`: reads files fully through a real mount, in parallel; resumes; pins; or says why not."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from tests.conftest import Emulator, emulator_fixture, vidfs_cmd, wait_until
from vidfs.commands.demo import toml_value
from vidfs.commands.prefetch import Item, MountInfo, State

INSTANCE = "site"


pixop = emulator_fixture("pixop")


def prefetch(*args: str, client_cache: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(client_cache)}
    return subprocess.run(
        vidfs_cmd("prefetch", *args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def stats(mountpoint: Path) -> dict[str, Any]:
    return json.loads(os.getxattr(mountpoint, "user.vidfs.stats"))


def files_below(root: Path) -> dict[Path, int]:
    return {
        Path(dirpath) / name: (Path(dirpath) / name).stat().st_size
        for dirpath, _dirs, names in os.walk(root)
        for name in names
    }


def storage_bytes(pixop: Emulator) -> int:
    return sum(
        e.get("bytes_sent", 0)
        for e in pixop.requests("pixop")
        if e["method"] == "GET" and "/media/" in e["path"]
    )


def test_prefetch_reads_every_file_then_a_second_run_skips_them(
    tmp_path: Path, pixop: Emulator, make_config: Any, mounts: Any
) -> None:
    mount = mounts(make_config({INSTANCE: pixop.config("pixop")}))
    root = mount.path / INSTANCE
    expected = files_below(root)
    assert len(expected) >= 5
    client_cache = tmp_path / "client-cache"
    before = storage_bytes(pixop)

    first = prefetch(str(root), "--jobs", "3", client_cache=client_cache)
    assert first.returncode == 0, first.stderr
    # Not a terminal: one plain line per file, then the summary. No bar characters.
    for path in expected:
        assert str(path) in first.stdout, path
    assert "\r" not in first.stdout + first.stderr
    total = sum(expected.values())
    assert re.search(rf"prefetched {len(expected)} file\(s\)", first.stdout), first.stdout
    # Every byte went through the daemon (read by us, downloaded once) and into its disk cache; blocks the
    # disk store let pass (`skipped_busy`: a disk stalled for seconds) are reported by prefetch itself.
    assert storage_bytes(pixop) - before >= total
    document = stats(mount.path)
    assert document["counters"]["bytes.read"] >= total
    # The disk store writes behind the reads: its last batches may still be on their way to the disk.
    wait_until(
        lambda: (
            stats(mount.path)["disk_cache"]["bytes"] >= total
            or stats(mount.path)["disk_cache"].get("skipped_busy", 0)
        ),
        "the disk cache to hold every byte read",
    )
    disk = stats(mount.path)["disk_cache"]
    assert disk["files"] == len(expected), disk
    if disk.get("skipped_busy", 0):
        assert "could not store" in first.stderr
    else:
        assert disk["bytes"] >= total, disk
    # The resume state lives in the client's cache dir, one record per completed file.
    state_files = list((client_cache / "vidfs" / "prefetch").glob("*.jsonl"))
    assert len(state_files) == 1
    records = [json.loads(line) for line in state_files[0].read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(
        p.relative_to(mount.path).as_posix() for p in expected
    )

    # The second run reads nothing: every file is skipped, the remote sees no download.
    before = storage_bytes(pixop)
    second = prefetch(str(root), client_cache=client_cache)
    assert second.returncode == 0, second.stderr
    assert f"skipping {len(expected)} file(s) already prefetched" in second.stdout
    assert "prefetched 0 file(s)" in second.stdout
    assert storage_bytes(pixop) == before

    # --force reads them again (through the cache: still no download needed).
    forced = prefetch(str(root), "--force", "--no-progress", client_cache=client_cache)
    assert forced.returncode == 0, forced.stderr
    assert f"prefetched {len(expected)} file(s)" in forced.stdout
    assert str(next(iter(expected))) not in forced.stdout  # --no-progress: the summary only


def test_resume_at_file_granularity(tmp_path: Path, pixop: Emulator, make_config: Any, mounts: Any) -> None:
    """An earlier, partial run (here: one directory) is not repeated by a run over the whole tree."""
    mount = mounts(make_config({INSTANCE: pixop.config("pixop")}))
    root = mount.path / INSTANCE
    part = root / "Archive footage"
    client_cache = tmp_path / "client-cache"
    done_first = files_below(part)
    assert prefetch(str(part), client_cache=client_cache).returncode == 0
    rest = prefetch(str(root), client_cache=client_cache)
    assert rest.returncode == 0, rest.stderr
    assert f"skipping {len(done_first)} file(s) already prefetched" in rest.stdout
    remaining = len(files_below(root)) - len(done_first)
    assert f"prefetched {remaining} file(s)" in rest.stdout
    for path in done_first:
        assert str(path) not in rest.stdout


def test_pin_and_unpin_through_the_control_socket(
    tmp_path: Path, pixop: Emulator, make_config: Any, mounts: Any
) -> None:
    mount = mounts(make_config({INSTANCE: pixop.config("pixop")}))
    target = mount.path / INSTANCE / "Incoming"
    count = len(files_below(target))
    client_cache = tmp_path / "client-cache"
    assert stats(mount.path)["disk_cache"]["pinned_files"] == 0

    pinned = prefetch("--pin", str(target), client_cache=client_cache)
    assert pinned.returncode == 0, pinned.stderr
    assert f"{count} pinned" in pinned.stdout
    disk = stats(mount.path)["disk_cache"]
    assert disk["pinned_files"] == count
    assert disk["pinned_bytes"] >= sum(files_below(target).values())

    # A re-run skips the reading but still pins (idempotent).
    again = prefetch("--pin", str(target), client_cache=client_cache)
    assert again.returncode == 0 and f"{count} pinned" in again.stdout
    assert stats(mount.path)["disk_cache"]["pinned_files"] == count

    unpinned = prefetch("--unpin", str(target), client_cache=client_cache)
    assert unpinned.returncode == 0, unpinned.stderr
    assert f"unpinned {count} file(s)" in unpinned.stdout
    assert stats(mount.path)["disk_cache"]["pinned_files"] == 0


def test_without_a_disk_cache_it_says_so(tmp_path: Path, pixop: Emulator, mounts: Any) -> None:
    table = "\n".join(f"{key} = {toml_value(value)}" for key, value in pixop.config("pixop").items())
    config = tmp_path / "nodisk.toml"
    cache = toml_value(str(tmp_path / "cache"))
    config.write_text(f'[cache]\ndir = {cache}\ndisk = "0"\n\n[providers.{INSTANCE}]\n{table}\n')
    config.chmod(0o600)
    mount = mounts(config)
    target = mount.path / INSTANCE / "Incoming"
    client_cache = tmp_path / "client-cache"

    refused = prefetch("--pin", str(target), client_cache=client_cache)
    assert refused.returncode == 1
    assert "the disk cache is off" in refused.stderr and "nothing can be pinned" in refused.stderr
    assert "Traceback" not in refused.stderr

    warned = prefetch(str(target), client_cache=client_cache)
    assert warned.returncode == 0, warned.stderr
    assert "warning" in warned.stderr and "the disk cache is off" in warned.stderr
    assert "prefetched 1 file(s)" in warned.stdout


def test_a_terminal_gets_a_progress_bar(
    tmp_path: Path, pixop: Emulator, make_config: Any, mounts: Any
) -> None:
    mount = mounts(make_config({INSTANCE: pixop.config("pixop")}))
    target = mount.path / INSTANCE / "Archive footage"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "client-cache")}
    process = subprocess.Popen(
        vidfs_cmd("prefetch", str(target)), stdout=subprocess.PIPE, stderr=slave, env=env, text=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    bar = b"".join(chunks).decode(errors="replace")
    assert "prefetch" in bar and "files 4/4" in bar and "100%" in bar, bar
    assert "prefetched 4 file(s)" in stdout


def test_paths_outside_a_mount_are_refused(tmp_path: Path) -> None:
    result = prefetch(str(tmp_path), client_cache=tmp_path / "c")
    assert result.returncode == 2
    assert "is not inside a vidfs mount" in result.stderr
    missing = prefetch(str(tmp_path / "nope"), client_cache=tmp_path / "c")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_state_keys_on_path_size_and_mtime(tmp_path: Path) -> None:
    info = MountInfo(root=Path("/mnt/x"), control=None, disk_cache=True)
    state = State(tmp_path, info.root)
    item = Item(info, Path("/mnt/x/a/b.mp4"), "a/b.mp4", 10, 1_000)
    state.record(item)
    with open(state.path, "a") as handle:
        handle.write('{"path": "torn')  # a crash mid-line is ignored
    done = State(tmp_path, info.root).load()
    assert item.key in done
    assert Item(info, item.path, item.rel, 11, 1_000).key not in done  # changed size: read again
    assert Item(info, item.path, item.rel, 10, 2_000).key not in done  # changed mtime: read again
    assert State(tmp_path, Path("/mnt/y")).load() == set()  # another mount: another file


def test_help_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vidfs", "prefetch", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for option in ("--jobs", "--pin", "--unpin", "--no-progress", "--force"):
        assert option in result.stdout
