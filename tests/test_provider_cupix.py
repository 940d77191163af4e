"""Cupix: the emulator (in-process) and the provider over real mounts.

What the issue asks to show, test by test:
- storage never sees a Cupix credential: `test_mount_reads_everything_and_storage_sees_no_credential`;
- a storage URL expiring in the middle of a long read is renewed:
  `test_storage_url_expiring_mid_read_is_renewed`;
- pagination over 3+ pages at every level, videos not done absent:
  `test_emulator_pages_every_level`, `test_mount_pages_every_level_and_hides_videos_not_done`;
- a 400 / a 401 give one clear log line and the right errno: `test_listing_400_is_eio_with_one_log_line`,
  `test_wrong_token_is_eacces_with_one_log_line`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Emulator, emulator_fixture, start_emulator, stop_process, vidfs_cmd, wait_until
from tests.inprocess import site_fixtures
from tests.providers import CASES
from vidfs.emulator.cupix import DEFAULT_TOKEN, CupixSite, amz_date
from vidfs.providers.cupix import local_date, parse_time

INSTANCE = "site"
LEVELS = ("workspaces", "facilities", "records", "captures", "videos")
LEVEL_1 = "Acme Construction/Harbor View Tower/2023-11-17/Level 1"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# the emulator, in-process


site, _reset = site_fixtures(
    lambda media_dir: CupixSite(),
    {"page_size": 2, "url_lifetime": 300, "token": DEFAULT_TOKEN},
    {"action": "clear_failures"},
)


@pytest.fixture
def api(site: CupixSite) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{site.url}/api/v1", headers={"X-CUPIX-AUTH": DEFAULT_TOKEN}, timeout=10
    ) as client:
        yield client


def pages(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following pagination.next_page."""
    out: list[dict[str, Any]] = []
    page: int | None = 1
    while page is not None:
        r = api.get(path, params={**params, "page": page})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"result", "session"} and body["session"] is None
        assert set(body["result"]) == {"data", "pagination"}
        out.append(body["result"])
        page = body["result"]["pagination"]["next_page"]
    return out


def test_emulator_envelope_and_fields(site: CupixSite, api: httpx.Client) -> None:
    # The seed's own sample: 'id, name, state' (with spaces) for a capture's videos.
    result = pages(api, "/videos", capture_id=501, fields="id, name, state")
    first = result[0]
    assert set(first["pagination"]) == {
        "total_entries", "total_pages", "per_page", "previous_page", "current_page", "next_page",
    }  # fmt: skip
    assert first["pagination"]["total_entries"] == 6 and first["pagination"]["per_page"] == 2
    items = [item for page in result for item in page["data"]]
    assert len(items) == 6
    for item in items:
        assert set(item) == {"id", "type", "attributes"} and item["type"] == "video"
        assert isinstance(item["id"], str) and item["attributes"]["id"] == int(item["id"])
        assert set(item["attributes"]) == {"id", "name", "state"}  # only what was asked
    assert {i["attributes"]["state"] for i in items} == {"done", "created", "failed"}

    full = api.get("/videos", params={"capture_id": 501, "fields": "id,filesize,camera,updated_at,uuid"})
    video = full.json()["result"]["data"][0]["attributes"]
    assert set(video) == {"id", "filesize", "camera", "updated_at", "uuid"}
    assert set(video["camera"]) == {"make", "model", "serial_number"}
    assert video["updated_at"].endswith("Z") and parse_time(video["updated_at"]) is not None

    me = api.get("/me", params={"fields": "id"}).json()
    assert me == {"result": {"data": {"id": "7", "type": "user", "attributes": {"id": 7}}}, "session": None}


