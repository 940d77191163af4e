"""The listing cache: one directory's children per (provider instance, folder id), and always an answer.

How it answers
--------------
A listing is *fresh* for `ttl` seconds after it was fetched. Then:

- **fresh**: returned at once (`metadata.hits`).
- **stale** (older than `ttl`, or loaded from the snapshot at mount time): returned at once, and a refresh
  is started in the background (stale-while-revalidate), once the file system has been idle for a moment
  (`vidfs.tasks.Lull`: a walk after a remount is answered first). The next access after the refresh sees
  the new listing. So `ls` never waits for a vendor when anything is known, which is what browsing an
  archive of 100,000 videos after a remount, or while the vendor is down, needs.
- **unknown** (never listed): the caller waits for the fetch.
- **a fresher answer is wanted** (`max_age`, used when a name is not in a listing older than
  `negative_ttl`: the item may be new): the caller waits for the refresh, and gets the stale listing if
  the refresh fails.

Fetches run in a background nursery (`attach()`), not in the task of the FUSE request that wanted them: a
request gives up after `request_timeout` (its caller's deadline), but the fetch runs to its end and fills
the cache, so a directory whose listing is slower than the request timeout can still be listed (the next
`ls` finds it). Fetches are single flight: any number of waiters, one provider call. A fetch itself is
bounded by `fetch_timeout`.

When listings fail
------------------
A failed fetch is retried with backoff (jittered, doubling, capped), never on each access: until its retry
time, a directory that has a listing serves it, one that has none fails at once with the last error.
Errors that say the vendor is unreachable (connection refused, timeouts) mark the whole provider instance
as *down*: while it is, no listing of that instance is fetched except one probe per backoff period; stale
listings are served at once. One warning is logged when an instance goes down and one line when it comes
back, not one per directory. Auth and not-found errors are never hidden by stale data.

Memory: one entry per directory ever listed (the cache itself), nothing per waiter once a fetch is done. A
re-listing keeps the previous listing's objects for what did not change (`vidfs.catalog.carry`).
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from vidfs.catalog import carry
from vidfs.errors import AuthError, NotFoundError, RemoteIOError, RemoteTimeoutError, UnreachableError
from vidfs.model import Folder, Listing
from vidfs.providers.base import Provider
from vidfs.stats import Stats
from vidfs.tasks import STEP, Lull, Progress, Spawner

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (provider instance, folder id)

BACKOFF_FIRST = 1.0
BACKOFF_CAP = 60.0
FETCH_TIMEOUT = 600.0


def backoff_delay(failures: int, *, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number `failures` (1, 2, …): doubling from `first`, capped, ±25 % jitter."""
    base = min(cap, first * 2 ** max(0, failures - 1))
    return base * random.uniform(0.75, 1.25)


@dataclass(slots=True, eq=False)
class _Fetch:
    """One `provider.list()` in flight; its waiters wait on `done`. Without a background nursery the first
    waiter runs it (`runner`) in its own task."""

    done: trio.Event = field(default_factory=trio.Event)
    listing: Listing | None = None
    error: BaseException | None = None
    runner: Callable[[], Awaitable[None]] | None = None
    urgent: trio.Event = field(default_factory=trio.Event)  # someone waits: skip the instance's queue
    watchers: list[Progress] = field(default_factory=list)  # waiters told of each step (`vidfs.tasks.STEP`)

    def stepped(self) -> None:
        for watcher in self.watchers:
            watcher()


@dataclass(slots=True, eq=False)
class _Entry:
    listing: Listing | None = None
    fetched_at: float = -math.inf  # trio.current_time() of the fetch (snapshot entries: stale from the start)
    fetch: _Fetch | None = None
    failures: int = 0
    retry_at: float = 0.0  # no new fetch before this instant after a failure
    last_error: BaseException | None = None
    dropped: bool = False  # invalidated: the next access waits for a fetch instead of serving this listing


@dataclass(frozen=True, slots=True)
class _Queued:
    """A refresh waiting in the queue (`ListingCache._queue`)."""

    provider: Provider
    folder: Folder
    at: float  # trio.current_time() it was queued


@dataclass(slots=True)
class _Health:
    """Whether a provider instance answers at all (connection-level failures only), and the limit on its
    concurrent fetches (a walk after a remount must not start a fetch per directory at once)."""

    limiter: trio.CapacityLimiter
    failures: int = 0
    retry_at: float = 0.0
    last_error: BaseException | None = None

    def down(self) -> bool:
        return self.failures > 0


