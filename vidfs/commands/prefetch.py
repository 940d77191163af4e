"""`vidfs prefetch PATH…`: warm a mount's disk cache by reading files through the mount, in parallel.

How
---
Every file named, or found below a directory named, is read sequentially from start to end through the
mount, `--jobs` files at a time (worker threads). The daemon serves those reads the usual way, so the
blocks land in its disk cache (and its prefetcher sees sequential readers). Before and after a file is
read its clean pages are dropped from the kernel page cache (`posix_fadvise(DONTNEED)`): a read answered
by the page cache would never reach vidfs, and a prefetch of a whole catalog should not fill the RAM.

Progress: a tqdm bar (bytes, rate, files) on a terminal; one plain line per file otherwise, or with
`--no-progress`. A summary line ends the run. Exit status: 0 all done, 1 some files failed (each named on
stderr), 2 a path that is not inside a vidfs mount.

Resuming
--------
When a file has been read to its end, one JSON line is appended to a state file in the cache dir of the
user running the command: `$XDG_CACHE_HOME/vidfs/prefetch/<hash of the mount point>.jsonl` (default
`~/.cache/vidfs/prefetch/`), with the file's path below the mount root, its size and its mtime. A later run
skips files whose (path, size, mtime) are recorded, so a file that changed remotely is read again. A run
interrupted in the middle of a file reads that file again from its start; that costs little, because the
blocks already in the disk cache are served locally. A record means "was read completely", not "is still
cached": if the disk cache evicted the file or was wiped since, `--force` reads everything again; `--pin`
keeps files from being evicted in the first place.

Pinning
-------
`--pin` asks the daemon, over its control socket (whose path the mount root publishes in the xattr
`user.vidfs.control`), to pin each file before reading it; pins are per file, so blocks stored afterwards
are protected too. Files skipped as already prefetched are pinned as well. `--unpin` only unpins and reads
nothing. Both need the mount's disk cache; when it is off (`[cache] disk = "0"`) the command says so and
stops. The control socket belongs to the user who mounted (mode 0600).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vidfs.commands.process import control_call
from vidfs.errors import UsageError
from vidfs.fs.videofs import CONTROL_XATTR, STATS_XATTR

CHUNK = 1 << 20
HELP = "warm a mount's disk cache: read files or directories through it, in parallel, resumably"

EXIT_OK, EXIT_FAILURE = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories in a mount")
    parser.add_argument("-j", "--jobs", type=int, default=4, help="files read in parallel (default 4)")
    pinning = parser.add_mutually_exclusive_group()
    pinning.add_argument("--pin", action="store_true", help="also pin the files: never evicted from disk")
    pinning.add_argument("--unpin", action="store_true", help="only unpin the files (reads nothing)")
    parser.add_argument(
        "--force", action="store_true", help="read again files an earlier run completed (ignore the state)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or per-file lines, only the summary"
    )


def run(args: argparse.Namespace) -> int:
    return run_prefetch(
        args.paths,
        jobs=args.jobs,
        pin=args.pin,
        unpin=args.unpin,
        progress=not args.no_progress,
        force=args.force,
    )


# ------------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class MountInfo:
    root: Path
    control: str | None  # the control socket's path, if the daemon has one
    disk_cache: bool  # whether the daemon has a disk store (`disk_cache` in its stats)


@dataclass(frozen=True)
class Item:
    mount: MountInfo
    path: Path
    rel: str  # below the mount root, "/"-separated: what the control socket expects
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.rel, self.size, self.mtime_ns)


def find_mount(path: Path, known: dict[Path, MountInfo]) -> MountInfo:
    """The vidfs mount that holds `path`, or UsageError."""
    probe = Path(os.path.realpath(path))
    while not os.path.ismount(probe) and probe != probe.parent:
        probe = probe.parent
    if probe in known:
        return known[probe]
    try:
        document = json.loads(os.getxattr(probe, STATS_XATTR))
    except (OSError, ValueError):
        raise UsageError(f"{path} is not inside a vidfs mount") from None
    try:
        control: str | None = os.getxattr(probe, CONTROL_XATTR).decode()
    except OSError:
        control = None
    info = MountInfo(root=probe, control=control, disk_cache="disk_cache" in document)
    known[probe] = info
    return info


def disk_stats(info: MountInfo) -> dict[str, Any]:
    """The daemon's disk cache counters now (empty when it has none or cannot be asked)."""
    try:
        document = json.loads(os.getxattr(info.root, STATS_XATTR))
    except (OSError, ValueError):
        return {}
    disk = document.get("disk_cache")
    return disk if isinstance(disk, dict) else {}


