"""A re-listing keeps the previous listing's objects for the videos that did not change
(`vidfs.catalog.carry`): through the listing cache, with xattr values in memory and at rest in the
snapshot, whether the provider carries its videos itself or the cache does it after."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidfs.catalog import carry
from vidfs.catalog import snapshot as snapshot_module
from vidfs.catalog.extras import Place
from vidfs.catalog.listings import ListingCache
from vidfs.catalog.probes import SizeProbes
from vidfs.catalog.snapshot import SnapshotKeeper
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.model import Folder, FrozenMap, Listing, Video, frozen, frozen_extra
from vidfs.stats import Stats


@dataclass
class Item:
    """What the vendor says of a video; the provider makes a new `Video` of it at every listing."""

    name: str
    size: int = 10
    note: str = "n"
    url: str = "https://storage.test/a"


class MakingProvider:
    """Folder id → items, made into new objects by each `list` (as real providers do), passed through
    `carried` when `carries` (else the listing cache carries them after)."""

    def __init__(self, folders: dict[str, dict[str, Item]], *, carries: bool) -> None:
        self.folders = folders
        self.carries = carries

    def root(self) -> Folder:
        return Folder("root", "making")

    async def list(self, folder: Folder) -> Listing:
        made = []
        for remote_id, item in self.folders[folder.remote_id].items():
            video = Video(
                remote_id=str(remote_id),  # a new string, as a JSON decoder gives
                name=f"{item.name}",
                size=item.size,
                mtime=1.0,
                extra=frozen_extra({"note": item.note}),
                handle=frozen({"url": item.url}),
            )
            made.append(carry.carried(video) if self.carries else video)
        return Listing(tuple(made))

    async def resolve(self, video: Video, *, previous: object = None) -> object:  # pragma: no cover
        raise NotImplementedError


def keeper_at(directory: Path) -> tuple[Stats, ListingCache, SnapshotKeeper]:
    stats = Stats()
    listings = ListingCache(ttl=300, negative_ttl=10, stats=stats)
    probes = SizeProbes(http=HttpClient(stats=stats), resolver=Resolver(stats), stats=stats)
    return stats, listings, SnapshotKeeper(listings, probes, directory, ["making"], stats)


def videos(listing: Listing) -> dict[str, Video]:
    return {e.remote_id: e for e in listing.entries if isinstance(e, Video)}


async def relist(listings: ListingCache, provider: MakingProvider, folder: str = "f") -> Listing:
    listings.invalidate("making", folder)
    return await listings.listing("making", provider, Folder(folder, folder))


@pytest.mark.parametrize("provider_carries", [True, False], ids=["by the provider", "by the cache"])
async def test_a_relisting_keeps_the_videos_that_did_not_change(
    tmp_path: Path, provider_carries: bool
) -> None:
    items = {f"v{i}": Item(f"video {i}.mp4", note=f"n{i}") for i in range(6)}
    provider = MakingProvider({"f": dict(items)}, carries=provider_carries)
    stats, listings, keeper = keeper_at(tmp_path / "meta")

    first = await listings.listing("making", provider, Folder("f", "f"))
    in_memory = await relist(listings, provider)  # before any save: values compared in memory
    assert all(a is b for a, b in zip(first.entries, in_memory.entries, strict=True))
    assert stats.counters["metadata.carried"] == 6

    await keeper.save()  # the values now rest in the snapshot
    saved = videos(in_memory)
    assert all(isinstance(v.extra, Place) for v in saved.values())

    provider.folders["f"]["v1"] = Item("renamed.mp4", note="n1")
    provider.folders["f"]["v2"] = Item("video 2.mp4", note="changed")
    provider.folders["f"]["v3"] = Item("video 3.mp4", note="n3", url="https://storage.test/moved")
    provider.folders["f"]["v4"] = Item("video 4.mp4", note="n4", size=11)
    del provider.folders["f"]["v5"]
    provider.folders["f"]["new"] = Item("new.mp4")
    again = videos(await relist(listings, provider))

    assert again["v0"] is saved["v0"]  # the only one unchanged
    for changed in ("v1", "v2", "v3", "v4"):
        assert again[changed] is not saved[changed]
    assert again["v1"].name == "renamed.mp4" and dict(again["v2"].xattrs) == {"note": "changed"}
    assert again["v3"].handle == {"url": "https://storage.test/moved"} and again["v4"].size == 11
    assert sorted(again) == ["new", "v0", "v1", "v2", "v3", "v4"]
    assert stats.counters["metadata.carried"] == 7

    await keeper.save()  # the carried video's values stay at rest, the others come to rest beside them
    assert {rid: dict(v.xattrs) for rid, v in again.items()} == {
        "new": {"note": "n"},
        "v0": {"note": "n0"},
        "v1": {"note": "n1"},
        "v2": {"note": "changed"},
        "v3": {"note": "n3"},
        "v4": {"note": "n4"},
    }
    assert "snapshot.extras_missing" not in stats.counters


async def test_values_that_cannot_be_read_back_count_as_changed_and_are_not_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot lost under the mount: the re-listing makes new videos (whose values are then in memory
    and saved again), and that is not the missing values a getxattr would report."""
    provider = MakingProvider(
        {"f": {f"v{i}": Item(f"{i}.mp4", note=f"n{i}") for i in range(3)}}, carries=True
    )
    stats, listings, keeper = keeper_at(tmp_path / "meta")
    first = videos(await listings.listing("making", provider, Folder("f", "f")))
    await keeper.save()
    keeper.extras.close()
    snapshot_module._remove_database(keeper.path)
    with caplog.at_level(logging.WARNING):
        again = videos(await relist(listings, provider))
    assert all(again[rid] is not first[rid] for rid in first)
    assert {rid: dict(v.xattrs) for rid, v in again.items()} == {
        "v0": {"note": "n0"},
        "v1": {"note": "n1"},
        "v2": {"note": "n2"},
    }
    assert "metadata.carried" not in stats.counters and "snapshot.extras_missing" not in stats.counters
    assert not caplog.records
    await keeper.save()
    assert {rid: dict(v.xattrs) for rid, v in again.items()}["v2"] == {"note": "n2"}


