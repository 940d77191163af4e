"""What an emulated video's bytes are: a sample file on disk, or a small synthetic video made in memory.

Every vendor item holds a *blob* instead of a path, so the same code lists, serves, hashes and changes both
kinds:

``FileBlob(path)``          one of `vidfs.emulator.media`'s samples (or a variant of one): served with
                            ``os.sendfile``; size from ``stat``, SHA-256 and ffprobe facts cached by `media`.
``SyntheticBlob(key, size)``  a few KiB made on demand from its key (scaled catalogs hold 100,000 of them:
                            nothing is written to disk, nothing is kept in memory but the key and the size).

Synthetic contents are deterministic: the same key gives the same bytes in every process and on every
start, so a test can compare two starts, and `synthetic_content` (public) lets a client recompute them. The
bytes are a valid ISO-BMFF skeleton (tools that sniff types see an MP4), not a playable video::

    ftyp (24 bytes: isom) | free (8 + the key, so no two items share bytes) | mdat (the rest: a slice of a
    fixed 64 KiB pseudo-random pool, at an offset drawn from the key)

Sizes come from `synthetic_size` (2-8 KiB, from the key). ETags are the first 32 hex digits of the SHA-256
of the bytes, as for the samples. Hashing 5 KiB costs a few microseconds: a HEAD computes it on demand.
``changed(tag, extra_bytes, work_dir)`` is "the vendor's file changed": a sample becomes a
`media.variant` (a file in the site's scratch dir), a synthetic blob a new key (and size).
"""

from __future__ import annotations

import hashlib
import struct
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vidfs.emulator import media
from vidfs.emulator.serving import Body, MemoryBody, open_file

JSON = dict[str, Any]

SYNTHETIC_MIN = 2048
SYNTHETIC_SPREAD = 6144  # sizes are SYNTHETIC_MIN .. SYNTHETIC_MIN + SYNTHETIC_SPREAD - 1
_POOL = hashlib.shake_256(b"vidfs emulator synthetic pool v1").digest(1 << 16)
_FTYP = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 512, b"isommp41")

#: What ffprobe would say of a synthetic video (its bytes are not really decodable).
SYNTHETIC_PROBE: JSON = {
    "format": {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "format_long_name": "QuickTime / MOV",
        "duration": "4.0",
    },
    "streams": [
        {
            "codec_type": "video",
            "codec_name": "h264",
            "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10",
            "pix_fmt": "yuv420p",
            "width": 640,
            "height": 360,
            "avg_frame_rate": "25/1",
            "duration": "4.0",
            "nb_frames": "100",
            "bit_rate": "8000",
        },
        {"codec_type": "audio", "codec_name": "aac", "duration": "4.0"},
    ],
}


def synthetic_size(key: str) -> int:
    """The size of synthetic item `key`: 2-8 KiB, stable."""
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return SYNTHETIC_MIN + int.from_bytes(digest, "big") % SYNTHETIC_SPREAD


def synthetic_content(key: str, size: int) -> bytes:
    """The bytes of synthetic item `key` (see the module essay); exactly `size` bytes."""
    tag = key.encode()
    free = struct.pack(">I4s", 8 + len(tag), b"free") + tag
    head = _FTYP + free
    if size < len(head) + 8:  # too small for the skeleton: pool bytes only
        return _pool_slice(tag, size)
    payload = size - len(head) - 8
    return head + struct.pack(">I4s", payload + 8, b"mdat") + _pool_slice(tag, payload)


def _pool_slice(tag: bytes, size: int) -> bytes:
    start = int.from_bytes(hashlib.blake2b(tag, digest_size=4).digest(), "big") % len(_POOL)
    out = bytearray()
    while len(out) < size:
        out += _POOL[start : start + size - len(out)]
        start = 0
    return bytes(out)


class Blob(Protocol):
    """An emulated video's bytes (see the module essay)."""

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def path_on_disk(self) -> str | None: ...

    @property
    def suffix(self) -> str: ...

    def open(self) -> AbstractContextManager[Body]: ...

    def probe(self) -> JSON: ...

    def changed(self, tag: str, extra_bytes: int, work_dir: Path) -> Blob: ...


def etag_of(blob: Blob) -> str:
    """The quoted ETag the vendors' storages give: 32 hex digits of the SHA-256 of the bytes."""
    return f'"{blob.sha256[:32]}"'


def facts(blob: Blob, *, compact: bool = False) -> JSON:
    """What a control-API catalog says of a blob; `compact` leaves out the hashes (no bytes are made)."""
    if compact:
        return {"size": blob.size, "path_on_disk": blob.path_on_disk}
    sha = blob.sha256
    return {"size": blob.size, "sha256": sha, "etag": f'"{sha[:32]}"', "path_on_disk": blob.path_on_disk}


@dataclass(frozen=True, slots=True)
class FileBlob:
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def sha256(self) -> str:
        return media.sha256_of(self.path)

    @property
    def path_on_disk(self) -> str:
        return str(self.path)

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    def open(self) -> AbstractContextManager[Body]:
        return open_file(self.path)

    def probe(self) -> JSON:
        return media.probe(self.path)

    def changed(self, tag: str, extra_bytes: int, work_dir: Path) -> FileBlob:
        new_path = media.variant(self.path, tag, out_dir=work_dir, extra_bytes=extra_bytes)
        media.sha256_of(new_path)  # hashed now, not on the first request for it
        return FileBlob(new_path)


@dataclass(frozen=True, slots=True)
class SyntheticBlob:
    key: str
    size: int

    @classmethod
    def of(cls, key: str) -> SyntheticBlob:
        return cls(key, synthetic_size(key))

    def content(self) -> bytes:
        return synthetic_content(self.key, self.size)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content()).hexdigest()

    @property
    def path_on_disk(self) -> None:
        return None

    @property
    def suffix(self) -> str:
        return ".mp4"

    def open(self) -> AbstractContextManager[Body]:
        return nullcontext(MemoryBody(self.content()))

    def probe(self) -> JSON:
        return SYNTHETIC_PROBE

    def changed(self, tag: str, extra_bytes: int, work_dir: Path) -> SyntheticBlob:
        return SyntheticBlob(f"{self.key}~{tag}", self.size + max(0, extra_bytes))
