"""AIPIX VMS: the emulator's API to the letter, the provider in-process, and real mounts over the emulator.

The mount tests show: 1 000 archive items over 40+ pages listed by one `ls -lR` with one scan whose pages
were fetched concurrently (bounded); items sharing a name both shown, distinct, and named the same after a
remount; archives whose file is gone absent; one X-UUID across mounts sharing a cache directory.
"""

from __future__ import annotations

import calendar
import errno
import json
import os
import re
import stat
import subprocess
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Emulator, emulator_fixture, most_in_flight, unmount, vidfs_cmd, wait_until
from tests.inprocess import make_provider, site_fixtures, walk
from tests.providers import CASES
from vidfs.catalog.snapshot_codec import listing_from_json, listing_to_json
from vidfs.config.types import HttpSettings
from vidfs.emulator.aipix import DEFAULT_LOGIN, DEFAULT_PASSWORD, AipixSite
from vidfs.errors import AuthError, ConfigError, NotFoundError, RemoteIOError
from vidfs.http.client import HttpClient
from vidfs.model import Listing, Video
from vidfs.providers.aipix import DEVICE_FILE, AipixProvider, download_url, file_url

INSTANCE = "cctv"
SEED_NAME_0924 = "City , st. Street 1, file.20190924-130316-131213.mp4"
SEED_NAME_0920 = "City , st. Street 1, file.20190920-161320-162227.mp4"
WANTED = {"Accept": "application/json", "X-Client": "web"}


# ---------------------------------------------------------------------------------------------------------
# the emulator, in-process


site, _reset = site_fixtures(
    lambda media_dir: AipixSite(media_dir=media_dir),
    {"max_devices": None, "storage_origin": "separate", "token_lifetime": 3600},
    {"action": "clear_sessions"},
)


