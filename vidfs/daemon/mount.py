"""Build everything a mount needs, run pyfuse3's main loop, and tear it all down.

Order matters: the http client and providers live in an AsyncExitStack around one nursery (background
fetches); pyfuse3 runs inside it. SIGINT/SIGTERM, or an external `fusermount3 -u`, end the main loop; the
filesystem is unmounted and every provider closed before we return.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from vidfs.catalog.snapshot import SnapshotKeeper
from vidfs.config.types import Config
from vidfs.daemon.control import ControlServer, socket_path
from vidfs.engine import open_engine
from vidfs.errors import UsageError
from vidfs.fs.operations import VidfsOperations
from vidfs.fs.videofs import VideoFS
from vidfs.io.block_cache import BlockCache
from vidfs.io.disk_store import DiskStore
from vidfs.stats import Stats

log = logging.getLogger(__name__)


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
    config = request.config
    stats = Stats()
    mountpoint = request.mountpoint
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {mountpoint} is not a directory")
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(open_engine(config, stats))
        http, providers, resolver, metadata, tree = (
            engine.http,
            engine.providers,
            engine.resolver,
            engine.metadata,
            engine.tree,
        )
        keeper = SnapshotKeeper(metadata, config.cache.dir / "meta", list(providers))
        loaded = await trio.to_thread.run_sync(keeper.load)
        log.info("listing snapshot: %d cached directories loaded", loaded)
        store = None
        if config.cache.disk > 0:
            store = DiskStore(
                config.cache.dir / "blocks",
                capacity=config.cache.disk,
                block_size=config.cache.block_size,
                stats=stats,
            )
            await store.open()
            stack.push_async_callback(store.aclose)
        async with trio.open_nursery() as background:
            background.start_soon(keeper.run)
            cache = BlockCache(
                memory_bytes=config.cache.memory,
                block_size=config.cache.block_size,
                nursery=background,
                stats=stats,
                store=store,
            )
            fs = VideoFS(
                tree=tree,
                cache=cache,
                http=http,
                resolver=resolver,
                stats=stats,
                nursery=background,
                readahead_max=config.cache.readahead_max,
                store=store,
            )
            if request.subtree:
                with trio.fail_after(config.mount.request_timeout):
                    node = await tree.resolve_path(request.subtree)
                if not node.is_dir:
                    raise UsageError(f"--subtree {request.subtree}: not a directory")
                fs.root_inode = node.inode
            await background.start(ControlServer(fs, socket_path(config.cache.dir, mountpoint)).serve)
            operations = VidfsOperations(fs, request_timeout=config.mount.request_timeout)
            options = set(pyfuse3.default_options)
            options |= {f"fsname={fsname(config)}", "subtype=vidfs", "ro", "noatime"}
            allow_other = config.mount.allow_other if request.allow_other is None else request.allow_other
            if allow_other:
                options.add("allow_other")
            if request.debug_fuse:
                options.add("debug")
            pyfuse3.init(operations, str(mountpoint), options)
            log.info("mounted %s at %s (%d providers)", config.path, mountpoint, len(providers))
            try:
                async with trio.open_nursery() as loop:
                    loop.start_soon(_stop_on_signal)
                    summary = f"serving {len(providers)} provider(s) at {mountpoint}"
                    sd_notify(f"READY=1\nSTATUS={summary}")
                    if on_ready is not None:
                        on_ready(summary)
                    await pyfuse3.main()
                    loop.cancel_scope.cancel()
            finally:
                sd_notify("STOPPING=1")
                pyfuse3.close(unmount=True)
                background.cancel_scope.cancel()
    log.info("unmounted %s", mountpoint)


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
