"""What the store keeps in memory about its files, and the work it hands its writer.

`FileEntry` and `Extent` live in the trio thread (`Ledger`). The operations are made there, executed in
order by the writer thread (`disk.apply_batch`, which fills in `sums` / `error`), then read again in the
trio thread; the two never touch one at the same time.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import trio

from vidfs.io.remote_file import FileKey
from vidfs.io.store.index import FileInfo
from vidfs.io.store.layout import EXTENT_BLOCKS


def empty_sums() -> array[int]:
    return array("Q", bytes(8 * EXTENT_BLOCKS))


@dataclass(eq=False, slots=True)
class Extent:
    """64 consecutive blocks of one file: which are on disk (with their checksums), which are queued."""

    number: int
    on_disk: int = 0  # mask: written and indexed; `sums` holds their checksums
    queued: int = 0  # mask: accepted, waiting for (or in) their write
    sums: array[int] = field(default_factory=empty_sums)
    used: int = 0


@dataclass(eq=False, slots=True)
class FileEntry:
    """One cached remote file (of this block size)."""

    name: str
    key: FileKey
    size: int
    info: FileInfo
    path: str
    seed: int
    nbytes: int = 0  # on disk + queued, what counts against the capacity
    blocks: int = 0
    used: int = 0
    #: Its extents, least recently used first; None until loaded from the index (on first use).
    extents: dict[int, Extent] | None = None
    pending: dict[int, bytes] = field(default_factory=dict)  # queued blocks, served from memory
    loading: trio.Event | None = None
    touched: set[int] = field(default_factory=set)  # extents whose `used` is not saved yet


# -------------------------------------------------------------------------------------------- work
@dataclass(eq=False, slots=True)
class WriteOp:
    """Write runs of blocks, then index them. `targets` are the extents they were accepted into: the
    result lands only where those are still the file's (an eviction or drop meanwhile wins)."""

    entry: FileEntry
    runs: list[tuple[int, list[bytes]]]  # (first index, blocks)
    targets: dict[int, Extent]
    nbytes: int
    used: int
    sums: list[list[int]] | None = None  # per run, set by the writer when written
    error: BaseException | None = None


@dataclass(eq=False, slots=True)
class EvictOp:
    """Punch the extents' bytes out of the data file and forget them."""

    entry: FileEntry
    extents: list[int]


@dataclass(eq=False, slots=True)
class DropOp:
    """Forget blocks found damaged."""

    entry: FileEntry
    indices: list[int]


@dataclass(eq=False, slots=True)
class DeleteOp:
    """Remove a whole file: its data and its rows."""

    name: str
    path: str


@dataclass(eq=False, slots=True)
class PinsOp:
    keys: tuple[FileKey, ...]


@dataclass(eq=False, slots=True)
class TouchOp:
    """Save recency (the LRU clock of files and extents)."""

    entries: list[tuple[str, int, tuple[tuple[int, int], ...]]]  # (name, used, ((extent, used), ...))


Op = WriteOp | EvictOp | DropOp | DeleteOp | PinsOp | TouchOp


@dataclass(frozen=True, slots=True)
class Stretch:
    """Consecutive blocks to read: the first index, each block's length and expected checksum."""

    first: int
    lengths: list[int]
    sums: list[int]