def _login(client: httpx.Client, device: str = "device-a") -> str:
    response = client.post(
        "/api/v1/token",
        json={"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD},
        headers={**WANTED, "X-UUID": device},
    )
    assert response.status_code == 200, response.text
    assert response.json()["user"]["login"] == DEFAULT_LOGIN
    return str(response.json()["access_token"])


WINDOW = {"from": "2000-01-01 00:00:00", "to": "2100-01-01 00:00:00"}


def test_emulator_needs_the_bearer_and_the_device_headers(site: AipixSite) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        token = _login(client)
        query = {"per_page": 25, "page": 1, **WINDOW}
        bare = client.get("/api/v1/downloads", params=query, headers=WANTED)
        assert bare.status_code == 401 and bare.json() == {"message": "Unauthenticated."}
        auth = {**WANTED, "Authorization": f"Bearer {token}"}
        no_uuid = client.get("/api/v1/downloads", params=query, headers=auth)
        assert no_uuid.status_code == 422 and "X-UUID" in no_uuid.json()["errors"]
        other_device = client.get("/api/v1/downloads", params=query, headers={**auth, "X-UUID": "device-b"})
        assert other_device.status_code == 401  # a token is good for the device it was issued to only
        ok = client.get("/api/v1/downloads", params=query, headers={**auth, "X-UUID": "device-a"})
        assert ok.status_code == 200
        bad_client = client.get(
            "/api/v1/downloads", params=query, headers={**auth, "X-UUID": "device-a", "X-Client": "tv"}
        )
        assert bad_client.status_code == 422 and "X-Client" in bad_client.json()["errors"]


def test_emulator_422_names_every_missing_field(site: AipixSite) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        headers = {**WANTED, "X-UUID": "device-a", "Authorization": f"Bearer {_login(client)}"}
        response = client.get("/api/v1/downloads", headers=headers)
        assert response.status_code == 422
        body = response.json()
        assert set(body["errors"]) == {"per_page", "page", "from", "to"}
        assert body["message"] == "The per page field is required. (and 3 more errors)"
        bad = client.get(
            "/api/v1/downloads",
            params={"per_page": "x", "page": 0, "from": "yesterday-ish", "to": "2019-01-01"},
            headers=headers,
        )
        assert set(bad.json()["errors"]) == {"per_page", "page", "from"}


def test_emulator_lists_like_the_seed(site: AipixSite) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        headers = {**WANTED, "X-UUID": "device-a", "Authorization": f"Bearer {_login(client)}"}
        first = client.get("/api/v1/downloads", params={"per_page": 2, "page": 1, **WINDOW}, headers=headers)
        body = first.json()
        meta = body["meta"]
        assert meta["current_page"] == 1 and meta["per_page"] == 2 and meta["from"] == 1 and meta["to"] == 2
        assert meta["last_page"] == -(-meta["total"] // 2)
        assert meta["path"].endswith("/api/v1/users/downloads")  # the seed's quirk: another path
        assert (
            body["links"]["next"].endswith("/api/v1/users/downloads?page=2") and body["links"]["prev"] is None
        )
        assert meta["links"][0]["label"] == "pagination.previous"
        everything = client.get(
            "/api/v1/users/downloads", params={"per_page": 100, "page": 1, **WINDOW}, headers=headers
        ).json()["data"]
        by_id = {item["id"]: item for item in everything}
        assert by_id[6414]["name"] == by_id[6416]["name"] == SEED_NAME_0924
        assert by_id[6413]["name"] == by_id[6415]["name"] == SEED_NAME_0920
        assert by_id[6414]["url"] == f"{site.storage.url}/storage/"
        assert by_id[6414]["from"] == "2019-09-24 13:03:16" and by_id[6414]["to"] == "2019-09-24 13:12:13"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z", by_id[6414]["created_at"])
        assert set(by_id[6414]["stream"]) >= {"id", "type", "camera_id", "has_sound", "width", "height"}
        assert by_id[6417]["is_file_exists"] is False
        created = [item["created_at"] for item in everything]
        assert created == sorted(created, reverse=True)  # newest first
        # The window filters the creation date: the 45-day-old archive is outside a 30-day window.
        recent = client.get(
            "/api/v1/downloads",
            params={"per_page": 100, "page": 1, "from": _ago(30 * 86400), "to": _ago(-86400)},
            headers=headers,
        ).json()["data"]
        assert 6419 in by_id and 6419 not in {item["id"] for item in recent}


def _ago(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - seconds))


def test_emulator_cameras_with_and_without_pretty_name(site: AipixSite) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        headers = {**WANTED, "X-UUID": "device-a", "Authorization": f"Bearer {_login(client)}"}
        assert client.get("/api/v1/cameras/1", headers=headers).json()["data"]["pretty_name"] == (
            "City , st. Street 1"
        )
        assert client.get("/api/v1/cameras/3", headers=headers).json()["data"]["pretty_name"] is None
        assert "pretty_name" not in client.get("/api/v1/cameras/4", headers=headers).json()["data"]
        assert client.get("/api/v1/cameras/5", headers=headers).status_code == 404


def test_emulator_session_limit_is_419(site: AipixSite) -> None:
    site.update_settings({"max_devices": 1})
    with httpx.Client(base_url=site.url, timeout=10) as client:
        _login(client, "device-a")
        refused = client.post(
            "/api/v1/token",
            json={"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD},
            headers={**WANTED, "X-UUID": "device-b"},
        )
        assert refused.status_code == 419
        _login(client, "device-a")  # the same device may log in again
        wrong = client.post(
            "/api/v1/token", json={"login": DEFAULT_LOGIN, "password": "nope"}, headers=WANTED
        )
        assert wrong.status_code == 422 and "login" in wrong.json()["errors"]


def test_emulator_storage_serves_ranges_and_takes_faults_from_the_main_control_url(site: AipixSite) -> None:
    url = file_url(f"{site.storage.url}/storage/", SEED_NAME_0924)
    assert "%2C%20" in url
    ranged = httpx.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert ranged.headers["Content-Range"].startswith("bytes 10-19/")
    rules = {"rules": [{"kind": "status", "status": 503, "path": "^/storage/", "count": 1}]}
    httpx.post(f"{site.control_url}/faults", json=rules, timeout=10).raise_for_status()
    assert httpx.get(url, timeout=10).status_code == 503
    fired = httpx.get(f"{site.control_url}/faults", timeout=10).json()["rules"][0]["fired"]
    assert fired == 1  # reported by the API site's control URL
    origins = {entry["origin"] for entry in httpx.get(f"{site.control_url}/requests", timeout=10).json()}
    assert origins == {"aipix-storage"}
    gone = httpx.get(file_url(f"{site.storage.url}/storage/", "Lobby, nothing.mp4"), timeout=10)
    assert gone.status_code == 404


# ---------------------------------------------------------------------------------------------------------
# the provider, in-process


def _provider(site: AipixSite, state_dir: Path, http: HttpClient, **options: Any) -> AipixProvider:
    table = {**site.config(), **options}
    table.pop("type")
    return make_provider(AipixProvider, "aipix", table, http, state_dir, instance=INSTANCE)


async def _walk(provider: AipixProvider) -> dict[str, Video]:
    """Every video by "camera/stream/remote id" (raw provider names)."""
    return await walk(provider, 2, lambda video: video.remote_id)


async def test_device_id_is_made_once_kept_0600_and_reused(site: AipixSite, tmp_path: Path) -> None:
    state = tmp_path / "state" / INSTANCE
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        first = _provider(site, state, http)
        await first.list(first.root())
        device = (state / DEVICE_FILE).read_text().strip()
        assert stat.S_IMODE((state / DEVICE_FILE).stat().st_mode) == 0o600
        assert [p.name for p in state.iterdir()] == [DEVICE_FILE]  # no temporary file left behind
        second = _provider(site, state, http)
        await second.list(second.root())
    sent = {entry["headers"].get("x-uuid") for entry in site.log.entries()}
    assert sent == {device}


async def test_a_walk_slower_than_scan_cache_still_costs_one_scan(site: AipixSite, tmp_path: Path) -> None:
    """A directory no scan has answered takes its listing from the current scan while it is younger than
    ten times `scan_cache` (a walk's first visit, after minutes of HEADs in a big directory); a directory
    listed before wants fresh data after `scan_cache`; past ten times, even a first visit scans again."""

    def scans() -> int:
        return sum(
            "page=1&" in e["path"] or e["path"].endswith("page=1") for e in site.log.entries(path="downloads")
        )

    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http, scan_cache="60s")
        cameras = (await provider.list(provider.root())).entries
        assert len(cameras) >= 2 and scans() == 1
        assert provider._scan is not None
        provider._scan.finished -= 5 * 60  # five minutes of a walk's HEADs later
        await provider.list(cameras[0])  # never listed: from the same scan
        assert scans() == 1
        await provider.list(provider.root())  # listed before: fresh data
        assert scans() == 2
        provider._scan.finished -= 11 * 60
        await provider.list(cameras[1])  # never listed, but the scan is older than ten times scan_cache
        assert scans() == 3


async def test_a_refused_token_logs_in_again_once(site: AipixSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        listing = await provider.list(provider.root())
        site.mutate({"action": "expire_tokens"})
        again = await provider.list(provider.root())  # served once already: a new scan, a 401, a login
        assert [e.name for e in again.entries] == [e.name for e in listing.entries]
    logins = site.log.entries(path=r"^/api/v1/token")
    assert len(logins) == 2
    assert [e["status"] for e in site.log.entries(path=r"^/api/v1/downloads")] == [200, 401, 200]


async def test_session_limit_is_explained(site: AipixSite, tmp_path: Path) -> None:
    site.update_settings({"max_devices": 0})
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        with pytest.raises(AuthError) as info:
            await provider.list(provider.root())
    message = str(info.value)
    assert "session limit exceeded (HTTP 419" in message and DEVICE_FILE in message
    assert DEFAULT_PASSWORD not in message and "\n" not in message


async def test_a_422_shows_its_field_messages(site: AipixSite, tmp_path: Path) -> None:
    body = {"message": "The to is not a valid date.", "errors": {"to": ["The to is not a valid date."]}}
    site.faults.set_rules([{"kind": "status", "status": 422, "path": "/downloads", "body": json.dumps(body)}])
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        with pytest.raises(RemoteIOError) as info:
            await provider.list(provider.root())
    assert "HTTP 422: to: The to is not a valid date." in str(info.value)


async def test_credentials_go_to_the_api_origin_only(site: AipixSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        videos = await _walk(provider)
        lease = await provider.resolve(videos["City , st. Street 1/low/6414"])
        assert lease.url.startswith(site.storage.url) and dict(lease.headers) == {}
        assert lease.expires_at is None
        by_id = await provider.resolve(videos["camera-4/low/6422"])  # a url that is the file itself
        assert by_id.url == f"{site.storage.url}/storage/by-id/6422.mp4"
        site.update_settings({"storage_origin": "api"})
        fresh = _provider(site, tmp_path, http)
        lease = await fresh.resolve((await _walk(fresh))["City , st. Street 1/low/6414"])
        assert lease.url.startswith(site.url + "/storage/")
        assert lease.headers["Authorization"].startswith("Bearer ") and lease.headers["X-UUID"]
        assert lease.uses_provider_auth and lease.expires_at is not None  # the JWT's exp
        response = await http.request(
            "GET", lease.url, tag="t", headers={**lease.headers, "Range": "bytes=0-3"}
        )
        assert response.status_code == 206


async def test_archives_under_one_storage_base_share_one_handle_and_each_reads_its_own_file(
    site: AipixSite, tmp_path: Path
) -> None:
    """A `url` ending in `/` is kept once per base, not joined with each name (memory at 100,000
    archives), in the provider's listing and again when a listing is read back; each archive still
    resolves to its own file, which storage serves."""
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        videos = list((await _walk(provider)).values())
        based = [video for video in videos if video.handle.get("base") == f"{site.storage.url}/storage/"]
        assert len(based) >= 3 and len({id(video.handle) for video in based}) == 1
        _, listing = listing_from_json(listing_to_json("f", Listing(tuple(videos))))
        again = [video for video in listing.entries if isinstance(video, Video) and "base" in video.handle]
        assert len(again) == len(based) and len({id(video.handle) for video in again}) == 1
        assert [download_url(video) for video in again] == [download_url(video) for video in based]
        for video in again:
            lease = await provider.resolve(video)
            assert lease.url == file_url(f"{site.storage.url}/storage/", video.name)
            response = await http.request("GET", lease.url, tag="t", headers={"Range": "bytes=0-3"})
            assert response.status_code == 206 and len(response.content) == 4


async def test_a_refused_storage_url_is_looked_up_in_a_new_scan(site: AipixSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        provider = _provider(site, tmp_path, http)
        videos = await _walk(provider)
        kept, deleted = videos["City , st. Street 1/low/6414"], videos["camera-4/low/6422"]
        leases = [await provider.resolve(kept), await provider.resolve(deleted)]
        scans = site.log.count(path=r"/downloads")
        site.mutate({"action": "delete_file", "id": 6422})
        again = await provider.resolve(kept, previous=leases[0])
        assert again.url == leases[0].url  # still listed: its URL, from the new scan
        with pytest.raises(NotFoundError, match="6422 is gone"):
            await provider.resolve(deleted, previous=leases[1])
        assert site.log.count(path=r"/downloads") > scans  # each refusal looked again


async def test_xattrs_and_mtime_come_from_the_item(site: AipixSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient(HttpSettings(retries=0))) as http:
        videos = await _walk(_provider(site, tmp_path, http))
    video = videos["Parking / Gate B/high/6420"]  # raw names: the engine applies the naming rules
    assert video.size is None  # the engine HEADs
    assert video.mtime == calendar.timegm((2024, 5, 13, 8, 39, 0))  # `to`, the end of the footage
    assert dict(video.extra) == {
        "camera": "Parking / Gate B",
        "camera_id": "2",
        "created_at": video.extra["created_at"],
        "from": "2024-05-13 08:15:00",
        "has_sound": "true",
        "height": "720",
        "stream_id": "21",
        "stream_type": "high",
        "to": "2024-05-13 08:39:00",
        "type": "mp4",
        "updated_at": video.extra["updated_at"],
        "width": "1280",
    }


async def test_config_errors_name_the_key(site: AipixSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient()) as http:
        with pytest.raises(ConfigError, match=r"key 'client': expected one of ios-cctv"):
            _provider(site, tmp_path, http, client="tv")
        with pytest.raises(ConfigError, match=r"key 'window'"):
            _provider(site, tmp_path, http, window="a month")


# ---------------------------------------------------------------------------------------------------------
# real mounts


small = emulator_fixture("aipix")
big = emulator_fixture("aipix", extra=["--catalog", "big"])


def test_a_thousand_archives_list_in_one_ls_with_one_concurrent_scan(
    big: Emulator, make_config: Any, mounts: Any
) -> None:
    expected = CASES["aipix"].expected(big.catalog("aipix"))
    assert len(expected) >= 1000
    config = make_config({INSTANCE: {**big.config("aipix"), "per_page": 25}})
    big.post("aipix", "requests/clear", {})
    # Each page request lasts 0.1 s on the server, so requests in flight together overlap in the log.
    big.post(
        "aipix", "faults", {"rules": [{"kind": "latency", "seconds": 0.1, "path": "^/api/v1/downloads"}]}
    )
    try:
        mount = mounts(config)
        started = time.monotonic()
        listing = subprocess.run(
            ["ls", "-lR", str(mount.path / INSTANCE)], capture_output=True, text=True, check=True, timeout=600
        ).stdout
        took = time.monotonic() - started
    finally:
        big.post("aipix", "faults", {"rules": []})
    shown = {
        str(Path(dirpath, name).relative_to(mount.path / INSTANCE))
        for dirpath, _dirs, files in os.walk(mount.path / INSTANCE)
        for name in files
    }
    assert shown == set(expected)
    assert sum(1 for line in listing.splitlines() if line.startswith("-r--r--r--")) == len(expected)
    requests = big.requests("aipix")
    pages = [r for r in requests if r["path"].startswith("/api/v1/downloads")]
    numbers = sorted(int(re.search(r"[?&]page=(\d+)", r["path"]).group(1)) for r in pages)  # type: ignore[union-attr]
    assert numbers == list(range(1, len(numbers) + 1)), "one scan: every page exactly once"
    assert len(numbers) >= 40
    assert all("per_page=25" in r["path"] for r in pages)
    overlap = most_in_flight(pages)
    assert 2 <= overlap <= 8, f"pages were not fetched concurrently within the bound (peak {overlap})"
    # Pages fetched at once name the same cameras: each is still asked for its name once in the scan.
    cameras = [r["path"].split("?")[0] for r in requests if r["path"].startswith("/api/v1/cameras/")]
    assert cameras and len(cameras) == len(set(cameras)), cameras
    kinds: dict[str, int] = {}
    for r in requests:
        path = r["path"].split("?")[0]
        for prefix in ("/api/v1/cameras/", "/storage/"):
            path = prefix + "…" if path.startswith(prefix) else path
        kind = f"{r['method']} {path}"
        kinds[kind] = kinds.get(kind, 0) + 1
    print(
        f"\naipix ls -lR: {len(expected)} files, {len(numbers)} pages, peak {overlap} pages in flight, "
        f"{len(requests)} requests {kinds}, {took:.2f} s (with 0.1 s of injected latency per page)"
    )


def test_shared_names_both_show_and_keep_their_names_across_a_remount_with_one_device(
    small: Emulator, make_config: Any, mounts: Any, tmp_path: Path
) -> None:
    config = make_config({INSTANCE: small.config("aipix")})
    small.post("aipix", "requests/clear", {})
    seen: list[list[str]] = []
    for name in ("first", "second"):
        mount = mounts(config, name=name)
        if name == "second":  # its listings are fresh from the snapshot: have it ask the VMS (as the device)
            subprocess.run(vidfs_cmd("refresh", str(mount.path)), check=True, capture_output=True, timeout=60)
        camera = mount.path / INSTANCE / "City , st. Street 1"
        low, high = sorted(os.listdir(camera / "low")), sorted(os.listdir(camera / "high"))
        seen.append(low + high)
        unmount(mount)
    assert seen[0] == seen[1]
    assert {
        "City , st. Street 1, file.20190924-130316-131213 [6414].mp4",
        "City , st. Street 1, file.20190924-130316-131213 [6416].mp4",
    } <= set(seen[0])
    assert {
        "City , st. Street 1, file.20190920-161320-162227 [6413].mp4",
        "City , st. Street 1, file.20190920-161320-162227 [6415].mp4",
    } <= set(seen[0])
    api = [r for r in small.requests("aipix") if r["path"].startswith("/api/v1/")]
    assert len([r for r in api if r["path"].startswith("/api/v1/token")]) == 2, "each mount logged in"
    device = (tmp_path / "cache" / "state" / INSTANCE / DEVICE_FILE).read_text().strip()
    assert {r["headers"].get("x-uuid") for r in api} == {device}
    assert {r["headers"].get("x-client") for r in api} == {"web"}


def _counters(root: Path) -> dict[str, int]:
    return dict(json.loads(os.getxattr(root, "user.vidfs.stats"))["counters"])


def test_xattrs_after_a_remount_are_read_back_from_the_snapshot_unchanged(
    small: Emulator, make_config: Any, mounts: Any
) -> None:
    """The second mount answers from the snapshot without asking the VMS, and its files' xattrs (kept on
    disk until asked: `vidfs.catalog.extras`) are what the first mount showed."""
    config = make_config({INSTANCE: small.config("aipix")})
    shown: list[dict[str, dict[str, bytes]]] = []
    for name in ("first", "second"):
        mount = mounts(config, name=name)
        directory = mount.path / INSTANCE / "City , st. Street 1" / "low"
        shown.append(
            {path.name: {a: os.getxattr(path, a) for a in os.listxattr(path)} for path in directory.iterdir()}
        )
        if name == "second":  # what `ls -l` asks of every file is answered without reading the values
            reads = _counters(mount.path).get("snapshot.extras_reads", 0)
            assert reads >= 1
            path = next(directory.iterdir())
            for other in ("security.selinux", "system.posix_acl_access"):
                with pytest.raises(OSError) as refused:
                    os.getxattr(path, other)
                assert refused.value.errno == errno.EOPNOTSUPP
            assert _counters(mount.path).get("snapshot.extras_reads", 0) == reads
        unmount(mount)
        if name == "first":
            small.post("aipix", "requests/clear", {})
    assert shown[0] == shown[1] and len(shown[0]) >= 2
    keys = ("from", "to", "camera")
    assert all(values[f"user.vidfs.{key}"] for values in shown[0].values() for key in keys)
    assert not [r for r in small.requests("aipix") if r["path"].startswith("/api/v1/downloads")]


def test_after_a_remount_stale_listings_are_asked_again_only_once_the_walk_is_over(
    small: Emulator, make_config: Any, mounts: Any
) -> None:
    """Every listing in the snapshot is older than `metadata_ttl` (0 here): the second mount serves them all
    at once, and asks the VMS again only once the walk is over (`refresh_idle`: 10 s here, so that a host
    stalling for a second or two cannot let a refresh in), not in the middle of it (`vidfs.tasks.Lull`)."""
    cache = {"metadata_ttl": "0s", "refresh_idle": "10s"}
    config = make_config({INSTANCE: small.config("aipix")}, cache=cache)
    walked: list[dict[str, int]] = []
    for name in ("first", "second"):
        mount = mounts(config, name=name)
        if name == "second":
            small.post("aipix", "requests/clear", {})
        walked.append({str(p.relative_to(mount.path)): p.lstat().st_size for p in mount.path.rglob("*")})
        if name == "second":
            during = [r["path"] for r in small.requests("aipix") if "/token" not in r["path"]]
            assert during == []  # nothing asked before the walk's end: the snapshot answered it all
            assert _counters(mount.path).get("metadata.refreshes_deferred", 0) >= 1
            wait_until(
                lambda: any("/token" not in r["path"] for r in small.requests("aipix")),
                what="the deferred refreshes after the walk",
                timeout=60,
                poll=0.5,
            )
        unmount(mount)
    assert walked[0] == walked[1] and len(walked[0]) >= 10


def test_archives_whose_file_is_gone_are_absent(small: Emulator, make_config: Any, mounts: Any) -> None:
    config = make_config({INSTANCE: small.config("aipix")})
    mount = mounts(config)
    root = mount.path / INSTANCE
    names = {name for _dirpath, _dirs, files in os.walk(root) for name in files}
    gone = [a for a in small.catalog("aipix")["archives"] if not a["is_file_exists"]]
    assert gone and not any(a["name"] in names for a in gone)
    assert sorted(os.listdir(root / "Parking ∕ Gate B")) == ["high"]  # its low stream has only a gone file
    assert "Old archive, file.20240401-100000-101000.mp4" not in names  # created outside the window
    # `vidfs ls` tells what is not a file, and why.
    result = subprocess.run(
        vidfs_cmd("ls", str(config), f"{INSTANCE}/City , st. Street 1/high"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert re.search(r"City , st\. Street 1, file\.20240513-070000-071000\.mp4.*file deleted", result.stdout)