class SharedListings(Protocol):
    """The fleet's shared listings (`vidfs.fleet.listings.SharedListings`): asked instead of the vendor;
    calls `fetch` itself when the fleet has no fresh listing and this host is the one to ask the vendor."""

    async def fetch(
        self, instance: str, folder_id: str, fetch: Callable[[], Awaitable[Listing]]
    ) -> tuple[Listing, float]:
        """(listing, its age in seconds)."""
        ...


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, UnreachableError | RemoteTimeoutError | trio.TooSlowError) or (
        isinstance(exc, RemoteIOError) and exc.status is None and "Connect" in str(exc)
    )


# API calls that the listings of one instance keep in flight at once: as many listings as that allows, each
# counting for its provider's `listing_calls` (the calls one listing asks at once; 1 unless it says more).
# A listing may cost several sequential round trips (a VALT record: its details, then its download URLs),
# so a walker's readahead over 10,000 record directories is bound by how many run at once: at 20 ms of
# round trip 4 gave 149 s, 16 gave 104 s, 32 gave 25.5 s and 64 gave 22.0 s (with a faster path and an
# API window up to 64). A listing that asks 8 calls at once (a VALT room in layout "rooms") counts for 8:
# 32 rooms at once were 256 chains of calls queued on a window of 32-64, sharing it evenly, so they all
# ended together, and nothing was left to probe for seconds, then everything (a convoy); 8 at once end one
# after the other (10,000 videos: 16.4 s instead of 18.2-20.4). The engine sets it to the API window's top
# (`[http] max_api_requests_per_host`); the calls still share the origin's API window
# (`HttpClient.api_window`).
LISTING_CALLS_AT_ONCE = 64
# A refresh of a listing already served (stale) waits for the file system to be idle (`Lull`, the mount's
# `refresh_idle`) at most this long: a walk keeps its CPU, and no listing stays stale much longer than its TTL
# under a mount that is never idle (a player reading, a walk of 100,000 VALT records that takes a minute).
REFRESH_DEFERRED_AT_MOST = 30.0
REFRESHES_AT_ONCE = 64  # queued refreshes running at once (each still takes its place in its instance's)
# ... and while the kernel still asks once the bound is reached: a trickle, so a walk longer than the bound
# keeps its CPU. A stale remount of 100,000 VALT records (a minute of walk, 101,013 directories) started
# 64 refreshes at a time 30 s into its `ls -lR`: 182 s instead of 59, and 138,636 requests before its end.
# Two at a time was enough at 20 ms of round trip (76.7 s, 3,904 requests), not at 0 ms, where a refresh
# (two API calls and a HEAD, about 3 ms of the daemon's CPU) ends at once and the next starts: the same
# `ls -lR` took 159 s, 156 s of the daemon's CPU. So also at most one every BUSY_REFRESH_EVERY seconds.
BUSY_REFRESHES_AT_ONCE = 2
BUSY_REFRESH_EVERY = 0.2
MAX_QUEUED_ROUNDS = 100_000_000  # rounds of the queue's drain (a refresh each): ends long before


