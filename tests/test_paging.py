"""Listing at scale (issue 16): concurrent pages give each item exactly once, even when items are added or
removed between page fetches (`vidfs.providers.paging`).

- Real emulators over HTTP, in process, one per paging vendor (Cupix, Pixop, VALT, AIPIX), each scaled to
  hundreds or thousands of videos and listed by its provider with small pages, while the catalog changes
  between page fetches: a hook in the client's transport changes the emulator's ``scale`` when the 3rd,
  10th and 20th page answers arrive (+7 videos, +30 more, then 12 of the new ones removed). At the end,
  every video the emulator holds is listed exactly once; for the lists that tell a total (Cupix, Pixop,
  AIPIX) nothing else is; VALT (no total) may still show one removed meanwhile. The emulator's request
  log shows that pages were in flight together, never more than `PAGE_CONCURRENCY`:
  `test_pages_overlap_and_give_each_video_once_while_the_catalog_changes[...]`.
- The same without changes: each numbered page is asked exactly once:
  `test_a_still_list_asks_each_page_once[...]`.
- The merge rule itself, on lists in memory that change between answers in every way the essay names:
  `test_numbered_pages_one_version[...]`, `test_offset_pages_chain[...]`,
  `test_offset_pages_find_a_silent_cap`, `test_lists_without_a_total_are_read_page_after_page`.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import vidfs.providers.valt as valt_module
from tests.conftest import most_in_flight
from vidfs.config.types import HttpSettings, ProviderConfig
from vidfs.emulator.server import Site, start_sites
from vidfs.http.client import HttpClient
from vidfs.model import Folder, Listing
from vidfs.providers.aipix import AipixProvider
from vidfs.providers.base import Provider, ProviderContext
from vidfs.providers.cupix import CupixProvider
from vidfs.providers.paging import PAGE_CONCURRENCY, Page, numbered_pages, offset_pages
from vidfs.providers.pixop import PixopProvider
from vidfs.providers.valt import ValtProvider

# The catalog changes when these page answers arrive: (answer number, scale added to the start's).
CHANGES = ((3, 7), (10, 37), (20, 25))
LATENCY = 0.02  # seconds each list page takes on the server, so pages in flight together overlap in its log


# ------------------------------------------------------------------------------- real emulators, in process
class BetweenPages(httpx.AsyncBaseTransport):
    """The real transport; when the n-th answer of a list page has arrived (and before the provider sees
    it), `change(n)` runs: the emulator's catalog changes between page fetches."""

    def __init__(self, pages: re.Pattern[str], change: Callable[[int], None]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._pages = pages
        self._change = change
        self.answers = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self._pages.search(request.url.raw_path.decode()):
            self.answers += 1
            self._change(self.answers)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class Vendor:
    """One paging vendor: its emulator at scale, its provider, the list it pages and what it should show."""

    name: str
    provider: Callable[[ProviderConfig, ProviderContext], Provider]
    scale: int
    options: dict[str, Any]  # provider options beside the emulator's own
    pages: str  # regex of the list endpoint (path and query) in the emulator's log
    exact: bool  # the list tells a total: nothing removed meanwhile may show
    holds: Callable[[Any], set[str]]  # ids the emulator holds in the listed directory, now
    folders: Callable[[Any, Provider], Any]  # async: the directories to list (after the root)


async def _only(folder: Folder) -> list[Folder]:
    return [folder]


def _cupix_holds(site: Any) -> set[str]:
    capture = next(c.id for c in site.captures.values() if c.name == "Scale capture")
    return {str(v.id) for v in site.videos.values() if v.capture_id == capture}


def _pixop_project(site: Any) -> str:
    return str(next(p.id for p in site.projects.values() if p.name == "Scale project 002"))


def _pixop_holds(site: Any) -> set[str]:
    project = _pixop_project(site)
    return {str(v.id) for v in site.videos.values() if v.project_id == project}


def _aipix_holds(site: Any) -> set[str]:
    return {str(a.id) for a in site.archives.values() if a.camera_id == 900}


def _valt_holds(site: Any) -> set[str]:
    return set(site.records)


async def _valt_rooms(site: Any, provider: Provider) -> list[Folder]:
    rooms = await provider.list(provider.root())
    return [f for f in rooms.entries if isinstance(f, Folder)]


VENDORS = {
    "cupix": Vendor(
        "cupix",
        CupixProvider,
        2000,
        {"page_size": 25},
        r"^/api/v1/videos\?",
        True,
        _cupix_holds,
        lambda site, _p: _only(Folder("cap:551", "Scale capture")),
    ),
    "pixop": Vendor(
        "pixop",
        PixopProvider,
        1800,  # projects of 1,000: "Scale project 002" holds 800, and gains what is added
        {"page_size": 20},
        r"^/videos/v1/videos\?",
        True,
        _pixop_holds,
        lambda site, _p: _only(Folder(f"project:{_pixop_project(site)}", "Scale project 002")),
    ),
    "aipix": Vendor(
        "aipix",
        AipixProvider,
        2000,
        {"per_page": 25},
        r"^/api/v1/downloads\?",
        True,
        _aipix_holds,
        lambda site, _p: _only(Folder("900/high", "high")),
    ),
    "valt": Vendor(
        "valt",
        ValtProvider,
        2000,
        {"page_size": 20},
        r"^/api/v3/records\?",
        False,
        _valt_holds,
        _valt_rooms,
    ),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return VENDORS[str(request.param)]


@pytest.fixture
def scaled(vendor: Vendor, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    # One pass over VALT's records serves every room listing of the test, however long it takes.
    monkeypatch.setattr(valt_module, "RECORDS_REUSE", 3600.0)
    with start_sites(vendor.name, scale=vendor.scale) as sites:
        site = sites[vendor.name]
        site.faults.set_rules([{"kind": "latency", "seconds": LATENCY, "path": vendor.pages}])
        yield site


def _list_everything(
    vendor: Vendor, site: Any, tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> list[str]:
    """The ids of every video listed in the vendor's directory (files and hidden items), as listed."""

    async def main() -> list[str]:
        http = HttpClient(HttpSettings(retries=1, backoff_base=0.01), transport=transport)
        try:
            table = {**site.config(), **vendor.options}
            config = ProviderConfig("scale", str(table["type"]), table, tmp_path / "vidfs.toml")
            context = ProviderContext("scale", http, tmp_path, logging.getLogger("test.paging"))
            provider: Provider = vendor.provider(config, context)
            try:
                listed: list[str] = []
                for folder in await vendor.folders(site, provider):
                    listing: Listing = await provider.list(folder)
                    listed += [entry.remote_id for entry in listing.entries]
                    listed += [item.remote_id for item in listing.hidden]
                return listed
            finally:
                await provider.aclose()
        finally:
            await http.aclose()

    return trio.run(main)


def test_pages_overlap_and_give_each_video_once_while_the_catalog_changes(
    vendor: Vendor, scaled: Any, tmp_path: Path
) -> None:
    site = scaled
    ever = set(vendor.holds(site))
    changes = dict(CHANGES)

    def change(answers: int) -> None:
        if answers in changes:
            site.set_scale(vendor.scale + changes[answers])
            ever.update(vendor.holds(site))

    transport = BetweenPages(re.compile(vendor.pages), change)
    site.log.clear()
    listed = _list_everything(vendor, site, tmp_path, transport)
    assert transport.answers >= max(changes), "every change happened while the list was read"
    now = vendor.holds(site)
    assert len(listed) == len(set(listed)), "an item listed twice"
    missing = now - set(listed)
    assert not missing, f"{len(missing)} of {len(now)} videos missing, e.g. {sorted(missing)[:5]}"
    if vendor.exact:
        assert set(listed) == now
    else:
        assert set(listed) <= ever  # at most videos removed while the list was read, never others
    pages = site.log.entries(path=vendor.pages)
    peak = most_in_flight(pages)
    assert 2 <= peak <= PAGE_CONCURRENCY, f"peak of {peak} list pages in flight"
    print(
        f"\n{vendor.name}: {len(now)} videos listed once each over {len(pages)} page requests "
        f"(peak {peak} in flight) while the catalog changed at answers {sorted(changes)}"
    )


def test_a_still_list_asks_each_page_once(vendor: Vendor, scaled: Any, tmp_path: Path) -> None:
    site = scaled
    transport = BetweenPages(re.compile(vendor.pages), lambda _n: None)
    site.log.clear()
    listed = _list_everything(vendor, site, tmp_path, transport)
    assert sorted(listed) == sorted(vendor.holds(site))
    pages = [e["path"] for e in site.log.entries(path=vendor.pages)]
    if vendor.exact:  # numbered pages: each asked once
        numbers = [re.search(r"[?&]page=(\d+)", path) for path in pages]
        asked = sorted(int(m.group(1)) if m else 1 for m in numbers)  # Pixop's first: no page, page 1
        assert asked == list(range(1, len(asked) + 1))
    else:  # offset pages: one reading each, a few asked past the end, the first and last read again
        per_page = int(vendor.options["page_size"])
        needed = -(-(len(site.records) - 1) // (per_page - 1))
        assert needed <= len(pages) <= needed + PAGE_CONCURRENCY + 2
    assert most_in_flight(site.log.entries(path=vendor.pages)) >= 2


# ----------------------------------------------------------------------------------- the rule, in memory
class MovingList:
    """A list in memory that changes after given answers: `(answer, kind, count)` with kind `front`
    (insert at the front, as a newest-first list grows), `end` (append), `middle` (insert anywhere) or
    `remove` (anywhere). Each answer notes what the list held when it was answered."""

    def __init__(self, size: int, changes: list[tuple[int, str, int]], seed: int) -> None:
        self.items = [f"v{n}" for n in range(size)]
        self.born = size
        self.changes = changes
        self.rng = random.Random(seed)
        self.held: list[set[str]] = []  # the list's items at each answer

    def _answered(self) -> None:
        self.held.append(set(self.items))
        for when, kind, count in self.changes:
            if when == len(self.held):
                for _ in range(count):
                    self._change(kind)

    def _change(self, kind: str) -> None:
        if kind == "remove":
            if self.items:
                self.items.pop(self.rng.randrange(len(self.items)))
            return
        new, self.born = f"v{self.born}", self.born + 1
        at = {"front": 0, "end": len(self.items)}.get(kind, self.rng.randrange(len(self.items) + 1))
        self.items.insert(at, new)

    async def page(self, number: int, size: int = 10) -> Page:
        await trio.sleep(self.rng.random() / 1000)  # answers arrive in any order
        chunk, total = self.items[(number - 1) * size : number * size], len(self.items)
        self._answered()
        return Page([{"id": x} for x in chunk], total, max(1, -(-total // size)), number * size < total)

    async def offset(self, offset: int, limit: int) -> list[dict[str, str]]:
        await trio.sleep(self.rng.random() / 1000)
        chunk = self.items[offset : offset + limit]
        self._answered()
        return [{"id": x} for x in chunk]


def _key(item: dict[str, str]) -> str:
    return item["id"]


KINDS = ["front", "end", "middle", "remove"]


@pytest.mark.parametrize("kind", KINDS)
async def test_numbered_pages_one_version(kind: str) -> None:
    """With a total, the listing is one version of the list: exactly what it held at the last answer."""
    for seed in range(40):
        rng = random.Random(seed)
        changes = [(rng.randrange(1, 30), kind, rng.choice([1, 3, 12, 40])) for _ in range(rng.randint(1, 3))]
        moving = MovingList(237, changes, seed)
        paged = await numbered_pages(moving.page, key=_key)
        ids = [item["id"] for item in paged.items]
        assert len(ids) == len(set(ids)), (seed, changes)
        assert paged.settled and set(ids) == moving.held[-1], (seed, changes)
        assert paged.requests == len(moving.held)


@pytest.mark.parametrize("kind", ["front", "end", "remove"])
async def test_offset_pages_chain(kind: str) -> None:
    """Without a total, every item the list held from the answers' start to the last reading of its first
    page is listed once (the last answers read the first and last pages together, so an item added
    between those two readings may wait for the next listing)."""
    for seed in range(40):
        rng = random.Random(seed)
        changes = [(rng.randrange(1, 30), kind, rng.choice([1, 3, 12, 40])) for _ in range(rng.randint(1, 3))]
        moving = MovingList(237, changes, seed)
        paged = await offset_pages(moving.offset, size=10, key=_key)
        ids = [item["id"] for item in paged.items]
        assert len(ids) == len(set(ids)), (seed, changes)
        missing = moving.held[-2] - set(ids)
        assert not missing, (seed, changes, sorted(missing))
        if paged.settled:
            everything = set().union(*moving.held)
            assert set(ids) <= everything


async def test_offset_pages_find_a_silent_cap() -> None:
    """A first page shorter than asked and a second one at the overlap that is not empty: the server caps
    `limit`, and the cap is the page length from then on."""
    moving = MovingList(95, [], 0)
    limits: list[int] = []

    async def capped(offset: int, limit: int) -> list[dict[str, str]]:
        limits.append(limit)
        return await moving.offset(offset, min(limit, 7))

    paged = await offset_pages(capped, size=50, key=_key)
    assert [item["id"] for item in paged.items] == moving.items
    assert limits[:2] == [50, 50] and set(limits[2:]) == {7}
    short = MovingList(30, [], 0)
    paged = await offset_pages(short.offset, size=50, key=_key)
    assert len(paged.items) == 30 and paged.requests == 2  # the first page, and the overlap: the end


async def test_lists_without_a_total_are_read_page_after_page() -> None:
    moving = MovingList(95, [], 0)
    asked: list[int] = []

    async def no_total(number: int) -> Page:
        asked.append(number)
        page = await moving.page(number)
        return Page(page.items, more=page.more)

    paged = await numbered_pages(no_total, key=_key)
    assert [item["id"] for item in paged.items] == moving.items
    assert asked == list(range(1, 11))
