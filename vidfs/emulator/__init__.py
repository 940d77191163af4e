"""Local HTTP servers that emulate the vendors' APIs (quirks included), for tests, benchmarks and demos.

`server` is the framework (sites, routes, `serve_file`, control API), `faults` the fault switchboard,
`media` the deterministic sample videos, and one module per vendor. ``python -m vidfs.emulator`` runs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: provider name → module exposing ``create_site(options: EmulatorOptions) -> Site``. One line per vendor.
EMULATORS: dict[str, str] = {
    "valt": "vidfs.emulator.valt",
    "pixop": "vidfs.emulator.pixop",
    "http": "vidfs.emulator.http_index",
    "hourone": "vidfs.emulator.hourone",
    "cupix": "vidfs.emulator.cupix",
    "aipix": "vidfs.emulator.aipix",
}


def load_emulator(name: str) -> ModuleType:
    """The emulator module registered as `name` (KeyError listing the known names otherwise)."""
    try:
        module_path = EMULATORS[name]
    except KeyError:
        raise KeyError(f"unknown emulator {name!r}; known: {', '.join(sorted(EMULATORS))}") from None
    return importlib.import_module(module_path)


def known_emulators() -> list[str]:
    return sorted(EMULATORS)


__all__ = ["EMULATORS", "known_emulators", "load_emulator"]
