"""The persisted listing snapshot: a remount lists at once, and browsing works while a vendor is down.

Layout (format 5): one SQLite database (WAL) per mount, `<cache dir>/meta/snapshot.sqlite3`:

    listings(id, instance, folder, fetched, entries)   one row per directory listing, `fetched` in epoch
                                                       seconds, `entries` its entry count (a check)
    rows(listing, position, row)                       its entries and hidden items, one JSON array each
                                                       (`snapshot_codec.py`), in listing order; a video's
                                                       xattr values are null there when not empty:
    extras(listing, remote_id, extra)                  they are here, read only when asked (`extras.py`)
    answers(instance, chunk, ids, rows, texts)         sizes learned from storage, as `answers.py` keeps
                                                       them: CHUNK_ROWS to a row of this table, `rows`
                                                       their bytes, `ids` and `texts` JSON

Why a database and not a file per listing (format 2): VALT at 10,000 videos is 10,113 directories of one
or two entries. Writing them as 10,113 files (temp file, rename) took the snapshot writer about 3 s of CPU
(the GIL) in the middle of the walk that listed them, and a remount read 10,113 files before its first
answer (6.9 s to the end of the first walk); one transaction and one query do the same in a fraction of a
second. A listing is still written row by row and read back row by row, so a listing of 100,000 entries
never exists twice in memory (as JSON and as objects), and a transaction never leaves a listing torn.

Writing: `SnapshotKeeper.run` is a service. After listings or probes change it waits a little (debounced,
and at least a few times as long as the last save took, so a walk of 100,000 entries is not slowed by
its own snapshot), copies *in the trio thread* what changed (the listing and probe tables are only ever
touched from the trio thread), and writes it in a worker thread, in one transaction. Only the listings that
changed are written again, and only the chunks of sizes with answers learned since the last save (all of
them again after a save failed or the database was replaced). A failed write (disk full, read-only cache
dir) is logged once per distinct cause, counted in stats (`snapshot.save_failures`), and tried again later;
it never ends the mount. A database that is not one (damaged) is removed with one warning and written
afresh. On shutdown everything pending is written once more.

Loading: at mount time the database is read (a worker thread) and installed as *stale* listings and known
probes: the first `ls` answers from them at once, and a refresh runs in the background (see
`listings.py`). A listing whose rows do not add up is skipped with one warning; the snapshots of older
formats (format 1 `meta/<hash>.json`, format 2 `meta/<hash>/`) are removed with one log line.

No secrets are stored: only names, ids, sizes, times, opaque provider handles (never URLs or tokens: see
`model.Video.handle`) and the xattr metadata the provider exposes anyway.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import math
import operator
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from vidfs.catalog.answers import ROW_SIZE, AnswerTable, Chunk
from vidfs.catalog.extras import ExtrasReader, Place
from vidfs.catalog.keys import SortedKeys
from vidfs.catalog.listings import Key, ListingCache
from vidfs.catalog.probes import SizeProbes
from vidfs.catalog.snapshot_codec import entry_from_json, listing_rows, new_extras, row_entries
from vidfs.model import Folder, HiddenItem, Listing, Video
from vidfs.stats import Stats

log = logging.getLogger(__name__)

DB_FORMAT = 5  # 5: probe answers in chunks (4 had a row each); 4: xattr values in their own table
DB_NAME = "snapshot.sqlite3"
_OLD_FORMAT = re.compile(r"^[0-9a-f]{32}(\.json)?$")  # format 1 files and format 2 directories
DEBOUNCE = 2.0
SAVE_COST_FACTOR = 5.0  # wait at least this many times the last save's duration between saves


# ---------------------------------------------------------------------------------------- database
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (
    id INTEGER PRIMARY KEY, instance TEXT NOT NULL, folder TEXT NOT NULL, fetched REAL,
    entries INTEGER NOT NULL, UNIQUE (instance, folder));
CREATE TABLE IF NOT EXISTS rows (
    listing INTEGER NOT NULL, position INTEGER NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (listing, position)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS extras (
    listing INTEGER NOT NULL, remote_id TEXT NOT NULL, extra TEXT NOT NULL,
    PRIMARY KEY (listing, remote_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers (
    instance TEXT NOT NULL, chunk INTEGER NOT NULL, ids TEXT NOT NULL, rows BLOB NOT NULL, texts TEXT,
    PRIMARY KEY (instance, chunk));
"""


