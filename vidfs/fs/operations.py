"""pyfuse3.Operations for vidfs: translation only.

Each handler turns FUSE arguments into a call on `VideoFS`, and its answer (or exception) back into pyfuse3
types. No caching and no HTTP here. Every handler runs under the mount's request timeout, so a stuck remote
becomes EIO instead of a hung `ls`; exceptions become errnos in one place (`errors.to_errno`). Write-type
calls are refused with EROFS (the mount is also `ro`, so the kernel usually refuses them first).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn

import pyfuse3
import trio

from vidfs.errors import VidfsError, leaf_error, log_level, to_errno
from vidfs.fs.nodes import DIR_MODE
from vidfs.fs.videofs import Attributes, VideoFS
from vidfs.tasks import Progress

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT


# How long the kernel may keep a name and its attributes without asking us (readdirplus hands them over with
# every listing). Long enough that a walker's lstat after a readdir never comes back to the daemon: with 1 s,
# `find` over 100,000 entries took 16.8 s cold and 7.7 s after a remount (each entry looked up again once
# its second was over); with 10 s, 11.0 s and 2.1 s. A listing's own freshness is `metadata_ttl`;
# `vidfs refresh` drops the kernel's copies at once.
KERNEL_TTL = 10.0
# The only xattr namespace we have. Another name (`security.selinux`, `system.posix_acl_access`, ...) is
# "not supported", not "no such attribute": `ls -l` asks both of every file, and coreutils stops asking for
# a device once one of them answered ENOTSUP. With ENODATA, a warm `ls -lR` of 100,000 videos made 200,000
# GETXATTR requests (10.1-11.1 s, 8.9 s of the daemon's CPU, where the same walk with lstat took 0.7 s).
USER_NAMESPACE = b"user."
# Every listing starts with these, as on a local file system: `ls -a` shows them, and programs that look for
# "." in a listing (KDE's KIO once did, to decide whether pasting there is allowed; xfstests generic/401
# checks for both) find it. rclone's and httpdirfs's mounts list them too.
DOTS = (b".", b"..")
# A wait that keeps progressing (see `_answer`) ends after this many request timeouts in all.
PROGRESS_TIMEOUTS = 10


class VidfsOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self, fs: VideoFS, *, request_timeout: float, on_init: Callable[[], None] | None = None
    ) -> None:
        super().__init__()
        self.fs = fs
        self.request_timeout = request_timeout
        self._on_init = on_init
        self._logged: set[str] = set()

    def init(self) -> None:
        """The kernel's INIT arrived; its reply goes out when this returns (see `vidfs.daemon.mountpoint`)."""
        if self._on_init is not None:
            self._on_init()

    # --------------------------------------------------------------------------------- translation
    @asynccontextmanager
    async def _answer(self, what: str) -> AsyncIterator[Progress]:
        """For a handler that may wait (on a listing, a fetch): bounded by `request_timeout`. Work that
        reports its steps (a listing, an API answer each) is given the callable this yields:
        `request_timeout` then runs from the last step, not from the start, up to PROGRESS_TIMEOUTS of them
        in all. A listing of thousands of pages or calls takes longer than one `request_timeout` on a slow
        machine, and a walker got EIO while it was nearly done; a stuck one still fails after
        `request_timeout`."""
        timeout = self.request_timeout
        try:
            with trio.fail_after(timeout) as scope:
                latest = scope.deadline + (PROGRESS_TIMEOUTS - 1) * timeout

                def progressed() -> None:
                    scope.deadline = min(trio.current_time() + timeout, latest)

                yield progressed
        except BaseException as exc:  # translated, or raised again, by _translate
            self._translate(what, exc)

    @contextmanager
    def _answer_now(self, what: str) -> Iterator[None]:
        """For a handler that never waits (`readdir` pages through a snapshot, `getattr` reads a node): no
        deadline to arm, which was a sixth of the daemon's CPU in a warm walk of 10,000 directories."""
        try:
            yield
        except BaseException as exc:  # translated, or raised again, by _translate
            self._translate(what, exc)

    def _translate(self, what: str, exc: BaseException) -> NoReturn:
        """Raise what the kernel gets for `exc`: its errno (logged once), or `exc` itself if it must pass."""
        if isinstance(exc, pyfuse3.FUSEError):
            raise exc
        if isinstance(exc, trio.TooSlowError):
            self._log_once(logging.WARNING, f"{what}: no answer within {self.request_timeout:g}s")
            raise self._failure(errno.EIO) from None
        if isinstance(exc, VidfsError | BaseExceptionGroup):  # a group: concurrent tasks failed
            if isinstance(exc, BaseExceptionGroup) and exc.subgroup(_stop) is not None:
                raise exc  # being torn down: never an errno
            leaf = leaf_error(exc)
            if isinstance(leaf, trio.TooSlowError):
                self._log_once(logging.WARNING, f"{what}: no answer within {self.request_timeout:g}s")
                raise self._failure(errno.EIO) from None
            if not isinstance(leaf, VidfsError):
                log.error("%s: unexpected error", what, exc_info=leaf)
            self._log_once(log_level(leaf), f"{what}: {leaf}")
            raise self._failure(to_errno(leaf)) from None
        if isinstance(exc, Exception):
            log.exception("%s: unexpected error", what, exc_info=exc)
            raise self._failure(errno.EIO) from None
        raise exc  # Cancelled, KeyboardInterrupt, ...

    def _failure(self, code: int) -> pyfuse3.FUSEError:
        """The errno a caller gets, counted by name (`fuse.errors.EIO`: the metrics' errors by errno)."""
        self.fs.stats.incr(f"fuse.errors.{errno.errorcode.get(code, str(code))}")
        return pyfuse3.FUSEError(code)

    def _log_once(self, level: int, message: str) -> None:
        # One line per distinct failure: a player retrying a broken read must not flood the journal.
        if not log.isEnabledFor(level) or message in self._logged:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged.add(message)
        log.log(level, "%s", message)

    def _entry(self, attrs: Attributes) -> pyfuse3.EntryAttributes:
        entry = _new_entry()
        _fill(entry, attrs)
        return entry

    # ---------------------------------------------------------------------------------- namespace
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        async with self._answer(f"lookup {name!r}") as progress:
            node = await self.fs.lookup(parent_inode, os.fsdecode(name), progress=progress)
            entry = self._entry(self.fs.attributes(node))
            self.fs.remember(node)
            return entry

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        with self._answer_now("getattr"):
            attrs = self.fs.getattr(inode)
        if attrs.size >= 0:
            return self._entry(attrs)
        self.fs.stats.incr("fuse.getattr_unsized")  # its readdir gave no size: a request per file
        async with self._answer("getattr") as progress:  # a size to learn from storage first
            return self._entry(await self.fs.getattr_sized(inode, progress=progress))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # No reply to give and nothing may escape: pyfuse3 ends its main loop on any exception but FUSEError.
        with _never_raises("forget"):
            for inode, count in inode_list:
                self.fs.forget(inode, count)

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        with self._answer_now("opendir"):
            fh = self.fs.opendir_now(inode)
        if fh is not None:
            return fh
        async with self._answer("opendir") as progress:
            return await self.fs.opendir(inode, progress=progress)

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        # One EntryAttributes for the whole reply: `readdir_reply` copies it into the kernel's buffer.
        # Positions 0 and 1 are "." and ".." (see `DOTS`), the children's start at 2.
        entry = _new_entry()
        attributes, remember = self.fs.attributes, self.fs.remember
        with self._answer_now("readdir"):
            directory = self.fs.readdir(fh)
            if start_id < len(DOTS) and not _reply_dots(token, entry, directory.dots, start_id):
                return
            first = max(start_id, len(DOTS))
            for position, node in enumerate(directory.children_from(first - len(DOTS)), first + 1):
                _fill(entry, attributes(node))
                if not pyfuse3.readdir_reply(token, node.name.encode(*_FS_CODEC), entry, position):
                    return
                remember(node)  # readdirplus: the kernel now holds a lookup of it

    async def releasedir(self, fh: int) -> None:
        with _never_raises("releasedir"):
            self.fs.releasedir(fh)

    # ------------------------------------------------------------------------------------ file data
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        async with self._answer("open"):
            fh, keep_cache = await self.fs.open(inode)
            return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=False)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # A view is as good as bytes to pyfuse3 (it takes any contiguous buffer): see `vidfs.io.reply_buffer`.
        async with self._answer("read"), self.fs.stats.timed("fuse.read"):
            return await self.fs.read(fh, off, size)

    async def release(self, fh: int) -> None:
        with _never_raises("release"):
            self.fs.release(fh)

    async def flush(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        with self._answer_now("statfs"):
            info = self.fs.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = info["block_size"]
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = info["files"]
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # --------------------------------------------------------------------------------------- xattrs
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if not name.startswith(USER_NAMESPACE):
            self.fs.stats.incr("xattr.unsupported")
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        with self._answer_now("getxattr"):
            value = self.fs.xattr(inode, os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode()

    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        with self._answer_now("listxattr"):
            return [name.encode() for name in sorted(self.fs.xattrs(inode))]

    # ---------------------------------------------------------------------------- read-only refusals
    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = _refuse
    setxattr = _refuse
    removexattr = _refuse
    mknod = _refuse
    mkdir = _refuse
    unlink = _refuse
    rmdir = _refuse
    symlink = _refuse
    rename = _refuse
    link = _refuse
    write = _refuse
    create = _refuse

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None  # nothing is ever dirty

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None


# `os.fsencode`'s codec, called directly: it is a Python function of three calls, once per entry of a readdir.
_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _reply_dots(token: Any, entry: pyfuse3.EntryAttributes, inodes: tuple[int, int], start_id: int) -> bool:
    """Reply "." and ".." from position `start_id` on; False once the kernel's buffer is full. The kernel
    reads only their inode and type (`DIR_MODE`) and takes no lookup of them, so they are not remembered."""
    entry.st_mode = DIR_MODE
    for position, (name, inode) in enumerate(zip(DOTS, inodes, strict=True), 1):
        if position > start_id:
            entry.st_ino = inode
            if not pyfuse3.readdir_reply(token, name, entry, position):
                return False
    return True


def _new_entry() -> pyfuse3.EntryAttributes:
    """An entry for `_fill`: what it never sets, set."""
    entry = pyfuse3.EntryAttributes()
    entry.generation = 0
    entry.entry_timeout = KERNEL_TTL
    return entry


def _fill(entry: pyfuse3.EntryAttributes, attrs: Attributes) -> None:
    """Set what `attrs` says on `entry`; its `generation` and `entry_timeout` are left as they are."""
    inode, mode, size, mtime, nlink, uid, gid, block_size = attrs
    entry.st_ino = inode
    entry.st_mode = mode
    entry.st_nlink = nlink
    entry.st_uid = uid
    entry.st_gid = gid
    entry.st_blksize = block_size
    entry.st_mtime_ns = entry.st_ctime_ns = entry.st_atime_ns = int(mtime * 1e9)
    if size < 0:  # not known yet (a readdirplus entry): the kernel asks `getattr` before any use
        entry.st_size = entry.st_blocks = 0
        entry.attr_timeout = 0
    else:
        entry.st_size = size
        entry.st_blocks = (size + 511) // 512
        entry.attr_timeout = KERNEL_TTL


def _stop(exc: BaseException) -> bool:
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


@contextmanager
def _never_raises(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception("%s: unexpected error", what)
