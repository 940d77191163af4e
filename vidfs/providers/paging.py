"""Listing at scale: a vendor's list pages fetched concurrently, merged so that every item is there once.

A directory of 100,000 videos is a thousand pages: one after the other at 20 ms of round trip, 20 s before
the last name. Once the first answer tells how many pages there are, the others are asked together, at most
`PAGE_CONCURRENCY` per listing (and within the shared client's per-origin API slots). The hard part is the
list moving meanwhile: a newest-first list that gains an item shifts every later page by one, so an item
shows twice at a page border, or not at all when the later page was answered before the earlier one. Items
are told apart by the vendor's id (`key`), kept once, in list order; an item without an id cannot be told
apart and is dropped. The rules, by the kind of paging:

**Numbered pages with a total** (Cupix `pagination.total_entries`/`total_pages`, AIPIX `meta.total`/
`last_page`, Pixop `_embedded.totalFound` and the page number of `_links.last`): `numbered_pages`.
Every answer tells the list's length when it was answered; that total is the list's version. The listing
is pages 1..last of ONE version: the version of the answer that arrived last. Pages answered under another
total are fetched again, with the pages a grown list adds (pages past a shrunk list's end are dropped),
until one version holds every page, at most `MAX_ROUNDS` rounds. Within one version every item is on
exactly one page, so none is repeated and none is missing, wherever the list changed (front, middle or
end) and in whatever order the pages were answered. When nothing moves, each page is asked exactly once.
Not seen: a change that keeps the count (one item in and one out between two answers); it may show as a
repeat, kept once and counted in `Paged.repeats`. When the rounds run out (the list changes faster than it
can be read), the listing is the union of every answer, each item once, and `settled` is False.

**Offset pages without a total** (VALT `POST /records` with `offset`/`limit`): `offset_pages`. Pages
overlap by one item (page k asks `offset = k·(L-1)`), so two answers that share an item leave no hole
between them: in a list of stable order, every item between the start of one and the end of the other was
in one of them when it was asked. The listing is complete when the answers, linked by shared items, form
one chain from the first page to a short page (the end), both read once more after every other page (a
list that grew at its front or its end shows it there); a list of at most `PAGE_CONCURRENCY` pages, read in
a few round trips, is taken as it is, as if read page after page (what changed meanwhile shows at the next
listing). A hole (pages sharing
nothing with the chain) is filled by asking again a window of `PAGE_CONCURRENCY` pages from the page
before it (a list that lost items moved back: only a new reading of that page shares items with its old
reading and with the pages after the hole), and a
chain that stops before a short page goes on from where it stops (the list grew), at most `MAX_ROUNDS`
rounds; then the union of every answer, not settled. With no count the pages are asked ahead: `START_AHEAD` at
first, one more for every full page, up to `PAGE_CONCURRENCY` (the end costs a few empty answers). A first
page shorter than asked is the end or a server's silent cap on `limit`: one more page, at the overlap,
tells which, and a cap becomes the page length. Not seen: an item inserted in the middle of the list after
its part was read (no paging without a total can see that one).

**Anything else** (HAL with only `next` links, a Laravel page without `meta`): `numbered_pages` asks the
pages one by one, while each answer says another follows (or, when it does not say, until one is empty).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from vidfs.catalog.keys import repeated_keys

PAGE_CONCURRENCY = 8  # pages of one listing in flight at once
MAX_ROUNDS = 6  # rounds of asking again what a change moved
MAX_PAGES = 10_000  # pages of one list at most (a million items at 100 a page)
START_AHEAD = 2  # offset pages asked ahead before any has come back full

T = TypeVar("T")
Key = Callable[[Any], "str | None"]


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of a numbered list: its items, and what it says of the whole list."""

    items: Sequence[Any]
    total: int | None = None  # how many items the list holds, as this answer says
    last: int | None = None  # the number of the last page, as this answer says
    more: bool | None = None  # whether this answer says another page follows (None: it does not say)

    @property
    def counted(self) -> bool:
        return self.total is not None and self.last is not None