def _connect(path: Path) -> sqlite3.Connection:
    """The snapshot database, its tables made if new (blocking). A database of another format is emptied."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        os.chmod(path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        with db:
            db.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
            found = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if found is None or found[0] != str(DB_FORMAT):
                for table in ("listings", "rows", "extras", "answers"):
                    db.execute(f"DELETE FROM {table}")  # fixed names, not input
                db.execute("DROP TABLE IF EXISTS probes")  # format 4's
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(DB_FORMAT),))
    except BaseException:
        db.close()
        raise
    return db


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


# One listing to write: its instance, folder id, the listing, when it was fetched.
ListingToWrite = tuple[str, str, Listing, float | None]


def write_listings(db: sqlite3.Connection, items: Sequence[ListingToWrite]) -> None:
    """Replace these listings' rows (inside the caller's transaction).

    The listings new to the database are written together, INSERT_BATCH rows to a statement across them
    (ids numbered from the largest so far): a cold walk of VALT's records saves thousands of listings of one
    video each, and with four statements each (its id looked up, its head, its row, its xattr values) the
    writer thread let go of the GIL and asked for it back 40,000 times for 10,000 records, behind a trio
    thread busy with the walk. A listing already there is replaced on its own (`_replace_listing`)."""
    known = _listing_ids(db, [(instance, folder_id) for instance, folder_id, _, _ in items])
    new: list[ListingToWrite] = []
    for item in items:
        listing_id = known.get((item[0], item[1]))
        if listing_id is None:
            new.append(item)
        else:
            _replace_listing(db, listing_id, item[2], item[3])
    if not new:
        return
    first = int(db.execute("SELECT coalesce(max(id), 0) + 1 FROM listings").fetchone()[0])
    numbered = list(zip(itertools.count(first), new))
    heads = (
        (lid, instance, folder, fetched, len(lst.entries))
        for lid, (instance, folder, lst, fetched) in numbered
    )
    _insert(db, "INSERT INTO listings (id, instance, folder, fetched, entries)", heads)
    rows = (
        (lid, position, row) for lid, item in numbered for position, row in enumerate(listing_rows(item[2]))
    )
    _insert(db, "INSERT INTO rows", rows)
    # Encoded as inserted, as the rows: the values of 100,000 videos encoded at once were 30 MB of a peak.
    _insert(
        db,
        "INSERT OR REPLACE INTO extras",
        (row for lid, item in numbered for row in new_extras(lid, item[2])),
    )


def _listing_ids(db: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The ids of the listings of `keys` (instance, folder id) the database holds."""
    by_instance: dict[str, list[str]] = {}
    for instance, folder_id in keys:
        by_instance.setdefault(instance, []).append(folder_id)
    found: dict[tuple[str, str], int] = {}
    for instance, folders in by_instance.items():
        it = iter(folders)
        while batch := list(itertools.islice(it, INSERT_BATCH)):
            # `instance = ? AND folder IN (…)`, which the UNIQUE index answers; a row value `(instance,
            # folder) IN (VALUES …)` was a scan of the whole table for each batch (100,000 VALT records:
            # 5% of a cold walk's CPU).
            marks = ", ".join("?" * len(batch))
            query = f"SELECT folder, id FROM listings WHERE instance = ? AND folder IN ({marks})"
            for folder_id, listing_id in db.execute(query, [instance, *batch]):
                found[(instance, folder_id)] = listing_id
    return found


