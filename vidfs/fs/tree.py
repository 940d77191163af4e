"""Inodes: a stable number for every remote item, a name in its directory, and what the kernel holds.

Numbers. An inode is a hash of (provider instance, kind, remote id), so the same video keeps its inode
across listings and remounts (rsync and players that remember inodes stay happy). Should two items ever
hash alike (about one chance in 10⁹ for 100,000 items), the later one is re-hashed with a counter.

Names. A directory's children come from its listing (`vidfs.catalog.listings`); their display names from
`naming.name_entries`, decided by remote id, not by the order the API lists things in. Sizes the listing
lacks are learned by `vidfs.catalog.probes` while the directory is built; an item whose size cannot be
learned just now is hidden, and the directory is built again after `negative_ttl`.

Memory. A built directory holds one `Node` per child. The table the kernel's requests go through,
`nodes`, holds only what the kernel knows (its lookup count, from `lookup` and `readdirplus` replies, is
above zero), what an open file holds, and the roots. When the kernel forgets a node and no open file
holds it, it leaves `nodes`, and a directory it forgets also drops its built children (they are built
again from the cached listing, without a request, if the kernel asks again). So a long mount over a
large catalog does not grow with every name ever looked up.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import cast, overload

import trio
from xxhash import xxh3_64_intdigest

from vidfs.catalog.listings import ListingCache
from vidfs.catalog.naming import name_entries
from vidfs.catalog.probes import Probe, SizeProbes
from vidfs.errors import IsDirectoryError, NotDirectoryError, NotFoundError, RemoteIOError, VidfsError
from vidfs.model import Entry, Folder, HiddenItem, Listing, Video
from vidfs.providers.base import Provider
from vidfs.tasks import Progress, Spawner, for_each

log = logging.getLogger(__name__)

ROOT_INODE = 1
READ_AHEAD_DIRECTORIES = 256  # subdirectories listed ahead when a directory is listed
PROBE_WORKERS = 80  # size probes of one directory asked at once, at most (above SizeProbes' highest window)
WARM_DIRECTORIES = 4096  # directories built ahead that no one has looked up yet, at most
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
    tree, as are the kernel's cached pages by `VideoFS`: a slot each here was 1.6 MiB at 100,000 items)."""

    __slots__ = (
        "entry",
        "etag",
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
        self.size = (entry.size or 0) if isinstance(entry, Video) else 0
        self.etag: str | None = None
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


@dataclass(eq=False)
class _Build:
    """A directory being built; its waiters wait on `done`, and hear of each size learned meanwhile
    (`watchers`: a FUSE request waiting for a big directory moves its deadline on while sizes arrive)."""

    done: trio.Event = field(default_factory=trio.Event)
    directory: _Directory | None = None
    error: BaseException | None = None
    watchers: list[Progress] = field(default_factory=list)

    def progressed(self) -> None:
        for watcher in self.watchers:
            watcher()


@dataclass(eq=False, slots=True)
class _Directory:
    # Sorted by name (the order readdir gives) and found by bisection: a dict of them by name was 3 MiB more
    # at 100,000. Tuples: never changed once built (a listing that changes makes a new _Directory), so an
    # open directory's handle holds `nodes` itself; and 60 B less than lists a directory (VALT: 100,000 of
    # one video each).
    names: tuple[str, ...] = ()
    nodes: tuple[Node, ...] = ()  # beside `names`
    hidden: tuple[HiddenItem, ...] = ()
    built_from: object = None  # the Listing object these children were built from
    retry_at: float | None = None  # some sizes could not be learned: build again after this instant
    ahead_to: int = 0  # children before this position were looked at for directory readahead

    def current(self, listing: object) -> bool:
        return self.built_from is listing and (self.retry_at is None or trio.current_time() < self.retry_at)

    @classmethod
    def of(
        cls, nodes: list[Node], hidden: tuple[HiddenItem, ...] = (), built_from: object = None
    ) -> _Directory:
        """The directory of `nodes` (each name once), which are sorted here."""
        nodes.sort(key=attrgetter("name"))
        return cls(tuple([node.name for node in nodes]), tuple(nodes), hidden, built_from)

    def child(self, name: str) -> Node | None:
        at = bisect.bisect_left(self.names, name)
        return self.nodes[at] if at < len(self.names) and self.names[at] == name else None


class _NamingItems(Sequence[tuple[str, str, bool, str | None]]):
    """Entries as `name_entries` reads them, (id, raw name, is a directory, content type), each made when
    read: a list of them all was 7 MiB more at the end of a 100,000-entry directory's build."""

    __slots__ = ("_entries",)

    def __init__(self, entries: list[Entry]) -> None:
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


class Tree:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        listings: ListingCache,
        probes: SizeProbes,
        *,
        mounted_at: float | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.listings = listings
        self.probes = probes
        self.mounted_at = mounted_at or time.time()
        self.nodes: dict[int, Node] = {}  # what the kernel knows, open files, and the roots
        self._pinned: set[int] = {ROOT_INODE}
        self._opens: dict[int, int] = {}  # inode → the open files holding it (none: not here)
        self._dirs: dict[int, _Directory] = {}
        self._building: dict[int, _Build] = {}
        self._spawner: Spawner | None = None
        self._warm: dict[
            int, None
        ] = {}  # directories built ahead of a walker (insertion order: oldest first)
        root = Node(ROOT_INODE, ROOT_INODE, "", None, None)
        self.nodes[ROOT_INODE] = root
        tops: list[Node] = []
        for instance, provider in sorted(self.providers.items()):
            node = self._new_node(instance, provider.root(), ROOT_INODE, instance, {})
            self.nodes[node.inode] = node
            self._pinned.add(node.inode)
            tops.append(node)
        self._dirs[ROOT_INODE] = _Directory.of(tops, built_from="static")

    # ------------------------------------------------------------------------------------ inodes
    def _new_node(
        self, instance: str, entry: Entry, parent: int, name: str, taken: Mapping[int, Node]
    ) -> Node:
        is_dir = not isinstance(entry, Video)
        key = (instance, is_dir, entry.remote_id)
        salt = 0
        while True:
            inode = stable_inode(instance, "d" if is_dir else "v", entry.remote_id, salt)
            known = self.nodes.get(inode) or taken.get(inode)
            if known is None:
                return Node(inode, parent, name, instance, entry)
            if known.key == key:  # the kernel (or this build) knows it: keep one object per item
                known.parent, known.name, known.entry = parent, name, entry
                return known
            salt += 1

    def get(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise NotFoundError(f"inode {inode} is unknown")
        return node

    def provider_of(self, node: Node) -> Provider:
        if node.instance is None:
            raise NotFoundError("the mount root has no provider")
        return self.providers[node.instance]

    # ------------------------------------------------------------------------- what the kernel holds
    def remember(self, node: Node, count: int = 1) -> None:
        """The kernel was given this node (a lookup or readdirplus reply)."""
        node.lookups += count
        self.nodes[node.inode] = node

    def forget(self, inode: int, count: int) -> None:
        node = self.nodes.get(inode)
        if node is None:
            return
        node.lookups = max(0, node.lookups - count)
        self._maybe_drop(node)

    def hold(self, node: Node) -> None:
        """An open file holds `node` (the kernel holds it too, but a forget may race with a release)."""
        self._opens[node.inode] = self._opens.get(node.inode, 0) + 1
        self.nodes[node.inode] = node

    def release(self, node: Node) -> None:
        opens = self._opens.pop(node.inode, 0) - 1
        if opens > 0:
            self._opens[node.inode] = opens
        self._maybe_drop(node)

    def _held(self, node: Node) -> bool:
        """The kernel, an open file, or the mount (a root) holds `node`."""
        return bool(node.lookups) or node.inode in self._opens or node.inode in self._pinned

    def _maybe_drop(self, node: Node) -> None:
        if self._held(node):
            return
        if self.nodes.get(node.inode) is node:
            del self.nodes[node.inode]
        self._dirs.pop(node.inode, None)
        self._warm.pop(node.inode, None)

    # ----------------------------------------------------------------------------------- directories
    async def children(
        self, inode: int, *, max_age: float | None = None, progress: Progress | None = None
    ) -> Sequence[Node]:
        return self._listed(await self._directory(inode, max_age=max_age, progress=progress), inode)

    def children_now(self, inode: int) -> Sequence[Node] | None:
        """The children if they are known without waiting (the listing answers at once and the directory is
        built from it), else None: then `children` waits. The warm walk's `opendir`, without a deadline."""
        node = self.get(inode)
        if node.instance is None:
            directory = self._dirs[ROOT_INODE]
        else:
            provider = self.providers[node.instance]
            listing = self.listings.listing_now(node.instance, provider, node.folder)
            found = self._dirs.get(inode)
            if not isinstance(listing, Listing) or found is None or not found.current(listing):
                return None
            directory = found
        return self._listed(directory, inode)

    def _listed(self, directory: _Directory, inode: int) -> Sequence[Node]:
        """A directory's children in name order, for someone who listed it: its subdirectories are read
        ahead, and so are those of its parent's after it (a walker goes there next)."""
        self._read_ahead(directory)
        node = self.nodes.get(inode)
        parent = self._dirs.get(node.parent) if node is not None and node.parent != inode else None
        if node is not None and parent is not None and parent.ahead_to < len(parent.nodes):
            self._read_ahead(
                parent, until=bisect.bisect_right(parent.names, node.name) + READ_AHEAD_DIRECTORIES
            )
        return directory.nodes

    # ------------------------------------------------------------------------------ directory readahead
    def attach(self, spawner: Spawner) -> None:
        """List subdirectories ahead of a walker from now on (see `_read_ahead`)."""
        self._spawner = spawner

    def _read_ahead(self, directory: _Directory, *, until: int | None = None) -> None:
        """Start listing (and sizing) subdirectories of `directory` in the background: its first
        READ_AHEAD_DIRECTORIES when it is listed (once per built directory), and all before position `until`
        when a walker lists one of them. A walker (`ls -R`, `find`, rsync) goes into them one after another,
        each may cost requests (a VALT record's URLs and HEADs; a VALT room's records in layout "rooms"):
        asked ahead, within the listing cache's and the probes' limits, they are ready when it gets there.
        With only the first ones asked, 100,000 VALT videos in 1,000 rooms were listed a room at a time past
        the 256th (603.7 s cold at 20 ms, the daemon busy 32% of it). `ahead_to` only grows."""
        if self._spawner is None or (until is None and directory.ahead_to):
            return
        nodes = directory.nodes
        stop = len(nodes) if until is None else min(until, len(nodes))
        position = directory.ahead_to
        started = 0
        while position < stop:
            child = nodes[position]
            position += 1
            if not child.is_dir or child.inode in self._dirs or child.inode in self._building:
                continue
            self._warm[child.inode] = None
            while len(self._warm) > WARM_DIRECTORIES:
                self._forget_warm(next(iter(self._warm)))
            self._spawner.start_soon(self._warm_up, child)
            started += 1
            if until is None and started >= READ_AHEAD_DIRECTORIES:
                break
        directory.ahead_to = max(directory.ahead_to, position)

    async def _warm_up(self, node: Node) -> None:
        try:
            await self._directory_of(node, ahead=True)
        except VidfsError as exc:  # the walker gets its own answer when it gets there
            log.debug("%s: listing ahead of %r failed: %s", node.instance, node.name, exc)
            self._forget_warm(node.inode)

    def _forget_warm(self, inode: int) -> None:
        self._warm.pop(inode, None)
        node = self.nodes.get(inode)
        if node is None or not self._held(node):
            self._dirs.pop(inode, None)

    async def hidden(self, inode: int) -> tuple[HiddenItem, ...]:
        return (await self._directory(inode)).hidden

    async def lookup(self, parent: int, name: str, *, progress: Progress | None = None) -> Node:
        directory = await self._directory(parent, progress=progress)
        child = directory.child(name)
        if child is None and self.get(parent).instance is not None:
            # A name we don't know: the listing may predate the item. Refresh, at most once per negative_ttl.
            node = self.get(parent)
            age = self.listings.age(node.instance or "", node.folder.remote_id)
            if age is not None and age >= self.listings.negative_ttl:
                directory = await self._directory(parent, max_age=self.listings.negative_ttl)
                child = directory.child(name)
        if child is None:
            raise NotFoundError(f"{name!r} not found")
        return child

    async def _directory(
        self, inode: int, *, max_age: float | None = None, progress: Progress | None = None
    ) -> _Directory:
        return await self._directory_of(self.get(inode), max_age=max_age, progress=progress)

    async def _directory_of(
        self,
        node: Node,
        *,
        max_age: float | None = None,
        ahead: bool = False,
        progress: Progress | None = None,
    ) -> _Directory:
        """The directory of `node`, built from a current listing. `ahead`: for directory readahead, whose
        listings wait their turn; any other caller's listing goes before those (ListingCache.listing).
        `progress` is called for each step of the listing (an HTTP answer) and each size the build learns
        while the caller waits."""
        inode = node.inode
        if node.instance is None:
            return self._dirs[ROOT_INODE]
        folder = node.folder
        provider = self.providers[node.instance]
        while True:
            listing = await self.listings.listing(
                node.instance, provider, folder, max_age=max_age, urgent=not ahead, progress=progress
            )
            directory = self._dirs.get(inode)
            if directory is not None and directory.current(listing):
                return directory
            build = self._building.get(inode)
            if build is None:  # one build at a time per directory
                build = self._building[inode] = _Build()
                run = functools.partial(self._run_build, node, provider, listing, build)
                if self._spawner is not None:
                    self._spawner.start_soon(run)
                else:
                    await run()
            if progress is None:
                await build.done.wait()
            else:
                build.watchers.append(progress)
                try:
                    await build.done.wait()
                finally:
                    build.watchers.remove(progress)
            if build.error is not None:
                raise build.error
            if build.directory is not None and build.directory.current(listing):
                return build.directory
            # built from an older listing than this caller's: look again

    async def _run_build(self, node: Node, provider: Provider, listing: Listing, build: _Build) -> None:
        """Build a directory (names, sizes). In the background when serving: a FUSE request that gives up
        (request_timeout) does not cancel it, so the sizes a big directory needs are all learned and the
        next `ls` finds it built."""
        try:
            directory = await self._build(node, provider, listing.entries, listing.hidden, build)
            directory.built_from = listing
            inode = node.inode
            if inode in self.nodes or self._held(node) or inode in self._warm:
                self._dirs[inode] = directory
            build.directory = directory
        except Exception as exc:
            build.error = exc
        except trio.Cancelled:
            build.error = RemoteIOError(f"{node.name}: listing cancelled")
            raise
        finally:
            del self._building[node.inode]
            build.done.set()

    async def _build(
        self,
        parent: Node,
        provider: Provider,
        entries: tuple[Entry, ...],
        hidden: tuple[HiddenItem, ...],
        build: _Build | None = None,
    ) -> _Directory:
        instance = parent.instance
        assert instance is not None
        failed, found = await self._learn_sizes(instance, provider, entries, build)
        # The answers are read from the probe table into a list beside the entries: a dict of them by remote
        # id was 5 MiB more at the end of a 100,000-entry directory's build, the daemon's peak.
        shown: list[Entry] = []
        answers: list[Probe | None] = []
        hidden_ids = {item.remote_id for item in failed}
        for entry, answer in zip(entries, found, strict=True):
            if answer is None and isinstance(entry, Video) and entry.size is None:
                # not learned, or forgotten since (the file changed): shown when it is
                if entry.remote_id not in hidden_ids:
                    failed.append(HiddenItem(entry.remote_id, entry.name, "size unknown: it changed"))
                continue
            shown.append(entry)
            answers.append(answer)
        names = name_entries(_NamingItems(shown))
        children = self._children(instance, parent.inode, shown, names, answers, checked=False)
        if children is None:  # two of them hashed alike (about once in 10⁹ directories of 100,000)
            children = self._children(instance, parent.inode, shown, names, answers, checked=True)
        assert children is not None
        directory = _Directory.of(children, hidden=tuple(hidden) + tuple(failed))
        if failed:  # a transient failure must not hide a file for the whole listing TTL
            directory.retry_at = trio.current_time() + self.listings.negative_ttl
        return directory

    def _children(
        self,
        instance: str,
        parent: int,
        shown: list[Entry],
        names: list[str],
        answers: list[Probe | None],
        *,
        checked: bool,
    ) -> list[Node] | None:
        """A directory's nodes. Unless `checked`, the nodes made here are not looked up among each
        other as they are made (a table of them all was 5 MiB at the peak of a 100,000-entry build): two
        alike are found afterwards, in a sorted list of their numbers, and then None is returned, for the
        caller to build them again `checked`, each looked up among those made before it."""
        taken: dict[int, Node] = {}
        children: list[Node] = []
        for entry, name, answer in zip(shown, names, answers, strict=True):
            node = self._new_node(instance, entry, parent, name, taken)
            if checked:
                taken[node.inode] = node
            if answer is not None:
                node.size, node.etag = answer.size, answer.etag
            elif isinstance(entry, Video) and entry.size is not None:
                node.size = entry.size
                node.etag = entry.etag
                if node.etag is None:  # an earlier HEAD may have told it
                    probe = self.probes.known(instance, entry)
                    node.etag = probe.etag if probe else None
            children.append(node)
        if not checked:
            numbers = sorted(node.inode for node in children)
            if any(a == b for a, b in itertools.pairwise(numbers)):
                return None
        return children

    async def _learn_sizes(
        self, instance: str, provider: Provider, entries: tuple[Entry, ...], build: _Build | None = None
    ) -> tuple[list[HiddenItem], list[Probe | None]]:
        """Learn the sizes the listing lacks: the videos whose size is unknown, and each entry's answer (None:
        a folder, a listed size), read once (read twice, 100,000 were 0.56 of a remount's 1.82 profiled build
        seconds), again only for those asked meanwhile, or all if one was forgotten meanwhile."""
        failed: list[HiddenItem] = []

        async def learn(video: Video) -> None:
            try:
                await self.probes.probe(instance, provider, video)
            except VidfsError as exc:
                log.warning("%s: %r hidden: its size is unknown (%s)", instance, video.name, exc)
                failed.append(HiddenItem(video.remote_id, video.name, f"size unknown: {exc}"))
                return
            if build is not None:
                build.progressed()

        # Known sizes (the snapshot's, after a remount) are not asked again, and without a task each: a walk
        # of VALT's 10,000 one-video records builds 10,000 directories.
        answers: list[Probe | None] = []
        pending: list[int] = []
        for position, entry in enumerate(entries):
            answer = None
            if isinstance(entry, Video) and entry.size is None:
                answer = self.probes.known(instance, entry)
                if answer is None:
                    pending.append(position)
            answers.append(answer)
        if pending:
            forgotten = self.probes.forgotten
            # The probes' own adaptive window bounds what is in flight; the workers only bound the tasks.
            videos = [cast(Video, entries[position]) for position in pending]
            await for_each(videos, learn, workers=min(PROBE_WORKERS, len(pending)))
            again = pending if self.probes.forgotten == forgotten else range(len(entries))
            for position in again:
                entry = entries[position]
                if isinstance(entry, Video) and entry.size is None:
                    answers[position] = self.probes.known(instance, entry)
        return failed, answers

    async def resolve_path(self, path: str) -> Node:
        """The node at a '/'-separated path below the mount root (for --subtree)."""
        node = self.get(ROOT_INODE)
        for part in [p for p in path.split("/") if p]:
            node = await self.lookup(node.inode, part)
            self.nodes.setdefault(node.inode, node)
        return node

    def pin(self, node: Node) -> None:
        """Keep `node` whatever the kernel forgets (the --subtree root)."""
        self._pinned.add(node.inode)
        self.nodes[node.inode] = node

    def refresh_parent(self, node: Node) -> None:
        """After a 404 or a changed file: the parent's listing is stale."""
        parent = self.nodes.get(node.parent)
        if parent is not None and parent.instance is not None and isinstance(parent.entry, Folder):
            self.listings.invalidate(parent.instance, parent.entry.remote_id)

    def statistics(self) -> dict[str, int]:
        return {
            "inodes": len(self.nodes),
            "directories": len(self._dirs),
            "building": len(self._building),
            "listed_ahead": len(self._warm),
        }


__all__ = ["DIR_MODE", "FILE_MODE", "ROOT_INODE", "Node", "Progress", "Tree", "stable_inode"]
