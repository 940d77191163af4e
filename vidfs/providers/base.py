"""The provider protocol: one vendor API as a tree of folders and videos.

A provider knows nothing of FUSE, inodes or caches. It lists one folder at a time and tells where a video's
bytes are (a `StreamLease`). Login and token renewal live inside the provider, on the shared http client.
Adding a vendor = one module + one line in `registry.py` + one emulator module + one contract-suite entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vidfs.model import Folder, Listing, StreamLease, Video

if TYPE_CHECKING:
    from vidfs.config.types import ProviderConfig
    from vidfs.http.client import HttpClient


class Provider(Protocol):
    """What the engine needs from a vendor module."""

    def root(self) -> Folder:
        """The folder shown as `/<instance name>` at the mount root."""
        ...

    async def list(self, folder: Folder) -> Listing:
        """One directory's children (files and folders) and the items that are not files."""
        ...

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        """Where the bytes are, until when. `previous` is the lease the storage just refused (401/403/410):
        the provider then renews what it must (token, signed URL) before answering."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ProviderContext:
    """What every provider gets from the engine."""

    instance: str  # the provider's key in the config: its directory name at the mount root
    http: HttpClient
    state_dir: Path  # persistent per-instance state (device ids, first-seen times)
    log: logging.Logger


@dataclass(frozen=True)
class OptionSpec:
    """One config key of a provider table."""

    kind: type | tuple[type, ...]
    required: bool = False
    secret: bool = False
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
class ProviderSpec:
    type: str
    options: Mapping[str, OptionSpec]
    factory: Callable[[ProviderConfig, ProviderContext], Provider]
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
