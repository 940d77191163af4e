"""The filesystem model: what `operations` calls. Open files and directories, reads through the cache,
attributes, xattrs.

Everything here speaks in inodes, byte ranges and our exceptions; `operations` only translates to pyfuse3.

An open directory is a snapshot of its children taken at `opendir` and kept until `releasedir`: `readdir`
calls page through that snapshot by position, so a listing refreshed between two `readdir` calls of a large
directory (an AIPIX camera gaining archives) can never make a reader skip or repeat a name, and a directory
of 100,000 entries costs O(n) in total across its `readdir` calls.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cachetools import LRUCache

from vidfs.errors import NotFoundError, StaleError, VidfsError
from vidfs.fs.tree import DIR_MODE, FILE_MODE, ROOT_INODE, UNSIZED, Node, Tree
from vidfs.http.client import HttpClient
from vidfs.io.block_cache import BlockCache, BlockStore
from vidfs.io.leases import Resolver
from vidfs.io.readahead import Readahead
from vidfs.io.remote_file import FileKey, RemoteFile
from vidfs.model import Video
from vidfs.stats import Stats
from vidfs.tasks import Progress, Spawner

log = logging.getLogger(__name__)

XATTR_PREFIX = "user.vidfs."
STATS_XATTR = "user.vidfs.stats"  # on the mount root: the daemon's statistics as JSON (`vidfs stats`)
CONTROL_XATTR = "user.vidfs.control"  # on the mount root: the path of the daemon's control socket
MAX_MOOV_PREFETCH = 32 << 20  # a moov larger than this is read on demand
VIDEO_CONTAINERS = (".mp4", ".m4v", ".mov", ".3gp", ".insv")


class Attributes(NamedTuple):
    """What `stat` shows of a node. A named tuple, not a frozen dataclass: one is made per entry of every
    readdir, and a frozen dataclass's field-by-field `__init__` took twice as long (2.8 against 1.4 µs)."""

    inode: int
    mode: int
    size: int  # UNSIZED (-1): not known yet (`vidfs.fs.tree`); the kernel must ask again before using it
    mtime: float
    nlink: int
    uid: int
    gid: int
    block_size: int


_make_attributes = tuple.__new__


@dataclass(eq=False)
class OpenFile:
    node: Node
    file: RemoteFile
    prefetcher: Readahead


@dataclass(frozen=True, slots=True)
class OpenDirectory:
    """A directory from `opendir` to `releasedir`: its children as they were at the open, and the inode
    numbers its listing gives "." and ".." (itself and its parent; at the mount root, itself twice)."""

    dots: tuple[int, int]
    children: Sequence[Node]

    def children_from(self, start: int) -> Iterator[Node]:
        """The children from position `start` on (stable for the life of the handle), taken lazily: the
        kernel asks for a big directory a page of entries at a time, and a copy of the rest at each ask made
        listing 100,000 entries quadratic (10% of a remount walk's daemon samples)."""
        children = self.children
        return map(children.__getitem__, range(start, len(children)))


WARMED_LIMIT = 4096  # files whose container head was fetched at first open (a bounded memory of it)
# Inodes whose pages the kernel may cache, with what they were read from. One forgotten here only costs the
# kernel's cached pages of it at the next open (`keep_cache` false), never wrong bytes.
PAGE_CACHE_LIMIT = 65536