class ListingCache:
    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        stats: Stats,
        fetch_timeout: float = FETCH_TIMEOUT,
        concurrency: int = LISTING_CALLS_AT_ONCE,
        lull: Lull | None = None,
    ) -> None:
        self.ttl = ttl
        self.lull = lull if lull is not None else Lull(0.0)  # refreshes wait for its lulls (`_queue`)
        self._queued: dict[Key, _Queued] = {}  # refreshes waiting for a lull, oldest first (`_queue`)
        self._draining = False
        self._refresh_slots = trio.Semaphore(REFRESHES_AT_ONCE)
        self._busy_slots = trio.Semaphore(BUSY_REFRESHES_AT_ONCE)  # those of them started while busy
        self._busy_turn = -math.inf  # the next one of those may start then (BUSY_REFRESH_EVERY)
        self.concurrency = concurrency
        self.negative_ttl = negative_ttl
        self.fetch_timeout = fetch_timeout
        self._stats = stats
        self._entries: dict[Key, _Entry] = {}
        self._health: dict[str, _Health] = {}
        self._nursery: Spawner | None = None
        self._shared: SharedListings | None = None  # the fleet's (vidfs.fleet), when configured
        self._dirty: set[Key] = set()  # listings changed since the snapshot writer last took them
        self.changed = trio.Event()  # set on every change (the snapshot writer replaces it)

    def attach(self, nursery: Spawner) -> None:
        """Run fetches in `nursery` from now on (without one they run in the caller's task)."""
        self._nursery = nursery

    def share(self, shared: SharedListings) -> None:
        """Ask the fleet's shared listings before the vendor from now on."""
        self._shared = shared

    # ------------------------------------------------------------------------------------- answers
    async def listing(
        self,
        instance: str,
        provider: Provider,
        folder: Folder,
        *,
        max_age: float | None = None,
        urgent: bool = True,
        progress: Progress | None = None,
    ) -> Listing:
        """The folder's listing (see the essay). `urgent` False (directory readahead): a fetch it waits for
        keeps its place in the instance's queue; anyone else's wait lets that fetch go first. `progress` is
        called for each step (an HTTP answer) of the fetch waited for."""
        answer = self.listing_now(instance, provider, folder, max_age=max_age)
        if isinstance(answer, Listing):
            return answer
        fetch, entry = answer
        if urgent:
            fetch.urgent.set()
        if progress is None:
            return await self._wait(fetch, entry)
        fetch.watchers.append(progress)
        try:
            return await self._wait(fetch, entry)
        finally:
            fetch.watchers.remove(progress)

    def listing_now(
        self, instance: str, provider: Provider, folder: Folder, *, max_age: float | None = None
    ) -> Listing | tuple[_Fetch, _Entry]:
        """The listing if it can be answered without waiting (fresh, or stale while a refresh runs in the
        background), else the fetch to wait for (started if due). Raises the last error while backing off
        with nothing known."""
        key = (instance, folder.remote_id)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        now = trio.current_time()
        age = now - entry.fetched_at
        if entry.listing is not None and age < (self.ttl if max_age is None else max_age):
            self._stats.incr("metadata.hits")
            return entry.listing
        in_background = self._nursery is not None
        waits = max_age is not None or entry.dropped
        if entry.listing is not None and in_background and not waits and self._queue(key, provider, folder):
            self._stats.incr("metadata.stale_served")
            return entry.listing
        fetch = self._start(key, entry, provider, folder, now)
        if entry.listing is not None and (fetch is None or (in_background and not waits)):
            self._stats.incr("metadata.stale_served")
            return entry.listing
        if fetch is None:  # nothing known and retrying is not due yet
            assert entry.last_error is not None
            raise entry.last_error
        return fetch, entry

    async def _wait(self, fetch: _Fetch, entry: _Entry) -> Listing:
        runner, fetch.runner = fetch.runner, None
        if runner is not None:
            await runner()
        await fetch.done.wait()
        if fetch.listing is not None:
            return fetch.listing
        assert fetch.error is not None
        if entry.listing is not None and isinstance(fetch.error, RemoteIOError | trio.TooSlowError):
            self._stats.incr("metadata.stale_served")
            return entry.listing
        raise fetch.error

    def _start(
        self, key: Key, entry: _Entry, provider: Provider, folder: Folder, now: float
    ) -> _Fetch | None:
        """The fetch in flight for `key`, or a new one if one is due; None while backing off."""
        if entry.fetch is not None:
            return entry.fetch
        health = self._instance(key[0], provider)
        if now < entry.retry_at or (health.down() and now < health.retry_at):
            if entry.last_error is None and health.last_error is not None:
                entry.last_error = health.last_error
            return None
        probe = health.down()
        if probe:
            health.retry_at = now + backoff_delay(health.failures + 1)  # one probe per period
        fetch = entry.fetch = _Fetch()
        self._stats.incr("metadata.refreshes")
        run = functools.partial(self._run, key, entry, fetch, provider, folder, probe)
        if self._nursery is not None:
            self._nursery.start_soon(run)
        else:  # no background nursery (vidfs ls, check): the first waiter runs it
            fetch.runner = run
        return fetch

    # ------------------------------------------------------------------------- the queue of refreshes
    # A refresh of a listing served meanwhile (stale) waits in a queue while the kernel asks for things
    # (`Lull`). The queue is drained in its order, REFRESHES_AT_ONCE at a time, each at a lull or once the
    # oldest has waited REFRESH_DEFERRED_AT_MOST (then BUSY_REFRESHES_AT_ONCE at a time and one every
    # BUSY_REFRESH_EVERY while the kernel keeps asking, REFRESHES_AT_ONCE again from its next lull). A
    # queued refresh is a key and its folder, nothing more until it starts (whoever waits for that listing
    # meanwhile starts its fetch at once). A remount of 10,000 VALT records a day later, walked with
    # `ls -lR`, started a fetch (and its task) per record directory, 10,000 waiting for their places: the
    # daemon's peak RSS was 187 MiB once they had run, against 62 for the same `ls -lR` without refreshes;
    # with this queue 76.
    def _queue(self, key: Key, provider: Provider, folder: Folder) -> bool:
        """Queue a refresh of `key` if the kernel is being answered; False if it is not (then go now)."""
        if key in self._queued:
            return True
        entry = self._entries[key]
        if entry.fetch is not None or not self.lull.pending():
            return False
        self._stats.incr("metadata.refreshes_deferred")
        self._queued[key] = _Queued(provider, folder, trio.current_time())
        if not self._draining and self._nursery is not None:
            self._draining = True
            self._nursery.start_soon(self._drain)
        return True

    async def _drain(self) -> None:
        nursery = self._nursery
        assert nursery is not None
        try:
            for _ in range(MAX_QUEUED_ROUNDS):  # a round per queued refresh
                if not self._queued:
                    return
                key, queued = next(iter(self._queued.items()))
                waited = trio.current_time() - queued.at
                if waited < REFRESH_DEFERRED_AT_MOST:
                    await self.lull.wait(REFRESH_DEFERRED_AT_MOST - waited)
                busy = self.lull.pending()  # past the bound, and the kernel still asks: a trickle
                if busy:
                    await trio.sleep_until(self._busy_turn)
                    await self._busy_slots.acquire()
                try:
                    await self._refresh_slots.acquire()
                except BaseException:  # cancelled: the busy slot is not kept from the next drain
                    if busy:
                        self._busy_slots.release()
                    raise
                self._queued.pop(key, None)
                entry = self._entries[key]
                fetch = None
                if trio.current_time() - entry.fetched_at >= self.ttl and entry.fetch is None:  # still due
                    fetch = self._start(key, entry, queued.provider, queued.folder, trio.current_time())
                if fetch is None:  # listed meanwhile, or backing off
                    self._release_slots(busy)
                else:
                    if busy:  # a turn is spent on a fetch started, not on one found done meanwhile
                        self._busy_turn = trio.current_time() + BUSY_REFRESH_EVERY
                    nursery.start_soon(self._release_when_done, fetch, busy)
        finally:
            self._draining = False

    async def _release_when_done(self, fetch: _Fetch, busy: bool) -> None:
        try:
            await fetch.done.wait()
        finally:
            self._release_slots(busy)

    def _release_slots(self, busy: bool) -> None:
        self._refresh_slots.release()
        if busy:
            self._busy_slots.release()

    def _instance(self, instance: str, provider: Provider | None = None) -> _Health:
        health = self._health.get(instance)
        if health is None:
            # `listing_calls` is optional in a provider (see the constant above); the first caller of an
            # instance always has its provider (`_start`).
            calls = max(1, getattr(provider, "listing_calls", 1))
            health = self._health[instance] = _Health(trio.CapacityLimiter(max(1, self.concurrency // calls)))
        return health

    async def _run(
        self, key: Key, entry: _Entry, fetch: _Fetch, provider: Provider, folder: Folder, probe: bool
    ) -> None:
        health = self._instance(key[0], provider)
        # What the provider asks tells the waiters (reset after: without a background nursery this runs
        # in a waiter's own task).
        step = STEP.set(fetch.stepped)
        try:
            async with self._turn(health, fetch):
                if health.down() and not probe and health.last_error is not None:
                    raise health.last_error  # it went down while this fetch queued: do not ask
                previous = functools.partial(self.get, key[0])
                with trio.fail_after(self.fetch_timeout), carry.listing_for(key[1], previous) as carries:
                    ask_vendor = functools.partial(self._ask_vendor, provider, folder)
                    if self._shared is None:
                        listing, age = await ask_vendor(), 0.0
                    else:  # the fleet's listing, or the vendor's when this host is the one to ask
                        listing, age = await self._shared.fetch(key[0], key[1], ask_vendor)
                    listing = carries.of().listing(listing)  # what the provider did not carry itself
                    if carries.carried:
                        self._stats.incr("metadata.carried", carries.carried)
        except (Exception, trio.Cancelled) as exc:
            fetch.error = exc if not isinstance(exc, trio.Cancelled) else RemoteIOError("listing cancelled")
            self._failed(key, entry, folder, exc)
            if isinstance(exc, trio.Cancelled):
                raise
        else:
            fetch.listing = listing
            self._store(key, entry, listing, age)
        finally:
            entry.fetch, entry.dropped = None, False
            fetch.done.set()
            STEP.reset(step)

    @asynccontextmanager
    async def _turn(self, health: _Health, fetch: _Fetch) -> AsyncIterator[None]:
        """A place among the instance's `concurrency` listings in flight, or none once someone waits for this
        one (`fetch.urgent`): the directory a walker stands in must not queue behind the hundreds listed
        ahead of it (a walker that went into the last of ten Pixop projects first got EIO: its listing was
        queued behind the nine others, 1,000 detail calls each)."""
        held = False

        async def take(done: trio.CancelScope) -> None:
            nonlocal held
            await health.limiter.acquire_on_behalf_of(fetch)
            held = True
            done.cancel()

        async def hurry(done: trio.CancelScope) -> None:
            await fetch.urgent.wait()
            done.cancel()

        if not fetch.urgent.is_set() and health.limiter.available_tokens > 0:
            # A free place is taken at once: no nursery and two tasks (10,000 VALT records: 20,000 tasks).
            health.limiter.acquire_on_behalf_of_nowait(fetch)
            held = True
        elif not fetch.urgent.is_set():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take, nursery.cancel_scope)
                nursery.start_soon(hurry, nursery.cancel_scope)
        try:
            yield
        finally:
            if held:
                health.limiter.release_on_behalf_of(fetch)

    async def _ask_vendor(self, provider: Provider, folder: Folder) -> Listing:
        self._stats.incr("metadata.vendor_calls")  # what the vendor saw (refreshes may be answered otherwise)
        return await provider.list(folder)

    def _store(self, key: Key, entry: _Entry, listing: Listing, age: float = 0.0) -> None:
        entry.listing, entry.fetched_at = listing, trio.current_time() - age  # a fleet listing ages as one
        entry.failures, entry.retry_at, entry.last_error = 0, 0.0, None
        health = self._health.get(key[0])
        if health is not None and health.down():
            log.warning("%s: listings answer again", key[0])
            health.failures, health.retry_at, health.last_error = 0, 0.0, None
        self.mark_dirty(key)

    def _failed(self, key: Key, entry: _Entry, folder: Folder, exc: BaseException) -> None:
        self._stats.incr("metadata.fetch_failures")
        entry.failures += 1
        entry.last_error = exc if isinstance(exc, Exception) else RemoteIOError(str(exc))
        entry.retry_at = trio.current_time() + backoff_delay(entry.failures)
        if isinstance(exc, AuthError | NotFoundError):
            entry.retry_at = trio.current_time() + self.negative_ttl
        if _unreachable(exc):
            health = self._instance(key[0])
            health.last_error = entry.last_error
            entry.retry_at = max(entry.retry_at, health.retry_at)
            if not health.down():
                log.warning(
                    "%s: listings fail (%s); serving cached listings, retrying in the background",
                    key[0],
                    exc,
                )
            health.failures += 1
            health.retry_at = trio.current_time() + backoff_delay(health.failures)
        else:
            log.debug("%s: listing %r failed: %s", key[0], folder.name, exc)

    # ------------------------------------------------------------------------------------ management
    def age(self, instance: str, folder_id: str) -> float | None:
        entry = self._entries.get((instance, folder_id))
        if entry is None or entry.listing is None:
            return None
        return trio.current_time() - entry.fetched_at

    def invalidate(self, instance: str, folder_id: str) -> None:
        """The next access asks the vendor (and waits for it); the old listing stays as a fallback."""
        entry = self._entries.get((instance, folder_id))
        if entry is not None:
            entry.fetched_at = -math.inf
            entry.retry_at = 0.0
            entry.dropped = True

    def seed(self, instance: str, folder_id: str, listing: Listing, *, age: float | None = None) -> None:
        """Install a persisted listing (from the snapshot), `age` seconds old (unknown: stale, so its first
        use refreshes it in the background)."""
        entry = self._entries.setdefault((instance, folder_id), _Entry())
        if entry.listing is None:
            entry.listing = listing
            if age is not None:
                entry.fetched_at = trio.current_time() - age

    def get(self, instance: str, folder_id: str) -> Listing | None:
        entry = self._entries.get((instance, folder_id))
        return None if entry is None else entry.listing

    # The snapshot writer's view: which listings changed since it last looked.
    def mark_dirty(self, key: Key) -> None:
        self._dirty.add(key)
        self.changed.set()

    def has_dirty(self) -> bool:
        return bool(self._dirty)

    def take_dirty(self) -> set[Key]:
        dirty, self._dirty = self._dirty, set()
        return dirty

    def statistics(self) -> dict[str, int]:
        return {
            "directories": sum(1 for e in self._entries.values() if e.listing is not None),
            "fetching": sum(1 for e in self._entries.values() if e.fetch is not None),
            "instances_down": sum(1 for h in self._health.values() if h.down()),
            "refreshes_queued": len(self._queued),
        }
