"""Opening the store (blocking; one worker-thread hop): take the lock, set an old format aside, open the
index, and reconcile it with the data files on disk — all in O(files)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from enum import Enum

from vidfs.io.store.disk import Space, space_of
from vidfs.io.store.index import Contents, Deleted, Index, open_index
from vidfs.io.store.layout import Layout, data_files, discard_old_format, prepare_root, take_lock


class Opening(Enum):
    OPEN = "open"
    RETRY = "retry"  # the file system refused: try again later
    DISABLED = "disabled"  # another vidfs process holds the cache dir


@dataclass(frozen=True, slots=True)
class Opened:
    lock: int
    index: Index
    contents: Contents
    notes: list[str]
    space: Space | None


def open_blocking(layout: Layout, block_size: int) -> Opened | None:
    """Lock, set aside an old format, open the index, reconcile it with the data files (O(files))."""
    prepare_root(layout)
    lock = take_lock(layout)
    if lock is None:
        return None
    index: Index | None = None
    try:
        notes: list[str] = []
        if discard_old_format(layout):
            notes.append(
                "discarded a cache in the old one-file-per-block format (its blocks are fetched again)"
            )
        index, reset = open_index(layout)
        if reset is not None:
            notes.append(f"started afresh: {reset}")
        contents = _reconcile(layout, index, block_size, notes)
        return Opened(lock, index, contents, notes, space_of(layout))
    except BaseException:
        if index is not None:
            index.close()
        os.close(lock)
        raise


def _reconcile(layout: Layout, index: Index, block_size: int, notes: list[str]) -> Contents:
    """Drop rows whose data file is gone or of another block size; remove data files the index does not
    name (written, then a crash before the index said so)."""
    contents = index.load(block_size)
    on_disk = data_files(layout)
    gone = [row.name for row in contents.files if row.name not in on_disk]
    stale = [*contents.others, *gone]
    if stale:
        index.apply([Deleted(name) for name in stale])
        contents = index.load(block_size)
        notes.append(f"dropped {len(stale)} file(s) of another block size or whose data was gone")
    known = {row.name for row in contents.files}
    for name, path in on_disk.items():
        if name not in known:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return contents
