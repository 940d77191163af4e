"""Provider-neutral types: what a provider tells us about a remote catalog.

Everything here is a small frozen value. Providers build them; the tree, the caches and the FUSE layer read
them. Nothing in this module knows about FUSE, inodes or HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


def frozen_extra(values: Mapping[str, object | None]) -> Mapping[str, str]:
    """xattr-ready metadata: drop empty values, stringify the rest, freeze."""
    out = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True, slots=True)
class Folder:
    """A directory of a provider. `remote_id` is unique within its provider instance."""

    remote_id: str
    name: str
    mtime: float | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)


@dataclass(frozen=True, slots=True)
class Video:
    """A file of a provider: one remote video.

    `size` may be None when the API does not tell it; the engine then learns it with a HEAD.
    `etag` (or, lacking it, size + mtime) is the fingerprint every cached block is keyed by.
    `handle` is opaque provider data needed to resolve the download (never shown to users).
    """

    remote_id: str
    name: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    content_type: str | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)
    handle: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)

    @property
    def fingerprint(self) -> str:
        if self.etag:
            return f"etag:{self.etag}"
        return f"sm:{self.size}:{self.mtime}"


Entry = Folder | Video


@dataclass(frozen=True, slots=True)
class Listing:
    """One directory's children plus the items that are not (yet) files, for `vidfs ls`."""

    entries: tuple[Entry, ...]
    hidden: tuple[HiddenItem, ...] = ()


@dataclass(frozen=True, slots=True)
class HiddenItem:
    """A remote item that is not shown as a file (rendering, not uploaded, deleted), with its status."""

    remote_id: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class StreamLease:
    """Where a video's bytes are, and until when.

    `headers` are sent only to `url`'s own origin (credentials never follow a redirect to another host).
    `expires_at` is a `time.time()` instant, or None when the URL does not expire.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    expires_at: float | None = None
    # The provider may mark its own credentials so that the resolver knows a 401 means "log in again".
    uses_provider_auth: bool = False
