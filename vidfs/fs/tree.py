"""Inodes: a stable number for every remote item, a name in its directory, and kernel lookup counts.

Inode numbers are a hash of (provider instance, kind, remote id), so the same video keeps its inode across
listings and remounts (rsync and players that remember inodes stay happy). A collision (two keys, one
hash) is resolved by re-hashing with a counter; it is deterministic for a given order of discovery.

Directory contents come from `MetadataCache` listings; display names from `naming.name_entries`, decided
by remote id, so they do not depend on the order the API lists things in.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from vidfs.catalog.listings import MetadataCache
from vidfs.catalog.naming import name_entries
from vidfs.errors import NotFoundError, RemoteError, VidfsError
from vidfs.model import Folder, HiddenItem, Video
from vidfs.providers.base import Provider

log = logging.getLogger(__name__)

ROOT_INODE = 1
FILE_MODE = stat.S_IFREG | 0o444
DIR_MODE = stat.S_IFDIR | 0o555


def stable_inode(instance: str, kind: str, remote_id: str, salt: int = 0) -> int:
    digest = hashlib.blake2b(f"{instance}\0{kind}\0{remote_id}\0{salt}".encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little") & ((1 << 63) - 1)
    return value if value > ROOT_INODE else value + 2


@dataclass(eq=False)
class Node:
    inode: int
    parent: int
    name: str
    instance: str | None  # None only for the mount root
    entry: Folder | Video | None  # None only for the mount root
    size: int = 0
    etag: str | None = None
    lookups: int = 0

    @property
    def is_dir(self) -> bool:
        return not isinstance(self.entry, Video)

    @property
    def video(self) -> Video:
        if not isinstance(self.entry, Video):
            raise NotFoundError(f"{self.name} is not a file")
        return self.entry

    @property
    def mtime(self) -> float:
        mtime = getattr(self.entry, "mtime", None)
        return float(mtime) if mtime is not None else 0.0

    @property
    def xattrs(self) -> Mapping[str, str]:
        if self.entry is None:
            return {}
        values = dict(self.entry.extra)
        values["remote_id"] = self.entry.remote_id
        if self.instance:
            values["provider"] = self.instance
        return values


@dataclass(eq=False)
class _Directory:
    names: dict[str, int] = field(default_factory=dict)
    hidden: tuple[HiddenItem, ...] = ()
    built_from: object = None  # the Listing object these names were built from
    retry_at: float | None = None  # some sizes could not be learned: build again after this instant

    def current(self, listing: object) -> bool:
        return self.built_from is listing and (self.retry_at is None or time.monotonic() < self.retry_at)


class Tree:
    def __init__(
        self, providers: Mapping[str, Provider], metadata: MetadataCache, *, mounted_at: float | None = None
    ) -> None:
        self.providers = dict(providers)
        self.metadata = metadata
        self.mounted_at = mounted_at or time.time()
        self.nodes: dict[int, Node] = {}
        self._keys: dict[int, tuple[str, str, str]] = {}
        self._dirs: dict[int, _Directory] = {}
        self._build_locks: dict[int, trio.Lock] = {}
        root = Node(ROOT_INODE, ROOT_INODE, "", None, None)
        self.nodes[ROOT_INODE] = root
        names: dict[str, int] = {}
        for instance, provider in self.providers.items():
            node = self._node_for(instance, provider.root(), ROOT_INODE, instance)
            names[instance] = node.inode
        self._dirs[ROOT_INODE] = _Directory(names=names, built_from="static")

    # --------------------------------------------------------------------------------------- inodes
    def _inode_for(self, instance: str, kind: str, remote_id: str) -> int:
        key = (instance, kind, remote_id)
        salt = 0
        while True:
            inode = stable_inode(instance, kind, remote_id, salt)
            owner = self._keys.get(inode)
            if owner is None or owner == key:
                self._keys[inode] = key
                return inode
            salt += 1

    def _node_for(self, instance: str, entry: Folder | Video, parent: int, name: str) -> Node:
        kind = "v" if isinstance(entry, Video) else "d"
        inode = self._inode_for(instance, kind, entry.remote_id)
        node = self.nodes.get(inode)
        if node is None:
            node = self.nodes[inode] = Node(inode, parent, name, instance, entry)
        else:
            node.parent, node.name, node.entry = parent, name, entry
        if isinstance(entry, Video) and entry.size is not None:
            node.size = entry.size
        return node

    def get(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise NotFoundError(f"inode {inode} is unknown")
        return node

    def provider_of(self, node: Node) -> Provider:
        if node.instance is None:
            raise NotFoundError("the mount root has no provider")
        return self.providers[node.instance]

    # ---------------------------------------------------------------------------------- directories
    async def children(self, inode: int, *, max_age: float | None = None) -> list[Node]:
        directory = await self._directory(inode, max_age=max_age)
        return [self.nodes[child] for _, child in sorted(directory.names.items())]

    async def hidden(self, inode: int) -> tuple[HiddenItem, ...]:
        return (await self._directory(inode)).hidden

    async def lookup(self, parent: int, name: str) -> Node:
        directory = await self._directory(parent)
        child = directory.names.get(name)
        if child is None and self.get(parent).instance is not None:
            # A name we don't know: the listing may predate the item. Refresh, at most once per negative_ttl.
            node = self.get(parent)
            assert isinstance(node.entry, Folder)
            age = self.metadata.age(node.instance or "", node.entry.remote_id)
            if age is not None and age >= self.metadata.negative_ttl:
                directory = await self._directory(parent, max_age=self.metadata.negative_ttl)
                child = directory.names.get(name)
        if child is None:
            raise NotFoundError(f"{name!r} not found")
        return self.nodes[child]

    async def _directory(self, inode: int, *, max_age: float | None = None) -> _Directory:
        node = self.get(inode)
        if not node.is_dir:
            raise NotFoundError(f"{node.name} is not a directory")
        if node.instance is None:
            return self._dirs[ROOT_INODE]
        assert isinstance(node.entry, Folder)
        provider = self.providers[node.instance]
        listing = await self.metadata.listing(node.instance, provider, node.entry, max_age=max_age)
        directory = self._dirs.get(inode)
        if directory is not None and directory.current(listing):
            return directory
        lock = self._build_locks.setdefault(inode, trio.Lock())
        async with lock:
            directory = self._dirs.get(inode)
            if directory is not None and directory.current(listing):
                return directory
            directory = await self._build(node, provider, listing.entries, listing.hidden)
            directory.built_from = listing
            self._dirs[inode] = directory
            return directory

    async def _build(
        self,
        parent: Node,
        provider: Provider,
        entries: tuple[Folder | Video, ...],
        hidden: tuple[HiddenItem, ...],
    ) -> _Directory:
        instance = parent.instance
        assert instance is not None
        sizes: dict[str, tuple[int, str | None]] = {}
        unknown = [e for e in entries if isinstance(e, Video) and e.size is None]
        failed: list[HiddenItem] = []

        async def learn(video: Video) -> None:
            try:
                probe = await self.metadata.probe(instance, provider, video)
            except VidfsError as exc:
                log.warning("%s: %r hidden: its size is unknown (%s)", instance, video.name, exc)
                failed.append(HiddenItem(video.remote_id, video.name, f"size unknown: {exc}"))
                return
            sizes[video.remote_id] = (probe.size, probe.etag)

        if unknown:
            async with trio.open_nursery() as nursery:
                for video in unknown:
                    nursery.start_soon(learn, video)
        shown = [
            e for e in entries if not (isinstance(e, Video) and e.size is None and e.remote_id not in sizes)
        ]
        names = name_entries(
            [
                (
                    e.remote_id,
                    e.name,
                    isinstance(e, Folder),
                    e.content_type if isinstance(e, Video) else None,
                )
                for e in shown
            ]
        )
        directory = _Directory(hidden=tuple(hidden) + tuple(failed))
        if failed:  # a transient failure must not hide a file for the whole listing TTL
            directory.retry_at = time.monotonic() + self.metadata.negative_ttl
        for entry, name in zip(shown, names, strict=True):
            node = self._node_for(instance, entry, parent.inode, name)
            if isinstance(entry, Video):
                if entry.remote_id in sizes:
                    node.size, node.etag = sizes[entry.remote_id]
                elif entry.size is not None:
                    node.size = entry.size
                    probe = self.metadata.known_probe(instance, entry)
                    node.etag = entry.etag or (probe.etag if probe else None)
            directory.names[name] = node.inode
        return directory

    async def resolve_path(self, path: str) -> Node:
        """The node at a '/'-separated path below the mount root (for --subtree)."""
        node = self.get(ROOT_INODE)
        for part in [p for p in path.split("/") if p]:
            node = await self.lookup(node.inode, part)
        return node

    # --------------------------------------------------------------------------------- lookup counts
    def remember(self, node: Node) -> None:
        node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        node = self.nodes.get(inode)
        if node is not None:
            node.lookups = max(0, node.lookups - count)

    def refresh_parent(self, node: Node) -> None:
        """After a 404 or a changed file: the parent's listing is stale."""
        parent = self.nodes.get(node.parent)
        if parent is not None and parent.instance is not None and isinstance(parent.entry, Folder):
            self.metadata.invalidate(parent.instance, parent.entry.remote_id)


__all__ = ["DIR_MODE", "FILE_MODE", "ROOT_INODE", "Node", "RemoteError", "Tree", "stable_inode"]
