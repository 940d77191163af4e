"""The listing path in process: the listing cache (stale-while-revalidate, background fetches, backoff),
the tree (readdir snapshots, forgotten nodes, errnos) and the snapshot writer, over a fake provider.

Time is trio's autojump clock wherever a test waits: a "slow vendor" sleeps in virtual time.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import math
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyfuse3
import pytest
import trio
import trio.lowlevel
import trio.testing

from vidfs.catalog import answers as answers_module
from vidfs.catalog import snapshot as snapshot_module
from vidfs.catalog.answers import AnswerTable, Chunk, Probe
from vidfs.catalog.extras import ExtrasReader, Place
from vidfs.catalog.listings import ListingCache
from vidfs.catalog.probes import SizeProbes, basis_of
from vidfs.catalog.snapshot import SnapshotKeeper
from vidfs.catalog.snapshot_codec import ROW_ENTRIES
from vidfs.errors import NotDirectoryError, NotFoundError, RemoteIOError, UnreachableError, to_errno
from vidfs.fs import tree as tree_module
from vidfs.fs.operations import VidfsOperations
from vidfs.fs.tree import Node, Tree, stable_inode
from vidfs.fs.videofs import Attributes
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.model import Folder, FrozenMap, HiddenItem, Listing, StreamLease, Video, frozen, frozen_extra
from vidfs.stats import Stats


class FakeProvider:
    """A catalog in memory: folder id → entries. `delay` makes `list` slow; `fail` makes it raise."""

    def __init__(self, folders: dict[str, list[Folder | Video]]) -> None:
        self.folders = folders
        self.calls: dict[str, int] = {}
        self.delay = 0.0
        self.fail: Callable[[], BaseException] | None = None

    def root(self) -> Folder:
        return Folder("root", "fake")

    async def list(self, folder: Folder) -> Listing:
        self.calls[folder.remote_id] = self.calls.get(folder.remote_id, 0) + 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail()
        return Listing(tuple(self.folders.get(folder.remote_id, [])))

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


def videos(count: int, prefix: str = "v") -> list[Folder | Video]:
    return [Video(f"{prefix}{i}", f"{prefix}{i:06d}.mp4", size=1000 + i, mtime=1.0) for i in range(count)]


def make_tree(provider: FakeProvider, *, ttl: float = 300.0, negative_ttl: float = 10.0) -> Tree:
    stats = Stats()
    listings = ListingCache(ttl=ttl, negative_ttl=negative_ttl, stats=stats)
    probes = SizeProbes(http=HttpClient(stats=stats), resolver=Resolver(stats), stats=stats)
    return Tree({"fake": provider}, listings, probes)


def make_keeper(directory: Path) -> tuple[Stats, ListingCache, SnapshotKeeper]:
    """A snapshot keeper at `directory` over fresh listings of the instance "fake"."""
    stats = Stats()
    listings = ListingCache(ttl=300, negative_ttl=10, stats=stats)
    probes = SizeProbes(http=HttpClient(stats=stats), resolver=Resolver(stats), stats=stats)
    return stats, listings, SnapshotKeeper(listings, probes, directory, ["fake"], stats)


def provider_inode(tree: Tree) -> int:
    """The inode of the one provider's directory (the mount root's only child)."""
    return stable_inode("fake", "d", "root")


# ------------------------------------------------------------------------------------------ listings
async def test_a_listing_slower_than_the_request_is_finished_in_the_background(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = FakeProvider({"root": videos(3)})
    provider.delay = 90.0  # three times a 30 s request timeout
    tree = make_tree(provider)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        with pytest.raises(trio.TooSlowError), trio.fail_after(30):
            await tree.children(provider_inode(tree))
        await trio.sleep(61)  # virtual time: the fetch the first request started ends meanwhile
        with trio.fail_after(1):
            names = [n.name for n in await tree.children(provider_inode(tree))]
        nursery.cancel_scope.cancel()
    assert names == ["v000000.mp4", "v000001.mp4", "v000002.mp4"]
    assert provider.calls == {"root": 1}  # no second slow call


async def test_waiters_of_one_slow_listing_share_one_build_of_its_directory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three requests wait for one directory while its listing is fetched: one build serves all three (a
    # build has no pause, so none can start a second one meanwhile or leave one half done).
    provider = FakeProvider({"root": videos(3)})
    provider.delay = 5.0
    tree = make_tree(provider)
    build, builds = tree._build, []

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return build(*args, **kwargs)

    tree._build = counted_build  # type: ignore[method-assign]
    answers: list[Sequence[Node]] = []

    async def ask() -> None:
        answers.append(await tree.children(provider_inode(tree)))

    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        async with trio.open_nursery() as waiters:
            for _ in range(3):
                waiters.start_soon(ask)
        nursery.cancel_scope.cancel()
    assert [n.name for n in answers[0]] == ["v000000.mp4", "v000001.mp4", "v000002.mp4"]
    assert all(answer is answers[0] for answer in answers) and builds == [1] and provider.calls == {"root": 1}


async def opendir_in_time(tree: Tree) -> tuple[list[Node] | int, float]:
    """`opendir` of the provider's directory as the FUSE layer answers it (a 30 s request timeout, moved on
    by each step the wait reports): its children or the errno it failed with, and the seconds it took."""
    operations = VidfsOperations(fs=SimpleNamespace(stats=Stats()), request_timeout=30)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        start = trio.current_time()
        result: list[Node] | int
        try:
            async with operations._answer("opendir") as progress:
                result = await tree.children(provider_inode(tree), progress=progress)
        except pyfuse3.FUSEError as exc:
            result = exc.errno
        nursery.cancel_scope.cancel()
    return result, trio.current_time() - start


def unsized(count: int, prefix: str = "v") -> list[Folder | Video]:
    """Videos whose listing gives no size (AIPIX, Hour One, VALT): a probe each learns it."""
    return [Video(f"{prefix}{i}", f"{prefix}{i:06d}.mp4", mtime=1.0) for i in range(count)]


def counting_probe(tree: Tree, seconds: float) -> list[str]:
    """Make the tree's probes answer `1000 + index` after `seconds` (virtual) instead of asking storage
    (`SizeProbes` itself still answers concurrent asks of one video with one request, and keeps the
    answer); returns the list of the ids asked of storage, in order."""
    asked: list[str] = []

    async def ask(instance: str, provider: Any, video: Video) -> Probe:
        asked.append(video.remote_id)
        await trio.sleep(seconds)
        return Probe(1000 + int(video.remote_id.lstrip("dv").split("v")[-1]), None)

    tree.probes._ask = ask  # type: ignore[method-assign]
    return asked


async def test_a_directory_is_listed_without_its_sizes_and_sizes_only_what_is_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1,000 videos without sizes, 5 s per HEAD: the directory answers at once, none of them asked; one
    # `stat` asks one; a second one in the same directory (a walker: `ls -l`, rsync) sizes the rest ahead,
    # each video asked once.
    tree = make_tree(FakeProvider({"root": unsized(1000)}))
    asked = counting_probe(tree, 5.0)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        with trio.fail_after(1):
            children = list(await tree.children(provider_inode(tree)))
        assert len(children) == 1000 and all(child.size == tree_module.UNSIZED for child in children)
        assert asked == []
        one = next(child for child in children if child.name == "v000500.mp4")
        assert (await tree.sized(one)).size == 1500
        await trio.testing.wait_all_tasks_blocked()
        assert asked == ["v500"]
        other = next(child for child in children if child.name == "v000501.mp4")
        assert (await tree.sized(other)).size == 1501
        with trio.fail_after(600):
            while len(asked) < 1000:
                await trio.sleep(1)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert sorted(asked) == sorted(f"v{i}" for i in range(1000))  # each once
    assert asked[:3] == ["v500", "v501", "v502"]  # ahead of the walker, from where it asked
    assert {child.name: child.size for child in children} == {f"v{i:06d}.mp4": 1000 + i for i in range(1000)}


async def test_a_walk_through_directories_of_one_video_each_is_sized_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # VALT records: a directory per record, one video in each. No directory is asked two sizes, but three
    # asked within a couple of seconds are a walker: the directories listed ahead of it are sized ahead.
    count = 40
    folders: dict[str, list[Folder | Video]] = {"root": [Folder(f"d{i}", f"d{i:06d}") for i in range(count)]}
    folders.update({f"d{i}": unsized(1, prefix=f"d{i}v") for i in range(count)})
    tree = make_tree(FakeProvider(folders))
    asked = counting_probe(tree, 0.05)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        records = list(await tree.children(provider_inode(tree)))
        await trio.testing.wait_all_tasks_blocked()  # listed ahead, none sized
        assert asked == []
        for record in records[:3]:
            tree.remember(record)  # as a readdirplus reply does
            (video,) = await tree.children(record.inode)
            assert video.size == tree_module.UNSIZED  # no walker seen yet: listed without it
            await tree.sized(video)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert sorted(asked) == sorted(f"d{i}v0" for i in range(count))  # every one, once


async def test_a_size_that_cannot_be_learned_is_that_stat_s_error_and_asked_again_at_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tree = make_tree(FakeProvider({"root": unsized(3)}))
    calls: list[str] = []

    async def gone(instance: str, provider: Any, video: Video) -> Probe:
        calls.append(video.remote_id)
        raise NotFoundError(f"{video.name}: gone from storage")

    tree.probes.probe = gone  # type: ignore[method-assign]
    children = await tree.children(provider_inode(tree))
    for _ in range(2):
        with pytest.raises(NotFoundError):
            await tree.sized(children[0])
    assert calls == ["v0", "v0"] and children[0].size == tree_module.UNSIZED
    assert [child.name for child in await tree.children(provider_inode(tree))] == [
        "v000000.mp4",
        "v000001.mp4",
        "v000002.mp4",
    ]  # still listed: `ls` shows it, `stat` tells why it cannot be read


@pytest.mark.parametrize("stuck", [False, True])
async def test_a_stat_waits_for_its_size_within_the_request_timeout(
    autojump_clock: trio.testing.MockClock, stuck: bool
) -> None:
    """`getattr` of a video not sized yet waits for its HEAD (here 20 s, within the 30 s request timeout);
    one that never answers is EIO after the request timeout. The kernel got it with size 0 and an attribute
    timeout of 0 from readdirplus, so no one saw that size."""
    tree = make_tree(FakeProvider({"root": unsized(2)}))
    counting_probe(tree, math.inf if stuck else 20.0)
    children = await tree.children(provider_inode(tree))

    class FS:
        stats = Stats()

        def getattr(self, inode: int) -> Attributes:
            return self.attributes(tree.get(inode))

        async def getattr_sized(self, inode: int, *, progress: Any = None) -> Attributes:
            return self.attributes(await tree.sized(tree.get(inode), progress=progress))

        @staticmethod
        def attributes(node: Node) -> Attributes:
            return Attributes(node.inode, 0o100444, node.size, 1.0, 1, 0, 0, 65536)

    operations = VidfsOperations(fs=FS(), request_timeout=30)  # type: ignore[arg-type]
    listed = operations._entry(FS.attributes(children[0]))  # as readdirplus gives it
    assert listed.st_size == 0 and listed.attr_timeout == 0 and listed.entry_timeout > 0
    tree.remember(children[0])
    start = trio.current_time()
    if stuck:
        with pytest.raises(pyfuse3.FUSEError) as failed:
            await operations.getattr(children[0].inode)
        assert failed.value.errno == errno.EIO and trio.current_time() - start == pytest.approx(30)
    else:
        entry = await operations.getattr(children[0].inode)
        assert entry.st_size == 1000 and entry.attr_timeout > 0
        assert trio.current_time() - start == pytest.approx(20)


def test_one_readdir_entry_filled_again_keeps_nothing_of_the_one_before() -> None:
    """readdir fills one EntryAttributes for every child it replies: each child's attributes are all its own
    (a file after a directory, an unsized file after a sized one), and a folder without a time shows the
    mount's, the subtree's root the FUSE root's number."""
    from vidfs.fs import operations as ops
    from vidfs.fs.nodes import DIR_MODE, FILE_MODE, ROOT_INODE, UNSIZED
    from vidfs.fs.videofs import VideoFS
    from vidfs.model import Folder, Video

    fs = SimpleNamespace(root_inode=7, uid=11, gid=12, cache=SimpleNamespace(block_size=65536))
    fs.tree = SimpleNamespace(mounted_at=1234.5)
    nodes = [
        Node(7, 1, "root", "p", Folder("r", "root")),
        Node(20, 7, "a.mp4", "p", Video("a", "a.mp4", size=1000, mtime=99.25)),
        Node(21, 7, "b.mp4", "p", Video("b", "b.mp4", size=None, mtime=None)),
        Node(22, 7, "dir", "p", Folder("d", "dir", mtime=50.0)),
    ]
    entry = ops._new_entry()
    seen = []
    for node in nodes:
        ops._fill(entry, VideoFS.attributes(fs, node))  # type: ignore[arg-type]
        seen.append(
            (
                entry.st_ino,
                entry.st_mode,
                entry.st_nlink,
                entry.st_size,
                entry.st_blocks,
                entry.st_mtime_ns,
                entry.attr_timeout,
                entry.st_uid,
                entry.st_gid,
                entry.st_blksize,
                entry.entry_timeout,
            )
        )
    ttl = ops.KERNEL_TTL
    assert nodes[2].size == UNSIZED
    assert seen == [
        (ROOT_INODE, DIR_MODE, 2, 0, 0, 1_234_500_000_000, ttl, 11, 12, 65536, ttl),
        (20, FILE_MODE, 1, 1000, 2, 99_250_000_000, ttl, 11, 12, 65536, ttl),
        (21, FILE_MODE, 1, 0, 0, 0, 0, 11, 12, 65536, ttl),  # asked again with `getattr` before any use
        (22, DIR_MODE, 2, 0, 0, 50_000_000_000, ttl, 11, 12, 65536, ttl),
    ]


