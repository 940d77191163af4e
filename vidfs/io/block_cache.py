"""The block cache: memory LRU → disk store → one shared ranged fetch.

How it works
------------
A file is cut into fixed-size blocks (`block_size`, 64 KiB by default). A block is identified by the
file's `FileKey` (provider instance, remote id, fingerprint) and its index, so a file whose fingerprint
changes can never be served with blocks of its old content.

A read of `[offset, offset+size)` needs a few consecutive blocks. For each one, in order:
1. the memory LRU (`vidfs.io.block_lru.ByteLRU`, sized in bytes: one budget for every open file);
2. a fetch already in flight for that block (single flight: N readers of one block → one request);
3. the disk store, when configured (a read of several blocks all on disk, none of them in memory, is read
   there whole into the reply instead, and not prefetched: `vidfs.io.store.spans`);
4. otherwise it is *missing*. Consecutive missing blocks are grouped into runs of at most
   `max_request` bytes, and each run becomes one ranged GET.

Fetches run in the mount's background nursery, not in the reader's task: a reader that gives up (timeout,
interrupted syscall) does not cancel a download other readers are waiting for, and a prefetch outlives the
read that triggered it. Each block of a run gets a `_Pending` (an event plus the outcome); readers wait on
it, with the caller's deadline around them.

Why small blocks: a random 64 KiB read must not cost a 1 MiB download (players and `ffprobe` jump around),
while sequential readers still get large requests, because runs span many blocks and the prefetcher asks
for whole windows at once.

Backpressure: prefetches only start while the bytes in flight for prefetch stay under the memory budget;
otherwise they are skipped (the next read asks again). Demand reads are never refused. Nothing is
buffered per open file: memory is bounded by the LRU budget plus what is in flight. With a disk store, a
download (or a run asked of the shared tier) first waits for room in the disk's backlog
(`vidfs.io.store.backlog`): a source faster than the disk slows the readers instead of piling blocks up
in front of its write queue.

What the memory holds: blocks not yet read, first. A block a reader has just had whole goes to the cold
end of the LRU (`ByteLRU.demote`): the kernel's page cache holds what the reader got (`keep_cache` while
the fingerprint holds), and the disk store holds it too, so the LRU's room goes to the prefetched blocks the
reader has not reached. Recency alone did the opposite on a sequential read: the block just read is the
most recent one, so the readahead that arrived earlier, and is read next, was evicted first once the
window filled the memory (a cold `dd` at 0 ms: 521-572 MB/s at 0.96-1.04 CPU s for 512 MiB, against
713-776 MB/s at 0.76-0.80 with demotion). That is what lets the readahead window be the whole memory budget
instead of half of it (see `_prefetch_budget`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from vidfs.errors import StaleError, VidfsError
from vidfs.io.assembler import Assembler
from vidfs.io.block_lru import ByteLRU
from vidfs.io.block_pool import BlockPool
from vidfs.io.remote_file import FileKey, RemoteFile
from vidfs.io.reply_buffer import ReplyBuffer
from vidfs.io.store.spans import SPAN_MIN_BLOCKS
from vidfs.io.streams import StreamPlanner
from vidfs.stats import Stats
from vidfs.tasks import Spawner

log = logging.getLogger(__name__)

BlockId = tuple[FileKey, int]


class BlockStore(Protocol):
    """A persistent second level (the disk cache, `vidfs.io.store.DiskStore`). Its errors never reach us:
    a store that cannot read finds nothing, one that cannot write stores nothing."""

    async def get_run(self, key: FileKey, first: int, last: int, file_size: int) -> dict[int, bytes]:
        """The cached blocks among first..last, checked, by index."""
        ...

    async def put_run(self, key: FileKey, first: int, blocks: Sequence[bytes], file_size: int) -> None:
        """Store blocks first.. (consecutive). May wait while the disk is behind (backpressure)."""
        ...

    def on_disk(self, key: FileKey, first: int, last: int, file_size: int) -> bool:
        """Blocks first..last are all there to be read with `read_span` (so not worth prefetching)."""
        ...

    async def read_span(self, key: FileKey, start: int, stop: int, file_size: int) -> memoryview | None:
        """`[start, stop)` read whole from the store and checked, as a view valid until the reply is sent;
        None when that cannot be (then `get_run`)."""
        ...

    def incoming(self, nbytes: int) -> AbstractAsyncContextManager[bool]:
        """Around a download of `nbytes` to be stored: waits while the disk is behind; gives whether to
        store them (`put_run`) when they came."""
        ...

    def invalidate(self, key: FileKey) -> None: ...

    def pin(self, key: FileKey) -> None: ...

    def hand_back_to(self, written: Callable[[bytes], None]) -> None:
        """Hand each block given to `put_run` to `written` once done with it (none is written to after)."""
        ...

    def unpin(self, key: FileKey) -> None: ...

    def pinned(self) -> set[FileKey]: ...

    def statistics(self) -> dict[str, int]: ...


class SharedTier(Protocol):
    """The fleet's shared block cache (`vidfs.fleet.blocks.SharedBlocks`), asked after the disk store and
    before the origin. Never raises; bounded in time by its own `timeout`."""

    def needs_etag(self, file: RemoteFile) -> bool:
        """Shareable once its ETag is known, which one block from the origin will tell."""
        ...

    def etag_learned(self, file: RemoteFile) -> None:
        """That block is in (or failed)."""
        ...

    async def get_run(self, file: RemoteFile, indices: Sequence[int]) -> dict[int, bytes]:
        """The blocks among `indices` (consecutive) the fleet has, checked, by index."""
        ...

    def put_run(self, file: RemoteFile, first: int, blocks: Sequence[bytes]) -> None:
        """Publish blocks fetched from the origin, in the background (never waits)."""
        ...


@dataclass(eq=False)
class _Pending:
    event: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None
    source: str = "network"  # where the block came from: "network", "disk" (bytes.served.<source>)

    async def wait(self) -> bytes:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        assert self.data is not None
        return self.data


class BlockCache:
    def __init__(
        self,
        *,
        memory_bytes: int,
        block_size: int,
        nursery: Spawner,
        stats: Stats,
        store: BlockStore | None = None,
        max_request: int = 8 << 20,
        shared: SharedTier | None = None,
        max_streams: int = 8,
    ) -> None:
        self.block_size = block_size
        self.max_request_blocks = max(1, max_request // block_size)
        # Blocks the LRU evicts are received into again when nothing holds them (`vidfs.io.block_pool`).
        self._pool = BlockPool(block_size)
        self._memory: ByteLRU[BlockId] = ByteLRU(max(memory_bytes, block_size), self._pool.give)
        if store is not None:
            store.hand_back_to(self._pool.give)  # and those the disk store has written
        self._pending: dict[BlockId, _Pending] = {}
        self._nursery = nursery
        self._stats = stats
        self._store = store
        self._shared = shared
        # The whole memory budget, no longer half of it: a block read whole leaves the memory first (see the
        # module's essay), so prefetched blocks are what the LRU keeps. At 20 ms of round trip a window of
        # 12 MiB (half of the default 24) held a cold `dd` to 202-229 MB/s; 24 MiB, asked for an eighth at a
        # time (`vidfs.io.readahead.ASK_FRACTION`), gave 300-311 MB/s (curl, one stream: 143), peak RSS
        # 82-85 MiB.
        self._prefetch_budget = max(memory_bytes, block_size * self.max_request_blocks)
        # No reader is worth a readahead window larger than what the memory may hold for prefetches: blocks
        # fetched further ahead are evicted before they are read, and read a second time.
        self.max_readahead = self._prefetch_budget
        # How a reader's window is cut into parallel runs: measured per origin (vidfs.io.streams).
        self.streams = StreamPlanner(
            max_streams=max_streams, window=self.max_readahead, max_run=self.max_request_blocks * block_size
        )
        self._prefetch_in_flight = 0
        self._last_scheduled = 0
        self._reply = ReplyBuffer()

    # ----------------------------------------------------------------------------------------- reads
    async def read(self, file: RemoteFile, offset: int, size: int, *, reader: bool = True) -> bytes:
        """`[offset, offset+size)` of `file`; counted as served to a reader unless `reader` is False (the
        daemon's own reads, such as a container warm-up)."""
        blocks, start, stop = await self._blocks(file, offset, size, reader=reader)
        if len(blocks) <= 1:
            return blocks[0][start:stop] if blocks else b""
        # Cut the first and last blocks as views and join once: one copy per read.
        tail = stop - self.block_size * (len(blocks) - 1)
        return b"".join([memoryview(blocks[0])[start:], *blocks[1:-1], memoryview(blocks[-1])[:tail]])

    async def read_reply(self, file: RemoteFile, offset: int, size: int) -> bytes | memoryview:
        """`read` for a FUSE reply, sent before anything else runs: a block itself or a view of it when the
        read lies within one block, else the blocks copied into the one resident reply buffer
        (`vidfs.io.reply_buffer`: no fresh 1 MiB of pages per read)."""
        span = await self._from_disk_span(file, offset, size)
        if span is not None:
            return span
        blocks, start, stop = await self._blocks(file, offset, size, reader=True)
        if len(blocks) > 1:
            return self._reply.assemble(blocks, start, stop)
        if not blocks:
            return b""
        block = blocks[0]
        return block if start == 0 and stop == len(block) else memoryview(block)[start:stop]

    async def _from_disk_span(self, file: RemoteFile, offset: int, size: int) -> memoryview | None:
        """A read of several blocks, all on disk and none in memory or on its way: read whole from the disk,
        without a block object or a copy (`vidfs.io.store.spans`)."""
        end = min(offset + size, file.size)
        first, last = offset // self.block_size, (end - 1) // self.block_size
        if self._store is None or last - first + 1 < SPAN_MIN_BLOCKS:
            return None
        memory, pending, key = self._memory, self._pending, file.key
        if any((key, index) in memory or (key, index) in pending for index in range(first, last + 1)):
            return None
        span = await self._store.read_span(key, offset, end, file.size)
        if span is not None:
            self._stats.incr("cache.disk_hits", last - first + 1)
            self._stats.incr("bytes.served.disk", end - offset)
        return span

    async def _blocks(
        self, file: RemoteFile, offset: int, size: int, *, reader: bool
    ) -> tuple[list[bytes], int, int]:
        """The blocks `[offset, offset+size)` lies in (none past the end of the file), and where it starts
        and stops in their concatenation."""
        end = min(offset + size, file.size)
        if end <= offset:
            return [], 0, 0
        first = offset // self.block_size
        last = (end - 1) // self.block_size
        items = self._ensure(file, first, last, prefetch=False)
        blocks = [await item.wait() if isinstance(item, _Pending) else item for item in items]
        base = first * self.block_size
        if reader:
            self._count_served(items, offset, end, base)
            self._demote_read(file, first, last, offset, end)
        return blocks, offset - base, end - base

    def _demote_read(self, file: RemoteFile, first: int, last: int, offset: int, end: int) -> None:
        """Blocks first..last that `[offset, end)` covers whole go to the LRU's cold end (see the essay); a
        block read in part stays where it is (a prober reading 4 KiB at a time comes back for the rest)."""
        size = self.block_size
        lo = first if offset == first * size else first + 1
        hi = last + 1 if end == min((last + 1) * size, file.size) else last
        for index in range(lo, hi):
            self._memory.demote((file.key, index))

    def _count_served(self, items: list[bytes | _Pending], offset: int, end: int, base: int) -> None:
        """Bytes served by source (`bytes.served.<source>`): "memory" for blocks found in the LRU when the
        reader asked, else where the block it waited for came from (a prefetch that arrived before the read
        counts as memory: the reader did not wait for it)."""
        by_source: dict[str, int] = {}
        for position, item in enumerate(items):
            if isinstance(item, _Pending):
                start = base + position * self.block_size
                served = min(end, start + self.block_size) - max(offset, start)
                by_source[item.source] = by_source.get(item.source, 0) + served
        memory = end - offset - sum(by_source.values())
        for source, served in by_source.items():  # one counter update per source, not per block
            self._stats.incr(f"bytes.served.{source}", served)
        if memory:
            self._stats.incr("bytes.served.memory", memory)

    def prefetch(self, file: RemoteFile, start: int, end: int) -> int:
        """Start fetching `[start, end)` in the background; returns the bytes actually scheduled."""
        end = min(end, file.size)
        if end <= start:
            return 0
        first = start // self.block_size
        last = (end - 1) // self.block_size
        self._last_scheduled = 0
        if self._store is not None and self._store.on_disk(file.key, first, last, file.size):
            return 0  # read from the disk when asked for: the kernel's readahead runs ahead of it
        self._ensure(file, first, last, prefetch=True)
        return self._last_scheduled

    def _ensure(self, file: RemoteFile, first: int, last: int, *, prefetch: bool) -> list[bytes | _Pending]:
        """Per block first..last: its bytes or the pending fetch; starts fetches for missing runs."""
        items: list[bytes | _Pending] = []
        run: list[int] = []
        run_blocks = self.max_request_blocks
        if prefetch:
            run_blocks = max(1, min(run_blocks, self.streams.run_bytes(file.instance) // self.block_size))
        for index in range(first, last + 1):
            block_id = (file.key, index)
            data = self._memory.get(block_id)
            if data is not None:
                if not prefetch:
                    self._stats.incr("cache.memory_hits")
                items.append(data)
                self._flush_run(file, run, prefetch)
                continue
            pending = self._pending.get(block_id)
            if pending is not None:
                if not prefetch:
                    self._stats.incr("cache.joined_in_flight")
                items.append(pending)
                self._flush_run(file, run, prefetch)
                continue
            if (
                prefetch
                and self._prefetch_in_flight + (len(run) + 1) * self.block_size > self._prefetch_budget
            ):
                self._flush_run(file, run, prefetch)
                self._stats.incr("prefetch.skipped_budget")
                break
            pending = self._pending[block_id] = _Pending()
            items.append(pending)
            run.append(index)
            if len(run) >= run_blocks:
                self._flush_run(file, run, prefetch)
        self._flush_run(file, run, prefetch)
        return items

    def _flush_run(self, file: RemoteFile, run: list[int], prefetch: bool) -> None:
        if not run:
            return
        indices = list(run)
        run.clear()
        nbytes = len(indices) * self.block_size
        if prefetch:
            self._prefetch_in_flight += nbytes
            self._last_scheduled += nbytes
            self._stats.incr("prefetch.bytes_scheduled", nbytes)
        self._nursery.start_soon(self._fetch_run, file, indices, prefetch, nbytes)

    async def _fetch_run(
        self, file: RemoteFile, indices: list[int], prefetch: bool, nbytes: int, *, look: bool = True
    ) -> None:
        """Fetch consecutive blocks (first from the disk store when `look`) and answer their waiters. When the
        store has some of them, the stretches after the first hole become fetches of their own, each
        answering its own waiters and holding its share of the prefetch budget."""
        owned = indices  # the blocks whose waiters this task answers
        try:
            missing = indices
            if self._store is not None and look:
                stretches = await self._from_store(file, indices)
                missing = owned = stretches[0] if stretches else []
                for stretch in stretches[1:]:
                    share = len(stretch) * self.block_size if prefetch else 0
                    nbytes -= share
                    self._nursery.start_soon(
                        functools.partial(self._fetch_run, file, stretch, prefetch, share, look=False)
                    )
            if missing:
                await self._fetch_missing(file, missing)
        except (Exception, trio.Cancelled) as exc:
            if isinstance(exc, StaleError):
                self.invalidate(file.key)
            for index in owned:
                pending = self._pending.pop((file.key, index), None)
                if pending is not None:
                    pending.error = exc if isinstance(exc, VidfsError | OSError) else _wrap(exc)
                    pending.event.set()
            if isinstance(exc, trio.Cancelled):
                raise
            if not isinstance(exc, VidfsError):
                log.exception("unexpected error fetching %s", file.key.remote_id)
        finally:
            if prefetch:
                self._prefetch_in_flight -= nbytes

    # ---- the fleet's shared tier (vidfs.fleet): between the disk store and the origin --------------------
    async def _fetch_missing(self, file: RemoteFile, missing: list[int]) -> None:
        """What the shared tier has of `missing` is served (and stored on the local disk); the rest, a stretch
        at a time, comes from the origin."""
        shared = self._shared
        if shared is None:
            await self._download(file, missing)
            return
        if shared.needs_etag(file):  # its ETag (and so its shared key) comes with its first bytes
            try:
                await self._download(file, missing[:1])
            finally:
                shared.etag_learned(file)
            missing = missing[1:]
        found = await self._from_shared(shared, file, missing) if missing else {}
        stretches: list[list[int]] = [[]]
        for index in missing:
            data = found.get(index)
            if data is None:
                stretches[-1].append(index)
            elif stretches[-1]:
                stretches.append([])
        for stretch in stretches:
            if stretch:
                await self._download(file, stretch)

    async def _from_shared(
        self, shared: SharedTier, file: RemoteFile, missing: list[int]
    ) -> dict[int, bytes]:
        """Serve what the shared tier has of `missing` and store it on the local disk; the disk's backlog is
        asked first, as for a download (the shared tier can outrun the disk as well as the origin can)."""
        if self._store is None:
            found = await shared.get_run(file, missing)
            self._serve_shared(file, found)
            return found
        async with self._store.incoming(len(missing) * self.block_size) as storing:
            found = await shared.get_run(file, missing)
            self._serve_shared(file, found)
            if found and storing:
                await self._store_found(file, found)
        return found

    def _serve_shared(self, file: RemoteFile, found: dict[int, bytes]) -> None:
        if found:
            self._stats.incr("cache.shared_hits", len(found))
            for index in sorted(found):
                self._complete(file, index, found[index], "shared")

    async def _store_found(self, file: RemoteFile, found: dict[int, bytes]) -> None:
        assert self._store is not None
        indices = sorted(found)
        start = 0
        for position in range(1, len(indices) + 1):  # one put per consecutive stretch
            if position == len(indices) or indices[position] != indices[position - 1] + 1:
                blocks = [found[index] for index in indices[start:position]]
                try:
                    await self._store.put_run(file.key, indices[start], blocks, file.size)
                except Exception:  # the store never raises; should it, the readers are served already
                    log.exception("disk cache: storing blocks of %s failed", file.key.remote_id)
                start = position

    async def _download(self, file: RemoteFile, missing: list[int]) -> None:
        start = missing[0] * self.block_size
        end = min((missing[-1] + 1) * self.block_size, file.size)
        self._stats.incr("cache.misses", len(missing))
        if self._store is None:
            await self._download_stretch(file, missing, start, end, storing=False)
            return
        async with self._store.incoming(end - start) as storing:  # waits while the disk is behind
            await self._download_stretch(file, missing, start, end, storing=storing)

    async def _download_stretch(
        self, file: RemoteFile, missing: list[int], start: int, end: int, *, storing: bool
    ) -> None:
        assembler = Assembler(
            start, end, self.block_size, lambda i, b: self._complete(file, i, b), self._pool.take
        )
        await file.fetch(start, end, sink=assembler)
        if assembler.position != end:
            raise StaleError(
                f"{file.instance}: short read ({assembler.position - start} of {end - start} bytes)"
            )
        self._stats.incr("bytes.fetched", end - start)
        self.streams.downloaded(file.instance, end - start)
        blocks = [block for _index, block in assembler.done]
        if self._shared is not None:  # the fleet's copy, published in the background
            self._shared.put_run(file, missing[0], blocks)
        if self._store is not None and storing:  # readers had their blocks as they arrived; now the disk
            try:
                await self._store.put_run(file.key, missing[0], blocks, file.size)
            except Exception:  # the store never raises; should it, the readers are served already
                log.exception("disk cache: storing blocks of %s failed", file.key.remote_id)

    async def _from_store(self, file: RemoteFile, indices: list[int]) -> list[list[int]]:
        """Serve what the disk store has of `indices` (consecutive); the rest as stretches of consecutive
        blocks to download."""
        store = self._store
        assert store is not None
        try:
            found = await store.get_run(file.key, indices[0], indices[-1], file.size)
        except Exception:  # the store never raises; should it, that is a miss, never a failed read
            log.exception("disk cache: reading blocks of %s failed", file.key.remote_id)
            found = {}
        if found:
            self._stats.incr("cache.disk_hits", len(found))
        stretches: list[list[int]] = []
        previous = -2
        for index in indices:
            data = found.get(index)
            if data is not None:
                self._complete(file, index, data, "disk")
                continue
            if index != previous + 1:
                stretches.append([])
            stretches[-1].append(index)
            previous = index
        return stretches

    def _complete(self, file: RemoteFile, index: int, block: bytes, source: str = "network") -> None:
        block_id = (file.key, index)
        self._memory.put(block_id, block)  # one larger than the whole budget is served, not kept
        pending = self._pending.pop(block_id, None)
        if pending is not None:
            pending.data = block
            pending.source = source
            pending.event.set()

    # ------------------------------------------------------------------------------------ management
    def available(self, key: FileKey, index: int) -> bool:
        """Cached in memory or being fetched."""
        return (key, index) in self._memory or (key, index) in self._pending

    def invalidate(self, key: FileKey) -> None:
        for block_id in [block_id for block_id in self._memory if block_id[0] == key]:
            self._memory.pop(block_id)
        if self._store is not None:
            self._store.invalidate(key)

    def statistics(self) -> dict[str, int]:
        return {
            "memory_bytes": int(self._memory.currsize),
            "memory_budget": int(self._memory.maxsize),
            "memory_blocks": len(self._memory),
            "in_flight_blocks": len(self._pending),
            "prefetch_in_flight_bytes": self._prefetch_in_flight,
            **{f"reply_{name}": value for name, value in self._reply.statistics().items()},
            **self._pool.statistics(),
            **self.streams.statistics(),
        }


def _wrap(exc: BaseException) -> VidfsError:
    from vidfs.errors import RemoteIOError

    return RemoteIOError(f"internal error: {type(exc).__name__}")