def test_emulator_errors(site: CupixSite, api: httpx.Client) -> None:
    r = api.get("/videos", params={"capture_id": 501})
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"result", "session"} and body["session"] is None
    assert set(body["result"]) == {"code", "type", "reason", "message"}
    assert "fields" in body["result"]["message"]
    assert api.get("/workspaces", params={"fields": "id", "order_by": "nope"}).status_code == 400

    for headers in ({}, {"X-CUPIX-AUTH": "wrong-token"}):
        r = httpx.get(f"{site.url}/api/v1/workspaces", params={"fields": "id"}, headers=headers)
        assert r.status_code == 401 and r.content == b""
    assert api.get("/videos", params={"capture_id": 999999, "fields": "id"}).status_code == 404
    assert api.get("/videos/9003/download").status_code == 404  # state created: nothing to download

    site.mutate({"action": "fail", "endpoint": "facilities", "status": 400, "message": "bad facility query"})
    r = api.get("/facilities", params={"workspace_id": 11, "fields": "id"})
    assert r.status_code == 400 and r.json()["result"]["message"] == "bad facility query"
    site.mutate({"action": "clear_failures"})
    assert api.get("/facilities", params={"workspace_id": 11, "fields": "id"}).status_code == 200


def test_emulator_pages_every_level(site: CupixSite, api: httpx.Client) -> None:
    parents = {
        "workspaces": {},
        "facilities": {"workspace_id": 11},
        "records": {"facility_key": "hvt-2c9e41"},
        "captures": {"record_id": 301},
        "videos": {"capture_id": 501},
    }
    for level, params in parents.items():
        result = pages(api, f"/{level}", fields="id", order_by="id", sort="asc", **params)
        assert len(result) >= 3, level
        ids = [int(item["id"]) for page in result for item in page["data"]]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), level
        assert result[-1]["pagination"]["next_page"] is None


def test_emulator_redirects_to_signed_storage(site: CupixSite, api: httpx.Client) -> None:
    video = next(v for v in site.catalog()["videos"] if v["id"] == 9001)
    r = api.get("/videos/9001/download")
    assert r.status_code == 302
    location = r.headers["location"]
    storage = urlsplit(location)
    assert (storage.hostname, storage.port) != (urlsplit(site.url).hostname, urlsplit(site.url).port)
    assert storage.path.startswith("/storage/")
    query = parse_qs(storage.query)
    assert query["X-Amz-Expires"] == ["300"] and "X-Amz-Signature" in query

    data = Path(video["path_on_disk"]).read_bytes()
    ranged = httpx.get(location, headers={"Range": "bytes=100-1123"})
    assert ranged.status_code == 206 and ranged.content == data[100:1124]
    assert ranged.headers["etag"] == video["etag"]
    assert httpx.head(location).headers["content-length"] == str(video["size"])

    tampered = location.replace("X-Amz-Expires=300", "X-Amz-Expires=999999")
    r = httpx.get(tampered)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    # A correctly signed URL whose lifetime is over (signed an hour ago for 60 s).
    path = storage.path
    old = amz_date(int(parse_time(video["updated_at"]) or 0))
    signature = site._signature(path, old, "60")
    expired = f"{site.storage.url}{path}?X-Amz-Date={old}&X-Amz-Expires=60&X-Amz-Signature={signature}"
    r = httpx.get(expired)
    assert r.status_code == 403 and b"Request has expired" in r.content

    # The storage counts requests carrying a provider credential (the mount tests assert zero).
    before = site.settings()["storage_requests_with_credentials"]
    httpx.get(location, headers={"X-CUPIX-AUTH": DEFAULT_TOKEN, "Range": "bytes=0-0"})
    # A request is logged once answered: the client may see the answer a moment before the log does.
    wait_until(
        lambda: site.settings()["storage_requests_with_credentials"] == before + 1, "the log entry", 10
    )
    assert site.catalog()["storage"]["requests_with_credentials"] == before + 1

    # Faults posted to the main site reach the storage origin too (one switchboard).
    site.faults.set_rules([{"kind": "status", "status": 503, "path": "^/storage/", "count": 1}])
    assert httpx.get(location).status_code == 503
    assert api.get("/workspaces", params={"fields": "id"}).status_code == 200