def _replace_listing(
    db: sqlite3.Connection, listing_id: int, listing: Listing, fetched: float | None
) -> None:
    """Listing `listing_id`'s rows replaced by `listing`'s (a re-listing of a directory saved before)."""
    db.execute("DELETE FROM rows WHERE listing = ?", (listing_id,))
    db.execute(
        "UPDATE listings SET fetched = ?, entries = ? WHERE id = ?",
        (fetched, len(listing.entries), listing_id),
    )
    _insert(
        db,
        "INSERT INTO rows",
        ((listing_id, position, row) for position, row in enumerate(listing_rows(listing))),
    )
    _insert(db, "INSERT OR REPLACE INTO extras", new_extras(listing_id, listing))
    # The values of videos no longer in it go (those at rest stay: same listing).
    now = SortedKeys(entry.remote_id for entry in listing.entries if isinstance(entry, Video))
    held = db.execute("SELECT remote_id FROM extras WHERE listing = ?", (listing_id,))
    gone = [(listing_id, rid) for (rid,) in held if rid not in now]
    db.executemany("DELETE FROM extras WHERE listing = ? AND remote_id = ?", gone)


def write_answers(db: sqlite3.Connection, instance: str, chunks: Iterable[Chunk], *, whole: bool) -> None:
    """Write these chunks of probe answers; `whole`: they are all of this instance's (the others go)."""
    if whole:
        db.execute("DELETE FROM answers WHERE instance = ?", (instance,))
    db.executemany(
        "INSERT OR REPLACE INTO answers (instance, chunk, ids, rows, texts) VALUES (?, ?, ?, ?, ?)",
        (
            (instance, c.number, json.dumps(c.ids), c.rows, json.dumps(c.texts) if c.texts else None)
            for c in chunks
        ),
    )


# Rows per statement. sqlite3 lets go of the GIL for each statement it steps and waits for it after, behind a
# busy trio thread (a walk's HEADs): one statement per row, a 100,000-video listing's first save (200,000
# rows) took 19 s in such a walk against 2 s alone, and held its videos' xattr values all that time.
INSERT_BATCH = 256
INSERT_TEXT = 1 << 18


def _insert(db: sqlite3.Connection, insert: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """`insert` ("INSERT INTO table") of every row, encoded as they go, INSERT_BATCH rows to a statement or
    fewer, so that a statement holds at most about INSERT_TEXT characters: a listing's rows hold ROW_ENTRIES
    entries each, and 256 of them to a statement were 65,536 entries' text at once (and SQLite's copy of it),
    12 MiB more at the peak of a cold walk of 100,000 Cupix videos."""
    batch: list[tuple[Any, ...]] = []
    text = 0
    for row in rows:
        batch.append(row)
        text += sum(len(value) for value in row if isinstance(value, str))
        if len(batch) == INSERT_BATCH or text >= INSERT_TEXT:
            _insert_batch(db, insert, batch)
            batch, text = [], 0
    if batch:
        _insert_batch(db, insert, batch)


def _insert_batch(db: sqlite3.Connection, insert: str, batch: list[tuple[Any, ...]]) -> None:
    marks = "(" + ", ".join("?" * len(batch[0])) + ")"
    db.execute(f"{insert} VALUES {', '.join([marks] * len(batch))}", [v for row in batch for v in row])


@dataclass
class Loaded:
    """What one instance's snapshot held."""

    listings: dict[str, tuple[Listing, float | None]] = field(default_factory=dict)  # and when fetched
    probes: AnswerTable = field(default_factory=AnswerTable)  # by remote id, with the basis of each
    numbered: bool = True  # `probes` has its rows in the chunks the database has them in
    skipped: int = 0


def _install(
    loaded: dict[str, Loaded], head: tuple[Any, ...], texts: Iterable[str], reader: ExtrasReader | None
) -> None:
    """One listing from its rows into `loaded`, unless its rows do not add up to its entry count. Its
    videos' xattr values stay in the database, read through `reader` when asked."""
    instance, folder, fetched, count = head
    place = None if reader is None else Place(reader, str(instance), str(folder))
    entries: list[Folder | Video] = []
    hidden: list[HiddenItem] = []
    for text in texts:
        try:
            rows = row_entries(text)
        except ValueError:
            continue  # counted short: the listing is skipped below
        for row in rows:
            try:
                if row[0] == "h":
                    hidden.append(HiddenItem(str(row[1]), str(row[2]), str(row[3])))
                else:
                    entries.append(entry_from_json(row, place))
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # counted short, as above
    if len(entries) != count:
        loaded[instance].skipped += 1
        log.warning("ignoring a damaged listing in the snapshot: %d of %d entries", len(entries), count)
        return
    when = float(fetched) if isinstance(fetched, int | float) else None
    loaded[instance].listings[str(folder)] = (Listing(tuple(entries), tuple(hidden)), when)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector held off while a snapshot loads: 100,000 entries are about a million
    new containers, and the collections they set off (each one scanning all that was loaded so far) were 40%
    of a load's time here (1.35 s, 0.82 s without). Nothing loaded forms a cycle; the pause is one load long.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(
    db: sqlite3.Connection, instances: Iterable[str], reader: ExtrasReader | None = None
) -> dict[str, Loaded]:
    """Every listing and probe of `instances` (blocking). A listing whose rows do not add up is skipped, as
    is one with xattr values at rest when there is no `reader` to read them."""
    with _collector_paused():
        return _load(db, instances, reader)


