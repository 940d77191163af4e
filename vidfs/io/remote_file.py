"""A remote video's bytes: one lease, ranged reads, one retry with a fresh lease after a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import LeaseRefused, Sink, read_range
from vidfs.model import Video
from vidfs.providers.base import Provider


@dataclass(frozen=True, slots=True)
class FileKey:
    """What every cached block of a file is keyed by: a new fingerprint is a new file."""

    instance: str
    remote_id: str
    fingerprint: str
    # Hashed once, not at every dict step: a block id (a FileKey and an index) is hashed about 16 times on
    # its way from the disk to a reader, and the generated `__hash__` builds and hashes a tuple each time.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.instance, self.remote_id, self.fingerprint)))

    def __hash__(self) -> int:
        return self._hash


class RemoteFile:
    """Fetches byte ranges of one video; shared by every open handle of the same inode and fingerprint."""

    def __init__(
        self,
        *,
        instance: str,
        provider: Provider,
        video: Video,
        size: int,
        http: HttpClient,
        resolver: Resolver,
        etag: str | None = None,
    ) -> None:
        self.instance = instance
        self.provider = provider
        self.video = video
        self.size = size
        self.etag = etag or video.etag
        self.key = FileKey(instance, video.remote_id, video.fingerprint)
        self._http = http
        self._resolver = resolver
        self._tag = f"{instance}:storage"

    async def fetch(self, start: int, end: int, sink: Sink | None = None) -> bytes:
        """The bytes `[start, end)` (clipped to the file), or, with `sink`, those bytes passed to it in order
        as they arrive (then b"" is returned)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        counted = _Counted(sink) if sink is not None else None

        lease = await self._resolver.lease(self.instance, self.provider, self.video)
        # Take the lease again once we hold a connection slot: waiting for the slot may outlast a short-lived
        # URL or token, and a request must never leave with a lease that expired while it queued.
        async with self._http.slot(lease.url, "data"):
            lease = await self._resolver.lease(self.instance, self.provider, self.video)
            for attempt in range(2):
                resume = start + (counted.received if counted is not None else 0)  # after a refused lease
                try:
                    result = await read_range(
                        self._http,
                        lease,
                        resume,
                        end,
                        tag=self._tag,
                        etag=self.etag,
                        size=self.size,
                        slot_held=True,
                        sink=counted,
                    )
                except LeaseRefused as refused:
                    # Storage refused the lease (the failure policy's 401/403/404/410): ask the provider once
                    # for a fresh one (a new token or signature; signed URLs also move with a re-render or a
                    # new upload, and a file that changed is then caught by its size/ETag: ESTALE). A second
                    # refusal, or the very same lease again, is what the status finally means (EACCES,
                    # ENOENT).
                    if attempt:
                        raise refused.error from None
                    fresh = await self._resolver.refused(self.instance, self.provider, self.video, lease)
                    if (fresh.url, dict(fresh.headers)) == (lease.url, dict(lease.headers)):
                        raise refused.error from None  # the same URL again: asking it again is pointless
                    lease = fresh
                    continue
                if result.etag and not self.etag:
                    self.etag = result.etag
                return result.data
        raise AssertionError("unreachable")


class _Counted:
    """A sink that counts what reached it (a fresh lease goes on from there)."""

    __slots__ = ("received", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.received = 0

    def add(self, offset: int, chunk: bytes) -> None:
        self.sink.add(offset, chunk)
        self.received += len(chunk)

    def rooms(self, offset: int, limit: int) -> list[memoryview]:
        return self.sink.rooms(offset, limit)

    def filled(self, offset: int, count: int) -> None:
        self.sink.filled(offset, count)
        self.received += count
