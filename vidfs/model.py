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
each). So each column of a key set keeps its own table of values seen, and stops once it has seen
`DISTINCT_LIMIT` distinct values and more than half of its values were new (judged every 1,024 maps). A
snapshot of 100,000 AIPIX archives loads in 1.34 CPU s this way, 1.45 with `sys.intern`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

MAX_SHARED_KEY_SETS = 4096
DISTINCT_LIMIT = 4096  # distinct values a column may have before it is judged by its share of repeats
_NOTHING: MappingProxyType[str, str] = MappingProxyType({})
_PASS = _NOTHING.get  # (value, value) → value, storing nothing: a column judged unique


class _KeySet:
    """One set of keys, shared by every map that has exactly these keys, and the values seen in each column
    while they repeat (see the module's essay). `takers` holds per column what a value is passed through:
    its table's `setdefault` (a value seen before comes back as the first copy) or `_PASS`; a map's values go
    through them with `map(operator.call, ...)`, no Python code per value (100,000 AIPIX archives, eleven
    values each: a Python loop over them cost a remount's load 0.2 CPU s more)."""

    __slots__ = ("keys", "maps", "tables", "takers")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.maps = 0
        self.tables: list[dict[str, str] | None] = [{} for _ in keys]
        self.takers = tuple(table.setdefault for table in self.tables if table is not None)

    def deduplicated(self, values: tuple[str, ...]) -> tuple[str, ...]:
        self.maps += 1
        if self.maps % 1024 == 0:
            self._judge()
        return tuple(map(operator.call, self.takers, values, values))

    def _judge(self) -> None:
        """Columns of mostly unique values (more than half new, past `DISTINCT_LIMIT`) stop being kept."""
        for index, table in enumerate(self.tables):
            if table is not None and len(table) >= DISTINCT_LIMIT and len(table) * 2 > self.maps:
                self.tables[index] = None  # the table given back; the values kept are the maps'
        self.takers = tuple(_PASS if table is None else table.setdefault for table in self.tables)


class FrozenMap(Mapping[str, str]):
    """A small immutable str → str mapping: sorted keys (a shared tuple) and their values."""

    __slots__ = ("_keys", "_values")
    _key_sets: ClassVar[dict[tuple[str, ...], _KeySet]] = {}

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        pairs = sorted(items)
        keys, values = (tuple(column) for column in zip(*pairs, strict=True)) if pairs else ((), ())
        self._keys, self._values = self._made(keys, values)

    @classmethod
    def of(cls, keys: tuple[str, ...], values: Iterable[str]) -> FrozenMap:
        """From keys already sorted and their values (the snapshot's form): no sorting. As many values as
        keys, else ValueError (a damaged snapshot row: its listing is not loaded)."""
        made = cls.__new__(cls)
        made._keys, made._values = cls._made(keys, values)
        return made

    @staticmethod
    def _made(keys: tuple[str, ...], values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The shared key tuple and the values, deduplicated by column."""
        key_set = FrozenMap._key_sets.get(keys)
        if key_set is None:
            if len(FrozenMap._key_sets) >= MAX_SHARED_KEY_SETS:
                return keys, tuple(values)
            key_set = FrozenMap._key_sets[keys] = _KeySet(keys)
        values = tuple(values)
        if len(values) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        return key_set.keys, key_set.deduplicated(values)

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
        global _last_fingerprint
        # Formatting the float mtime is most of the cost, and the videos of a listing often share one (Hour
        # One's, listed at one first-seen second): the last one is kept. By type too, and never for a zero
        # mtime, so the string is exactly the one formatting gives (5 and 5.0, 0.0 and -0.0, 1 and True).
        mtime, size = self.mtime, self.size
        key = (size, mtime, type(size), type(mtime))
        known_key, known = _last_fingerprint
        if key == known_key and mtime:
            return known
        made = f"sm:{size}:{mtime}"
        _last_fingerprint = (key, made)  # one tuple: read and written whole, from any thread
        return made


_last_fingerprint: tuple[tuple[int | None, float | None, type, type], str] = (
    (None, None, type(None), type(None)),
    "",
)


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