def _load(db: sqlite3.Connection, instances: Iterable[str], reader: ExtrasReader | None) -> dict[str, Loaded]:
    loaded = {instance: Loaded() for instance in instances}
    heads = {
        listing_id: (instance, folder, fetched, count)
        for listing_id, instance, folder, fetched, count in db.execute("SELECT * FROM listings")
        if instance in loaded
    }
    # One pass in key order, one row at a time: the cursor never holds a listing whole.
    rows = db.execute("SELECT listing, row FROM rows ORDER BY listing, position")
    for listing_id, group in itertools.groupby(rows, key=operator.itemgetter(0)):
        head = heads.pop(listing_id, None)
        if head is not None:
            _install(loaded, head, (text for _, text in group), reader)
    for head in heads.values():  # no rows: an empty directory, or a damaged listing
        _install(loaded, head, (), reader)
    for instance, found in loaded.items():
        found.numbered = found.probes.load(_answers(db, instance, found))
    return loaded


def _answers(db: sqlite3.Connection, instance: str, found: Loaded) -> Iterator[Chunk]:
    """One instance's chunks of probe answers as `AnswerTable.load` takes them, each id its video's own
    string, not a copy per answer (5.6 MiB at 100,000 videos): the table of them is made at the first chunk
    (a catalog that lists its sizes has none). A chunk that is not what this program writes is left out
    with one warning (its videos' sizes are asked again)."""
    ids: dict[str, str] | None = None
    damaged = 0
    query = "SELECT chunk, ids, rows, texts FROM answers WHERE instance = ? ORDER BY chunk"
    for number, ids_text, rows, texts_text in db.execute(query, (instance,)):
        if ids is None:
            ids = {
                entry.remote_id: entry.remote_id
                for listing, _ in found.listings.values()
                for entry in listing.entries
                if isinstance(entry, Video)
            }
        listed: Any
        texts: Any  # both checked by `_chunk_fits`
        try:
            listed, texts = json.loads(ids_text), {} if texts_text is None else json.loads(texts_text)
        except (ValueError, TypeError):
            listed = texts = None
        if not _chunk_fits(number, listed, rows, texts):
            damaged += 1
            continue
        get = ids.get
        yield Chunk(number, [get(rid, rid) for rid in listed], rows, texts)
    if damaged:
        log.warning("ignoring %d damaged chunk(s) of sizes in the snapshot: those are asked again", damaged)


