"""The shared block tier: blocks one host fetched from the origin, read by the others from Redis.

Where it sits
-------------
`BlockCache` asks memory, then the local disk store, then this tier (`get_run`), then the origin. A hit is
served and also stored on the local disk; an origin fetch is handed here afterwards (`put_run`) and
published in the background.

Which files, and the keys
-------------------------
Only files with a strong identity are shared: a strong ETag (from the provider's listing, the storage's
answer to the size probe, or the first ranged answer; a weak ``W/`` ETag or none means not shared). A
file whose ETag is not known yet is read one block from the origin first (`needs_etag`), which tells it.
A block's key covers the provider instance's identity (type, name, URLs: never a secret), the remote id,
the ETag, the file size, the block size and the index, hashed with the fleet's name key
(`sealing.FleetKeys.name`): ``vb{<group hash>}<n>``, where the hash tag ``{…}`` is the same for the
blocks of one 1 MiB group, so a group lives in one slot of the cluster and one `MGET` reads it, and ``n``
is the block's position in its group. A file whose ETag changes has other keys: an old block is never
served for it.

Reading, and hosts that read the same file at the same moment
--------------------------------------------------------------
`get_run` reads a run (at most one group: the block cache's runs are one group long when the fleet is on)
with one `MGET`, bounded by `timeout`; every value is checked (`FleetKeys.open_block`), and one that fails
is a miss, counted in `rejected`, and deleted. For the blocks not found it takes a claim per group
(``SET vc{<group hash>} NX PX``, `CLAIM_MS`) and fetches them from the origin. A group another host has
claimed is being fetched by that host right now: like a local reader that joins a fetch in flight, we
wait for it instead of fetching it too, looking (claim and blocks in one `MGET`: same hash tag, same
slot) with a growing pause, for as long as the claim stands and at most `CLAIM_WAIT`; the claimant
deletes its claim when it has published the group, so a claim that is gone while blocks are still
missing (its publish was dropped) ends the wait at once, and a claimant that died is waited for at most
`CLAIM_WAIT`. Two hosts reading a file together so fetch it about once instead of twice.

Redis failing never makes a read wait longer than `timeout` per call: every call is bounded by it, the
first failures open the breaker, and an open breaker is a miss at once (no claim, no wait).

Writing: never in a reader's way
--------------------------------
`put_run` only queues (bounded by `QUEUE_BYTES`; a full queue drops the run, counted in
`publish_dropped`). One writer task seals each group's blocks and sets them with one pipeline per group
(``SET … PX`` a day: Redis's `maxmemory-policy` evicts before that when memory is short) and deletes the
group's claim. `mode = "ro"` queues nothing, claims nothing and deletes nothing.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cachetools
import trio
from coredis import PureToken

from vidfs.fleet.connection import Client, FleetRedis, Unavailable
from vidfs.fleet.sealing import FleetKeys
from vidfs.io.remote_file import FileKey, RemoteFile

log = logging.getLogger("vidfs.fleet")

GROUP_BYTES = 1 << 20  # blocks of one hash tag: one slot, one MGET
VALUE_TTL_MS = 24 * 3600 * 1000
CLAIM_MS = 3_000  # a claim outlives any fetch we wait for; a host that died leaves it this long
CLAIM_WAIT = 2.0  # seconds we wait at most for a group another host is fetching
QUEUE_BYTES = 64 << 20  # blocks waiting to be published; more are dropped
POLL_FIRST, POLL_LONGEST = 0.005, 0.05  # pauses between looks for a group another host is fetching
VERIFY_IN_THREAD = 256 << 10  # values larger than this (together) are checked in a worker thread
WRITE_TIMEOUT = 2.0  # a group's pipeline (1 MiB): in the background, so longer than `timeout`
LOG_EVERY = 1000
ETAG_ASKED = 10_000  # files whose first block was fetched alone to learn their ETag (once each)
COUNTERS = (
    "hits", "misses", "rejected", "unshareable", "waited_hits", "claims_won", "claims_lost", "published",
    "publish_dropped", "publish_errors", "deleted",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Publish:
    file_id: str
    file_size: int
    first: int
    blocks: tuple[bytes, ...]


class SharedBlocks:
    """Implements `vidfs.io.block_cache.SharedTier`. Its writer is a service (`run`)."""

    def __init__(
        self,
        redis: FleetRedis,
        keys: FleetKeys,
        *,
        block_size: int,
        identities: Mapping[str, str],
        writes: bool,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.block_size = block_size
        self.group_blocks = max(1, GROUP_BYTES // block_size)
        self.run_bytes = self.group_blocks * block_size  # the block cache's largest run: one group
        self.identities = dict(identities)
        self.writes = writes
        self._queue: collections.deque[_Publish] = collections.deque()
        self._queued = 0
        self._deletes: list[bytes] = []
        # Per file whose first block was asked alone: set once that block's answer is in (`etag_learned`).
        self._etag_asked: cachetools.LRUCache[FileKey, trio.Event] = cachetools.LRUCache(maxsize=ETAG_ASKED)
        self._work = trio.lowlevel.ParkingLot()
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # ---------------------------------------------------------------------------------------- naming
    def file_id(self, file: RemoteFile) -> str | None:
        """The file's shared identity, or None when it is not shared (no strong ETag, unknown instance)."""
        etag = file.etag
        if etag is None and file.key.fingerprint.startswith("etag:"):
            etag = file.key.fingerprint[5:]
        identity = self.identities.get(file.instance)
        if not etag or etag.startswith("W/") or identity is None:
            return None
        return self.keys.name("blocks", identity, file.key.remote_id, etag, file.size, self.block_size)

    def _tag(self, file_id: str, group: int) -> str:
        return hashlib.blake2b(f"{file_id}:{group}".encode(), digest_size=12).hexdigest()

    def _key(self, file_id: str, index: int) -> bytes:
        group, position = divmod(index, self.group_blocks)
        return f"vb{{{self._tag(file_id, group)}}}{position}".encode()

    def _claim_key(self, file_id: str, group: int) -> bytes:
        return f"vc{{{self._tag(file_id, group)}}}".encode()

    def _length(self, file: RemoteFile, index: int) -> int:
        return max(0, min(self.block_size, file.size - index * self.block_size))

    def needs_etag(self, file: RemoteFile) -> bool:
        """True when the file may be shareable but its ETag is not known yet: one block from the origin
        first will tell it (see the module's essay)."""
        if (
            not self.redis.connected
            or file.etag is not None
            or file.key.fingerprint.startswith("etag:")
            or file.instance not in self.identities
            or file.key in self._etag_asked  # its origin gave no ETag: not shareable, ask no more
        ):
            return False
        self._etag_asked[file.key] = trio.Event()
        return True

    def etag_learned(self, file: RemoteFile) -> None:
        """The block asked because of `needs_etag` is in (or failed): runs that wait for the ETag go on."""
        asked = self._etag_asked.get(file.key)
        if asked is not None:
            asked.set()

    async def _etag_settled(self, file: RemoteFile) -> None:
        """While the file's first block is on its way from the origin (`needs_etag`), wait for it, at most
        the Redis `timeout`: the kernel reads ahead of a reader at once, and a run that started before the
        ETag was known went to the origin whole, unshared (16 of 64 blocks, in a CI run under load)."""
        asked = self._etag_asked.get(file.key)
        if asked is not None and file.etag is None:
            with trio.move_on_after(self.redis.timeout):
                await asked.wait()

    # --------------------------------------------------------------------------------------- reading
    async def get_run(self, file: RemoteFile, indices: Sequence[int]) -> dict[int, bytes]:
        """The blocks among `indices` the fleet has (checked), within one `timeout` (see the essay)."""
        file_id = self.file_id(file)
        if file_id is None and indices:
            await self._etag_settled(file)
            file_id = self.file_id(file)
        if file_id is None or not indices:
            self.counts["unshareable"] += len(indices)
            return {}
        looked = await self._lookup(file, file_id, list(indices))
        if looked is None:  # Redis did not answer: a miss, and no second call that could wait as long
            self.counts["misses"] += len(indices)
            return {}
        found = looked
        missing = [index for index in indices if index not in found]
        if missing and self.writes:
            contested = await self._claim(file_id, missing)
            if contested:
                waited = await self._wait_for(file, file_id, contested)
                self.counts["waited_hits"] += len(waited)
                found.update(waited)
        self.counts["hits"] += len(found)
        self.counts["misses"] += len(indices) - len(found)
        return found

    async def _lookup(
        self, file: RemoteFile, file_id: str, indices: list[int], *, claim: bytes | None = None
    ) -> dict[int, bytes] | None:
        """The checked blocks among `indices`, None when Redis did not answer; with `claim`, also whether
        that claim still stands (under the key -1)."""
        keys = [self._key(file_id, index) for index in indices]
        asked = keys if claim is None else [claim, *keys]
        try:
            values = await self.redis.call(lambda client: client.mget(asked))
        except Unavailable:
            return None
        values = list(values)
        claimed = values.pop(0) if claim is not None else None
        present = [
            (key, index, value)
            for key, index, value in zip(keys, indices, values, strict=True)
            if value is not None
        ]
        if sum(len(value) for _key, _index, value in present) > VERIFY_IN_THREAD:
            opened = await trio.to_thread.run_sync(self._open_all, file, present)
        else:
            opened = self._open_all(file, present)
        found: dict[int, bytes] = {}
        for (key, index, _value), data in zip(present, opened, strict=True):
            if data is None:
                self._reject(key)
            else:
                found[index] = data
        if claimed is not None:
            found[-1] = b""
        return found

    def _open_all(self, file: RemoteFile, present: list[tuple[bytes, int, bytes]]) -> list[bytes | None]:
        return [
            self.keys.open_block(key, index, file.size, self._length(file, index), value)
            for key, index, value in present
        ]

    def _reject(self, key: bytes) -> None:
        self.counts["rejected"] += 1
        count = self.counts["rejected"]
        if count == 1 or count % LOG_EVERY == 0:
            log.warning("shared cache: a value failed its check and was not served (%d so far)", count)
        if self.writes and len(self._deletes) < 10_000:
            self._deletes.append(key)
            self._work.unpark()

    async def _claim(self, file_id: str, missing: list[int]) -> list[int]:
        """Claim the groups of `missing` for our own origin fetch; the blocks of groups another host holds."""
        groups = sorted({index // self.group_blocks for index in missing})
        claims = [self._claim_key(file_id, group) for group in groups]

        async def claim_all(client: Client) -> list[bool]:
            async with client.pipeline(transaction=False) as pipe:
                answers = [pipe.set(key, b"1", condition=PureToken.NX, px=CLAIM_MS) for key in claims]
            return [bool(await answer) for answer in answers]

        try:
            won = await self.redis.call(claim_all)
        except Unavailable:
            return []
        held = {group for group, ours in zip(groups, won, strict=True) if not ours}
        self.counts["claims_won"] += len(groups) - len(held)
        self.counts["claims_lost"] += len(held)
        return [index for index in missing if index // self.group_blocks in held]

    async def _wait_for(self, file: RemoteFile, file_id: str, contested: list[int]) -> dict[int, bytes]:
        """Blocks other hosts are fetching: looked for, group by group, while the group's claim stands, at
        most CLAIM_WAIT in all."""
        found: dict[int, bytes] = {}
        give_up = trio.current_time() + CLAIM_WAIT
        for group in sorted({index // self.group_blocks for index in contested}):
            waiting = [index for index in contested if index // self.group_blocks == group]
            claim = self._claim_key(file_id, group)
            pause = POLL_FIRST
            while waiting and trio.current_time() + pause < give_up:  # ≤ CLAIM_WAIT / POLL_FIRST looks
                await trio.sleep(pause)
                pause = min(pause * 1.5, POLL_LONGEST)
                got = await self._lookup(file, file_id, waiting, claim=claim)
                if got is None:
                    return found  # Redis failed: no more looks (each could wait `timeout`)
                standing = got.pop(-1, None) is not None
                found.update(got)
                waiting = [index for index in waiting if index not in got]
                if not standing:
                    break  # published, or given up by its claimant (or Redis failed): ours to fetch
        return found

    # --------------------------------------------------------------------------------------- writing
    def put_run(self, file: RemoteFile, first: int, blocks: Sequence[bytes]) -> None:
        """Queue blocks fetched from the origin for publishing; never waits (a full queue drops them)."""
        if not self.writes or not blocks:
            return
        file_id = self.file_id(file)
        if file_id is None:
            return
        size = sum(len(block) for block in blocks)
        if self._queued + size > QUEUE_BYTES:
            self.counts["publish_dropped"] += len(blocks)
            return
        self._queue.append(_Publish(file_id, file.size, first, tuple(blocks)))
        self._queued += size
        self._work.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: publishes queued runs group by group, deletes rejected values. A service."""
        task_status.started()
        while True:
            if not (self._queue or self._deletes):
                await self._work.park()
            if self._deletes:
                doomed, self._deletes = self._deletes, []
                await self._delete(doomed)
            if self._queue:
                item = self._queue.popleft()
                try:
                    await self._publish(item)
                finally:
                    self._queued -= sum(len(block) for block in item.blocks)

    async def _publish(self, item: _Publish) -> None:
        index, end = item.first, item.first + len(item.blocks)
        while index < end:
            group = index // self.group_blocks
            stop = min(end, (group + 1) * self.group_blocks)
            pairs = [
                (key := self._key(item.file_id, i), self.keys.seal_block(key, i, item.file_size, block))
                for i, block in zip(range(index, stop), item.blocks[index - item.first :], strict=False)
            ]
            claim = self._claim_key(item.file_id, group)
            try:
                publish = functools.partial(_set_group, pairs=pairs, claim=claim)
                await self.redis.call(publish, timeout=WRITE_TIMEOUT)
                self.counts["published"] += len(pairs)
            except Unavailable:
                self.counts["publish_errors"] += len(pairs)
            index = stop

    async def _delete(self, keys: list[bytes]) -> None:
        for key in keys:  # one at a time: keys of several slots
            try:
                await self.redis.call(functools.partial(_delete, key=key))
                self.counts["deleted"] += 1
            except Unavailable:
                return

    def statistics(self) -> dict[str, Any]:
        return {**self.counts, "queued_bytes": self._queued}


async def _set_group(client: Client, *, pairs: list[tuple[bytes, bytes]], claim: bytes) -> None:
    """One group's blocks (one slot) in one pipeline, and its claim released."""
    async with client.pipeline(transaction=False) as pipe:
        for key, value in pairs:
            pipe.set(key, value, px=VALUE_TTL_MS)
        pipe.delete([claim])


async def _delete(client: Client, *, key: bytes) -> None:
    await client.delete([key])
