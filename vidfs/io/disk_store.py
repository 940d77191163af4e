"""The disk block store: a persistent, size-capped, crash-safe second level under the memory cache.

What it is for
--------------
`BlockCache` asks this store on a memory miss before it downloads, and hands it every block it fetched. A
block read once is then served from local disk for as long as it stays in the budget (`[cache] disk`),
across remounts and reboots, and while the remote is down.

Layout on disk
--------------
::

    <root>/
      lock                                   flock'ed while a store is open (a second user is warned)
      pins.json                              pinned files, {"version": 1, "pins": [{instance, remote_id,
                                             fingerprint}, ...]}, written atomically (temp, fsync, rename)
      data/
        3f/                                  fan-out: first two hex digits of the file's name
          3f0c…e1/                           one directory per file: blake2b-128 of (block size, provider
            key.json                         instance, remote id, fingerprint); key.json holds those four in
            0.blk                            clear for `vidfs stats` and debugging (ids and ETags only, never
            1.blk                            a credential or URL)
            17.blk                           block 17 covers bytes [17·block_size, 18·block_size)
            .tmp17.9c1d2e…                   a write in progress (or the leftover of one)

The block size is part of the directory name: after a change of `[cache] block_size` the old blocks are
never looked up again and simply age out of the LRU.

A block file is a 40-byte header followed by the data::

    magic "VFSB" | format version u16 | header size u16 | block index u64 | data length u64 | digest 16 B

(little-endian). The digest is blake2b-128 over the directory name, the first 24 header bytes and the data,
so it covers the data, its length, its index and which file it belongs to.

The write protocol
------------------
`put` is cheap for the caller: it reserves the bytes in the in-memory index (evicting first, see below),
queues the block and returns; the bytes stay readable from memory until they are on disk. Two writer tasks
take batches from the queue and, in a worker thread, per block: create ``.tmp<index>.<random>`` in the
file's directory (O_EXCL, mode 0600), write header + data, check the file has exactly the expected size,
close it and `os.replace` it onto ``<index>.blk``. A reader therefore sees either no block or a complete
one, never a half-written file under the final name. Blocks are not fsync'ed: this is a cache, losing
recent blocks in a power cut is fine, and whatever a crash leaves behind is caught by the checksum. The
queue is bounded (32 MiB): when it is full because the disk is slower than the network, a block of an
unpinned file is simply not stored (counted in ``skipped_busy``) so the cache never slows a reader down,
while `put` for a pinned file waits for room, so a pinned file is stored whole (``wait_when_busy = True``
makes every `put` wait).

How torn or damaged blocks are detected
---------------------------------------
Every read checks the magic, the version, the stored index, that the file is exactly header + length bytes
long, and the digest. A block that fails (`kill -9` or a power cut between rename and writeback, a
truncated file, flipped bits) is deleted, counted in ``torn_detected``, and reported as a miss: the caller
fetches it again. Damaged bytes are never served. `open()` removes temp files left by an interrupted write,
and files too short to hold a header; it does not read every block (that would cost a full read of the
cache at every mount), so other damage is found when the block is first read.

LRU and the size cap
--------------------
The index lives in memory: per file, its blocks and their lengths; an `OrderedDict` orders the blocks of
unpinned files from least to most recently used. A hit moves the block to the recent end (a dict
operation, no I/O). The total counted is the sum of block data bytes (headers, `key.json` and file-system
rounding are not counted). `put` evicts least-recently-used blocks until the new block fits, so the total
never exceeds the capacity; the evicted entries leave the index at once and their files are unlinked by a
writer task. Blocks of pinned files are kept out of the LRU order and are never evicted; when pinned data
alone leaves no room, the new block is not stored (counted in ``rejected``).

What survives a remount
-----------------------
Everything on disk: `open()` scans the directories in a worker thread, rebuilds the index with file sizes
(data length = file size - 40) and orders it by file modification time. Recency from hits is kept in memory
and written back as modification times (`os.utime`) in batches and at `aclose()`, so the LRU order survives
a clean remount; after a crash the last unflushed hits count as older, which is harmless. Pins survive in
``pins.json``. Blocks being written when the process died are lost (their temp files are removed), blocks
already renamed survive.

Concurrency
-----------
Everything that touches the file system runs in worker threads: reads under a `CapacityLimiter` of 4, the
two writer tasks (writes, unlinks, pins, mtimes) under a limiter of 2. The writer tasks are trio system
tasks started by `open()` (the store has no nursery of its own) and ended by `aclose()`, which first lets
them finish the queue (bounded by a 30 s deadline, shielded from cancellation). The index is only touched
from the trio thread. A block being unlinked cannot be stored again until the unlink is done, and a block
dropped while its write was in flight is unlinked once the write ends, so the index and the disk agree.
One store per cache directory: `open()` takes an flock on ``lock``; a second process using the same
directory gets a warning and leaves temp files alone (the two would not see each other's evictions, so the
cap may be exceeded; data stays correct thanks to the checksums).

Statistics
----------
`statistics()`: bytes, blocks, files, capacity, hits, misses, evictions, torn_detected, pinned_bytes,
pinned_files, queued_bytes, rejected, skipped_busy, write_errors. ``disk.torn_detected``,
``disk.evictions`` and ``disk.write_errors`` are also counted in the daemon's `Stats`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import secrets
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import trio

from vidfs.io.remote_file import FileKey
from vidfs.stats import Stats

log = logging.getLogger(__name__)

MAGIC = b"VFSB"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHHQQ")  # magic, version, header size, block index, data length
DIGEST_SIZE = 16
HEADER = struct.Struct(f"<4sHHQQ{DIGEST_SIZE}s")  # + the digest: 40 bytes
BLOCK_SUFFIX = ".blk"
TMP_PREFIX = ".tmp"
KEY_FILE = "key.json"
PINS_FILE = "pins.json"
LOCK_FILE = "lock"
DATA_DIR = "data"
_PERSON = b"vidfs-block-v1"

READ_THREADS = 4
WRITE_TASKS = 2
WRITE_BATCH = 16  # blocks per worker-thread call
QUEUE_BYTES = 16 << 20  # blocks waiting to be written (kept in memory meanwhile)
TOUCH_FLUSH = 4096  # hits remembered before their times are written back as mtimes
CLOSE_TIMEOUT = 30.0

BlockId = tuple[str, int]  # (directory name, block index)


# ------------------------------------------------------------------------------------------ file format
class Outcome(Enum):
    OK = "ok"
    MISSING = "missing"  # no such file (already gone)
    TORN = "torn"  # truncated, bad magic/index/length, wrong digest
    STALE = "stale"  # another format version
    ERROR = "error"  # the file system refused (EIO, EACCES, …)


@functools.lru_cache(maxsize=4096)
def dir_name(key: FileKey, block_size: int) -> str:
    """The directory name of a file's blocks: 32 hex digits, stable across runs."""
    text = json.dumps([block_size, key.instance, key.remote_id, key.fingerprint], ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def block_digest(name: str, prefix: bytes, data: bytes | memoryview) -> bytes:
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE, person=_PERSON)
    digest.update(name.encode())
    digest.update(prefix)
    digest.update(data)
    return digest.digest()


