"""The tree's parts: a `Node` per remote item (a stable inode, a name, what the kernel holds of it), the
`Directory` of a built listing (its children by name), and the inode numbers (`stable_inode`).

`vidfs.fs.tree` builds and keeps them; this module holds no state of its own.
"""

from __future__ import annotations

import bisect
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import overload

from xxhash import xxh3_64_intdigest

from vidfs.errors import IsDirectoryError, NotDirectoryError
from vidfs.model import Entry, Folder, HiddenItem, Video

ROOT_INODE = 1
UNSIZED = -1  # `Node.size` of a video whose size is not known yet (the listing lacks it: see `vidfs.fs.tree`)
FILE_MODE = stat.S_IFREG | 0o444
DIR_MODE = stat.S_IFDIR | 0o555


def stable_inode(instance: str, kind: str, remote_id: str, salt: int = 0) -> int:
    """The same number for the same item in every run (a collision takes the next `salt`). xxh3, not
    blake2b: this runs for every entry of every directory built, and blake2b with its digest conversion was
    14% of the daemon's CPU in a remount walk of 100,000 entries. (The numbers changed with it once.)"""
    value = xxh3_64_intdigest(f"{instance}\0{kind}\0{remote_id}\0{salt}".encode()) & ((1 << 63) - 1)
    return value if value > ROOT_INODE else value + 2


class Node:
    """One item of the tree. `lookups` is the kernel's count (the open files holding it are counted by the
    tree, as are the kernel's cached pages by `VideoFS`: a slot each here was 1.6 MiB at 100,000 items).
    `size` is UNSIZED for a video whose listing gave none, until `Tree.sized` learns it."""

    __slots__ = (
        "entry",
        "inode",
        "instance",
        "lookups",
        "name",
        "parent",
        "size",
    )

    def __init__(self, inode: int, parent: int, name: str, instance: str | None, entry: Entry | None) -> None:
        self.inode = inode
        self.parent = parent
        self.name = name
        self.instance = instance  # None only for the mount root
        self.entry = entry  # None only for the mount root
        self.size = (UNSIZED if entry.size is None else entry.size) if isinstance(entry, Video) else 0
        self.lookups = 0

    @property
    def is_dir(self) -> bool:
        return not isinstance(self.entry, Video)

    @property
    def video(self) -> Video:
        if not isinstance(self.entry, Video):
            raise IsDirectoryError(f"{self.name} is a directory")
        return self.entry

    @property
    def folder(self) -> Folder:
        if not isinstance(self.entry, Folder):
            raise NotDirectoryError(f"{self.name} is not a directory")
        return self.entry

    @property
    def key(self) -> tuple[str | None, bool, str]:
        return (self.instance, self.is_dir, self.entry.remote_id if self.entry is not None else "")

    @property
    def mtime(self) -> float:
        mtime = getattr(self.entry, "mtime", None)
        return float(mtime) if mtime is not None else 0.0

    @property
    def xattrs(self) -> Mapping[str, str]:
        if self.entry is None:
            return {}
        extra = self.entry.xattrs if isinstance(self.entry, Video) else self.entry.extra
        values = dict(extra.items())  # not dict(extra): one lookup per key
        values["remote_id"] = self.entry.remote_id
        if self.instance:
            values["provider"] = self.instance
        return values


@dataclass(eq=False, slots=True)
class Directory:
    # Sorted by name (the order readdir gives) and found by bisection: a dict of them by name was 3 MiB more
    # at 100,000. Tuples: never changed once built (a listing that changes makes a new _Directory), so an
    # open directory's handle holds `nodes` itself; and 60 B less than lists a directory (VALT: 100,000 of
    # one video each).
    names: tuple[str, ...] = ()
    nodes: tuple[Node, ...] = ()  # beside `names`
    hidden: tuple[HiddenItem, ...] = ()
    built_from: object = None  # the Listing object these children were built from
    ahead_to: int = 0  # children before this position were looked at for directory readahead
    sizes_asked: int = 0  # sizes `Tree.sized` was asked for here (SIZED_AHEAD_AFTER: the rest ahead)
    sizing_ahead: bool = False  # the rest of its sizes are being learned ahead of a walker

    def current(self, listing: object) -> bool:
        return self.built_from is listing

    @classmethod
    def of(
        cls, nodes: list[Node], hidden: tuple[HiddenItem, ...] = (), built_from: object = None
    ) -> Directory:
        """The directory of `nodes` (each name once), which are sorted here."""
        nodes.sort(key=attrgetter("name"))
        return cls(tuple([node.name for node in nodes]), tuple(nodes), hidden, built_from)

    def child(self, name: str) -> Node | None:
        at = bisect.bisect_left(self.names, name)
        return self.nodes[at] if at < len(self.names) and self.names[at] == name else None


class NamingItems(Sequence[tuple[str, str, bool, str | None]]):
    """Entries as `name_entries` reads them, (id, raw name, is a directory, content type), each made when
    read: a list of them all was 7 MiB more at the end of a 100,000-entry directory's build."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Sequence[Entry]) -> None:
        self._entries = entries

    @staticmethod
    def _item(entry: Entry) -> tuple[str, str, bool, str | None]:
        return (entry.remote_id, entry.name, isinstance(entry, Folder), getattr(entry, "content_type", None))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[str, str, bool, str | None]]:
        return map(self._item, self._entries)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str, bool, str | None]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, str, bool, str | None]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, str, bool, str | None] | list[tuple[str, str, bool, str | None]]:
        if isinstance(index, slice):
            return [self._item(entry) for entry in self._entries[index]]
        return self._item(self._entries[index])


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "ROOT_INODE",
    "UNSIZED",
    "Directory",
    "NamingItems",
    "Node",
    "stable_inode",
]
