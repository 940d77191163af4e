"""Provider-neutral types: what a provider tells us about a remote catalog.

Everything here is a small frozen value. Providers build them; the tree, the caches and the FUSE layer read
them. Nothing in this module knows about FUSE, inodes or HTTP.

A catalog may hold 100,000 videos, so a video is kept small: a slotted frozen dataclass whose metadata
(`extra`, `handle`) is a `FrozenMap`: a key tuple shared by every map with the same keys (a provider's
entries all have the same few) and the values joined into one string, NUL between them.

One string, not a tuple of strings: a value's own object costs 49 bytes before its first character, and the
tuple 8 more per value. An AIPIX archive's 10 xattr values (four of them timestamps unique to it) took 408
bytes as a tuple of strings, even with the values that repeat across a catalog deduplicated by column (one
object per distinct state, camera, capture, as this module did before); joined, 181. For 100,000 videos
(their snapshot's values, `sys.getsizeof`): AIPIX xattrs 38.9 → 17.3 MiB and its handles (one URL each)
17.1 → 12.5; Cupix xattrs 17.3 → 12.1, though Cupix repeats most of its values (the capture of each video).
Reading a value splits the string: that is a getxattr or a snapshot save, never a read of file data. A map
with a value that holds a NUL itself (JSON can say `\u0000`) keeps its values as a tuple.

A listing's xattr values (`frozen_extra`) joined to PACK_AT characters or more are kept deflated (zlib),
with the first values packed for the same keys as the dictionary: the maps of one provider share most of
their text (a status, a player URL's origin and path), and the rest is ids. Hour One's xattrs (five values,
150 characters) are about 100 bytes so instead of 199. Such a map is held only until its listing is saved
(then its values are read from the snapshot when asked: `vidfs.catalog.extras`), but that is during the
first walk of a new catalog, beside the nodes of its directories: 100,000 Hour One videos 155.1 → 149.2 MiB
of peak RSS (0 ms of round trip), for about 7 µs per map made and 2.5 µs per map read. Handles and maps
read back from the snapshot are not packed: a remount loads them all, and keeps them.

Each text is deflated with a small window (4 KiB) and memLevel 1: about 23 KiB of zlib state instead of the
default's 260 KiB (32 KiB window, memLevel 8), which the heap trimmer (`vidfs.daemon.memory`) hands back to
the kernel between packs while a catalog is listed, so that each pack touched fresh pages again. Packing 200
VALT download URLs (450 characters) with `malloc_trim` every 20 packs: 51.2 µs a URL with the default
state, 6.0 µs with the small one, the same 53.2 bytes out; Hour One's URLs and xattrs deflate to the same
sizes either way (texts and their dictionary fit in the window). A cold walk of 10,000 VALT records (layout
"records", 0 ms): daemon 12.3 and 11.7 CPU s before, 11.4 and 10.5 after (alternated).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

MAX_SHARED_KEY_SETS = 4096
SEPARATOR = "\0"  # between a map's values in its one string (see the module's essay)
PACK_AT = 64  # values joined at least this long are kept deflated (see the module's essay)
_WBITS = -12  # raw deflate (no header or checksum), a 4 KiB window: a short text and its dictionary fit
_MEM_LEVEL = 1  # the smallest match tables: ~23 KiB of state per text, not ~260 (see the module's essay)


class FrozenMap(Mapping[str, str]):
    """A small immutable str → str mapping: sorted keys (a shared tuple) and their values, joined into one
    string (a tuple when a value holds the separator)."""

    __slots__ = ("_keys", "_values")
    _key_sets: ClassVar[dict[tuple[str, ...], tuple[str, ...]]] = {}
    _packers: ClassVar[dict[tuple[str, ...], TextPacker]] = {}  # per key set (see the module's essay)

    def __init__(self, items: Iterable[tuple[str, str]] = (), *, pack: bool = False) -> None:
        """`pack`: keep long values deflated (see the module's essay)."""
        pairs = sorted(items)
        keys, values = (tuple(column) for column in zip(*pairs, strict=True)) if pairs else ((), ())
        self._keys, self._values = self._made(keys, values, pack)

    @classmethod
    def of(cls, keys: tuple[str, ...], values: Iterable[str]) -> FrozenMap:
        """From keys already sorted and their values (the snapshot's form): no sorting. As many values as
        keys, else ValueError (a damaged snapshot row: its listing is not loaded)."""
        made = cls.__new__(cls)
        made._keys, made._values = cls._made(keys, values)
        return made

    @classmethod
    def from_columns(cls, data: list[list[str]]) -> FrozenMap:
        """From what `columns()` gave, read back from JSON (`[keys, values]`)."""
        keys, values = data
        return cls.of(tuple(keys), values)

    @staticmethod
    def _made(
        keys: tuple[str, ...], values: Iterable[str], pack: bool = False
    ) -> tuple[tuple[str, ...], str | bytes | tuple[str, ...]]:
        """The shared key tuple and the values, joined unless one holds the separator (and deflated when
        long, if `pack`)."""
        shared = FrozenMap._key_sets.get(keys)
        if shared is None:
            shared = keys
            if len(FrozenMap._key_sets) < MAX_SHARED_KEY_SETS:
                FrozenMap._key_sets[keys] = keys
        values = tuple(values)
        if len(values) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        joined = SEPARATOR.join(values)
        if joined.count(SEPARATOR) != max(0, len(values) - 1):
            return shared, values
        return shared, (_pack(shared, joined) if pack and len(joined) >= PACK_AT else joined)

    def _joined(self) -> str | tuple[str, ...]:
        values = self._values
        return FrozenMap._packers[self._keys].unpack(values) if isinstance(values, bytes) else values

    def _value_tuple(self) -> tuple[str, ...]:
        values = self._joined()
        if not isinstance(values, str):
            return values
        return tuple(values.split(SEPARATOR)) if self._keys else ()

    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sorted keys, their values): what `of` takes back."""
        return self._keys, self._value_tuple()

    def __getitem__(self, key: str) -> str:
        for index, known in enumerate(self._keys):  # a handful of keys: a scan beats hashing
            if known == key:
                values = self._joined()
                if isinstance(values, str):
                    return values if len(self._keys) == 1 else values.split(SEPARATOR)[index]
                return values[index]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def items(self) -> ItemsView[str, str]:
        # Mapping's own would look each key up, splitting the values once per key: `getfattr -d` (or
        # `rsync -X`) builds a file's xattrs whole for each name asked, so that was n splits n times.
        return _Items(self)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._keys == other._keys and self._value_tuple() == other._value_tuple()
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash((self._keys, self._value_tuple()))

    def __repr__(self) -> str:
        return f"FrozenMap({dict(zip(self._keys, self._value_tuple(), strict=True))!r})"


def _pack(keys: tuple[str, ...], joined: str) -> bytes | str:
    """`joined` deflated by the packer of its key set (a provider's maps share their keys and much of their
    values' text); as it is when no packer can be kept."""
    packers = FrozenMap._packers
    packer = packers.get(keys)
    if packer is None:
        if len(packers) >= MAX_SHARED_KEY_SETS:
            return joined
        packer = packers.setdefault(keys, TextPacker())
    return packer.pack(joined)


class TextPacker:
    """Short texts of one kind kept deflated (raw zlib), with the first text packed as the dictionary: such
    texts share most of their bytes (an origin and path, query or key names) and the rest is ids. Used for
    a listing's xattr values (`FrozenMap`) and its download URLs (`vidfs.providers.listed_urls`)."""

    __slots__ = ("_dictionary", "_lock")

    def __init__(self) -> None:
        self._dictionary: bytes | None = None
        self._lock = threading.Lock()  # the dictionary is set once: what was packed with it must stay

    def pack(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        dictionary = self._dictionary
        if dictionary is None:
            with self._lock:
                if self._dictionary is None:
                    self._dictionary = data
                dictionary = self._dictionary
        packer = zlib.compressobj(6, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zdict=dictionary)
        return packer.compress(data) + packer.flush()

    def unpack(self, packed: bytes) -> str:
        assert self._dictionary is not None  # set by the first `pack`
        unpacker = zlib.decompressobj(_WBITS, zdict=self._dictionary)
        return (unpacker.decompress(packed) + unpacker.flush()).decode("utf-8", "surrogatepass")


class _Items(ItemsView[str, str]):
    """A FrozenMap's (key, value) pairs, its values split once."""

    _mapping: FrozenMap

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return zip(*self._mapping.columns(), strict=True)


_EMPTY: Mapping[str, str] = FrozenMap()


def frozen(values: Mapping[str, object] | Iterable[tuple[str, object]]) -> FrozenMap:
    """`values` as a FrozenMap of strings."""
    pairs = values.items() if isinstance(values, Mapping) else values
    return FrozenMap((str(key), str(value)) for key, value in pairs)


def frozen_extra(values: Mapping[str, object | None], *, pack: bool = True) -> FrozenMap:
    """xattr-ready metadata: drop empty values, stringify the rest, freeze (long values deflated unless not
    `pack`: they are held only until their listing is saved, see the module's essay)."""
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return FrozenMap(out, pack=pack)


_CONTENT_TYPES: dict[str, str] = {}  # one string per content type, not one per video (5.6 MiB at 100,000)
MAX_CONTENT_TYPES = 256


def shared_content_type(value: str | None) -> str | None:
    """The one string kept for a content type that a catalog gives once per video (a JSON field, a snapshot
    row): videos of one type share it. Bounded: past that many types, a value is kept as it came."""
    if value is None:
        return None
    shared = _CONTENT_TYPES.get(value)
    if shared is None and len(_CONTENT_TYPES) < MAX_CONTENT_TYPES:
        shared = _CONTENT_TYPES[value] = value
    return shared or value


@dataclass(frozen=True, slots=True)
class Folder:
    """A directory of a provider. `remote_id` is unique within its provider instance."""

    remote_id: str
    name: str
    mtime: float | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)


class ValuesAtRest(Protocol):
    """Where the xattr values of a saved listing's videos are kept instead of in memory, one for the whole
    listing (`vidfs.catalog.extras.Place`): `Video.xattrs` asks it for a video's."""

    def values_of(self, remote_id: str) -> Mapping[str, str]: ...

    def readable_values(self, remote_id: str) -> Mapping[str, str] | None:
        """The video's values kept here; None when they cannot be read (neither counted nor logged)."""
        ...


@dataclass(frozen=True, slots=True)
class Video:
    """A file of a provider: one remote video.

    `size` may be None when the API does not tell it; the engine then learns it with a HEAD.
    `etag` (or, lacking it, size + mtime) is the fingerprint every cached block is keyed by.
    `handle` is opaque provider data needed to resolve the download (never shown to users).
    `extra` is its xattr values, or once its listing is saved where they are kept (read them as `xattrs`).
    """

    remote_id: str
    name: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    content_type: str | None = None
    extra: Mapping[str, str] | ValuesAtRest = field(default_factory=lambda: _EMPTY, compare=False)
    handle: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)

    @property
    def xattrs(self) -> Mapping[str, str]:
        """The xattr values, from wherever they are kept."""
        extra = self.extra
        return extra if isinstance(extra, Mapping) else extra.values_of(self.remote_id)

    def rest_extra(self, place: ValuesAtRest) -> None:
        """Keep the xattr values at `place`, which must give back the same items (`vidfs.catalog.extras`:
        the snapshot database, read when asked). Where they live is the one thing about a video that may
        change after it was made, never what they are."""
        object.__setattr__(self, "extra", place)

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
