"""Real clients on a real mount: ffprobe, ffmpeg seek + decode, rsync twice, and VLC and mpv played by a user.

The mount: the Pixop and plain-HTTP emulators (`site/`, `web/`), mounted through the CLI with
`--allow-other` in a directory of its own under /tmp, 0755 (pytest's temporary directories are 0700: no
other user could reach a mount inside them).

The players run as people run them: as an ordinary user, never root (VLC refuses root outright). When the
tests run as root they create that user (`useradd`, removed at the end); otherwise the tester is that user.

"Played" means frames were decoded, not that the player exited 0. VLC's `scene` video filter and mpv's
`image` video output write PNGs of the frames they decoded after seeking into the middle of the video. Each
PNG must have the video's dimensions, must not be a uniform image, and must match one frame that ffmpeg
decodes from the emulator's local copy of the same sample, at the position the player was asked to seek
to. The comparison is on 160x90 gray thumbnails (mean absolute difference over 0..255): the same frame from
another decoder differs by ~1.1-1.6 (colour conversion), its neighbour 1/25 s away by ≥ 3.5 (moving
pattern, timer digits and per-frame noise of the test source), an unrelated frame by ~7-10. Both layouts
are played, moov first (faststart) and moov at the end, from both providers.

Each tool is skipped only where it is not installed (.ci/run installs ffmpeg, rsync, mpv and VLC).
"""

from __future__ import annotations

import json
import operator
import os
import pwd
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Emulator,
    Mount,
    ffprobe,
    have,
    mount_config,
    sha256_file,
    start_emulator,
    stop_process,
    unmount,
)
from vidfs.commands.demo import write_config

INSTANCE = "site"  # Pixop
WEB = "web"  # plain HTTP index

THUMB_WIDTH, THUMB_HEIGHT = 160, 90
SAME_FRAME = 3.0  # largest thumbnail difference accepted as "the same frame" (see the module docstring)
MIN_CONTRAST = 20.0  # smallest standard deviation of a thumbnail: the test pattern has ~63, a flat image 0
VLC_RATIO = 10  # VLC writes one PNG every this many frames
MPV_FRAMES = 8


@dataclass(frozen=True)
class Played:
    """A video on the mount and the emulator's sample it is served from."""

    provider: str
    path: str  # below the provider's directory
    sample: str  # a file name in the emulators' media directory
    faststart: bool

    @property
    def id(self) -> str:
        return f"{self.provider}-{'faststart' if self.faststart else 'moov-at-end'}"