def encode_header(name: str, index: int, data: bytes) -> bytes:
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, HEADER.size, index, len(data))
    return prefix + block_digest(name, prefix, data)


def decode_block(raw: bytes, name: str, index: int) -> tuple[Outcome, bytes | None]:
    """Check a block file's contents; the data when it is whole and belongs to (name, index)."""
    if len(raw) < HEADER.size:
        return Outcome.TORN, None
    magic, version, header_size, stored_index, length, digest = HEADER.unpack_from(raw)
    if magic != MAGIC:
        return Outcome.TORN, None
    if version != FORMAT_VERSION or header_size != HEADER.size:
        return Outcome.STALE, None
    if stored_index != index or length != len(raw) - HEADER.size:
        return Outcome.TORN, None
    view = memoryview(raw)[HEADER.size :]
    if block_digest(name, raw[: _PREFIX.size], view) != digest:
        return Outcome.TORN, None
    return Outcome.OK, bytes(view)


def key_document(key: FileKey, block_size: int) -> str:
    return json.dumps(
        {
            "instance": key.instance,
            "remote_id": key.remote_id,
            "fingerprint": key.fingerprint,
            "block_size": block_size,
        },
        ensure_ascii=False,
        indent=1,
    )


# ------------------------------------------------------------------- blocking helpers (worker threads)
def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, parts: list[bytes]) -> None:
    views = [memoryview(part) for part in parts if part]
    while views:
        written = os.writev(fd, views)
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def _atomic_write(path: str, data: bytes, *, durable: bool) -> None:
    directory = os.path.dirname(path)
    temp = os.path.join(directory, f"{TMP_PREFIX}{os.path.basename(path)}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, [data])
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        _unlink(temp)
        raise
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _ensure_dir(directory: str, key_doc: str) -> None:
    fan = os.path.dirname(directory)
    for path in (os.path.dirname(fan), fan, directory):  # data/, data/3f/, data/3f/3f0c…/: each 0700
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    key_path = os.path.join(directory, KEY_FILE)
    if not os.path.exists(key_path):
        _atomic_write(key_path, key_doc.encode(), durable=False)


@dataclass(frozen=True, slots=True)
class _WriteItem:
    directory: str
    name: str
    index: int
    data: bytes
    key_doc: str
    check_dir: bool  # the directory (and key.json) may not exist yet


def _write_block(item: _WriteItem) -> None:
    if item.check_dir:
        _ensure_dir(item.directory, item.key_doc)
    header = encode_header(item.name, item.index, item.data)
    final = os.path.join(item.directory, f"{item.index}{BLOCK_SUFFIX}")
    expected = len(header) + len(item.data)
    for attempt in range(2):
        temp = os.path.join(item.directory, f"{TMP_PREFIX}{item.index}.{secrets.token_hex(6)}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if attempt:  # the directory vanished (invalidated) twice: give up on this block
                raise
            _ensure_dir(item.directory, item.key_doc)
            continue
        try:
            try:
                _write_all(fd, [header, item.data])
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size != expected:
                raise OSError(f"wrote {size} of {expected} bytes")
            os.replace(temp, final)
        except BaseException:
            _unlink(temp)
            raise
        return


def _write_blocks(items: list[_WriteItem]) -> list[str | None]:
    """Write each block; per block None, or why it failed."""
    results: list[str | None] = []
    for item in items:
        try:
            _write_block(item)
        except OSError as exc:
            results.append(f"{exc.strerror or exc}")
        else:
            results.append(None)
    return results


def _read_block_file(path: str, name: str, index: int) -> tuple[Outcome, bytes | None]:
    try:
        with open(path, "rb", buffering=0) as handle:
            raw = handle.readall()
    except FileNotFoundError:
        return Outcome.MISSING, None
    except OSError as exc:
        log.warning("disk cache: cannot read %s: %s", path, exc.strerror or exc)
        with contextlib.suppress(OSError):
            _unlink(path)
        return Outcome.ERROR, None
    outcome, data = decode_block(raw, name, index)
    if outcome is not Outcome.OK:
        with contextlib.suppress(OSError):
            _unlink(path)
    return outcome, data


def _delete(paths: list[str], directories: list[str]) -> None:
    for path in paths:
        try:
            _unlink(path)
        except OSError as exc:
            log.warning("disk cache: cannot remove %s: %s", path, exc.strerror or exc)
    for directory in directories:
        # Only a directory left with nothing but key.json goes; a block written meanwhile keeps it.
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        if any(name != KEY_FILE for name in names):
            continue
        with contextlib.suppress(OSError):
            _unlink(os.path.join(directory, KEY_FILE))
            os.rmdir(directory)


def _touch(items: list[tuple[str, int]]) -> None:
    for path, ns in items:
        with contextlib.suppress(OSError):
            os.utime(path, ns=(ns, ns))


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


@dataclass
class _Scan:
    blocks: list[tuple[int, str, int, int]] = field(default_factory=list)  # (mtime_ns, name, index, length)
    ready: set[str] = field(default_factory=set)  # directories that have their key.json
    pins: list[FileKey] = field(default_factory=list)
    temp_removed: int = 0
    torn: int = 0


def _prepare_root(root: Path) -> None:
    for directory in (root, root / DATA_DIR):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if directory.stat().st_mode & 0o777 != 0o700:
                directory.chmod(0o700)


def _scan(root: Path, remove_temp: bool = True) -> _Scan:
    """Rebuild what is on disk: blocks with their size and mtime; drop leftovers of interrupted writes."""
    _prepare_root(root)
    result = _Scan()
    for entry in os.scandir(root):
        if remove_temp and entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
            _unlink(entry.path)
            result.temp_removed += 1
    result.pins = _load_pins(root / PINS_FILE)
    for fan in os.scandir(root / DATA_DIR):
        if not (_is_hex(fan.name, 2) and fan.is_dir(follow_symlinks=False)):
            continue
        for directory in os.scandir(fan.path):
            name = directory.name
            if not (_is_hex(name, 32) and name[:2] == fan.name and directory.is_dir(follow_symlinks=False)):
                continue
            has_key = False
            blocks = 0
            for item in os.scandir(directory.path):
                file_name = item.name
                if file_name.startswith(TMP_PREFIX):
                    if remove_temp:
                        _unlink(item.path)
                        result.temp_removed += 1
                elif file_name == KEY_FILE:
                    has_key = True
                elif file_name.endswith(BLOCK_SUFFIX) and item.is_file(follow_symlinks=False):
                    digits = file_name[: -len(BLOCK_SUFFIX)]
                    if not (digits.isascii() and digits.isdigit() and str(int(digits)) == digits):
                        continue
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    length = st.st_size - HEADER.size
                    if length <= 0:  # renamed into place but its bytes never reached the disk
                        _unlink(item.path)
                        result.torn += 1
                        continue
                    result.blocks.append((st.st_mtime_ns, name, int(digits), length))
                    blocks += 1
            if blocks == 0:
                _delete([], [directory.path])
            elif has_key:
                result.ready.add(name)
    result.blocks.sort()
    return result


def _load_pins(path: Path) -> list[FileKey]:
    try:
        document = json.loads(path.read_text())
        return [FileKey(p["instance"], p["remote_id"], p["fingerprint"]) for p in document["pins"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("disk cache: ignoring unreadable %s: %s", path, exc)
        return []


# ----------------------------------------------------------------------------------------- the store
@dataclass(eq=False, slots=True)
class _Entry:
    length: int
    data: bytes | None = None  # set while the block waits for (or is in) its write
    writing: bool = False
    dropped: bool = False  # left the index while queued or being written


Job = Callable[[], Awaitable[None]]


class DiskStore:
    """Implements `vidfs.io.block_cache.BlockStore`; see the module docstring."""

    def __init__(self, root: Path, *, capacity: int, block_size: int, stats: Stats) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if capacity < block_size:
            raise ValueError(f"disk cache capacity {capacity} is smaller than one block ({block_size})")
        self.root = Path(root)
        self.capacity = capacity
        self.block_size = block_size
        self._stats = stats
        self._data_dir = str(self.root / DATA_DIR)
        self._queue_limit = max(QUEUE_BYTES, 4 * block_size)
        #: When the write queue is full, True makes `put` wait for room for every file (complete caching,
        #: reads slowed to the disk's pace); False (default) waits only for pinned files and skips others.
        self.wait_when_busy = False
        # The index (trio thread only).
        self._files: dict[str, dict[int, _Entry]] = {}
        self._file_bytes: dict[str, int] = {}
        self._lru: OrderedDict[BlockId, _Entry] = OrderedDict()  # unpinned blocks, oldest first
        self._pins: dict[str, FileKey] = {}
        self._total = 0
        self._blocks = 0
        self._ready_dirs: set[str] = set()
        self._doomed: set[BlockId] = set()  # an unlink is pending: not stored again until it is done
        self._touched: dict[BlockId, int] = {}
        # Work for the writer tasks.
        self._writes: deque[tuple[BlockId, _Entry, FileKey]] = deque()
        self._deletes: deque[BlockId] = deque()
        self._rmdirs: deque[str] = deque()
        self._pins_dirty = False
        self._queued_bytes = 0
        self._active_jobs = 0
        self._work = trio.lowlevel.ParkingLot()
        self._progress = trio.lowlevel.ParkingLot()
        self._read_limiter = trio.CapacityLimiter(READ_THREADS)
        self._write_limiter = trio.CapacityLimiter(WRITE_TASKS)
        self._workers_done = trio.Event()
        self._workers_left = 0
        self._running = False
        self._stopping = False
        self._lock_fd: int | None = None
        # Counters.
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._torn = 0
        self._rejected = 0
        self._skipped_busy = 0
        self._write_errors = 0

    # ------------------------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if self._running:
            return
        lock_fd, exclusive = await trio.to_thread.run_sync(self._take_lock)
        try:
            # Temp files of another live process sharing the directory are not leftovers: keep them then.
            scan = await trio.to_thread.run_sync(_scan, self.root, exclusive, limiter=self._read_limiter)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        for key in scan.pins:
            self._pins.setdefault(self._name(key), key)
        self._ready_dirs |= scan.ready
        for _mtime, name, index, length in scan.blocks:
            self._add((name, index), _Entry(length))
        if scan.torn:
            self._count_torn(scan.torn)
        if scan.temp_removed:
            log.info("disk cache: removed %d leftover temp file(s)", scan.temp_removed)
        # The capacity may have shrunk since the last run.
        doomed: list[str] = []
        while self._total > self.capacity and self._lru:
            block_id, entry = self._lru.popitem(last=False)
            self._forget(block_id, entry)
            self._evictions += 1
            doomed.append(self._block_path(block_id))
        if doomed:
            self._stats.incr("disk.evictions", len(doomed))
            await trio.to_thread.run_sync(_delete, doomed, [], limiter=self._write_limiter)
        if self._total > self.capacity:
            log.warning(
                "disk cache: pinned files hold %d bytes, over the capacity of %d: nothing new will be stored",
                self._total,
                self.capacity,
            )
        log.info(
            "disk cache at %s: %d block(s), %d bytes of %d",
            self.root,
            self._blocks,
            self._total,
            self.capacity,
        )
        self._running = True
        self._stopping = False
        self._workers_done = trio.Event()
        self._workers_left = WRITE_TASKS
        for number in range(WRITE_TASKS):
            trio.lowlevel.spawn_system_task(self._worker, name=f"vidfs.disk.writer{number}")

    async def aclose(self) -> None:
        """Write what is queued, the hit times and the pins; then stop the writer tasks."""
        if not self._running:
            return
        self._stopping = True
        self._work.unpark_all()
        self._progress.unpark_all()  # puts waiting for room give up
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._workers_done.wait()
        if scope.cancelled_caught:
            log.warning("disk cache: writes still pending after %gs; giving up on them", CLOSE_TIMEOUT)
        self._running = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def drain(self) -> None:
        """Wait until every queued write, unlink and pins update is on disk."""
        while self._running and (self._has_work() or self._active_jobs):
            await self._progress.park()

    def _take_lock(self) -> tuple[int, bool]:
        _prepare_root(self.root)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(
                "disk cache %s is used by another vidfs process: the size cap may be exceeded", self.root
            )
            return fd, False
        return fd, True

    # ------------------------------------------------------------------------------------ the store
    async def get(self, key: FileKey, index: int, expected_len: int) -> bytes | None:
        if not self._running:
            return None
        name = self._name(key)
        block_id = (name, index)
        entry = self._files.get(name, {}).get(index)
        if entry is None:
            self._misses += 1
            return None
        if entry.data is not None:  # still queued for writing: served from memory
            if entry.length != expected_len:
                self._mismatch(block_id, entry, expected_len)
                return None
            self._refresh(block_id)
            self._hits += 1
            return entry.data
        # Read even when the indexed length is wrong: a truncated file must be found torn, not skipped.
        outcome, data = await trio.to_thread.run_sync(
            _read_block_file, self._block_path(block_id), name, index, limiter=self._read_limiter
        )
        if outcome is Outcome.OK and data is not None:
            if len(data) != expected_len:
                self._mismatch(block_id, entry, expected_len)
                return None
            self._refresh(block_id)
            self._hits += 1
            return data
        # The read removed a damaged file (an unreadable one too, if it could).
        self._forget(block_id, entry)
        if outcome is Outcome.TORN:
            log.warning("disk cache: block %d of %s was damaged; fetching it again", index, key.remote_id)
            self._count_torn(1)
        self._misses += 1
        return None

    def _mismatch(self, block_id: BlockId, entry: _Entry, expected_len: int) -> None:
        """A whole block of another length than the reader expects: never serve it; drop it."""
        log.debug(
            "disk cache: block %s/%d holds %d bytes, %d expected", *block_id, entry.length, expected_len
        )
        self._drop(block_id, entry)
        self._misses += 1

    async def put(self, key: FileKey, index: int, data: bytes) -> None:
        length = len(data)
        if not self._accepting() or not 0 < length <= self.block_size:
            return
        if self._known(key, index):
            return
        name = self._name(key)
        block_id = (name, index)
        if self._queue_full(length):
            if name not in self._pins and not self.wait_when_busy:
                self._skipped_busy += 1  # the disk is slower than the network: never slow the reader
                return
            while self._queue_full(length) and self._accepting():  # every block must land
                await self._progress.park()
            if not self._accepting() or self._known(key, index):
                return
        if block_id in self._doomed:
            return
        if not self._make_room(length):
            self._rejected += 1
            return
        entry = _Entry(length, data if type(data) is bytes else bytes(data))
        self._add(block_id, entry)
        self._writes.append((block_id, entry, key))
        self._queued_bytes += length
        self._work.unpark()

    def invalidate(self, key: FileKey) -> None:
        name = self._name(key)
        for index, entry in list(self._files.get(name, {}).items()):
            self._drop((name, index), entry)
        self._ready_dirs.discard(name)
        if self._running:
            self._rmdirs.append(name)
            self._work.unpark()

    def pin(self, key: FileKey) -> None:
        name = self._name(key)
        if name in self._pins:
            return
        self._pins[name] = key
        for index in self._files.get(name, {}):
            self._lru.pop((name, index), None)
        self._pins_changed()

    def unpin(self, key: FileKey) -> None:
        name = self._name(key)
        if self._pins.pop(name, None) is None:
            return
        for index, entry in self._files.get(name, {}).items():
            self._lru[(name, index)] = entry
        self._pins_changed()

    def pinned(self) -> set[FileKey]:
        return set(self._pins.values())

    def statistics(self) -> dict[str, int]:
        return {
            "bytes": self._total,
            "blocks": self._blocks,
            "files": len(self._files),
            "capacity": self.capacity,
            "hits": self._hits,
            "misses": self._misses,
            "evictions": self._evictions,
            "torn_detected": self._torn,
            "pinned_bytes": self._pinned_bytes(),
            "pinned_files": len(self._pins),
            "queued_bytes": self._queued_bytes,
            "rejected": self._rejected,
            "skipped_busy": self._skipped_busy,
            "write_errors": self._write_errors,
        }

    # --------------------------------------------------------------------------------------- index
    def _name(self, key: FileKey) -> str:
        return dir_name(key, self.block_size)

    def _directory(self, name: str) -> str:
        return os.path.join(self._data_dir, name[:2], name)

    def _block_path(self, block_id: BlockId) -> str:
        name, index = block_id
        return os.path.join(self._data_dir, name[:2], name, f"{index}{BLOCK_SUFFIX}")

    def _queue_full(self, length: int) -> bool:
        return self._queued_bytes > 0 and self._queued_bytes + length > self._queue_limit

    def _accepting(self) -> bool:
        return self._running and not self._stopping

    def _known(self, key: FileKey, index: int) -> bool:
        """Already stored (or queued): refresh its recency instead of writing it again."""
        name = self._name(key)
        if index in self._files.get(name, {}):
            self._refresh((name, index))
            return True
        return False

    def _refresh(self, block_id: BlockId) -> None:
        if block_id in self._lru:
            self._lru.move_to_end(block_id)
        self._touched[block_id] = time.time_ns()
        if len(self._touched) >= TOUCH_FLUSH:
            self._work.unpark()

    def _add(self, block_id: BlockId, entry: _Entry) -> None:
        name, index = block_id
        self._files.setdefault(name, {})[index] = entry
        self._file_bytes[name] = self._file_bytes.get(name, 0) + entry.length
        self._total += entry.length
        self._blocks += 1
        if name not in self._pins:
            self._lru[block_id] = entry

    def _forget(self, block_id: BlockId, entry: _Entry) -> bool:
        """Take `entry` out of the index (if it is still the one there); no disk work."""
        name, index = block_id
        blocks = self._files.get(name)
        if blocks is None or blocks.get(index) is not entry:
            return False
        del blocks[index]
        self._lru.pop(block_id, None)
        self._touched.pop(block_id, None)
        self._total -= entry.length
        self._blocks -= 1
        self._file_bytes[name] -= entry.length
        if not blocks:
            del self._files[name]
            del self._file_bytes[name]
        return True

    def _drop(self, block_id: BlockId, entry: _Entry) -> None:
        """Forget a block and have its file removed (now, or once its write in flight ends)."""
        if not self._forget(block_id, entry):
            return
        if entry.writing:
            entry.dropped = True
            self._doomed.add(block_id)
        elif entry.data is not None:
            entry.dropped = True  # still queued: the writer skips it
        else:
            self._doomed.add(block_id)
            self._deletes.append(block_id)
            self._work.unpark()

    def _make_room(self, length: int) -> bool:
        if self._total + length <= self.capacity:
            return True
        if self._pinned_bytes() + length > self.capacity:
            return False  # evicting every unpinned block would not be enough
        evicted = 0
        while self._total + length > self.capacity and self._lru:
            block_id, entry = self._lru.popitem(last=False)
            self._drop(block_id, entry)
            evicted += 1
        if evicted:
            self._evictions += evicted
            self._stats.incr("disk.evictions", evicted)
        return self._total + length <= self.capacity

    def _pinned_bytes(self) -> int:
        return sum(self._file_bytes.get(name, 0) for name in self._pins)

    def _pins_changed(self) -> None:
        self._pins_dirty = True
        if self._running:
            self._work.unpark()

    def _count_torn(self, count: int) -> None:
        self._torn += count
        self._stats.incr("disk.torn_detected", count)

    # ---------------------------------------------------------------------------------- the writers
    def _has_work(self) -> bool:
        return bool(self._writes or self._deletes or self._rmdirs or self._pins_dirty)

    async def _worker(self) -> None:
        try:
            while True:
                job = self._next_job()
                if job is None:
                    self._progress.unpark_all()  # dropped writes may have been skipped: queue space freed
                    if self._stopping and not self._active_jobs:
                        return
                    if self._stopping:
                        await self._progress.park()  # another writer is busy; it may queue an unlink
                    else:
                        await self._work.park()
                    continue
                self._active_jobs += 1
                try:
                    await job()
                except Exception:  # a bug here must not take the mount down (this is a system task)
                    log.exception("disk cache: writer failed")
                finally:
                    self._active_jobs -= 1
                    self._progress.unpark_all()
                    self._work.unpark_all()
        finally:
            self._workers_left -= 1
            if self._workers_left == 0:
                self._workers_done.set()

    def _next_job(self) -> Job | None:
        if self._deletes or self._rmdirs:
            block_ids = list(self._deletes)
            names = [name for name in self._rmdirs if name not in self._files]
            self._deletes.clear()
            self._rmdirs.clear()
            return functools.partial(self._run_deletes, block_ids, names)
        if self._pins_dirty:
            self._pins_dirty = False
            return functools.partial(self._run_save_pins, self._pins_document())
        if self._touched and (len(self._touched) >= TOUCH_FLUSH or self._stopping):
            touched = [(self._block_path(block_id), ns) for block_id, ns in self._touched.items()]
            self._touched = {}
            return functools.partial(trio.to_thread.run_sync, _touch, touched, limiter=self._write_limiter)
        batch: list[tuple[BlockId, _Entry, FileKey]] = []
        while self._writes and len(batch) < WRITE_BATCH:
            block_id, entry, key = self._writes.popleft()
            if entry.dropped:  # evicted or invalidated before its turn
                self._queued_bytes -= entry.length
                entry.data = None
                continue
            entry.writing = True
            batch.append((block_id, entry, key))
        if batch:
            return functools.partial(self._run_writes, batch)
        return None

    async def _run_writes(self, batch: list[tuple[BlockId, _Entry, FileKey]]) -> None:
        items: list[_WriteItem] = []
        for (name, index), entry, key in batch:
            assert entry.data is not None
            items.append(
                _WriteItem(
                    directory=self._directory(name),
                    name=name,
                    index=index,
                    data=entry.data,
                    key_doc=key_document(key, self.block_size),
                    check_dir=name not in self._ready_dirs,
                )
            )
        results: list[str | None] = ["interrupted"] * len(batch)
        try:
            results = await trio.to_thread.run_sync(_write_blocks, items, limiter=self._write_limiter)
        finally:
            self._finish_writes(batch, results)

    def _finish_writes(self, batch: list[tuple[BlockId, _Entry, FileKey]], results: list[str | None]) -> None:
        for (block_id, entry, _key), error in zip(batch, results, strict=True):
            entry.writing = False
            self._queued_bytes -= entry.length
            entry.data = None
            if error is None:
                self._ready_dirs.add(block_id[0])
            if entry.dropped:
                if error is None:
                    self._deletes.append(block_id)  # still doomed: no new copy until it is gone
                else:
                    self._doomed.discard(block_id)
                continue
            if error is not None:
                self._forget(block_id, entry)
                self._write_errors += 1
                self._stats.incr("disk.write_errors")
                if self._write_errors == 1 or self._write_errors % 1000 == 0:
                    log.warning(
                        "disk cache: cannot write under %s: %s (%d failed writes so far)",
                        self.root,
                        error,
                        self._write_errors,
                    )

    async def _run_deletes(self, block_ids: list[BlockId], names: list[str]) -> None:
        try:
            await trio.to_thread.run_sync(
                _delete,
                [self._block_path(block_id) for block_id in block_ids],
                [self._directory(name) for name in names],
                limiter=self._write_limiter,
            )
        finally:
            self._doomed.difference_update(block_ids)

    def _pins_document(self) -> bytes:
        pins = sorted(
            (
                {"instance": k.instance, "remote_id": k.remote_id, "fingerprint": k.fingerprint}
                for k in self._pins.values()
            ),
            key=lambda p: (p["instance"], p["remote_id"], p["fingerprint"]),
        )
        return json.dumps({"version": 1, "pins": pins}, ensure_ascii=False, indent=1).encode()

    async def _run_save_pins(self, document: bytes) -> None:
        path = str(self.root / PINS_FILE)
        try:
            await trio.to_thread.run_sync(
                functools.partial(_atomic_write, path, document, durable=True), limiter=self._write_limiter
            )
        except OSError as exc:  # the next pin change writes the whole list again
            log.warning("disk cache: cannot save %s: %s", path, exc.strerror or exc)
