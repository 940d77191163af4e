"""The emulator framework and the Pixop emulator, in-process (fast once the sample media exist)."""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.inprocess import site_fixtures
from vidfs.emulator import known_emulators, media
from vidfs.emulator.pixop import DEFAULT_EMAIL, DEFAULT_PASSWORD, PixopSite
from vidfs.emulator.server import HttpError, Request, Site, serve_file, start_sites

REPO = Path(__file__).resolve().parent.parent
LOGGED_FIELDS = frozenset({"time", "duration", "method", "seq"})  # every entry of the request log


# ---------------------------------------------------------------------------------------------------------
# fixtures


site, _clean = site_fixtures(
    lambda media_dir: PixopSite(media_dir=media_dir, page_size=2), {"jwt_lifetime": 900, "page_size": 2}
)


@pytest.fixture
def client(site: PixopSite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=10) as c:
        yield c


def token_for(client: httpx.Client) -> str:
    r = client.get("/accounts/v1/token", auth=(DEFAULT_EMAIL, DEFAULT_PASSWORD))
    assert r.status_code == 200, r.text
    return str(r.json()["jwtToken"])


@pytest.fixture
def auth(client: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(client)}"}


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def by_file(site: PixopSite, file_name: str) -> dict[str, Any]:
    matches = [v for v in site.catalog()["videos"] if v["fileName"] == file_name]
    assert len(matches) == 1, file_name
    return matches[0]


def follow_pages(client: httpx.Client, url: str, auth: dict[str, str], key: str) -> list[dict[str, Any]]:
    pages = []
    while url:
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        url = page["_links"].get("next", {}).get("href")
    return pages


# ---------------------------------------------------------------------------------------------------------
# accounts and JWT


