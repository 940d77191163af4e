"""Deterministic sample videos for the emulators, generated with ffmpeg on first use and cached.

Every provider emulator serves these files (or variants of them). They are made from lavfi sources
(``testsrc2`` + light temporal ``noise`` so the encoder reaches the asked bitrate, and ``sine``), with
libx264 ``-preset ultrafast -threads 1``, a fixed GOP and the bitexact flags, so the same ffmpeg build makes
the same bytes every time.

Samples (see `SAMPLES`):

``moov_end.mp4``   6 s 640x360 H.264 + AAC, moov atom after mdat (no faststart), ~4 MB.
``faststart.mp4``  4 s 640x360, ``-movflags +faststart`` (moov first), ~3 MB.
``big.mp4``        24 s 1280x720 at 20 Mb/s, moov at the end, ~62 MB (≥ 52 MB).
``clip.mov``       3 s 640x360 QuickTime, ~2 MB.

The cache directory is ``$VIDFS_MEDIA_DIR``, else ``$XDG_CACHE_HOME/vidfs/emulator-media``, else
``~/.cache/vidfs/emulator-media``. A file is generated into a temporary name, checked with ffprobe (streams
present, moov where expected) and renamed into place, under an exclusive ``flock`` on
``.<name>.lock`` so concurrent processes generate it once. A ``<name>.recipe`` sidecar holds a hash of the
recipe: changing the recipe regenerates the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vidfs.emulator.media")

FFMPEG = os.environ.get("VIDFS_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("VIDFS_FFPROBE", "ffprobe")

_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
_BITEXACT += ["-map_metadata", "-1", "-map_chapters", "-1"]


@dataclass(frozen=True)
class SampleSpec:
    name: str
    description: str
    width: int
    height: int
    seconds: int
    video_bitrate: str
    tone_hz: int
    container: str  # ffmpeg muxer name: mp4 | mov
    faststart: bool
    content_type: str

    def ffmpeg_args(self, out: Path) -> list[str]:
        size = f"{self.width}x{self.height}"
        bufsize = f"{int(self.video_bitrate.rstrip('M')) * 2}M"
        args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        args += [
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25:duration={self.seconds},noise=alls=12:allf=t",
        ]
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={self.tone_hz}:sample_rate=48000:duration={self.seconds}",
        ]
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-threads",
            "1",
            "-g",
            "50",
            "-pix_fmt",
            "yuv420p",
        ]
        args += ["-b:v", self.video_bitrate, "-maxrate", self.video_bitrate, "-bufsize", bufsize]
        args += ["-c:a", "aac", "-b:a", "128k", "-threads:a", "1"]
        args += _BITEXACT
        if self.faststart:
            args += ["-movflags", "+faststart"]
        args += ["-f", self.container, str(out)]
        return args

    def recipe_hash(self) -> str:
        recipe = json.dumps(self.ffmpeg_args(Path("OUT"))[1:], sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


SAMPLES: dict[str, SampleSpec] = {
    spec.name: spec
    for spec in (
        SampleSpec(
            "moov_end.mp4", "6 s 640x360, moov at the end", 640, 360, 6, "5M", 440, "mp4", False, "video/mp4"
        ),
        SampleSpec(
            "faststart.mp4", "4 s 640x360, faststart", 640, 360, 4, "5M", 660, "mp4", True, "video/mp4"
        ),
        SampleSpec(
            "big.mp4",
            "24 s 1280x720 20 Mb/s, moov at the end",
            1280,
            720,
            24,
            "20M",
            330,
            "mp4",
            False,
            "video/mp4",
        ),
        SampleSpec(
            "clip.mov", "3 s 640x360 QuickTime", 640, 360, 3, "4M", 550, "mov", False, "video/quicktime"
        ),
    )
}


def all_samples() -> list[str]:
    """Names of every sample, in a stable order."""
    return list(SAMPLES)


def media_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory (created): `override`, ``$VIDFS_MEDIA_DIR``, XDG cache, ``~/.cache``."""
    if override:
        path = Path(override).expanduser()
    elif os.environ.get("VIDFS_MEDIA_DIR"):
        path = Path(os.environ["VIDFS_MEDIA_DIR"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vidfs" / "emulator-media"
    else:
        path = Path.home() / ".cache" / "vidfs" / "emulator-media"
    path.mkdir(parents=True, exist_ok=True)
    return path


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Exclusive between threads of this process and between processes (flock)."""
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(str(lock_path), threading.Lock())
    with tlock, open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_current(path: Path, spec: SampleSpec) -> bool:
    recipe = path.with_name(path.name + ".recipe")
    try:
        return path.is_file() and recipe.read_text().strip() == spec.recipe_hash()
    except OSError:
        return False


def ensure_media(
    name: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Path of sample `name`, generating it first if needed (safe against concurrent callers)."""
    spec = SAMPLES.get(name)
    if spec is None:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    base = media_dir(directory)
    target = base / name
    if _is_current(target, spec):
        return target
    with _exclusive(base / f".{name}.lock"):
        if _is_current(target, spec):
            return target
        say = progress or log.info
        say(f"generating sample {name} ({spec.description}) in {base} ...")
        for stale in base.glob(f".tmp-{name}-*"):
            stale.unlink(missing_ok=True)
        tmp = base / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
        started = time.monotonic()
        try:
            proc = subprocess.run(spec.ffmpeg_args(tmp), capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"ffmpeg failed for {name}: {proc.stderr.strip()[-2000:]}")
            _validate(tmp, spec)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        recipe_tmp = base / f".tmp-{name}-{os.getpid()}.recipe"
        recipe_tmp.write_text(spec.recipe_hash() + "\n")
        os.replace(recipe_tmp, target.with_name(name + ".recipe"))
        say(f"generated {name}: {target.stat().st_size} bytes in {time.monotonic() - started:.1f} s")
        return target


def ensure_all(
    directory: str | os.PathLike[str] | None = None, *, progress: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Every sample, generated if needed: name → path."""
    return {name: ensure_media(name, directory, progress=progress) for name in SAMPLES}


def _validate(path: Path, spec: SampleSpec) -> None:
    info = _ffprobe(path)
    kinds = {s.get("codec_type") for s in info.get("streams", [])}
    if not {"video", "audio"} <= kinds:
        raise RuntimeError(f"{spec.name}: ffprobe found streams {kinds}, expected video and audio")
    if float(info.get("format", {}).get("duration", 0)) <= 0:
        raise RuntimeError(f"{spec.name}: ffprobe found no duration")
    if moov_at_end(path) == spec.faststart:
        raise RuntimeError(f"{spec.name}: moov atom is not where expected (faststart={spec.faststart})")


# ---------------------------------------------------------------------------------------------------------
# caches keyed by file identity (path + inode + size + mtime)

_cache_lock = threading.Lock()
_sha_cache: dict[tuple[str, int, int, int], str] = {}
_probe_cache: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def _key(path: str | os.PathLike[str]) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def ensure_samples(names: Iterable[str], directory: Path | None = None) -> dict[str, Path]:
    """Every named sample, generated if needed, with its checksum and ffprobe facts computed once (so an
    emulator's first request does not pay for them)."""
    samples = {name: ensure_media(name, directory) for name in names}
    for path in samples.values():
        sha256_of(path)
        probe(path)
    return samples


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (cached while the file is unchanged)."""
    key = _key(path)
    with _cache_lock:
        hit = _sha_cache.get(key)
    if hit is not None:
        return hit
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    value = digest.hexdigest()
    with _cache_lock:
        _sha_cache[key] = value
    return value


def _ffprobe(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffprobe failed on {path}: {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def probe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """ffprobe ``-show_format -show_streams`` JSON of a file (cached while the file is unchanged)."""
    key = _key(path)
    with _cache_lock:
        hit = _probe_cache.get(key)
    if hit is not None:
        return hit
    value = _ffprobe(Path(path))
    with _cache_lock:
        _probe_cache[key] = value
    return value


# ---------------------------------------------------------------------------------------------------------
# MP4 box walking


@dataclass(frozen=True)
class Box:
    type: str
    offset: int  # of the box header
    size: int  # whole box, header included


def top_level_boxes(path: str | os.PathLike[str]) -> list[Box]:
    """The top-level ISO-BMFF / QuickTime boxes of a file (stops at the first malformed header)."""
    boxes: list[Box] = []
    total = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= total:
            fh.seek(offset)
            header = fh.read(8)
            size, raw_type = struct.unpack(">I4s", header)
            if size == 1:
                large = fh.read(8)
                if len(large) < 8:
                    break
                size = struct.unpack(">Q", large)[0]
            elif size == 0:
                size = total - offset
            if size < 8 or offset + size > total:
                break
            boxes.append(Box(raw_type.decode("latin-1"), offset, size))
            offset += size
    return boxes


def moov_at_end(path: str | os.PathLike[str]) -> bool:
    """True when the ``moov`` box comes after the (first) ``mdat`` box, i.e. the file is not faststart."""
    types = [box.type for box in top_level_boxes(path)]
    if "moov" not in types or "mdat" not in types:
        raise ValueError(f"{path}: no moov/mdat top-level box (found {types})")
    return types.index("moov") > types.index("mdat")


# ---------------------------------------------------------------------------------------------------------
# variants ("the content changed")


def variant(
    path: str | os.PathLike[str],
    tag: str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    extra_bytes: int = 0,
) -> Path:
    """A deterministic copy of `path` with different content, for emulating "the file changed".

    A few runs of bytes inside ``mdat`` (positions derived from `tag`) are XOR-ed, so the size stays the
    same and the box structure stays valid (the picture may break, it need not stay playable). With
    `extra_bytes` >= 8 a ``free`` box of that size is appended, so the size changes too. The result is
    cached under `out_dir` (default: ``<media dir>/variants``) by (source, tag, extra_bytes), named
    ``<stem>.variant-<hash><suffix>`` (the word "variant" in the path tells tests it may not be playable).
    """
    src = Path(path)
    if extra_bytes and extra_bytes < 8:
        raise ValueError("extra_bytes must be 0 or >= 8 (an MP4 box header is 8 bytes)")
    directory = Path(out_dir) if out_dir is not None else media_dir() / "variants"
    directory.mkdir(parents=True, exist_ok=True)
    tag_hash = hashlib.sha256(f"{tag}\0{extra_bytes}".encode()).hexdigest()[:12]
    target = directory / f"{src.stem}.variant-{tag_hash}{src.suffix}"
    source_sha = sha256_of(src)
    stamp = target.with_name(target.name + ".source")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == source_sha:
        return target
    with _exclusive(directory / f".{target.name}.lock"):
        if target.is_file() and stamp.is_file() and stamp.read_text().strip() == source_sha:
            return target
        mdat = next((box for box in top_level_boxes(src) if box.type == "mdat"), None)
        tmp = directory / f".tmp-{target.name}-{os.getpid()}-{threading.get_ident()}"
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "r+b") as fh:
                if mdat is not None and mdat.size > 4096:
                    lo, hi = mdat.offset + 64, mdat.offset + mdat.size - 64
                else:  # not an MP4: flip anywhere past the first bytes
                    lo, hi = min(64, src.stat().st_size), src.stat().st_size
                rng = random.Random(tag_hash)
                for _ in range(16):
                    if hi - lo < 32:
                        break
                    pos = rng.randrange(lo, hi - 32)
                    fh.seek(pos)
                    chunk = fh.read(32)
                    fh.seek(pos)
                    fh.write(bytes(b ^ 0xA5 for b in chunk))
                if extra_bytes:
                    fh.seek(0, os.SEEK_END)
                    fh.write(struct.pack(">I4s", extra_bytes, b"free") + b"\0" * (extra_bytes - 8))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        stamp.write_text(source_sha + "\n")
    return target
