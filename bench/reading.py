"""Reading a file the way `cp` does (1 MiB reads to the end), timed, its sha256 taken afterwards."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import MB, MiB
from bench.data import Truth

READ_CHUNK = MiB
MAX_READS = 1 << 24  # a bound no read reaches: 16 Mi reads (a pipe gives at least a page a read)


@dataclass(frozen=True)
class ReadResult:
    seconds: float
    total: int
    sha256: str | None
    complete: bool  # False: stopped at the time limit

    @property
    def mbps(self) -> float:
        return self.total / self.seconds / MB if self.seconds > 0 else 0.0


class Sink:
    """Where sequential reads put their bytes: one buffer the size of the file, its pages touched once
    and reused by every read, so a timed read does nothing but read, and its sha256 is taken after the
    clock stopped, over exactly the bytes it was given."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        view = memoryview(self.buffer)
        for offset in range(0, size, READ_CHUNK):  # fault every page in now, not while timing
            view[offset : offset + READ_CHUNK] = bytes(min(READ_CHUNK, size - offset))
        self.view = view
        self.scratch = bytearray(READ_CHUNK)  # what comes after the expected end (never, if right)


def read_through(fd_read: Callable[[memoryview], int], sink: Sink, *, limit_s: float) -> ReadResult:
    """Read until EOF (or `limit_s`) with 1 MiB reads into `sink`; then hash what was read."""
    view, size = sink.view, len(sink.view)
    total = extra = 0
    started = time.monotonic()
    deadline = started + limit_s
    complete = True
    for _ in range(MAX_READS):  # EOF or the deadline ends it first
        target = view[total : total + READ_CHUNK] if total < size else memoryview(sink.scratch)
        n = fd_read(target)
        if n <= 0:
            break
        if total < size:
            total += n
        else:
            extra += n  # longer than the source: the sha256 below cannot match
        if time.monotonic() > deadline:
            complete = False
            break
    seconds = time.monotonic() - started
    digest = hashlib.sha256(view[:total])
    if extra:
        digest.update(b"\0longer than the source")
    return ReadResult(seconds, total + extra, digest.hexdigest(), complete)


def read_file(path: Path, sink: Sink, *, limit_s: float) -> ReadResult:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_through(lambda buf: os.readv(fd, [buf]), sink, limit_s=limit_s)
    finally:
        os.close(fd)


def prefix_sha256(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while left > 0 and (chunk := fh.read(min(8 * MiB, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def matches(result: ReadResult, truth: Truth) -> bool:
    """The bytes read are the source's (all of it, or its first bytes when the read was cut short)."""
    if result.total == truth.random_size:
        return result.sha256 == truth.random_sha
    return not result.complete and result.sha256 == prefix_sha256(truth.random_path, result.total)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