def collect(paths: Sequence[Path]) -> tuple[list[Item], list[str]]:
    """Expand the arguments into regular files (directories recursively, sorted, no duplicates)."""
    mounts: dict[Path, MountInfo] = {}
    items: dict[Path, Item] = {}
    problems: list[str] = []

    def add(file_path: Path, info: MountInfo, st: os.stat_result) -> None:
        real = Path(os.path.realpath(file_path))
        rel = real.relative_to(info.root).as_posix()
        items.setdefault(real, Item(info, real, rel, st.st_size, st.st_mtime_ns))

    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        info = find_mount(path, mounts)
        if stat.S_ISREG(st.st_mode):
            add(path, info, st)
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"{path}: not a regular file or directory, skipped")
            continue

        def onerror(exc: OSError) -> None:
            problems.append(f"{exc.filename}: {exc.strerror or exc}")

        for dirpath, dirnames, filenames in os.walk(path, onerror=onerror):
            dirnames.sort()
            for name in sorted(filenames):
                file_path = Path(dirpath) / name
                try:
                    file_st = os.stat(file_path)
                except OSError as exc:
                    problems.append(f"{file_path}: {exc.strerror or exc}")
                    continue
                if stat.S_ISREG(file_st.st_mode):
                    add(file_path, info, file_st)
    return list(items.values()), problems


# ------------------------------------------------------------------------------------------- state
def state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "vidfs" / "prefetch"