class VideoFS:
    def __init__(
        self,
        *,
        tree: Tree,
        cache: BlockCache,
        http: HttpClient,
        resolver: Resolver,
        stats: Stats,
        nursery: Spawner,
        readahead_max: int,
        root_inode: int = ROOT_INODE,
        store: BlockStore | None = None,
    ) -> None:
        self.tree = tree
        self._busy = tree.listings.lull.busy  # each request: refreshes wait for a lull (`Lull`)
        self.cache = cache
        self.http = http
        self.resolver = resolver
        self.stats = stats
        self._nursery = nursery
        self.readahead_max = readahead_max
        self.store = store
        self.control_path: str | None = None  # the control socket, published as an xattr on the root
        self.root_inode = root_inode  # the node shown at the mount root (--subtree moves it)
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._handles: dict[int, OpenFile] = {}
        self._dir_handles: dict[int, OpenDirectory] = {}
        self._files: dict[FileKey, tuple[RemoteFile, int]] = {}
        self._warmed: dict[FileKey, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._page_cache: LRUCache[int, str] = LRUCache(maxsize=PAGE_CACHE_LIMIT)
        self._next_fh = itertools.count(1)

    # ---------------------------------------------------------------------------------- inode mapping
    def to_node_inode(self, fuse_inode: int) -> int:
        return self.root_inode if fuse_inode == ROOT_INODE else fuse_inode

    def to_fuse_inode(self, node_inode: int) -> int:
        return ROOT_INODE if node_inode == self.root_inode else node_inode

    def attributes(self, node: Node) -> Attributes:
        """What `stat` shows of `node`. Asked for every entry of every readdir, so written out: the named
        tuple made by `tuple.__new__` (its own `__new__` is a Python function) and `Node`'s properties read
        inline."""
        inode = node.inode
        if inode == self.root_inode:
            inode = ROOT_INODE
        entry = node.entry
        if isinstance(entry, Video):
            mtime = entry.mtime
            fields = (inode, FILE_MODE, node.size, 0.0 if mtime is None else float(mtime), 1)
        else:
            # A folder the API gives no time for shows the mount time (stable while mounted), never 1970.
            fields = (inode, DIR_MODE, 0, node.mtime or self.tree.mounted_at, 2)
        return _make_attributes(Attributes, (*fields, self.uid, self.gid, self.cache.block_size))

    # ------------------------------------------------------------------------------------ namespace
    async def lookup(self, parent: int, name: str, *, progress: Progress | None = None) -> Node:
        self._busy()
        if name == ".":
            return self.tree.get(self.to_node_inode(parent))
        if name == "..":
            return self.tree.get(self._parent_of(self.to_node_inode(parent)))
        node = await self.tree.lookup(self.to_node_inode(parent), name, progress=progress)
        # A name looked up is about to be used (stat, open): its answer carries the size.
        return await self.tree.sized(node, progress=progress)

    def remember(self, node: Node) -> None:
        """The kernel was given `node` (lookup or readdirplus reply): count it."""
        self.tree.remember(node)

    def getattr(self, inode: int) -> Attributes:
        """What `stat` shows, without waiting: its size is UNSIZED if not known yet (then `getattr_sized`)."""
        self._busy()
        return self.attributes(self.tree.get(self.to_node_inode(inode)))

    async def getattr_sized(self, inode: int, *, progress: Progress | None = None) -> Attributes:
        node = self.tree.get(self.to_node_inode(inode))
        return self.attributes(await self.tree.sized(node, progress=progress))

    async def opendir(self, inode: int, *, progress: Progress | None = None) -> int:
        """Snapshot the children; `readdir` pages through it until `releasedir`. `progress`: see
        `Tree._directory_of`."""
        self._busy()
        node_inode = self.to_node_inode(inode)
        return self._dir_handle(node_inode, await self.tree.children(node_inode, progress=progress))

    def opendir_now(self, inode: int) -> int | None:
        """`opendir` when it needs no wait, else None."""
        self._busy()
        node_inode = self.to_node_inode(inode)
        children = self.tree.children_now(node_inode)
        return None if children is None else self._dir_handle(node_inode, children)

    def _parent_of(self, node_inode: int) -> int:
        """The node ".." names: the parent, except at the mount root, whose ".." is itself."""
        return node_inode if node_inode == self.root_inode else self.tree.get(node_inode).parent

    def _dir_handle(self, node_inode: int, children: Sequence[Node]) -> int:
        fh = next(self._next_fh)
        dots = (self.to_fuse_inode(node_inode), self.to_fuse_inode(self._parent_of(node_inode)))
        self._dir_handles[fh] = OpenDirectory(dots, children)
        return fh

    def readdir(self, fh: int) -> OpenDirectory:
        """The directory open as `fh`, for `readdir` to page through."""
        self._busy()
        directory = self._dir_handles.get(fh)
        if directory is None:
            raise NotFoundError("stale directory handle")
        return directory

    def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    def forget(self, inode: int, count: int) -> None:
        self.tree.forget(self.to_node_inode(inode), count)

    # ------------------------------------------------------------------------------------ open/read
    async def open(self, inode: int) -> tuple[int, bool]:
        """Open a file; returns (handle, keep_cache)."""
        node = await self.tree.sized(self.tree.get(self.to_node_inode(inode)))
        video = node.video
        provider = self.tree.provider_of(node)
        assert node.instance is not None
        etag = self.tree.etag_of(node)
        key = FileKey(node.instance, video.remote_id, video.fingerprint)
        shared = self._files.get(key)
        if shared is None:
            file = RemoteFile(
                instance=node.instance,
                provider=provider,
                video=video,
                size=node.size,
                http=self.http,
                resolver=self.resolver,
                etag=etag,
            )
            self._files[key] = (file, 1)
        else:
            file = shared[0]
            self._files[key] = (file, shared[1] + 1)
        fh = next(self._next_fh)
        window = min(self.readahead_max, self.cache.max_readahead)
        prefetcher = Readahead(block_size=self.cache.block_size, max_window=window)
        self._handles[fh] = OpenFile(node, file, prefetcher)
        self.tree.hold(node)
        # The kernel's cached pages of this inode are kept only while they are of the same bytes.
        fingerprint = f"{video.fingerprint}|{node.size}|{etag}"
        keep_cache = self._page_cache.get(node.inode) == fingerprint
        self._page_cache[node.inode] = fingerprint
        # By the name on the mount, which has the extension where the remote name lacks it (Hour One's).
        if key not in self._warmed and node.name.lower().endswith(VIDEO_CONTAINERS):
            self._warmed[key] = None
            if len(self._warmed) > WARMED_LIMIT:
                del self._warmed[next(iter(self._warmed))]
            self._nursery.start_soon(self._warm_container, file)
        self.stats.incr("files.opened")
        return fh, keep_cache

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        """A FUSE read's reply (see `BlockCache.read_reply`: valid until pyfuse3 has sent it)."""
        self._busy()
        handle = self._handles.get(fh)
        if handle is None:
            raise NotFoundError("stale file handle")
        file = handle.file
        if not self.cache.available(file.key, offset // self.cache.block_size):
            handle.prefetcher.missed(offset)
        ahead = handle.prefetcher.on_read(offset, size, file.size)
        if ahead is not None:
            start, end = ahead
            # Ahead of a read that misses: one request for both (the read's blocks join that fetch).
            self.cache.prefetch(file, min(start, offset) if start <= offset + size else start, end)
        try:
            data = await self.cache.read_reply(file, offset, size)
        except (StaleError, NotFoundError):
            # The file changed or vanished: forget what we knew (listing, size, URL) so the next open
            # starts afresh; this handle keeps failing rather than mixing old and new bytes.
            self.tree.refresh_parent(handle.node)
            if handle.node.instance is not None:
                self.tree.probes.forget(handle.node.instance, file.video)
                if file.video.size is None:  # its size was a HEAD's: the next stat or open asks again
                    handle.node.size = UNSIZED
                self.resolver.forget(handle.node.instance, file.video.remote_id)
            shared = self._files.get(file.key)
            if shared is not None and shared[0] is file:
                del self._files[file.key]  # new opens get a fresh RemoteFile (new size and ETag)
            # ...and the kernel must drop its cached pages of this inode at the next open, even when the
            # provider's fingerprint cannot tell the change (no ETag, no update time in the API).
            self._page_cache.pop(handle.node.inode, None)
            raise
        self.stats.incr("bytes.read", len(data))
        return data

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        self.tree.release(handle.node)
        key = handle.file.key
        shared = self._files.get(key)
        if shared is None or shared[0] is not handle.file:
            return  # that file was retired (it changed); a newer one may hold the key
        if shared[1] <= 1:
            del self._files[key]
        else:
            self._files[key] = (shared[0], shared[1] - 1)

    async def _warm_container(self, file: RemoteFile) -> None:
        """MP4/MOV: fetch the head and, when the moov atom sits after the media data, the moov itself, so a
        probe (ffprobe, a player's open) costs a couple of requests instead of a seek storm."""
        try:
            head_len = min(file.size, max(self.cache.block_size, 64 * 1024))
            head = await self.cache.read(file, 0, head_len, reader=False)
            moov = find_moov(head, file.size)
            if moov is not None and moov[0] >= head_len:
                self.stats.incr("prefetch.moov_tail")
                self.cache.prefetch(file, moov[0], min(file.size, moov[0] + min(moov[1], MAX_MOOV_PREFETCH)))
        except VidfsError as exc:
            log.debug("container warm-up of %s failed: %s", file.key.remote_id, exc)

    # ---------------------------------------------------------------------------------------- xattrs
    def xattr(self, inode: int, name: str) -> str | None:
        """One xattr's value, None if it has none. A name outside ours is answered without the values (a
        saved video's are read from the snapshot when asked: `vidfs.catalog.extras`); one outside the
        `user.` namespace does not get here (`vidfs.fs.operations.USER_NAMESPACE`)."""
        if not name.startswith(XATTR_PREFIX):
            return None
        return self.xattrs(inode).get(name)

    def xattrs(self, inode: int) -> Mapping[str, str]:
        node = self.tree.get(self.to_node_inode(inode))
        values = {XATTR_PREFIX + key: value for key, value in node.xattrs.items()}
        if inode == ROOT_INODE:
            values[STATS_XATTR] = json.dumps(self.stats_document(), separators=(",", ":"))
            if self.control_path:
                values[CONTROL_XATTR] = self.control_path
        return values

    def stats_document(self) -> dict[str, Any]:
        """What `vidfs stats` shows: the daemon's counters, cache levels and open files."""
        document = self.stats.snapshot()
        document["memory_cache"] = self.cache.statistics()
        if self.store is not None:
            document["disk_cache"] = self.store.statistics()
        document["leases"] = self.resolver.statistics()
        document["open_files"] = len(self._handles)
        document["open_directories"] = len(self._dir_handles)
        document["inodes"] = len(self.tree.nodes)
        document["tree"] = self.tree.statistics()
        document["listings"] = self.tree.listings.statistics()
        document["probes"] = self.tree.probes.statistics()
        document["http"] = self.http.statistics()
        return document

    def statfs(self) -> dict[str, int]:
        return {"block_size": self.cache.block_size, "files": len(self.tree.nodes)}


def find_moov(head: bytes, file_size: int) -> tuple[int, int] | None:
    """Walk top-level MP4 boxes from the head; return (offset, size) of `moov` if it can be located.

    When `mdat` comes first, its header tells where the next box starts; we assume that box is `moov` (the
    common layout of recordings that were not "fast-started")."""
    offset = 0
    while offset + 8 <= file_size:
        if offset + 16 > len(head):
            return (offset, file_size - offset) if offset >= len(head) else None
        size, kind = struct.unpack(">I4s", head[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", head[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = file_size - offset
        if size < 8:
            return None
        if kind == b"moov":
            return offset, size
        offset += size
    return None
