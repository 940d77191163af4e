"""The catalog run (issue 16): how vidfs browses 10,000 to 100,000 videos, per vendor shape and RTT.

    sudo bench/run.sh --catalog 10000,100000 [--rtt-ms 20,0] [--providers cupix,aipix,...]

First, once, the machine's FUSE floor (`bench.floor`): what listing a directory costs through a pyfuse3
filesystem that does no work; each row's warm walk is printed next to its floor (its directories × that).
Then for every RTT, provider shape and N, in the bench's network namespace (delayed as in the read run, but
only by a kernel method: the Python proxy fronts one port and the emulators have several):
1. the vendor's emulator, `python -m vidfs.emulator --provider NAME --scale N` (N synthetic videos spread
   the way that vendor's accounts grow, besides its small hand-made catalog), started fresh;
   first, on a mount with a cache dir of its own, empty: `ls -R -p` (names only: ls then stats nothing,
   so no size is needed), its seconds and the API requests and HEADs it caused; then the first 64 KiB of
   one video of the largest directory read, its seconds and HEADs (sizes are learned when `stat` or
   `open` needs them: that is one HEAD, not one per video of the directory);
2. vidfs mounted on it with an empty cache dir (`metadata_ttl = "10m"`), its daemon in the namespace;
3. a cold walk: every directory listed and every entry `lstat`ed, as `ls -lR` or `find` does
   (seconds, entries, the daemon's and the emulator's CPU seconds); then the emulator's request counts
   (`GET <control_url>/requests/counts`, exact at any N): API requests (the vendor's own origin, HEADs
   aside), storage HEADs, other storage requests;
4. a warm walk on the same mount, then the program itself, `ls -lR` (seconds, requests they caused: 0 is
   the target). `ls -l` also asks every entry's SELinux label and ACLs, which the walk does not; then a
   re-listing, as a mount that lives past `metadata_ttl` makes one: `vidfs refresh`, and a walk that waits
   for every listing again (seconds, requests, and the daemon's peak RSS during it: the peak is reset
   before, through `/proc/PID/clear_refs`);
5. the mount stopped and started again on the same cache dir: seconds from starting the daemon to the
   end of the first complete walk (remount-to-first-answer), and the requests made before that end, the
   daemon's CPU seconds and the seconds stolen by the hypervisor meanwhile; the names, inodes and sizes
   it shows compared with the cold walk's; then once more, with `ls -lR` as the first answer, and every
   listing of the snapshot older than its TTL (`metadata_ttl = "0s"`), as a remount the next day finds
   them: answered from the snapshot, and listed again once the mount is idle;
6. the daemon's peak RSS (VmHWM, the largest of the three mounts, re-listing included).
A table per RTT, issue 16's targets checked, JSON and a PNG (time and memory against N) in
bench/results/. Walks stop at `--max-walk-seconds` (reported as partial), so a slow shape cannot hang it.
`--providers valt-rooms` is the VALT emulator mounted with `layout = "rooms"` (no directory per record).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Cleanup, cpu_seconds, run, say, stolen_seconds, stop_pid, vm_hwm_mib, wait_for
from bench.delay import Delay, start_delay
from bench.floor import measure as measure_floor
from bench.netns import Netns
from bench.options import Options
from bench.peers import Mount
from bench.walks import OP_HANG_S, Walk, Watchdog, ls_lr, ls_names, walk

PROBE_PORT = 8090  # an idle static server in the namespace: the delay's RTT is measured against it
EMULATOR_READY_S = 900.0  # the first start makes the sample media with ffmpeg
# Vendors whose listings tell no sizes, so a stat needs a request per video: a HEAD of the file
# (vidfs/providers/*: size=None), or Pixop's details call (`videos/v1/video/{id}`; its list entries have no
# size). Issue 16's budget for "a HEAD each" is the one for a request per video.
SIZE_REQUESTS = {
    "aipix": "a HEAD each",
    "hourone": "a HEAD each",
    "valt": "a HEAD each",
    "valt-rooms": "a HEAD each",
    "pixop": "a details call each",
}
# Shapes that are a vendor's emulator mounted with other provider options (only when asked by name in
# --providers): VALT with `layout = "rooms"`, no directory per record.
SHAPE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"valt-rooms": ("valt", {"layout": "rooms"})}


@dataclass
class CatalogFigures:
    shape: str
    n: int
    files: int | None = None
    dirs: int | None = None
    cold_s: float | None = None
    cold_complete: bool | None = None
    cold_cpu_s: float | None = None  # the daemon's
    cold_stolen_s: float | None = None  # CPU time taken by the hypervisor meanwhile (`stolen_seconds`)
    # The vendor emulator's: it answers the same requests on the same two cores, so the daemon's CPU plus
    # this one is what the cold walk asks of the machine (10,000 VALT records at 20 ms: 22.6 s + 10.0 s
    # in a 30.0 s walk).
    cold_emulator_cpu_s: float | None = None
    api_requests: int | None = None
    storage_heads: int | None = None
    storage_other: int | None = None
    duplicates: int | None = None
    zero_size: int | None = None
    failures: int | None = None  # readdir/lstat errors in the cold walk
    warm_s: float | None = None
    warm_requests: int | None = None
    warm_complete: bool | None = None
    warm_ls_s: float | None = None  # `ls -lR` after the warm walk (its requests are in warm_requests)
    relist_s: float | None = None  # `vidfs refresh`, then a walk that waits for every listing again
    relist_requests: int | None = None
    relist_complete: bool | None = None
    relist_rss_mib: float | None = None  # the daemon's peak RSS during that walk
    remount_ready_s: float | None = None  # daemon started → mounted
    remount_first_answer_s: float | None = None  # daemon started → first complete walk ended
    remount_requests_before: int | None = None
    remount_complete: bool | None = None
    remount_changed: int | None = None  # entries whose name, inode or size differ from the cold walk
    remount_ls_s: float | None = None  # another remount, listings stale: daemon started → `ls -lR` ended
    remount_ls_requests_before: int | None = None
    # The daemon's CPU from its start to the end of that walk, and what the hypervisor took meanwhile: at
    # 100,000 a remount is 2-3 s of per-entry work, and a second stolen shows in it at once.
    remount_cpu_s: float | None = None
    remount_stolen_s: float | None = None
    remount_ls_cpu_s: float | None = None
    remount_ls_stolen_s: float | None = None
    rss_mib: float | None = None
    names_s: float | None = None  # `ls -R` (names only) on a fresh mount and cache
    names_api: int | None = None
    names_heads: int | None = None
    open_one_s: float | None = None  # then one video of the largest directory opened, 64 KiB read
    open_one_heads: int | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Emulator:
    """One vendor emulator in the namespace, reached through its control API with curl (it listens on
    the namespace's 127.0.0.1, which the bench process itself is not in)."""

    ns: Netns
    process: Any
    site: str  # the main origin's name in the request log
    control_url: str
    config: dict[str, Any]  # the provider's table for vidfs's config

    def requests(self) -> list[dict[str, Any]]:
        out = run([*self.ns.prefix, "curl", "-s", "-f", self.control_url + "/requests"], timeout=600)
        entries = json.loads(out.stdout)
        return entries if isinstance(entries, list) else []

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests since the last `clear` by origin and method: exact, where the log's entries are bounded
        (200,000: a cold walk of 100,000 VALT videos made 200,530 API calls, reported as 200,000)."""
        out = run([*self.ns.prefix, "curl", "-s", "-f", self.control_url + "/requests/counts"], timeout=60)
        counts = json.loads(out.stdout)
        return counts if isinstance(counts, dict) else {}

    def clear(self) -> None:
        run([*self.ns.prefix, "curl", "-s", "-f", "-X", "POST", self.control_url + "/requests/clear"])


def start_emulator(ns: Netns, shape: str, n: int, base: Path, cleanup: Cleanup) -> Emulator:
    ready = base / "emulator.json"
    ready.unlink(missing_ok=True)  # a file left by an earlier start would name a port long closed
    cmd = [sys.executable, "-m", "vidfs.emulator", "--provider", shape, "--scale", str(n)]
    process = ns.start([*cmd, "--ready-file", str(ready)], base / "emulator.log", cleanup, shape)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the {shape} emulator exited with status {process.returncode}")
        return ready.exists()

    try:
        wait_for(up, EMULATOR_READY_S, f"{shape} emulator with --scale {n}", step=0.1)
        (info,) = json.loads(ready.read_text()).values()
        control = str(info["control_url"]).rstrip("/")
        about = json.loads(run([*ns.prefix, "curl", "-s", "-f", control + "/info"]).stdout)
    except BaseException:
        stop_pid(process)
        raise
    return Emulator(ns, process, str(about.get("name", shape)), control, dict(info["config"]))


def count_requests(counts: dict[str, dict[str, int]], site: str) -> tuple[int, int, int]:
    """(API requests, storage HEADs, other storage requests) from `Emulator.counts`: the vendor's own
    origin answers the API (an HTTP index's pages too); HEADs are size probes wherever they go."""
    heads = sum(methods.get("HEAD", 0) for methods in counts.values())
    api = sum(n for method, n in counts.get(site, {}).items() if method != "HEAD")
    total = sum(sum(methods.values()) for methods in counts.values())
    return api, heads, total - heads - api


@dataclass(frozen=True)
class CatalogStage:
    ns: Netns
    work: Path
    opts: Options
    cleanup: Cleanup
    max_walk_s: float


def _mount(stage: CatalogStage, config: Path, base: Path) -> Mount:
    cmd = [sys.executable, "-m", "vidfs", "mount", str(config), str(base / "mnt")]
    mount = Mount("vidfs", stage.ns, cmd, base / "mnt", base / "mount.log", timeout=300)
    stage.cleanup.push("vidfs mount", mount.stop)  # at once below too; a second stop does nothing
    return mount


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Entries only in one walk, or with another inode or size."""
    return len(before.keys() ^ after.keys()) + sum(after[k] != v for k, v in before.items() if k in after)


def _walk_mount(stage: CatalogStage, mount: Mount, fig: CatalogFigures, name: str) -> Walk:
    """A walk of the mount, its failures noted in `fig`; a hung call stops the daemon (Watchdog)."""
    result = walk(mount.path, stage.max_walk_s, lambda: stop_pid(mount.process, grace=5))
    if result.hung:
        fig.errors.append(f"{name} walk: a call unanswered for {OP_HANG_S:g} s, the daemon was stopped")
    if result.first_failure:
        fig.errors.append(f"{name} walk: {result.failures} failed calls, the first {result.first_failure}")
    rss = vm_hwm_mib(mount.process.pid)
    fig.rss_mib = max(x for x in (fig.rss_mib, rss, 0.0) if x is not None)
    return result


def _ls_mount(stage: CatalogStage, mount: Mount, fig: CatalogFigures, name: str) -> float | None:
    seconds = ls_lr(mount.path, stage.max_walk_s, lambda: stop_pid(mount.process, grace=5))
    if seconds is None:
        fig.errors.append(f"{name} ls -lR: failed or not done within {stage.max_walk_s:g} s")
    rss = vm_hwm_mib(mount.process.pid)
    fig.rss_mib = max(x for x in (fig.rss_mib, rss, 0.0) if x is not None)
    return seconds


def _names_and_one_open(stage: CatalogStage, fig: CatalogFigures, emulator: Emulator, config: Path) -> None:
    """Step 1's second half (see the module's essay): `ls -R` of a fresh mount, then one video opened."""
    emulator.clear()
    mount = _mount(stage, config, config.parent)
    watchdog = Watchdog(lambda: stop_pid(mount.process, grace=5))
    try:
        began = time.monotonic()
        listed = ls_names(mount.path, stage.max_walk_s, lambda: stop_pid(mount.process, grace=5))
        if listed is None:
            fig.errors.append(f"ls -R: failed or not done within {stage.max_walk_s:g} s")
            return
        fig.names_s = time.monotonic() - began
        fig.names_api, fig.names_heads, _ = count_requests(emulator.counts(), emulator.site)
        files = {d: [n for n in names if not n.endswith("/")] for d, names in listed.items()}
        directory = max(files, key=lambda d: len(files[d]))
        if not files[directory]:
            return
        emulator.clear()
        chosen = sorted(files[directory])[len(files[directory]) // 2]
        began = watchdog.since = time.monotonic()
        with open(f"{directory}/{chosen}", "rb") as fh:
            fh.read(64 * 1024)
        fig.open_one_s = time.monotonic() - began
        watchdog.since = None
        fig.open_one_heads = count_requests(emulator.counts(), emulator.site)[1]
    except OSError as exc:
        fig.errors.append(f"names and one open: {exc}")
    finally:
        watchdog.close()
        rss = vm_hwm_mib(mount.process.pid)
        fig.rss_mib = max(x for x in (fig.rss_mib, rss, 0.0) if x is not None)
        mount.stop()


def _cold_and_warm(
    stage: CatalogStage, fig: CatalogFigures, emulator: Emulator, config: Path, base: Path
) -> Walk:
    mount = _mount(stage, config, base)
    try:
        cpu_before, stolen_before = mount.cpu_s(), stolen_seconds()
        vendor_before = cpu_seconds(emulator.process.pid)
        cold = _walk_mount(stage, mount, fig, "cold")
        cpu_after, fig.cold_stolen_s = mount.cpu_s(), _since(stolen_before)
        vendor_after = cpu_seconds(emulator.process.pid)
        fig.cold_cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        if vendor_before is not None and vendor_after is not None:
            fig.cold_emulator_cpu_s = vendor_after - vendor_before
        fig.cold_s, fig.cold_complete = cold.seconds, cold.complete and not cold.hung
        fig.files, fig.dirs, fig.duplicates = cold.files, cold.dirs, cold.duplicates
        fig.zero_size, fig.failures = cold.zero_size, cold.failures
        counts = count_requests(emulator.counts(), emulator.site)
        fig.api_requests, fig.storage_heads, fig.storage_other = counts
        if not cold.hung:
            emulator.clear()
            warm = _walk_mount(stage, mount, fig, "warm")
            fig.warm_s, fig.warm_complete = warm.seconds, warm.complete and not warm.hung
            if not warm.hung:
                fig.warm_ls_s = _ls_mount(stage, mount, fig, "warm")
            fig.warm_requests = sum(count_requests(emulator.counts(), emulator.site))
            if not warm.hung:
                _relist(stage, fig, emulator, mount)
    finally:
        mount.stop()
    return cold


def _relist(stage: CatalogStage, fig: CatalogFigures, emulator: Emulator, mount: Mount) -> None:
    """Every listing asked again (`vidfs refresh`) and walked, the daemon's peak RSS during it alone."""
    emulator.clear()
    try:
        Path(f"/proc/{mount.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError as exc:
        fig.errors.append(f"re-listing: cannot reset the daemon's peak RSS: {exc}")
        return
    refresh = run([sys.executable, "-m", "vidfs", "refresh", str(mount.path)], check=False, timeout=120)
    if refresh.returncode != 0:
        fig.errors.append(f"re-listing: vidfs refresh exited {refresh.returncode}")
        return
    relisted = _walk_mount(stage, mount, fig, "re-listing")
    fig.relist_s, fig.relist_complete = relisted.seconds, relisted.complete and not relisted.hung
    fig.relist_requests = sum(count_requests(emulator.counts(), emulator.site))
    fig.relist_rss_mib = rss = vm_hwm_mib(mount.process.pid)  # it may have grown since the walk's end
    fig.rss_mib = max(x for x in (fig.rss_mib, rss, 0.0) if x is not None)


def _remount(
    stage: CatalogStage,
    fig: CatalogFigures,
    emulator: Emulator,
    configs: tuple[Path, Path],
    base: Path,
    cold: Walk,
) -> None:
    """The walk after a remount (`configs[0]`), then `ls -lR` after another, its listings stale (`[1]`)."""
    config, stale = configs
    emulator.clear()
    began, stolen = time.monotonic(), stolen_seconds()
    mount = _mount(stage, config, base)
    try:
        fig.remount_ready_s = time.monotonic() - began
        first = _walk_mount(stage, mount, fig, "remount")
        ended_wall = time.time()
        fig.remount_first_answer_s = time.monotonic() - began
        fig.remount_cpu_s, fig.remount_stolen_s = mount.cpu_s(), _since(stolen)
        fig.remount_requests_before = sum(e.get("time", 0) < ended_wall for e in emulator.requests())
        fig.remount_complete = first.complete and not first.hung
        # Compared only when both walks saw everything: an entry a failed call hid is not a change.
        whole = all(w.complete and not w.hung and not w.failures for w in (cold, first))
        fig.remount_changed = _changed(cold.entries, first.entries) if whole else None
    finally:
        mount.stop()
    emulator.clear()
    began, stolen = time.monotonic(), stolen_seconds()
    mount = _mount(stage, stale, base)
    try:
        seconds = _ls_mount(stage, mount, fig, "remount")
        ended_wall = time.time()
        if seconds is not None:
            fig.remount_ls_s = time.monotonic() - began
            fig.remount_ls_cpu_s, fig.remount_ls_stolen_s = mount.cpu_s(), _since(stolen)
            fig.remount_ls_requests_before = sum(e.get("time", 0) < ended_wall for e in emulator.requests())
    finally:
        mount.stop()


def _since(stolen: float | None) -> float | None:
    """Seconds stolen by the hypervisor since `stolen_seconds()` gave `stolen`."""
    now = stolen_seconds()
    return None if stolen is None or now is None else now - stolen


def measure_one(stage: CatalogStage, shape: str, n: int, tag: str) -> CatalogFigures:
    """One provider shape with N videos: a fresh emulator, a fresh cache, two mounts."""
    from vidfs.commands.demo import write_config  # the CLI's own writer of a private config

    fig = CatalogFigures(shape, n)
    base = stage.work / f"catalog-{shape}-{n}-{tag}"
    base.mkdir()
    vendor, options = SHAPE_VARIANTS.get(shape, (shape, {}))
    try:
        emulator = start_emulator(stage.ns, vendor, n, base, stage.cleanup)
    except Exception as exc:
        fig.errors.append(f"emulator: {exc}")
        say(f"catalog {shape} {n}: {exc}")
        return fig
    try:
        config = write_config(
            base / "vidfs.toml",
            {shape: {**emulator.config, **options}},
            cache_dir=base / "cache",
            cache={"metadata_ttl": "10m"},
        )
        first = base / "names"  # step 1's mount: a cache dir of its own
        first.mkdir()
        names_config = write_config(
            first / "vidfs.toml",
            {shape: {**emulator.config, **options}},
            cache_dir=first / "cache",
            cache={"metadata_ttl": "10m"},
        )
        _names_and_one_open(stage, fig, emulator, names_config)
        run(["rm", "-rf", "--one-file-system", str(first / "cache")], check=False)
        emulator.clear()
        cold = _cold_and_warm(stage, fig, emulator, config, base)
        stale = write_config(  # the same cache dir, every listing in it older than the TTL
            base / "vidfs-stale.toml",
            {shape: {**emulator.config, **options}},
            cache_dir=base / "cache",
            cache={"metadata_ttl": "0s"},
        )
        _remount(stage, fig, emulator, (config, stale), base, cold)
    except Exception as exc:
        fig.errors.append(f"{type(exc).__name__}: {exc}")
        say(f"catalog {shape} {n}: {exc}")
    finally:
        stop_pid(emulator.process)
        if not stage.opts.keep_workdir:
            run(["rm", "-rf", "--one-file-system", str(base / "cache")], check=False)
    return fig


def _probe_server(ns: Netns, work: Path, cleanup: Cleanup) -> None:
    """An idle static server the delay's RTT is measured against (the emulators come and go)."""
    empty = work / "probe-www"
    empty.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(empty),
        str(PROBE_PORT),
    ]
    process = ns.start(cmd, work / "probe.log", cleanup, "probe server")
    ns.wait_url(f"http://127.0.0.1:{PROBE_PORT}/", process, "probe server")


def _one_rtt(stage: CatalogStage, delay: Delay) -> list[CatalogFigures]:
    opts = stage.opts
    out = []
    for shape in opts.providers:
        for n in opts.catalog:
            for index in range(opts.runs):
                say(f"catalog at {delay.rtt_ms:g} ms: {shape}, {n} videos, run {index + 1}/{opts.runs} …")
                fig = measure_one(stage, shape, n, f"{delay.rtt_ms:g}ms-{index}")
                say(f"  {brief(fig)}")
                out.append(fig)
    return out


def brief(fig: CatalogFigures) -> str:
    def n(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    text = (
        f"{fig.files} files, cold {n(fig.cold_s)} s ({fig.api_requests} API, {fig.storage_heads} HEADs,"
        f" {n(fig.cold_cpu_s)} s CPU, emulator {n(fig.cold_emulator_cpu_s)} s,"
        f" {n(fig.cold_stolen_s)} s stolen),"
        f" warm {n(fig.warm_s, 2)} s, ls -lR {n(fig.warm_ls_s, 2)} s ({fig.warm_requests} req),"
        f" remount {n(fig.remount_first_answer_s, 2)} s"
        f" ({fig.remount_requests_before} req before, {fig.remount_changed} changed,"
        f" {n(fig.remount_cpu_s)} s CPU, {n(fig.remount_stolen_s)} s stolen),"
        f" remount ls -lR {n(fig.remount_ls_s, 2)} s ({fig.remount_ls_requests_before} req before,"
        f" {n(fig.remount_ls_cpu_s)} s CPU, {n(fig.remount_ls_stolen_s)} s stolen),"
        f" RSS {n(fig.rss_mib)} MiB (re-listing {n(fig.relist_s, 2)} s, {n(fig.relist_rss_mib)} MiB)"
    )
    return text + (f", errors: {'; '.join(fig.errors)}" if fig.errors else "")


def run_catalog(opts: Options, work: Path, cleanup: Cleanup) -> int:
    from bench.catalog_report import CatalogResults  # the report imports this module's figures

    if opts.delay == "proxy":
        say("the catalog run delays with netem or nfqueue only (the proxy fronts a single port)")
        return 2
    floor = measure_floor(work, cleanup)  # before any namespace or delay: the machine alone
    if floor is not None:
        say(f"FUSE floor: {floor.describe()}")
    ns = Netns(cleanup, tag="c")
    _probe_server(ns, work, cleanup)
    stage = CatalogStage(ns, work, opts, cleanup, opts.max_walk_seconds)
    results = CatalogResults(opts, floor)
    for rtt_ms in opts.rtts_ms:
        try:
            delay = start_delay(
                ns, rtt_ms, opts.delay, PROBE_PORT, work, cleanup, opts.install, allow_proxy=False
            )
        except RuntimeError as exc:
            say(f"no catalog run at {rtt_ms:g} ms: {exc}")
            results.skipped(rtt_ms, str(exc))
            continue
        try:
            say(f"RTT {rtt_ms:g} ms: {delay.description}, measured {delay.measured_rtt_ms:.2f} ms")
            results.add(delay, _one_rtt(stage, delay))
        finally:
            delay.close()
    return 0
