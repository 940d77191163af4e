"""How a listing is written as JSON: the snapshot database's rows (`snapshot.py`) and the fleet's shared
listings (sealed by `vidfs.fleet.sealing`, one document per listing).

An entry is one JSON array, positional: ``["d", id, name, mtime, extra]`` for a folder, ``["f", id, name,
size, mtime, etag, content type, extra, handle]`` for a video, ``["h", id, name, status]`` for a hidden
item (rows only). A map (xattr values, handle) is its two columns, keys and values. In the database a
video's xattr values, unless empty, are null in its row and kept in the extras table (`listing_rows`,
`new_extras`), read only when asked (`extras.py`). A database row holds up to ROW_ENTRIES entries, an array
of their arrays; a row of one entry's array alone (as written before) reads the same (`row_entries`).

Reading is positional and without conversions, with the C scanner under `json.loads` called directly: it
runs for each of 100,000 entries at mount time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vidfs.catalog.extras import Place
from vidfs.model import Folder, FrozenMap, HiddenItem, Listing, Video, frozen, shared_content_type

FORMAT = 2  # of a listing as one JSON document (`listing_to_json`: the fleet's shared listings)

# Entries (and hidden items) to a database row. One to a row, a 100,000-entry directory was 100,000 rows to
# step through and decode one call at a time at a remount: 0.45 CPU s for Cupix's snapshot, 0.29 with 512 to
# a row. With 256, a row of Cupix videos is about 23 KB, of AIPIX archives 38.
ROW_ENTRIES = 256

# One encoder for every row of every thread: it keeps no state between calls, and making one per listing
# was a measurable part of writing 10,000 listings of one video (VALT's records).
encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def columns(values: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(values, FrozenMap):
        return values.columns()
    return frozen(values).columns()


def entry_to_json(entry: Folder | Video, *, apart: bool = False) -> list[Any]:
    """An entry as a JSON array. `apart` (the database's rows): a video's xattr values, unless empty, are
    null in it, as they are kept in the extras table (`new_extras`)."""
    if isinstance(entry, Folder):
        return ["d", entry.remote_id, entry.name, entry.mtime, columns(entry.extra)]
    column: Any = None if apart and kept_apart(entry) else columns(entry.xattrs)
    return [
        "f",
        entry.remote_id,
        entry.name,
        entry.size,
        entry.mtime,
        entry.etag,
        entry.content_type,
        column,
        columns(entry.handle),
    ]


# The handles read last, as columns and as their maps: videos that share a handle (AIPIX archives under one
# storage base, among others with a URL each) get one map again, not one each. A few, newest first, so one
# video between two of a run does not end the run; a list replaced whole, so any thread may read it.
_recent_handles: list[tuple[list[list[str]], FrozenMap]] = []
RECENT_HANDLES = 8


def _handle(data: list[list[str]]) -> FrozenMap:
    global _recent_handles
    recent = _recent_handles
    for known_data, known in recent:
        if known_data == data:
            return known
    made = FrozenMap.from_columns(data)
    _recent_handles = [(data, made), *recent[: RECENT_HANDLES - 1]]
    return made


def entry_from_json(data: list[Any], place: Place | None = None) -> Folder | Video:
    """An entry from its JSON array; a video's xattr values null there are at rest in `place`."""
    # Positional and without conversions: this runs for each of 100,000 entries at mount time.
    if data[0] == "d":
        return Folder(data[1], data[2], data[3], FrozenMap.from_columns(data[4]))
    _, remote_id, name, size, mtime, etag, ctype, extra, handle = data
    if extra is None:
        if place is None:
            raise ValueError("xattr values at rest outside the snapshot database")
        values: Mapping[str, str] | Place = place
    else:
        values = FrozenMap.from_columns(extra)
    return Video(remote_id, name, size, mtime, etag, shared_content_type(ctype), values, _handle(handle))


def listing_to_json(folder_id: str, listing: Listing) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "folder": folder_id,
        "entries": [entry_to_json(e) for e in listing.entries],
        "hidden": [[h.remote_id, h.name, h.status] for h in listing.hidden],
    }


def listing_from_json(data: Mapping[str, Any]) -> tuple[str, Listing]:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}")
    listing = Listing(
        tuple(entry_from_json(e) for e in data["entries"]),
        tuple(HiddenItem(str(r), str(n), str(s)) for r, n, s in data.get("hidden", [])),
    )
    return str(data["folder"]), listing


def listing_rows(listing: Listing) -> Iterator[str]:
    """The listing's rows, ROW_ENTRIES entries (then hidden items) to a row as one JSON array of their arrays,
    its videos' xattr values apart (see `extras.py`)."""
    items = itertools.chain(
        (entry_to_json(entry, apart=True) for entry in listing.entries),
        (["h", h.remote_id, h.name, h.status] for h in listing.hidden),
    )
    while chunk := list(itertools.islice(items, ROW_ENTRIES)):
        yield encode(chunk)


def row_entries(text: str) -> list[Any]:
    """The entries' arrays of one row: its array of them, or the one entry of a row written before rows held
    several. ValueError unless the text is exactly one JSON array."""
    value = row_value(text)
    if not isinstance(value, list) or not value:
        raise ValueError("not an entry's array, nor an array of them")
    return value if isinstance(value[0], list) else [value]


def kept_apart(video: Video) -> bool:
    """Whether a video's xattr values belong in the extras table: at rest there already (never read for
    this), or not empty."""
    return isinstance(video.extra, Place) or bool(video.extra)


def new_extras(listing_id: int, listing: Listing) -> Iterator[tuple[int, str, str]]:
    """The extras rows of a listing's videos whose values are not at rest yet (nor empty)."""
    for entry in listing.entries:
        if not isinstance(entry, Video) or isinstance(entry.extra, Place) or not entry.extra:
            continue
        yield listing_id, entry.remote_id, encode(columns(entry.xattrs))


# The C scanner under json.loads, without its Python layers (typeshed does not know the attribute).
_scan_value: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def row_value(text: str) -> Any:
    """One row's JSON value; ValueError unless the whole text is exactly one value. (json.loads adds a
    Python call, two regex matches and a check per row: 0.30 CPU s for 100,000 rows, 0.20 without.)"""
    try:
        value, end = _scan_value(text, 0)
    except StopIteration as exc:  # the scanner's way of saying no value starts at 0
        raise ValueError("no JSON value") from exc
    if end != len(text):
        raise ValueError("text after the JSON value")
    return value
