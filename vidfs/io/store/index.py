"""The store's index: an SQLite database in WAL mode (blocking; used from worker threads only).

Tables::

    files(name PK, instance, remote_id, fingerprint, block_size, size, bytes, blocks, used)
    extents(name, number, mask, sums, used; PK (name, number))
    pins(instance, remote_id, fingerprint)

One `files` row per cached remote file keeps its totals, so opening the store reads O(files) rows; an
`extents` row per extent (64 blocks) holds the mask of the blocks present and their 64 checksums (8 bytes
each, little-endian), read when the file is first used. `used` is the LRU clock. ``PRAGMA user_version`` is
the format (2): any other value, or a file SQLite calls corrupt, makes the store start afresh.

Every change of a batch is one transaction (`apply`), committed after the batch's data was written, so a
row never names a block whose bytes were not handed to the kernel first; after a power cut the checksums
catch what the kernel had not written back. ``synchronous=NORMAL``: a commit costs no fsync (WAL); a power
cut may lose the last commits, never the database.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from vidfs.io.remote_file import FileKey
from vidfs.io.store.layout import (
    EXTENT_BLOCKS,
    EXTENT_MASK,
    EXTENT_SHIFT,
    FILES_DIR,
    INDEX_FILE,
    Layout,
    extent_bytes,
    prepare_root,
    set_aside,
)

FORMAT = 2
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
_SIGN = 1 << 63
_MASK64 = (1 << 64) - 1

SCHEMA = """
CREATE TABLE files (
    name TEXT PRIMARY KEY, instance TEXT NOT NULL, remote_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    block_size INTEGER NOT NULL, size INTEGER NOT NULL, bytes INTEGER NOT NULL, blocks INTEGER NOT NULL,
    used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE extents (
    name TEXT NOT NULL, number INTEGER NOT NULL, mask INTEGER NOT NULL, sums BLOB NOT NULL,
    used INTEGER NOT NULL, PRIMARY KEY (name, number)
) WITHOUT ROWID;
CREATE TABLE pins (
    instance TEXT NOT NULL, remote_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    PRIMARY KEY (instance, remote_id, fingerprint)
) WITHOUT ROWID;
"""


class StaleIndex(Exception):
    """The index is of another format, or damaged: the store starts afresh."""


def is_corruption(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def _to_sql(mask: int) -> int:
    return mask - (1 << 64) if mask & _SIGN else mask


def _from_sql(value: int) -> int:
    return value & _MASK64


def sums_to_blob(sums: array[int]) -> bytes:
    if sys.byteorder != "little":
        sums = array("Q", sums)
        sums.byteswap()
    return sums.tobytes()


def sums_from_blob(blob: bytes) -> array[int]:
    sums = array("Q")
    sums.frombytes(blob[: EXTENT_BLOCKS * 8])
    if sys.byteorder != "little":
        sums.byteswap()
    if len(sums) < EXTENT_BLOCKS:
        sums.extend([0] * (EXTENT_BLOCKS - len(sums)))
    return sums


# ------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True, slots=True)
class FileRow:
    name: str
    key: FileKey
    block_size: int
    size: int
    nbytes: int
    blocks: int
    used: int


@dataclass(frozen=True, slots=True)
class ExtentRow:
    number: int
    mask: int
    sums: array[int]
    used: int


@dataclass(frozen=True, slots=True)
class Contents:
    """What `load` found: the files of this block size (LRU order), the pins, the clock."""

    files: list[FileRow]
    pins: list[FileKey]
    clock: int
    others: list[str] = field(default_factory=list)  # files of another block size (left to age out)


# ---------------------------------------------------------------------------------------- changes
@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    key: FileKey
    block_size: int
    size: int


@dataclass(frozen=True, slots=True)
class Written:
    """Blocks whose bytes were written: (index, checksum) each."""

    file: FileInfo
    blocks: list[tuple[int, int]]
    used: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """Blocks found damaged: no longer in the index."""

    file: FileInfo
    indices: list[int]


@dataclass(frozen=True, slots=True)
class Evicted:
    file: FileInfo
    extents: list[int]


@dataclass(frozen=True, slots=True)
class Deleted:
    name: str


@dataclass(frozen=True, slots=True)
class Pins:
    keys: tuple[FileKey, ...]


@dataclass(frozen=True, slots=True)
class Touched:
    name: str
    used: int
    extents: tuple[tuple[int, int], ...]  # (number, used)


Change = Written | Dropped | Evicted | Deleted | Pins | Touched


# ------------------------------------------------------------------------------------------ index
class Index:
    """One connection, used under a lock from whichever worker thread needs it."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables == 0:
                self._db.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {FORMAT}; COMMIT;")
            elif version != FORMAT:
                raise StaleIndex(f"index format {version}, this vidfs uses {FORMAT}")
            self._db.execute("SELECT count(*) FROM files").fetchone()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------------------------- reading
    def load(self, block_size: int) -> Contents:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, instance, remote_id, fingerprint, block_size, size, bytes, blocks, used "
                "FROM files ORDER BY used"
            ).fetchall()
            pins = self._db.execute("SELECT instance, remote_id, fingerprint FROM pins").fetchall()
        files: list[FileRow] = []
        others: list[str] = []
        clock = 0
        for name, instance, remote_id, fingerprint, size_of_block, size, nbytes, blocks, used in rows:
            clock = max(clock, used)
            row = FileRow(
                name, FileKey(instance, remote_id, fingerprint), size_of_block, size, nbytes, blocks, used
            )
            if size_of_block == block_size:
                files.append(row)
            else:
                others.append(name)
        return Contents(files, [FileKey(*pin) for pin in pins], clock, others)

    def extents(self, name: str) -> list[ExtentRow]:
        """A file's extents, least recently used first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT number, mask, sums, used FROM extents WHERE name = ? ORDER BY used, number", (name,)
            ).fetchall()
        return [
            ExtentRow(number, _from_sql(mask), sums_from_blob(sums), used)
            for number, mask, sums, used in rows
        ]

    def names(self) -> set[str]:
        with self._lock:
            return {name for (name,) in self._db.execute("SELECT name FROM files")}

    # ---------------------------------------------------------------------------------- writing
    def apply(self, changes: Iterable[Change]) -> list[str]:
        """Apply `changes` in one transaction; returns the names of files left with no block (their rows
        are gone: the caller removes their data files)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                touched: set[str] = set()
                for change in changes:
                    touched.update(_apply_one(db, change))
                emptied = [
                    name
                    for name in sorted(touched)
                    if (row := db.execute("SELECT blocks FROM files WHERE name = ?", (name,)).fetchone())
                    is not None
                    and row[0] <= 0
                ]
                for name in emptied:
                    db.execute("DELETE FROM extents WHERE name = ?", (name,))
                    db.execute("DELETE FROM files WHERE name = ?", (name,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return emptied


# ------------------------------------------------------------------------------ applying changes
def _apply_one(db: sqlite3.Connection, change: Change) -> list[str]:
    if isinstance(change, Written):
        _write_blocks(db, change)
        return [change.file.name]
    if isinstance(change, Dropped):
        _drop_blocks(db, change.file, change.indices)
        return [change.file.name]
    if isinstance(change, Evicted):
        _evict_extents(db, change.file, change.extents)
        return [change.file.name]
    if isinstance(change, Deleted):
        db.execute("DELETE FROM extents WHERE name = ?", (change.name,))
        db.execute("DELETE FROM files WHERE name = ?", (change.name,))
        return []
    if isinstance(change, Pins):
        db.execute("DELETE FROM pins")
        db.executemany(
            "INSERT OR IGNORE INTO pins VALUES (?, ?, ?)",
            [(key.instance, key.remote_id, key.fingerprint) for key in change.keys],
        )
        return []
    db.execute("UPDATE files SET used = max(used, ?) WHERE name = ?", (change.used, change.name))
    db.executemany(
        "UPDATE extents SET used = max(used, ?) WHERE name = ? AND number = ?",
        [(used, change.name, number) for number, used in change.extents],
    )
    return []


def _by_extent(indices: Iterable[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    grouped: dict[int, list[tuple[int, int]]] = {}
    for index, value in indices:
        grouped.setdefault(index >> EXTENT_SHIFT, []).append((index & EXTENT_MASK, value))
    return grouped


def _extent_row(db: sqlite3.Connection, name: str, number: int) -> tuple[int, array[int], int] | None:
    row = db.execute(
        "SELECT mask, sums, used FROM extents WHERE name = ? AND number = ?", (name, number)
    ).fetchone()
    if row is None:
        return None
    return _from_sql(row[0]), sums_from_blob(row[1]), row[2]


def _adjust_file(
    db: sqlite3.Connection, file: FileInfo, delta_bytes: int, delta_blocks: int, used: int
) -> None:
    updated = db.execute(
        "UPDATE files SET bytes = bytes + ?, blocks = blocks + ?, used = max(used, ?) WHERE name = ?",
        (delta_bytes, delta_blocks, used, file.name),
    ).rowcount
    if not updated and delta_blocks > 0:
        key = file.key
        db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (file.name, key.instance, key.remote_id, key.fingerprint, file.block_size, file.size,
             delta_bytes, delta_blocks, used),
        )  # fmt: skip


def _write_blocks(db: sqlite3.Connection, change: Written) -> None:
    file = change.file
    total_bytes = total_blocks = 0
    for number, slots in _by_extent(change.blocks).items():
        found = _extent_row(db, file.name, number)
        mask, sums, _used = found if found is not None else (0, array("Q", bytes(8 * EXTENT_BLOCKS)), 0)
        added = 0
        for slot, value in slots:
            sums[slot] = value
            added |= 1 << slot
        added &= ~mask
        mask |= added
        total_bytes += extent_bytes(number, added, file.block_size, file.size)
        total_blocks += added.bit_count()
        db.execute(
            "INSERT OR REPLACE INTO extents VALUES (?, ?, ?, ?, ?)",
            (file.name, number, _to_sql(mask), sums_to_blob(sums), change.used),
        )
    _adjust_file(db, file, total_bytes, total_blocks, change.used)


def _drop_blocks(db: sqlite3.Connection, file: FileInfo, indices: list[int]) -> None:
    total_bytes = total_blocks = 0
    for number, slots in _by_extent((index, 0) for index in indices).items():
        found = _extent_row(db, file.name, number)
        if found is None:
            continue
        mask = found[0]
        gone = 0
        for slot, _zero in slots:
            gone |= 1 << slot
        gone &= mask
        mask &= ~gone
        total_bytes -= extent_bytes(number, gone, file.block_size, file.size)
        total_blocks -= gone.bit_count()
        if mask:
            db.execute(
                "UPDATE extents SET mask = ? WHERE name = ? AND number = ?",
                (_to_sql(mask), file.name, number),
            )
        else:
            db.execute("DELETE FROM extents WHERE name = ? AND number = ?", (file.name, number))
    _adjust_file(db, file, total_bytes, total_blocks, 0)


def _evict_extents(db: sqlite3.Connection, file: FileInfo, numbers: list[int]) -> None:
    total_bytes = total_blocks = 0
    for number in numbers:
        found = _extent_row(db, file.name, number)
        if found is None:
            continue
        total_bytes -= extent_bytes(number, found[0], file.block_size, file.size)
        total_blocks -= found[0].bit_count()
        db.execute("DELETE FROM extents WHERE name = ? AND number = ?", (file.name, number))
    _adjust_file(db, file, total_bytes, total_blocks, 0)


# ---------------------------------------------------------------------------------------- opening
def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files copy that mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


def open_index(layout: Layout) -> tuple[Index, str | None]:
    """Open or create the index. One of another format, or damaged, is set aside with the data files it
    described (both removed in the background); then the second item says why."""
    path = str(layout.index)
    _create_private(path)
    try:
        return Index(path), None
    except StaleIndex as exc:
        reason = str(exc)
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        reason = f"damaged index ({exc})"
    set_aside(layout, [INDEX_FILE, f"{INDEX_FILE}-wal", f"{INDEX_FILE}-shm", FILES_DIR])
    prepare_root(layout)
    _create_private(path)
    return Index(path), reason
