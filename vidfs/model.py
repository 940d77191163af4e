"""Provider-neutral types: what a provider tells us about a remote catalog.

Everything here is a small frozen value. Providers build them; the tree, the caches and the FUSE layer read
them. Nothing in this module knows about FUSE, inodes or HTTP.

A catalog may hold 100,000 videos, so a video is kept small: a slotted frozen dataclass whose metadata
(`extra`, `handle`) is a `FrozenMap`, two tuples of which the key tuple is shared by every map with the
same keys (a provider's entries all have the same few), about a third of a dict plus its proxy.

Values are deduplicated per key, not interned. A catalog repeats most values of some keys (a state, a camera
model, the capture each of 100,000 Cupix videos belongs to): each JSON document the API or the snapshot
gave made its own copies (a listing of 100,000 Cupix videos held 71.6 MiB, 41.9 deduplicated). Other keys
are unique per video (an archive's start and end time, its URL): `sys.intern` put each of those in the
interpreter's table of interned strings, for nothing: 14.7 MiB for 100,000 AIPIX archives (five such values
each). So each key keeps its own table of values seen, and stops looking once it has seen `DISTINCT_LIMIT`
distinct values and more than half of all its values were new.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

MAX_SHARED_KEY_SETS = 4096
DISTINCT_LIMIT = 4096  # distinct values a key may have before it is judged by its share of repeats


class _Values:
    """The values seen for one key, while they repeat (see the module's essay)."""

    __slots__ = ("seen", "total")

    def __init__(self) -> None:
        self.seen: dict[str, str] | None = {}
        self.total = 0

    def shared(self, value: str) -> str:
        seen = self.seen
        if seen is None:
            return value
        self.total += 1
        known = seen.get(value)
        if known is not None:
            return known
        if len(seen) >= DISTINCT_LIMIT and len(seen) * 2 > self.total:
            self.seen = None  # mostly unique: values kept as they come, the table given back
            return value
        seen[value] = value
        return value


class FrozenMap(Mapping[str, str]):
    """A small immutable str → str mapping: sorted keys (a shared tuple) and their values."""

    __slots__ = ("_keys", "_values")
    _key_sets: ClassVar[dict[tuple[str, ...], tuple[str, ...]]] = {}
    _values_of: ClassVar[dict[str, _Values]] = {}  # by key

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        pairs = sorted(items)
        keys, values = (tuple(column) for column in zip(*pairs, strict=True)) if pairs else ((), ())
        self._keys = self._shared(keys)
        self._values = self._deduplicated(self._keys, values)

    @classmethod
    def of(cls, keys: tuple[str, ...], values: Iterable[str]) -> FrozenMap:
        """From keys already sorted and their values (the snapshot's form): no sorting, no checks."""
        made = cls.__new__(cls)
        made._keys = cls._shared(keys)
        made._values = cls._deduplicated(made._keys, values)
        return made

    @staticmethod
    def _shared(keys: tuple[str, ...]) -> tuple[str, ...]:
        shared = FrozenMap._key_sets.get(keys)
        if shared is None and len(FrozenMap._key_sets) < MAX_SHARED_KEY_SETS:
            shared = FrozenMap._key_sets[keys] = keys
        return shared or keys

    @staticmethod
    def _deduplicated(keys: tuple[str, ...], values: Iterable[str]) -> tuple[str, ...]:
        tables = FrozenMap._values_of
        out = []
        for key, value in zip(keys, values, strict=True):
            table = tables.get(key)
            if table is None:
                if len(tables) >= MAX_SHARED_KEY_SETS:
                    out.append(value)
                    continue
                table = tables[key] = _Values()
            out.append(table.shared(value))
        return tuple(out)

    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sorted keys, their values): what `of` takes back."""
        return self._keys, self._values

    def __getitem__(self, key: str) -> str:
        for index, known in enumerate(self._keys):  # a handful of keys: a scan beats hashing
            if known == key:
                return self._values[index]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __hash__(self) -> int:
        return hash((self._keys, self._values))

    def __repr__(self) -> str:
        return f"FrozenMap({dict(zip(self._keys, self._values, strict=True))!r})"


_EMPTY: Mapping[str, str] = FrozenMap()


def frozen(values: Mapping[str, object] | Iterable[tuple[str, object]]) -> FrozenMap:
    """`values` as a FrozenMap of strings."""
    pairs = values.items() if isinstance(values, Mapping) else values
    return FrozenMap((str(key), str(value)) for key, value in pairs)


def frozen_extra(values: Mapping[str, object | None]) -> Mapping[str, str]:
    """xattr-ready metadata: drop empty values, stringify the rest, freeze."""
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return FrozenMap(out)


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