def test_emulator_url_lifetime_and_mutations(site: CupixSite, api: httpx.Client) -> None:
    site.update_settings({"url_lifetime": 2})
    location = api.get("/videos/9002/download").headers["location"]
    assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["2"]
    assert httpx.get(location, headers={"Range": "bytes=0-0"}).status_code == 206
    site.mutate({"action": "expire_tokens"})
    assert httpx.get(location, headers={"Range": "bytes=0-0"}).status_code == 403
    fresh = api.get("/videos/9002/download").headers["location"]
    assert httpx.get(fresh, headers={"Range": "bytes=0-0"}).status_code == 206


def test_time_helpers() -> None:
    assert local_date("2023-11-17T23:30:00.000-05:00") == "2023-11-17"  # the date on site, not UTC's
    assert local_date("2023-11-18T07:00:00.000+09:00") == "2023-11-18"
    assert parse_time("2023-11-17T10:15:00.000Z") == 1700216100.0
    assert parse_time("2023-11-17T10:15:00") == 1700216100.0
    assert parse_time("yesterday") is None and local_date(None) is None


# ---------------------------------------------------------------------------------------------------------
# real mounts


emulator = emulator_fixture("cupix")


@pytest.fixture
def fresh(emulator: Emulator) -> Iterator[Emulator]:
    """The shared emulator with empty request logs, no faults and no failure switches (before and after)."""

    def reset() -> None:
        emulator.post("cupix", "faults", {"rules": []})
        emulator.post("cupix", "mutate", {"action": "clear_failures"})
        emulator.post("cupix", "requests/clear", {})
        httpx.post(f"{storage_control(emulator)}/requests/clear", timeout=10).raise_for_status()

    reset()
    yield emulator
    reset()


def storage_control(emulator: Emulator) -> str:
    return str(emulator.endpoints["cupix"]["subsites"]["cupix-storage"]["control_url"]).rstrip("/")


def storage_log(emulator: Emulator) -> list[dict[str, Any]]:
    """The storage origin's own request log (its own control URL)."""
    return list(httpx.get(f"{storage_control(emulator)}/requests", timeout=30).json())


def api_log(emulator: Emulator) -> list[dict[str, Any]]:
    """The API origin's requests (the main control URL lists the storage's too, marked by `origin`)."""
    return [e for e in emulator.requests("cupix") if e.get("origin", "cupix") == "cupix"]


