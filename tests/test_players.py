"""Real clients on a real mount (Pixop emulator): ffprobe, ffmpeg seek + decode, rsync twice, a player.

Each tool is skipped only where it is not installed (.ci/run installs ffmpeg, rsync and mpv).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Emulator, Mount, have, mount_config, start_emulator, stop_process, unmount
from vidfs.demo import write_config

INSTANCE = "site"


@pytest.fixture(scope="module")
def mount(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Iterator[Mount]:
    workdir = tmp_path_factory.mktemp("players")
    emulator: Emulator = start_emulator(workdir / "emulator", ["pixop"], media_dir)
    try:
        config = write_config(
            workdir / "vidfs.toml", {INSTANCE: emulator.config("pixop")}, cache_dir=workdir / "cache"
        )
        mounted = mount_config(config, workdir / "mnt", workdir / "mount.log")
        try:
            yield mounted
        finally:
            unmount(mounted)
    finally:
        stop_process(emulator.process)


def videos(mount: Mount) -> list[Path]:
    found = [
        Path(dirpath) / name
        for dirpath, _dirs, names in os.walk(mount.path / INSTANCE)
        for name in names
        if name.endswith((".mp4", ".mov"))
    ]
    return sorted(found, key=lambda p: p.stat().st_size)


def probe(path: Path) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (path, result.stderr)
    return json.loads(result.stdout)


@pytest.mark.skipif(not have("ffprobe"), reason="ffprobe is not installed")
def test_ffprobe_reads_every_video(mount: Mount) -> None:
    files = videos(mount)
    assert any(p.suffix == ".mov" for p in files) and any(p.suffix == ".mp4" for p in files)
    for path in files:
        info = probe(path)
        kinds = {s["codec_type"] for s in info["streams"]}
        assert "video" in kinds, path
        assert float(info["format"]["duration"]) > 1.0, path
        assert int(info["format"]["size"]) == path.stat().st_size


@pytest.mark.skipif(not have("ffmpeg"), reason="ffmpeg is not installed")
def test_ffmpeg_seeks_and_decodes_like_a_local_copy(mount: Mount, tmp_path: Path) -> None:
    """`ffmpeg -ss` into the middle of each sample decodes the same frames from the mount as from a copy."""
    for path in videos(mount)[:4] + videos(mount)[-1:]:
        duration = float(probe(path)["format"]["duration"])
        local = tmp_path / f"copy{path.suffix}"
        shutil.copyfile(path, local)

        def frames(source: Path, at: float = duration / 2) -> str:
            result = subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{at:.3f}", "-i", str(source), "-frames:v", "5",
                 "-an", "-f", "framemd5", "-"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (source, result.stderr)
            lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
            assert len(lines) == 5, (source, result.stdout)
            return "\n".join(lines)

        assert frames(path) == frames(local), path
        # and a seek near the end, where an MP4 with its index at the end keeps it
        assert frames(path, duration * 0.9) == frames(local, duration * 0.9), path


@pytest.mark.skipif(not have("rsync"), reason="rsync is not installed")
def test_rsync_twice_copies_nothing_the_second_time(mount: Mount, tmp_path: Path) -> None:
    source = mount.path / INSTANCE / "Archive footage"
    dest = tmp_path / "backup"

    def rsync() -> dict[str, int]:
        result = subprocess.run(
            ["rsync", "-a", "--stats", f"{source}/", f"{dest}/"], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        numbers: dict[str, int] = {}
        for label in ("Number of regular files transferred", "Total transferred file size"):
            match = re.search(rf"^{label}: ([\d,.]+)", result.stdout, re.M)
            assert match, result.stdout
            numbers[label] = int(re.sub(r"[,.]", "", match.group(1)))
        return numbers

    names = sorted(os.listdir(source))
    first = rsync()
    assert first["Number of regular files transferred"] == len(names)
    assert first["Total transferred file size"] == sum((source / n).stat().st_size for n in names)
    for name in names:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
        # -a kept the mtime the API reports: that is what makes the second run a no-op
        assert int((dest / name).stat().st_mtime) == int((source / name).stat().st_mtime)
    second = rsync()
    assert second["Number of regular files transferred"] == 0
    assert second["Total transferred file size"] == 0


@pytest.mark.skipif(not have("mpv"), reason="mpv is not installed")
def test_mpv_plays_headless(mount: Mount) -> None:
    for path in (videos(mount)[0], videos(mount)[-1]):
        result = subprocess.run(
            ["mpv", "--no-config", "--vo=null", "--ao=null", "--length=2", "--msg-level=all=info",
             "--term-status-msg=", str(path)],
            capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert re.search(r"Video --vid=1 .*\(\w+ \d+x\d+", output), output
        assert "Exiting... (End of file)" in output, output


@pytest.mark.skipif(not have("cvlc"), reason="cvlc (VLC) is not installed")
@pytest.mark.skipif(os.geteuid() == 0, reason="VLC refuses to run as root (mpv covers the player here)")
def test_vlc_plays_headless(mount: Mount) -> None:
    path = videos(mount)[0]
    env = {**os.environ, "VLC_VERBOSE": "0"}
    result = subprocess.run(
        ["cvlc", "--play-and-exit", "--vout", "dummy", "--aout", "dummy", "--stop-time", "2", "--no-loop",
         "--intf", "dummy", str(path)],
        capture_output=True, text=True, timeout=180, check=False, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
