"""The daemon's control socket: a private unix socket for `vidfs stats`, `vidfs prefetch --pin` and
`vidfs refresh`.

Protocol
--------
One JSON object per line in each direction. Requests: `{"op": "stats"}`, `{"op": "pin", "path": P}`,
`{"op": "unpin", "path": P}`, `{"op": "refresh", "path": P, "recursive": false}` with P relative to the
mount root. Every answer has `"ok"`; a refusal has `"error"`. The socket lives in the cache dir (mode 0600,
so only the mounting user can talk to it) and its path is published on the mount root as the xattr
`user.vidfs.control`.

Refresh
-------
`refresh` drops the cached listing of the directory P (P "" or the mount root: every cached listing; with
`recursive`, every cached listing below P too, found by walking the cached listings themselves), so that the
next access of each waits for a fresh listing from the vendor instead of being answered from the cache
(`ListingCache.invalidate`). The kernel's own caches would still show the old state for up to a second
(entry and attribute timeouts): the names the kernel holds in those directories are invalidated in it too
(`pyfuse3.invalidate_entry`, in a worker thread: it waits for requests on those names, which this loop
answers), so the change is visible as soon as the answer `{"ok": true, "listings": N, "entries": M}` is.
The names go to the thread `FORGET_BATCH` at a time, each batch made as it is sent, and the folders are
kept as sets of ids per provider: a refresh of everything in a mount of 100,000 VALT records (101,013
listings, 200,000 names) made every (instance, folder) key and (inode, name) pair at once, and the daemon's
RSS leapt from 224 to 270 MiB, the peak of its whole catalog bench; now to 239 MiB.

No client can harm the mount
----------------------------
The server is a supervised service and each connection a supervised task (`vidfs.daemon.supervisor`), and
the handler itself expects the ways a client misbehaves, answers them, and counts them (`control.*` in
`vidfs stats`, the first of each kind logged at info level):

- the request is read up to its newline, but never more than `MAX_REQUEST` bytes (a 4 MiB line is refused
  after 64 KiB: `too_long`) and never for longer than `REQUEST_DEADLINE` (a client that connects and sends
  nothing is answered and dropped: `silent`);
- anything but one JSON object is refused (`bad_requests`);
- finding the answer is bounded by `ANSWER_DEADLINE`, sending it by `SEND_DEADLINE` (a client that never
  reads cannot hold a connection either: `send_timeouts`);
- a client that left before its answer (`BrokenPipeError`, `ConnectionResetError`; trio's
  `BrokenResourceError`) is simply gone (`client_gone`);
- at most `MAX_CONNECTIONS` connections are served at once; more wait in the listen backlog (the accept
  loop waits for a free slot), so a crowd costs bounded memory and file descriptors;
- an unexpected error while answering is answered as an internal error and reported to the supervisor
  (logged once with its traceback, counted under `services.control-connection.failures`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from vidfs.daemon.supervisor import Supervisor
from vidfs.errors import NotDirectoryError, NotFoundError, VidfsError
from vidfs.fs.tree import Node, Tree
from vidfs.fs.videofs import VideoFS
from vidfs.io.remote_file import FileKey
from vidfs.model import Folder

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # bytes of one request line
MAX_CONNECTIONS = 32  # served at once
BACKLOG = 128
REQUEST_DEADLINE = 5.0  # seconds from accept to the request's newline (or EOF)
ANSWER_DEADLINE = 60.0  # a pin may list a few directories
SEND_DEADLINE = 10.0
FORGET_BATCH = 1024  # names dropped from the kernel's cache per worker-thread call
ACCEPT_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY = 0.5  # after one of those from accept: wait for descriptors or memory to be freed
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes, NUL included
CONNECTION_TASKS = "control-connection"


def socket_path(cache_dir: Path, mountpoint: Path) -> Path:
    """Named by a hash of the mount point, in the cache dir; when that path is too long for a unix socket,
    in `$XDG_RUNTIME_DIR/vidfs` or a private `/tmp/vidfs-<uid>` instead."""
    name = f"{hashlib.sha256(str(mountpoint).encode()).hexdigest()[:16]}.sock"
    candidates = [cache_dir / "control"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        candidates.append(Path(runtime) / "vidfs")
    candidates.append(Path(f"/tmp/vidfs-{os.getuid()}"))
    for directory in candidates:
        if len(os.fsencode(directory / name)) <= MAX_SOCKET_PATH:
            return directory / name
    return candidates[-1] / name


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that cannot be answered as asked: the counter it is counted under, and what to say."""

    kind: str
    message: str


