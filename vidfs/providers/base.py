"""The provider protocol: one vendor API as a tree of folders and videos.

A provider knows nothing of FUSE, inodes or caches. It lists one folder at a time and tells where a video's
bytes are (a `StreamLease`). Login and token renewal live inside the provider, on the shared http client.

Adding a vendor = its provider module here (with a module-level `SPEC`: the registry finds it by scanning
this package) + its emulator module in `vidfs.emulator` (with `create_site` and `CONTRACT`). Nothing else is
registered anywhere. `ProviderBase` holds what every vendor class shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from vidfs.config.types import Secret
from vidfs.model import Folder, Listing, StreamLease, Video

if TYPE_CHECKING:
    from vidfs.config.types import ProviderConfig
    from vidfs.http.client import HttpClient
    from vidfs.tasks import Spawner


class Provider(Protocol):
    """What the engine needs from a vendor module."""

    def root(self) -> Folder:
        """The folder shown as `/<instance name>` at the mount root."""
        ...

    async def list(self, folder: Folder) -> Listing:
        """One directory's children (files and folders) and the items that are not files."""
        ...

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        """Where the bytes are, until when. `previous` is the lease the storage just refused (401, 403, 404
        or 410: see `vidfs.http.policy`): the provider then renews what it must (token, signed URL)."""
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
    """One config key of a provider table: its type(s), whether it must be given, whether it is a secret
    (env:/file:/credential: references allowed, never shown), and the value it takes when absent."""

    kind: type | tuple[type, ...]
    required: bool = False
    secret: bool = False
    default: Any = None


@dataclass(frozen=True)
class ProviderSpec:
    """A vendor module's `SPEC`: the config `type` it answers to, its keys, and how to build it."""

    type: str
    options: Mapping[str, OptionSpec]
    factory: Callable[[ProviderConfig, ProviderContext], Provider]


BASE_URL = OptionSpec(str, required=True)  # every vendor's API root


def login_options(user_key: str) -> dict[str, OptionSpec]:
    """The keys of a vendor that logs in with a user name (called `user_key` there) and a password."""
    return {
        "base_url": BASE_URL,
        user_key: OptionSpec(str, required=True),
        "password": OptionSpec(str, required=True, secret=True),
    }


class ProviderBase:
    """What every vendor class shares: its instance name, the shared http client, its logger, the tag its
    API calls are counted under, where its config table is (for error messages), its root folder (whose id
    the class names: `class MyProvider(ProviderBase, root_id="my:root")`)."""

    root_id: ClassVar[str] = ""
    # API calls one listing asks at once (a listing that fans out says so): the listing cache runs fewer
    # such listings at once, so a walker's readahead does not queue them all on the API window together
    # (`vidfs.catalog.listings.LISTING_CALLS_AT_ONCE`).
    listing_calls: int = 1

    def __init_subclass__(cls, *, root_id: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.root_id = root_id

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        self.instance = context.instance
        self._http = context.http
        self._log = context.log
        self._tag = f"{self.instance}:api"
        self._where = f"{config.source}: [providers.{config.name}]"
        self._options = config.options
        self._background: Spawner | None = None

    def attach(self, spawner: Spawner) -> None:
        """Where work that may outlive the call that began it runs (the engine's supervised tasks, while
        serving). Without it (tests, one-shot commands) that work is done before the call returns."""
        self._background = spawner

    def _secret(self, key: str) -> str:
        """A secret option's text (a plain string in tests that build configs by hand)."""
        value = self._options[key]
        return value.reveal() if isinstance(value, Secret) else str(value)

    def root(self) -> Folder:
        return Folder(self.root_id, self.instance)

    async def aclose(self) -> None:
        return None
