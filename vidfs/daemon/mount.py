"""Build everything a mount needs, run pyfuse3's main loop, and tear it all down.

The order of building, and (reversed) of tearing down
-----------------------------------------------------
1. The stop signals (SIGINT, SIGTERM, SIGHUP) are watched first and until the very end (`StopSignals`). A
   signal during the start stops the start; while serving, it ends the FUSE main loop
   (`pyfuse3.terminate()`); during the teardown (a second Ctrl-C, the SIGHUP systemd sends after SIGTERM)
   it is noted and ignored, so the teardown always finishes, the mount point is left clean, and the
   process exits 0 without a traceback. (`vidfs mount` ignores these signals before and after `serve`:
   there is nothing to stop then.)
2. The engine: HTTP client, providers, listing cache, tree, and while serving the catalog's own background
   work (listing refreshes, the snapshot writer). Closed last: everything below uses it.
3. The disk store, when `[cache] disk` is set. Closed after the background work that writes to it.
4. The supervised nursery (`vidfs.daemon.supervisor`): the block cache's fetches, `VideoFS`'s container
   warm-ups, the control server and its connections run in it, each failure logged once and counted, never
   ending the mount. It is cancelled right after the kernel mount is gone and before the store and the
   engine close, so no fetch outlives the HTTP client.
5. The block cache and `VideoFS`, handed `tasks(...)` guards where they take a nursery; the `--subtree` root.
6. The control server, a service started before the kernel mount, so the root's xattr names its socket
   from the first `getxattr` on.
7. The kernel mount: the mount point is claimed once more (`claim_mountpoint`: a live mount there is
   refused, a dead one cleaned), `pyfuse3.init`, the kernel's readahead raised (`tune_readahead`: 1 MiB
   FUSE reads), READY to systemd and to the parent, and `pyfuse3.main()`, which only an unmount
   (`fusermount3 -u`, `umount`) or a stop signal ends.
   `pyfuse3.close(unmount=True)` follows in every case, first of all the teardown: no reader is left waiting
   on a filesystem whose parts are being closed.

One mount per mount point: see `vidfs.daemon.mountpoint`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from vidfs.config.types import Config
from vidfs.daemon.control import ControlServer, socket_path
from vidfs.daemon.memory import CollectorPacing, HeapTrimmer, one_arena
from vidfs.daemon.mountpoint import claim_mountpoint, tune_readahead
from vidfs.daemon.supervisor import ServiceNursery, Supervisor
from vidfs.engine import Engine, open_engine
from vidfs.errors import UsageError, VidfsError
from vidfs.fs.operations import VidfsOperations
from vidfs.fs.tree import Tree
from vidfs.fs.videofs import VideoFS
from vidfs.io.block_cache import BlockCache
from vidfs.io.store import DiskStore, running
from vidfs.stats import Stats
from vidfs.tasks import Spawner

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class MountRequest:
    config: Config
    mountpoint: Path
    subtree: str | None = None
    allow_other: bool | None = None  # None: as the config says
    debug_fuse: bool = False


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


def fsname(config: Config) -> str:
    """What `mount` and `df` show as the source: `vidfs:<config file name>` unless the config sets one.
    (A bare word would be shown as a path relative to the mounting process's working directory.)"""
    if config.mount.fsname != "vidfs":
        return config.mount.fsname
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in config.path.name)
    return f"vidfs:{stem}"


async def serve(request: MountRequest, on_ready: Callable[[str], None] | None = None) -> None:
    """Mount `request` and serve it until unmounted or stopped by a signal (see the module's essay)."""
    one_arena()  # before any worker thread: blocks freed by the LRU are reused by the next reads (its essay)
    stats = Stats()
    supervisor = Supervisor(stats)
    stats.add_section("services", supervisor.statistics)
    collector = CollectorPacing()
    stats.add_section("gc", collector.statistics)
    async with watch_stop_signals() as stop, AsyncExitStack() as stack:
        if not request.mountpoint.is_dir():
            raise UsageError(f"mount point {request.mountpoint} is not a directory")
        engine = await stack.enter_async_context(
            open_engine(request.config, stats, serving=True, supervisor=supervisor)
        )
        store = await _open_disk_store(request.config, stats, stack)
        async with trio.open_nursery() as nursery:
            services = supervisor.bind(nursery)
            fs = await _build_fs(request, engine, store, services)
            control = ControlServer(fs, socket_path(request.config.cache.dir, request.mountpoint), supervisor)
            stats.add_section("control", control.statistics)
            await services.start_service("control", control.serve)
            trimmer = HeapTrimmer(lambda: _catalog_work(stats, engine.tree))
            stats.add_section("heap_trimmer", trimmer.statistics)
            await services.start_service("heap-trimmer", trimmer.run)
            if request.config.metrics.listen is not None:
                from vidfs.daemon.metrics import MetricsEndpoint  # prometheus_client only when asked for

                metrics = MetricsEndpoint(request.config.metrics.listen, fs.stats_document)
                stats.add_section("metrics", metrics.statistics)
                await services.start_service("metrics", metrics.serve)
            try:
                await _mount_and_serve(request, fs, stop, on_ready, services.tasks("kernel-readahead"))
            finally:
                nursery.cancel_scope.cancel()
    if stop.mounted:
        log.info("unmounted %s", request.mountpoint)
    else:
        log.info("stopped before mounting %s", request.mountpoint)


