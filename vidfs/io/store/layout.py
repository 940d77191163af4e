"""Where the disk store keeps things, how a file and a block are named, and the block checksum.

Everything here is either pure or blocking (run it in a worker thread). The layout is described in the
package's essay (`vidfs.io.store`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import xxhash

from vidfs.io.remote_file import FileKey

INDEX_FILE = "index.sqlite3"
FILES_DIR = "files"
DATA_SUFFIX = ".dat"
LOCK_FILE = "lock"
DISCARD_PREFIX = ".discard-"  # a tree being removed in the background (an old format, a broken index)
#: What a cache dir in the first format (one file per block) holds at its top.
OLD_FORMAT_NAMES = ("data", "pins.json")

EXTENT_SHIFT = 6
EXTENT_BLOCKS = 1 << EXTENT_SHIFT  # blocks per extent: the unit of eviction and of an index row
EXTENT_MASK = EXTENT_BLOCKS - 1
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


@functools.lru_cache(maxsize=4096)
def file_name(key: FileKey, block_size: int) -> str:
    """The name of a file's data and index rows: 32 hex digits, stable across runs. The block size is part
    of it, so after a change of `[cache] block_size` old data is never misread; it ages out of the LRU."""
    text = json.dumps([block_size, key.instance, key.remote_id, key.fingerprint], ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def file_seed(name: str) -> int:
    """Each file's checksums are seeded differently: a block copied into another file never passes."""
    return int(name[:16], 16)


def block_seed(seed: int, index: int) -> int:
    """...and each block's, so a block read at another index never passes either."""
    return (seed ^ (index * GOLDEN)) & MASK64


def checksum(data: bytes, seed: int, index: int) -> int:
    """xxh3-64 of the block, seeded by file and index (about 0.1 CPU s per GB here, 4× less than
    zlib.crc32; see the package essay)."""
    return xxhash.xxh3_64_intdigest(data, block_seed(seed, index))


def block_length(index: int, block_size: int, file_size: int) -> int:
    """The length of block `index` of a file of `file_size` bytes (the last one may be short; 0 past it)."""
    return max(0, min(block_size, file_size - index * block_size))


def extent_bytes(number: int, mask: int, block_size: int, file_size: int) -> int:
    """The data bytes of the blocks of extent `number` that are set in `mask`."""
    total = mask.bit_count() * block_size
    last = (file_size - 1) // block_size if file_size > 0 else -1
    if last >> EXTENT_SHIFT == number and mask >> (last & EXTENT_MASK) & 1:
        total -= block_size - block_length(last, block_size, file_size)
    return total


class Layout:
    """The paths under a store's root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index = self.root / INDEX_FILE
        self.files = self.root / FILES_DIR
        self._files = str(self.files)

    def data_path(self, name: str) -> str:
        return os.path.join(self._files, name[:2], name + DATA_SUFFIX)


# ------------------------------------------------------------------------------- blocking helpers
def prepare_root(layout: Layout) -> None:
    """The root and its files/ directory, private to the user (0700)."""
    for directory in (layout.root, layout.files):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if directory.stat().st_mode & 0o777 != 0o700:
                directory.chmod(0o700)


def take_lock(layout: Layout) -> int | None:
    """An flock on `<root>/lock`: the fd while we hold it, None when another process holds it."""
    fd = os.open(layout.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def set_aside(layout: Layout, names: list[str]) -> int:
    """Move `names` (below the root) into a fresh `.discard-*` directory, at once (renames); removing them
    is `remove_set_aside`'s job, in the background. Returns how many were moved."""
    present = [name for name in names if os.path.lexists(layout.root / name)]
    if not present:
        return 0
    bin_dir = layout.root / f"{DISCARD_PREFIX}{secrets.token_hex(6)}"
    bin_dir.mkdir(mode=0o700)
    for name in present:
        os.replace(layout.root / name, bin_dir / name)
    return len(present)


def discard_old_format(layout: Layout) -> bool:
    """A cache dir written by the one-file-per-block store: set it all aside (never read as ours)."""
    return set_aside(layout, list(OLD_FORMAT_NAMES)) > 0


def remove_set_aside(layout: Layout) -> int:
    """Remove every `.discard-*` tree under the root; returns how many."""
    removed = 0
    for entry in os.scandir(layout.root):
        if entry.name.startswith(DISCARD_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def data_files(layout: Layout) -> dict[str, str]:
    """Every data file on disk: name → path (what the index does not know is an orphan)."""
    found: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for fan in os.scandir(layout.files):
            if not fan.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(fan.path):
                if entry.name.endswith(DATA_SUFFIX):
                    found[entry.name[: -len(DATA_SUFFIX)]] = entry.path
    return found
