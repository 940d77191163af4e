"""The store's books, kept in the trio thread: which blocks of which files are on disk or queued, how many
bytes that is against the capacity, the LRU order, the pins, and the operations queued for the writer.

No I/O and no waiting here: every method is a few dict operations, so the books can never be seen half
changed. The index on disk lags the books by the queued operations and catches up in their order (one
writer, first in first out), which is what keeps the two consistent:
- a block is counted (and served from `FileEntry.pending`) from the moment it is accepted; it becomes
  readable from disk when its write is done and indexed (`finish_write`);
- an evicted or dropped block leaves the books at once; its write, if still queued, happens before the
  eviction in the queue, and a write's result only lands in the extent object it was accepted into, so a
  result can never bring back what was evicted meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from vidfs.io.remote_file import FileKey
from vidfs.io.store.index import ExtentRow, FileInfo, FileRow
from vidfs.io.store.layout import (
    EXTENT_MASK,
    EXTENT_SHIFT,
    Layout,
    block_length,
    extent_bytes,
    file_name,
    file_seed,
)
from vidfs.io.store.model import (
    DeleteOp,
    DropOp,
    EvictOp,
    Extent,
    FileEntry,
    Op,
    PinsOp,
    Stretch,
    TouchOp,
    WriteOp,
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What `plan_read` found: blocks served from memory, stretches to read, and per block to read the
    extent and checksum it was planned with (to tell damage from an eviction that raced the read)."""

    found: dict[int, bytes]
    stretches: list[Stretch]
    refs: list[tuple[Extent, int, int]]  # (extent, index, checksum)


