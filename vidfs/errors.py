"""The vidfs exception tree, and the one place where exceptions become errnos and log levels.

    VidfsError                      base; every class carries `errno` and `log_level`
    ├── ConfigError                 bad config file / secret (exit code 2; never reaches FUSE)
    ├── UsageError                  bad command line (exit code 2)
    ├── NotDirectoryError           a path goes through a file               → ENOTDIR  (debug)
    ├── IsDirectoryError            a directory opened as a file             → EISDIR   (debug)
    └── RemoteError                 a remote (API or storage) said no or broke
        ├── NotFoundError           404/410, vanished item, unknown name    → ENOENT   (debug)
        ├── AuthError               401/403 after one re-auth, bad password → EACCES   (warning)
        ├── StaleError              the file changed under a reader          → ESTALE   (warning)
        ├── RemoteIOError           5xx, network, protocol violations        → EIO      (warning)
        │   ├── RemoteTimeoutError  no answer within the configured time    → EIO
        │   └── UnreachableError    the host could not be reached just now  → EIO (at once)
        └── InvalidRemoteData       the API answered something we can't use → EIO      (warning)

The log level says how a failure is reported where it reaches a FUSE caller (once per distinct message):
a name that does not exist is an answer, not a failure (shells, players and file managers probe for
names all the time), so it is a DEBUG line; what a user must act on is a WARNING.

Messages never contain secrets: URLs are redacted with `redact_url()` before they go into a message.
"""

from __future__ import annotations

import errno as _errno
import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class VidfsError(Exception):
    errno: int = _errno.EIO
    log_level: int = logging.WARNING


class ConfigError(VidfsError):
    """A config problem; the message names the file, the table and the key."""

    errno = _errno.EINVAL


class UsageError(VidfsError):
    errno = _errno.EINVAL


class RemoteError(VidfsError):
    errno = _errno.EIO

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503 Retry-After)


class NotFoundError(RemoteError):
    errno = _errno.ENOENT
    log_level = logging.DEBUG


class AuthError(RemoteError):
    errno = _errno.EACCES


class StaleError(RemoteError):
    errno = _errno.ESTALE


class RemoteIOError(RemoteError):
    errno = _errno.EIO


class RemoteTimeoutError(RemoteIOError):
    errno = _errno.EIO


class UnreachableError(RemoteIOError):
    """The host failed to connect a moment ago: fail at once instead of retrying."""

    errno = _errno.EIO


class InvalidRemoteData(RemoteError):
    errno = _errno.EIO


class NotDirectoryError(VidfsError):
    """A path that goes through a file: `ls file/`, `stat file/x`."""

    errno = _errno.ENOTDIR
    log_level = logging.DEBUG


class IsDirectoryError(VidfsError):
    """A directory asked for as a file (opened for reading, pinned)."""

    errno = _errno.EISDIR
    log_level = logging.DEBUG


def leaf_error(exc: BaseException) -> BaseException:
    """The error that matters inside (nested) exception groups from concurrent tasks: the first of ours,
    else the first leaf."""
    while isinstance(exc, BaseExceptionGroup):
        ours = exc.subgroup(lambda e: isinstance(e, VidfsError))
        exc = (ours or exc).exceptions[0]
    return exc


def to_errno(exc: BaseException) -> int:
    """The single mapping from an exception to the errno a FUSE caller sees."""
    exc = leaf_error(exc)
    if isinstance(exc, VidfsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO


def log_level(exc: BaseException) -> int:
    """How loudly a failure that reaches a FUSE caller is logged."""
    exc = leaf_error(exc)
    return exc.log_level if isinstance(exc, VidfsError) else logging.ERROR


_SECRET_PARAMS = re.compile(
    r"(token|key|sig|signature|secret|password|passwd|auth|credential|x-amz-|expires|policy|jwt)", re.I
)


def redact_url(url: str) -> str:
    """A URL fit for logs: user info dropped, secret-looking query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = [(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))
