"""Sizes the API does not tell, learned from storage: a HEAD per video, cached per fingerprint.

`probe()` asks storage for a video's size (and ETag) with a HEAD, or with a one-byte ranged GET when HEAD is
refused or answers without a length. Answers are kept per (instance, id, fingerprint) for the life of the
mount and saved with the listing snapshot, so a second listing, or a remount, does not ask again while the
fingerprint holds. Concurrent probes of one video are one request (single flight). Nothing is kept per
video but its answer: the in-flight table empties as probes finish. Who asks, and when: `Tree.sized`, for
a `stat` or `open` that needs the size (and ahead of a walker), never for a mere listing.

Answers are kept by instance, then by remote id, each with the fingerprint it holds for: one answer per
video. A table keyed by (instance, id, fingerprint) tuples cost a tuple and a copy of the id per answer,
12.8 MiB for a camera of 100,000 archives; a changed video's new answer simply replaces the old one. The
fingerprint an answer holds for is kept as a 60-bit hash of it (`basis_of`), a 32-byte number instead of a
69-byte string (`sm:None:<mtime>` for a video listed without size or ETag): 3.5 MiB at 100,000. Two
fingerprints of one video hashing alike would take a one in 2⁶⁰ chance, per change of that video.

The answers themselves are kept in flat arrays, a 33-byte row each (`answers.py`: 5 MiB at 100,000, against
12.4 as a dict of packed bytes, and 21 as `Probe` objects). The tree's nodes do not hold the ETag: it is read
from here when a file is opened (`Tree.etag_of`).

How many at once (a camera with 20,000 archives is 20,000 HEADs): an adaptive window per storage origin
(`vidfs.http.adaptive`), up to `HIGHEST`. At 20 ms of round trip, 32 probes in flight are 1,600 HEADs a
second; a storage that says "too many" gets fewer at once, and none until it said it is ready again.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio
from xxhash import xxh3_64_intdigest

from vidfs.catalog.answers import AnswerTable, Chunk, Probe, chunk_of
from vidfs.errors import AuthError, NotFoundError, RemoteIOError, UnreachableError, redact_url
from vidfs.http.adaptive import CONGESTED, START, AdaptiveLimit
from vidfs.http.client import HttpClient, origin_of
from vidfs.http.policy import error_for, renews_lease
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import parse_content_range
from vidfs.model import Entry, StreamLease, Video
from vidfs.providers.base import Provider
from vidfs.stats import Stats
from vidfs.tasks import Holding

log = logging.getLogger(__name__)

ProbeKey = tuple[str, str, str]  # (instance, remote id, fingerprint)


def basis_of(fingerprint: str) -> int:
    """The number a probe answer keeps for the `Video.fingerprint` it holds for (see the module's essay)."""
    return xxh3_64_intdigest(fingerprint.encode()) >> 4  # 60 bits: a 32-byte int, not 36


@dataclass(slots=True, eq=False)
class _InFlight:
    done: trio.Event = field(default_factory=trio.Event)
    probe: Probe | None = None
    error: BaseException | None = None


ATTEMPTS = 6  # tries of one probe through 429/503 and dropped connections
HIGHEST = 64  # probes of one storage origin in flight at most


class SizeProbes:
    def __init__(self, *, http: HttpClient, resolver: Resolver, stats: Stats) -> None:
        self._http = http
        self._resolver = resolver
        self._stats = stats
        self._known: dict[str, AnswerTable] = {}  # by instance
        self._in_flight: dict[ProbeKey, _InFlight] = {}
        self._limits: dict[tuple[str, str, int], AdaptiveLimit] = {}
        self.version = 0  # bumped on every new answer (the snapshot writer watches it)
        self.forgotten = 0  # answers forgotten so far: a build that saw it move reads all its answers again
        # The chunks of rows answered since the snapshot writer last took them, by instance (`answers.py`).
        self._unsaved: dict[str, set[int]] = {}
        self.changed = trio.Event()

    def known(self, instance: str, video: Video) -> Probe | None:
        table = self._known.get(instance)
        if table is None:  # sizes listed by the API: nothing probed, and no fingerprint string to build
            return None
        return table.get(video.remote_id, basis_of(video.fingerprint))

    def known_sizes(self, instance: str, entries: Sequence[Entry], missing: int) -> array[int]:
        """`known`'s size of each video in `entries` the listing gives no size for, `missing` for the others
        and those not asked yet, no `Probe` made (a directory's build reads them all)."""
        table = self._known.get(instance)
        if table is None:  # sizes listed by the API: nothing probed, and no fingerprint string to build
            return array("q", [missing]) * len(entries)
        wanted = (
            (entry.remote_id, basis_of(entry.fingerprint))
            if isinstance(entry, Video) and entry.size is None
            else None
            for entry in entries
        )
        return table.sizes(wanted, missing)

    async def probe(self, instance: str, provider: Provider, video: Video) -> Probe:
        """Size and ETag of a video whose API entry lacks the size."""
        key = (instance, video.remote_id, video.fingerprint)
        known = self._answer(key)
        if known is not None:
            return known
        flight = self._in_flight.get(key)
        if flight is None:
            flight = self._in_flight[key] = _InFlight()
            try:
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

    def _answer(self, key: ProbeKey) -> Probe | None:
        instance, remote_id, fingerprint = key
        table = self._known.get(instance)
        return None if table is None else table.get(remote_id, basis_of(fingerprint))

    def learn(self, key: ProbeKey, probe: Probe) -> None:
        instance, remote_id, fingerprint = key
        table = self._known.get(instance)
        if table is None:
            table = self._known[instance] = AnswerTable()
        row = table.put(remote_id, Probe(probe.size, probe.etag, basis_of(fingerprint)))
        self._unsaved.setdefault(instance, set()).add(chunk_of(row))
        self.version += 1
        self.changed.set()

    def forget(self, instance: str, video: Video) -> None:
        """The file changed: what storage told about it is no longer true."""
        table = self._known.get(instance)
        if table is not None and table.forget(video.remote_id, basis_of(video.fingerprint)):
            self.forgotten += 1

    def export(self, instance: str) -> list[Chunk]:
        """Every chunk of one instance's answers, copied for the snapshot writer (in the trio thread)."""
        table = self._known.get(instance, AnswerTable())
        return [table.chunk(number) for number in range(table.chunk_count())]

    def take_unsaved(self) -> dict[str, list[Chunk]]:
        """The chunks with answers learned since the last call, copied, by instance (for the snapshot writer,
        which writes only those: all 100,000 answers of a big camera written again at every save were most
        of its work)."""
        taken = {
            instance: [self._known[instance].chunk(number) for number in sorted(numbers)]
            for instance, numbers in self._unsaved.items()
        }
        self._unsaved = {}
        return taken

    def seed(self, instance: str, answers: AnswerTable) -> bool:
        """The answers a snapshot held (each with its basis); one learned since is kept. Whether `answers`
        became this instance's table as it is (else its rows were added to the one there, under other
        numbers than the snapshot's chunks have them)."""
        table = self._known.get(instance)
        if table is None:
            self._known[instance] = answers
            return True
        for row in answers.rows():
            found = answers.at(row)
            if found is not None:
                table.setdefault(*found)
        return False

    def statistics(self) -> dict[str, int]:
        limits = [limit.limit for limit in self._limits.values()]
        return {
            "known": sum(len(table) for table in self._known.values()),
            "in_flight": len(self._in_flight),
            "concurrency": max(limits, default=START),
            "congestions": sum(limit.congestions for limit in self._limits.values()),
        }

    def limit_for(self, url: str) -> AdaptiveLimit:
        origin = origin_of(url)
        limit = self._limits.get(origin)
        if limit is None:
            limit = self._limits[origin] = AdaptiveLimit(highest=HIGHEST, steady=START)
        return limit

    # ------------------------------------------------------------------------------------- asking
    async def _ask(self, instance: str, provider: Provider, video: Video) -> Probe:
        lease = await self._resolver.lease(instance, provider, video)
        limit = self.limit_for(lease.url)
        for attempt in range(ATTEMPTS):
            async with Holding(limit.limiter):
                await limit.wait_if_paused()  # checked with a slot held: queued probes must not rush in
                # As for ranged reads: the lease is taken again once a slot is held, so a short-lived URL
                # cannot expire while the HEAD waits its turn.
                lease = await self._resolver.lease(instance, provider, video)
                started = trio.current_time()
                try:
                    probe = await self._head(instance, lease)
                except (AuthError, NotFoundError) as exc:
                    if attempt or not renews_lease(exc.status or 0):
                        raise
                    await self._resolver.refused(instance, provider, video, lease)
                    continue
                except RemoteIOError as exc:
                    if exc.status in CONGESTED and attempt + 1 < ATTEMPTS:
                        self._stats.incr("metadata.probe_congestion")
                        log.debug("%s: storage answered %s; fewer probes at once", instance, exc.status)
                        limit.congested(exc.retry_after)
                        continue
                    raise
                limit.answered(trio.current_time() - started)
                limit.relieved()
                return probe
        raise RemoteIOError(f"{instance}: storage kept refusing size probes of {video.remote_id}")

    async def _head(self, instance: str, lease: StreamLease) -> Probe:
        tag = f"{instance}:storage"
        self._stats.incr("metadata.heads")
        try:
            # The caller holds this origin's adaptive limit (above): that is what bounds probes.
            response = await self._http.head(lease.url, tag=tag, headers=lease.headers, retry=False)
        except UnreachableError:
            raise
        except RemoteIOError as exc:
            if exc.status in CONGESTED:
                raise  # the caller slows down and asks again
            # Some storage refuses HEAD, or it broke: try the ranged GET (with the usual retries).
            log.debug("%s: HEAD failed (%s); asking for one byte instead", instance, exc)
            return await self._one_byte(instance, lease, tag)
        status = response.status_code
        length = response.header("Content-Length")
        if status == 200 and length is not None and length.isdigit():
            return Probe(int(length), response.header("ETag"))
        if renews_lease(status):
            raise error_for(status, f"HEAD {redact_url(lease.url)}: HTTP {status}", storage=True)
        return await self._one_byte(instance, lease, tag)

    async def _one_byte(self, instance: str, lease: StreamLease, tag: str) -> Probe:
        """HEAD refused or without a length: ask for one byte and read the total from Content-Range."""
        headers = dict(lease.headers)
        headers["Range"] = "bytes=0-0"
        response = await self._http.request("GET", lease.url, tag=tag, headers=headers, follow_redirects=True)
        if renews_lease(response.status_code):
            message = f"GET {redact_url(lease.url)}: HTTP {response.status_code}"
            raise error_for(response.status_code, message, storage=True)
        parsed = parse_content_range(response.headers.get("Content-Range"))
        if response.status_code == 206 and parsed is not None and parsed[2] is not None:
            return Probe(parsed[2], response.headers.get("ETag"))
        if response.status_code == 200 and response.headers.get("Content-Length", "").isdigit():
            return Probe(int(response.headers["Content-Length"]), response.headers.get("ETag"))
        raise RemoteIOError(
            f"{instance}: cannot learn the size of {redact_url(lease.url)} (HTTP {response.status_code})"
        )
