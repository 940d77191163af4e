"""The bench's data, made once and kept (`~/.cache/vidfs/bench`, or `--data-dir`): a file of seeded random
bytes and an MP4 with the moov atom at the end (ffmpeg, bit-exact flags). A JSON sidecar holds each
file's recipe and sha256, so a file is made again only when its recipe changed."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MiB, run, say
from bench.options import Options

RANDOM_NAME = "random.bin"  # the names nginx serves them under
MOVIE_NAME = "movie.mp4"
FFPROBE = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"]


@dataclass(frozen=True)
class Truth:
    """What every peer's bytes are compared with."""

    random_path: Path
    random_sha: str
    random_size: int
    movie_path: Path
    movie_sha: str
    movie_size: int
    ffprobe: Any
    offsets: list[int]  # of the random reads
    read_size: int


def _sidecar_ok(path: Path, recipe: dict[str, Any]) -> str | None:
    meta = path.with_name(path.name + ".json")
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if data.get("recipe") != recipe or not path.is_file() or path.stat().st_size != data.get("size"):
        return None
    return str(data["sha256"])


def _sidecar_write(path: Path, recipe: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            digest.update(chunk)
    meta = {"recipe": recipe, "size": path.stat().st_size, "sha256": digest.hexdigest()}
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=1) + "\n")
    return digest.hexdigest()


def make_random_file(directory: Path, mib: int, seed: int) -> tuple[Path, str]:
    path = directory / f"random-{mib}MiB-{seed}.bin"
    recipe = {"kind": "random.Random(seed).randbytes, 1 MiB at a time", "mib": mib, "seed": seed}
    known = _sidecar_ok(path, recipe)
    if known:
        return path, known
    say(f"making {path.name} ({mib} MiB of seeded random bytes) …")
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for _ in range(mib):
            fh.write(rng.randbytes(MiB))
    os.replace(tmp, path)
    return path, _sidecar_write(path, recipe)


def make_movie(directory: Path, seconds: int) -> tuple[Path, str]:
    path = directory / f"movie-moov-end-{seconds}s.mp4"
    args = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds},noise=alls=12:allf=t",
        "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-threads", "2", "-g", "50", "-pix_fmt", "yuv420p",
        "-b:v", "36M", "-maxrate", "36M", "-bufsize", "72M", "-c:a", "aac", "-b:a", "128k",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-map_metadata", "-1", "-f", "mp4",
    ]  # fmt: skip
    ffmpeg_version = run(["ffmpeg", "-version"], check=False).stdout.split("\n", 1)[0]
    recipe = {"ffmpeg": args[6:], "ffmpeg_version": ffmpeg_version}
    known = _sidecar_ok(path, recipe)
    if known:
        return path, known
    say(f"making {path.name} ({seconds} s of 1280x720 at 36 Mb/s, moov at the end) with ffmpeg …")
    tmp = path.with_name(path.name + ".tmp.mp4")
    run([*args, str(tmp)], timeout=1800)
    if not moov_at_end(tmp):
        raise RuntimeError(f"{tmp}: the moov atom is not at the end")
    os.replace(tmp, path)
    return path, _sidecar_write(path, recipe)


def moov_at_end(path: Path) -> bool:
    order: list[bytes] = []
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            header = fh.read(16)
            box = int.from_bytes(header[:4], "big")
            if box == 1:
                box = int.from_bytes(header[8:16], "big")
            elif box == 0:
                box = size - offset
            if box < 8:
                break
            order.append(header[4:8])
            offset += box
    return b"moov" in order and b"mdat" in order and order.index(b"moov") > order.index(b"mdat")


def ffprobe_signature(output: str) -> Any:
    data = json.loads(output)
    fmt = data.get("format", {})
    streams = [(s.get("codec_name"), s.get("nb_frames"), s.get("duration")) for s in data.get("streams", [])]
    return (fmt.get("duration"), fmt.get("size"), fmt.get("bit_rate"), streams)


def prepare(opts: Options) -> Truth:
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    random_path, random_sha = make_random_file(opts.data_dir, opts.file_mib, opts.seed)
    movie_path, movie_sha = make_movie(opts.data_dir, opts.movie_seconds)
    rng = random.Random(opts.seed)
    size = random_path.stat().st_size
    return Truth(
        random_path=random_path,
        random_sha=random_sha,
        random_size=size,
        movie_path=movie_path,
        movie_sha=movie_sha,
        movie_size=movie_path.stat().st_size,
        ffprobe=ffprobe_signature(run([*FFPROBE, str(movie_path)]).stdout),
        offsets=[rng.randrange(0, size - opts.read_size) for _ in range(opts.reads)],
        read_size=opts.read_size,
    )
