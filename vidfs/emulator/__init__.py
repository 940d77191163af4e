"""Local HTTP servers that emulate the vendors' APIs (quirks included), for tests, benchmarks and demos.

The framework: `server` (sites, routes, control API), `request` (one request and its helpers), `serving`
(ranged media answers and body faults), `vendor` (settings, mutations, prepared listings and scale shared
by every vendor site), `content` (sample files and synthetic videos), `faults`, `media`, `jwt`, and
`contract` (what the provider contract suite needs to know about each emulator).

An emulator is any module of this package that defines both ``create_site(options) -> Site`` and
``CONTRACT`` (a `contract.Contract`); it is named after its module, or after the provider type its contract
names when that differs (``http_index.py`` emulates provider type ``http``). There is no list to keep: a new
vendor's emulator is found once its module exists. ``python -m vidfs.emulator`` runs them.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def emulators() -> dict[str, ModuleType]:
    """Every emulator module of this package (see above), by name, sorted."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        contract = getattr(module, "CONTRACT", None)
        if callable(getattr(module, "create_site", None)) and contract is not None:
            found[contract.provider or info.name] = module
    return dict(sorted(found.items()))


def load_emulator(name: str) -> ModuleType:
    """The emulator module called `name` (KeyError listing the known names otherwise)."""
    found = emulators()
    try:
        return found[name]
    except KeyError:
        raise KeyError(f"unknown emulator {name!r}; known: {', '.join(found)}") from None


def known_emulators() -> list[str]:
    return list(emulators())


__all__ = ["emulators", "known_emulators", "load_emulator"]
