"""type name → ProviderSpec. One line per vendor."""

from __future__ import annotations

from vidfs.providers.base import ProviderSpec


def _specs() -> dict[str, ProviderSpec]:
    # Imported here so that importing the registry stays cheap and free of cycles.
    from vidfs.providers import aipix, cupix, hourone, http_index, pixop, valt

    specs: list[ProviderSpec] = [pixop.SPEC, cupix.SPEC, hourone.SPEC, valt.SPEC, aipix.SPEC, http_index.SPEC]
    return {spec.type: spec for spec in specs}


PROVIDERS: dict[str, ProviderSpec] = {}


def get_spec(type_name: str) -> ProviderSpec | None:
    if not PROVIDERS:
        PROVIDERS.update(_specs())
    return PROVIDERS.get(type_name)


def known_types() -> list[str]:
    if not PROVIDERS:
        PROVIDERS.update(_specs())
    return sorted(PROVIDERS)