class ControlServer:
    def __init__(self, fs: VideoFS, path: Path, supervisor: Supervisor) -> None:
        self.fs = fs
        self.path = path
        self.supervisor = supervisor
        self.stats = supervisor.stats
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._noted: set[str] = set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            listener = await self._listen()
        except OSError as exc:
            # The mount works without it; only `vidfs stats` over the socket and `prefetch --pin` need it.
            log.warning("no control socket (%s): pinning is unavailable for this mount", exc)
            task_status.started()
            return
        self.fs.control_path = str(self.path)
        task_status.started()
        try:
            async with listener, trio.open_nursery() as nursery:
                connections = self.supervisor.bind(nursery).tasks(CONNECTION_TASKS)
                while True:  # until cancelled; each pass waits for a free slot, then for a client
                    stream = await self._accept(listener)
                    if stream is not None:
                        connections.start_soon(self._connection, stream)
        finally:
            self.fs.control_path = None
            try:
                self.path.unlink()
            except OSError:
                pass

    async def _listen(self) -> trio.SocketListener:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.parent.stat().st_uid != os.getuid():
            raise OSError(f"{self.path.parent} belongs to another user")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                await sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return trio.SocketListener(sock)

    async def _accept(self, listener: trio.SocketListener) -> trio.SocketStream | None:
        """The next client, holding one of the slots (its task gives it back); None after a passing
        shortage of file descriptors or memory, which is waited out rather than ending the server."""
        await self._slots.acquire()
        try:
            return await listener.accept()
        except BaseException as exc:
            self._slots.release()
            if not (isinstance(exc, OSError) and exc.errno in ACCEPT_SHORTAGES):
                raise
            self._refused(Refusal("accept_errors", f"cannot accept a connection: {exc.strerror}"))
        await trio.sleep(ACCEPT_RETRY)
        return None

    # ---------------------------------------------------------------------------------- a connection
    async def _connection(self, stream: trio.SocketStream) -> None:
        self.stats.incr("control.connections")
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._refused(Refusal("client_gone", "a client left before its answer"))
        finally:
            self._slots.release()

    async def _converse(self, stream: trio.SocketStream) -> None:
        request = await self._read_request(stream)
        if isinstance(request, Refusal):
            self._refused(request)
            answer = {"ok": False, "error": request.message}
        else:
            answer = await self._respond(request)
        payload = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        with trio.move_on_after(SEND_DEADLINE) as sending:
            await stream.send_all(payload)
        if sending.cancelled_caught:
            late = Refusal("send_timeouts", f"a client did not take its answer in {SEND_DEADLINE:g} s")
            self._refused(late)
            return
        self.stats.incr("control.answered")

    async def _read_request(self, stream: trio.SocketStream) -> dict[str, Any] | Refusal:
        """The first line (or everything up to EOF), bounded in bytes and time, as a JSON object."""
        buffer = bytearray()
        with trio.move_on_after(REQUEST_DEADLINE):
            while len(buffer) <= MAX_REQUEST:  # each pass adds at least one byte or returns
                chunk = await stream.receive_some(MAX_REQUEST + 1 - len(buffer))
                if not chunk or b"\n" in chunk:
                    buffer += chunk
                    return _parse(bytes(buffer).partition(b"\n")[0])
                buffer += chunk
            return Refusal("too_long", f"a request is at most {MAX_REQUEST} bytes")
        return Refusal("silent", f"no request within {REQUEST_DEADLINE:g} s")

    async def _respond(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with trio.fail_after(ANSWER_DEADLINE):
                return await self._answer(request)
        except (VidfsError, trio.TooSlowError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        except Exception as exc:
            self.supervisor.report(CONNECTION_TASKS, exc, action="answered as an internal error")
            return {"ok": False, "error": f"internal error ({type(exc).__name__}); see the mount's log"}

    def _refused(self, refusal: Refusal) -> None:
        self.stats.incr(f"control.{refusal.kind}")
        self._note(refusal.kind, refusal.message)

    def _note(self, kind: str, message: str) -> None:
        """The first of each kind at info level (with where it is counted), the rest at debug level."""
        if kind in self._noted:
            log.debug("control socket: %s", message)
            return
        self._noted.add(kind)
        log.info("control socket: %s (counted in control.%s; not logged again)", message, kind)

    # ------------------------------------------------------------------------------------- answers
    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "stats":
            return {"ok": True, "stats": self.fs.stats_document()}
        if op in ("pin", "unpin"):
            store = self.fs.store
            if store is None:
                return {"ok": False, "error": "the disk cache is off: nothing can be pinned"}
            path = request.get("path")
            if not isinstance(path, str):
                return {"ok": False, "error": "pin and unpin need a path (a string)"}
            node = await self.fs.tree.sized(await self._node(path))
            video = node.video
            assert node.instance is not None
            key = FileKey(node.instance, video.remote_id, video.fingerprint)
            (store.pin if op == "pin" else store.unpin)(key)
            return {"ok": True, "size": node.size}
        if op == "refresh":
            return await self._refresh(request)
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _walk(self, path: str) -> Node:
        """The node at `path`. The tree looks names up only in directories it holds (those the kernel knows):
        the ones on the way that it does not hold are held while they are looked into, then let go."""
        tree = self.fs.tree
        node = tree.get(self.fs.root_inode)
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise NotFoundError(f"{path}: a path inside the mount, without '..'")
        held: list[Node] = []
        try:
            for part in parts:
                if node.inode not in tree.nodes:
                    tree.remember(node, 0)
                    held.append(node)
                node = await tree.lookup(node.inode, part)
        finally:
            for directory in reversed(held):
                tree.forget(directory.inode, 0)  # leaves the table unless the kernel took it meanwhile
        return node

    async def _node(self, path: str) -> Node:
        node = await self._walk(path)
        if node.is_dir:
            raise NotFoundError(f"{path}: a directory (pin its files)")
        return node

    async def _refresh(self, request: dict[str, Any]) -> dict[str, Any]:
        path, recursive = request.get("path", ""), request.get("recursive", False)
        if not isinstance(path, str) or not isinstance(recursive, bool):
            return {"ok": False, "error": "refresh takes a path (a string) and recursive (true or false)"}
        node = await self._walk(path)
        if not node.is_dir:
            raise NotDirectoryError(f"{path}: not a directory (refresh the directory that holds it)")
        tree = self.fs.tree
        everything = node.inode == self.fs.root_inode  # the mount root (or the --subtree root)
        folders = cached_folders(tree, node, recursive=recursive or everything)
        for instance, folder_ids in folders.items():
            for folder_id in folder_ids:
                tree.listings.invalidate(instance, folder_id)
        dropped = sum(len(folder_ids) for folder_ids in folders.values())
        directories, inside = self._kernel_view(folders)
        forgotten = 0
        for start in range(0, len(inside), FORGET_BATCH):
            names = [
                (self.fs.to_fuse_inode(n.parent), os.fsencode(n.name))
                for n in inside[start : start + FORGET_BATCH]
            ]
            forgotten += await trio.to_thread.run_sync(forget_names, names, abandon_on_cancel=True)
        await trio.to_thread.run_sync(forget_attributes, directories, abandon_on_cancel=True)
        self.stats.incr("refresh.requests")
        self.stats.incr("refresh.listings", dropped)
        log.info("refresh of /%s: %d listings dropped", path.strip("/"), dropped)
        return {"ok": True, "listings": dropped, "entries": forgotten}

    def _kernel_view(self, folders: dict[str, set[str]]) -> tuple[list[int], list[Node]]:
        """The kernel's inodes of those directories and the nodes it may hold names of in them."""
        nodes = list(self.fs.tree.nodes.values())
        directories = {
            n.inode
            for n in nodes
            if isinstance(n.entry, Folder)
            and n.instance is not None
            and n.entry.remote_id in folders.get(n.instance, ())
        }
        inside = [n for n in nodes if n.parent in directories and n.inode != n.parent]
        return [self.fs.to_fuse_inode(inode) for inode in directories], inside

    def statistics(self) -> dict[str, int]:
        return {"serving": MAX_CONNECTIONS - self._slots.value, "max_connections": MAX_CONNECTIONS}


def cached_folders(tree: Tree, node: Node, *, recursive: bool) -> dict[str, set[str]]:
    """Per provider instance, the folder ids of `node`'s listing and, when `recursive`, of every cached
    listing below it (the folders named in cached listings, transitively); the mount root stands for every
    provider's root. Each cached listing is visited once, so the walk is bounded by the cache. (Sets of the
    ids the listings hold, not (instance, id) pairs and a set of them: with those, a refresh of everything
    at 100,000 VALT records peaked 7.5 MiB higher.)"""
    if node.instance is None:
        starts = [(instance, provider.root().remote_id) for instance, provider in tree.providers.items()]
    else:
        starts = [(node.instance, node.folder.remote_id)]
    found: dict[str, set[str]] = {}
    for instance, folder_id in starts:
        found.setdefault(instance, set()).add(folder_id)
    queue = list(starts) if recursive else []
    while queue:
        instance, folder_id = queue.pop()
        listing, known = tree.listings.get(instance, folder_id), found[instance]
        for entry in listing.entries if listing is not None else ():
            if isinstance(entry, Folder) and entry.remote_id not in known:
                known.add(entry.remote_id)
                queue.append((instance, entry.remote_id))
    return found


def forget_names(entries: list[tuple[int, bytes]]) -> int:
    """Drop the kernel's cached (parent inode, name) entries of refreshed directories (in a worker thread:
    each call waits for the kernel's requests on that name, which the trio loop answers). Returns the names
    dropped."""
    forgotten = 0
    for parent, name in entries:
        try:
            pyfuse3.invalidate_entry(parent, name)
            forgotten += 1
        except OSError:  # ENOENT: the kernel no longer held it
            pass
    return forgotten


def forget_attributes(directories: list[int]) -> None:
    """Drop the kernel's cached attributes of refreshed directories (in a worker thread, as above)."""
    for inode in directories:
        try:
            pyfuse3.invalidate_inode(inode, attr_only=True)
        except OSError:
            pass


def _parse(line: bytes) -> dict[str, Any] | Refusal:
    try:
        request = json.loads(line.decode())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the parser goes
        return Refusal("bad_requests", "a request is one JSON object on one line")
    if not isinstance(request, dict):
        return Refusal("bad_requests", "a request is one JSON object on one line")
    return request
