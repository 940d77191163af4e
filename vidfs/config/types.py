"""The config's types: frozen values that the loader builds and the rest of vidfs reads.

This module is a leaf (it imports nothing of vidfs but `__version__`), so providers, the engine and the
loader can all import it without cycles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidfs import __version__

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_BLOCK_SIZE = 64 * KiB
MAX_BLOCK_SIZE = 16 * MiB


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret value. `repr()`/`str()` show only where it came from: `Secret(env:NAME)`."""

    source: str  # "env:NAME" | "file:/abs/path" | "credential:NAME" | "literal"
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__


@dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False
    # seconds: every FUSE request is answered within it (a listing of many API calls: within it of the
    # last answer, see VidfsOperations._answer)
    request_timeout: float = 30.0
    fsname: str = "vidfs"


@dataclass(frozen=True)
class SharedCacheOptions:
    """`[cache.shared]`: the fleet's shared block and listing cache on Redis (vidfs.fleet)."""

    nodes: tuple[tuple[str, int], ...]  # (host, port) of a Redis Cluster's nodes, or of one plain node
    secret: Secret  # keys the HMAC on every value, the key hashes and the listings' encryption
    type: str = "redis"
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    mode: str = "rw"  # "ro": read the shared tier, never write
    timeout: float = 0.1  # seconds per call; a slower answer is a miss

    @property
    def writes(self) -> bool:
        return self.mode == "rw"


@dataclass(frozen=True)
class ApiRate:
    """A provider table's `api_rate` ("20/s"): API requests per second for the whole fleet."""

    per_second: float
    text: str  # as written, for messages


@dataclass(frozen=True)
class CacheOptions:
    dir: Path
    # Blocks in RAM (the readahead window, prefetched blocks first); the page cache and the disk cache keep
    # the rest.
    # 24 MiB: the bench's `cp` at 20 ms RTT reads as fast as with 32 (172 MB/s, median of 3) and the daemon's
    # peak RSS is 92 MiB instead of 108.
    memory: int = 24 * MiB
    disk: int = 10 * GiB  # 0 = no disk cache
    block_size: int = 64 * KiB  # a power of two, 64 KiB .. 16 MiB: small so random reads stay cheap
    metadata_ttl: float = 300.0
    negative_ttl: float = 10.0
    # A listing served stale is listed again once the kernel asked nothing for this long (at most 30 s later:
    # `vidfs.catalog.listings.REFRESH_DEFERRED_AT_MOST`); 0: at once. See `vidfs.tasks.Lull` for the 2 s.
    refresh_idle: float = 2.0
    readahead_max: int = 64 * MiB
    shared: SharedCacheOptions | None = None  # `[cache.shared]`; None: no fleet, as before


@dataclass(frozen=True)
class HttpSettings:
    """`[http]`: what the shared HTTP client does (vidfs.http.client); backoff is not configurable."""

    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    retries: int = 4
    max_connections_per_host: int = 8
    max_api_requests_per_host: int = 64  # the API window's top (vidfs.http.adaptive); it starts lower
    ca_bundle: Path | None = None
    user_agent: str = f"vidfs/{__version__}"
    backoff_base: float = 0.2
    backoff_cap: float = 5.0


@dataclass(frozen=True)
class MetricsOptions:
    """`[metrics]`: the Prometheus endpoint (vidfs.daemon.metrics); `listen` None: no endpoint."""

    listen: tuple[str, int] | None = None  # (host, port); an IPv6 host without its brackets


@dataclass(frozen=True)
class ProviderConfig:
    name: str  # the table key: the directory name at the mount root
    type: str
    options: Mapping[str, Any] = field(hash=False)  # validated, defaults filled, secrets as Secret
    source: Path  # the config file it came from
    api_rate: ApiRate | None = None  # the fleet-wide (or, without [cache.shared], this host's) API budget


@dataclass(frozen=True)
class Config:
    path: Path
    mount: MountOptions
    cache: CacheOptions
    http: HttpSettings
    providers: tuple[ProviderConfig, ...]
    warnings: tuple[str, ...] = ()
    metrics: MetricsOptions = field(default_factory=MetricsOptions)

    def provider(self, name: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None
