"""The disk store: a persistent, size-capped, crash-safe second level under the memory block cache.

What it is for
--------------
`BlockCache` asks it for a run of blocks on a memory miss before it downloads (`get_run`), and hands it
every run it fetched (`put_run`). A block read once is then served from local disk for as long as it stays
in the budget (`[cache] disk`), across remounts and reboots, and while the remote is down. It has to be
faster than the network and cheap in CPU: reading it back is one worker-thread hop per run of blocks (read
with O_DIRECT: `disk.py`), and writing it is one `pwritev` per run.

Layout on disk
--------------
::

    <root>/                        (<cache dir>/blocks, 0700)
      lock                         flock'ed while a store is open; a second process runs without a store
      index.sqlite3 (-wal, -shm)   the index (`index.py`): files with their totals, extents, pins
      files/3f/3f0c…e1.dat         one sparse data file per remote file: block i at offset i × block_size,
                                   holes where nothing is cached (0600)
      .discard-9c1d2e…/            something set aside (an old format, a damaged index), being removed

A file's name is blake2b-128 of (block size, provider instance, remote id, fingerprint): a new fingerprint
or another block size is another file; files of another block size are dropped at open. Blocks are
grouped in *extents* of 64 (4 MiB at the default 64 KiB): an index row holds an extent's mask of present
blocks and their 64 checksums, and an extent is the unit of eviction.

Integrity: a checksum per block
-------------------------------
Each block has an xxh3-64 checksum (the `xxhash` package), seeded with the file's name and the block's
index, so a block under the wrong index or in another file fails too. Measured here on 64 KiB blocks:
xxh3-64 0.09 CPU s per GB, crc32c (`google-crc32c`, `crc32c`) 0.12, zlib.crc32 0.42; blake2b, the old
store's, costs several times more. Every block read from disk is checked before it is served; one that
fails (a torn write, a flipped bit, a truncated file) is dropped from the index, counted in
``torn_detected`` and reported as missing, so the caller fetches it again. Damaged bytes are never served.

Writing, and what a crash leaves
--------------------------------
`put_run` is cheap for the caller: the blocks are counted at once (evicting first, see below), served from
memory while they wait, and queued. One writer task takes the queue in order, a batch (≤ 8 MiB) per
worker-thread call: `pwritev` of each run into its data file, the checksums computed on the way, then one
SQLite transaction for the whole batch (WAL, ``synchronous=NORMAL``: no fsync per commit). The index is
written after the data, so `kill -9` at any moment leaves either blocks the index does not name (their
bytes are simply unused) or blocks whose bytes were handed to the kernel before the index named them; a
power cut can leave the index naming bytes that never reached the disk, and the checksums catch those. A
data file the index does not know is removed at open; an index row whose data file is gone is dropped.

Keeping up with the network, and backpressure
---------------------------------------------
A file read to its end is entirely in the store afterwards (within the capacity): nothing is skipped
because the disk is busy. When more than 16 MiB wait for the writer, `put_run` waits. Its caller is the
block cache's background fetch, which has handed its blocks to every reader already: readers are never
slowed, a prefetch is (its budget is held until its blocks are queued), and memory stays bounded.

Room on the file system, and when the disk refuses
--------------------------------------------------
The store never fills its file system: it uses at most the capacity, and at most what it holds plus what
is free less a reserve (2% of the file system, between 8 MiB and 1 GiB), measured after every batch (and
every 2 s while short of room): when others fill the disk it shrinks (evicting as it stores), when room
returns it grows back (``usable`` in the statistics).
ENOSPC/EDQUOT (full) and EROFS/EACCES/EPERM (read-only), from a write or from SQLite: the condition is
logged once, counted (``full`` / ``read_only``, ``disk.full`` / ``disk.read_only`` in the daemon's stats),
queued writes are dropped, and `put_run` stores nothing (``skipped_unwritable``) for a pause that doubles
from 0.5 s to 8 s; the first write after a pause is the probe, and when it works the store says so once
and goes on. Reads are not affected. Other errors are counted and logged the first time and every 1000th.
No error of the store reaches its caller: the mount goes on without it.

LRU, eviction and the size cap
------------------------------
The books (`ledger.py`, in the trio thread) count the data bytes of every block on disk or queued; that
total never exceeds the capacity. Files are kept in LRU order (opening the store reads only the `files`
rows, O(files)); a file's extents are read from the index the first time it is used, in their own LRU
order. To make room, the least recently used file gives up its least recently used extents: they leave
the books at once, and the writer punches them out of the data file (`fallocate(PUNCH_HOLE)`) and drops
their rows; a file left empty loses its data file. Recency is saved every 30 s and at close, so the order
survives a remount (after a crash, the last 30 s of reads count as older).

Pins
----
`pin(key)` keeps a file out of the LRU order: never evicted, kept in the ``pins`` table across remounts
(`vidfs prefetch --pin` through the control socket). When pinned data alone leaves no room, a block is not
stored (``rejected``).

An old format
-------------
A cache dir written by the first store (``data/xx/<32 hex>/N.blk``, ``key.json``, ``pins.json``) is set
aside at open with one log line and removed in the background; none of it is ever read as data. An index
of another format, or one SQLite calls damaged, is set aside the same way with its data files.

Concurrency
-----------
The books are only touched in the trio thread. Reads run in worker threads under a limit of 2, the
writer's batches one at a time; the index has one connection, used under a lock. A read that raced an
eviction and found a punched block is a plain miss, not damage: a block counts as damaged only when it is
still the one the books planned to read. `run()` is a service (``await nursery.start(store.run)``):
until it reports started, and if its directory cannot be used (then it retries, 1 s doubling to 60 s),
the store finds and stores nothing. When cancelled it writes what is queued (at most 30 s, shielded)
and closes.

Statistics
----------
`statistics()`: bytes, blocks, files, capacity, usable, hits, misses, reads (worker-thread hops),
evictions, torn_detected, pinned_bytes, pinned_files, queued_bytes, rejected, write_errors, read_errors,
other_errors, skipped_unwritable, waits (puts that waited for the writer), unwritable (1 while paused),
full, read_only (times entered).
"""

from vidfs.io.store.service import DiskStore, running

__all__ = ["DiskStore", "running"]
