"""The engine factory: one place that turns a `Config` into the parts that answer for a catalog.

`open_engine(config)` builds, in order, the shared HTTP client, one provider per `[providers.NAME]` table
(found by its `type` in the provider registry), the URL-lease resolver, the listing cache, the size probes
and the tree of inodes over them, and closes them in reverse order on exit. `vidfs mount` adds the block
caches and the FUSE layer on top (`vidfs.daemon.mount`); `vidfs check` and `vidfs ls` use the engine as it
is, so every command sees the same tree with the same names.

With `serving=True` (a mount) the engine also runs the catalog's background work in a nursery of its own:
listing refreshes that outlive the FUSE request that started them, and the snapshot writer; the persisted
snapshot is loaded first, so the first `ls` after a remount answers from it at once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from vidfs.catalog.listings import ListingCache
from vidfs.catalog.probes import SizeProbes
from vidfs.catalog.snapshot import SnapshotKeeper
from vidfs.config.types import Config
from vidfs.daemon.supervisor import Supervisor
from vidfs.errors import UsageError
from vidfs.fs.tree import Tree
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.providers.base import Provider, ProviderBase, ProviderContext
from vidfs.providers.registry import get_spec
from vidfs.stats import Stats
from vidfs.tasks import Lull

if TYPE_CHECKING:
    from vidfs.fleet import Fleet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Engine:
    config: Config
    stats: Stats
    http: HttpClient
    providers: dict[str, Provider]
    resolver: Resolver
    listings: ListingCache
    probes: SizeProbes
    tree: Tree
    fleet: Fleet | None = None  # `[cache.shared]` / `api_rate` (vidfs.fleet); only while serving


def build_fleet(config: Config) -> Fleet | None:
    """The fleet's shared tier and API budget (vidfs.fleet) when `[cache.shared]` or an `api_rate` is
    configured. Imported only then: coredis and cryptography take a second or two to import."""
    if config.cache.shared is None and not any(p.api_rate for p in config.providers):
        return None
    from vidfs.fleet import Fleet

    return Fleet(config)


def build_providers(config: Config, http: HttpClient) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for provider_config in config.providers:
        spec = get_spec(provider_config.type)
        if spec is None:  # config validation already refuses this; keep a clear message anyway
            raise UsageError(f"unknown provider type {provider_config.type!r}")
        state_dir = config.cache.dir / "state" / provider_config.name
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        context = ProviderContext(
            instance=provider_config.name,
            http=http,
            state_dir=state_dir,
            log=logging.getLogger(f"vidfs.provider.{provider_config.name}"),
        )
        providers[provider_config.name] = spec.factory(provider_config, context)
    return providers


@asynccontextmanager
async def open_engine(
    config: Config, stats: Stats | None = None, *, serving: bool = False, supervisor: Supervisor | None = None
) -> AsyncIterator[Engine]:
    stats = stats or Stats()
    async with AsyncExitStack() as stack:
        http = HttpClient(config.http, stats)
        stack.push_async_callback(http.aclose)
        providers = build_providers(config, http)
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)
        resolver = Resolver(stats)
        lull = Lull(config.cache.refresh_idle)  # its service runs in a mount only (below); elsewhere no wait
        listings = ListingCache(
            ttl=config.cache.metadata_ttl,
            negative_ttl=config.cache.negative_ttl,
            stats=stats,
            concurrency=config.http.max_api_requests_per_host,  # the API window's top (LISTING_CALLS_AT_ONCE)
            lull=lull,
        )
        probes = SizeProbes(http=http, resolver=resolver, stats=stats)
        tree = Tree(providers, listings, probes)
        fleet = build_fleet(config) if serving else None
        engine = Engine(config, stats, http, providers, resolver, listings, probes, tree, fleet)
        if not serving:
            yield engine
            return
        keeper = SnapshotKeeper(listings, probes, config.cache.dir / "meta", providers, stats)
        loaded = keeper.install(await trio.to_thread.run_sync(keeper.read))
        log.info("listing snapshot: %d cached directories loaded", loaded)
        if loaded:
            # What the snapshot held lives as long as its listings and forms no cycle: kept out of the
            # cyclic collector's sight, its first full collections do not scan it all again (the first walk
            # after a remount of 100,000 Cupix videos: 1.95 -> 1.70-1.80 s on loopback).
            gc.freeze()
        async with trio.open_nursery() as background:
            services = (supervisor or Supervisor(stats)).bind(background)
            await services.start_service("lull", lull.run)
            listings.attach(services.tasks("listing-refresh"))
            tree.attach(services.tasks("directory-readahead"))
            provider_tasks = services.tasks("provider-background")
            for provider in providers.values():
                if isinstance(provider, ProviderBase):
                    provider.attach(provider_tasks)
            await services.start_service("snapshot-writer", keeper.run)
            if fleet is not None:  # Redis is a cache: the service starts at once, connects in the background
                await services.start_service("fleet", fleet.run)
                stats.add_section("shared", fleet.statistics)
                http.budget = fleet.budget
                if fleet.listings is not None:
                    listings.share(fleet.listings)
            try:
                yield engine
            finally:
                background.cancel_scope.cancel()
