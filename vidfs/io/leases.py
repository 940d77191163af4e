"""URL leases: where each video's bytes are, until when.

A provider's `resolve()` can be costly (an API call, a login) and its answer expires (signed URLs, JWTs).
The resolver keeps one lease per video, shared by every reader, and:
- renews it *ahead* of expiry (a margin of 20 % of its lifetime, at most 60 s) so a long read never starts
  a request with a URL about to die;
- coalesces concurrent resolutions of one video into one call (single flight);
- after storage refuses a lease (401/403/410), asks the provider once for a fresh one, passing the refused
  lease so the provider can renew its token or signature; a second refusal is the caller's error.

Expiry comes from the provider (it knows its vendor); `vidfs.providers.auth.expiry_from_url()` helps it read
the usual signature parameters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cachetools
import trio

from vidfs.model import StreamLease, Video
from vidfs.providers.auth import still_fresh
from vidfs.providers.base import Provider
from vidfs.stats import Stats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    lease: StreamLease
    obtained_at: float

    def fresh(self, now: float) -> bool:
        return still_fresh(self.obtained_at, self.lease.expires_at, now)


# The least recently used lease beyond this is dropped (resolved again when needed). Each costs about 700
# bytes (its URL, record, key and LRU slots): a cold walk that probes the size of 100,000 videos leaves the
# last of them here, and 16,384 were 11 MiB of its peak RSS for leases no reader asked for.
MAX_LEASES = 4096


class _KeyLock:
    """`async with`: the lock of one key, made when first needed and dropped when no one holds or waits for
    it; taken without a wait when free (as `vidfs.tasks.Holding`: a size probe takes it once per video)."""

    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[tuple[str, str], trio.Lock], key: tuple[str, str]) -> None:
        self._locks, self._key = locks, key
        lock = locks.get(key)
        if lock is None:
            lock = locks[key] = trio.Lock()
        self._lock = lock

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._acquire()

    async def _acquire(self) -> None:
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled while waiting
            self._drop_if_unused()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._drop_if_unused()

    def _drop_if_unused(self) -> None:
        lock = self._lock
        if not lock.locked() and not lock.statistics().tasks_waiting and self._locks.get(self._key) is lock:
            del self._locks[self._key]


class Resolver:
    """One lease per (provider instance, video id), renewed ahead of expiry, resolved once at a time.

    Memory stays bounded on a long mount over a large catalog: leases are kept in an LRU of `MAX_LEASES`,
    and a video's lock exists only while someone resolves it."""

    def __init__(self, stats: Stats, *, max_leases: int = MAX_LEASES) -> None:
        self._stats = stats
        self._entries: cachetools.LRUCache[tuple[str, str], _Entry] = cachetools.LRUCache(max_leases)
        self._locks: dict[tuple[str, str], trio.Lock] = {}

    def _lock(self, key: tuple[str, str]) -> _KeyLock:
        return _KeyLock(self._locks, key)

    async def lease(self, instance: str, provider: Provider, video: Video) -> StreamLease:
        key = (instance, video.remote_id)
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(time.time()):
            return entry.lease
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is not None and entry.fresh(time.time()):
                return entry.lease
            previous = entry.lease if entry is not None else None
            lease = await provider.resolve(video)
            self._stats.incr("leases.resolved" if previous is None else "leases.renewed")
            self._entries[key] = _Entry(lease, time.time())
            return lease

    async def refused(
        self, instance: str, provider: Provider, video: Video, lease: StreamLease
    ) -> StreamLease:
        """Storage refused `lease`: get a fresh one (unless another reader already did)."""
        key = (instance, video.remote_id)
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is not None and entry.lease is not lease and entry.fresh(time.time()):
                return entry.lease
            log.info("storage refused the download URL of %s/%s; resolving again", instance, video.remote_id)
            fresh = await provider.resolve(video, previous=lease)
            self._stats.incr("leases.refreshed_after_refusal")
            self._entries[key] = _Entry(fresh, time.time())
            return fresh

    def forget(self, instance: str, remote_id: str) -> None:
        self._entries.pop((instance, remote_id), None)

    def statistics(self) -> dict[str, int]:
        return {"leases": len(self._entries), "resolving": len(self._locks)}