def _catalog_work(stats: Stats, tree: Tree) -> tuple[int, ...]:
    """What changes with the catalog's work (listings, HEADs, snapshot saves, nodes made): the heap trimmer's
    cue. Reads change none of it."""
    counters = stats.counters
    return (
        counters["metadata.vendor_calls"],
        counters["metadata.heads"],
        counters["snapshot.saves"],
        len(tree.nodes),
    )


async def _open_disk_store(config: Config, stats: Stats, stack: AsyncExitStack) -> DiskStore | None:
    store = None
    if config.cache.disk > 0:
        store = DiskStore(
            config.cache.dir / "blocks",
            capacity=config.cache.disk,
            block_size=config.cache.block_size,
            stats=stats,
        )
        await stack.enter_async_context(running(store))  # a service: writes what is queued when closed
    return store


async def _build_fs(
    request: MountRequest, engine: Engine, store: DiskStore | None, services: ServiceNursery
) -> VideoFS:
    """The block cache and VideoFS, whose background work runs as supervised tasks. Both were written
    against a nursery and only call its `start_soon`, which a `TaskGuard` provides."""
    config, stats, tree = request.config, engine.stats, engine.tree
    shared = engine.fleet.blocks if engine.fleet is not None else None  # vidfs.fleet
    cache = BlockCache(
        memory_bytes=config.cache.memory,
        block_size=config.cache.block_size,
        nursery=services.tasks("block-fetch"),
        stats=stats,
        store=store,
        shared=shared,
        max_streams=config.http.max_connections_per_host,
        **({} if shared is None else {"max_request": shared.run_bytes}),  # a run is a group: one MGET
    )
    fs = VideoFS(
        tree=tree,
        cache=cache,
        http=engine.http,
        resolver=engine.resolver,
        stats=stats,
        nursery=services.tasks("container-warmup"),
        readahead_max=config.cache.readahead_max,
        store=store,
    )
    if request.subtree:
        with trio.fail_after(config.mount.request_timeout):
            node = await tree.resolve_path(request.subtree)
        if not node.is_dir:
            raise UsageError(f"--subtree {request.subtree}: not a directory")
        tree.pin(node)
        fs.root_inode = node.inode
    return fs


async def _mount_and_serve(
    request: MountRequest,
    fs: VideoFS,
    stop: StopSignals,
    on_ready: Callable[[str], None] | None,
    tasks: Spawner,
) -> None:
    """The kernel mount, READY, and the FUSE main loop; unmounted on the way out, whatever ended it."""
    # Again: another mount may have been made there while we started.
    for cleaned in claim_mountpoint(request.mountpoint):
        log.warning("%s", cleaned)

    async def raise_readahead() -> None:  # runs once the INIT reply (which sets the default) went out
        tune_readahead(request.mountpoint)

    operations = VidfsOperations(
        fs,
        request_timeout=request.config.mount.request_timeout,
        on_init=lambda: tasks.start_soon(raise_readahead),
    )
    try:
        pyfuse3.init(operations, str(request.mountpoint), fuse_options(request))
    except RuntimeError as exc:  # libfuse wrote its reason to stderr (the log) already
        raise VidfsError(f"cannot mount at {request.mountpoint}: {exc}") from None
    try:
        stop.now_serving()
        providers = len(request.config.providers)
        log.info("mounted %s at %s (%d providers)", request.config.path, request.mountpoint, providers)
        summary = f"serving {providers} provider(s) at {request.mountpoint}"
        sd_notify(f"READY=1\nSTATUS={summary}")
        if on_ready is not None:
            on_ready(summary)
        await pyfuse3.main()
    finally:
        sd_notify("STOPPING=1")
        pyfuse3.close(unmount=True)


def fuse_options(request: MountRequest) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {f"fsname={fsname(request.config)}", "subtype=vidfs", "ro", "noatime"}
    config = request.config
    allow_other = config.mount.allow_other if request.allow_other is None else request.allow_other
    if allow_other:
        options.add("allow_other")
    if request.debug_fuse:
        options.add("debug")
    return options


# ------------------------------------------------------------------------------------------ stop signals
class StopSignals:
    """SIGINT, SIGTERM and SIGHUP for the whole life of `serve`: the first one stops the start (before the
    kernel mount) or ends the FUSE main loop (after it); later ones only say that we are already stopping."""

    def __init__(self, start: trio.CancelScope) -> None:
        self._start = start
        self.mounted = False
        self.received: str | None = None

    def now_serving(self) -> None:
        """The kernel mount exists: from now on a signal ends the main loop instead of the start."""
        self.mounted = True
        if self.received is not None:  # it came while pyfuse3.init ran: end the loop before it begins
            pyfuse3.terminate()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:  # until `serve` ends (cancelled)
                name = signal.Signals(signum).name
                if self.received is not None:
                    log.debug("received %s again: already stopping", name)
                    continue
                self.received = name
                if self.mounted:
                    log.info("received %s: unmounting", name)
                    pyfuse3.terminate()
                else:
                    log.info("received %s before the mount was ready: stopping", name)
                    self._start.cancel()


@asynccontextmanager
async def watch_stop_signals() -> AsyncIterator[StopSignals]:
    async with trio.open_nursery() as nursery:
        stop = StopSignals(nursery.cancel_scope)
        await nursery.start(stop.watch)
        try:
            yield stop
        finally:
            nursery.cancel_scope.cancel()


def ignore_stop_signals() -> None:
    """Before and after `serve` there is nothing to stop: a stop signal then (one sent while the last parts
    close, or just before the process exits) must not kill the process or raise KeyboardInterrupt. `serve`
    watches them itself, and trio restores these dispositions when it stops watching."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
