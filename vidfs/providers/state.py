"""Small state files a provider keeps in its instance's state dir: AIPIX's device id, Hour One's first-seen
times.

They outlive the mount (a remount must show the same device to the VMS, the same mtimes to rsync), so each
is written all or nothing (a 0600 temp file in the same directory, fsynced, then renamed or linked into
place) and two mounts sharing one cache dir agree: the first writer of a device id wins (`link` refuses to
overwrite), first-seen times are merged under an flock. A state file that cannot be written costs only
stability across remounts, never the mount: the caller logs it once and goes on with values in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import trio

FIRST_SEEN_FORMAT = 1


def _written_temp(path: Path, chunks: Iterable[str]) -> str:
    """A 0600 temp file beside `path` holding `chunks`, fsynced: the name of it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(chunks)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return temp


def replace_atomically(path: Path, chunks: Iterable[str]) -> None:
    """Put the text of `chunks` in `path`, all or nothing, written as they come (never one string)."""
    temp = _written_temp(path, chunks)
    try:
        os.replace(temp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def write_atomically(path: Path, text: str, *, keep_existing: bool = False) -> str:
    """Put `text` in `path`, all or nothing. `keep_existing`: when `path` already exists (another process
    stored it first), leave it and return its text. Returns the text now at `path`."""
    temp = _written_temp(path, (text,))
    try:
        if keep_existing:
            try:
                os.link(temp, path)
            except FileExistsError:
                return path.read_text(encoding="utf-8")
            except OSError:  # a filesystem without hard links
                os.replace(temp, path)
        else:
            os.replace(temp, path)
        _fsync_dir(path.parent)
        return text
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def device_uuid(path: Path, log: logging.Logger, who: str) -> str:
    """A UUID generated once and kept in `path`, so every mount is the same device. An unreadable file is
    replaced; one that cannot be written leaves a UUID for this session only."""
    corrupt = False
    try:
        return str(uuid.UUID(path.read_text(encoding="utf-8").strip()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        corrupt = True
        log.warning("%s: device id in %s unreadable (%s); making a new one", who, path, exc)
    fresh = str(uuid.uuid4())
    try:
        return str(uuid.UUID(write_atomically(path, fresh + "\n", keep_existing=not corrupt).strip()))
    except (OSError, ValueError) as exc:
        log.warning(
            "%s: cannot keep the device id in %s (%s); this session uses a temporary one", who, path, exc
        )
        return fresh


class FirstSeen:
    """When this cache first saw each video as a file (epoch seconds), persisted as a JSON file with one id a
    line, so it is read and rewritten a line at a time.

    `stamp` gives the times of the ids it is asked: those in the file as they are there, the others "now",
    added to the file (atomically, under an flock, merged with what is on disk so two mounts sharing a cache
    dir agree: the first writer wins). The caller asks only for videos it has no time for: Hour One's
    re-listing takes a carried video's from the previous listing (its mtime, also after a remount, from the
    snapshot), so a re-listing of an unchanged catalog neither reads nor writes the file. Nothing is kept in
    memory but the times the file could not take (a read-only cache dir): a table of every id kept beside
    the listing, its ids read from the file after a remount, plus the whole file decoded at once at the first
    re-listing, were 15 MiB of the peak of a 100,000-video re-listing.
    """

    def __init__(self, path: Path, log: logging.Logger, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._log = log
        self._clock = clock
        self._unsaved: dict[str, int] = {}  # times given out that the file does not have yet
        self._lock = trio.Lock()
        self._warned = self._read_warned = False

    async def stamp(self, ids: Iterable[str]) -> dict[str, int]:
        """The first-seen times of `ids`: new ids get "now" and are persisted before returning."""
        asked = list(ids)
        if not asked:
            return {}
        async with self._lock:
            return await trio.to_thread.run_sync(self._stamp, asked, int(self._clock()))

    def _stamp(self, asked: list[str], now: int) -> dict[str, int]:
        """In a worker thread (one at a time): the times of `asked`, the file updated with the new ones.
        One table of them: at 100,000 new ids, a table each of those wanted, added and returned were 12 MiB
        of a cold listing's peak."""
        held = bool(self._unsaved)
        times = dict.fromkeys(asked, now)
        times.update(self._unsaved)  # written with the next new ids (also those not asked now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path.parent / f".{self.path.name}.lock", "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                found = self._read(times)
                if len(found) < len(times):
                    added = ((i, t) for i, t in times.items() if i not in found)
                    replace_atomically(self.path, _first_seen_document(self._entries(quiet=True), added))
            self._unsaved.clear()
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "cannot persist first-seen times in %s (%s): mtimes will change on remount",
                    self.path,
                    exc,
                )
            found = self._read(times)
            self._unsaved.update((i, t) for i, t in times.items() if i not in found)
        times.update(found)
        return {i: times[i] for i in asked} if held else times

    def _read(self, wanted: Mapping[str, int]) -> dict[str, int]:
        """The file's times of the ids in `wanted` (none when it is missing or unreadable)."""
        return {video_id: seconds for video_id, seconds in self._entries() if video_id in wanted}

    def _entries(self, *, quiet: bool = False) -> Iterator[tuple[str, int]]:
        """The file's (id, seconds), read a line at a time; an unreadable file ends them (said once)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                first = handle.readline()
                if first.rstrip("\n") != _FIRST_LINE:  # not written a line an id: read whole
                    yield from _entries_of(json.loads(first + handle.read()))
                    return
                for line in handle:  # bounded by the file
                    if line.rstrip("\n") == _LAST_LINE:
                        return
                    yield _entry_of(line)
                raise ValueError("the file ends before its JSON document does")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            if not self._read_warned and not quiet:  # read at every lookup: said once
                self._read_warned = True
                self._log.warning("ignoring an unreadable state file %s: %s", self.path, exc)


_FIRST_LINE = f'{{"format":{FIRST_SEEN_FORMAT},"first_seen":{{'
_LAST_LINE = "}}"


def _entry_of(line: str) -> tuple[str, int]:
    """One `"<id>":<seconds>` line (a comma after it but the last)."""
    key, colon, seconds = line.rstrip("\n").removesuffix(",").rpartition(":")  # an id's ':' come before
    if not colon or len(key) < 2 or key[0] != '"' or key[-1] != '"':
        raise ValueError(f"not an id and a time: {line[:80]!r}")
    video_id = json.loads(key) if "\\" in key else key[1:-1]  # escaped: as json.dumps wrote it
    return str(video_id), int(seconds)


def _entries_of(document: object) -> Iterator[tuple[str, int]]:
    """The entries of a state file written whole (by an earlier version)."""
    times = document.get("first_seen") if isinstance(document, dict) else None
    if not isinstance(times, dict):
        raise ValueError("no first_seen table")
    for video_id, seconds in times.items():
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            yield str(video_id), int(seconds)


def _first_seen_document(kept: Iterable[tuple[str, int]], added: Iterable[tuple[str, int]]) -> Iterator[str]:
    """The state file's JSON (`{"format": 1, "first_seen": {id: seconds}}`), an id a line: the file's own
    entries as they are read (`kept`), then those `added`. Never the whole document as one string, nor a
    table of every id (16 MiB at 100,000 ids)."""
    yield _FIRST_LINE
    separator = "\n"
    for video_id, seconds in itertools.chain(kept, added):
        yield f"{separator}{json.dumps(video_id)}:{int(seconds)}"
        separator = ",\n"
    yield f"\n{_LAST_LINE}\n"
