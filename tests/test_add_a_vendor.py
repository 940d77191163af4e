"""A new vendor is two files: its provider module and its emulator module. Nothing else is registered.

The test copies the repository's `vidfs/` and `tests/` (and `pyproject.toml`, the pytest settings) into a
temporary directory and writes a made-up vendor there: `vidfs/providers/tinyvid.py` (a `SPEC` and a
provider class, built on `ProviderBase` and the HTTP failure policy) and `vidfs/emulator/tinyvid.py`
(`create_site` and a `CONTRACT`, built with the emulator framework). No other file of the copy is touched.
In that copy the provider registry knows the type, the emulator discovery knows the emulator, and the
contract suite (`tests/test_contract.py -k tinyvid`, run in a subprocess) mounts the vendor for real and
passes. The repository itself never hears of "tinyvid".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vidfs.emulator import known_emulators
from vidfs.providers.registry import discover, known_types

REPO = Path(__file__).resolve().parent.parent
VENDOR = "tinyvid"

PROVIDER = '''\
"""Tinyvid (made up by tests/test_add_a_vendor.py): one flat list of videos, bytes on the same origin.

`GET {base_url}/videos` with `X-Api-Key` answers `{"videos": [{"id", "name", "size", "updated"}]}`; a
video's bytes are `GET {base_url}/files/{id}`, with the same key (ranges, ETag).
"""

from __future__ import annotations

from vidfs.config.types import ProviderConfig
from vidfs.errors import InvalidRemoteData, NotFoundError
from vidfs.http.client import json_object
from vidfs.http.policy import raise_for_status
from vidfs.model import Folder, Listing, StreamLease, Video
from vidfs.providers.base import BASE_URL, OptionSpec, ProviderBase, ProviderContext, ProviderSpec

ROOT_ID = "tinyvid:root"


class TinyvidProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._base = str(self._options["base_url"]).rstrip("/")
        self._headers = {"X-Api-Key": self._secret("api_key")}

    async def list(self, folder: Folder) -> Listing:
        if folder.remote_id != ROOT_ID:
            raise NotFoundError(f"{self.instance}: Tinyvid has no folder {folder.name!r}")
        what = f"{self.instance}: listing videos"
        response = await self._http.request(
            "GET", f"{self._base}/videos", tag=self._tag, headers=self._headers
        )
        raise_for_status(response, what)
        items = json_object(response, what).get("videos")
        if not isinstance(items, list):
            raise InvalidRemoteData(f"{what}: `videos` is not a list")
        return Listing(
            tuple(
                Video(str(v["id"]), str(v["name"]), size=int(v["size"]), mtime=float(v["updated"]))
                for v in items
            )
        )

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        # Same origin as the API: the key may go along (the client never sends it anywhere else).
        return StreamLease(url=f"{self._base}/files/{video.remote_id}", headers=self._headers)


SPEC = ProviderSpec(
    type="tinyvid",
    options={"base_url": BASE_URL, "api_key": OptionSpec(str, required=True, secret=True)},
    factory=TinyvidProvider,
)
'''

EMULATOR = '''\
"""Tinyvid emulator (made up by tests/test_add_a_vendor.py): `GET /api/videos`, `GET|HEAD /api/files/<id>`,
both behind the `X-Api-Key` header (401 without the right one)."""

from vidfs.emulator.content import facts
from vidfs.emulator.contract import Contract, expect, name_entries
from vidfs.emulator.request import HttpError
from vidfs.emulator.server import serve_file
from vidfs.emulator.vendor import VendorSite, route

API_KEY = "tinyvid-demo-key"
UPDATED = 1_750_000_000
VIDEOS = {"1": ("moov at the end.mp4", "moov_end.mp4"), "2": ("fast start.mp4", "faststart.mp4")}


class TinyvidSite(VendorSite):
    NAME = "tinyvid"
    SAMPLES = ("moov_end.mp4", "faststart.mp4")

    def build(self, options):
        self.videos = {vid: (name, self.sample(sample)) for vid, (name, sample) in VIDEOS.items()}

    def _check_key(self, req):
        if req.headers.get("X-Api-Key") != API_KEY:
            raise HttpError(401, "a valid X-Api-Key is required")

    @route("GET", r"/api/videos")
    def list_videos(self, req):
        self._check_key(req)
        items = [
            {"id": vid, "name": name, "size": blob.size, "updated": UPDATED}
            for vid, (name, blob) in self.videos.items()
        ]
        req.send_json(200, {"videos": items})

    @route(("GET", "HEAD"), r"/api/files/(?P<vid>\\w+)")
    def download(self, req):
        self._check_key(req)
        if req.params["vid"] not in self.videos:
            raise HttpError(404, "no such video")
        _name, blob = self.videos[req.params["vid"]]
        serve_file(req, blob, etag=blob.sha256[:32], content_type="video/mp4", last_modified=UPDATED)

    def config(self):
        return {"type": "tinyvid", "base_url": f"{self.url}/api", "api_key": API_KEY}

    def catalog_json(self, compact):
        return {
            "videos": [
                {"id": vid, "name": name, **facts(blob, compact=compact)}
                for vid, (name, blob) in self.videos.items()
            ]
        }


def create_site(options):
    return TinyvidSite(options)


def expected_layout(catalog):
    videos = catalog["videos"]
    names = name_entries([(v["id"], v["name"], False, "video/mp4") for v in videos])
    return {name: expect(v, UPDATED, v["id"]) for v, name in zip(videos, names, strict=True)}


CONTRACT = Contract(
    expected=expected_layout,
    login_path=r"^/api/videos$",
    storage_path=r"^/api/files/",
    secret_key="api_key",
    renewal=False,
)
'''


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's package and tests in a temporary directory, plus the two new modules."""
    root = tmp_path_factory.mktemp("add-a-vendor")
    for name in ("vidfs", "tests"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "vidfs" / "providers" / f"{VENDOR}.py").write_text(PROVIDER)
    (root / "vidfs" / "emulator" / f"{VENDOR}.py").write_text(EMULATOR)
    return root