@dataclass(frozen=True, slots=True)
class Paged:
    """A whole list: each item once, in list order."""

    items: list[Any]
    requests: int  # pages asked (page 1 included)
    again: int  # pages asked more than once (a moving list; an offset list's first page, read last again)
    settled: bool  # False: the list kept changing; the items are the union of every answer
    repeats: int = 0  # items met again (at page borders), kept once

    def warn_if_unsettled(self, log: logging.Logger, instance: str, what: str) -> None:
        """One warning line when the list kept changing while it was read."""
        if not self.settled:
            log.warning(
                "%s: %s: the list kept changing while it was read (%d pages, %d asked again)",
                instance,
                what,
                self.requests,
                self.again,
            )


class _Merge:
    """Items in order, each key once."""

    def __init__(self, key: Key) -> None:
        self._key = key
        self._seen: set[str] = set()
        self.items: list[Any] = []
        self.repeats = 0

    def add(self, items: Iterable[Any]) -> None:
        for item in items:
            key = self._key(item)
            if key is None:
                continue
            if key in self._seen:
                self.repeats += 1
                continue
            self._seen.add(key)
            self.items.append(item)

    @classmethod
    def of(cls, groups: Sequence[Sequence[Any]], key: Key) -> _Merge:
        """The items of `groups`, in order, each key once. The keys met more than once are found in a
        sorted list of references to them all, and only those are remembered while merging: a set of every
        key was 4 MiB of a 100,000-record VALT pass's end, the peak of a re-listing."""
        merge = cls(key)
        repeated = repeated_keys(k for group in groups for k in map(key, group) if k is not None)
        seen = merge._seen  # of the repeated keys only
        for group in groups:
            for item in group:
                k = key(item)
                if k is None:
                    continue
                if k in repeated:
                    if k in seen:
                        merge.repeats += 1
                        continue
                    seen.add(k)
                merge.items.append(item)
        return merge


async def gather_pages(
    numbers: Iterable[int], fetch: Callable[[int], Awaitable[T]], concurrency: int = PAGE_CONCURRENCY
) -> list[tuple[int, T]]:
    """`fetch(n)` for every n, at most `concurrency` at once: the answers in the order they arrived. The
    first failure cancels the others and is raised as it is (not wrapped in an exception group)."""
    arrived: list[tuple[int, T]] = []
    failures: list[Exception] = []
    limiter = trio.CapacityLimiter(max(1, concurrency))

    async def one(number: int, nursery: trio.Nursery) -> None:
        async with limiter:
            try:
                answer = await fetch(number)
            except Exception as exc:  # raised below, alone
                failures.append(exc)
                nursery.cancel_scope.cancel()
                return
        arrived.append((number, answer))

    async with trio.open_nursery() as nursery:
        for number in numbers:
            nursery.start_soon(one, number, nursery)
    if failures:
        raise failures[0]
    return arrived


# ------------------------------------------------------------------------------------- numbered pages
async def numbered_pages(
    fetch: Callable[[int], Awaitable[Page]],
    *,
    key: Key,
    first: Page | None = None,
    concurrency: int = PAGE_CONCURRENCY,
    max_pages: int = MAX_PAGES,
    rounds: int = MAX_ROUNDS,
) -> Paged:
    """Every item of a list asked by page number from 1 (`first`: page 1, when the caller has it)."""
    if first is None:
        first = await fetch(1)
    if not first.counted:
        return await _one_by_one(fetch, first, key, max_pages)
    latest: dict[int, Page] = {1: first}
    answers: list[tuple[int, Page]] = [(1, first)]
    target = first
    for round_number in range(rounds + 1):
        last = max(1, min(target.last or 1, max_pages))
        stale = [n for n in range(1, last + 1) if n not in latest or latest[n].total != target.total]
        if not stale:
            merge = _Merge.of([latest[number].items for number in range(1, last + 1)], key)
            again = len(answers) - len(latest)
            return Paged(merge.items, len(answers), again, True, merge.repeats)
        if round_number == rounds:
            break
        arrived = await gather_pages(stale, fetch, concurrency)
        for number, page in arrived:
            latest[number] = page
            answers.append((number, page))
        newest = arrived[-1][1]
        if newest.counted:
            target = newest
    # The list kept moving: everything ever seen, by page, the newer answer of a page first.
    order = sorted(range(len(answers)), key=lambda i: (answers[i][0], -i))
    merge = _Merge.of([answers[index][1].items for index in order], key)
    return Paged(merge.items, len(answers), len(answers) - len(latest), False, merge.repeats)


