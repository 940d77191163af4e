"""The fleet: many hosts that mount the same catalogs share one cache and one API budget through Redis.

A transcode farm or a Kubernetes DaemonSet mounts the same catalogs on many hosts; without this, every host
downloads the same bytes from the vendor's storage and calls the vendor's API for the same listings.
With `[cache.shared]` (a Redis Cluster, or one plain Redis node) they share:

- blocks (`blocks.py`): memory → local disk → **shared** → origin; what one host fetched, the others read
  from Redis, checked by an HMAC; hosts reading the same file at the same moment split the work;
- listings (`listings.py`): one host of the fleet asks the vendor for a directory per `metadata_ttl`, the
  others read its answer, encrypted (names never stand in Redis in the clear);
- the API budget (`budget.py`): `api_rate` in a provider table is a token bucket in Redis for the whole
  fleet, with a local share when Redis is away.

Redis is a cache, never a dependency: the mount starts without it, any error or a `timeout` is a miss, a
circuit breaker stops asking after repeated failures (`connection.py`, `breaker.py`). Nothing secret goes
there: no credential, token, URL, header, cookie or file name; keys are keyed hashes (`sealing.py`).

`Fleet` bundles the parts for one mount; `Fleet.run` is the one supervised service that keeps them going
(the connection, the block publisher, the membership heartbeat).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from vidfs.config.types import Config, ProviderConfig
from vidfs.fleet.blocks import SharedBlocks
from vidfs.fleet.budget import ApiBudget
from vidfs.fleet.connection import FleetRedis
from vidfs.fleet.listings import SharedListings
from vidfs.fleet.sealing import FleetKeys

__all__ = ["ApiBudget", "Fleet", "SharedBlocks", "SharedListings", "instance_identity"]


def instance_identity(provider: ProviderConfig) -> str:
    """What makes two hosts' provider instances the same catalog: its type, its name and its URLs (never a
    secret). Hashed again with the fleet's key before it is part of any Redis key."""
    urls = {
        key: str(value)
        for key, value in sorted(provider.options.items())
        if (key in ("url", "base_url") or key.endswith("_url")) and isinstance(value, str)
    }
    return json.dumps([provider.type, provider.name, urls], sort_keys=True)


class Fleet:
    """The shared tier of one mount: `blocks`, `listings` (None without `[cache.shared]`) and `budget`."""

    def __init__(self, config: Config) -> None:
        shared = config.cache.shared
        identities = {provider.name: instance_identity(provider) for provider in config.providers}
        rates = {p.name: p.api_rate.per_second for p in config.providers if p.api_rate is not None}
        self.redis: FleetRedis | None = None
        self.blocks: SharedBlocks | None = None
        self.listings: SharedListings | None = None
        keys = None
        if shared is not None:
            keys = FleetKeys.from_secret(shared.secret.reveal())
            self.redis = FleetRedis(shared, ca_bundle=config.http.ca_bundle)
            self.blocks = SharedBlocks(
                self.redis,
                keys,
                block_size=config.cache.block_size,
                identities=identities,
                writes=shared.writes,
            )
            self.listings = SharedListings(
                self.redis, keys, ttl=config.cache.metadata_ttl, identities=identities, writes=shared.writes
            )
        self.mode = shared.mode if shared is not None else None
        self.budget = ApiBudget(
            rates,
            redis=self.redis,
            keys=keys,
            identities=identities,
            writes=shared is not None and shared.writes,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The connection, the block publisher and the membership heartbeat; started at once (the mount
        never waits for Redis)."""
        async with trio.open_nursery() as nursery:
            if self.redis is not None:
                await nursery.start(self.redis.run)
            if self.blocks is not None and self.blocks.writes:
                await nursery.start(self.blocks.run)
            await nursery.start(self.budget.run)
            task_status.started()

    def statistics(self) -> dict[str, Any]:
        """The ``shared`` section of `vidfs stats --json`."""
        document: dict[str, Any] = {"mode": self.mode or "off", "api_budget": self.budget.statistics()}
        if self.redis is not None:
            document["redis"] = self.redis.statistics()
        if self.blocks is not None:
            document["blocks"] = self.blocks.statistics()
        if self.listings is not None:
            document["listings"] = self.listings.statistics()
        return document