def test_token_flow(site: PixopSite, client: httpx.Client) -> None:
    before = int(time.time())
    r = client.get("/accounts/v1/token", auth=(DEFAULT_EMAIL, DEFAULT_PASSWORD))
    after = int(time.time()) + 1
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"userId", "teamId", "jwtToken"}
    header = json.loads(base64.urlsafe_b64decode(body["jwtToken"].split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    claims = jwt_claims(body["jwtToken"])
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert before <= claims["iat"] <= after  # issued by this request
    auth = {"Authorization": f"Bearer {body['jwtToken']}"}

    info = client.post("/accounts/v1/token", headers=auth).json()
    assert info["user"]["id"] == body["userId"] and info["team"]["id"] == body["teamId"]
    assert "apiRequestSignatureSethod" in info["user"]  # the reference page's spelling
    assert [t["id"] for t in info["otherTeams"]] and info["otherTeams"][0]["id"] != body["teamId"]
    account = client.get("/accounts/v1/account", headers=auth).json()
    assert account["user"]["email"] == DEFAULT_EMAIL and account["team"]["id"] == body["teamId"]

    # team-id selects another team: it owns no projects
    other = info["otherTeams"][0]["id"]
    r = client.get("/accounts/v1/token", params={"team-id": other}, auth=(DEFAULT_EMAIL, DEFAULT_PASSWORD))
    assert r.json()["teamId"] == other
    projects = client.get("/videos/v1/projects", headers={"Authorization": f"Bearer {r.json()['jwtToken']}"})
    assert projects.json()["_embedded"]["projects"] == []

    bad = client.get("/accounts/v1/token", auth=(DEFAULT_EMAIL, "wrong"))
    assert bad.status_code == 401
    assert set(bad.json()) == {"exception", "errorMessage"}

    # the new lifetime applies to new tokens
    site.update_settings({"jwt_lifetime": 3})
    claims = jwt_claims(token_for(client))
    assert claims["exp"] - claims["iat"] == 3


def test_the_three_jwt_failures(site: PixopSite, client: httpx.Client) -> None:
    def exception(headers: dict[str, str]) -> str:
        r = client.get("/videos/v1/projects", headers=headers)
        assert r.status_code == 401
        assert set(r.json()) == {"exception", "errorMessage"}
        return str(r.json()["exception"])

    assert exception({}) == "NoJWTTokenFoundException"
    basic = base64.b64encode(f"{DEFAULT_EMAIL}:{DEFAULT_PASSWORD}".encode()).decode()
    assert exception({"Authorization": f"Basic {basic}"}) == "NoJWTTokenFoundException"
    good = token_for(client)
    head, payload, sig = good.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    assert exception({"Authorization": f"Bearer {forged}"}) == "InvalidJWTTokenFoundException"
    assert exception({"Authorization": "Bearer not-a-jwt"}) == "InvalidJWTTokenFoundException"

    site.update_settings({"jwt_lifetime": 0})
    expired = token_for(client)
    assert exception({"Authorization": f"Bearer {expired}"}) == "ExpiredJWTTokenException"
    site.update_settings({"jwt_lifetime": 900})

    # expiring every issued token (control API), then a fresh token works again
    assert client.get("/videos/v1/projects", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    assert client.post("/_emulator/mutate", json={"action": "expire_tokens"}).status_code == 200
    assert exception({"Authorization": f"Bearer {good}"}) == "ExpiredJWTTokenException"
    fresh = token_for(client)
    assert client.get("/videos/v1/projects", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    # the settings knob does the same
    client.post("/_emulator/settings", json={"expire_all_tokens": True})
    assert exception({"Authorization": f"Bearer {fresh}"}) == "ExpiredJWTTokenException"
    # downloads need the JWT too
    video = by_file(site, "interview.mp4")
    assert client.get(f"/media/v1/download/original/{video['id']}").status_code == 401


# ---------------------------------------------------------------------------------------------------------
# videos service


def test_projects_hal_pagination(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    pages = follow_pages(client, "/videos/v1/projects", auth, "projects")
    assert len(pages) == 2
    names = [p["name"] for page in pages for p in page["_embedded"]["projects"]]
    assert names == [p["name"] for p in site.catalog()["projects"]]
    assert len(names) >= 3
    first = pages[0]
    assert first["pageSize"] == 2 and first["page"] == 1
    assert first["_embedded"]["totalFound"] == len(names)
    for rel in ("self", "next", "first", "last"):
        assert first["_links"][rel]["href"].startswith(f"{site.url}/videos/v1/projects?")
    assert "previous" not in first["_links"]
    assert "next" not in pages[-1]["_links"] and "previous" in pages[-1]["_links"]
    assert pages[-1]["_links"]["self"]["href"] == first["_links"]["last"]["href"]
    item = first["_embedded"]["projects"][0]
    assert set(item) == {"_links", "id", "name", "dateCreated", "timeLastUpdated"}
    assert item["_links"]["self"]["href"] == f"{site.url}/videos/v1/project/{item['id']}"
    time.strptime(item["timeLastUpdated"], "%Y-%m-%d %H:%M:%S")

    detail = client.get(f"/videos/v1/project/{item['id']}", headers=auth).json()["project"]
    assert detail["name"] == item["name"] and detail["teamId"]
    missing = client.get("/videos/v1/project/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["exception"] == "ProjectNotFoundException"


def test_videos_hal_pagination_spans_three_pages(
    site: PixopSite, client: httpx.Client, auth: dict[str, str]
) -> None:
    project = next(p for p in site.catalog()["projects"] if p["name"] == "Restoration demo")
    pages = follow_pages(client, f"/videos/v1/videos?project-id={project['id']}", auth, "videos")
    assert len(pages) >= 3
    videos = [v for page in pages for v in page["_embedded"]["videos"]]
    expected = [v for v in site.catalog()["videos"] if v["projectId"] == project["id"]]
    assert [v["id"] for v in videos] == [v["id"] for v in expected]
    assert pages[0]["_embedded"]["totalFound"] == len(expected) >= 5
    assert all(f"project-id={project['id']}" in p["_links"]["self"]["href"] for p in pages)
    assert pages[1]["_links"]["previous"]["href"] == pages[0]["_links"]["self"]["href"]
    item = videos[0]
    assert set(item) == {"_links", "id", "projectId", "name", "filename", "dateCreated", "timeLastUpdated"}
    processed = [v for v in videos if "parentId" in v]
    assert processed and all(v["parentId"] for v in processed)

    parent = processed[0]["parentId"]
    children = client.get("/videos/v1/videos", params={"parent-id": parent}, headers=auth).json()
    assert {v["id"] for v in children["_embedded"]["videos"]} == {v["id"] for v in processed}

    everything = client.get("/videos/v1/videos", params={"page-size": 100}, headers=auth).json()
    assert everything["_embedded"]["totalFound"] == len(site.catalog()["videos"])
    assert "next" not in everything["_links"]
    beyond = client.get("/videos/v1/videos", params={"page": 99}, headers=auth).json()
    assert beyond["_embedded"]["videos"] == [] and "next" not in beyond["_links"]
    assert client.get("/videos/v1/videos", params={"page": "x"}, headers=auth).status_code == 400
    site.update_settings({"page_size": 3})
    assert client.get("/videos/v1/videos", headers=auth).json()["pageSize"] == 3


def test_video_detail_shape(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    interview = by_file(site, "interview.mp4")
    v = client.get(f"/videos/v1/video/{interview['id']}", headers=auth).json()["video"]
    assert v["id"] == interview["id"] and v["projectId"] == interview["projectId"]
    up = v["upload"]
    assert up["hasFinishedUploading"] is True and up["fileName"] == "interview.mp4"
    assert up["fileSize"] == interview["size"] and up["fileType"] == "video/mp4"
    assert up["uploadState"]["uploadStatus"] == "DONE" and up["fileContainerName"]
    meta = v["ingestion"]["metadata"]
    assert (meta["frameWidth"], meta["frameHeight"], meta["codecName"]) == (640, 360, "h264")
    assert meta["durationInMillis"] == 6000 and meta["totalFrames"] == 150
    assert meta["averageFramerate"] == 25.0 and meta["size"] == interview["size"]
    assert "mp4" in meta["containerName"]
    assert v["ingestion"]["ingestionState"]["ingestionStatus"] == "DONE"
    assert (
        calendar.timegm(time.strptime(v["timeLastUpdated"], "%Y-%m-%d %H:%M:%S")) == interview["mtime_epoch"]
    )
    assert "processing" not in v

    hd = by_file(site, "interview_pixop_hd_1080p.mp4")
    p = client.get(f"/videos/v1/video/{hd['id']}", headers=auth).json()["video"]
    assert p["parentId"] == interview["id"]
    assert p["processing"]["processingState"]["processingStatus"] == "DONE"
    target = p["processing"]["processingParameters"]["targetVideo"]
    assert {"preset", "container", "codec"} <= set(target) and target["preset"]["name"] == "hd_1080p"

    uhd = by_file(site, "interview_pixop_uhd_4k.mp4")
    q = client.get(f"/videos/v1/video/{uhd['id']}", headers=auth).json()["video"]
    assert q["processing"]["processingState"]["processingStatus"] == "IN_PROGRESS"
    assert "fileSize" not in q["upload"] and not uhd["visible"]

    pending = by_file(site, "pending_upload.mp4")
    w = client.get(f"/videos/v1/video/{pending['id']}", headers=auth).json()["video"]
    assert w["upload"]["hasFinishedUploading"] is False and "fileSize" not in w["upload"]

    no_size = by_file(site, "no_size.mp4")
    n = client.get(f"/videos/v1/video/{no_size['id']}", headers=auth).json()["video"]
    assert n["upload"]["hasFinishedUploading"] is True and "fileSize" not in n["upload"]
    assert "size" not in n["ingestion"]["metadata"] and no_size["visible"]

    progress = client.get(f"/videos/v1/check-process-video-progress/{uhd['id']}", headers=auth).json()
    assert progress["processingState"]["processingProgressPercent"] == 42.5
    ingest = client.get(f"/videos/v1/check-ingest-video-progress/{pending['id']}", headers=auth).json()
    assert ingest["ingestionState"]["videoMetadataAvailable"] is False

    missing = client.get("/videos/v1/video/00000000-0000-0000-0000-000000000000", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["exception"] == "VideoNotFoundException" and missing.json()["errorMessage"]


# ---------------------------------------------------------------------------------------------------------
# media service


def test_download_ranges_etag_and_disposition(
    site: PixopSite, client: httpx.Client, auth: dict[str, str]
) -> None:
    video = by_file(site, "interview.mp4")
    url = f"/media/v1/download/original/{video['id']}"
    data = Path(video["path_on_disk"]).read_bytes()
    total = len(data)

    head = client.head(url, headers=auth)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(total)
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["etag"] == video["etag"]
    assert head.headers["content-disposition"] == 'attachment; filename="interview.mp4"'
    assert head.headers["content-type"] == "video/mp4"

    full = client.get(url, headers=auth)
    assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == video["sha256"]

    for spec, (a, b) in {
        "bytes=10-99": (10, 99),
        f"bytes={total - 5}-": (total - 5, total - 1),
        "bytes=-100": (total - 100, total - 1),
        f"bytes=0-{total + 1000}": (0, total - 1),
    }.items():
        r = client.get(url, headers={**auth, "Range": spec})
        assert r.status_code == 206, spec
        assert r.headers["content-range"] == f"bytes {a}-{b}/{total}"
        assert r.content == data[a : b + 1]
        assert r.headers["content-length"] == str(b - a + 1)
    ranged_head = client.head(url, headers={**auth, "Range": "bytes=0-9"})
    assert ranged_head.status_code == 206 and ranged_head.headers["content-length"] == "10"

    r = client.get(url, headers={**auth, "Range": f"bytes={total}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{total}"
    multi = client.get(url, headers={**auth, "Range": "bytes=0-1,5-6"})
    assert multi.status_code == 200 and len(multi.content) == total

    r = client.get(url, headers={**auth, "If-None-Match": video["etag"]})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == video["etag"]
    r = client.get(url, headers={**auth, "If-None-Match": '"other"', "Range": "bytes=0-0"})
    assert r.status_code == 206

    r = client.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": video["etag"]})
    assert r.status_code == 206 and r.content == data[:10]
    r = client.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and len(r.content) == total
    r = client.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": head.headers["last-modified"]})
    assert r.status_code == 206

    # the processed service does not serve originals, nor the original service processed media
    assert client.get(f"/media/v1/download/processed/{video['id']}", headers=auth).status_code == 404
    hd = by_file(site, "interview_pixop_hd_1080p.mp4")
    assert client.head(f"/media/v1/download/original/{hd['id']}", headers=auth).status_code == 404
    r = client.get(f"/media/v1/download/processed/{hd['id']}", headers={**auth, "Range": "bytes=0-3"})
    assert r.status_code == 206
    assert r.headers["content-disposition"] == 'attachment; filename="interview_pixop_hd_1080p.mp4"'
    # hidden ones are not downloadable
    for name, kind in (("interview_pixop_uhd_4k.mp4", "processed"), ("pending_upload.mp4", "original")):
        r = client.get(f"/media/v1/download/{kind}/{by_file(site, name)['id']}", headers=auth)
        assert r.status_code == 404 and r.json()["exception"] == "MediaNotFoundException"
    # non-ASCII file names get an RFC 5987 filename* too
    aarhus = by_file(site, "Møde i Århus.mp4")
    r = client.head(f"/media/v1/download/original/{aarhus['id']}", headers=auth)
    assert "filename*=UTF-8''M%C3%B8de%20i%20%C3%85rhus.mp4" in r.headers["content-disposition"]


def test_catalog_matches_what_is_served(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    catalog = client.get("/_emulator/catalog").json()
    assert catalog["provider"] == "pixop" and len(catalog["projects"]) >= 3
    keys = {"id", "projectId", "parentId", "name", "fileName", "visible", "size", "sha256", "mtime_epoch"}
    keys |= {"etag", "path_on_disk", "kind", "status"}
    hidden = set()
    for v in catalog["videos"]:
        assert keys <= set(v)
        url = f"/media/v1/download/{v['kind']}/{v['id']}"
        if not v["visible"]:
            hidden.add(v["fileName"])
            assert client.head(url, headers=auth).status_code == 404
            continue
        digest = hashlib.sha256()
        with client.stream("GET", url, headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["etag"] == v["etag"]
            for chunk in r.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == v["sha256"], v["fileName"]
        assert int(r.headers["content-length"]) == v["size"]
    assert hidden == {"interview_pixop_uhd_4k.mp4", "pending_upload.mp4", "promo_pixop_uhd_4k.mp4"}
    names = [v["fileName"] for v in catalog["videos"] if v["visible"]]
    assert names.count("reel.mp4") == 2 and any("/" in n for n in names)
    assert any(n.endswith(".mov") for n in names)
    big = by_file(site, "big_reel.mp4")
    assert big["size"] >= 52_000_000 and media.moov_at_end(big["path_on_disk"])


# ---------------------------------------------------------------------------------------------------------
# faults


def set_faults(client: httpx.Client, *rules: dict[str, Any]) -> None:
    r = client.post("/_emulator/faults", json={"rules": list(rules)})
    assert r.status_code == 200, r.text


def test_fault_status_retry_after_latency_and_counters(
    site: PixopSite, client: httpx.Client, auth: dict[str, str]
) -> None:
    set_faults(client, {"kind": "status", "status": 502, "path": "^/videos/v1/projects", "count": 1})
    assert client.get("/videos/v1/projects", headers=auth).status_code == 502
    assert client.get("/videos/v1/projects", headers=auth).status_code == 200
    assert client.get("/_emulator/faults").json()["rules"][0]["fired"] == 1

    set_faults(client, {"kind": "retry_after", "seconds": 7, "count": 1})
    r = client.get("/videos/v1/projects", headers=auth)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert client.get("/_emulator/catalog").status_code == 200  # control API never faulted

    set_faults(client, {"kind": "latency", "seconds": 0.3, "path": "/accounts/"})
    t0 = time.monotonic()
    token_for(client)
    assert time.monotonic() - t0 >= 0.3

    # rate is drawn from a seeded RNG: the same seed fires on the same requests
    def pattern() -> list[int]:
        client.post("/_emulator/faults", json={"rules": [{"kind": "status", "rate": 0.5}], "seed": 42})
        return [client.get("/videos/v1/projects", headers=auth).status_code for _ in range(12)]

    first = pattern()
    assert first == pattern() and 503 in first and 200 in first

    r = client.post("/_emulator/faults", json={"rules": [{"kind": "nope"}]})
    assert r.status_code == 400
    log = client.get("/_emulator/requests", params={"path": "^/videos/v1/projects"}).json()
    assert 503 in [e["status"] for e in log] and all(
        "status" in e["faults"] for e in log if e["status"] == 503
    )


def test_fault_stall(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    video = by_file(site, "archive_1987.mov")
    url = f"/media/v1/download/original/{video['id']}"
    set_faults(client, {"kind": "stall", "before_headers": True, "seconds": 1.0, "count": 1})
    with pytest.raises(httpx.ReadTimeout):
        client.get(url, headers=auth, timeout=0.3)
    set_faults(client, {"kind": "stall", "seconds": 0.4, "count": 1})
    with client.stream("GET", url, headers=auth) as r:
        t0 = time.monotonic()
        assert r.status_code == 200  # headers came at once
        body = r.read()
        assert time.monotonic() - t0 >= 0.35
    assert hashlib.sha256(body).hexdigest() == video["sha256"]


def test_fault_reset_after_sends_an_rst(site: PixopSite, auth: dict[str, str]) -> None:
    video = by_file(site, "interview.mp4")
    site.faults.set_rules([{"kind": "reset_after", "bytes": 1000, "count": 1}])
    with socket.create_connection((site.host, site.port), timeout=5) as sock:
        request = (
            f"GET /media/v1/download/original/{video['id']} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {auth['Authorization']}\r\n\r\n"
        )
        sock.sendall(request.encode())
        received = b""
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break  # a FIN instead of an RST fails the test
                received += chunk
    header_end = received.find(b"\r\n\r\n")
    assert header_end > 0 or received == b""
    if header_end > 0:
        assert len(received) - header_end - 4 <= 1000
    assert site.faults.snapshot()["rules"][0]["fired"] == 1


def test_fault_short_body(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    video = by_file(site, "interview.mp4")
    set_faults(client, {"kind": "short_body", "bytes": 500, "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"/media/v1/download/original/{video['id']}", headers={**auth, "Range": "bytes=0-9999"})
    entry = site.log.entries(path="/media/")[-1]
    assert entry["bytes_sent"] == 9500 and entry["faults"] == ["short_body"]


def test_a_request_fires_only_the_rules_in_place_when_it_arrived(
    site: PixopSite, client: httpx.Client, auth: dict[str, str]
) -> None:
    """A request stalled before its headers wakes up after its client left and the next rules were set:
    it must not take them (the body fault below was meant for the next request, not for it)."""
    video = by_file(site, "interview.mp4")
    url = f"/media/v1/download/original/{video['id']}"
    set_faults(client, {"kind": "stall", "before_headers": True, "seconds": 0.5, "count": 1})
    with pytest.raises(httpx.ReadTimeout):
        client.get(url, headers=auth, timeout=0.05)
    set_faults(client, {"kind": "short_body", "bytes": 500, "count": 1})
    wait_until(lambda: site.log.entries(path="/media/")[0]["status"] is not None, "the stalled request's end")
    stalled = site.log.entries(path="/media/")[0]
    assert stalled["faults"] == ["stall_before_headers"]
    assert client.get("/_emulator/faults").json()["rules"][0]["fired"] == 0
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url, headers={**auth, "Range": "bytes=0-9999"})


def test_fault_ignore_range_and_wrong_content_range(
    site: PixopSite, client: httpx.Client, auth: dict[str, str]
) -> None:
    video = by_file(site, "interview.mp4")
    url = f"/media/v1/download/original/{video['id']}"
    data = Path(video["path_on_disk"]).read_bytes()
    set_faults(client, {"kind": "ignore_range", "count": 1})
    assert client.get(url, headers=auth).status_code == 200  # no Range: the rule is kept
    r = client.get(url, headers={**auth, "Range": "bytes=100-199"})
    assert r.status_code == 200 and r.content == data and "content-range" not in r.headers

    set_faults(client, {"kind": "wrong_content_range", "shift": 7, "count": 1})
    r = client.get(url, headers={**auth, "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 107-206/{len(data)}"
    assert r.content == data[100:200]


# ---------------------------------------------------------------------------------------------------------
# control API, mutations


def test_request_log_records_headers(site: PixopSite, client: httpx.Client, auth: dict[str, str]) -> None:
    video = by_file(site, "no_size.mp4")
    client.head(f"/media/v1/download/original/{video['id']}", headers={**auth, "X-Probe": "yes"})
    client.head(f"/media/v1/download/original/{video['id']}", headers=auth)
    log = client.get("/_emulator/requests", params={"method": "HEAD"}).json()
    assert len(log) == 2
    assert log[0]["headers"]["x-probe"] == "yes" and log[0]["headers"]["authorization"].startswith("Bearer ")
    assert log[0]["status"] == 200 and log[0]["bytes_sent"] == 0 and log[0]["path"].startswith("/media/")
    assert set(log[0]) >= LOGGED_FIELDS
    assert client.post("/_emulator/requests/clear").json()["cleared"] >= 2
    assert client.get("/_emulator/requests").json() == []
    assert client.post("/_emulator/settings", json={"nope": 1}).status_code == 400
    assert client.get("/_emulator/info").json()["config"] == site.config()


def test_mutations(media_dir: Path) -> None:
    with PixopSite(media_dir=media_dir) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        auth = {"Authorization": f"Bearer {token_for(c)}"}
        before = by_file(s, "interview.mp4")
        url = f"/media/v1/download/original/{before['id']}"
        after = c.post(
            "/_emulator/mutate", json={"action": "change_content", "video_id": before["id"]}
        ).json()
        assert after["etag"] != before["etag"] and after["sha256"] != before["sha256"]
        assert after["size"] == before["size"] and after["mtime_epoch"] > before["mtime_epoch"]
        assert "variant" in after["path_on_disk"]
        r = c.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": before["etag"]})
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == after["sha256"]
        grown = s.mutate({"action": "change_content", "video_id": before["id"], "extra_bytes": 100})
        assert grown["size"] == before["size"] + 100
        detail = c.get(f"/videos/v1/video/{before['id']}", headers=auth).json()["video"]
        assert detail["upload"]["fileSize"] == grown["size"]

        renamed = s.mutate({"action": "rename", "video_id": before["id"], "name": "new name"})
        assert renamed["name"] == "new name"
        uhd = by_file(s, "interview_pixop_uhd_4k.mp4")
        assert s.mutate({"action": "set_status", "video_id": uhd["id"], "status": "DONE"})["visible"]
        assert c.get(f"/media/v1/download/processed/{uhd['id']}", headers=auth).status_code == 200

        deleted = c.post("/_emulator/mutate", json={"action": "delete", "video_id": before["id"]}).json()
        assert len(deleted["deletedVideos"]) == 3  # the original and its two processed videos
        assert c.get(f"/videos/v1/video/{before['id']}", headers=auth).status_code == 404
        assert c.get(url, headers=auth).status_code == 404
        assert c.post("/_emulator/mutate", json={"action": "delete", "video_id": "nope"}).status_code == 404
        assert c.post("/_emulator/mutate", json={"action": "explode"}).status_code == 400
        work_dir = Path(after["path_on_disk"]).parent
    assert not work_dir.exists()


# ---------------------------------------------------------------------------------------------------------
# framework and media


def test_framework_with_a_tiny_site(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64)

    class Tiny(Site):
        def __init__(self) -> None:
            super().__init__("tiny")
            self.add_route(
                "GET", r"/hello/(?P<who>[^/]+)", lambda req: req.send_json(200, {"hi": req.params["who"]})
            )
            self.add_route(("GET", "HEAD"), r"/empty", lambda req: serve_file(req, empty, etag="e"))
            self.add_route(("GET", "HEAD"), r"/blob", lambda req: serve_file(req, blob, etag="b"))
            self.add_route("POST", r"/echo", self.echo)

        def echo(self, req: Request) -> None:
            body = req.json()
            if "fail" in body:
                raise HttpError(418, "teapot")
            req.send_json(201, body)

    with start_sites(Tiny()) as sites, httpx.Client(base_url=sites["tiny"].url, timeout=5) as c:
        assert c.get("/hello/w%C3%B8rld").json() == {"hi": "wørld"}
        assert c.post("/echo", json={"a": 1}).status_code == 201
        assert c.post("/echo", json={"fail": 1}).json() == {"error": "teapot", "status": 418}
        assert c.post("/hello/x").status_code == 405
        assert c.get("/nowhere").status_code == 404
        r = c.get("/empty")
        assert r.status_code == 200 and r.content == b"" and r.headers["etag"] == '"e"'
        assert c.get("/empty", headers={"Range": "bytes=0-"}).status_code == 416
        assert c.get("/blob", headers={"Range": "bytes=5-2"}).status_code == 200  # invalid: ignored
        assert c.get("/blob", headers={"Range": "bytes=-0"}).status_code == 416
        # keep-alive: many requests, one connection
        for _ in range(20):
            assert c.get("/blob", headers={"Range": "bytes=0-0"}).content == b"\x00"
        ports = {e["client_port"] for e in sites["tiny"].log.entries(path="^/blob")}
        assert len(ports) == 1
        assert sites.info()["tiny"]["url"] == sites["tiny"].url


def test_media_samples_are_valid(media_dir: Path, tmp_path: Path) -> None:
    expected_moov_end = {"moov_end.mp4": True, "faststart.mp4": False, "big.mp4": True, "clip.mov": True}
    for name in media.all_samples():
        path = media.ensure_media(name)
        assert media.moov_at_end(path) == expected_moov_end[name], name
        kinds = {s["codec_type"] for s in media.probe(path)["streams"]}
        assert kinds == {"video", "audio"}
    assert media.ensure_media("big.mp4").stat().st_size >= 52_000_000
    source = media.ensure_media("moov_end.mp4")
    one = media.variant(source, "t1", out_dir=tmp_path)
    again = media.variant(source, "t1", out_dir=tmp_path)
    other = media.variant(source, "t2", out_dir=tmp_path)
    assert one == again and one.stat().st_size == source.stat().st_size
    assert len({media.sha256_of(p) for p in (source, one, other)}) == 3
    assert [b.type for b in media.top_level_boxes(one)] == [b.type for b in media.top_level_boxes(source)]
    bigger = media.variant(source, "t1", out_dir=tmp_path, extra_bytes=64)
    assert bigger.stat().st_size == source.stat().st_size + 64
    assert media.top_level_boxes(bigger)[-1].type == "free"


def test_cli_ready_line_and_clean_shutdown(media_dir: Path, tmp_path: Path) -> None:
    assert "pixop" in known_emulators()
    ready = tmp_path / "ready.json"
    args = [sys.executable, "-m", "vidfs.emulator", "--provider", "pixop", "--media-dir", str(media_dir)]
    args += ["--ready-file", str(ready), "--jwt-lifetime", "5", "--page-size", "3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert json.loads(ready.read_text()) == info
        pixop = info["pixop"]
        config = pixop["config"]
        assert config["type"] == "pixop" and config["base_url"] == pixop["url"]
        assert pixop["control_url"] == pixop["url"] + "/_emulator"
        r = httpx.get(f"{config['base_url']}/accounts/v1/token", auth=(config["email"], config["password"]))
        claims = jwt_claims(r.json()["jwtToken"])
        assert claims["exp"] - claims["iat"] == 5
        tok = {"Authorization": f"Bearer {r.json()['jwtToken']}"}
        assert httpx.get(f"{config['base_url']}/videos/v1/videos", headers=tok).json()["pageSize"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