def run_in(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python args...` with the copy first on the path (the installed package is not used)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_repository_does_not_know_the_vendor() -> None:
    assert VENDOR not in known_types() and VENDOR not in known_emulators()
    assert sorted(discover()) == ["aipix", "cupix", "hourone", "http", "pixop", "valt"]


def test_the_registry_and_the_emulator_discovery_find_the_new_modules(copy: Path) -> None:
    script = (
        "import json, vidfs\n"
        "from vidfs.providers.registry import known_types\n"
        "from vidfs.emulator import known_emulators\n"
        "from tests.providers import CASES\n"
        "print(json.dumps([vidfs.__file__, known_types(), known_emulators(), sorted(CASES)]))\n"
    )
    result = run_in(copy, "-c", script, timeout=120)
    assert result.returncode == 0, result.stderr
    where, types, emulators, cases = json.loads(result.stdout)
    assert Path(where).is_relative_to(copy)
    assert VENDOR in types and VENDOR in emulators and VENDOR in cases


def test_the_new_vendor_passes_the_contract_suite(copy: Path) -> None:
    result = run_in(
        copy,
        "-m",
        "pytest",
        "tests/test_contract.py",
        "-k",
        VENDOR,
        "-q",
        "-p",
        "no:cacheprovider",
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 9, summary  # every contract test but renewal (nothing expires)
    assert not re.search(r"failed|error", summary), summary


def test_two_modules_claiming_one_type_is_an_error(tmp_path: Path) -> None:
    shutil.copytree(REPO / "vidfs", tmp_path / "vidfs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "vidfs" / "providers" / "pixop_again.py").write_text(
        "from vidfs.providers.pixop import SPEC\n"
    )
    result = run_in(tmp_path, "-c", "from vidfs.providers.registry import discover; discover()", timeout=120)
    assert result.returncode != 0
    assert "'pixop' is defined by both vidfs.providers.pixop and vidfs.providers.pixop_again" in result.stderr
