"""type name → ProviderSpec, found by scanning this package: every module with a `SPEC` is a provider.

No list is kept by hand: a new vendor module that defines `SPEC = ProviderSpec(type=...)` is known as soon
as it is in `vidfs/providers/`. Modules without a `SPEC` (base, auth, this one, helpers) are skipped. Two
modules claiming one type name is a programming error and says so.
"""

from __future__ import annotations

import importlib
import pkgutil

from vidfs.providers.base import ProviderSpec

PROVIDERS: dict[str, ProviderSpec] = {}  # filled on first use (importing every vendor module is not free)


def discover() -> dict[str, ProviderSpec]:
    """Every `SPEC` of the modules of this package, by type name."""
    package = importlib.import_module(__name__.rpartition(".")[0])
    found: dict[str, ProviderSpec] = {}
    owners: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.ispkg:
            continue
        name = f"{package.__name__}.{info.name}"
        spec = getattr(importlib.import_module(name), "SPEC", None)
        if not isinstance(spec, ProviderSpec):
            continue
        if spec.type in found:
            raise RuntimeError(
                f"provider type {spec.type!r} is defined by both {owners[spec.type]} and {name}"
            )
        found[spec.type] = spec
        owners[spec.type] = name
    return found


def _providers() -> dict[str, ProviderSpec]:
    if not PROVIDERS:
        PROVIDERS.update(discover())
    return PROVIDERS


def get_spec(type_name: str) -> ProviderSpec | None:
    return _providers().get(type_name)


def known_types() -> list[str]:
    return sorted(_providers())
