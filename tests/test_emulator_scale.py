"""Scaled emulator catalogs (``--scale N``): every vendor's own paging lists each synthetic video exactly
once, the videos are the same bytes on every start, and videos inserted at runtime through the control API
(``POST <control_url>/settings {"scale": N}``) show up in the vendor's lists.

Each vendor is walked with plain httpx, the way its API pages (Pixop HAL links, Cupix page numbers, AIPIX
Laravel meta, VALT offset/limit, Hour One's one list, an nginx index), and its bytes fetched the way its
downloads go (redirects and signed URLs included).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.conftest import Emulator, emulator_fixture
from vidfs.emulator import known_emulators

SCALE = 2000
ADDED = 10
PROVIDERS = ["aipix", "cupix", "hourone", "http", "pixop", "valt"]
NEWEST_FIRST = {"aipix", "cupix", "valt"}  # lists whose new videos come first


@dataclass(frozen=True)
class Item:
    """One scaled video as its vendor lists it."""

    key: str  # the vendor's id (or path)
    name: str


class Vendor:
    """Walks one emulated vendor's listing and downloads, as a client of its API would."""

    def __init__(self, emulator: Emulator, name: str) -> None:
        self.name = name
        self.config = emulator.config(name)
        self.http = httpx.Client(timeout=60)

    def close(self) -> None:
        self.http.close()

    def pages(self) -> Iterator[list[Item]]:
        """The scaled videos, page by page, in the vendor's order."""
        raise NotImplementedError

    def fetch(self, item: Item) -> httpx.Response:
        raise NotImplementedError

    def json(self, method: str, url: str, **kw: Any) -> Any:
        response = self.http.request(method, url, **kw)
        response.raise_for_status()
        return response.json()


class Pixop(Vendor):
    def _auth(self) -> dict[str, str]:
        basic = base64.b64encode(f"{self.config['email']}:{self.config['password']}".encode()).decode()
        token = self.json(
            "GET", f"{self.config['base_url']}/accounts/v1/token", headers={"Authorization": f"Basic {basic}"}
        )
        return {"Authorization": f"Bearer {token['jwtToken']}"}

    def _follow(self, url: str, key: str) -> Iterator[list[dict[str, Any]]]:
        auth = self._auth()
        for _ in range(10_000):
            page = self.json("GET", url, headers=auth)
            yield page["_embedded"][key]
            if "next" not in page["_links"]:
                return
            url = page["_links"]["next"]["href"]
        raise AssertionError("more than 10,000 pages")

    def pages(self) -> Iterator[list[Item]]:
        base = self.config["base_url"]
        projects = [
            p for page in self._follow(f"{base}/videos/v1/projects?page-size=100", "projects") for p in page
        ]
        for project in projects:
            if project["name"].startswith("Scale project"):
                url = f"{base}/videos/v1/videos?project-id={project['id']}&page-size=100"
                for page in self._follow(url, "videos"):
                    yield [Item(v["id"], v["filename"]) for v in page]

    def fetch(self, item: Item) -> httpx.Response:
        url = f"{self.config['base_url']}/media/v1/download/original/{item.key}"
        return self.http.get(url, headers=self._auth())


class Cupix(Vendor):
    def _get(self, path: str, **params: Any) -> Any:
        headers = {"X-CUPIX-AUTH": self.config["token"]}
        return self.json("GET", f"{self.config['base_url']}/{path}", params=params, headers=headers)["result"]

    def _one(self, path: str, name: str, **params: Any) -> dict[str, Any]:
        data = self._get(path, fields="id,name,key", per_page=100, **params)["data"]
        (found,) = [d for d in data if d["attributes"].get("name") == name or name == "*"]
        return found

    def pages(self) -> Iterator[list[Item]]:
        workspace = self._one("workspaces", "Scale Works")
        facility = self._one("facilities", "Scale site", workspace_id=workspace["id"])
        record = self._one("records", "*", facility_key=facility["attributes"]["key"])
        capture = self._one("captures", "Scale capture", record_id=record["id"])
        for page_number in range(1, 10_000):
            result = self._get(
                "videos", capture_id=capture["id"], fields="id,name", per_page=100, page=page_number
            )
            yield [Item(d["id"], d["attributes"]["name"]) for d in result["data"]]
            if result["pagination"]["next_page"] is None:
                return
        raise AssertionError("more than 10,000 pages")

    def fetch(self, item: Item) -> httpx.Response:
        url = f"{self.config['base_url']}/videos/{item.key}/download"
        redirect = self.http.get(url, headers={"X-CUPIX-AUTH": self.config["token"]})
        assert redirect.status_code == 302
        return self.http.get(redirect.headers["Location"])


