"""Carry-over: a re-listing keeps the previous listing's objects for the videos that did not change.

Why. A directory is listed again when its listing is older than `metadata_ttl` (and served stale meanwhile) or
after `vidfs refresh`. Until the new listing is stored, the old one is still served and the tree's nodes hold
its videos, so a re-listing that makes every video again holds two catalogs at once: it was the peak of a
mount's life. 0 ms of round trip, 100,000 videos in one directory, peak RSS of the cold walk then of two re-
listings one after the other: Hour One 152 → 202 → 232 MiB (252 after six), AIPIX 145 → 188 → 221, Cupix 118 →
145 → 153, an nginx index 132 → 183 → 201, VALT (layout "rooms") 141 → 166 → 171. Most videos of a large
catalog are the same from one listing to the next: their id, name, size, mtime, content type, handle and xattr
values. Carried (same runs): Hour One 152 → 164 → 164, AIPIX 146 → 153 → 154, Cupix 118 → 123 → 123, the nginx
index 127 → 154 → 155 (117 → 134 → 136 once its listing let go of the page and of the links as written:
`vidfs.providers.http_index`); VALT "rooms" stays at 166-168 (what it holds then is its pass over the records,
not videos). Costs: one comparison per video, about 5 µs with the values read back.

How. While a provider lists a folder, the listing cache lets it see the listing that folder had before
(`listing_for`), and that of any other folder of the instance. A provider passes each video it makes through
`carried` (naming the folder when it is not the one being listed), which gives back the previous object when
nothing differs, so what the new one took (its strings, its packed xattrs, itself) is freed at once, item by
item, and a listing of an unchanged catalog ends up holding no second copy. The previous video is found by its
position first (most APIs list in a stable order), then, at the first miss, through a table of the previous
listing's videos by id (5 MiB for 100,000, only while the listing is made). Videos whose xattr values are at
rest in the snapshot (`vidfs.catalog.extras`) are compared with those read back (about 6 µs each); values that
cannot be read count as changed, so a damaged snapshot makes a new video, whose values are then saved again. A
carried video's values stay at rest: the snapshot keeps their rows (the same listing), and does not write them
again.

Outside a listing of the cache (`vidfs ls`, tests), `carried` carries nothing. The listing cache also passes
every listing it stores through `Carry.listing`, so listings that providers
made without it (the fleet's, read from Redis) are carried as well, though only after they were whole.
A video is carried only from the previous listing of the folder it is made for: its values at rest belong
to that listing (a video moved to another folder is made anew there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from vidfs.model import Entry, Listing, Video


class Carry:
    """The previous listing of one folder, as a re-listing asks it for each video it makes."""

    __slots__ = ("_by_id", "_entries", "_next", "carried")

    def __init__(self, previous: Listing | None) -> None:
        self._entries: tuple[Entry, ...] = previous.entries if previous is not None else ()
        self._next = 0  # where the next video is looked for first
        self._by_id: dict[str, Video] | None = None  # built at the first miss
        self.carried = 0  # videos given back as they were

    def __bool__(self) -> bool:
        """Whether there is a previous listing to carry from."""
        return bool(self._entries)

    def video(self, made: Video) -> Video:
        """The previous listing's video if it is `made` in every respect, else `made`."""
        if not self._entries:
            return made
        old = self.previous(made.remote_id)
        if old is None or old is made:
            return made
        if old != made or old.handle != made.handle or not isinstance(made.extra, Mapping):
            return made
        if not same_values(old, made.extra):
            return made
        self.carried += 1
        return old

    def listing(self, listing: Listing) -> Listing:
        """`listing` with the videos that did not change replaced by the previous objects (the same object
        when nothing was carried)."""
        if not self._entries:
            return listing
        self._next = 0
        entries = tuple(self.video(e) if isinstance(e, Video) else e for e in listing.entries)
        if all(new is old for new, old in zip(entries, listing.entries, strict=True)):
            return listing
        return Listing(entries, listing.hidden)

    def previous(self, remote_id: str) -> Video | None:
        """The previous listing's video of that id (for a provider that compares its items itself)."""
        entries = self._entries
        at = self._next
        if at < len(entries):
            entry = entries[at]
            if isinstance(entry, Video) and entry.remote_id == remote_id:
                self._next = at + 1
                return entry
        if self._by_id is None:
            self._by_id = {e.remote_id: e for e in entries if isinstance(e, Video)}
        return self._by_id.get(remote_id)


def same_values(old: Video, values: Mapping[str, str]) -> bool:
    """Whether `old`'s xattr values, in memory or at rest, are `values`."""
    return previous_values(old) == values


def previous_values(old: Video) -> Mapping[str, str] | None:
    """`old`'s xattr values, in memory or read back from rest; None when they cannot be read (for a
    re-listing, which then makes a new video)."""
    kept = old.extra
    return kept if isinstance(kept, Mapping) else kept.readable_values(old.remote_id)


class Carries:
    """The carries of one listing call: that of the folder being listed, and of any other folder of the same
    provider instance that the call makes videos for (one AIPIX scan answers every camera's directory)."""

    __slots__ = ("_by_folder", "_previous", "folder_id")

    def __init__(self, folder_id: str, previous: Callable[[str], Listing | None]) -> None:
        self.folder_id = folder_id
        self._previous = previous
        self._by_folder: dict[str, Carry] = {}

    def of(self, folder_id: str | None = None) -> Carry:
        folder_id = self.folder_id if folder_id is None else folder_id
        found = self._by_folder.get(folder_id)
        if found is None:
            found = self._by_folder[folder_id] = Carry(self._previous(folder_id))
        return found

    @property
    def carried(self) -> int:
        return sum(carry.carried for carry in self._by_folder.values())


_CURRENT: ContextVar[Carries | None] = ContextVar("vidfs_carries", default=None)


def carry_of(folder_id: str | None = None) -> Carry:
    """The carry of `folder_id` (default: the folder being listed in this task); one that carries nothing
    outside a listing of the listing cache."""
    carries = _CURRENT.get()
    return Carry(None) if carries is None else carries.of(folder_id)


def carried(made: Video, folder_id: str | None = None) -> Video:
    """`made`, or the equal video of the previous listing of `folder_id` (default: the folder being listed
    in this task); `made` outside a listing of the listing cache."""
    carries = _CURRENT.get()
    return made if carries is None else carries.of(folder_id).video(made)


@contextmanager
def listing_for(folder_id: str, previous: Callable[[str], Listing | None]) -> Iterator[Carries]:
    """Within this block (and the tasks started in it), `carried` takes from `previous(folder_id)` (the
    listing cache's listing of a folder of the instance being listed, None when it has none)."""
    carries = Carries(folder_id, previous)
    token = _CURRENT.set(carries)
    try:
        yield carries
    finally:
        _CURRENT.reset(token)


__all__ = ["Carries", "Carry", "carried", "carry_of", "listing_for", "previous_values", "same_values"]
