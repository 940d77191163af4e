"""Listings and sizes, cached.

- Listings are kept per (provider instance, folder id) and are fresh for `ttl` seconds. A refresh is single
  flight: concurrent `ls` of one directory cause one provider call. When a refresh fails with a remote
  I/O error and an older listing exists, the older one is served (browsing keeps working while the vendor
  is down); auth and not-found errors are not hidden.
- Sizes the API does not give are learned with a HEAD (a one-byte ranged GET when HEAD is refused), with
  bounded concurrency, and kept per (instance, id, fingerprint) for the life of the mount: a second
  listing does not HEAD again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from vidfs.errors import AuthError, NotFoundError, RemoteIOError, UnreachableError, redact_url
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import parse_content_range
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.providers.base import Provider
from vidfs.stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    size: int
    etag: str | None


@dataclass(slots=True)
class _Cached:
    listing: Listing
    fetched_at: float


class MetadataCache:
    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        http: HttpClient,
        resolver: Resolver,
        stats: Stats,
        head_concurrency: int = 8,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._http = http
        self._resolver = resolver
        self._stats = stats
        self._listings: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], trio.Lock] = {}
        self._probes: dict[tuple[str, str, str], Probe] = {}
        self._probe_locks: dict[tuple[str, str, str], trio.Lock] = {}
        self._head_limiter = trio.CapacityLimiter(head_concurrency)
        self._dirty = trio.Event()

    # -------------------------------------------------------------------------------------- listings
    def age(self, instance: str, folder_id: str) -> float | None:
        cached = self._listings.get((instance, folder_id))
        return None if cached is None else time.monotonic() - cached.fetched_at

    async def listing(
        self, instance: str, provider: Provider, folder: Folder, *, max_age: float | None = None
    ) -> Listing:
        key = (instance, folder.remote_id)
        limit = self.ttl if max_age is None else max_age
        cached = self._listings.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < limit:
            self._stats.incr("metadata.hits")
            return cached.listing
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            cached = self._listings.get(key)
            if cached is not None and time.monotonic() - cached.fetched_at < limit:
                return cached.listing
            self._stats.incr("metadata.refreshes")
            try:
                listing = await provider.list(folder)
            except (RemoteIOError, trio.TooSlowError) as exc:
                if cached is None:
                    raise
                self._stats.incr("metadata.stale_served")
                log.warning(
                    "%s: listing %r failed (%s); serving the cached listing", instance, folder.name, exc
                )
                cached.fetched_at = time.monotonic() - max(0.0, limit - self.negative_ttl)
                return cached.listing
            self._listings[key] = _Cached(listing, time.monotonic())
            self._dirty.set()
            return listing

    def invalidate(self, instance: str, folder_id: str) -> None:
        self._listings.pop((instance, folder_id), None)

    def seed(self, instance: str, folder_id: str, listing: Listing, age: float) -> None:
        """Install a persisted listing (from a snapshot), `age` seconds old."""
        self._listings.setdefault((instance, folder_id), _Cached(listing, time.monotonic() - age))

    def snapshot(self) -> dict[tuple[str, str], Listing]:
        return {key: cached.listing for key, cached in self._listings.items()}

    # ----------------------------------------------------------------------------------------- sizes
    def known_probe(self, instance: str, video: Video) -> Probe | None:
        return self._probes.get((instance, video.remote_id, video.fingerprint))

    async def probe(self, instance: str, provider: Provider, video: Video) -> Probe:
        """Size and ETag of a video whose API entry lacks the size (cached for the mount's life)."""
        key = (instance, video.remote_id, video.fingerprint)
        known = self._probes.get(key)
        if known is not None:
            return known
        lock = self._probe_locks.setdefault(key, trio.Lock())
        async with lock:
            known = self._probes.get(key)
            if known is not None:
                return known
            async with self._head_limiter:
                probe = await self._probe(instance, provider, video)
            self._probes[key] = probe
            self._dirty.set()
            return probe

    def forget_probe(self, instance: str, video: Video) -> None:
        """The file changed: what HEAD told about it is no longer true."""
        self._probes.pop((instance, video.remote_id, video.fingerprint), None)

    def learn(self, instance: str, video: Video, size: int, etag: str | None) -> None:
        self._probes.setdefault((instance, video.remote_id, video.fingerprint), Probe(size, etag))

    async def _probe(self, instance: str, provider: Provider, video: Video) -> Probe:
        lease = await self._resolver.lease(instance, provider, video)
        # As for ranged reads: hold a storage slot first, then take the lease, so a short-lived URL cannot
        # expire while the HEAD waits for a connection.
        async with self._http.slot(lease.url, "data"):
            lease = await self._resolver.lease(instance, provider, video)
            for attempt in range(2):
                try:
                    return await self._head(instance, lease)
                except AuthError:
                    if attempt:
                        raise
                    lease = await self._resolver.refused(instance, provider, video, lease)
        raise AssertionError("unreachable")

    async def _head(self, instance: str, lease: StreamLease) -> Probe:
        tag = f"{instance}:storage"
        self._stats.incr("metadata.heads")
        try:
            response = await self._http.request(
                "HEAD", lease.url, tag=tag, headers=lease.headers, follow_redirects=True, pool=None
            )
        except UnreachableError:
            raise
        except RemoteIOError as exc:
            # Some storage refuses HEAD, or a burst of 5xx used the retry budget: try the ranged GET.
            log.debug("%s: HEAD failed (%s); asking for one byte instead", instance, exc)
            return await self._one_byte(instance, lease, tag)
        etag = response.headers.get("ETag")
        length = response.headers.get("Content-Length")
        if response.status_code == 200 and length is not None and length.isdigit():
            return Probe(int(length), etag)
        if response.status_code in (401, 403, 410):
            raise AuthError(
                f"HEAD {redact_url(lease.url)}: HTTP {response.status_code}", status=response.status_code
            )
        if response.status_code == 404:
            raise NotFoundError(f"HEAD {redact_url(lease.url)}: HTTP 404", status=404)
        return await self._one_byte(instance, lease, tag)

    async def _one_byte(self, instance: str, lease: StreamLease, tag: str) -> Probe:
        """HEAD refused or without a length: ask for one byte and read the total from Content-Range."""
        headers = dict(lease.headers)
        headers["Range"] = "bytes=0-0"
        response = await self._http.request(
            "GET", lease.url, tag=tag, headers=headers, follow_redirects=True, pool=None
        )
        if response.status_code in (401, 403, 410):
            raise AuthError(
                f"GET {redact_url(lease.url)}: HTTP {response.status_code}", status=response.status_code
            )
        parsed = parse_content_range(response.headers.get("Content-Range"))
        if response.status_code == 206 and parsed is not None and parsed[2] is not None:
            return Probe(parsed[2], response.headers.get("ETag"))
        if response.status_code == 200 and response.headers.get("Content-Length", "").isdigit():
            return Probe(int(response.headers["Content-Length"]), response.headers.get("ETag"))
        raise RemoteIOError(
            f"{instance}: cannot learn the size of {redact_url(lease.url)} (HTTP {response.status_code})"
        )