async def test_a_video_that_changed_is_sized_again_and_a_known_size_asks_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A size storage told for one version of a video (this mount's HEAD, or the snapshot's after a
    # remount) is shown without asking; a listing that shows the video changed (another fingerprint) makes
    # it unknown again, and it is asked once more when needed, never shown with the old version's size.
    entries = unsized(3)
    provider = FakeProvider({"root": entries})
    tree = make_tree(provider, ttl=60.0)
    asked = counting_probe(tree, 1.0)
    tree.probes.learn(("fake", "v0", entries[0].fingerprint), Probe(1000, None))  # as the snapshot tells
    children = {node.name: node for node in await tree.children(provider_inode(tree))}
    assert children["v000000.mp4"].size == 1000 and asked == []
    for node in children.values():
        tree.remember(node)
        await tree.sized(node)
    assert asked == ["v1", "v2"]
    provider.folders["root"] = [entries[0], Video("v1", "v000001.mp4", mtime=2.0), entries[2]]  # v1 changed
    await trio.sleep(61)
    await tree.children(provider_inode(tree))  # stale: refreshed in the background
    await trio.testing.wait_all_tasks_blocked()
    again = {node.name: node for node in await tree.children(provider_inode(tree))}
    assert again["v000001.mp4"].size == tree_module.UNSIZED
    assert again["v000000.mp4"].size == 1000 and again["v000002.mp4"].size == 1002
    assert (await tree.sized(again["v000001.mp4"])).size == 1001
    assert asked == ["v1", "v2", "v1"]


class PagedProvider(FakeProvider):
    """A listing made of 20 API calls, one after another, each answered after 5 s (through HttpClient, on a
    mock transport): 100 s in all, three request timeouts, but an answer every 5 s. `stuck_at`: that call
    never answers."""

    def __init__(self, folders: dict[str, list[Folder | Video]], stuck_at: int | None) -> None:
        super().__init__(folders)
        self.asked = 0

        async def answer(request: httpx.Request) -> httpx.Response:
            self.asked += 1
            await trio.sleep(math.inf if self.asked == stuck_at else 5.0)
            return httpx.Response(200, json={"page": self.asked})

        self.http = HttpClient(transport=httpx.MockTransport(answer))

    async def list(self, folder: Folder) -> Listing:
        for page in range(20):
            await self.http.request("GET", f"http://127.0.0.1:9/items?page={page}", tag="fake:api")
        return await super().list(folder)


@pytest.mark.parametrize("stuck", [False, True])
async def test_a_request_waits_for_a_listing_while_its_pages_keep_arriving(
    autojump_clock: trio.testing.MockClock, stuck: bool
) -> None:
    """Each API answer of the listing moves the waiting request's deadline (`vidfs.tasks.STEP`): `opendir`
    answers after 100 s with a 30 s request timeout. With the 11th call stuck, it fails with EIO 30 s after
    the 10th answer."""
    provider = PagedProvider({"root": videos(3)}, stuck_at=11 if stuck else None)
    children, took = await opendir_in_time(make_tree(provider))
    await provider.http.aclose()
    if stuck:
        assert children == errno.EIO and took == pytest.approx(50 + 30, abs=1)  # 30 s after the 10th
    else:
        assert isinstance(children, tuple) and took == pytest.approx(100, abs=1)
        assert [child.name for child in children] == ["v000000.mp4", "v000001.mp4", "v000002.mp4"]


async def test_a_remounted_snapshot_keeps_the_age_of_its_listings(tmp_path: Path) -> None:
    # A listing fetched a moment before a remount is fresh after it (no vendor call), one older than the
    # TTL is stale (refreshed in the background at its first use).
    stats, listings, keeper = make_keeper(tmp_path / "meta")
    provider = FakeProvider({"new": videos(2), "old": videos(3)})
    before = time.time()
    for folder in ("new", "old"):
        await listings.listing("fake", provider, Folder(folder, folder))
    await keeper.save()
    after = time.time()
    _listing, fetched = keeper.read()["fake"].listings["old"]
    assert fetched is not None and before - 1 <= fetched <= after + 1  # when it was fetched, epoch seconds
    with contextlib.closing(sqlite3.connect(keeper.path)) as db, db:  # as if saved an hour ago
        db.execute("UPDATE listings SET fetched = fetched - 3600 WHERE folder = 'old'")
    fresh = ListingCache(ttl=300, negative_ttl=10, stats=stats)
    other = SnapshotKeeper(fresh, keeper.probes, tmp_path / "meta", ["fake"], stats)
    assert other.install(await trio.to_thread.run_sync(other.read)) == 2
    new_age, old_age = fresh.age("fake", "new"), fresh.age("fake", "old")
    assert new_age is not None and new_age < 60
    assert old_age is not None and old_age >= 3600
    await fresh.listing("fake", provider, Folder("new", "new"))
    assert provider.calls == {"new": 1, "old": 1}  # the fresh one answered without a call


async def test_directory_readahead_moves_on_with_the_walker() -> None:
    # A directory of many subdirectories (VALT rooms in layout "rooms"): listing it reads the first
    # READ_AHEAD_DIRECTORIES ahead; each one a walker then goes into moves that window on past it.
    ahead = tree_module.READ_AHEAD_DIRECTORIES
    count = 3 * ahead
    folders: dict[str, list[Folder | Video]] = {"root": [Folder(f"d{i}", f"d{i:06d}") for i in range(count)]}
    folders.update({f"d{i}": videos(1, prefix=f"d{i}v") for i in range(count)})
    provider = FakeProvider(folders)
    tree = make_tree(provider)

    def listed() -> set[str]:
        return set(provider.calls) - {"root"}

    def first(n: int) -> set[str]:
        return {f"d{i}" for i in range(min(n, count))}

    async def walk_into(node: Node) -> None:
        tree.remember(node)  # as a readdirplus reply does
        await tree.children(node.inode)
        await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        subdirectories = list(await tree.children(provider_inode(tree)))
        await trio.testing.wait_all_tasks_blocked()
        assert listed() == first(ahead)
        await tree.children(provider_inode(tree))  # listing it again asks nothing more
        await trio.testing.wait_all_tasks_blocked()
        assert listed() == first(ahead)
        for node in subdirectories[:10]:
            await walk_into(node)
        assert listed() == first(10 + ahead)
        await walk_into(subdirectories[2 * ahead])
        assert listed() == first(count)
        nursery.cancel_scope.cancel()
    assert set(provider.calls.values()) == {1}  # each directory listed once


async def test_directory_readahead_goes_on_into_the_directories_after_the_parent() -> None:
    # VALT's layout "records": rooms of about a hundred records, a directory each. A walker in a room's
    # records has its readahead go on past the room's end into the next rooms' records (READ_AHEAD_DIRECTORIES
    # counted from where it stands), instead of waiting at the start of every room.
    ahead = tree_module.READ_AHEAD_DIRECTORIES
    per_room, rooms = 100, 5
    folders: dict[str, list[Folder | Video]] = {"root": [Folder(f"r{i}", f"room{i}") for i in range(rooms)]}
    for i in range(rooms):
        folders[f"r{i}"] = [Folder(f"r{i}d{j}", f"rec{j:03d}") for j in range(per_room)]
        folders.update({f"r{i}d{j}": videos(1, prefix=f"r{i}d{j}v") for j in range(per_room)})
    provider = FakeProvider(folders)
    tree = make_tree(provider)

    def records_listed() -> set[str]:
        return {name for name in provider.calls if "d" in name}

    def first_records(n: int) -> set[str]:  # the first n records in walk order
        return {f"r{k // per_room}d{k % per_room}" for k in range(min(n, rooms * per_room))}

    async def walk_into(node: Node) -> list[Node]:
        tree.remember(node)  # as a readdirplus reply does
        children = list(await tree.children(node.inode))
        await trio.testing.wait_all_tasks_blocked()
        return children

    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        tree.attach(nursery)
        room_nodes = list(await tree.children(provider_inode(tree)))
        await trio.testing.wait_all_tasks_blocked()
        assert records_listed() == set()  # the rooms are listed ahead, not yet their records
        records = await walk_into(room_nodes[0])
        assert records_listed() == first_records(per_room)  # the room's own, as before
        await walk_into(records[0])
        assert records_listed() == first_records(1 + ahead)  # on into rooms 1 and 2
        await walk_into(records[-1])
        assert records_listed() == first_records(per_room + ahead)  # into room 3
        nursery.cancel_scope.cancel()
    assert set(provider.calls.values()) == {1}  # each directory listed once


async def test_a_listing_someone_waits_for_goes_before_those_listed_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One listing of the instance at a time; "ahead" is listed first and "queued" waits its turn (as
    # directory readahead does). A walker that then stands in "queued" must not wait for "ahead" to end.
    provider = FakeProvider({"ahead": videos(1), "queued": videos(2)})
    provider.delay = 90.0
    listings = ListingCache(ttl=300, negative_ttl=10, stats=Stats(), concurrency=1)
    async with trio.open_nursery() as nursery:
        listings.attach(nursery)
        for name in ("ahead", "queued"):  # one after the other: trio does not promise an order of start
            nursery.start_soon(
                functools.partial(listings.listing, "fake", provider, Folder(name, name), urgent=False)
            )
            await trio.testing.wait_all_tasks_blocked()
        assert provider.calls == {"ahead": 1}  # "queued" waits for the one place
        with trio.fail_after(91):  # its own 90 s, not 90 more behind "ahead"
            listing = await listings.listing("fake", provider, Folder("queued", "queued"))
        nursery.cancel_scope.cancel()
    assert len(listing.entries) == 2 and provider.calls == {"ahead": 1, "queued": 1}


@pytest.mark.parametrize(("listing_calls", "at_once"), [(1, 16), (8, 2), (64, 1)])
async def test_listings_at_once_count_the_calls_each_asks_at_once(
    autojump_clock: trio.testing.MockClock, listing_calls: int, at_once: int
) -> None:
    # 16 calls' worth of listings: 16 that ask one call at a time, 2 that ask 8 at once (VALT rooms), and
    # still one that asks more than all. The others wait their turn, and all are listed in the end.
    provider = FakeProvider({f"d{i}": videos(1) for i in range(20)})
    provider.listing_calls = listing_calls  # type: ignore[attr-defined]
    provider.delay = 1.0
    listings = ListingCache(ttl=300, negative_ttl=10, stats=Stats(), concurrency=16)
    done: list[str] = []

    async def ahead(name: str) -> None:
        await listings.listing("fake", provider, Folder(name, name), urgent=False)
        done.append(name)

    async with trio.open_nursery() as nursery:
        listings.attach(nursery)
        for name in provider.folders:
            nursery.start_soon(ahead, name)
        await trio.testing.wait_all_tasks_blocked()
        assert sum(provider.calls.values()) == at_once
    assert sorted(done) == sorted(provider.folders) and set(provider.calls.values()) == {1}


async def test_a_stale_listing_is_served_at_once_while_it_refreshes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = FakeProvider({"root": videos(2)})
    tree = make_tree(provider, ttl=10.0)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        first = await tree.children(provider_inode(tree))
        provider.folders["root"] = videos(3)
        provider.delay = 5.0
        await trio.sleep(11)  # the listing is now stale
        with trio.fail_after(0.001):  # answered without waiting for the vendor
            stale = await tree.children(provider_inode(tree))
        await trio.sleep(6)
        fresh = await tree.children(provider_inode(tree))
        nursery.cancel_scope.cancel()
    assert len(first) == len(stale) == 2 and len(fresh) == 3
    assert provider.calls == {"root": 2}


async def test_a_failing_listing_is_retried_with_backoff_not_on_every_access(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = FakeProvider({"root": videos(2)})
    provider.fail = lambda: RemoteIOError("HTTP 503", status=503)
    tree = make_tree(provider)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        failures = 0
        for _ in range(200):  # 200 accesses over 20 s of virtual time
            try:
                await tree.children(provider_inode(tree))
            except RemoteIOError:
                failures += 1
            await trio.sleep(0.1)
        calls_while_failing = provider.calls["root"]
        provider.fail = None
        await trio.sleep(120)  # the backoff is capped: the next try comes within it
        names = [n.name for n in await tree.children(provider_inode(tree))]
        nursery.cancel_scope.cancel()
    assert failures == 200
    assert 2 <= calls_while_failing <= 8  # 1 s, 2 s, 4 s, 8 s … apart, not 200
    assert names == ["v000000.mp4", "v000001.mp4"]


async def test_while_a_vendor_is_unreachable_known_listings_answer_without_asking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folders: dict[str, list[Folder | Video]] = {"root": [Folder(f"d{i}", f"dir {i}") for i in range(50)]}
    folders.update({f"d{i}": videos(3, prefix=f"d{i}-") for i in range(50)})
    provider = FakeProvider(folders)
    tree = make_tree(provider, ttl=60.0)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        top = await tree.children(provider_inode(tree))
        for directory in top:
            tree.remember(directory)
            await tree.children(directory.inode)
        await trio.sleep(61)  # everything is stale now, and the vendor goes away
        provider.fail = lambda: UnreachableError("connection refused")
        before = sum(provider.calls.values())
        with trio.fail_after(0.001):  # the whole walk answers without waiting for anything
            for directory in await tree.children(provider_inode(tree)):
                assert len(await tree.children(directory.inode)) == 3
        await trio.sleep(30)
        for directory in await tree.children(provider_inode(tree)):
            await tree.children(directory.inode)
        nursery.cancel_scope.cancel()
    # At most one fetch per concurrency slot before the instance is known down; then one probe per backoff
    # period (1, 2, 4, 8, 16 s … apart) over the 30 s.
    assert sum(provider.calls.values()) - before <= 4 + 6


async def test_a_new_name_is_found_by_a_refresh_after_negative_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = FakeProvider({"root": videos(1)})
    tree = make_tree(provider, negative_ttl=10.0)
    async with trio.open_nursery() as nursery:
        tree.listings.attach(nursery)
        await tree.children(provider_inode(tree))
        provider.folders["root"] = videos(2)
        with pytest.raises(NotFoundError):  # too soon: the listing is younger than negative_ttl
            await tree.lookup(provider_inode(tree), "v000001.mp4")
        await trio.sleep(11)
        node = await tree.lookup(provider_inode(tree), "v000001.mp4")
        nursery.cancel_scope.cancel()
    assert node.size == 1001


# ------------------------------------------------------------------------------------------ the tree
async def test_a_path_through_a_file_is_enotdir() -> None:
    tree = make_tree(FakeProvider({"root": videos(1)}))
    file = (await tree.children(provider_inode(tree)))[0]
    tree.remember(file)
    with pytest.raises(NotDirectoryError) as caught:
        await tree.lookup(file.inode, "anything")
    assert to_errno(caught.value) == errno.ENOTDIR


async def test_forgotten_nodes_leave_the_table() -> None:
    folders: dict[str, list[Folder | Video]] = {"root": [Folder("big", "big")], "big": videos(10_000)}
    tree = make_tree(FakeProvider(folders))
    (big,) = await tree.children(provider_inode(tree))
    tree.remember(big)
    baseline = len(tree.nodes)
    for _round in range(3):
        for node in await tree.children(big.inode):
            tree.remember(node)
        assert len(tree.nodes) == baseline + 10_000
        for node in await tree.children(big.inode):
            tree.forget(node.inode, 1)
        assert len(tree.nodes) == baseline
    tree.forget(big.inode, 1)
    assert big.inode not in tree.nodes
    assert tree.statistics()["directories"] == 2  # the mount root's and the provider's, not big's


async def test_a_directory_built_again_keeps_the_nodes_of_its_previous_build() -> None:
    """A re-listing after `vidfs refresh`, when the kernel has forgotten the children: the new build takes
    the previous build's node of each entry still there under its name (a second set of 100,000 nodes
    beside the first was 15 MiB), with the entry and size of now; a renamed video gets a new node under
    the same inode, a new video a node of its own."""
    folders: dict[str, list[Folder | Video]] = {"root": [Folder("big", "big")], "big": videos(1000)}
    tree = make_tree(FakeProvider(folders))
    (big,) = await tree.children(provider_inode(tree))
    tree.remember(big)
    before = {node.name: node for node in await tree.children(big.inode)}
    changed = [*videos(1000)[:998], Video("v998", "renamed.mp4", size=7, mtime=1.0)]
    changed[3] = Video("v3", "v000003.mp4", size=3333, mtime=2.0)  # a new version of it
    folders["big"] = [*changed, Video("new", "new.mp4", size=5, mtime=1.0)]  # v999 gone
    tree.listings.invalidate("fake", "big")
    after = {node.name: node for node in await tree.children(big.inode)}
    assert set(after) == (set(before) - {"v000998.mp4", "v000999.mp4"}) | {"renamed.mp4", "new.mp4"}
    assert all(after[name] is before[name] for name in after if name in before)
    assert after["v000003.mp4"].size == 3333 and after["v000003.mp4"].entry is changed[3]
    assert after["renamed.mp4"] is not before["v000998.mp4"]
    assert after["renamed.mp4"].inode == before["v000998.mp4"].inode
    assert after["new.mp4"].inode not in {node.inode for node in before.values()}


async def test_chaos_nodes_of_a_churning_catalog_are_freed() -> None:
    """Ten rounds of 10,000 names never seen before, each looked up and forgotten: the inode table and
    the memory held return to where they were (the old tree kept every node it ever made)."""
    folders: dict[str, list[Folder | Video]] = {"root": [Folder("cam", "cam")], "cam": videos(10_000)}
    tree = make_tree(FakeProvider(folders))
    (cam,) = await tree.children(provider_inode(tree))
    tree.remember(cam)
    baseline = len(tree.nodes)
    gc.collect()
    tracemalloc.start()
    try:
        for round_ in range(10):
            folders["cam"] = videos(10_000, prefix=f"r{round_}-")
            tree.listings.invalidate("fake", "cam")
            children = await tree.children(cam.inode)
            assert children[0].name.startswith(f"r{round_}-")
            for node in children:
                tree.remember(node)
            for node in children:
                tree.forget(node.inode, 1)
            del children
            gc.collect()
            if round_ == 0:
                start, _ = tracemalloc.get_traced_memory()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tree.nodes) == baseline
    assert end - start < 1 << 20  # the memory of one listing at most moved, not ten


async def test_an_open_file_keeps_its_node_after_the_kernel_forgets_it() -> None:
    tree = make_tree(FakeProvider({"root": videos(1)}))
    (file,) = await tree.children(provider_inode(tree))
    tree.remember(file)
    tree.hold(file)
    tree.forget(file.inode, 1)
    assert tree.get(file.inode) is file
    tree.release(file)
    assert file.inode not in tree.nodes


async def test_inodes_are_stable_across_trees() -> None:
    folders: dict[str, list[Folder | Video]] = {"root": videos(100)}
    tree_a, tree_b = make_tree(FakeProvider(folders)), make_tree(FakeProvider(folders))
    a = {n.name: n.inode for n in await tree_a.children(provider_inode(tree_a))}
    b = {n.name: n.inode for n in await tree_b.children(provider_inode(tree_b))}
    assert a == b and len(set(a.values())) == 100


async def test_items_hashing_alike_get_their_own_inodes_the_same_in_every_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A directory's nodes are checked for two alike only after they are made: force two pairs of ids to
    # hash alike, and one id listed twice, and every build must still give each item its own number.
    real = tree_module.stable_inode

    def coarse(instance: str, kind: str, remote_id: str, salt: int = 0) -> int:
        alias = {"v3": "v1", "v7": "v5"}.get(remote_id, remote_id)
        return real(instance, kind, alias, salt)

    monkeypatch.setattr(tree_module, "stable_inode", coarse)
    listed = videos(10)
    twice = [*listed, listed[4]]  # an API that gives one video twice
    seen = []
    for entries in (listed, list(reversed(listed)), twice):
        tree = make_tree(FakeProvider({"root": entries}))
        children = await tree.children(provider_inode(tree))
        by_id: dict[str, set[int]] = {}
        for node in children:
            by_id.setdefault(node.video.remote_id, set()).add(node.inode)
        assert all(len(numbers) == 1 for numbers in by_id.values())  # one number per item...
        assert len({number for (number,) in by_id.values()}) == 10  # ...its own
        seen.append({remote_id: number for remote_id, (number,) in by_id.items()})
    # The later of two alike takes the next number: listed the other way round, the pair swaps them.
    assert seen[1] == {
        **seen[0],
        "v1": seen[0]["v3"],
        "v3": seen[0]["v1"],
        "v5": seen[0]["v7"],
        "v7": seen[0]["v5"],
    }
    assert seen[2] == seen[0]


# ------------------------------------------------------------------------------------------ snapshot
async def test_chaos_snapshot_saves_under_churn_and_loads(tmp_path: Path) -> None:
    stats, listings, keeper = make_keeper(tmp_path / "meta")
    provider = FakeProvider({f"f{i}": videos(5, prefix=f"f{i}-") for i in range(200)})
    async with trio.open_nursery() as nursery:
        saved = trio.Event()

        async def churn() -> None:
            # 50,000 listing changes while saves run in a worker thread. Every fifth round the churn waits for
            # the save in flight to end: a trio thread that never stops computing would starve the writer of
            # the GIL (each of its syscalls hands the GIL back and waits up to the switch interval for it),
            # and then only two or three saves would overlap the whole churn.
            for round_ in range(250):
                for i in range(200):
                    provider.folders[f"f{i}"] = videos(5 + round_ % 3, prefix=f"f{i}-")
                    listings.invalidate("fake", f"f{i}")
                    await listings.listing("fake", provider, Folder(f"f{i}", f"f{i}"))
                rounds.append(round_)
                await trio.lowlevel.checkpoint()
                if round_ % 5 == 4:
                    await saved.wait()

        async def save_often() -> None:
            nonlocal saved
            while True:
                await keeper.save()
                saves.append(1)
                saved.set()
                saved = trio.Event()
                await trio.lowlevel.checkpoint()

        saves: list[int] = []
        rounds: list[int] = []

        nursery.start_soon(save_often)
        await churn()
        nursery.cancel_scope.cancel()
    await keeper.save()
    assert len(saves) >= 50  # saves really ran while the listings changed
    fresh = ListingCache(ttl=300, negative_ttl=10, stats=stats)
    other = SnapshotKeeper(fresh, keeper.probes, tmp_path / "meta", ["fake"], stats)
    assert other.install(await trio.to_thread.run_sync(other.read)) == 200
    final = [fresh.get("fake", f"f{i}") for i in range(200)]
    assert all(listing is not None and len(listing.entries) == 5 + rounds[-1] % 3 for listing in final)


async def test_a_snapshot_that_cannot_be_written_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "meta"
    blocked.write_text("a file where the snapshot directory should be")
    stats, listings, keeper = make_keeper(blocked)
    provider = FakeProvider({"f": videos(2)})
    for _ in range(3):
        listings.invalidate("fake", "f")
        await listings.listing("fake", provider, Folder("f", "f"))
        await keeper.save()
    assert stats.counters["snapshot.save_failures"] == 3
    assert len([r for r in caplog.records if "cannot save the listing snapshot" in r.message]) == 1
    blocked.unlink()
    await keeper.save()  # the dirty listing was kept: it is written once the directory can be made
    assert [entry.name for entry in keeper.read()["fake"].listings["f"][0].entries] == [
        "v000000.mp4",
        "v000001.mp4",
    ]


async def test_a_damaged_snapshot_or_one_of_an_older_format_is_removed_and_written_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _stats, listings, keeper = make_keeper(tmp_path / "meta")
    old = tmp_path / "meta" / ("0" * 32)  # format 2: a directory of JSON files per instance
    old.mkdir(parents=True)
    (old / "L-x.json").write_text("{}")
    keeper.path.write_bytes(b"not a database, " * 1000)
    assert keeper.read()["fake"].listings == {}
    assert not old.exists() and not keeper.path.exists()
    assert len([r for r in caplog.records if "unreadable listing snapshot" in r.message]) == 1
    await listings.listing("fake", FakeProvider({"f": videos(2)}), Folder("f", "f"))
    await keeper.save()
    assert len(keeper.read()["fake"].listings["f"][0].entries) == 2
    # a listing whose rows do not add up is skipped, the others load
    with contextlib.closing(sqlite3.connect(keeper.path)) as db, db:
        db.execute("UPDATE listings SET entries = 3")
    assert keeper.read()["fake"].listings == {}

    # so is one with a row that is more than one JSON value, or less, or an entry that is not one
    def change(sql: str, *values: object) -> None:
        with contextlib.closing(sqlite3.connect(keeper.path)) as db, db:
            db.execute(sql, values)

    change("UPDATE listings SET entries = 2")
    saved = keeper.read()["fake"].listings["f"][0]
    assert len(saved.entries) == 2
    with contextlib.closing(sqlite3.connect(keeper.path)) as db:
        (listing_id, whole), *more = db.execute("SELECT listing, row FROM rows").fetchall()
    assert not more  # both entries in one row
    first, second = json.loads(whole)
    damages = ("row || '[]'", "substr(row, 1, length(row) - 1)", "'x' || row", "''", "'[]'", "'[[]]'")
    for damage in (*damages, f"'[{json.dumps(first)}, \"x\"]'"):
        change(f"UPDATE rows SET row = {damage}")
        assert keeper.read()["fake"].listings == {}, damage
        change("UPDATE rows SET row = ?", whole)
    # rows of one entry each, as written before a row held several, read the same
    change("DELETE FROM rows")
    for position, entry in enumerate((first, second)):
        change("INSERT INTO rows VALUES (?, ?, ?)", listing_id, position, json.dumps(entry))
    assert keeper.read()["fake"].listings["f"][0] == saved


def test_a_big_listing_is_saved_a_few_hundred_entries_to_a_row_and_read_back_whole(tmp_path: Path) -> None:
    """A listing of more entries than a row holds, hidden items after them, and a listing of none: rows of
    ROW_ENTRIES, read back in order, equal."""
    count = 2 * ROW_ENTRIES + 3
    big = Listing(
        (Folder("sub", "sub"), *videos(count - 1)),
        tuple(HiddenItem(f"h{i}", f"rendering {i}", "processing") for i in range(3)),
    )
    db = snapshot_module._connect(tmp_path / "snapshot.sqlite3")
    with db:
        snapshot_module.write_listings(db, [("fake", "f", big, 5.0), ("fake", "empty", Listing((), ()), 6.0)])
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == 3  # 515 entries and 3 hidden items
    loaded = snapshot_module.load(db, ["fake"])["fake"].listings
    assert loaded == {"f": (big, 5.0), "empty": (Listing((), ()), 6.0)}
    db.close()


def described(count: int, prefix: str = "v", note: str = "n") -> list[Folder | Video]:
    """Videos with xattr values, one of them without any."""
    made: list[Folder | Video] = [
        Video(f"{prefix}{i}", f"{prefix}{i}.mp4", 10, 1.0, extra=frozen_extra({"note": f"{note}{i}"}))
        for i in range(count - 1)
    ]
    return [*made, Video(f"{prefix}bare", f"{prefix}bare.mp4", size=10, mtime=1.0)]


async def test_saved_xattrs_rest_on_disk_and_read_back_the_same_across_a_remount(tmp_path: Path) -> None:
    """Once saved, a served listing's videos keep their xattr values in the snapshot database (one object
    for the listing in memory, not a map and its string each), read back equal when asked, after a remount
    too; a listing replaced before its save keeps them in memory; a rewrite keeps the values of videos
    still listed and drops the others'; a lost database leaves those videos without xattrs, counted, never
    another's."""
    stats, listings, keeper = make_keeper(tmp_path / "meta")
    provider = FakeProvider({"f": described(4), "g": described(3, prefix="w")})
    first = await listings.listing("fake", provider, Folder("f", "f"))
    await keeper.save()
    f_videos = [entry for entry in first.entries if isinstance(entry, Video)]
    assert all(video.extra is f_videos[0].extra for video in f_videos[:-1])
    assert isinstance(f_videos[0].extra, Place)
    assert isinstance(f_videos[-1].extra, FrozenMap) and not f_videos[-1].extra  # nothing to keep
    assert [dict(video.xattrs) for video in f_videos] == [{"note": "n0"}, {"note": "n1"}, {"note": "n2"}, {}]
    assert f_videos[1].xattrs["note"] == "n1" and list(f_videos[2].xattrs.items()) == [("note", "n2")]

    listed = await listings.listing("fake", provider, Folder("g", "g"))
    provider.folders["g"] = described(3, prefix="w", note="changed")
    listings.invalidate("fake", "g")
    replaced = await listings.listing("fake", provider, Folder("g", "g"))
    assert replaced is not listed
    await keeper.save()
    assert all(isinstance(e.extra, FrozenMap) for e in listed.entries if isinstance(e, Video))  # not served
    assert [dict(e.xattrs) for e in replaced.entries if isinstance(e, Video)] == [
        {"note": "changed0"},
        {"note": "changed1"},
        {},
    ]

    # A remount: the values stay on disk until asked, and are the same.
    _stats, fresh, other = make_keeper(tmp_path / "meta")
    assert other.install(await trio.to_thread.run_sync(other.read)) == 2
    loaded = fresh.get("fake", "f")
    assert loaded is not None and isinstance(loaded.entries[0], Video)
    assert isinstance(loaded.entries[0].extra, Place)
    assert [dict(e.xattrs) for e in loaded.entries if isinstance(e, Video)] == [
        {"note": "n0"},
        {"note": "n1"},
        {"note": "n2"},
        {},
    ]

    # The same listing written again keeps the values of its videos at rest; one that left takes its own.
    provider.folders["f"] = [f_videos[0], f_videos[2], *described(2, prefix="new")]
    listings.invalidate("fake", "f")
    await listings.listing("fake", provider, Folder("f", "f"))
    await keeper.save()
    with contextlib.closing(sqlite3.connect(keeper.path)) as db:
        held = sorted(rid for (rid,) in db.execute("SELECT remote_id FROM extras WHERE listing = 1"))
    assert held == ["new0", "v0", "v2"]
    assert dict(f_videos[0].xattrs) == {"note": "n0"} and dict(f_videos[2].xattrs) == {"note": "n2"}
    assert "extras_missing" not in str(stats.counters)

    # The database lost: those videos show no xattrs (counted), and nothing else.
    keeper.extras.close()
    snapshot_module._remove_database(keeper.path)
    assert dict(f_videos[0].xattrs) == {}
    assert stats.counters["snapshot.extras_missing"] == 1


def _contents(table: AnswerTable) -> dict[str, Probe]:
    """Every live answer of `table` by id."""
    found = (table.at(row) for row in table.rows())
    return {remote_id: probe for remote_id, probe in filter(None, found)}


async def test_probe_answers_are_saved_as_they_come_and_all_again_after_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save writes the chunks of rows with sizes learned since the last one (not every size known
    again); one that failed leaves the database's content unknown, so the next writes them all. What a
    remount reads back is every answer, each as it was last learned."""
    monkeypatch.setattr(answers_module, "CHUNK_ROWS", 64)
    _stats, _listings, keeper = make_keeper(tmp_path / "meta")
    written: list[tuple[list[int], bool]] = []
    disk_full = False
    original = snapshot_module.write_answers

    def counting(db: sqlite3.Connection, instance: str, chunks: list[Chunk], *, whole: bool) -> None:
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(([chunk.number for chunk in chunks], whole))
        original(db, instance, chunks, whole=whole)

    def learn(first: int, count: int, size: int = 1000) -> None:
        for i in range(first, first + count):
            keeper.probes.learn(("fake", f"v{i}", "fp"), Probe(size + i, None))

    monkeypatch.setattr(snapshot_module, "write_answers", counting)
    learn(0, 100)
    await keeper.save()
    learn(100, 5)
    await keeper.save()
    learn(3, 1, size=5000)  # a new answer for an early video: its row, in the first chunk
    await keeper.save()
    assert written == [([0, 1], False), ([1], False), ([0], False)]
    learn(105, 3)
    disk_full = True
    await keeper.save()  # failed: what the database holds now is not known
    disk_full = False
    learn(108, 30)
    await keeper.save()
    assert written[3:] == [([0, 1, 2], True)]
    loaded = keeper.read()["fake"]
    expected = {f"v{i}": Probe(1000 + i, None, basis_of("fp")) for i in range(138)}
    expected["v3"] = Probe(5003, None, basis_of("fp"))
    assert _contents(loaded.probes) == expected and loaded.numbered


def test_new_listings_go_in_together_and_known_ones_are_replaced_and_each_reads_back(tmp_path: Path) -> None:
    """A save of many listings new to the database (a walk's records) writes them a few statements for all,
    across batches; one already there is replaced (its gone videos' xattr values go). Each reads back as
    it was written last, its xattr values at rest."""

    def listing(record: int, count: int) -> Listing:
        return Listing(
            tuple(
                Video(
                    f"r{record}/v{n}",
                    f"{record}-{n}.mp4",
                    size=n,
                    mtime=5.0,
                    extra=frozen({"camera": str(n)}),
                )
                for n in range(count)
            )
        )

    first = [("valt", f"rec:{i}", listing(i, 2), 100.0 + i) for i in range(600)]
    second = [("valt", f"rec:{i}", listing(i, 1), 200.0) for i in range(0, 600, 7)]
    second += [("valt", f"rec:{i}", listing(i, 3), 300.0) for i in range(600, 1000)]
    path = tmp_path / "snapshot.sqlite3"
    db = snapshot_module._connect(path)
    reader = ExtrasReader(path, Stats())
    try:
        for items in (first, second):
            with db:
                db.execute("BEGIN")
                snapshot_module.write_listings(db, items)
        loaded = snapshot_module.load(db, ["valt"], reader)["valt"].listings
        expected = {folder: (written, fetched) for _, folder, written, fetched in first + second}  # last wins

        def shown(listing: Listing) -> list[tuple[Any, ...]]:
            return [(e.remote_id, e.name, e.size, dict(e.xattrs)) for e in listing.entries]

        assert sorted(loaded) == sorted(expected)
        for folder, (written, fetched) in expected.items():
            assert (shown(loaded[folder][0]), loaded[folder][1]) == (shown(written), fetched), folder
        videos = sum(len(written.entries) for written, _ in expected.values())
        assert db.execute("SELECT count(*) FROM extras").fetchone()[0] == videos
        assert db.execute("SELECT count(DISTINCT id) FROM listings").fetchone()[0] == 1000
    finally:
        reader.close()
        db.close()


async def test_a_snapshot_answer_holds_for_its_own_fingerprint_and_an_older_format_is_emptied(
    tmp_path: Path,
) -> None:
    """After a remount an answer is used for its own version of the video only. A database of format 4
    (a row per answer) is emptied, its table of answers dropped."""
    _stats, _listings, keeper = make_keeper(tmp_path / "meta")
    same, changed = Video("v1", "a.mp4", mtime=5.0), Video("v1", "a.mp4", mtime=6.0)
    keeper.probes.learn(("fake", "v1", same.fingerprint), Probe(1234, '"e"'))
    await keeper.save()
    _stats, _listings, fresh = make_keeper(tmp_path / "meta")
    fresh.install(fresh.read())
    assert fresh.probes.known("fake", same) == Probe(1234, '"e"', basis_of(same.fingerprint))
    assert fresh.probes.known("fake", changed) is None

    with contextlib.closing(sqlite3.connect(keeper.path)) as db, db:
        db.execute(
            "CREATE TABLE probes (instance TEXT, remote_id TEXT, fingerprint TEXT, size INT, etag TEXT)"
        )
        db.execute("INSERT INTO probes VALUES ('fake', 'v1', ?, 1234, NULL)", (same.fingerprint,))
        db.execute("UPDATE meta SET value = '4' WHERE key = 'format'")
    _stats, _listings, older = make_keeper(tmp_path / "meta")
    older.install(older.read())
    assert older.probes.known("fake", same) is None
    with contextlib.closing(sqlite3.connect(keeper.path)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "probes" not in tables and db.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


async def test_a_chunk_of_answers_this_program_cannot_have_written_is_skipped_and_all_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose rows and ids do not line up, or whose JSON is not a list of ids and a table of ETags,
    is not loaded (those videos' sizes are asked again); the other chunks are. The rows then have other
    numbers than the database's chunks, so the next save writes them all, and a remount after it reads
    the same answers."""
    monkeypatch.setattr(answers_module, "CHUNK_ROWS", 4)
    _stats, _listings, keeper = make_keeper(tmp_path / "meta")
    fp = Video("v", "v.mp4", mtime=5.0).fingerprint
    for i in range(20):
        keeper.probes.learn(("fake", f"v{i}", fp), Probe(i, f"text-{i}" if i % 2 else None))
    await keeper.save()
    damage = {
        1: "UPDATE answers SET rows = substr(rows, 2) WHERE chunk = 1",
        2: "UPDATE answers SET ids = '{\"v8\": 1}' WHERE chunk = 2",
        3: "UPDATE answers SET texts = '[\"text-13\"]' WHERE chunk = 3",
    }
    with contextlib.closing(sqlite3.connect(keeper.path)) as db, db:
        for statement in damage.values():
            db.execute(statement)
    _stats, _listings, fresh = make_keeper(tmp_path / "meta")
    loaded = fresh.read()["fake"]
    assert not loaded.numbered
    expected = {
        f"v{i}": Probe(i, f"text-{i}" if i % 2 else None, basis_of(fp)) for i in (0, 1, 2, 3, 16, 17, 18, 19)
    }
    assert _contents(loaded.probes) == expected
    fresh.install({"fake": loaded})
    fresh.probes.learn(("fake", "v4", fp), Probe(4, None))
    await fresh.save()
    with contextlib.closing(sqlite3.connect(keeper.path)) as db:
        assert [n for (n,) in db.execute("SELECT chunk FROM answers ORDER BY chunk")] == [0, 1, 2]
    _stats, _listings, again = make_keeper(tmp_path / "meta")
    reloaded = again.read()["fake"]
    assert reloaded.numbered and _contents(reloaded.probes) == {
        **expected,
        "v4": Probe(4, None, basis_of(fp)),
    }


@pytest.mark.parametrize(
    "etag",
    [
        None,
        '"0123456789abcdef0123456789abcdef"',
        'W/"0123456789abcdef0123456789abcdef"',
        '"5f3c-1a2b"',
        "é\udc80",
        "",
    ],
)
def test_an_answer_is_kept_in_a_row_and_read_back_as_it_was(etag: str | None) -> None:
    """Every ETag comes back as it was told, and the usual quoted MD5 hex takes its row's 16 bytes (no
    string kept beside the row); a size beyond 64 bits is refused."""
    probe = Probe(5 * 2**40, etag, basis_of("etag:x"))
    table = AnswerTable()
    table.put("v1", probe)
    assert table.get("v1") == probe and table.get("v1", probe.basis) == probe
    assert table.get("v1", probe.basis + 1) is None
    assert list(table.sizes([("v1", probe.basis), ("v1", probe.basis + 1), None], -1)) == [probe.size, -1, -1]
    assert bool(table._texts) == (etag is not None and etag != '"0123456789abcdef0123456789abcdef"')
    stats = Stats()
    probes = SizeProbes(http=HttpClient(stats=stats), resolver=Resolver(stats), stats=stats)
    video = Video("v1", "1.mp4", mtime=1796284524.0)
    probes.learn(("fake", "v1", video.fingerprint), Probe(1000, etag))
    assert probes.known("fake", video) == Probe(1000, etag, basis_of(video.fingerprint))
    with pytest.raises(ValueError):
        table.put("v2", Probe(2**64, etag))
    assert table.get("v2") is None and len(table) == 1


def test_a_table_loaded_from_its_chunks_answers_as_the_one_they_were_taken_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`AnswerTable.load` (a remount's snapshot) of a table's chunks gives its answers, ETags of every form
    and forgotten rows included; an id given twice keeps its last answer (whatever its ETag's form); and
    the table then takes, overwrites, forgets and grows as any other."""
    monkeypatch.setattr(answers_module, "CHUNK_ROWS", 16)
    md5 = '"0123456789abcdef0123456789abcdef"'
    etags = [None, md5, 'W/"weak"', "plain"]
    original = AnswerTable()
    for i in range(300):
        original.put(f"v{i}", Probe(i * 1000, etags[i % 4], basis_of(f"etag:{i}")))
    assert original.forget("v5", basis_of("etag:5"))
    chunks = [original.chunk(number) for number in range(original.chunk_count())]
    assert [len(chunk.ids) for chunk in chunks] == [16] * 18 + [12]
    loaded = AnswerTable()
    assert loaded.load(chunks)
    assert _contents(loaded) == _contents(original) and len(loaded) == len(original) == 299
    assert loaded.get("v5") is None and loaded.get("v2") == Probe(2000, 'W/"weak"', basis_of("etag:2"))

    twice = AnswerTable()  # v7 in a later chunk (a damaged database): its last answer holds
    later = AnswerTable()
    for remote_id, probe in (
        ("v7", Probe(7, None, 7)),
        ("v9", Probe(9, md5, 9)),
        ("v1", Probe(1, "text", 1)),
    ):
        later.put(remote_id, probe)
    moved = later.chunk(0)
    assert not twice.load([*chunks, Chunk(len(chunks), moved.ids, moved.rows, moved.texts)])
    assert twice.get("v7") == Probe(7, None, 7) and twice.get("v9") == Probe(9, md5, 9)
    assert twice.get("v1") == Probe(1, "text", 1) and len(twice) == 299 + 0
    loaded.put("v1", Probe(1, None, 1))
    assert loaded.forget("v2", basis_of("etag:2")) and loaded.get("v2") is None and len(loaded) == 298
    for i in range(300, 1000):  # grows past the size it was loaded at
        loaded.put(f"v{i}", Probe(i, None, i))
    assert list(loaded.sizes(((f"v{i}", i) for i in range(300, 1000)), -1)) == list(range(300, 1000))
    assert loaded.get("v1") == Probe(1, None, 1)
    with pytest.raises(ValueError):
        loaded.load(chunks)


def test_a_fingerprint_is_what_its_fields_format_to_whatever_came_before() -> None:
    """The last fingerprint is kept for the next video with the same size and mtime: never for values
    that compare equal but format apart (5 and 5.0, 0.0 and -0.0, 1 and True)."""
    values: list[tuple[Any, Any]] = [
        (None, 1796284524.0),
        (None, 1796284524),
        (1, 5.0),
        (True, 5.0),
        (1, 5),
        (None, 0.0),
        (None, -0.0),
        (None, math.nan),
        (None, None),
        (0, None),
    ]
    for first, second in [(a, b) for a in values for b in values]:
        for size, mtime in (first, second):
            assert Video("v", "v.mp4", size, mtime).fingerprint == f"sm:{size}:{mtime}"
    assert Video("v", "v.mp4", 1, 5.0, etag='"e1"').fingerprint == 'etag:"e1"'


def test_a_maps_values_are_one_string_unless_one_holds_the_separator() -> None:
    keys = ("a", "b", "c")
    plain = FrozenMap.of(keys, ("1", "", "three"))
    assert plain._values == "1\0\0three"  # one string: no object per value
    assert dict(plain) == {"a": "1", "b": "", "c": "three"} and plain.columns() == (keys, ("1", "", "three"))
    awkward = FrozenMap.of(keys, ("x\0y", "", "\0"))  # JSON may carry a NUL: the tuple form keeps it exact
    assert awkward._values == ("x\0y", "", "\0")
    assert dict(awkward) == {"a": "x\0y", "b": "", "c": "\0"}
    one = FrozenMap.of(("url",), ("https://s/a",))
    assert (
        one._values == "https://s/a" and one["url"] == "https://s/a" and dict(one) == {"url": "https://s/a"}
    )
    assert dict(FrozenMap.of(("k",), ("",))) == {"k": ""} and dict(FrozenMap()) == {}
    assert FrozenMap().columns() == ((), ())
    # Built either way, equal maps are equal and hash alike, also to a dict of the same items.
    again = FrozenMap([("c", "three"), ("a", "1"), ("b", "")])
    assert again == plain and hash(again) == hash(plain) and plain == {"a": "1", "b": "", "c": "three"}
    assert plain != FrozenMap.of(keys, ("1", "", "3")) and plain != awkward
    assert again._keys is plain._keys  # one key tuple for every map with these keys
    with pytest.raises(ValueError):
        FrozenMap.of(keys, ("1", "2"))


def test_a_video_keeps_one_probe_answer_and_a_changed_one_replaces_it() -> None:
    stats = Stats()
    probes = SizeProbes(http=HttpClient(stats=stats), resolver=Resolver(stats), stats=stats)
    old, new = Video("v1", "a.mp4", etag="e1"), Video("v1", "a.mp4", etag="e2")
    probes.learn(("fake", "v1", old.fingerprint), Probe(100, "e1"))
    assert probes.known("fake", old) == Probe(100, "e1", basis_of(old.fingerprint))
    assert probes.known("fake", new) is None
    probes.learn(("fake", "v1", new.fingerprint), Probe(200, "e2"))
    assert probes.known("fake", old) is None
    assert probes.known("fake", new) == Probe(200, "e2", basis_of(new.fingerprint))
    assert probes.statistics()["known"] == 1
    # Only the answer that still holds is written (its chunk, once); a stale seed from a snapshot does not
    # replace it, and leaves the rows numbered apart from the snapshot's chunks.
    answer = Probe(200, "e2", basis_of(new.fingerprint))
    taken = probes.take_unsaved()
    assert list(taken) == ["fake"] and [(c.number, c.ids) for c in taken["fake"]] == [(0, ["v1"])]
    loaded = AnswerTable()
    loaded.load(taken["fake"])
    assert _contents(loaded) == {"v1": answer}
    stale = AnswerTable()
    stale.put("v1", Probe(100, "e1", basis_of(old.fingerprint)))
    assert not probes.seed("fake", stale)
    assert probes.known("fake", new) == answer
    probes.forget("fake", new)
    assert probes.known("fake", new) is None and probes.statistics()["known"] == 0
    # Forgotten, it is written dead; a stale seed now fills the gap (it holds for the old version only).
    probes.learn(("fake", "v1", new.fingerprint), answer)
    probes.forget("fake", new)
    forgotten = AnswerTable()
    forgotten.load(probes.take_unsaved()["fake"])
    assert _contents(forgotten) == {}
    probes.seed("fake", stale)
    assert probes.known("fake", old) == Probe(100, "e1", basis_of(old.fingerprint))


def test_a_table_of_answers_finds_each_of_many_ids_through_growth_forgets_and_new_versions() -> None:
    """Rows are found by id through every growth of the index (ids that share a slot included), a new
    answer for an id overwrites its row, a forgotten row is skipped until learned again, and the snapshot
    writer's view of some rows reads each as it is when read."""
    table = AnswerTable()
    ids = [f"cam/{i:05d}" for i in range(5000)]
    rows = [table.put(rid, Probe(i, f'"{i:032x}"' if i % 3 else f"text-{i}", i)) for i, rid in enumerate(ids)]
    assert rows == list(range(5000)) and len(table) == 5000 and len(table._index) >= 2 * 5000
    assert all(
        table.get(rid, i) == Probe(i, f'"{i:032x}"' if i % 3 else f"text-{i}", i) for i, rid in enumerate(ids)
    )
    assert table.get("cam/absent") is None and list(table.sizes([("cam/absent", 0)], -1)) == [-1]
    assert list(table.sizes([(rid, i) for i, rid in enumerate(ids)], -1)) == list(range(5000))
    taken = table.chunk(0)  # a copy: what changes afterwards is not in it
    assert table.put("cam/00002", Probe(7, None, 99)) == 2  # a new version: the same row
    assert (
        table.forget("cam/00003", 3) and not table.forget("cam/00003", 3) and not table.forget("cam/00001", 9)
    )
    copy = AnswerTable()
    copy.load([taken])
    assert copy.get("cam/00002") == Probe(2, f'"{2:032x}"', 2) and copy.get("cam/00003") == Probe(
        3, "text-3", 3
    )
    assert len(table) == 4999 and len(table.rows()) == 4999 and 3 not in table.rows()
    table.setdefault("cam/00003", Probe(30, None, 30))  # dead: taken
    table.setdefault("cam/00002", Probe(20, None, 20))  # live: kept
    assert table.get("cam/00003") == Probe(30, None, 30) and table.get("cam/00002") == Probe(7, None, 99)
    assert len(table) == 5000 and len(table._ids) == 5000 and "cam/00000" in table._texts
    assert "cam/00002" not in table._texts  # its text ETag went with its version
