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
    """When this cache first saw each video as a file (epoch seconds), persisted as a small JSON file.

    The file is read once, then rewritten (atomically, under an flock, merged with what is on disk so two
    mounts sharing a cache dir agree: the first writer wins) whenever new ids show up. The times stay in
    memory (3.7 MiB at 100,000 ids on a cold start, their keys the listing's own ids): reading the file at
    each listing instead took that off a cold walk's peak but put 15 MiB on every re-listing's, which is
    the higher one (a re-listing of 100,000 Hour One videos peaks at 205-236 MiB, a cold walk at 150).
    """

    def __init__(self, path: Path, log: logging.Logger, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._log = log
        self._clock = clock
        self._times: dict[str, int] = {}
        self._loaded = False
        self._lock = trio.Lock()
        self._warned = self._read_warned = False

    async def stamp(self, ids: Iterable[str]) -> Mapping[str, int]:
        """First-seen times, those of `ids` among them: new ids get "now" and are persisted before returning.
        The times of every id known are returned, not a copy of those asked (at 100,000 ids, the copies of
        them here and in the file's writing were 20 MiB of a listing's peak)."""
        async with self._lock:
            if not self._loaded:
                self._times.update(await trio.to_thread.run_sync(self._read))
                self._loaded = True
            missing = [i for i in ids if i not in self._times]  # an id twice is stamped twice, alike
            if missing:
                now = int(self._clock())
                self._times.update(await trio.to_thread.run_sync(self._merge_and_write, missing, now))
            return self._times

    def _read(self) -> dict[str, int]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            if not self._read_warned:  # read at the first listing and at each merge: said once
                self._read_warned = True
                self._log.warning("ignoring an unreadable state file %s: %s", self.path, exc)
            return {}
        times = document.get("first_seen") if isinstance(document, dict) else None
        if not isinstance(times, dict):
            return {}
        return {str(k): int(v) for k, v in times.items() if isinstance(v, int | float)}

    def _merge_and_write(self, missing: list[str], now: int) -> dict[str, int]:
        """The times to add: `now` for the ids missing, and the file's (another mount may have written some
        first: its times win); the file is written with them. In a worker thread: the times are read here,
        never changed (the caller adds these in its own), so a caller reading them meanwhile is safe."""
        changes = dict.fromkeys(missing, now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path.parent / f".{self.path.name}.lock", "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                changes.update(self._read())
                replace_atomically(self.path, _first_seen_document(self._times, changes))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "cannot persist first-seen times in %s (%s): mtimes will change on remount",
                    self.path,
                    exc,
                )
            return dict.fromkeys(missing, now)
        return changes


def _first_seen_document(times: Mapping[str, int], changes: Mapping[str, int]) -> Iterator[str]:
    """The state file's JSON (`{"format": 1, "first_seen": {id: seconds}}`) of `times` with `changes`, an
    id at a time, sorted: the whole document as one string, from a dict and a sorted list of pairs, was
    16 MiB at 100,000 ids."""
    yield f'{{"format":{FIRST_SEEN_FORMAT},"first_seen":{{'
    separator = ""
    for video_id in sorted(times.keys() | changes.keys()):
        seconds = changes[video_id] if video_id in changes else times[video_id]
        yield f"{separator}{json.dumps(video_id)}:{int(seconds)}"
        separator = ","
    yield "}}"
