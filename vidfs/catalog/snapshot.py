"""The persisted listing snapshot: a remount lists at once and browsing works while the remote is down.

After listings change, the metadata of each provider instance is written (atomically, debounced) to
`<cache dir>/meta/<instance>.json`: every cached listing and every size learned by HEAD. At mount time it is
loaded back as *stale* entries: the first access still asks the provider, but when the provider cannot be
reached the snapshot is served (see `MetadataCache.listing`). No secrets are stored: only names, ids,
sizes, times and the xattr metadata the provider exposes anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from vidfs.catalog.listings import MetadataCache, Probe
from vidfs.model import Folder, HiddenItem, Listing, Video

log = logging.getLogger(__name__)

FORMAT = 1


def _entry_to_json(entry: Folder | Video) -> dict[str, Any]:
    if isinstance(entry, Folder):
        return {
            "t": "d",
            "id": entry.remote_id,
            "name": entry.name,
            "mtime": entry.mtime,
            "extra": dict(entry.extra),
        }
    return {
        "t": "f",
        "id": entry.remote_id,
        "name": entry.name,
        "size": entry.size,
        "mtime": entry.mtime,
        "etag": entry.etag,
        "ctype": entry.content_type,
        "extra": dict(entry.extra),
        "handle": dict(entry.handle),
    }


def _entry_from_json(data: Mapping[str, Any]) -> Folder | Video:
    from types import MappingProxyType

    extra = MappingProxyType({str(k): str(v) for k, v in (data.get("extra") or {}).items()})
    if data["t"] == "d":
        return Folder(str(data["id"]), str(data["name"]), mtime=data.get("mtime"), extra=extra)
    return Video(
        remote_id=str(data["id"]),
        name=str(data["name"]),
        size=data.get("size"),
        mtime=data.get("mtime"),
        etag=data.get("etag"),
        content_type=data.get("ctype"),
        extra=extra,
        handle=MappingProxyType({str(k): str(v) for k, v in (data.get("handle") or {}).items()}),
    )


def listing_to_json(listing: Listing) -> dict[str, Any]:
    return {
        "entries": [_entry_to_json(e) for e in listing.entries],
        "hidden": [{"id": h.remote_id, "name": h.name, "status": h.status} for h in listing.hidden],
    }


def listing_from_json(data: Mapping[str, Any]) -> Listing:
    return Listing(
        tuple(_entry_from_json(e) for e in data.get("entries", [])),
        tuple(HiddenItem(str(h["id"]), str(h["name"]), str(h["status"])) for h in data.get("hidden", [])),
    )


def save(
    path: Path, listings: Mapping[str, Listing], probes: Mapping[tuple[str, str], tuple[int, str | None]]
) -> None:
    document = {
        "format": FORMAT,
        "listings": {folder_id: listing_to_json(listing) for folder_id, listing in listings.items()},
        "probes": [[rid, fp, size, etag] for (rid, fp), (size, etag) in probes.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".snapshot-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def load(path: Path) -> tuple[dict[str, Listing], dict[tuple[str, str], tuple[int, str | None]]]:
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            return {}, {}
        listings = {str(k): listing_from_json(v) for k, v in document.get("listings", {}).items()}
        probes = {(str(r), str(f)): (int(s), e) for r, f, s, e in document.get("probes", [])}
        return listings, probes
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable listing snapshot %s: %s", path, exc)
        return {}, {}


class SnapshotKeeper:
    """Loads the persisted listings at mount time and writes them back (debounced) as they change."""

    def __init__(self, metadata: MetadataCache, directory: Path, instances: list[str]) -> None:
        self.metadata = metadata
        self.directory = directory
        self.instances = instances

    def path(self, instance: str) -> Path:
        return self.directory / f"{hashlib.sha256(instance.encode()).hexdigest()[:32]}.json"

    def load(self) -> int:
        loaded = 0
        for instance in self.instances:
            listings, probes = load(self.path(instance))
            for folder_id, listing in listings.items():
                # Seeded as stale: the first access still asks the provider, the snapshot is the fallback.
                self.metadata.seed(instance, folder_id, listing, age=self.metadata.ttl)
                loaded += 1
            for (remote_id, fingerprint), (size, etag) in probes.items():
                self.metadata._probes.setdefault((instance, remote_id, fingerprint), Probe(size, etag))
        return loaded

    def save(self) -> None:
        for instance in self.instances:
            listings = {
                fid: c.listing for (inst, fid), c in self.metadata._listings.items() if inst == instance
            }
            probes = {
                (rid, fp): (p.size, p.etag)
                for (inst, rid, fp), p in self.metadata._probes.items()
                if inst == instance
            }
            if listings or probes:
                save(self.path(instance), listings, probes)

    async def run(self, debounce: float = 2.0) -> None:
        """Write the snapshot a little after each change, until cancelled (then once more)."""
        try:
            while True:
                await self.metadata._dirty.wait()
                self.metadata._dirty = trio.Event()
                await trio.sleep(debounce)  # coalesce a burst of listings into one write
                await trio.to_thread.run_sync(self.save)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self.save)
                except OSError as exc:
                    log.warning("could not save the listing snapshot: %s", exc)
