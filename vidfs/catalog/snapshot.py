"""The persisted listing snapshot: a remount lists at once, and browsing works while a vendor is down.

Layout (format 2), one directory per provider instance, one file per directory listing:

    <cache dir>/meta/<hash of the instance>/
        L-<hash of the folder id>.json     one listing, JSON lines: {"format", "folder", "entries": n},
                                           then one line per entry ([kind, id, name, …]) and hidden item
        probes.json                        sizes learned from storage, JSON lines: {"format"}, then
                                           [id, fingerprint, size, etag] per video

Writing: `SnapshotKeeper.run` is a service. After listings or probes change it waits a little (debounced,
and at least a few times as long as the last save took, so a walk of 100,000 entries is not slowed by
its own snapshot), copies *in the trio thread* what changed (the listing and probe tables are only ever
touched from the trio thread), and writes those files in a worker thread, atomically (temp file, rename).
Only the listings that changed are written again. A failed write (disk full, read-only cache dir) is
logged once per distinct cause, counted in stats (`snapshot.save_failures`), and tried again later; it
never ends the mount. On shutdown everything pending is written once more.

Loading: at mount time every file is read (a worker thread) and installed as *stale* listings and known
probes: the first `ls` answers from them at once, and a refresh runs in the background (see
`listings.py`). A file that cannot be read or parsed is skipped with one warning; a format-1 snapshot
(`meta/<hash>.json`) is ignored and removed.

No secrets are stored: only names, ids, sizes, times, opaque provider handles (never URLs or tokens: see
`model.Video.handle`) and the xattr metadata the provider exposes anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from vidfs.catalog.listings import Key, ListingCache
from vidfs.catalog.probes import Probe, SizeProbes
from vidfs.model import Folder, FrozenMap, HiddenItem, Listing, Video, frozen
from vidfs.stats import Stats

log = logging.getLogger(__name__)

FORMAT = 2
PROBES_FILE = "probes.json"
LISTING_PREFIX = "L-"
DEBOUNCE = 2.0
SAVE_COST_FACTOR = 5.0  # wait at least this many times the last save's duration between saves


# ----------------------------------------------------------------------------------------- encoding
def _columns(values: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(values, FrozenMap):
        return values.columns()
    return frozen(values).columns()


def _map(data: list[list[str]]) -> FrozenMap:
    keys, values = data
    return FrozenMap.of(tuple(keys), tuple(values))


def _entry_to_json(entry: Folder | Video) -> list[Any]:
    if isinstance(entry, Folder):
        return ["d", entry.remote_id, entry.name, entry.mtime, _columns(entry.extra)]
    return [
        "f",
        entry.remote_id,
        entry.name,
        entry.size,
        entry.mtime,
        entry.etag,
        entry.content_type,
        _columns(entry.extra),
        _columns(entry.handle),
    ]


def _entry_from_json(data: list[Any]) -> Folder | Video:
    # Positional and without conversions: this runs for each of 100,000 entries at mount time.
    if data[0] == "d":
        return Folder(data[1], data[2], data[3], _map(data[4]))
    _, remote_id, name, size, mtime, etag, ctype, extra, handle = data
    return Video(remote_id, name, size, mtime, etag, ctype, _map(extra), _map(handle))


def listing_to_json(folder_id: str, listing: Listing) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "folder": folder_id,
        "entries": [_entry_to_json(e) for e in listing.entries],
        "hidden": [[h.remote_id, h.name, h.status] for h in listing.hidden],
    }


def listing_from_json(data: Mapping[str, Any]) -> tuple[str, Listing]:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}")
    listing = Listing(
        tuple(_entry_from_json(e) for e in data["entries"]),
        tuple(HiddenItem(str(r), str(n), str(s)) for r, n, s in data.get("hidden", [])),
    )
    return str(data["folder"]), listing


# ------------------------------------------------------------------------------------------- files
def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _write_lines(path: Path, lines: Iterable[object]) -> None:
    """One JSON value per line, atomically (temp file, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".snapshot-", suffix=".tmp")
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    try:
        with os.fdopen(fd, "w", buffering=1 << 20) as handle:
            for line in lines:
                handle.write(encode(line))
                handle.write("\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_listing(path: Path, folder_id: str, listing: Listing, fetched: float | None = None) -> None:
    """A listing file: a header line (with when the listing was fetched, epoch seconds), then one line per
    entry and per hidden item. Read back line by line, a listing of 100,000 entries never exists twice in
    memory (as JSON and as objects)."""
    header = {"format": FORMAT, "folder": folder_id, "entries": len(listing.entries), "fetched": fetched}
    hidden = (["h", h.remote_id, h.name, h.status] for h in listing.hidden)
    _write_lines(path, itertools.chain([header], map(_entry_to_json, listing.entries), hidden))


def read_listing(path: Path) -> tuple[str, Listing, float | None]:
    entries: list[Folder | Video] = []
    hidden: list[HiddenItem] = []
    with open(path, encoding="utf-8") as handle:
        header = json.loads(handle.readline())
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        for line in handle:
            row = json.loads(line)
            if row[0] == "h":
                hidden.append(HiddenItem(str(row[1]), str(row[2]), str(row[3])))
            else:
                entries.append(_entry_from_json(row))
    if len(entries) != header["entries"]:
        raise ValueError(f"{len(entries)} of {header['entries']} entries")
    fetched = header.get("fetched")
    when = float(fetched) if isinstance(fetched, int | float) else None
    return str(header["folder"]), Listing(tuple(entries), tuple(hidden)), when


@dataclass
class Loaded:
    """What one instance's snapshot held."""

    listings: dict[str, tuple[Listing, float | None]] = field(default_factory=dict)  # and when fetched
    probes: dict[tuple[str, str], Probe] = field(default_factory=dict)
    skipped: int = 0


def load_instance(directory: Path) -> Loaded:
    loaded = Loaded()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return loaded
    for name in names:
        path = directory / name
        try:
            if name == PROBES_FILE:
                with open(path, encoding="utf-8") as lines:
                    if json.loads(lines.readline()).get("format") != FORMAT:
                        raise ValueError("format")
                    for line in lines:
                        rid, fp, size, etag = json.loads(line)
                        loaded.probes[(str(rid), str(fp))] = Probe(int(size), etag)
            elif name.startswith(LISTING_PREFIX):
                folder_id, listing, fetched = read_listing(path)
                loaded.listings[folder_id] = (listing, fetched)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            loaded.skipped += 1
            log.warning("ignoring an unreadable snapshot file %s: %s", path, exc)
    return loaded


# ------------------------------------------------------------------------------------------ keeper
@dataclass
class _Pending:
    """What one save writes: copies made in the trio thread."""

    listings: dict[Path, tuple[Key, Listing, float | None]] = field(default_factory=dict)
    probes: dict[Path, list[list[Any]]] = field(default_factory=dict)

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
        self._last_cost = 0.0
        self._failures: set[str] = set()  # causes already logged

    def instance_dir(self, instance: str) -> Path:
        return self.directory / _hash(instance)

    # ------------------------------------------------------------------------------------ loading
    def read(self) -> dict[str, Loaded]:
        """Read every instance's snapshot (blocking: run it in a worker thread)."""
        self._remove_format_1()
        return {instance: load_instance(self.instance_dir(instance)) for instance in self.instances}

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
            for (remote_id, fingerprint), probe in found.probes.items():
                self.probes.seed(instance, remote_id, fingerprint, probe)
        self.listings.take_dirty()  # what was just loaded need not be written back
        self._saved_probe_version = self.probes.version
        return count

    def _remove_format_1(self) -> None:
        with contextlib.suppress(OSError):
            for name in os.listdir(self.directory):
                if name.endswith(".json") and len(name) == 37:
                    log.info("removing a listing snapshot of an older format: %s", name)
                    os.unlink(self.directory / name)

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
        except OSError as exc:
            self._stats.incr("snapshot.save_failures")
            self._requeue(pending)
            cause = exc.strerror or type(exc).__name__
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

    def _collect(self) -> _Pending:
        pending = _Pending()
        for instance, folder_id in self.listings.take_dirty():
            listing = self.listings.get(instance, folder_id)
            if listing is not None and instance in self.instances:
                path = self.instance_dir(instance) / f"{LISTING_PREFIX}{_hash(folder_id)}.json"
                age = self.listings.age(instance, folder_id)
                fetched = None if age is None or age == math.inf else time.time() - age
                pending.listings[path] = ((instance, folder_id), listing, fetched)
        if self.probes.version != self._saved_probe_version:
            self._saved_probe_version = self.probes.version
            for instance in self.instances:
                rows = [[r, f, p.size, p.etag] for (r, f), p in self.probes.export(instance).items()]
                if rows:
                    pending.probes[self.instance_dir(instance) / PROBES_FILE] = rows
        return pending

    def _requeue(self, pending: _Pending) -> None:
        for key, _listing, _fetched in pending.listings.values():
            self.listings.mark_dirty(key)
        if pending.probes:
            self._saved_probe_version = -1

    @staticmethod
    def _write(pending: _Pending) -> None:
        for path, ((_instance, folder_id), listing, fetched) in pending.listings.items():
            write_listing(path, folder_id, listing, fetched)
        for path, rows in pending.probes.items():
            _write_lines(path, itertools.chain([{"format": FORMAT}], rows))


__all__ = ["Key", "Loaded", "SnapshotKeeper", "listing_from_json", "listing_to_json", "load_instance"]