class Ledger:
    def __init__(self, root: Path, *, block_size: int, capacity: int) -> None:
        self.layout = Layout(root)
        self.block_size = block_size
        self.capacity = capacity
        self.files: dict[str, FileEntry] = {}
        self.lru: OrderedDict[str, FileEntry] = OrderedDict()  # unpinned files, least recently used first
        self.pins: dict[str, FileKey] = {}
        self.pins_dirty = False
        self.ops: deque[Op] = deque()
        self.total = 0
        self.blocks = 0
        self.queued_bytes = 0
        self.clock = 0
        self.evictions = 0
        self.touched: dict[str, FileEntry] = {}

    # ------------------------------------------------------------------------------------ entries
    def entry_for(self, key: FileKey, size: int) -> FileEntry:
        """The file's entry, made (empty, nothing to load) when new."""
        name = file_name(key, self.block_size)
        entry = self.files.get(name)
        if entry is None:
            entry = self._new_entry(name, key, size)
            entry.extents = {}
            self.files[name] = entry
            if name not in self.pins:
                self.lru[name] = entry
        return entry

    def _new_entry(self, name: str, key: FileKey, size: int) -> FileEntry:
        return FileEntry(
            name=name,
            key=key,
            size=size,
            info=FileInfo(name, key, self.block_size, size),
            path=self.layout.data_path(name),
            seed=file_seed(name),
        )

    def install(self, rows: list[FileRow], pins: list[FileKey], clock: int) -> None:
        """The files found in the index at open (least recently used first); extents are loaded later."""
        self.clock = max(self.clock, clock)
        for key in pins:
            self.pins.setdefault(file_name(key, self.block_size), key)
        for row in rows:
            entry = self._new_entry(row.name, row.key, row.size)
            entry.nbytes, entry.blocks, entry.used = row.nbytes, row.blocks, row.used
            self.files[row.name] = entry
            self.total += row.nbytes
            self.blocks += row.blocks
            if row.name not in self.pins:
                self.lru[row.name] = entry

    def install_extents(self, entry: FileEntry, rows: list[ExtentRow]) -> None:
        """A file's extents, read from the index; its totals follow what they hold."""
        extents: dict[int, Extent] = {}
        nbytes = blocks = 0
        for row in rows:
            extents[row.number] = Extent(row.number, on_disk=row.mask, sums=row.sums, used=row.used)
            nbytes += extent_bytes(row.number, row.mask, self.block_size, entry.size)
            blocks += row.mask.bit_count()
        entry.extents = extents
        self._adjust(entry, nbytes - entry.nbytes, blocks - entry.blocks)

    def _adjust(self, entry: FileEntry, nbytes: int, blocks: int) -> None:
        entry.nbytes += nbytes
        entry.blocks += blocks
        if self.files.get(entry.name) is entry:
            self.total += nbytes
            self.blocks += blocks

    def current(self, entry: FileEntry) -> bool:
        return self.files.get(entry.name) is entry

    # ------------------------------------------------------------------------------------ reading
    def plan_read(self, entry: FileEntry, first: int, last: int) -> Plan:
        """Blocks first..last: from memory when queued, else stretches of consecutive blocks on disk."""
        assert entry.extents is not None
        found: dict[int, bytes] = {}
        stretches: list[Stretch] = []
        refs: list[tuple[Extent, int, int]] = []
        extents, pending = entry.extents, entry.pending
        lengths: list[int] = []
        sums: list[int] = []
        previous = -2
        block_size = self.block_size
        final = (entry.size - 1) // block_size  # only the file's last block may be short
        for index in range(first, last + 1):
            if pending and (data := pending.get(index)) is not None:
                found[index] = data
                continue
            extent = extents.get(index >> EXTENT_SHIFT)
            slot = index & EXTENT_MASK
            if extent is None or not extent.on_disk >> slot & 1:
                continue
            value = extent.sums[slot]
            if index != previous + 1:
                lengths, sums = [], []
                stretches.append(Stretch(index, lengths, sums))
            lengths.append(block_size if index != final else entry.size - final * block_size)
            sums.append(value)
            refs.append((extent, index, value))
            previous = index
        return Plan(found, stretches, refs)

    def all_on_disk(self, entry: FileEntry, first: int, last: int) -> bool:
        """Blocks first..last are all on disk, none of them queued for its write (extents loaded). An extent
        at a time (a mask of its bits), not a block at a time: the prefetcher asks this of whole windows."""
        extents, pending = entry.extents, entry.pending
        if extents is None:
            return False
        index = first
        while index <= last:
            number = index >> EXTENT_SHIFT
            stop = min(last, (number << EXTENT_SHIFT) | EXTENT_MASK)
            mask = ((1 << (stop - index + 1)) - 1) << (index & EXTENT_MASK)
            extent = extents.get(number)
            if extent is None or extent.on_disk & mask != mask:
                return False
            index = stop + 1
        if not pending:
            return True
        if len(pending) < last - first + 1:
            return not any(first <= queued <= last for queued in pending)
        return not any(index in pending for index in range(first, last + 1))

    def still_damaged(self, entry: FileEntry, extent: Extent, index: int, value: int) -> bool:
        """A block that failed its check is still the one on disk (not evicted or replaced meanwhile)."""
        if not self.current(entry) or entry.extents is None:
            return False
        slot = index & EXTENT_MASK
        return (
            entry.extents.get(extent.number) is extent
            and bool(extent.on_disk >> slot & 1)
            and extent.sums[slot] == value
        )

    def touch(self, entry: FileEntry, first: int, last: int) -> None:
        """Blocks first..last were used: the file and their extents become the most recently used."""
        self.clock += 1
        entry.used = self.clock
        if entry.name in self.lru:
            self.lru.move_to_end(entry.name)
        extents = entry.extents
        if extents is None:
            return
        for number in range(first >> EXTENT_SHIFT, (last >> EXTENT_SHIFT) + 1):
            extent = extents.pop(number, None)
            if extent is not None:
                extent.used = self.clock
                extents[number] = extent  # to the recent end
                entry.touched.add(number)
        self.touched[entry.name] = entry

    # ------------------------------------------------------------------------------------ writing
    def fresh_blocks(self, entry: FileEntry, first: int, blocks: list[bytes]) -> list[tuple[int, bytes]]:
        """The blocks neither on disk nor queued, of the right length."""
        assert entry.extents is not None
        extents = entry.extents
        fresh: list[tuple[int, bytes]] = []
        for offset, data in enumerate(blocks):
            index = first + offset
            if len(data) != block_length(index, self.block_size, entry.size) or not data:
                continue
            extent = extents.get(index >> EXTENT_SHIFT)
            if extent is not None and (extent.on_disk | extent.queued) >> (index & EXTENT_MASK) & 1:
                continue
            fresh.append((index, data))
        return fresh

    def accept(self, entry: FileEntry, fresh: list[tuple[int, bytes]]) -> WriteOp:
        """Count `fresh` (room was made), serve them from memory, and queue their write."""
        assert entry.extents is not None and fresh
        extents = entry.extents
        targets: dict[int, Extent] = {}
        runs: list[tuple[int, list[bytes]]] = []
        nbytes = 0
        previous = -2
        for index, data in fresh:
            number = index >> EXTENT_SHIFT
            extent = extents.get(number)
            if extent is None:
                extent = extents[number] = Extent(number)
            extent.queued |= 1 << (index & EXTENT_MASK)
            targets[number] = extent
            entry.pending[index] = data
            nbytes += len(data)
            if index == previous + 1:
                runs[-1][1].append(data)
            else:
                runs.append((index, [data]))
            previous = index
        self._adjust(entry, nbytes, len(fresh))
        self.touch(entry, fresh[0][0], fresh[-1][0])
        op = WriteOp(entry, runs, targets, nbytes, self.clock)
        self.ops.append(op)
        self.queued_bytes += nbytes
        return op

    def finish_write(self, op: WriteOp) -> None:
        """The writer is done with `op`: its blocks are on disk (or, on error, no longer counted)."""
        self.queued_bytes -= op.nbytes
        entry = op.entry
        extents = entry.extents
        for run_number, (first, blocks) in enumerate(op.runs):
            for offset, data in enumerate(blocks):
                index = first + offset
                number, bit = index >> EXTENT_SHIFT, 1 << (index & EXTENT_MASK)
                extent = op.targets[number]
                if entry.pending.get(index) is data:
                    del entry.pending[index]
                if extents is None or extents.get(number) is not extent or not extent.queued & bit:
                    continue  # evicted, dropped or invalidated meanwhile
                extent.queued &= ~bit
                if op.sums is not None:
                    extent.on_disk |= bit
                    extent.sums[index & EXTENT_MASK] = op.sums[run_number][offset]
                    continue
                self._adjust(entry, -len(data), -1)
                if not extent.on_disk | extent.queued:
                    del extents[number]

    def failed_to_queue(self, op: WriteOp) -> None:
        """`op` will not be written (the disk refused writes): take it out of the queue and the books."""
        self.ops.remove(op)
        op.error = op.error or OSError("not written")
        self.finish_write(op)

    # ----------------------------------------------------------------------------------- dropping
    def drop_blocks(self, entry: FileEntry, damaged: list[tuple[Extent, int]]) -> None:
        """Blocks found damaged: out of the books, and out of the index."""
        assert entry.extents is not None
        indices: list[int] = []
        for extent, index in damaged:
            bit = 1 << (index & EXTENT_MASK)
            if not extent.on_disk & bit:
                continue
            extent.on_disk &= ~bit
            self._adjust(entry, -block_length(index, self.block_size, entry.size), -1)
            indices.append(index)
            if not extent.on_disk | extent.queued:
                entry.extents.pop(extent.number, None)
        if indices:
            self.ops.append(DropOp(entry, indices))

    def remove_file(self, entry: FileEntry) -> None:
        """Forget a whole file (invalidated, changed, or its data vanished): books, then disk."""
        if not self.current(entry):
            return
        del self.files[entry.name]
        self.lru.pop(entry.name, None)
        self.touched.pop(entry.name, None)
        self.total -= entry.nbytes
        self.blocks -= entry.blocks
        entry.extents = {}
        entry.pending.clear()
        entry.nbytes = entry.blocks = 0
        self.ops.append(DeleteOp(entry.name, entry.path))

    # ------------------------------------------------------------------------------------ eviction
    def pinned_bytes(self) -> int:
        return sum(entry.nbytes for name in self.pins if (entry := self.files.get(name)) is not None)

    def make_room(self, need: int, keep: FileEntry | None) -> FileEntry | bool:
        """Evict least recently used extents until `need` more bytes fit. True when they fit, False when they
        cannot (pinned data fills the capacity), or a file whose extents must be loaded first."""
        if self.total + need <= self.capacity:
            return True
        if self.pinned_bytes() + need > self.capacity:
            return False
        while self.total + need > self.capacity:
            victim = next(iter(self.lru.values()), None)
            if victim is None:
                return False
            if victim.extents is None:
                return victim
            if not victim.extents:
                if victim is keep:
                    return False
                self._let_go(victim)
                continue
            extent = next(iter(victim.extents.values()))
            self._evict(victim, extent)
        return True

    def _evict(self, entry: FileEntry, extent: Extent) -> None:
        assert entry.extents is not None
        del entry.extents[extent.number]
        mask = extent.on_disk | extent.queued
        self._adjust(
            entry, -extent_bytes(extent.number, mask, self.block_size, entry.size), -mask.bit_count()
        )
        if extent.queued:
            base = extent.number << EXTENT_SHIFT
            for slot in range(EXTENT_MASK + 1):
                if extent.queued >> slot & 1:
                    entry.pending.pop(base + slot, None)
        entry.touched.discard(extent.number)
        self.evictions += 1
        last = self.ops[-1] if self.ops else None
        if isinstance(last, EvictOp) and last.entry is entry:
            last.extents.append(extent.number)
        else:
            self.ops.append(EvictOp(entry, [extent.number]))

    def _let_go(self, entry: FileEntry) -> None:
        """An entry with nothing left: out of the books (the index drops its rows by itself)."""
        del self.files[entry.name]
        self.lru.pop(entry.name, None)
        self.touched.pop(entry.name, None)

    # ---------------------------------------------------------------------------------------- pins
    def pin(self, key: FileKey) -> None:
        name = file_name(key, self.block_size)
        if name in self.pins:
            return
        self.pins[name] = key
        self.lru.pop(name, None)
        self.pins_dirty = True

    def unpin(self, key: FileKey) -> None:
        name = file_name(key, self.block_size)
        if self.pins.pop(name, None) is None:
            return
        self.pins_dirty = True
        entry = self.files.get(name)
        if entry is not None:  # back among the others, at its place in the LRU order
            self.lru[name] = entry
            self.lru = OrderedDict(sorted(self.lru.items(), key=lambda item: item[1].used))

    # ------------------------------------------------------------------------------------- batches
    def take_batch(self, max_bytes: int) -> list[Op]:
        """The next operations for the writer, in order, with at most about `max_bytes` of data; pins and
        recency when they changed."""
        batch: list[Op] = []
        nbytes = 0
        while self.ops and (nbytes < max_bytes or not isinstance(self.ops[0], WriteOp)):
            op = self.ops.popleft()
            if isinstance(op, WriteOp):
                nbytes += op.nbytes
            batch.append(op)
        if self.pins_dirty:
            self.pins_dirty = False
            batch.append(PinsOp(tuple(sorted(self.pins.values(), key=lambda k: (k.instance, k.remote_id)))))
        return batch

    def take_touches(self) -> TouchOp | None:
        """The recency not saved yet, as one operation."""
        if not self.touched:
            return None
        entries: list[tuple[str, int, tuple[tuple[int, int], ...]]] = []
        for name, entry in self.touched.items():
            extents = entry.extents or {}
            saved = tuple((n, extents[n].used) for n in sorted(entry.touched) if n in extents)
            entries.append((name, entry.used, saved))
            entry.touched.clear()
        self.touched = {}
        return TouchOp(entries)
