"""One run of one peer: the figures of issue 13's table.

For a FUSE peer, on fresh mounts with empty caches:
(b) `ffprobe` of the MP4 (time, requests and bytes nginx served, from its access log);
(c) seeded random 64 KiB preads of the random file (p50, p95, bytes served, every read compared);
(a) a cold sequential read (MB/s; sha256 checked) and the daemon's CPU seconds per GB for it, counted
    until the daemon goes quiet, so work a read leaves behind (writing a disk cache) is charged to it;
(d) a warm re-read on the same mount (MB/s; sha256 checked);
(f) the mount stopped, the page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`, then the origin's
    file read back into it: only the peer's side is cold), the peer mounted again on the same cache dir:
    a sequential read (MB/s, sha256, bytes the origin served, daemon CPU per GB). A peer without a
    persistent cache fetches everything again: its figure is the reference, marked so in the table;
(e) the peak RSS of the mount daemon (VmHWM) over all of it.
curl gets (a)-(e) over HTTP (its own CPU in place of a daemon's); (f) is "—" for it: no cache.
For (a) and (f) the table also gives the system (kernel) part of that CPU and the CPU seconds the host stole
during the read (`ReadCost`): on these VMs a page the guest has not used lately costs the host a fault the
first time it is written, so the kernel's copies move from run to run by more than any change of ours.

Sequential reads go into one buffer the size of the file and are hashed after the clock stops: at 0 ms
a sha256 on the side would take much of a core of the two the peers need (bench/reading.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path

from bench.common import (
    GB,
    MB,
    Cleanup,
    HwmWatcher,
    MiB,
    drop_page_cache,
    run,
    say,
    stolen_seconds,
    warm_page_cache,
)
from bench.data import FFPROBE, MOVIE_NAME, RANDOM_NAME, Truth, ffprobe_signature
from bench.netns import Netns, Origin
from bench.options import PEERS, Options
from bench.peers import Mount, mounted
from bench.reading import ReadResult, Sink, matches, percentile, read_file, read_through

PHASE_TIMEOUT = 900.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass(frozen=True)
class Stage:
    """Everything a measurement needs: where the origin is and what its bytes must be."""

    ns: Netns
    origin: Origin
    url: str
    work: Path
    opts: Options
    truth: Truth
    cleanup: Cleanup
    sink: Sink  # where sequential reads go (bench/reading.py)


@dataclass
class Figures:
    """One peer's figures in one run (None: not measured)."""

    seq_mbps: float | None = None  # (a)
    seq_ok: bool | None = None
    seq_partial: bool = False  # the read hit --max-read-seconds: the rate of what was read
    seq_cpu_s_per_gb: float | None = None
    seq_system_s_per_gb: float | None = None  # the kernel's part of it (copies, page faults, syscalls)
    seq_stolen_s: float | None = None  # CPU seconds the hypervisor gave to other guests during the read
    ffprobe_s: float | None = None  # (b)
    ffprobe_requests: int | None = None
    ffprobe_mb: float | None = None
    ffprobe_ok: bool | None = None
    rand_p50_ms: float | None = None  # (c)
    rand_p95_ms: float | None = None
    rand_mb: float | None = None
    rand_ok: bool | None = None
    warm_mbps: float | None = None  # (d)
    warm_ok: bool | None = None
    warm_partial: bool = False
    rss_mib: float | None = None  # (e)
    remount_mbps: float | None = None  # (f)
    remount_ok: bool | None = None
    remount_partial: bool = False
    remount_cpu_s_per_gb: float | None = None
    remount_system_s_per_gb: float | None = None
    remount_stolen_s: float | None = None
    remount_requests: int | None = None
    remount_mb: float | None = None  # served by the origin during (f)
    remount_note: str | None = None  # why (f) is "—"
    errors: list[str] = field(default_factory=list)
    rss_samples: list[float] = field(default_factory=list)

    def note_rss(self, value: float | None) -> None:
        if value is not None:
            self.rss_samples.append(value)
            self.rss_mib = max(self.rss_samples)