def walk_files(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = path
    return out


def mount_log_lines(log_text: str, pattern: str) -> list[str]:
    return [line for line in log_text.splitlines() if re.search(pattern, line)]


def test_mount_reads_everything_and_storage_sees_no_credential(
    fresh: Emulator, make_config: Any, mounts: Any
) -> None:
    table = fresh.config("cupix")
    mount = mounts(make_config({INSTANCE: table}))
    expected = CASES["cupix"].expected(fresh.catalog("cupix"))
    files = walk_files(mount.path / INSTANCE)
    assert sorted(files) == sorted(expected)
    for rel, path in sorted(files.items()):
        data = path.read_bytes()
        assert len(data) == expected[rel].size and _sha256(data) == expected[rel].sha256, rel

    # Storage: every file was read from it, none of its requests carried a Cupix credential.
    log = storage_log(fresh)
    assert {e["status"] for e in log} <= {200, 206}
    catalog = fresh.catalog("cupix")
    read_paths = {urlsplit(e["path"]).path for e in log}
    for video in (v for v in catalog["videos"] if v["visible"]):
        assert any(video["uuid"] in p for p in read_paths), video["name"]
    for entry in log:
        assert not {"x-cupix-auth", "authorization", "cookie"} & set(entry["headers"]), entry
        assert table["token"] not in entry["path"] and table["token"] not in str(entry["headers"])
    storage = catalog["storage"]
    assert storage["requests"] >= len(expected) and storage["requests_with_credentials"] == 0

    # The API: the token on every call, fields= on every list, downloads resolved without following.
    api = api_log(fresh)
    assert api
    for entry in api:
        assert entry["headers"].get("x-cupix-auth") == table["token"], entry["path"]
    for entry in api:
        if not re.search(r"/download$", urlsplit(entry["path"]).path):
            assert "fields" in parse_qs(urlsplit(entry["path"]).query), entry["path"]
    downloads = [e for e in api if re.search(CASES["cupix"].login_path, e["path"])]
    assert downloads and {e["status"] for e in downloads} == {302}


def test_mount_pages_every_level_and_hides_videos_not_done(
    fresh: Emulator, make_config: Any, mounts: Any
) -> None:
    mount = mounts(make_config({INSTANCE: fresh.config("cupix")}))
    root = mount.path / INSTANCE
    assert sorted(os.listdir(root)) == [
        "Acme Construction", "Beta Builders", "Delta Homes", "Gamma Infrastructure", "Omega Facilities",
    ]  # fmt: skip
    assert sorted(os.listdir(root / "Acme Construction")) == [
        "Depot 7", "Eastside Lofts ∕ Phase 2", "Harbor View Tower", "Northgate School", "Riverside Clinic",
    ]  # fmt: skip
    assert sorted(os.listdir(root / "Acme Construction/Harbor View Tower")) == [
        "2023-11-17", "2023-11-24 [rec:302]", "2023-11-24 [rec:303]", "2023-12-01", "2023-12-08",
    ]  # fmt: skip
    assert sorted(os.listdir(root / "Acme Construction/Harbor View Tower/2023-11-17")) == [
        "Level 1", "Level 2", "Level 3", "Parking", "Roof",
    ]  # fmt: skip
    # Six videos over three pages; only the three `done` ones are files (pairs keep their names).
    assert sorted(os.listdir(root / LEVEL_1)) == [
        "VID_20231117_101500_00_038.insv", "VID_20231117_101500_10_038.insv", "site_overview.mp4",
    ]  # fmt: skip
    roof = sorted(os.listdir(root / "Acme Construction/Harbor View Tower/2023-11-17/Roof"))
    assert roof == [
        "VID_20231117_140000_00_045 [9031].insv", "VID_20231117_140000_00_045 [9032].insv", "roof_drone.mp4",
    ]  # fmt: skip
    assert os.listdir(root / "Acme Construction/Eastside Lofts ∕ Phase 2/2023-11-28/Unit 4B") == []

    catalog = fresh.catalog("cupix")
    not_done = {v["name"] for v in catalog["videos"] if v["state"] != "done"}
    assert not_done and not_done.isdisjoint({Path(p).name for p in walk_files(root)})
    for video in catalog["videos"]:
        if video["state"] != "done":
            with pytest.raises(FileNotFoundError):
                os.stat(root / LEVEL_1 / video["name"])

    # Every level was listed over at least three pages (page size 2), each with fields=.
    api = api_log(fresh)
    for level in LEVELS:
        listed = [urlsplit(e["path"]) for e in api if urlsplit(e["path"]).path == f"/api/v1/{level}"]
        assert listed, level
        assert any(parse_qs(u.query).get("page") == ["3"] for u in listed), level
        assert all(parse_qs(u.query).get("fields") for u in listed), level
        assert all(parse_qs(u.query).get("order_by") == ["id"] for u in listed), level

    # `vidfs ls` tells the hidden videos with their states.
    result = subprocess.run(
        vidfs_cmd("ls", str(mount.config), f"{INSTANCE}/{LEVEL_1}"),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "VID_20231117_102000_00_039.insv  (not a file: created)" in result.stdout
    assert "VID_20231117_103000_00_040.insv  (not a file: failed)" in result.stdout


def test_xattrs_and_mtimes(fresh: Emulator, make_config: Any, mounts: Any) -> None:
    mount = mounts(make_config({INSTANCE: fresh.config("cupix")}))
    path = mount.path / INSTANCE / LEVEL_1 / "VID_20231117_101500_00_038.insv"
    video = next(v for v in fresh.catalog("cupix")["videos"] if v["id"] == 9001)

    def attr(name: str) -> str:
        return os.getxattr(path, f"user.vidfs.{name}").decode()

    assert attr("state") == "done"
    assert (attr("camera_make"), attr("camera_model")) == ("Insta360", "ONE X2")
    assert attr("camera_serial") == video["camera"]["serial_number"]
    assert (attr("capture_id"), attr("record_id"), attr("remote_id")) == ("501", "301", "9001")
    assert attr("uuid") == video["uuid"] and attr("provider") == INSTANCE
    assert int(path.stat().st_mtime) == video["mtime_epoch"] and path.stat().st_size == video["filesize"]
    record_dir = mount.path / INSTANCE / "Acme Construction/Harbor View Tower/2023-11-17"
    assert os.getxattr(record_dir, "user.vidfs.record_id") == b"301"
    assert os.getxattr(record_dir, "user.vidfs.captured_at").startswith(b"2023-11-17T10:00:00.000+09:00")
    facility = mount.path / INSTANCE / "Acme Construction/Harbor View Tower"
    assert os.getxattr(facility, "user.vidfs.facility_key") == b"hvt-2c9e41"


def test_storage_url_expiring_mid_read_is_renewed(
    tmp_path: Path, media_dir: Path, make_config: Any, mounts: Any
) -> None:
    emu = start_emulator(tmp_path / "emulator", ["cupix"], media_dir, "--set", "cupix.url_lifetime=2")
    try:
        catalog = emu.catalog("cupix")
        video = next(v for v in catalog["videos"] if v["name"] == "site_overview.mp4")
        source = Path(video["path_on_disk"]).read_bytes()
        # Slow storage (faults posted to the main site reach it) and one connection: every ranged GET pays
        # the latency, so the reads below outlast the 2-second URL.
        emu.post("cupix", "faults", {"rules": [{"kind": "latency", "seconds": 0.5, "path": "^/storage/"}]})
        config = make_config({INSTANCE: emu.config("cupix")}, extra="[http]\nmax_connections_per_host = 1\n")
        mount = mounts(config)
        path = mount.path / INSTANCE / LEVEL_1 / "site_overview.mp4"
        fd = os.open(path, os.O_RDONLY)
        try:
            # Backwards, far apart: no read-ahead can serve one from another, each is its own request.
            for offset in range(len(source) - 100_000, 0, -350_000):
                assert os.pread(fd, 4096, offset) == source[offset : offset + 4096], offset
        finally:
            os.close(fd)
        assert _sha256(path.read_bytes()) == _sha256(source)

        uuid = video["uuid"]
        reads = [e for e in storage_log(emu) if uuid in e["path"]]
        signatures = {parse_qs(urlsplit(e["path"]).query)["X-Amz-Signature"][0] for e in reads}
        assert len(signatures) >= 2, "the storage URL was never renewed"
        assert all(e["status"] in (206, 200, 403) for e in reads)
        downloads = [e for e in api_log(emu) if re.search(r"/videos/9005/download", e["path"])]
        assert len(downloads) >= 2
        assert emu.catalog("cupix")["storage"]["requests_with_credentials"] == 0
    finally:
        stop_process(emu.process)


def test_listing_400_is_eio_with_one_log_line(fresh: Emulator, make_config: Any, mounts: Any) -> None:
    table = fresh.config("cupix")
    mount = mounts(make_config({INSTANCE: table}))
    fresh.post(
        "cupix",
        "mutate",
        {"action": "fail", "endpoint": "facilities", "status": 400, "message": "unknown attribute: fields"},
    )
    for _ in range(2):  # the same failure twice: still one line
        with pytest.raises(OSError) as info:
            os.listdir(mount.path / INSTANCE / "Beta Builders")
        assert info.value.errno == errno.EIO
    text = mount.log_text()
    lines = mount_log_lines(text, "HTTP 400")
    assert len(lines) == 1, lines
    assert "listing facilities of workspace 'Beta Builders'" in lines[0]
    assert "InvalidParameter: unknown attribute: fields" in lines[0]
    assert table["token"] not in text and "Traceback" not in text


def test_wrong_token_is_eacces_with_one_log_line(fresh: Emulator, make_config: Any, mounts: Any) -> None:
    table = {**fresh.config("cupix"), "token": "not-the-token-1234"}
    mount = mounts(make_config({INSTANCE: table}))
    for _ in range(2):
        with pytest.raises(PermissionError) as info:
            os.listdir(mount.path / INSTANCE)
        assert info.value.errno == errno.EACCES
    text = mount.log_text()
    lines = mount_log_lines(text, "HTTP 401")
    assert len(lines) == 1, lines
    assert "Cupix refused the API token" in lines[0] and "listing workspaces" in lines[0]
    assert "not-the-token-1234" not in text and "Traceback" not in text
    # Every 401 came from the API: nothing ever went to storage.
    assert storage_log(fresh) == []


def test_capture_ids_alone_use_only_the_videos_endpoint(
    fresh: Emulator, make_config: Any, mounts: Any
) -> None:
    table = {**fresh.config("cupix"), "capture_ids": [504, 513]}
    mount = mounts(make_config({INSTANCE: table}))
    root = mount.path / INSTANCE
    assert sorted(os.listdir(root)) == ["capture 504", "capture 513"]
    assert sorted(os.listdir(root / "capture 504")) == [
        "VID_20231117_140000_00_045 [9031].insv", "VID_20231117_140000_00_045 [9032].insv", "roof_drone.mp4",
    ]  # fmt: skip
    catalog = fresh.catalog("cupix")
    no_size = next(v for v in catalog["videos"] if v["id"] == 9061)  # filesize null: the size from a HEAD
    path = root / "capture 513" / no_size["name"]
    assert path.stat().st_size == no_size["size"]
    assert _sha256(path.read_bytes()) == no_size["sha256"]
    assert os.getxattr(path, "user.vidfs.capture_id") == b"513"
    paths = {urlsplit(e["path"]).path for e in api_log(fresh)}
    assert paths <= {"/api/v1/me", "/api/v1/videos", "/api/v1/videos/9061/download"}, paths
    assert "/api/v1/videos" in paths and "/api/v1/me" in paths


def test_facility_keys_put_facilities_at_the_root(
    fresh: Emulator, make_config: Any, mounts: Any, tmp_path: Path
) -> None:
    table = {**fresh.config("cupix"), "facility_keys": ["rvc-81d07a", "atb-77e2c5", "no-such-key"]}
    config = make_config({INSTANCE: table})
    mount = mounts(config)
    root = mount.path / INSTANCE
    assert sorted(os.listdir(root)) == ["Airport Terminal B", "Riverside Clinic"]
    clip = root / "Riverside Clinic/2023-11-20/Ground floor/clinic_walk.mp4"
    video = next(v for v in fresh.catalog("cupix")["videos"] if v["id"] == 9101)
    assert _sha256(clip.read_bytes()) == video["sha256"]
    result = subprocess.run(
        vidfs_cmd("ls", str(config), INSTANCE), capture_output=True, text=True, timeout=120, check=True
    )
    assert "no-such-key  (not a file: not found)" in result.stdout


def test_check_reports_a_wrong_token(fresh: Emulator, make_config: Any) -> None:
    for extra in ({}, {"capture_ids": [501]}):
        table = {**fresh.config("cupix"), **extra, "token": "not-the-token-5678"}
        config = make_config({INSTANCE: table}, name="bad.toml")
        result = subprocess.run(
            vidfs_cmd("check", str(config)), capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 1 and "FAIL" in result.stdout and "HTTP 401" in result.stdout
        assert "not-the-token-5678" not in result.stdout + result.stderr
