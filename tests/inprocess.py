"""Vendor emulators in this process, for the tests of one vendor's API and of our provider against it.

`site_fixtures(open_site, settings)` gives a test module its `site` fixture (the emulator, module scope,
the sample media generated first) and an autouse fixture that puts the site back after every test that
used it: no fault rules, empty request logs (its subsites' too), `settings`, and the given mutations.
`make_provider` builds one of our providers pointed at it, with its config and context as the engine
would give them; `walk` lists every video of a provider whose videos stand at one depth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vidfs.config.types import ProviderConfig
from vidfs.emulator import media
from vidfs.http.client import HttpClient
from vidfs.model import Folder, Video
from vidfs.providers.base import ProviderContext

S = TypeVar("S")
P = TypeVar("P")


def site_fixtures(
    open_site: Callable[[Path], AbstractContextManager[Any]],
    settings: Mapping[str, Any],
    *mutations: Mapping[str, Any],
) -> tuple[Any, Any]:
    """`site, _reset = site_fixtures(lambda media_dir: PixopSite(media_dir=media_dir), {...})`."""

    @pytest.fixture(scope="module")
    def site(media_dir: Path) -> Iterator[Any]:
        media.ensure_all(media_dir)
        with open_site(media_dir) as opened:
            yield opened

    @pytest.fixture(autouse=True)
    def reset(request: pytest.FixtureRequest) -> Iterator[None]:
        yield
        if "site" in request.fixturenames:
            opened = request.getfixturevalue("site")
            for each in (opened, *opened.subsites):
                each.faults.clear()
                each.log.clear()
            opened.update_settings(settings)
            for change in mutations:
                opened.mutate(change)

    return site, reset


def make_provider(
    factory: Callable[[ProviderConfig, ProviderContext], P],
    kind: str,
    options: Mapping[str, Any],
    http: HttpClient,
    state_dir: Path,
    *,
    instance: str = "site",
    source: Path = Path("vidfs.toml"),
) -> P:
    """Provider `factory` of type `kind` with the table `options`, its state in `state_dir`."""
    config = ProviderConfig(instance, kind, options, source)
    return factory(config, ProviderContext(instance, http, state_dir, logging.getLogger(f"test.{kind}")))


async def walk(provider: Any, folder_levels: int, name: Callable[[Video], str]) -> dict[str, Video]:
    """Every video below the provider's root by "folder/…/name(video)": `folder_levels` levels of folders
    (asserted: nothing else there), then videos only."""
    found: dict[str, Video] = {}

    async def visit(folder: Folder, level: int, prefix: str) -> None:
        for entry in (await provider.list(folder)).entries:
            if level < folder_levels:
                assert isinstance(entry, Folder)
                await visit(entry, level + 1, f"{prefix}{entry.name}/")
            else:
                assert isinstance(entry, Video)
                found[prefix + name(entry)] = entry

    await visit(provider.root(), 0, "")
    return found