async def test_a_video_is_carried_from_its_own_folder_only_and_in_any_order(tmp_path: Path) -> None:
    """A video that moved to another folder is made anew there (its values at rest belong to the listing
    it left); a vendor that lists in another order still has its videos carried."""
    provider = MakingProvider(
        {"f": {f"v{i}": Item(f"{i}.mp4") for i in range(5)}, "g": {"w": Item("w.mp4")}}, carries=True
    )
    _stats, listings, keeper = keeper_at(tmp_path / "meta")
    f_first = videos(await listings.listing("making", provider, Folder("f", "f")))
    await listings.listing("making", provider, Folder("g", "g"))
    await keeper.save()

    provider.folders["g"]["v4"] = provider.folders["f"].pop("v4")
    provider.folders["f"] = dict(reversed(provider.folders["f"].items()))
    f_again = videos(await relist(listings, provider, "f"))
    g_again = videos(await relist(listings, provider, "g"))
    assert list(f_again) == ["v3", "v2", "v1", "v0"]
    assert all(f_again[rid] is f_first[rid] for rid in f_again)
    assert g_again["v4"] is not f_first["v4"] and isinstance(g_again["v4"].extra, FrozenMap)
    await keeper.save()
    assert dict(g_again["v4"].xattrs) == {"note": "n"}


def test_outside_a_listing_nothing_is_carried() -> None:
    made = Video("a", "a.mp4", 1, 1.0, extra=frozen_extra({"note": "x"}))
    assert carry.carried(made) is made
    assert carry.carry_of().previous("a") is None
    previous = Listing((Video("a", "a.mp4", 1, 1.0, extra=frozen_extra({"note": "x"})),))
    lookup: dict[str, Listing] = {"f": previous}
    with carry.listing_for("f", lookup.get) as carries:
        kept = carry.carried(made)
        assert kept is previous.entries[0]
        assert carry.carried(made, "elsewhere") is made  # no previous listing there
    assert carries.carried == 1
    assert carry.carried(made) is made