def _per_gb(cpu_before: float | None, cpu_after: float | None, nbytes: int) -> float | None:
    if cpu_before is None or cpu_after is None or nbytes <= 0:
        return None
    return (cpu_after - cpu_before) / (nbytes / GB)


def _new_cache(stage: Stage, peer: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=stage.work)) / "cache"


def _mount(stage: Stage, peer: str, cache: Path) -> contextlib.AbstractContextManager[Mount]:
    return mounted(peer, stage.ns, stage.url, cache, stage.opts.vidfs_set, stage.cleanup)


def _discard(cache: Path) -> None:
    """Remove a mount's dir; --one-file-system: never into a mount that failed to go away."""
    run(["rm", "-rf", "--one-file-system", str(cache.parent)], check=False)


def _look_around(stage: Stage, mount: Mount) -> None:
    """Listings and lookups happen before anything is counted."""
    os.listdir(mount.path)
    for item in (RANDOM_NAME, MOVIE_NAME):
        os.stat(mount.path / item)
    stage.origin.settle(quiet=0.3)


def _ffprobe(stage: Stage, fig: Figures, peer: str) -> None:
    cache = _new_cache(stage, peer)
    with _mount(stage, peer, cache) as mount:
        _look_around(stage, mount)
        start = stage.origin.log_offset()
        began = time.monotonic()
        result = run([*FFPROBE, str(mount.path / MOVIE_NAME)], timeout=PHASE_TIMEOUT, check=False)
        fig.ffprobe_s = time.monotonic() - began
        fig.ffprobe_ok = result.returncode == 0 and ffprobe_signature(result.stdout) == stage.truth.ffprobe
        fig.note_rss(mount.rss_mib())
        mount.stop()  # anything still in flight ends now and is logged
    _discard(cache)
    fig.ffprobe_requests, nbytes = stage.origin.served_since(start, MOVIE_NAME)
    fig.ffprobe_mb = nbytes / MB


def _random(stage: Stage, fig: Figures, peer: str) -> None:
    truth = stage.truth
    cache = _new_cache(stage, peer)
    with _mount(stage, peer, cache) as mount:
        _look_around(stage, mount)
        start = stage.origin.log_offset()
        latencies: list[float] = []
        wrong: list[int] = []  # offsets of the reads that returned other bytes
        short = 0
        fd = os.open(mount.path / RANDOM_NAME, os.O_RDONLY)
        try:
            with open(truth.random_path, "rb") as source:
                for offset in truth.offsets:
                    began = time.monotonic()
                    got = os.pread(fd, truth.read_size, offset)
                    latencies.append((time.monotonic() - began) * 1000)
                    short += len(got) != truth.read_size  # a short pread inside the file is wrong too
                    if got != os.pread(source.fileno(), truth.read_size, offset):
                        wrong.append(offset)
        finally:
            os.close(fd)
        fig.note_rss(mount.rss_mib())
        mount.stop()
    _discard(cache)
    fig.rand_p50_ms, fig.rand_p95_ms = percentile(latencies, 0.5), percentile(latencies, 0.95)
    fig.rand_ok = not wrong
    if wrong:
        fig.errors.append(
            f"random: {len(wrong)} of {len(truth.offsets)} reads of {truth.read_size} bytes returned wrong"
            f" bytes ({short} of them short), at offsets {', '.join(map(str, wrong[:5]))}"
        )
    fig.rand_mb = stage.origin.served_since(start, RANDOM_NAME)[1] / MB


@dataclass(frozen=True)
class ReadCost:
    """What a sequential read cost the daemon, per GB read, and the host's steal meanwhile: on these shared
    VMs the kernel's part (copies into pages the host must back again, page faults) and the steal move from
    run to run by more than any change of ours, and say why one run is slower."""

    cpu_s_per_gb: float | None
    system_s_per_gb: float | None
    stolen_s: float | None


