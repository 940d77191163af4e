"""The store's writer gives the page cache pages of what it wrote back once enough was written after it
(`vidfs.io.store.disk.WriteBehind`): the data stays on disk and reads back whole, only the pages go; a run
still inside the window keeps its pages; a deleted file's runs are forgotten; kicks that take too long
pause. Page residency is asked of the kernel (`mincore`), not inferred."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from vidfs.io.store import disk
from vidfs.io.store.disk import WriteBehind, _OpenFiles

MiB = 1 << 20
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, *[ctypes.c_int] * 3, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident(path: Path, offset: int, length: int) -> int:
    """How many pages of `path[offset:offset + length]` are in the page cache (mincore; nothing is read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vector = ctypes.create_string_buffer((length + PAGE - 1) // PAGE)
            assert _libc.mincore(address, length, vector) == 0, os.strerror(ctypes.get_errno())
            return sum(byte & 1 for byte in vector.raw)
        finally:
            _libc.munmap(address, length)
    finally:
        os.close(fd)


def write_runs(path: Path, behind: WriteBehind, files: _OpenFiles, runs: list[bytes], at: int = 0) -> None:
    fd = files.get(str(path), create=True)
    offset = at
    for data in runs:
        os.pwrite(fd, data, offset)
        behind.written(fd, str(path), offset, len(data))
        offset += len(data)
    os.fsync(fd)  # written back: DONTNEED drops clean pages only, and the test must not race the flusher


def test_pages_of_runs_far_enough_behind_go_back_and_the_data_stays(tmp_path: Path) -> None:
    path = tmp_path / "data"
    runs = [os.urandom(MiB) for _ in range(6)]
    behind = WriteBehind(drop_behind=2 * MiB)
    files = _OpenFiles()
    try:
        write_runs(path, behind, files, runs)
        assert resident(path, 0, 6 * MiB) > 0  # fsync'd pages stay cached until someone drops them
        behind.drop(files)
    finally:
        files.close()
    # Runs 0-3 had at least 2 MiB written after them; runs 4 and 5 did not.
    assert resident(path, 0, 4 * MiB) == 0
    assert resident(path, 4 * MiB, 2 * MiB) == 2 * MiB // PAGE
    assert behind.dropped == 4 * MiB
    assert path.read_bytes() == b"".join(runs)


def test_a_deleted_files_runs_are_forgotten(tmp_path: Path) -> None:
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    behind = WriteBehind(drop_behind=MiB)
    files = _OpenFiles()
    try:
        write_runs(gone, behind, files, [os.urandom(MiB)])
        files.forget(str(gone))
        gone.unlink()
        behind.forget(str(gone))
        write_runs(kept, behind, files, [os.urandom(MiB) for _ in range(3)])
        behind.drop(files)
    finally:
        files.close()
    assert behind.dropped == 2 * MiB  # the kept file's first two runs; nothing of the deleted one
    assert resident(kept, 0, 2 * MiB) == 0


def test_a_file_gone_before_its_pages_are_given_back_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "data"
    behind = WriteBehind(drop_behind=MiB)
    files = _OpenFiles()
    try:
        write_runs(path, behind, files, [os.urandom(MiB) for _ in range(2)])
        files.forget(str(path))
        path.unlink()  # evicted by someone else, not through a DeleteOp
        behind.drop(files)
    finally:
        files.close()
    assert behind.dropped == 0


def test_slow_kicks_pause_and_then_nothing_is_tracked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk, "SLOW_KICKS", -1.0)  # any kick is "too slow"
    path = tmp_path / "data"
    behind = WriteBehind(drop_behind=MiB)
    files = _OpenFiles()
    try:
        write_runs(path, behind, files, [os.urandom(MiB)])
        behind.drop(files)
        assert behind.pauses == 1
        write_runs(path, behind, files, [os.urandom(MiB) for _ in range(3)], at=MiB)
        behind.drop(files)
    finally:
        files.close()
    assert behind.pauses == 1
    assert behind.dropped == 0  # while paused, runs are left to the kernel's own writeback
    assert resident(path, MiB, 3 * MiB) == 3 * MiB // PAGE
