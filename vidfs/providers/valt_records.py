"""IVS VALT's records as a pass over `POST /records` keeps them (`vidfs.providers.valt` lists from it).

A pass reads every record, a page at a time (`vidfs.providers.paging.offset_pages`), and keeps of each only
what the listings use: in layout "records" the record's `Folder` (its room's listing shows it), in layout
"rooms" its id, name and time (`RoomRecord`), until its room is listed. Rooms exist only through their
records: the root's listing is made from the pass too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vidfs.http.client import dig
from vidfs.model import Folder, Listing, frozen_extra

ROOM_PREFIX = "room:"
NO_ROOM_ID = "valt:no-room"
NO_ROOM_NAME = "(no room)"


def valt_id(value: Any) -> str | None:
    """An integer (VALT 5) or UUID/string (VALT 6) id as text; None when absent or unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip() and "/" not in value:
        return value.strip()
    return None


def record_key(item: Any) -> str | None:
    if isinstance(item, ListedRecord):
        return item.folder.remote_id
    return item.remote_id if isinstance(item, RoomRecord) else None


def epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def record_extra(record: Mapping[str, Any]) -> dict[str, object | None]:
    """xattr values of a record (shared by its directory and its videos)."""
    cameras = record.get("cameras")
    camera_names: str | None = None
    if isinstance(cameras, Mapping):
        camera_names = ", ".join(str(cameras[k]) for k in sorted(cameras, key=str) if cameras[k])
    elif isinstance(cameras, list):
        camera_names = ", ".join(
            str(c.get("name") if isinstance(c, Mapping) else c) for c in cameras if c is not None
        )
    author = record.get("author")
    return {
        "record_id": valt_id(record.get("id")),
        "record": record.get("name"),
        "room": dig(record, "room", "name"),
        "room_id": valt_id(dig(record, "room", "id")),
        "author": author.get("name") if isinstance(author, Mapping) else author,
        "cameras": camera_names,
        "duration": record.get("duration"),
        "type": record.get("type"),
    }


class ListedRecord(NamedTuple):
    """A record of POST /records as a pass keeps it, made as its page arrives. Its JSON (about 1.1 KB a
    record) is not held until the pass ends: 100,000 records made a 149.2 MiB peak that way, in process,
    against 37.1 MiB kept after; the daemon's RSS never gives such a peak back."""

    folder: Folder
    room: tuple[str, str]  # (room folder id, room name): one tuple per room (`listed_record`)

    @property
    def mtime(self) -> float | None:
        return self.folder.mtime


class RoomRecord(NamedTuple):
    """Layout "rooms": a record as a pass keeps it until its room is listed, where the record is no
    directory. Its fields without a `Folder` around them: 48 bytes less a record, 4.6 MiB of the peak of a
    re-listing of 100,000 (the new pass complete beside the listings it replaces)."""

    remote_id: str
    name: str
    mtime: float | None
    room: tuple[str, str]

    @property
    def folder(self) -> Folder:
        return Folder(self.remote_id, self.name, mtime=self.mtime)


def listed_record(
    record: Any,
    rooms: dict[tuple[str, str], tuple[str, str]],
    *,
    shown: bool = True,
    previous: Mapping[str, Folder] | None = None,
) -> ListedRecord | RoomRecord | None:
    """A record as a pass keeps it; None without a usable id (it stays in its page as None: the page's
    length tells offset paging where the list ends). `rooms` gives each room's tuple once. A record that
    is not `shown` as a directory (layout "rooms": its videos take their xattrs from its details) keeps no
    xattr values. `previous`: the previous pass's folders by record id; a record that did not change keeps
    its folder from there (see `RecordsPass.folders`)."""
    if not isinstance(record, Mapping):
        return None
    record_id = valt_id(record.get("id"))
    if record_id is None:
        return None
    room = room_key(record)
    name, mtime = str(record.get("name") or ""), epoch(record.get("created"))
    if not shown:
        return RoomRecord(record_id, name, mtime, rooms.setdefault(room, room))
    folder = Folder(record_id, name, mtime=mtime, extra=frozen_extra(record_extra(record)))
    kept = previous.get(record_id) if previous else None
    if kept is not None and (kept.name, kept.mtime, kept.extra) == (name, mtime, folder.extra):
        folder = kept  # Folder's equality leaves its xattr values out: they are compared here
    return ListedRecord(folder, rooms.setdefault(room, room))


@dataclass(frozen=True)
class RecordsPass:
    """One pass over POST /records, as the listings use it: the root's listing (the rooms) and each room's
    records as folders, in list order. The records' JSON is not kept (`ListedRecord`): at 100,000 records it
    was 115 MiB, where these folders are the ones the room listings hold anyway (layout "records")."""

    rooms: Listing
    by_room: dict[
        str, tuple[Folder | RoomRecord, ...]
    ]  # room folder id → its records (Folders: layout "records")
    taken: set[str] = field(default_factory=set)  # rooms whose records `take` gave away

    def take(self, room: str) -> None:
        """Layout "rooms": a room listed from this pass no longer needs its records here (their folders
        are nobody else's: 100,000 were about 25 MiB held until the pass expired, past the walk's end).
        Listing it again from this pass asks for a new one (`ValtProvider._all_records`)."""
        self.by_room.pop(room, None)
        self.taken.add(room)

    def folders(self) -> dict[str, Folder]:
        """Layout "records": this pass's record folders by id, for the next pass to keep those that did not
        change (`listed_record`). The rooms listed from this pass hold them (their listings, the tree's
        nodes) after a new pass replaced it, and a new folder for each of their records held the catalog's
        folders twice: 194,000 of them (and their xattr values) at the end of a walk of 100,000 records."""
        return {
            record.remote_id: record
            for records in self.by_room.values()
            for record in records
            if isinstance(record, Folder)
        }

    @classmethod
    def of(cls, records: Sequence[ListedRecord | RoomRecord]) -> RecordsPass:
        rooms: dict[str, tuple[str, float | None, int]] = {}
        by_room: dict[str, list[Folder | RoomRecord]] = {}
        for record in records:
            key, name = record.room
            created = record.mtime
            _, newest, count = rooms.get(key, (name, None, 0))
            if created is not None and (newest is None or created > newest):
                newest = created
            rooms[key] = (name, newest, count + 1)
            by_room.setdefault(key, []).append(record.folder if isinstance(record, ListedRecord) else record)
        root = tuple(
            Folder(
                key,
                name,
                mtime=newest,
                extra=frozen_extra(
                    {"room_id": key.removeprefix(ROOM_PREFIX) if key != NO_ROOM_ID else None, "records": n}
                ),
            )
            for key, (name, newest, n) in rooms.items()
        )
        return cls(Listing(root), {key: tuple(folders) for key, folders in by_room.items()})


def room_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """(folder id, room name) of a record's room."""
    room_id = valt_id(dig(record, "room", "id"))
    if room_id is None:
        return NO_ROOM_ID, NO_ROOM_NAME
    name = dig(record, "room", "name")
    return ROOM_PREFIX + room_id, str(name) if name else f"Room {room_id}"
