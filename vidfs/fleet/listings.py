"""Shared listings: one host of the fleet asks the vendor for a directory per TTL; the others read it.

The listing cache calls `SharedListings.fetch(instance, folder_id, fetch)` where it would call the vendor:

1. The shared listing (``vl{<hash>}``) is read; when there, it is returned with its age, so every host's
   copy turns stale at the same moment (the listing cache backdates it), and the next refresh of the
   fleet is again one call.
2. Else the host takes the directory's lock (``SET vk{<hash>} <token> NX PX``, `LOCK_MS` at most, never
   longer than the TTL). The host that gets it looks once more (the holder before it may have published
   and released between our look and our lock), then calls the vendor, publishes the listing for
   `metadata_ttl` (``SET … PX``) and releases the lock (only if it is still its own: a compare-and-delete).
3. A host that does not get the lock looks for the published listing every `POLL` seconds until the lock
   would have expired; then it calls the vendor itself (the holder may have died or failed).

Listings hold file names, which may never be stored in Redis in the clear: values are encrypted
(`sealing.FleetKeys.seal_listing`, AES-256-GCM with the Redis key as associated data). Keys are keyed
hashes of the instance identity and the folder id. Any Redis failure means: call the vendor, as without a
fleet. `mode = "ro"` reads shared listings, and neither locks nor publishes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from coredis import PureToken

from vidfs.fleet.connection import FleetRedis, Unavailable
from vidfs.fleet.sealing import FleetKeys
from vidfs.model import Listing

log = logging.getLogger("vidfs.fleet")

LOCK_MS = 15_000
POLL = 0.05
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
COUNTERS = ("hits", "misses", "rejected", "locks_won", "locks_waited", "published", "vendor_calls")


class SharedListings:
    """Implements `vidfs.catalog.listings.SharedListings`."""

    def __init__(
        self, redis: FleetRedis, keys: FleetKeys, *, ttl: float, identities: Mapping[str, str], writes: bool
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.identities = dict(identities)
        self.writes = writes
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def _keys(self, instance: str, folder_id: str) -> tuple[bytes, bytes] | None:
        identity = self.identities.get(instance)
        if identity is None or self.ttl <= 0:
            return None
        name = self.keys.name("listing", identity, folder_id)
        return f"vl{{{name}}}".encode(), f"vk{{{name}}}".encode()

    async def fetch(
        self, instance: str, folder_id: str, fetch: Callable[[], Awaitable[Listing]]
    ) -> tuple[Listing, float]:
        """(listing, its age in seconds): the fleet's when it has one, else `fetch()`'s (see the essay)."""
        keys = self._keys(instance, folder_id)
        if keys is None:
            return await fetch(), 0.0
        value_key, lock_key = keys
        lock_ms = min(LOCK_MS, max(1000, int(self.ttl * 1000)))
        token = os.urandom(12).hex().encode()
        locked = False
        deadline = trio.current_time() + lock_ms / 1000
        for _ in range(int(lock_ms / 1000 / POLL) + 2):  # bounded by the lock's life
            shared = await self._read(value_key, folder_id)
            if shared is not None:
                self.counts["hits"] += 1
                return shared
            if not self.writes or not self.redis.connected:
                break
            try:
                locked = await self._lock(lock_key, token, lock_ms)
            except Unavailable:
                break
            if locked:  # the holder before us may have published and released since we looked
                shared = await self._read(value_key, folder_id)
                if shared is not None:
                    await self._release(lock_key, token)
                    self.counts["hits"] += 1
                    return shared
                break
            if trio.current_time() >= deadline:
                break
            self.counts["locks_waited"] += 1
            await trio.sleep(POLL)
        self.counts["misses"] += 1
        self.counts["locks_won"] += int(locked)
        self.counts["vendor_calls"] += 1
        try:
            listing = await fetch()
        except BaseException:
            if locked:
                with trio.CancelScope(shield=True):
                    await self._release(lock_key, token)
            raise
        if self.writes:
            await self._publish(value_key, folder_id, listing)
            if locked:
                await self._release(lock_key, token)
        return listing, 0.0

    async def _read(self, key: bytes, folder_id: str) -> tuple[Listing, float] | None:
        try:
            value = await self.redis.call(lambda client: client.get(key))
        except Unavailable:
            return None
        if value is None:
            return None
        opened = self.keys.open_listing(key, folder_id, value)
        if opened is None:
            self.counts["rejected"] += 1
            if self.counts["rejected"] == 1:
                log.warning("shared cache: a shared listing failed its check and was not used")
            return None
        listing, fetched_at = opened
        age = max(0.0, time.time() - fetched_at)
        return (listing, age) if age < self.ttl else None

    async def _lock(self, key: bytes, token: bytes, lock_ms: int) -> bool:
        async def take(client: Any) -> bool:
            return bool(await client.set(key, token, condition=PureToken.NX, px=lock_ms))

        return await self.redis.call(take)

    async def _release(self, key: bytes, token: bytes) -> None:
        try:
            await self.redis.call(lambda client: client.eval(RELEASE, keys=[key], args=[token]))
        except Unavailable:
            pass  # it expires by itself

    async def _publish(self, key: bytes, folder_id: str, listing: Listing) -> None:
        value = self.keys.seal_listing(key, folder_id, listing, time.time())
        try:
            await self.redis.call(lambda client: client.set(key, value, px=max(1, int(self.ttl * 1000))))
            self.counts["published"] += 1
        except Unavailable:
            pass

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)
