"""What every vendor's emulator site shares: options, routes, settings, mutations, prepared listings, scale.

`server.Site` is an origin with routes and a control API; `VendorSite` is a vendor on top of it. A vendor
module subclasses it and declares, instead of writing them again:

``NAME``, ``SAMPLES``  the site's name (the module's name) and the `media` samples it serves.
``SETTINGS``           setting name → `Knob`: what ``GET/POST /_emulator/settings`` shows and changes
                       (``knob("page_size", positive)`` sets an attribute after parsing; ``trigger("x")``
                       calls ``self.x()`` when the posted value is true, e.g. ``expire_all_tokens``). Every
                       value is parsed before any is applied, so a bad request changes nothing.
``mutate_<action>``    one method per action of ``POST /_emulator/mutate {"action": "<action>", ...}``: it
                       takes the request's JSON object and returns the JSON answer (KeyError → 404,
                       ValueError → 400); every mutation refreshes the prepared listings afterwards.
``build(options)``     the catalog and the subsites; runs once the port is bound (the site closes again if it
                       raises). Sample media is prepared before binding (generating it may take minutes the
                       first time, and must not hold a port meanwhile).
``@route(...)``        on each handler method: its methods and path pattern (``on="storage"``: a subsite's).
``status()``           read-only values shown with the settings (counters, generations).
``catalog_json(compact)``  the control API's catalog (``?compact=1`` asks for the compact form).

Prepared listings
-----------------
Listing endpoints must answer a page of a 100,000-item catalog by slicing, not by filtering and sorting the
whole catalog again. `VendorSite.prepared(key, build)` memoises whatever a listing needs (items grouped by
parent, sorted the vendor's way) until the catalog changes. "Changes" is the site's ``generation`` (bumped
by every mutation, every scale change and `touch`) plus the versions of its `Table` dicts, which count
their own insertions and removals, so even a test that edits ``site.records`` directly is seen.

Scale
-----
``scale`` is a setting of every vendor site (``--scale N`` for every provider on the command line,
``--set NAME.scale=N`` for one, ``POST <control_url>/settings {"scale": N}`` at runtime). It is the number of
synthetic videos (`content.SyntheticBlob`: a few KiB each, made from their key on demand) the site holds
besides its hand-made catalog, spread the way that vendor's accounts grow (the vendor module's essay says
how). Item ``i`` is a pure function of ``i``: its id, name, size, bytes, ETag and times are the same on
every start (but AIPIX's ``created_at``, relative to the start like all its creation times). Raising
``scale`` inserts items ``old..new-1`` at runtime (newer than every item before them, so they land where
the vendor lists new videos: first for newest-first lists); lowering it removes the last ones. Vendors
implement ``add_scaled(i)`` and ``remove_scaled(i)``.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from vidfs.emulator import media
from vidfs.emulator.content import Blob, FileBlob
from vidfs.emulator.knobs import Knob, non_negative
from vidfs.emulator.request import JSON
from vidfs.emulator.server import EmulatorOptions, Site

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_PREPARED_LIMIT = 512  # memoised listings kept at most (then forgotten all at once)


class Table(dict[K, V]):
    """A dict that counts its insertions and removals (`version`), so prepared listings see them."""

    version: int = 0

    def _changed(self) -> None:
        self.version += 1

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, key: K, *default: Any) -> Any:
        self._changed()
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        self._changed()
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key: K, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)


def stable_uuid(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, without building `uuid.UUID` objects (ids of 100,000 videos)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def route(methods: str | tuple[str, ...], pattern: str, *, on: str | None = None) -> Callable[[T], T]:
    """Declare the route of a handler method: `methods` on paths fully matching `pattern`, on the site or on
    the subsite in attribute `on`. A class's routes are added in the order its handlers are defined."""

    def mark(handler: T) -> T:
        handler.__dict__.setdefault("routes", []).append((methods, pattern, on))
        return handler

    return mark


def options_with(options: EmulatorOptions | None, overrides: Mapping[str, Any]) -> EmulatorOptions:
    """`options` (default: all defaults) with some fields replaced (``PixopSite(page_size=2)``)."""
    return replace(options or EmulatorOptions(), **overrides)


def or_default(value: T | None, default: T) -> T:
    return default if value is None else value