async def _one_by_one(
    fetch: Callable[[int], Awaitable[Page]], first: Page, key: Key, max_pages: int
) -> Paged:
    """No total: page after page, while the answer says another follows (or, silent, is not empty)."""
    merge = _Merge(key)
    merge.add(first.items)
    page, number = first, 1
    while page.items and page.more is not False and number < max_pages:
        number += 1
        page = await fetch(number)
        merge.add(page.items)
    return Paged(merge.items, number, 0, True, merge.repeats)


# --------------------------------------------------------------------------------------- offset pages
@dataclass(frozen=True, slots=True)
class _Run:
    """One answer of an offset list: page `index` (offset index·stride), the `order`-th to arrive."""

    index: int
    order: int
    items: list[Any]
    keys: list[str]
    short: bool  # fewer items than the page length: the list ended there


class _OffsetList:
    """The answers of one offset listing and the chain they make (see the essay)."""

    def __init__(
        self,
        fetch: Callable[[int, int], Awaitable[Sequence[Any]]],
        key: Key,
        length: int,
        concurrency: int,
        max_pages: int,
    ) -> None:
        self._fetch, self._key = fetch, key
        self.length, self.stride = length, length - 1
        self.concurrency, self.max_pages = max(1, concurrency), max_pages
        self.runs: list[_Run] = []
        self.closed = False  # the last answers are a reading of the first and last pages (`close`)

    def add(self, index: int, items: Sequence[Any]) -> _Run:
        kept = [item for item in items if self._key(item) is not None]
        keys = [k for k in map(self._key, kept) if k is not None]
        run = _Run(index, len(self.runs), kept, keys, len(items) < self.length)
        self.runs.append(run)
        return run

    async def page(self, index: int) -> _Run:
        return self.add(index, await self._fetch(index * self.stride, self.length))

    async def extend(self, start: int) -> None:
        """Pages start, start+1, … until a short one, asked ahead (see the essay)."""
        limiter = trio.CapacityLimiter(min(START_AHEAD, self.concurrency))
        ends: list[int] = []
        failures: list[Exception] = []

        async def ahead(index: int, nursery: trio.Nursery) -> None:
            try:
                run = await self.page(index)
            except Exception as exc:  # raised below, alone
                failures.append(exc)
                nursery.cancel_scope.cancel()
                return
            finally:
                limiter.release_on_behalf_of(index)
            if run.short:
                ends.append(index)
            elif limiter.total_tokens < self.concurrency:
                limiter.total_tokens += 1

        async with trio.open_nursery() as nursery:
            for index in range(start, self.max_pages):
                await limiter.acquire_on_behalf_of(index)
                if ends and index > min(ends):
                    limiter.release_on_behalf_of(index)
                    break
                nursery.start_soon(ahead, index, nursery)
        if failures:
            raise failures[0]

    def linked(self, chain: set[int]) -> set[int]:
        """The pages (indices) the chain holds a reading of."""
        return {run.index for run in self.runs if run.order in chain}

    async def refill(self) -> None:
        """Fill the chain's holes: each hole's window of pages asked again; then, when the chain still
        does not reach a short page, the pages after it, on to the end."""
        self.closed = False
        chain = self.chain()
        linked = self.linked(chain)
        newest = {run.index: run for run in self.runs}  # runs are in arrival order: the last one wins
        furthest = max(newest)
        window: set[int] = set()
        for hole in [i for i in range(1, furthest + 1) if i not in linked and i - 1 in linked]:
            # From the page before the hole: a list that lost items before it moved back, and only a new
            # reading of that page shares items with both its old reading and the pages after the hole.
            # Read again and still apart, the loss was larger than a page: start a window further back.
            start = hole - 1
            while start > 0 and (run := newest.get(start)) is not None and run.order not in chain:
                start = max(0, start - self.concurrency)
            window.update(range(start, min(start + self.concurrency, furthest + 1)))
        if window:
            await gather_pages(sorted(window), self.page, self.concurrency)
        chain = self.chain()
        if self.end(chain) is None and max(self.linked(chain)) >= furthest:
            await self.extend(min(furthest + 1, self.max_pages))

    def chain(self) -> set[int]:
        """The runs (by order) linked, through shared items, to the newest answer of page 0."""
        parent = list(range(len(self.runs)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[str, int] = {}
        for run in self.runs:
            for key in run.keys:
                other = owner.setdefault(key, run.order)
                if other != run.order:
                    parent[root(run.order)] = root(other)
        front = max(run.order for run in self.runs if run.index == 0)
        return {run.order for run in self.runs if root(run.order) == root(front)}

    def end(self, chain: set[int]) -> int | None:
        """The page where the chain ends (a short page with items), None when it does not reach one."""
        newest = {run.index: run for run in self.runs}  # a page read again: its last reading counts
        ends = [i for i, run in newest.items() if run.short and run.items and run.order in chain]
        return min(ends) if ends else None

    async def close(self, end: int) -> None:
        """Read the first and the last page once more, after everything else: a list that gained items
        at its front or its end since they were read shows them there."""
        await gather_pages(sorted({0, end}), self.page, self.concurrency)
        self.closed = True

    def few(self) -> bool:
        """At most `concurrency` pages, read in a few round trips: taken as they are."""
        return self.again() == 0 and sum(1 for run in self.runs if run.items) <= self.concurrency

    def again(self) -> int:
        return len(self.runs) - len({run.index for run in self.runs})

    def merged(self, orders: set[int] | None) -> _Merge:
        runs = [run for run in self.runs if orders is None or run.order in orders]
        return _Merge.of([run.items for run in sorted(runs, key=lambda r: (r.index, -r.order))], self._key)


async def offset_pages(
    fetch: Callable[[int, int], Awaitable[Sequence[Any]]],
    *,
    size: int,
    key: Key,
    concurrency: int = PAGE_CONCURRENCY,
    max_pages: int = MAX_PAGES,
    rounds: int = MAX_ROUNDS,
) -> Paged:
    """Every item of a list asked by `fetch(offset, limit)`, `size` items a page (see the essay)."""
    first = list(await fetch(0, size))
    if len(first) < 2 or size < 2:  # no overlap possible: one page after the other
        return await _offsets_one_by_one(fetch, first, size, key, max_pages)
    length = size
    probe: list[Any] | None = None
    if len(first) < size:  # the end, or a server that caps `limit` silently: ask at the overlap
        probe = list(await fetch(len(first) - 1, size))
        if len(probe) <= 1:
            merge = _Merge.of([first, probe], key)
            return Paged(merge.items, 2, 0, True, merge.repeats)
        length = len(first)
    pages = _OffsetList(fetch, key, length, concurrency, max_pages)
    pages.add(0, first)
    if probe is None:
        await pages.extend(1)
    elif not pages.add(1, probe).short:
        await pages.extend(2)
    for round_number in range(rounds + 1):
        chain = pages.chain()
        end = pages.end(chain)
        if end is not None and (pages.closed or pages.few()):
            merge = pages.merged(chain)
            return Paged(merge.items, len(pages.runs), pages.again(), True, merge.repeats)
        if round_number == rounds:
            break
        if end is not None:
            await pages.close(end)
        else:
            await pages.refill()
    merge = pages.merged(None)
    return Paged(merge.items, len(pages.runs), pages.again(), False, merge.repeats)


async def _offsets_one_by_one(
    fetch: Callable[[int, int], Awaitable[Sequence[Any]]],
    first: list[Any],
    size: int,
    key: Key,
    max_pages: int,
) -> Paged:
    """Pages of one item cannot overlap: offset after offset until a page brings nothing new."""
    merge = _Merge(key)
    merge.add(first)
    offset, page, requests = len(first), first, 1
    while page and requests < max_pages:
        before = len(merge.items)
        page = list(await fetch(offset, size))
        requests += 1
        merge.add(page)
        if len(merge.items) == before:
            break
        offset += len(page)
    return Paged(merge.items, requests, 0, True, merge.repeats)