def _timed_read(stage: Stage, mount: Mount) -> tuple[ReadResult, ReadCost]:
    """A sequential read of the random file and what it cost (`ReadCost`)."""
    before, system_before, stolen_before = mount.cpu_s(), mount.system_s(), stolen_seconds()
    result = read_file(mount.path / RANDOM_NAME, stage.sink, limit_s=stage.opts.max_read_seconds)
    after = mount.cpu_settled_s()  # the work the read left behind (its disk cache's writes) counts too
    system_after, stolen_after = mount.system_s(), stolen_seconds()
    return result, ReadCost(
        _per_gb(before, after, result.total),
        _per_gb(system_before, system_after, result.total),
        _since(stolen_before, stolen_after),
    )


def _since(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _sequential(stage: Stage, fig: Figures, peer: str, cache: Path) -> None:
    """(a) cold and (d) warm on one mount; its cache is left for (f)."""
    warm_page_cache(stage.truth.random_path)  # the origin's side is always warm
    with _mount(stage, peer, cache) as mount:
        _look_around(stage, mount)
        cold, cost = _timed_read(stage, mount)
        fig.seq_cpu_s_per_gb, fig.seq_system_s_per_gb, fig.seq_stolen_s = astuple(cost)
        fig.seq_mbps, fig.seq_partial = cold.mbps, not cold.complete
        fig.seq_ok = matches(cold, stage.truth)
        fig.note_rss(mount.rss_mib())  # the peak so far: (a) apart from (d) in the samples
        warm = read_file(mount.path / RANDOM_NAME, stage.sink, limit_s=stage.opts.max_read_seconds)
        fig.warm_mbps, fig.warm_partial = warm.mbps, not warm.complete
        fig.warm_ok = matches(warm, stage.truth)
        fig.note_rss(mount.rss_mib())


def _remount(stage: Stage, fig: Figures, peer: str, cache: Path) -> None:
    """(f): same cache dir, page cache dropped."""
    drop_page_cache()
    warm_page_cache(stage.truth.random_path)
    with _mount(stage, peer, cache) as mount:
        _look_around(stage, mount)
        start = stage.origin.log_offset()
        result, cost = _timed_read(stage, mount)
        fig.remount_cpu_s_per_gb, fig.remount_system_s_per_gb, fig.remount_stolen_s = astuple(cost)
        fig.remount_mbps, fig.remount_partial = result.mbps, not result.complete
        fig.remount_ok = matches(result, stage.truth)
        fig.note_rss(mount.rss_mib())
        mount.stop()
    fig.remount_requests, nbytes = stage.origin.served_since(start, RANDOM_NAME)
    fig.remount_mb = nbytes / MB
    if not PEERS[peer].persistent_cache:
        fig.remount_note = "no persistent cache: fetched again"


def _phase(fig: Figures, peer: str, name: str, body: Callable[[], None]) -> None:
    try:
        body()
    except Exception as exc:
        fig.errors.append(f"{name}: {exc}")
        say(f"{peer}: {name} failed: {exc}")


def measure_mount(stage: Stage, peer: str) -> Figures:
    fig = Figures()
    _phase(fig, peer, "ffprobe", lambda: _ffprobe(stage, fig, peer))
    _phase(fig, peer, "random reads", lambda: _random(stage, fig, peer))
    cache = _new_cache(stage, peer)
    _phase(fig, peer, "sequential", lambda: _sequential(stage, fig, peer, cache))
    if fig.seq_mbps is not None:
        _phase(fig, peer, "after a remount", lambda: _remount(stage, fig, peer, cache))
    else:
        fig.remount_note = "the cold read failed"
    _discard(cache)
    return fig


# ------------------------------------------------------------------------------------------- curl
def _curl_read(stage: Stage, fig: Figures) -> tuple[ReadResult, resource.struct_rusage]:
    """curl's download into a pipe we read from; returns the read and curl's own resource usage."""
    cmd = [*stage.ns.prefix, "curl", "-s", "-f", stage.url + RANDOM_NAME]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert process.stdout is not None
    fd = process.stdout.fileno()
    with contextlib.suppress(OSError):  # a 1 MiB pipe, so the pipe is not what limits at 0 ms
        fcntl.fcntl(fd, F_SETPIPE_SZ, MiB)
    watcher = HwmWatcher(process.pid)
    limit = stage.opts.max_read_seconds
    try:
        result = read_through(lambda buf: os.readv(fd, [buf]), stage.sink, limit_s=limit)
    finally:
        process.stdout.close()  # a read cut short: curl ends on the closed pipe
        _, status, usage = os.wait4(process.pid, 0)  # its rusage: curl's CPU
        process.returncode = os.waitstatus_to_exitcode(status)
        fig.note_rss(watcher.peak)
    if process.returncode != 0 and result.complete:
        raise RuntimeError(f"curl exited {process.returncode}")
    return result, usage


def _curl_ffprobe(stage: Stage, fig: Figures) -> None:
    stage.origin.settle(quiet=0.3)
    start = stage.origin.log_offset()
    began = time.monotonic()
    result = run([*stage.ns.prefix, *FFPROBE, stage.url + MOVIE_NAME], timeout=PHASE_TIMEOUT, check=False)
    fig.ffprobe_s = time.monotonic() - began
    fig.ffprobe_ok = result.returncode == 0 and ffprobe_signature(result.stdout) == stage.truth.ffprobe
    fig.ffprobe_requests, nbytes = stage.origin.served_since(start, MOVIE_NAME)
    fig.ffprobe_mb = nbytes / MB


def _curl_random(stage: Stage, fig: Figures) -> None:
    """All the ranges in one curl (--next), on one kept connection: the least a client can pay."""
    truth = stage.truth
    start = stage.origin.log_offset()
    cmd = [*stage.ns.prefix, "curl"]
    for i, offset in enumerate(truth.offsets):
        cmd += ["--next"] if i else []
        cmd += ["-s", "-f", "-w", "%{stderr}%{time_total} %{size_download}\\n"]
        cmd += ["-r", f"{offset}-{offset + truth.read_size - 1}", stage.url + RANDOM_NAME]
    process = subprocess.run(cmd, capture_output=True, timeout=PHASE_TIMEOUT, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"curl exited {process.returncode}")
    times = [float(line.split()[0]) * 1000 for line in process.stderr.decode().splitlines() if line.strip()]
    fig.rand_p50_ms, fig.rand_p95_ms = percentile(times, 0.5), percentile(times, 0.95)
    with open(truth.random_path, "rb") as source:
        expected = b"".join(os.pread(source.fileno(), truth.read_size, offset) for offset in truth.offsets)
    fig.rand_ok = process.stdout == expected
    fig.rand_mb = stage.origin.served_since(start, RANDOM_NAME)[1] / MB


def _curl_sequential(stage: Stage, fig: Figures) -> None:
    warm_page_cache(stage.truth.random_path)
    stolen_before = stolen_seconds()
    cold, usage = _curl_read(stage, fig)
    fig.seq_stolen_s = _since(stolen_before, stolen_seconds())
    fig.seq_mbps, fig.seq_partial, fig.seq_ok = cold.mbps, not cold.complete, matches(cold, stage.truth)
    fig.seq_cpu_s_per_gb = _per_gb(0.0, usage.ru_utime + usage.ru_stime, cold.total)
    fig.seq_system_s_per_gb = _per_gb(0.0, usage.ru_stime, cold.total)
    warm, _ = _curl_read(stage, fig)
    fig.warm_mbps, fig.warm_partial, fig.warm_ok = warm.mbps, not warm.complete, matches(warm, stage.truth)


def measure_curl(stage: Stage) -> Figures:
    fig = Figures(remount_note="no cache: every read is a download")
    _phase(fig, "curl", "sequential", lambda: _curl_sequential(stage, fig))
    _phase(fig, "curl", "ffprobe", lambda: _curl_ffprobe(stage, fig))
    _phase(fig, "curl", "random reads", lambda: _curl_random(stage, fig))
    return fig