def group_by(items: Iterable[V], key: Callable[[V], K]) -> dict[K, list[V]]:
    """Items by `key`, each group in the items' order."""
    groups: dict[K, list[V]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


class VendorSite(Site):
    """A vendor's API origin (see the module essay). Construct with `EmulatorOptions` or its fields."""

    NAME: ClassVar[str] = "vendor"
    SAMPLES: ClassVar[tuple[str, ...]] = ()
    SETTINGS: ClassVar[Mapping[str, Knob]] = {}

    def __init__(self, options: EmulatorOptions | None = None, **overrides: Any) -> None:
        opts = options_with(options, overrides)
        self.options = opts
        self.samples = media.ensure_samples(self.SAMPLES, opts.media_dir)
        super().__init__(self.NAME, host=opts.host, port=opts.port, seed=opts.seed, verbose=opts.verbose)
        self._lock = threading.RLock()
        self._mutations = 0
        self.generation = 0
        self.scale = 0
        self._tables: list[Table[Any, Any]] = []
        self._prepared: dict[Hashable, Any] = {}
        self._prepared_stamp: tuple[int, ...] = ()
        try:
            self.build(opts)
            self._add_declared_routes()
            if opts.scale:
                self.set_scale(opts.scale)
        except BaseException:
            self.close()
            raise

    def _add_declared_routes(self) -> None:
        for cls in reversed(type(self).__mro__):
            for name, member in vars(cls).items():
                for methods, pattern, on in getattr(member, "routes", ()):
                    site = self if on is None else getattr(self, on)
                    site.add_route(methods, pattern, getattr(self, name))

    # ---- what a vendor provides ---------------------------------------------------------------------------
    def build(self, options: EmulatorOptions) -> None:
        """Make the catalog, subsites and routes."""

    def status(self) -> JSON:
        """Read-only values listed with the settings."""
        return {}

    def catalog_json(self, compact: bool) -> JSON:
        return {}

    def add_scaled(self, index: int) -> None:
        raise ValueError(f"{self.name} has no scaled catalog")

    def remove_scaled(self, index: int) -> None:
        raise ValueError(f"{self.name} has no scaled catalog")

    # ---- catalog helpers ----------------------------------------------------------------------------------
    def table(self) -> Table[Any, Any]:
        """A new catalog dict whose changes refresh the prepared listings."""
        made: Table[Any, Any] = Table()
        self._tables.append(made)
        return made

    def sample(self, name: str) -> FileBlob:
        return FileBlob(self.samples[name])

    def copy(self, table: Mapping[K, V], key: K) -> V:
        """A copy of ``table[key]`` taken under the lock (KeyError when there is none)."""
        with self._lock:
            return replace(table[key])  # type: ignore[type-var]

    def values(self, *attributes: str) -> JSON:
        """Some attributes, read together under the lock (e.g. the credentials of `config`)."""
        with self._lock:
            return {name: getattr(self, name) for name in attributes}

    def touch(self) -> None:
        """The catalog changed in place (an item's times or state): prepared listings are rebuilt."""
        with self._lock:
            self.generation += 1

    def prepared(self, key: Hashable, build: Callable[[], T]) -> T:
        """`build()`'s result, kept until the catalog changes (see "Prepared listings")."""
        with self._lock:
            stamp = (self.generation, *(t.version for t in self._tables))
            if stamp != self._prepared_stamp or len(self._prepared) >= _PREPARED_LIMIT:
                self._prepared.clear()
                self._prepared_stamp = stamp
            if key not in self._prepared:
                self._prepared[key] = build()
            value: T = self._prepared[key]
            return value

    def changed_blob(self, blob: Blob, key: str, extra_bytes: int) -> Blob:
        """New bytes for an item ("the vendor's file changed"): a variant, unique per mutation."""
        with self._lock:
            self._mutations += 1
            tag = f"{key}:{self._mutations}"
        return blob.changed(tag, extra_bytes, self.work_dir)

    def set_scale(self, count: int) -> None:
        """Hold `count` synthetic items: add the missing ones, remove those beyond (see "Scale")."""
        count = non_negative("scale", count)
        with self._lock:
            while self.scale < count:
                self.add_scaled(self.scale)
                self.scale += 1
            while self.scale > count:
                self.scale -= 1
                self.remove_scaled(self.scale)
            self.touch()

    # ---- control hooks ------------------------------------------------------------------------------------
    def catalog(self) -> JSON:
        return self.catalog_json(False)

    def compact_catalog(self) -> JSON:
        return self.catalog_json(True)

    def settings(self) -> JSON:
        with self._lock:
            values: JSON = {
                name: getattr(self, k.attr) if k.attr else False
                for name, k in self.SETTINGS.items()
                if k.shown
            }
            values["scale"] = self.scale
        values.update(self.status())
        return values

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        table = {**self.SETTINGS, "scale": Knob(None, non_negative, apply="set_scale")}
        unknown = set(changes) - set(table)
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(table))}"
            )
        parsed = {name: table[name].parse(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in parsed.items():
                k = table[name]
                if k.one_shot and k.apply is not None:
                    if value:
                        getattr(self, k.apply)()
                elif k.apply is not None:
                    getattr(self, k.apply)(value)
                elif k.attr is not None:
                    setattr(self, k.attr, value)
        return self.settings()

    def mutations(self) -> list[str]:
        """The actions this site's ``mutate`` knows (its ``mutate_<action>`` methods)."""
        return sorted(name.removeprefix("mutate_") for name in dir(type(self)) if name.startswith("mutate_"))

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        known = self.mutations()
        if not isinstance(action, str) or action not in known:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(known)}")
        result: JSON = getattr(self, f"mutate_{action}")(change)
        self.touch()
        return result


def required(change: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """A mutation's argument, or ValueError naming the action and the missing key."""
    raw = change.get(key)
    try:
        if raw is None:
            raise ValueError
        return parse(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{change.get('action')} needs a {key}") from None


def page_slice(items: list[V], page: int, per_page: int) -> list[V]:
    """Page `page` (from 1) of `items`."""
    return items[(page - 1) * per_page : page * per_page]


class Subsite(Site):
    """A vendor's second origin (a storage or distribution host): routes only, started and stopped with its
    parent and listed in the parent's ready line and request log.

    With `share_faults` (the default) it uses the parent's fault switchboard: a rule's ``count`` spans both
    origins and the parent's ``GET /_emulator/faults`` shows what fired here (each rule picks its origin by
    its ``path`` regex). Without it, rules posted to the parent are copied to its own board.
    """

    def __init__(
        self,
        parent: VendorSite,
        name: str,
        *,
        error_body: Callable[[int, str], Any] | None = None,
        catalog: Callable[[], JSON] | None = None,
        share_faults: bool = True,
    ) -> None:
        super().__init__(name, host=parent.host, port=0, seed=parent.options.seed, verbose=parent.verbose)
        self.parent = parent
        if share_faults:
            self.faults = parent.faults
        self._error_body = error_body
        self._catalog = catalog
        parent.subsites.append(self)

    def error_body(self, status: int, message: str) -> Any:
        if self._error_body is None:
            return super().error_body(status, message)
        return self._error_body(status, message)

    def catalog(self) -> JSON:
        return self._catalog() if self._catalog is not None else {}