class Aipix(Vendor):
    HEADERS: ClassVar[dict[str, str]] = {
        "X-Client": "web",
        "X-UUID": "scale-test-device",
        "Accept": "application/json",
    }

    def _auth(self) -> dict[str, str]:
        body = {"login": self.config["login"], "password": self.config["password"]}
        token = self.json("POST", f"{self.config['base_url']}/token", json=body, headers=self.HEADERS)
        return {**self.HEADERS, "Authorization": f"Bearer {token['access_token']}"}

    def pages(self) -> Iterator[list[Item]]:
        auth = self._auth()
        now = time.time()
        window = {
            "from": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - 30 * 86400)),
            "to": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now + 86400)),
        }
        for page_number in range(1, 10_000):
            params = {"per_page": 100, "page": page_number, **window}
            page = self.json("GET", f"{self.config['base_url']}/downloads", params=params, headers=auth)
            yield [Item(str(a["id"]), a["name"]) for a in page["data"] if a["stream"]["camera_id"] == 900]
            if page_number >= page["meta"]["last_page"]:
                return
        raise AssertionError("more than 10,000 pages")

    def fetch(self, item: Item) -> httpx.Response:
        origin = self.config["base_url"].rsplit("/api/v1", 1)[0]
        info = self.http.get(f"{origin}/_emulator/info").json()
        storage = next(iter(info["subsites"].values()))["url"]
        return self.http.get(f"{storage}/storage/{quote(item.name, safe='')}")


class Valt(Vendor):
    def _token(self) -> str:
        body = {"username": self.config["username"], "password": self.config["password"]}
        return str(self.json("POST", f"{self.config['base_url']}/login", json=body)["data"]["access_token"])

    def pages(self) -> Iterator[list[Item]]:
        token = self._token()
        for offset in range(0, 10_000_000, 100):
            url = f"{self.config['base_url']}/records?access_token={token}"
            records = self.json("POST", url, json={"offset": offset, "limit": 100})["data"]["records"]
            if not records:
                return
            yield [Item(str(r["id"]), r["name"]) for r in records if r["name"].startswith("Session ")]
        raise AssertionError("more than 100,000 pages")

    def fetch(self, item: Item) -> httpx.Response:
        token = self._token()
        base = self.config["base_url"]
        detail = self.json("GET", f"{base}/records/{item.key}?access_token={token}")["data"]
        video = detail["videos"][0]
        video_id = video["id"] if isinstance(video, dict) else video
        answer = self.json("GET", f"{base}/records/download/{item.key}/{video_id}?access_token={token}")
        url = answer["url"] if "url" in answer else answer["data"]["url"]
        return self.http.get(url)


class HourOne(Vendor):
    def _headers(self) -> dict[str, str]:
        return {"api-key": self.config["api_key"]}

    def pages(self) -> Iterator[list[Item]]:
        videos = self.json("GET", f"{self.config['base_url']}/videos", headers=self._headers())
        yield [Item(v["id"], v["name"]) for v in videos if (v["name"] or "").startswith("Render ")]

    def fetch(self, item: Item) -> httpx.Response:
        video = self.json("GET", f"{self.config['base_url']}/videos/{item.key}", headers=self._headers())
        return self.http.get(video["download_url"])


class HttpIndex(Vendor):
    def _auth(self) -> tuple[str, str]:
        return (self.config["username"], self.config["password"])

    def pages(self) -> Iterator[list[Item]]:
        response = self.http.get(f"{self.config['url']}scale/", auth=self._auth())
        response.raise_for_status()
        hrefs = re.findall(r'<a href="([^"]+)">', response.text)
        yield [Item(unquote(h), unquote(h)) for h in hrefs if h.endswith(".mp4")]

    def fetch(self, item: Item) -> httpx.Response:
        return self.http.get(f"{self.config['url']}scale/{quote(item.key)}", auth=self._auth())


CLIENTS: dict[str, type[Vendor]] = {
    "aipix": Aipix,
    "cupix": Cupix,
    "hourone": HourOne,
    "http": HttpIndex,
    "pixop": Pixop,
    "valt": Valt,
}


def walk(vendor: Vendor) -> list[Item]:
    return [item for page in vendor.pages() for item in page]


# Every emulator with ``--scale`` on the command line; and a second start, scaled per provider with
# ``--set NAME.scale=N``.
scaled = emulator_fixture(*PROVIDERS, extra=["--scale", str(SCALE)])
scaled_again = emulator_fixture(
    *PROVIDERS, extra=[a for n in PROVIDERS for a in ("--set", f"{n}.scale={SCALE}")]
)


