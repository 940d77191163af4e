"""The daemon's control socket: a private unix socket for `vidfs stats` and `vidfs prefetch --pin`.

One JSON object per line in each direction. Requests: `{"op": "stats"}`, `{"op": "pin", "path": P}`,
`{"op": "unpin", "path": P}` with P relative to the mount root. The socket lives in the cache dir
(mode 0600, so only the mounting user can talk to it) and its path is published on the mount root as
the xattr `user.vidfs.control`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import trio

from vidfs.errors import NotFoundError, VidfsError
from vidfs.fs.videofs import VideoFS
from vidfs.io.remote_file import FileKey

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes, NUL included


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


class ControlServer:
    def __init__(self, fs: VideoFS, path: Path) -> None:
        self.fs = fs
        self.path = path

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.parent.stat().st_uid != os.getuid():
                raise OSError(f"{self.path.parent} belongs to another user")
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            old_umask = os.umask(0o177)
            try:
                await listener.bind(str(self.path))
            finally:
                os.umask(old_umask)
            listener.listen(16)
        except OSError as exc:
            # The mount works without it; only `vidfs prefetch --pin` needs the socket.
            log.warning("no control socket (%s): pinning is unavailable for this mount", exc)
            listener.close()
            task_status.started()
            return
        self.fs.control_path = str(self.path)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await listener.accept()
                    nursery.start_soon(self._handle, conn)
        finally:
            listener.close()
            try:
                self.path.unlink()
            except OSError:
                pass

    async def _handle(self, conn: trio.socket.SocketType) -> None:
        with conn:
            buffer = b""
            while b"\n" not in buffer and len(buffer) < MAX_REQUEST:
                chunk = await conn.recv(65536)
                if not chunk:
                    break
                buffer += chunk
            try:
                request = json.loads(buffer.decode() or "{}")
                with trio.fail_after(self.fs_timeout):
                    answer = await self._answer(request)
            except (ValueError, VidfsError, trio.TooSlowError) as exc:
                answer = {"ok": False, "error": str(exc) or type(exc).__name__}
            payload = memoryview(json.dumps(answer).encode() + b"\n")
            while payload:
                sent = await conn.send(payload)
                payload = payload[sent:]

    @property
    def fs_timeout(self) -> float:
        return 60.0

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "stats":
            return {"ok": True, "stats": self.fs.stats_document()}
        if op in ("pin", "unpin"):
            store = self.fs.store
            if store is None:
                return {"ok": False, "error": "the disk cache is off: nothing can be pinned"}
            node = await self._node(str(request.get("path", "")))
            video = node.video
            assert node.instance is not None
            key = FileKey(node.instance, video.remote_id, video.fingerprint)
            (store.pin if op == "pin" else store.unpin)(key)
            return {"ok": True, "size": node.size}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _node(self, path: str):  # type: ignore[no-untyped-def]
        node = self.fs.tree.get(self.fs.root_inode)
        for part in [p for p in path.split("/") if p]:
            node = await self.fs.tree.lookup(node.inode, part)
        if node.is_dir:
            raise NotFoundError(f"{path}: a directory (pin its files)")
        return node