PLAYED = (
    Played(INSTANCE, "Restoration demo/interview_pixop_hd_1080p.processed.mp4", "faststart.mp4", True),
    Played(INSTANCE, "Restoration demo/interview.mp4", "moov_end.mp4", False),
    Played(WEB, "Café #1.mp4", "faststart.mp4", True),
    Played(WEB, "interview.mp4", "moov_end.mp4", False),
)
EVERY_PLAYED = pytest.mark.parametrize("played", PLAYED, ids=[p.id for p in PLAYED])


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A 0755 directory under /tmp that any user can traverse (for the mount point and the player's home)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="vidfs-players-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        mounted = [p for p in path.iterdir() if os.path.ismount(p)]
        assert not mounted, f"still mounted, not removed: {mounted}"
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def mount(tmp_path_factory: pytest.TempPathFactory, media_dir: Path, public_dir: Path) -> Iterator[Mount]:
    workdir = tmp_path_factory.mktemp("players")
    emulator: Emulator = start_emulator(workdir / "emulator", ["pixop", "http"], media_dir)
    try:
        config = write_config(
            workdir / "vidfs.toml",
            {INSTANCE: emulator.config("pixop"), WEB: emulator.config("http")},
            cache_dir=workdir / "cache",
        )
        # Root may always allow other users; a non-root tester plays the videos as itself.
        extra = ["--allow-other"] if os.geteuid() == 0 else []
        mounted = mount_config(config, public_dir / "mnt", workdir / "mount.log", *extra)
        try:
            yield mounted
        finally:
            unmount(mounted)
    finally:
        stop_process(emulator.process)


@dataclass(frozen=True)
class Player:
    """The unprivileged user who plays the videos."""

    name: str
    uid: int
    gid: int
    home: Path

    def run(self, args: Sequence[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        other = self.uid != os.geteuid()  # as root: become the user, with no supplementary groups
        return subprocess.run(
            list(args), env=env, cwd=self.home, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, encoding="utf-8", errors="replace", timeout=timeout, check=False,
            user=self.uid if other else None, group=self.gid if other else None,
            extra_groups=[] if other else None,
        )  # fmt: skip

    def new_dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir()
        os.chown(path, self.uid, self.gid)
        return path


@pytest.fixture(scope="module")
def player(public_dir: Path) -> Iterator[Player]:
    home = public_dir / "home"
    home.mkdir(mode=0o700)
    if os.geteuid() != 0:
        yield Player(pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid(), home)
        return
    name = f"vidfs-player-{os.getpid()}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
         "--user-group", name],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        entry = pwd.getpwnam(name)
        assert entry.pw_uid != 0
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield Player(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        removed = subprocess.run(["userdel", name], capture_output=True, text=True, timeout=60, check=False)
        assert removed.returncode == 0, removed.stderr


# ------------------------------------------------------------------------------------------- helpers
def videos(mount: Mount) -> list[Path]:
    found = [
        Path(dirpath) / name
        for dirpath, _dirs, names in os.walk(mount.path / INSTANCE)
        for name in names
        if name.endswith((".mp4", ".mov"))
    ]
    return sorted(found, key=lambda p: p.stat().st_size)


def probe(path: Path) -> dict[str, Any]:
    result = ffprobe(path, "-print_format", "json", "-show_format", "-show_streams")
    assert result.returncode == 0, (path, result.stderr)
    return json.loads(result.stdout)


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    kinds: list[str] = []
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        offset = 0
        for _ in range(1000):
            if offset + 8 > end:
                break
            handle.seek(offset)
            header = handle.read(16)
            size, kind = struct.unpack(">I4s", header[:8])
            if size == 1:
                size = struct.unpack(">Q", header[8:16])[0]
            elif size == 0:
                size = end - offset
            assert size >= 8, (path, offset, size)
            kinds.append(kind.decode("latin-1"))
            offset += size
    return kinds


@dataclass(frozen=True)
class Source:
    """The local sample a played video is served from, and its frames as ffmpeg decodes them."""

    path: Path
    width: int
    height: int
    fps: float
    duration: float
    frames: tuple[bytes, ...]  # gray thumbnails, frame i at i / fps seconds

    def frame_at(self, seconds: float) -> int:
        return round(seconds * self.fps)


_sources: dict[Path, Source] = {}


def source_of(played: Played, media_dir: Path) -> Source:
    path = media_dir / played.sample
    if path not in _sources:
        boxes = top_level_boxes(path)
        assert (boxes.index("moov") < boxes.index("mdat")) == played.faststart, (path, boxes)
        (video,) = [s for s in probe(path)["streams"] if s["codec_type"] == "video"]
        numerator, denominator = (int(n) for n in video["r_frame_rate"].split("/"))
        frames = tuple(thumbnails("-i", str(path)))
        fps = numerator / denominator
        assert len(frames) == round(float(video["duration"]) * fps), (path, len(frames))
        _sources[path] = Source(
            path, int(video["width"]), int(video["height"]), fps, float(video["duration"]), frames
        )
    return _sources[path]


def thumbnails(*input_args: str) -> list[bytes]:
    """Every frame of the input, decoded by ffmpeg and scaled to a gray thumbnail."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *input_args, "-an", "-fps_mode", "passthrough",
         "-vf", f"scale={THUMB_WIDTH}:{THUMB_HEIGHT}:flags=area,format=gray", "-f", "rawvideo", "-"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (input_args, result.stderr.decode(errors="replace"))
    size = THUMB_WIDTH * THUMB_HEIGHT
    data = result.stdout
    assert data and len(data) % size == 0, (input_args, len(data))
    return [data[i : i + size] for i in range(0, len(data), size)]


def difference(a: bytes, b: bytes) -> float:
    return sum(map(abs, map(operator.sub, a, b))) / len(a)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which the format requires to come first)."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", (path, header)
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def decoded_frames(directory: Path, source: Source) -> list[int]:
    """Which frame of `source` each PNG a player wrote shows, in file name order.

    Asserts that each is at the video's size, not a flat image, and the same frame as one that ffmpeg
    decodes from the local sample."""
    pngs = sorted(p for p in directory.iterdir() if p.suffix == ".png")
    assert pngs, f"the player wrote no image into {directory}"
    for png in pngs:
        assert png_size(png) == (source.width, source.height), png
    decoded = thumbnails("-pattern_type", "glob", "-i", str(directory / "*.png"))
    assert len(decoded) == len(pngs), (len(decoded), pngs)
    shown = []
    for png, thumbnail in zip(pngs, decoded, strict=True):
        contrast = statistics.pstdev(thumbnail)
        assert contrast >= MIN_CONTRAST, f"{png.name} is a flat image (standard deviation {contrast:.1f})"
        distances = [difference(thumbnail, frame) for frame in source.frames]
        best = min(range(len(distances)), key=distances.__getitem__)
        assert distances[best] <= SAME_FRAME, (
            f"{png.name} matches no frame of {source.path.name}: nearest is frame {best} at "
            f"{distances[best]:.2f} (same frame ≤ {SAME_FRAME})"
        )
        shown.append(best)
    return shown


def to_play(
    mount: Mount, player: Player, media_dir: Path, played: Played, tool: str
) -> tuple[Source, Path, Path]:
    """The played video's local source, its path on the mount, and a new directory of the user's for the
    frames `tool` saves."""
    video = mount.path / played.provider / played.path
    return source_of(played, media_dir), video, player.new_dir(f"{tool}-{played.id}")


def frames_played(
    result: subprocess.CompletedProcess[str], out: Path, source: Source
) -> tuple[list[int], str]:
    """The player exited 0; which frame of `source` each image it saved into `out` shows (see
    `decoded_frames`), and the tail of its output."""
    log = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, log
    return decoded_frames(out, source), log


# --------------------------------------------------------------------------------------------- tests
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


@pytest.mark.skipif(not have("cvlc"), reason="cvlc (VLC) is not installed")
@EVERY_PLAYED
def test_vlc_seeks_and_decodes_as_a_user(
    mount: Mount, player: Player, media_dir: Path, played: Played
) -> None:
    """cvlc, as the user, from the middle for 1.5 s; its scene filter saves every 10th decoded frame."""
    source, video, out = to_play(mount, player, media_dir, played, "vlc")
    start, run = round(source.duration / 2, 1), 1.5
    result = player.run(
        ["cvlc", "--intf", "dummy", "--vout", "dummy", "--aout", "dummy", "--avcodec-hw", "none",
         "--no-drop-late-frames", "--no-skip-frames", "--play-and-exit", "--no-loop", "--no-repeat",
         "--start-time", f"{start}", "--run-time", f"{run}",
         "--video-filter", "scene", "--scene-format", "png", "--scene-path", str(out),
         "--scene-ratio", str(VLC_RATIO),
         # VLC 3 sizes scene images by the decoder's padded buffer (640x386 for 640x360): ask for the video's
         "--scene-width", str(source.width), "--scene-height", str(source.height),
         str(video)],
    )  # fmt: skip
    shown, log = frames_played(result, out, source)
    assert len(shown) >= 2, (shown, log)
    first, last = source.frame_at(start), source.frame_at(start + run)
    # Frames after the seek point, in playing order; the first one at the seek point (VLC seeks exactly
    # here: the frame at `start`, decoded from the keyframe before it), none from before it.
    assert shown == sorted(set(shown)), shown
    assert first - 1 <= shown[0] <= first + VLC_RATIO, (shown, first)
    assert shown[-1] <= last + VLC_RATIO, (shown, last)
    assert sha256_file(video) == sha256_file(source.path)


@pytest.mark.skipif(not have("mpv"), reason="mpv is not installed")
@EVERY_PLAYED
def test_mpv_seeks_and_decodes_as_a_user(
    mount: Mount, player: Player, media_dir: Path, played: Played
) -> None:
    """mpv, as the user, `--start` in the middle (an exact seek); `--vo=image` saves every frame after it."""
    source, video, out = to_play(mount, player, media_dir, played, "mpv")
    start = round(source.duration / 2, 1)
    result = player.run(
        ["mpv", "--no-config", "--msg-level=all=warn", "--ao=null", "--vo=image", "--vo-image-format=png",
         f"--vo-image-outdir={out}", f"--start={start}", f"--frames={MPV_FRAMES}", "--framedrop=no",
         "--hr-seek=yes", str(video)],
    )  # fmt: skip
    shown, _ = frames_played(result, out, source)
    first = source.frame_at(start)
    assert shown == list(range(first, first + MPV_FRAMES)), shown
    assert sha256_file(video) == sha256_file(source.path)
