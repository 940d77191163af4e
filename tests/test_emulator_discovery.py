"""An emulator is found, not registered: a module of `vidfs.emulator` with ``create_site`` and ``CONTRACT``.

A throwaway vendor module written into a temporary directory on the package's path is listed by
`known_emulators`, started by name through the framework (`create_site`, the same path as ``python -m
vidfs.emulator --provider``), scaled through its settings, and its contract gives the suite's `Case`; a
helper module without ``CONTRACT`` (such as ``cupix_model``) is not an emulator.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import vidfs.emulator
from tests.conftest import start_emulator, stop_process
from tests.providers import Case
from vidfs.emulator import emulators, known_emulators
from vidfs.emulator.server import create_site

THROWAWAY = '''
"""A vendor that lists its videos at /videos and serves them at /files/<id>."""

from vidfs.emulator.content import SyntheticBlob, facts
from vidfs.emulator.contract import Contract, expect
from vidfs.emulator.vendor import VendorSite, route


class ThrowawaySite(VendorSite):
    NAME = "zzthrowaway"

    def build(self, options):
        self.videos = self.table()

    def add_scaled(self, index):
        self.videos[f"v{index}"] = SyntheticBlob.of(f"zzthrowaway/{index}")

    def remove_scaled(self, index):
        del self.videos[f"v{index}"]

    @route("GET", r"/videos")
    def list_videos(self, req):
        req.send_json(200, sorted(self.videos))

    def catalog_json(self, compact):
        return {"videos": [{"id": k, **facts(b, compact=compact)} for k, b in self.videos.items()]}


def create_site(options):
    return ThrowawaySite(options)


CONTRACT = Contract(
    expected=lambda catalog: {v["id"] + ".mp4": expect(v, None, v["id"]) for v in catalog["videos"]},
    login_path=r"^/videos$",
    storage_path=r"^/files/",
    renewal=False,
)
'''


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "zzthrowaway.py").write_text(textwrap.dedent(THROWAWAY))
    (tmp_path / "zzhelper.py").write_text("def create_site(options):\n    raise AssertionError\n")
    monkeypatch.setattr(vidfs.emulator, "__path__", [*vidfs.emulator.__path__, str(tmp_path)])
    yield tmp_path
    for name in ("vidfs.emulator.zzthrowaway", "vidfs.emulator.zzhelper"):
        sys.modules.pop(name, None)


def test_the_known_emulators_are_the_vendor_modules() -> None:
    assert known_emulators() == ["aipix", "cupix", "hourone", "http", "pixop", "valt"]
    assert all(module.__name__.startswith("vidfs.emulator.") for module in emulators().values())


def test_a_new_module_is_an_emulator_without_registering_it(throwaway: Path, media_dir: Path) -> None:
    assert "zzthrowaway" in known_emulators()
    assert "zzhelper" not in known_emulators()
    site = create_site("zzthrowaway", media_dir=media_dir, scale=3).start()
    try:
        with httpx.Client(base_url=site.url, timeout=10) as client:
            assert client.get("/videos").json() == ["v0", "v1", "v2"]
            assert client.post("/_emulator/settings", json={"scale": 5}).json()["scale"] == 5
            assert client.get("/videos").json() == ["v0", "v1", "v2", "v3", "v4"]
            catalog = client.get("/_emulator/catalog").json()
        case = Case("zzthrowaway", emulators()["zzthrowaway"].CONTRACT)
        expected = case.expected(catalog)
        assert sorted(expected) == [f"v{i}.mp4" for i in range(5)]
        assert case.mutate is None and not case.renewal
        assert case.wrong_password({"password": "right"}) == {"password": "not-the-password"}
    finally:
        site.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_emulator_ends_with_status_0_on_a_stop_signal_however_often_it_comes(
    tmp_path: Path, media_dir: Path, stop_signal: signal.Signals
) -> None:
    # Its handler takes no lock: one that did (threading.Event.set) could deadlock with the main thread's
    # wait, and the emulator then never ended (seen once, with a SIGTERM and then SIGINTs).
    emulator = start_emulator(tmp_path, ["hourone"], media_dir)
    try:
        for _ in range(5):
            emulator.process.send_signal(stop_signal)
        assert emulator.process.wait(timeout=30) == 0
    finally:
        stop_process(emulator.process)