def _chunk_fits(number: object, ids: object, rows: object, texts: object) -> bool:
    """Whether a chunk's columns, decoded, are what `write_answers` writes."""
    return (
        type(number) is int
        and isinstance(ids, list)
        and isinstance(rows, bytes)
        and len(rows) == len(ids) * ROW_SIZE
        and all(type(rid) is str for rid in ids)
        and isinstance(texts, dict)
        and all(type(key) is str and type(value) is str for key, value in texts.items())
    )


# ------------------------------------------------------------------------------------------ keeper
@dataclass
class _Pending:
    """What one save writes: copies made in the trio thread."""

    listings: dict[Key, tuple[Listing, float | None]] = field(default_factory=dict)
    probes: dict[str, list[Chunk]] = field(default_factory=dict)  # by instance
    whole_probes: bool = False  # `probes` are every answer known (else only the chunks changed since)

    def __bool__(self) -> bool:
        return bool(self.listings or self.probes)


class SnapshotKeeper:
    """Loads the persisted listings at mount time and writes them back as they change (a service)."""

    def __init__(
        self,
        listings: ListingCache,
        probes: SizeProbes,
        directory: Path,
        instances: Iterable[str],
        stats: Stats,
    ) -> None:
        self.listings = listings
        self.probes = probes
        self.directory = directory
        self.instances = list(instances)
        self._stats = stats
        self._saved_probe_version = 0
        self._all_probes = False  # the next save writes every probe answer, not only the new ones
        self._last_cost = 0.0
        self._failures: set[str] = set()  # causes already logged
        self.extras = ExtrasReader(self.path, stats)  # the xattr values of videos at rest

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    # ------------------------------------------------------------------------------------ loading
    def read(self) -> dict[str, Loaded]:
        """Read every instance's snapshot (blocking: run it in a worker thread)."""
        self._remove_old_formats()
        if not self.path.exists():
            return {instance: Loaded() for instance in self.instances}
        try:
            db = _connect(self.path)
            try:
                return load(db, self.instances, self.extras)
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            log.warning("ignoring an unreadable listing snapshot %s: %s", self.path, exc)
            if not isinstance(exc, sqlite3.OperationalError):  # damaged, not busy or unreadable
                self.extras.close()
                _remove_database(self.path)
        except OSError as exc:
            log.warning("ignoring an unreadable listing snapshot %s: %s", self.path, exc)
        return {instance: Loaded() for instance in self.instances}

    def install(self, loaded: Mapping[str, Loaded]) -> int:
        """Seed the caches with what `read()` found (in the trio thread); returns the listings installed."""
        count = 0
        for instance, found in loaded.items():
            for folder_id, (listing, fetched) in found.listings.items():
                # A listing keeps the age it had: one fetched a minute before a remount is still fresh
                # (no request for it), an old one is refreshed in the background at its first use.
                age = None if fetched is None else max(0.0, time.time() - fetched)
                self.listings.seed(instance, folder_id, listing, age=age)
                count += 1
            if not (self.probes.seed(instance, found.probes) and found.numbered):
                # The rows are numbered apart from the database's chunks: a chunk written as it changes
                # would mix the two, so the next save writes them all.
                self._all_probes = True
        self.listings.take_dirty()  # what was just loaded need not be written back
        self._saved_probe_version = -1 if self._all_probes else self.probes.version
        return count

    def _remove_old_formats(self) -> None:
        with contextlib.suppress(OSError):
            for name in os.listdir(self.directory):
                if _OLD_FORMAT.match(name):
                    log.info("removing a listing snapshot of an older format: %s", name)
                    old = self.directory / name
                    if old.is_dir() and not old.is_symlink():
                        shutil.rmtree(old, ignore_errors=True)
                    else:
                        old.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ writing
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write changes a little after they happen, until cancelled (then once more)."""
        task_status.started()
        try:
            while True:
                await self._changed()
                await trio.sleep(max(DEBOUNCE, SAVE_COST_FACTOR * self._last_cost))
                await self.save()
        finally:
            with trio.CancelScope(shield=True):
                await self.save()
            self.extras.close()

    async def _changed(self) -> None:
        while not (self.listings.has_dirty() or self.probes.version != self._saved_probe_version):
            async with trio.open_nursery() as nursery:

                async def wait_for(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                self.listings.changed = trio.Event()
                self.probes.changed = trio.Event()
                nursery.start_soon(wait_for, self.listings.changed)
                nursery.start_soon(wait_for, self.probes.changed)

    async def save(self) -> None:
        pending = self._collect()
        if not pending:
            return
        started = time.monotonic()
        try:
            await trio.to_thread.run_sync(self._write, pending)
        except (OSError, sqlite3.Error) as exc:
            self._stats.incr("snapshot.save_failures")
            self._requeue(pending)
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                self.extras.close()
                _remove_database(self.path)  # damaged: the next save writes it afresh
                self._saved_probe_version, self._all_probes = -1, True
            cause = (exc.strerror if isinstance(exc, OSError) else str(exc)) or type(exc).__name__
            if cause not in self._failures:
                self._failures.add(cause)
                log.warning(
                    "cannot save the listing snapshot under %s: %s (will retry)", self.directory, cause
                )
            self._last_cost = max(self._last_cost, 6.0)  # back off a little before trying again
            return
        self._failures.clear()
        self._last_cost = time.monotonic() - started
        self._stats.incr("snapshot.saves")
        self._rest(pending)

    def _rest(self, pending: _Pending) -> None:
        """The listings just saved that are still the ones served: their videos' xattr values are left in
        the database, read when asked (`extras.py`)."""
        self.extras.forget_last()
        for (instance, folder_id), (listing, _) in pending.listings.items():
            if self.listings.get(instance, folder_id) is not listing:
                continue  # replaced meanwhile: the next save writes (and rests) the new one
            place = Place(self.extras, instance, folder_id)
            for entry in listing.entries:
                if isinstance(entry, Video) and not isinstance(entry.extra, Place) and entry.extra:
                    entry.rest_extra(place)

    def _collect(self) -> _Pending:
        pending = _Pending()
        for instance, folder_id in self.listings.take_dirty():
            listing = self.listings.get(instance, folder_id)
            if listing is not None and instance in self.instances:
                age = self.listings.age(instance, folder_id)
                fetched = None if age is None or age == math.inf else time.time() - age
                pending.listings[(instance, folder_id)] = (listing, fetched)
        if self.probes.version != self._saved_probe_version:
            self._saved_probe_version = self.probes.version
            new = self.probes.take_unsaved()
            pending.whole_probes, self._all_probes = self._all_probes, False
            for instance in self.instances:
                answers = self.probes.export(instance) if pending.whole_probes else new.get(instance)
                if answers is not None and (answers or pending.whole_probes):
                    pending.probes[instance] = answers
        return pending

    def _requeue(self, pending: _Pending) -> None:
        for key in pending.listings:
            self.listings.mark_dirty(key)
        if pending.probes:  # which of them the database holds is not known: write them all next time
            self._saved_probe_version = -1
            self._all_probes = True

    def _write(self, pending: _Pending) -> None:
        db = _connect(self.path)
        try:
            with db:  # one transaction: every listing of this save, or none
                db.execute("BEGIN")
                items = [
                    (key[0], key[1], listing, fetched) for key, (listing, fetched) in pending.listings.items()
                ]
                write_listings(db, items)
                for instance, answers in pending.probes.items():
                    write_answers(db, instance, answers, whole=pending.whole_probes)
        finally:
            db.close()


__all__ = ["Key", "Loaded", "SnapshotKeeper", "load"]
