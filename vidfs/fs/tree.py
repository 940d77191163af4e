"""Inodes: a stable number for every remote item, a name in its directory, and what the kernel holds.

Numbers. An inode is a hash of (provider instance, kind, remote id), so the same video keeps its inode
across listings and remounts (rsync and players that remember inodes stay happy). Should two items ever
hash alike (about one chance in 10⁹ for 100,000 items), the later one is re-hashed with a counter.

Names. A directory's children come from its listing (`vidfs.catalog.listings`); their display names from
`naming.name_entries`, decided by remote id, not by the order the API lists things in.

Sizes the listing lacks (AIPIX archives, Hour One videos, VALT recordings: a HEAD each) are learned only when
something needs them: `stat`, `open`, a lookup by name (`Tree.sized`). A directory is built from its listing
alone, so `ls`, `find -name` and a shell's completion of a cold directory of 100,000 such videos cost its
listing and no HEAD, and opening one video in it costs one HEAD, not one per video first (with sizes learned
while building, `ls -R` of 10,000 Hour One videos at 20 ms of round trip made 10,006 HEADs and took 6.85 s;
now none, 2.67 s). A child whose size is not known yet goes to the kernel (readdirplus) with size 0 and an
attribute timeout of 0, so the kernel asks `getattr` before anyone sees that size: `stat`, `fstat`,
`lseek(SEEK_END)` and a read past the size it holds all come back for it. Whoever asks for a second size in
one directory, or a third anywhere within a couple of seconds, is probably walking (`ls -l`, `du`, rsync): the
rest of that directory is then sized ahead of it, concurrently, in the order readdir gave them; and while such
a walk goes on (`STAT_WALK_S` since sizing ahead last began), the directories listed ahead of the walker are
sized ahead too, as they are built. A size that cannot be learned is that `stat`'s error (ENOENT for a video
that vanished, EIO for a storage fault), asked again at the next `stat`.

Memory. A built directory holds one `Node` per child. The table the kernel's requests go through,
`nodes`, holds only what the kernel knows (its lookup count, from `lookup` and `readdirplus` replies, is
above zero), what an open file holds, and the roots. When the kernel forgets a node and no open file
holds it, it leaves `nodes`, and a directory it forgets also drops its built children (they are built
again from the cached listing, without a request, if the kernel asks again). So a long mount over a
large catalog does not grow with every name ever looked up.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Mapping, Sequence

import trio

from vidfs.catalog.listings import ListingCache
from vidfs.catalog.naming import name_entries
from vidfs.catalog.probes import SizeProbes
from vidfs.errors import NotFoundError, RemoteIOError, VidfsError
from vidfs.fs.nodes import (
    DIR_MODE,
    FILE_MODE,
    ROOT_INODE,
    UNSIZED,
    Directory,
    NamingItems,
    Node,
    stable_inode,
)
from vidfs.model import Entry, Folder, HiddenItem, Listing, Video
from vidfs.providers.base import Provider
from vidfs.tasks import Progress, Spawner, for_each

log = logging.getLogger(__name__)

READ_AHEAD_DIRECTORIES = 256  # subdirectories listed ahead when a directory is listed
PROBE_WORKERS = 80  # size probes of one directory asked at once, at most (above SizeProbes' highest window)
NOT_KNOWN = -1  # a size storage has not told (yet), in the array a directory's build reads
SIZED_AHEAD_AFTER = 2  # sizes asked in one directory before the rest of it is sized ahead
WALK_SIZES = 3  # … or sizes asked anywhere within WALK_WINDOW_S: a walker (VALT records, one video each)
WALK_WINDOW_S = 2.0
STAT_WALK_S = 10.0  # after sizing a directory ahead began, directories listed ahead are sized ahead too
WARM_DIRECTORIES = 4096  # directories built ahead that no one has looked up yet, at most


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
        self._dirs: dict[int, Directory] = {}
        self._spawner: Spawner | None = None
        self._warm: dict[
            int, None
        ] = {}  # directories built ahead of a walker (insertion order: oldest first)
        self._stat_walk_until = -math.inf  # a walker that stats is about until then (see the essay)
        self._sizes_asked: deque[float] = deque(maxlen=WALK_SIZES)  # when the latest sizes were asked
        root = Node(ROOT_INODE, ROOT_INODE, "", None, None)
        self.nodes[ROOT_INODE] = root
        tops: list[Node] = []
        for instance, provider in sorted(self.providers.items()):
            node = self._new_node(instance, provider.root(), ROOT_INODE, instance, {})
            self.nodes[node.inode] = node
            self._pinned.add(node.inode)
            tops.append(node)
        self._dirs[ROOT_INODE] = Directory.of(tops, built_from="static")

    # ------------------------------------------------------------------------------------ inodes
    def _new_node(
        self,
        instance: str,
        entry: Entry,
        parent: int,
        name: str,
        taken: Mapping[int, Node],
        previous: Directory | None = None,
    ) -> Node:
        """The node of `entry`: the one the kernel, this build (`taken`) or the directory's previous build
        has for it, else a new one."""
        is_dir = not isinstance(entry, Video)
        key = (instance, is_dir, entry.remote_id)
        salt = 0
        while True:
            inode = stable_inode(instance, "d" if is_dir else "v", entry.remote_id, salt)
            known = self.nodes.get(inode) or taken.get(inode)
            if known is None and previous is not None:
                # After `vidfs refresh` the kernel has forgotten the children, but the directory being
                # replaced still holds them: new nodes for all were 15 MiB more at the peak of a re-listing
                # of 100,000 videos (the nodes, their numbers and sizes, beside the previous ones).
                found = previous.child(name)
                known = found if found is not None and found.inode == inode else None
            if known is None:
                return Node(inode, parent, name, instance, entry)
            if known.key == key:  # the kernel, this build or the last knows it: one object per item
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

    def _listed(self, directory: Directory, inode: int) -> Sequence[Node]:
        """A directory's children in name order, for someone who listed it: its subdirectories are read
        ahead, and so are those of its parent's after it (a walker goes there next), READ_AHEAD_DIRECTORIES
        of them, and past the parent's end those of the directories after the parent (`_read_ahead_after`)."""
        self._read_ahead(directory)
        node, parent = self._with_parent(inode)
        if node is None or parent is None:
            return directory.nodes
        until = bisect.bisect_right(parent.names, node.name) + READ_AHEAD_DIRECTORIES
        if parent.ahead_to < len(parent.nodes):
            self._read_ahead(parent, until=until)
        if until > len(parent.nodes):
            self._read_ahead_after(node.parent, until - len(parent.nodes))
        return directory.nodes

    def _with_parent(self, inode: int) -> tuple[Node | None, Directory | None]:
        """The node of `inode` and its parent's built directory (None: not known, not built, or the root)."""
        node = self.nodes.get(inode)
        return node, self._dirs.get(node.parent) if node is not None and node.parent != inode else None

    def _read_ahead_after(self, inode: int, budget: int) -> None:
        """A walker is near the end of directory `inode`: read ahead the first `budget` subdirectories of the
        directories after it in its parent (those built already; the parent's own readahead builds them).
        Without it the walker's readahead stopped at each parent's end: VALT's layout "records" is about a
        hundred records a room, so every room began with the walker waiting for its first record's two calls,
        and a cold `ls -R` of 10,000 records at 20 ms kept about 33 of its 64 calls in flight: 12.0-12.7 s,
        8.3-8.6 s with this; a cold walk with `lstat` (os.walk's order), 15.2-15.8 s, 9.7-11.2 s with this."""
        node, parent = self._with_parent(inode)
        if node is None or parent is None:
            return
        at = bisect.bisect_right(parent.names, node.name)
        for sibling in itertools.islice(parent.nodes, at, at + READ_AHEAD_DIRECTORIES):  # bounded per call
            if budget <= 0:
                return
            following = self._dirs.get(sibling.inode) if sibling.is_dir else None
            if following is None:
                if sibling.is_dir:
                    return  # not built yet: nothing after it is read ahead before it
                continue
            self._read_ahead(following, until=budget)
            budget -= len(following.nodes)

    # ------------------------------------------------------------------------------ directory readahead
    def attach(self, spawner: Spawner) -> None:
        """List subdirectories ahead of a walker from now on (see `_read_ahead`)."""
        self._spawner = spawner

    def _read_ahead(self, directory: Directory, *, until: int | None = None) -> None:
        """Start listing subdirectories of `directory` in the background (sized too while a walker stats:
        `_warm_up`): its first READ_AHEAD_DIRECTORIES when it is listed (once per built directory), and all
        before position `until` when a walker lists one of them. A walker (`ls -R`, `find`, rsync) goes into
        them one after another, each may cost requests (a VALT record's URLs and HEADs; a VALT room's records
        in layout "rooms"): asked ahead, within the listing cache's and the probes' limits, they are ready
        when it gets there. With only the first ones asked, 100,000 VALT videos in 1,000 rooms were listed a
        room at a time past the 256th (603.7 s cold at 20 ms, the daemon busy 32% of it). `ahead_to` only
        grows."""
        if self._spawner is None or (until is None and directory.ahead_to):
            return
        nodes = directory.nodes
        stop = len(nodes) if until is None else min(until, len(nodes))
        position = directory.ahead_to
        started = 0
        while position < stop:
            child = nodes[position]
            position += 1
            if not child.is_dir or child.inode in self._dirs:
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
            directory = await self._directory_of(node, ahead=True)
        except VidfsError as exc:  # the walker gets its own answer when it gets there
            log.debug("%s: listing ahead of %r failed: %s", node.instance, node.name, exc)
            self._forget_warm(node.inode)
            return
        if trio.current_time() < self._stat_walk_until:  # the walker stats what it finds: size it ahead
            self._size_ahead(directory)

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
    ) -> Directory:
        return await self._directory_of(self.get(inode), max_age=max_age, progress=progress)

    async def _directory_of(
        self,
        node: Node,
        *,
        max_age: float | None = None,
        ahead: bool = False,
        progress: Progress | None = None,
    ) -> Directory:
        """The directory of `node`, built from a current listing. `ahead`: for directory readahead, whose
        listings wait their turn; any other caller's listing goes before those (ListingCache.listing).
        `progress` is called for each step of the listing (an HTTP answer) while the caller waits."""
        inode = node.inode
        if node.instance is None:
            return self._dirs[ROOT_INODE]
        listing = await self.listings.listing(
            node.instance,
            self.providers[node.instance],
            node.folder,
            max_age=max_age,
            urgent=not ahead,
            progress=progress,
        )
        directory = self._dirs.get(inode)
        if directory is not None and directory.current(listing):
            return directory
        return self._build_from(node, listing)

    def _build_from(self, node: Node, listing: Listing) -> Directory:
        """Build a directory (names, and the sizes already known) from `listing`, kept while the kernel knows
        it. Without a pause: two callers never build one directory at once, and a FUSE request that gives up
        (request_timeout) cannot leave one half built. (It ran in a task of its own until 2026-12-06, one more
        task per directory: 10,000 of them in a walk of 10,000 VALT records.)"""
        directory = self._build(node, listing.entries, listing.hidden)
        directory.built_from = listing
        inode = node.inode
        if inode in self.nodes or self._held(node) or inode in self._warm:
            self._dirs[inode] = directory
        return directory

    def _build(self, parent: Node, entries: tuple[Entry, ...], hidden: tuple[HiddenItem, ...]) -> Directory:
        instance = parent.instance
        assert instance is not None
        # The answers are read from the probe table into a list beside the entries: a dict of them by remote
        # id was 5 MiB more at the end of a 100,000-entry directory's build, the daemon's peak.
        sizes = self._known_sizes(instance, entries)
        names = name_entries(NamingItems(entries))
        previous = self._dirs.get(parent.inode)
        children = self._children(instance, parent.inode, entries, names, sizes, previous, checked=False)
        if children is None:  # two of them hashed alike (about once in 10⁹ directories of 100,000)
            children = self._children(instance, parent.inode, entries, names, sizes, previous, checked=True)
        assert children is not None
        return Directory.of(children, hidden=hidden)

    def _children(
        self,
        instance: str,
        parent: int,
        shown: Sequence[Entry],
        names: list[str],
        sizes: array[int],
        previous: Directory | None,
        *,
        checked: bool,
    ) -> list[Node] | None:
        """A directory's nodes. Unless `checked`, the nodes made here are not looked up among each
        other as they are made (a table of them all was 5 MiB at the peak of a 100,000-entry build): two
        alike are found afterwards, in a sorted list of their numbers, and then None is returned, for the
        caller to build them again `checked`, each looked up among those made before it."""
        taken: dict[int, Node] = {}
        children: list[Node] = []
        for entry, name, size in zip(shown, names, sizes, strict=True):
            node = self._new_node(instance, entry, parent, name, taken, previous)
            if checked:
                taken[node.inode] = node
            # A node kept may hold another version's size, and keeps its int when the size is the same.
            if size == NOT_KNOWN and isinstance(entry, Video):
                node.size = UNSIZED if entry.size is None else entry.size
            elif size != NOT_KNOWN and node.size != size:
                node.size = size
            children.append(node)
        if not checked:
            numbers = sorted(node.inode for node in children)
            if any(a == b for a, b in itertools.pairwise(numbers)):
                return None
        return children

    def _known_sizes(self, instance: str, entries: Sequence[Entry]) -> array[int]:
        """What storage already told of each entry the listing gives no size for (this mount's HEADs, or the
        snapshot's after a remount), read once; NOT_KNOWN for the others and those not asked yet. In an
        array: a list held an int object each beside the nodes' own (3.8 MiB at 100,000, at the peak of a
        re-listing of Hour One's videos, whose nodes keep theirs)."""
        return self.probes.known_sizes(instance, entries, NOT_KNOWN)

    # ----------------------------------------------------------------------------------------- sizes
    def etag_of(self, node: Node) -> str | None:
        """The ETag of a sized video's bytes: its listing's, else what storage told with its size (kept by
        the probes, not by the node: 8 bytes a node, and a string each with them)."""
        video = node.video
        if node.size == UNSIZED or node.instance is None:
            return None
        if video.size is not None and video.etag is not None:
            return video.etag
        probe = self.probes.known(node.instance, video)
        return probe.etag if probe is not None else None

    async def sized(self, node: Node, *, progress: Progress | None = None) -> Node:
        """`node` with its size learned, if the listing did not give it (see the essay): one probe, and the
        rest of its directory ahead of a walker. VidfsError when storage cannot tell it (NotFoundError:
        the video vanished)."""
        if node.size != UNSIZED:
            return node
        directory = self._dirs.get(node.parent)
        if directory is not None and not directory.sizing_ahead:
            now = trio.current_time()
            directory.sizes_asked += 1
            self._sizes_asked.append(now)
            asked = self._sizes_asked
            walking = len(asked) == WALK_SIZES and now - asked[0] < WALK_WINDOW_S
            if walking or directory.sizes_asked >= SIZED_AHEAD_AFTER or now < self._stat_walk_until:
                self._size_ahead(directory, node.name)
        for _ in range(3):  # a listing that changed the video meanwhile: its new version's size
            video = node.entry
            if not isinstance(video, Video) or node.instance is None or node.size != UNSIZED:
                break
            answer = await self.probes.probe(node.instance, self.providers[node.instance], video)
            if node.entry is video:
                node.size = answer.size
            if progress is not None:
                progress()
        if node.size == UNSIZED:
            raise RemoteIOError(f"{node.name}: its size changed while it was learned")
        return node

    def _size_ahead(self, directory: Directory, name: str | None = None) -> None:
        """Learn the sizes of `directory`'s videos not sized yet, in the background, from `name` on (the
        order a walker stats them in), then those before it."""
        if self._spawner is None or directory.sizing_ahead:
            return
        directory.sizing_ahead = True
        walking = trio.current_time() < self._stat_walk_until
        self._stat_walk_until = trio.current_time() + STAT_WALK_S
        if not walking:  # a walk that stats begins: the directories listed ahead of it are sized ahead too
            for inode in list(self._warm):
                warm = self._dirs.get(inode)
                if warm is not None and warm is not directory:
                    self._size_ahead(warm)
        nodes = directory.nodes
        at = 0 if name is None else bisect.bisect_left(directory.names, name)
        todo = [node for node in itertools.chain(nodes[at:], nodes[:at]) if node.size == UNSIZED]
        if todo:
            self._spawner.start_soon(self._size_all, todo)

    async def _size_all(self, nodes: list[Node]) -> None:
        async def one(node: Node) -> None:
            try:
                await self.sized(node)
            except VidfsError as exc:  # the `stat` that needs it gets its own answer
                log.debug("%s: sizing %r ahead failed: %s", node.instance, node.name, exc)

        await for_each(nodes, one, workers=min(PROBE_WORKERS, len(nodes)))

    async def sized_children(self, inode: int) -> tuple[Sequence[Node], list[tuple[Node, VidfsError]]]:
        """A directory's children, every size learned (`vidfs ls`), and those whose size could not be."""
        children = await self.children(inode)
        failed: list[tuple[Node, VidfsError]] = []

        async def one(node: Node) -> None:
            try:
                await self.sized(node)
            except VidfsError as exc:
                failed.append((node, exc))

        todo = [node for node in children if node.size == UNSIZED]
        if todo:
            await for_each(todo, one, workers=min(PROBE_WORKERS, len(todo)))
        return children, failed

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
            "listed_ahead": len(self._warm),
        }


__all__ = ["DIR_MODE", "FILE_MODE", "ROOT_INODE", "UNSIZED", "Node", "Progress", "Tree", "stable_inode"]
