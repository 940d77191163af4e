"""xattr metadata at rest: a saved video's `extra` is read from the snapshot database when asked, not held.

Why. At 100,000 videos a video's xattr values were the largest thing the daemon held for it: an AIPIX
archive's 13 values joined in one string and their map, 229 bytes; an Hour One video's, 216 (22 MiB of a
daemon that must stay under 150). They are read by `getxattr`/`listxattr` (and `getfattr -d`, `rsync -X`)
and by nothing on the path of a walk or a read, and the listing snapshot (`snapshot.py`) writes them to disk
anyway.

How. The snapshot writer keeps each video's values in a table of their own, `extras(listing, remote_id,
extra)`, beside the listing's rows. Once a listing is saved, and while it is still the one the listing
cache serves, each of its videos' `extra` is replaced by the listing's `Place` (`Video.rest_extra`), which
reads a video's values back when asked (`Video.xattrs`), by one indexed query (about 20 µs, in the trio
thread, as getxattr answers at once; the last one read is kept, as `getfattr -d` asks for each name in
turn). One object per listing, nothing per video (a mapping object per video was 4.6 MiB at 100,000). The
videos themselves stay the same objects, so the listing, the tree's nodes and a provider's own scan all
let go of the values at once. A listing loaded from the snapshot at mount time starts that way, so a
remount never reads the values at all.

A video object belongs to one listing (providers make new ones for each listing they give); one moved to
another folder's listing would be saved there without its values. Fresh listings keep their values in
memory until they are saved: a mount whose snapshot cannot be written
(disk full, read-only cache dir) uses memory as before and loses nothing. A rewrite of a listing keeps the
values of its videos already at rest (their rows stay) and removes those of videos no longer in it.

Failure. The values of a video at rest live only in the database: should it be lost (found damaged and
removed), such a video shows no xattrs until its listing is fetched again. That is counted
(`snapshot.extras_missing`) and logged once per cause; the file's name, size and bytes do not depend on it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from vidfs.model import FrozenMap
from vidfs.stats import Stats

log = logging.getLogger(__name__)

_QUERY = (
    "SELECT e.extra FROM extras AS e JOIN listings AS l ON l.id = e.listing"
    " WHERE l.instance = ? AND l.folder = ? AND e.remote_id = ?"
)
_EMPTY = FrozenMap()


class ExtrasReader:
    """Reads the values of videos at rest, in the trio thread, through a read-only connection of its own
    (WAL: it reads while the writer writes). Opened at the first read, again after an error."""

    def __init__(self, path: Path, stats: Stats) -> None:
        self.path = path
        self._stats = stats
        self._db: sqlite3.Connection | None = None
        self._last: tuple[Place, str, FrozenMap] | None = None
        self._logged: set[str] = set()

    def read(self, place: Place, remote_id: str) -> FrozenMap:
        last = self._last
        if last is not None and last[0] is place and last[1] == remote_id:
            return last[2]
        values = self._read(place, remote_id) or _EMPTY
        self._last = (place, remote_id, values)
        return values

    def forget_last(self) -> None:
        """The database changed: what was read last may be stale."""
        self._last = None

    def readable(self, place: Place, remote_id: str) -> FrozenMap | None:
        """The values at rest of `remote_id`, None when they cannot be read: for a re-listing
        (`vidfs.catalog.carry`), which then makes a new video, so that is neither counted nor logged here."""
        return self._read(place, remote_id, quiet=True)

    def _read(self, place: Place, remote_id: str, *, quiet: bool = False) -> FrozenMap | None:
        """The values at rest (None when `quiet` and they cannot be read; else empty, said once)."""
        missing = (lambda message: None) if quiet else self._missing
        for attempt in range(2):  # a connection to a database since replaced fails once, then reopens
            try:
                if self._db is None:
                    self._db = _open(self.path)
                self._stats.incr("snapshot.extras_compared" if quiet else "snapshot.extras_reads")
                # fetchall: the statement is done at once, so this reader never holds the WAL back
                rows = self._db.execute(_QUERY, (place.instance, place.folder_id, remote_id)).fetchall()
            except sqlite3.Error as exc:
                self.close()
                if attempt:
                    missing(f"cannot read xattrs from {self.path}: {exc}")
                    return None if quiet else _EMPTY
                continue
            if not rows:
                missing(f"xattrs of some videos are no longer in {self.path}")
                return None if quiet else _EMPTY
            try:
                return FrozenMap.from_columns(json.loads(rows[0][0]))  # as snapshot.py wrote it
            except (ValueError, TypeError):
                missing(f"damaged xattrs in {self.path}")
                return None if quiet else _EMPTY
        return _EMPTY  # pragma: no cover - the loop returns

    def _missing(self, message: str) -> None:
        self._stats.incr("snapshot.extras_missing")
        if message not in self._logged:
            self._logged.add(message)
            log.warning("%s (shown without them until their listing is fetched again)", message)

    def close(self) -> None:
        db, self._db, self._last = self._db, None, None
        if db is not None:
            db.close()


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1, check_same_thread=False)
    db.execute("PRAGMA query_only = ON")
    return db


class Place:
    """Where the values of one saved listing's videos are (its reader, instance and folder): one object for
    the whole listing, which its videos hold as their `extra` (`model.ValuesAtRest`)."""

    __slots__ = ("folder_id", "instance", "reader")

    def __init__(self, reader: ExtrasReader, instance: str, folder_id: str) -> None:
        self.reader, self.instance, self.folder_id = reader, instance, folder_id

    def values_of(self, remote_id: str) -> FrozenMap:
        return self.reader.read(self, remote_id)

    def readable_values(self, remote_id: str) -> FrozenMap | None:
        return self.reader.readable(self, remote_id)

    def __repr__(self) -> str:
        return f"Place({self.instance!r}, {self.folder_id!r})"