class State:
    """Which files of one mount were read to their end: an append-only JSON-lines file."""

    def __init__(self, directory: Path, mount_root: Path) -> None:
        digest = hashlib.sha256(str(mount_root).encode()).hexdigest()[:16]
        self.path = directory / f"{digest}.jsonl"
        self.mount_root = mount_root
        self._lock = threading.Lock()

    def load(self) -> set[tuple[str, int, int]]:
        done: set[tuple[str, int, int]] = set()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return done
        for line in text.splitlines():
            try:
                record = json.loads(line)
                done.add((str(record["path"]), int(record["size"]), int(record["mtime_ns"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: ignore it
        return done

    def record(self, item: Item) -> None:
        line = json.dumps(
            {
                "mount": str(self.mount_root),
                "path": item.rel,
                "size": item.size,
                "mtime_ns": item.mtime_ns,
                "at": round(time.time(), 3),
            },
            ensure_ascii=False,
        )
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


# ------------------------------------------------------------------------------------------ control
class PinError(Exception):
    pass


def control_op(info: MountInfo, op: str, rel: str) -> dict[str, Any]:
    if info.control is None:
        raise PinError(f"{info.root}: the daemon publishes no control socket")
    try:
        answer = control_call(info.control, {"op": op, "path": rel})
    except PermissionError:
        raise PinError(
            f"{info.control}: permission denied (only the user who mounted {info.root} can {op})"
        ) from None
    except OSError as exc:
        raise PinError(f"cannot reach the daemon of {info.root}: {exc.strerror or exc}") from None
    if not answer.get("ok"):
        raise PinError(f"{rel}: {answer.get('error', 'refused')}")
    return answer


# ---------------------------------------------------------------------------------------- reading
class ShortRead(Exception):
    pass


def _drop_page_cache(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        pass


def read_through(item: Item, on_bytes: Callable[[int], None], stop: threading.Event) -> int:
    """Read a file to its end; report progress as it goes. Returns the bytes read."""
    buffer = bytearray(CHUNK)
    total = 0
    with open(item.path, "rb", buffering=0) as handle:
        _drop_page_cache(handle.fileno())
        while not stop.is_set():
            count = handle.readinto(buffer)
            if not count:
                break
            total += count
            on_bytes(count)
        _drop_page_cache(handle.fileno())
    if stop.is_set():
        raise InterruptedError("interrupted")
    if total != item.size:
        raise ShortRead(f"read {total} bytes, the file has {item.size}")
    return total


# --------------------------------------------------------------------------------------- progress
def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass
class Progress:
    """A tqdm bar on a terminal, plain lines otherwise. Thread-safe."""

    total_bytes: int
    total_files: int
    bar: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    files_done: int = 0
    _tqdm: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.bar:
            from tqdm import tqdm

            try:  # a terminal that reports no size (0x0, e.g. script(1)) would get no bar at all
                size = os.get_terminal_size(self.err.fileno())
                sized = size.columns > 0 and size.lines > 0
            except (OSError, ValueError):
                sized = False
            self._tqdm = tqdm(
                total=self.total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="prefetch",
                file=self.err,
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                nrows=None if sized else 24,
                mininterval=0.2,
            )
            self._tqdm.set_postfix_str(f"files 0/{self.total_files}")

    def advance(self, count: int) -> None:
        if self._tqdm is not None:
            self._tqdm.update(count)

    def done(self, item: Item, count: int, elapsed: float) -> None:
        with self._lock:
            self.files_done += 1
            if self._tqdm is not None:
                self._tqdm.set_postfix_str(f"files {self.files_done}/{self.total_files}")
            else:
                rate = count / elapsed if elapsed > 0 else 0.0
                counter = f"[{self.files_done}/{self.total_files}]"
                print(
                    f"{counter} {_size(count):>10}  {_size(rate)}/s  {item.path}", file=self.out, flush=True
                )

    def failed(self, item: Item, message: str) -> None:
        self.message(f"vidfs: error: {item.path}: {message}")

    def message(self, text: str) -> None:
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.write(text, file=self.err)
            else:
                print(text, file=self.err, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


# --------------------------------------------------------------------------------------------- run
def _mounts(items: Iterable[Item]) -> list[MountInfo]:
    seen: dict[Path, MountInfo] = {}
    for item in items:
        seen.setdefault(item.mount.root, item.mount)
    return list(seen.values())


@dataclass
class _Tally:
    """What a run did so far; worker threads add to it under the lock."""

    failures: int = 0
    pinned: int = 0
    read_files: int = 0
    read_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_prefetch(
    paths: Sequence[Path],
    *,
    jobs: int = 4,
    pin: bool = False,
    unpin: bool = False,
    progress: bool = True,
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if pin and unpin:
        raise UsageError("--pin and --unpin exclude each other")
    items, problems = collect(paths)
    for problem in problems:
        print(f"vidfs: error: {problem}", file=err)
    mounts = _mounts(items)
    if not _disk_caches_fit(mounts, pinning=pin or unpin, err=err):
        return EXIT_FAILURE
    if unpin:
        return _unpin(items, problems, out=out, err=err)

    states = {info.root: State(state_dir(), info.root) for info in mounts}
    done = {root: state.load() for root, state in states.items()}
    to_read = [i for i in items if force or i.key not in done[i.mount.root]]
    reading = set(to_read)
    skipped = [i for i in items if i not in reading]
    tally = _Tally(failures=len(problems))
    if skipped:
        print(
            f"skipping {len(skipped)} file(s) already prefetched ({_size(sum(i.size for i in skipped))}; "
            "--force reads them again)",
            file=out,
            flush=True,
        )
    if pin:
        _pin_all(skipped, tally, err)

    busy_before = {info.root: _unstored(disk_stats(info)) for info in mounts}
    meter = Progress(sum(i.size for i in to_read), len(to_read), progress and err.isatty(), out=out, err=err)
    started = time.monotonic()
    interrupted = _read_all(
        to_read, jobs, pin=pin, states=states, meter=meter, tally=tally, progress=progress
    )
    meter.close()
    elapsed = time.monotonic() - started
    if interrupted:
        print(
            f"vidfs: interrupted after {tally.read_files} file(s); run the same command again to resume",
            file=err,
        )
        return 130
    if not pin:
        _note_busy_disk_caches(mounts, busy_before, err)
    print(_summary(tally, len(skipped), pin, elapsed), file=out, flush=True)
    return EXIT_FAILURE if tally.failures else EXIT_OK


def _disk_caches_fit(mounts: Iterable[MountInfo], *, pinning: bool, err: TextIO) -> bool:
    """Pinning needs each mount's disk cache (False: said why, nothing done); reading only warns."""
    for info in mounts:
        if info.disk_cache:
            continue
        if pinning:
            print(
                f"vidfs: error: {info.root}: the disk cache is off in this mount's config "
                '([cache] disk = "0"): nothing can be pinned; nothing was read',
                file=err,
            )
            return False
        print(
            f"vidfs: warning: {info.root}: the disk cache is off in this mount's config "
            '([cache] disk = "0"): prefetching only fills the small memory cache, which other '
            "reads and a remount evict",
            file=err,
        )
    return True


def _unpin(items: Sequence[Item], problems: Sequence[str], *, out: TextIO, err: TextIO) -> int:
    failed = 0
    for item in items:
        try:
            control_op(item.mount, "unpin", item.rel)
        except PinError as exc:
            failed += 1
            print(f"vidfs: error: {exc}", file=err)
    print(f"unpinned {len(items) - failed} file(s)" + (f", {failed} failed" if failed else ""), file=out)
    return EXIT_FAILURE if failed or problems else EXIT_OK


def _pin_all(items: Iterable[Item], tally: _Tally, err: TextIO) -> None:
    for item in items:
        try:
            control_op(item.mount, "pin", item.rel)
            tally.pinned += 1
        except PinError as exc:
            tally.failures += 1
            print(f"vidfs: error: cannot pin: {exc}", file=err)


def _read_all(
    items: Sequence[Item],
    jobs: int,
    pin: bool,
    states: dict[Path, State],
    meter: Progress,
    tally: _Tally,
    *,
    progress: bool,
) -> bool:
    """Read (and pin) `items`, `jobs` at a time; failures are counted and said. Returns True when the user
    interrupted the run (Ctrl-C): the workers stop at their next chunk."""
    stop = threading.Event()

    def work(item: Item) -> None:
        if pin:
            control_op(item.mount, "pin", item.rel)
            with tally.lock:
                tally.pinned += 1
        begin = time.monotonic()
        count = read_through(item, meter.advance, stop)
        states[item.mount.root].record(item)
        with tally.lock:
            tally.read_bytes += count
            tally.read_files += 1
        if progress:
            meter.done(item, count, time.monotonic() - begin)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="prefetch") as pool:
        futures = {pool.submit(work, item): item for item in items}
        try:
            for future in concurrent.futures.as_completed(futures):
                raised = future.exception()
                if raised is None:
                    continue
                tally.failures += 1
                if isinstance(raised, PinError):
                    meter.message(f"vidfs: error: cannot pin: {raised}")
                elif isinstance(raised, OSError):
                    meter.failed(futures[future], raised.strerror or str(raised))
                else:
                    meter.failed(futures[future], str(raised) or type(raised).__name__)
        except KeyboardInterrupt:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            return True
    return False


def _note_busy_disk_caches(mounts: Iterable[MountInfo], busy_before: dict[Path, int], err: TextIO) -> None:
    for info in mounts:
        unstored = _unstored(disk_stats(info)) - busy_before[info.root]
        if unstored > 0:
            print(
                f"vidfs: note: {info.root}: the disk cache could not store {unstored} block(s) (its disk "
                "was full, read-only or stalled); they are fetched again when read. --force reads everything "
                "again",
                file=err,
            )


def _unstored(disk: dict[str, Any]) -> int:
    """Blocks the disk store let pass: writes paused (full, read-only), or the disk stalled for seconds."""
    return disk.get("skipped_unwritable", 0) + disk.get("skipped_busy", 0)


def _summary(tally: _Tally, skipped: int, pin: bool, elapsed: float) -> str:
    rate = tally.read_bytes / elapsed if elapsed > 0 else 0.0
    summary = f"prefetched {tally.read_files} file(s), {_size(tally.read_bytes)} in {elapsed:.1f}s"
    summary += f" ({_size(rate)}/s)"
    if skipped:
        summary += f"; {skipped} skipped as already prefetched"
    if pin:
        summary += f"; {tally.pinned} pinned"
    if tally.failures:
        summary += f"; {tally.failures} failed"
    return summary
