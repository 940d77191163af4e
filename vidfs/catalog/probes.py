"""Sizes the API does not tell, learned from storage: a HEAD per video, cached per fingerprint.

`probe()` asks storage for a video's size (and ETag) with a HEAD, or with a one-byte ranged GET when HEAD is
refused or answers without a length. Answers are kept per (instance, id, fingerprint) for the life of the
mount and saved with the listing snapshot, so a second listing, or a remount, does not ask again while the
fingerprint holds. Concurrent probes of one video are one request (single flight); probes of different
videos run with bounded concurrency. Nothing is kept per video but its answer: the in-flight table empties
as probes finish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from vidfs.errors import AuthError, NotFoundError, RemoteIOError, UnreachableError, redact_url
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import parse_content_range
from vidfs.model import StreamLease, Video
from vidfs.providers.base import Provider
from vidfs.stats import Stats

log = logging.getLogger(__name__)

ProbeKey = tuple[str, str, str]  # (instance, remote id, fingerprint)


@dataclass(frozen=True, slots=True)
class Probe:
    size: int
    etag: str | None


@dataclass(slots=True, eq=False)
class _InFlight:
    done: trio.Event = field(default_factory=trio.Event)
    probe: Probe | None = None
    error: BaseException | None = None


class SizeProbes:
    def __init__(self, *, http: HttpClient, resolver: Resolver, stats: Stats, concurrency: int = 8) -> None:
        self._http = http
        self._resolver = resolver
        self._stats = stats
        self._known: dict[ProbeKey, Probe] = {}
        self._in_flight: dict[ProbeKey, _InFlight] = {}
        self._limiter = trio.CapacityLimiter(concurrency)
        self.version = 0  # bumped on every new answer (the snapshot writer watches it)
        self.changed = trio.Event()

    def known(self, instance: str, video: Video) -> Probe | None:
        return self._known.get((instance, video.remote_id, video.fingerprint))

    async def probe(self, instance: str, provider: Provider, video: Video) -> Probe:
        """Size and ETag of a video whose API entry lacks the size."""
        key = (instance, video.remote_id, video.fingerprint)
        known = self._known.get(key)
        if known is not None:
            return known
        flight = self._in_flight.get(key)
        if flight is None:
            flight = self._in_flight[key] = _InFlight()
            try:
                async with self._limiter:
                    flight.probe = await self._ask(instance, provider, video)
                self.learn(key, flight.probe)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                del self._in_flight[key]
                flight.done.set()
            return flight.probe
        await flight.done.wait()
        if flight.probe is None:
            raise flight.error if isinstance(flight.error, Exception) else RemoteIOError("probe cancelled")
        return flight.probe

    def learn(self, key: ProbeKey, probe: Probe) -> None:
        self._known[key] = probe
        self.version += 1
        self.changed.set()

    def forget(self, instance: str, video: Video) -> None:
        """The file changed: what storage told about it is no longer true."""
        self._known.pop((instance, video.remote_id, video.fingerprint), None)

    def export(self, instance: str) -> dict[tuple[str, str], Probe]:
        """The answers for one instance, copied (for the snapshot writer; call in the trio thread)."""
        return {(rid, fp): p for (inst, rid, fp), p in self._known.items() if inst == instance}

    def seed(self, instance: str, remote_id: str, fingerprint: str, probe: Probe) -> None:
        self._known.setdefault((instance, remote_id, fingerprint), probe)

    def statistics(self) -> dict[str, int]:
        return {"known": len(self._known), "in_flight": len(self._in_flight)}

    # ------------------------------------------------------------------------------------- asking
    async def _ask(self, instance: str, provider: Provider, video: Video) -> Probe:
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