@pytest.fixture(params=PROVIDERS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_emulator_has_a_scale_client() -> None:
    assert sorted(CLIENTS) == sorted(known_emulators())


def test_paging_gives_every_scaled_video_once(scaled: Emulator, name: str) -> None:
    vendor = CLIENTS[name](scaled, name)
    try:
        items = walk(vendor)
    finally:
        vendor.close()
    assert len(items) == SCALE
    assert len({item.key for item in items}) == SCALE
    assert scaled.post(name, "settings", {})["scale"] == SCALE


def _fingerprint(
    emulator: Emulator, name: str, picks: list[int]
) -> list[tuple[str, str, int, str | None, str]]:
    """(key, name, size, ETag, sha256 of the body) of a few scaled videos, fetched through the vendor."""
    vendor = CLIENTS[name](emulator, name)
    try:
        items = sorted(walk(vendor), key=lambda item: item.name)
        out = []
        for index in picks:
            item = items[index]
            response = vendor.fetch(item)
            assert response.status_code == 200, (item, response.status_code, response.text[:200])
            body = response.content
            assert int(response.headers["Content-Length"]) == len(body)
            out.append(
                (
                    item.key,
                    item.name,
                    len(body),
                    response.headers.get("ETag"),
                    hashlib.sha256(body).hexdigest(),
                )
            )
        return out
    finally:
        vendor.close()


def test_scaled_videos_are_the_same_bytes_on_every_start(
    scaled: Emulator, scaled_again: Emulator, name: str
) -> None:
    picks = [0, SCALE // 2, SCALE - 1]
    first = _fingerprint(scaled, name, picks)
    assert first == _fingerprint(scaled_again, name, picks)
    sizes = [size for _key, _name, size, _etag, _sha in first]
    assert all(2048 <= size < 8192 for size in sizes), sizes
    assert len({sha for *_rest, sha in first}) == len(picks)  # different videos, different bytes


def test_catalog_tells_sizes_and_hashes_of_scaled_videos(scaled: Emulator, name: str) -> None:
    full = httpx.get(f"{scaled.control(name)}/catalog", timeout=120).json()
    compact = httpx.get(f"{scaled.control(name)}/catalog", params={"compact": 1}, timeout=120).json()
    synthetic = [e for e in _entries(full) if e.get("path_on_disk") is None and "sha256" in e]
    assert len(synthetic) >= SCALE
    assert all(2048 <= e["size"] < 8192 and len(e["sha256"]) == 64 for e in synthetic)
    assert not [e for e in _entries(compact) if "sha256" in e]
    assert len(_entries(compact)) == len(_entries(full))


def _entries(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-file entries of any vendor's catalog."""
    if "records" in catalog and catalog.get("provider") == "valt":
        return [v for r in catalog["records"] for v in r["videos"]]
    for key in ("videos", "archives", "files"):
        if key in catalog:
            return list(catalog[key])
    raise AssertionError(f"no file entries in {sorted(catalog)}")


def test_videos_inserted_between_pages_are_listed(scaled: Emulator, name: str) -> None:
    """``{"scale": N + 10}`` inserts ten videos at runtime, where the vendor lists new videos: first for the
    newest-first lists (so a client's walk in progress sees ten videos of its first page again, the case a
    client must handle), last for the others."""
    before = {item.key for item in walk_fresh(scaled, name)}
    vendor = CLIENTS[name](scaled, name)
    try:
        pages = vendor.pages()
        first_page = next(pages)
        assert scaled.post(name, "settings", {"scale": SCALE + ADDED})["scale"] == SCALE + ADDED
        seen = [item.key for item in first_page] + [item.key for page in pages for item in page]
        fresh = list(vendor.pages())
        everything = {item.key for page in fresh for item in page}
        inserted = everything - before
        assert len(everything) == SCALE + ADDED and len(inserted) == ADDED
        if name in NEWEST_FIRST:
            assert inserted <= {item.key for item in fresh[0]}
            assert len(seen) - len(set(seen)) == ADDED
        else:
            assert inserted <= {item.key for item in fresh[-1]}
            assert len(seen) == len(set(seen))
    finally:
        scaled.post(name, "settings", {"scale": SCALE})
        vendor.close()
    assert {item.key for item in walk_fresh(scaled, name)} == before


def walk_fresh(emulator: Emulator, name: str) -> list[Item]:
    vendor = CLIENTS[name](emulator, name)
    try:
        return walk(vendor)
    finally:
        vendor.close()
