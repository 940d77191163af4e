"""IVS VALT: the emulator's API (in-process), the provider against it (in-process), and real mounts.

The contract suite (tests/test_contract.py -k valt) covers listing, bytes, ffprobe/ffmpeg, EROFS, xattrs,
renewal mid-read and the wrong password; this file adds what is particular to VALT.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import math
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import trio

import vidfs.providers.valt as valt_module
from tests.conftest import Emulator, sha256_file, start_emulator, stop_process, vidfs_cmd, wait_until
from tests.inprocess import make_provider, site_fixtures
from tests.inprocess import walk as walk_folders
from tests.providers import CASES
from vidfs.commands.demo import write_config
from vidfs.config.types import HttpSettings
from vidfs.emulator.valt import DEFAULT_PASSWORD, DEFAULT_USERNAME, ValtSite
from vidfs.errors import AuthError, ConfigError, NotFoundError, RemoteIOError
from vidfs.http.client import HttpClient, same_origin
from vidfs.model import Folder, Listing, Video
from vidfs.providers.auth import expiry_from_url, jwt_claims
from vidfs.providers.paging import PAGE_CONCURRENCY
from vidfs.providers.valt import (
    ValtProvider,
    _handle,
    display_name_from_url,
    unique_video_names,
    video_ids,
)
from vidfs.providers.valt_records import NO_ROOM_NAME, ListedRecord, RoomRecord, listed_record

T = TypeVar("T")
INSTANCE = "site"
DEADLINE = 60.0


# ---------------------------------------------------------------------------------------------------------
# fixtures and helpers


site, _reset = site_fixtures(
    lambda media_dir: ValtSite(),
    {
        "url_lifetime": 1800,
        "token_lifetime": 3600,
        "download_shape": "bare",
        "videos_shape": "mixed",
        "max_limit": None,
        "password": DEFAULT_PASSWORD,
    },
)


@pytest.fixture
def api(site: ValtSite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{site.url}/api/v3", timeout=10) as client:
        yield client


def login(api: httpx.Client) -> str:
    r = api.post("/login", json={"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["access_token"])


def run_provider(
    site: ValtSite, tmp_path: Path, body: Callable[[ValtProvider], Awaitable[T]], **options: Any
) -> T:
    """Run `body(provider)` in trio with a provider pointed at the in-process emulator."""

    async def main() -> T:
        async with aclosing(HttpClient(HttpSettings(retries=1, backoff_base=0.01))) as http:
            table, source = {**site.config(), **options}, tmp_path / "vidfs.toml"
            provider = make_provider(ValtProvider, "valt", table, http, tmp_path, source=source)
            try:
                return await body(provider)
            finally:
                await provider.aclose()

    return trio.run(main)


async def walk(provider: ValtProvider) -> dict[str, Video]:
    """Every video by "room/record/name" (raw provider names; naming rules are not applied here)."""
    return await walk_folders(provider, 2, lambda video: video.name)


def catalog_record(site: ValtSite, name: str, *, room: str | None = None) -> dict[str, Any]:
    matches = [
        r
        for r in site.catalog()["records"]
        if r["name"] == name and (room is None or (r["room"] or {}).get("name") == room)
    ]
    assert matches, name
    return min(matches, key=lambda r: str(r["id"]))


def make_jwt(claims: dict[str, Any]) -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def requests_of(emulator: Emulator, *, method: str | None = None, path: str | None = None) -> list[Any]:
    """The emulator's request log (API and distribution host), filtered like the control API does."""
    params = {k: v for k, v in (("method", method), ("path", path)) if v}
    response = httpx.get(f"{emulator.control('valt')}/requests", params=params, timeout=30)
    response.raise_for_status()
    return list(response.json())


@pytest.fixture
def valt_emulator(tmp_path: Path, media_dir: Path, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """A VALT emulator in a subprocess; `@pytest.mark.parametrize("emulator_args", ...)` adds arguments."""
    args = getattr(request, "param", ())
    emulator = start_emulator(tmp_path / "emulator", ["valt"], media_dir, *args)
    try:
        yield emulator
    finally:
        stop_process(emulator.process)


def valt_config(
    emulator: Emulator, tmp_path: Path, *, ttl: str = "5m", extra: str = "", **table: Any
) -> Path:
    config = write_config(
        tmp_path / "vidfs.toml",
        {INSTANCE: {**emulator.config("valt"), **table}},
        cache_dir=tmp_path / "cache",
        extra=extra,
    )
    text = config.read_text().replace('metadata_ttl = "5m"', f'metadata_ttl = "{ttl}"')
    config.write_text(text)
    return config


def expected_files(emulator: Emulator) -> dict[str, Any]:
    return CASES["valt"].expected(emulator.catalog("valt"))


# ---------------------------------------------------------------------------------------------------------
# the emulator


def test_login_and_the_documented_error_bodies(site: ValtSite, api: httpx.Client) -> None:
    bad = api.post("/login", json={"username": DEFAULT_USERNAME, "password": "wrong"})
    assert bad.status_code == 401 and bad.json() == {"data": "Invalid username or password"}
    token = login(api)
    assert re.fullmatch(r"[0-9a-f]{32}", token)

    missing = api.post("/records")
    assert missing.status_code == 401
    assert missing.json() == {"error": {"code": 401, "message": "No API key provided"}}
    wrong = api.post("/records", params={"access_token": "0" * 32})
    assert wrong.status_code == 401 and wrong.json() == {
        "error": {"code": 401, "message": "Bad credentials."}
    }

    not_found = api.get("/records/no-such-record", params={"access_token": token})
    assert not_found.status_code == 404
    assert not_found.headers["content-type"] == "application/problem+json"
    assert not_found.json() == {
        "type": "https://tools.ietf.org/html/rfc2616#section-10",
        "title": "An error occurred",
        "status": 404,
        "detail": "Not Found",
    }
    record = catalog_record(site, "Lecture 1")
    assert api.get(f"/records/download/{record['id']}/999", params={"access_token": token}).status_code == 404

    # token expiry: the mutation and the lifetime switch both turn a token into "Bad credentials."
    assert api.post("/records", params={"access_token": token}).status_code == 200
    site.mutate({"action": "expire_tokens"})
    assert (
        api.post("/records", params={"access_token": token}).json()["error"]["message"] == "Bad credentials."
    )
    site.update_settings({"token_lifetime": 0})
    assert api.post("/records", params={"access_token": login(api)}).status_code == 401


def test_records_offset_limit_search_and_dates(site: ValtSite, api: httpx.Client) -> None:
    token = {"access_token": login(api)}
    everything = api.post("/records", params=token, json={"limit": 100}).json()["data"]["records"]
    assert len(everything) == 8
    pages = [
        api.post("/records", params=token, json={"offset": o, "limit": 3}).json()["data"]["records"]
        for o in (0, 3, 6, 9)
    ]
    assert [len(p) for p in pages] == [3, 3, 2, 0]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in everything]
    # integer (VALT 5) and UUID (VALT 6) ids side by side
    assert {type(r["id"]) for r in everything} == {int, str}
    first = everything[-1]
    assert set(first) == {"id", "name", "created", "author", "type", "duration", "room", "cameras"}
    assert first["type"] == "record" and set(first["author"]) == {"id", "name"}
    assert any(r["room"] is None for r in everything)

    search = api.post("/records", params=token, json={"search": "skills"}).json()["data"]["records"]
    assert {r["name"] for r in search} == {"Skills check"} and len(search) == 2
    day = api.post("/records", params=token, json={"start_date": "05-07-2025", "end_date": "05-07-2025"})
    assert [r["id"] for r in day.json()["data"]["records"]] == [102]
    assert api.post("/records", params=token, json={"start_date": "2025-05-07"}).status_code == 400

    site.update_settings({"max_limit": 2})  # a silent cap
    assert len(api.post("/records", params=token, json={"limit": 50}).json()["data"]["records"]) == 2


def test_details_video_shapes(site: ValtSite, api: httpx.Client) -> None:
    token = {"access_token": login(api)}
    int_record = catalog_record(site, "Skills check", room="Exam Room 3")
    uuid_record = catalog_record(site, "Intake exam")

    def videos(record: dict[str, Any]) -> list[Any]:
        data = api.get(f"/records/{record['id']}", params=token).json()["data"]
        assert isinstance(data["markers"], list)
        return list(data["videos"])

    assert videos(int_record) == [v["id"] for v in int_record["videos"]]
    assert [v["id"] for v in videos(uuid_record)] == [v["id"] for v in uuid_record["videos"]]
    site.update_settings({"videos_shape": "objects"})
    assert all(isinstance(v, dict) and "id" in v for v in videos(int_record))
    site.update_settings({"videos_shape": "ids"})
    assert videos(uuid_record) == [v["id"] for v in uuid_record["videos"]]


@pytest.mark.parametrize("shape", ["bare", "data"])
def test_download_url_shapes_and_the_distribution_host(site: ValtSite, api: httpx.Client, shape: str) -> None:
    site.update_settings({"download_shape": shape})
    token = login(api)
    record = catalog_record(site, "Lecture 1")
    video = record["videos"][0]
    answer = api.get(f"/records/download/{record['id']}/{video['id']}", params={"access_token": token}).json()
    url = answer["url"] if shape == "bare" else answer["data"]["url"]
    assert set(answer) == ({"url"} if shape == "bare" else {"data"})
    parts = urlsplit(url)
    assert parts.path == video["distribution_path"] and not same_origin(url, site.url)
    query = dict(parse_qsl(parts.query))
    # the filename is form-encoded, then percent-encoded again (the wiki's sample: Just%2Ba%2Broom...)
    assert "%2B" in parts.query and query["filename"] == video["display_name"].replace(" ", "+")
    claims: dict[str, Any] = jwt_claims(query["access_token"])
    assert claims["exp"] - claims["iat"] == 1800 and {"iss", "sub", "aud", "nbf"} <= set(claims)

    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == video["size"]
    ranged = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    with open(video["path_on_disk"], "rb") as source:
        source.seek(10)
        assert ranged.content == source.read(10)

    without_token = url.split("access_token=")[0].rstrip("&?")
    assert httpx.head(without_token).status_code == 401
    forged = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
    assert httpx.get(forged).status_code == 401
    site.update_settings({"url_lifetime": 0})  # born expired
    expired = api.get(f"/records/download/{record['id']}/{video['id']}", params={"access_token": token})
    expired_url = expired.json()["url"] if shape == "bare" else expired.json()["data"]["url"]
    refused = httpx.get(expired_url)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 401
    # the API token is refused (and counted) at the distribution host
    leaked = httpx.get(url + f"&api_key={token}")
    assert leaked.status_code == 401 and site.settings()["api_token_leaks"] == 1
    site.api_token_leaks = 0
    # expire_tokens changes the signing key: URLs issued before stop working
    assert httpx.head(url).status_code == 200
    site.mutate({"action": "expire_tokens"})
    assert httpx.head(url).status_code == 401


def test_fault_rules_posted_to_the_parent_reach_the_distribution_host(site: ValtSite) -> None:
    rule = {"kind": "status", "status": 503, "path": "^/distribution/", "count": 1}
    r = httpx.post(f"{site.control_url}/faults", json={"rules": [rule]})
    assert r.status_code == 200
    assert site.distribution.faults is site.faults  # one switchboard: fired counters show on the parent
    record = catalog_record(site, "Lecture 1")
    url = site.issue_url(site.records["101"], site.records["101"].videos[0])
    assert httpx.head(url).status_code == 503 and httpx.head(url).status_code == 200
    assert httpx.get(f"{site.control_url}/faults").json()["rules"][0]["fired"] == 1
    assert record["videos"][0]["distribution_path"] == urlsplit(url).path


def test_a_record_without_filename_and_the_no_room_record(site: ValtSite, api: httpx.Client) -> None:
    token = {"access_token": login(api)}
    record = catalog_record(site, "Patient interview")
    url = api.get(f"/records/download/{record['id']}/{record['videos'][0]['id']}", params=token).json()["url"]
    assert "filename=" not in url and record["videos"][0]["filename"] is None
    assert catalog_record(site, "Hallway test")["room"] is None


# ---------------------------------------------------------------------------------------------------------
# provider helpers


def test_display_name_is_decoded_twice() -> None:
    jwt = make_jwt({"iat": 1746563416, "exp": 1746565216})
    url = (
        "https://valt.example.com:8000/distribution/6ecfe37c/1_6ecfe37c_1.mp4?filename=Just%2Ba%2Broom%2B%2B"
        f"valt.example.com%2B05-06-2025%2B10-18-AM.mp4&access_token={jwt}"
    )
    assert display_name_from_url(url) == "Just a room  valt.example.com 05-06-2025 10-18-AM.mp4"
    assert expiry_from_url(url) == 1746565216
    assert display_name_from_url("https://valt.example.com/d/1.mp4?filename=a%252Bb.mp4") == "a+b.mp4"
    assert display_name_from_url("https://valt.example.com/d/1.mp4?access_token=x") is None
    assert display_name_from_url("https://valt.example.com/d/1.mp4?filename=") is None


def test_a_records_pass_keeps_folders_not_json_and_pages_keep_their_length(
    site: ValtSite, tmp_path: Path
) -> None:
    rooms: dict[tuple[str, str], tuple[str, str]] = {}
    one = {"id": 7, "name": "A", "created": 5, "room": {"id": 3, "name": "R"}, "author": {"name": "x"}}
    two = {"id": "8", "name": "B", "room": {"id": 3, "name": "R"}}
    made = [listed_record(record, rooms) for record in (one, {"name": "no id"}, two, "junk")]
    first, none, second, junk = made
    assert none is None and junk is None  # kept as None: a page's length tells where the list ends
    assert first is not None and second is not None
    assert (first.folder.remote_id, first.folder.name, first.folder.mtime) == ("7", "A", 5.0)
    assert first.folder.extra["author"] == "x" and first.room == ("room:3", "R")
    assert second.room is first.room  # one tuple per room, not one per record
    hidden = listed_record(one, rooms, shown=False)  # layout "rooms": no directory, so no xattrs kept
    assert isinstance(hidden, RoomRecord) and hidden.room is first.room
    assert hidden.folder == first.folder and not hidden.folder.extra

    async def page(provider: ValtProvider) -> list[Any]:
        return await provider._records_page(0, 5)

    items = run_provider(site, tmp_path, page)
    assert len(items) == 5 and all(isinstance(item, ListedRecord) for item in items)


def test_a_new_records_pass_keeps_the_folders_of_records_that_did_not_change(
    site: ValtSite, tmp_path: Path
) -> None:
    # The rooms listed from the previous pass hold its folders; a new pass that made its own for the same
    # records held them all twice (layout "records"). A changed name, or only a changed xattr value (the
    # author: Folder's equality leaves those out), makes a new folder.
    renamed, reauthored = sorted(site.records)[:2]

    async def body(provider: ValtProvider) -> tuple[dict[str, Folder], dict[str, Folder]]:
        def by_id() -> dict[str, Folder]:
            held = provider._records
            assert held is not None
            return held.folders()

        await provider.list(provider.root())
        first = by_id()
        site.records[renamed] = replace(site.records[renamed], name="Renamed")
        site.records[reauthored] = replace(site.records[reauthored], author=("99", "Someone Else"))
        provider._records_at = -math.inf  # the next listing makes a new pass
        await provider.list(provider.root())
        return first, by_id()

    originals = dict(site.records)  # the site is the module's: what this test changes is put back
    try:
        first, second = run_provider(site, tmp_path, body)
    finally:
        site.records.clear()
        site.records.update(originals)
    assert first.keys() == second.keys() and len(first) == len(site.records) > 2
    kept = {key for key in first if second[key] is first[key]}
    assert kept == first.keys() - {renamed, reauthored}
    assert second[renamed].name == "Renamed" and second[reauthored].extra["author"] == "Someone Else"


def test_a_video_keeps_a_handle_only_when_its_remote_id_cannot_be_split_back() -> None:
    assert not _handle("7/9", "7", "9")  # resolve() splits the remote id
    assert dict(_handle("a/b/9", "a/b", "9")) == {"record": "a/b", "video": "9"}
    assert dict(_handle("7/x/y", "7", "x/y")) == {"record": "7", "video": "x/y"}


def test_video_ids_and_duplicate_names() -> None:
    assert video_ids({"videos": [1, 2, 2, "3"]}) == ["1", "2", "3"]
    assert video_ids({"videos": [{"id": "6ecf-a"}, {"id": 7}, {"name": "no id"}, None, True]}) == [
        "6ecf-a",
        "7",
    ]
    assert video_ids({"video_ids": [5]}) == ["5"]
    assert video_ids({"videos": None}) == []
    names = unique_video_names([("b", "cam.mp4"), ("a", "cam.mp4"), ("c", "other.mp4")])
    assert names == ["cam [b].mp4", "cam [a].mp4", "other.mp4"]


# ---------------------------------------------------------------------------------------------------------
# the provider against the in-process emulator


def test_tree_groups_records_by_room(site: ValtSite, tmp_path: Path) -> None:
    async def body(provider: ValtProvider) -> tuple[Listing, Listing, dict[str, Video], Listing]:
        rooms = await provider.list(provider.root())
        exam = next(f for f in rooms.entries if f.name == "Exam Room 3")
        assert isinstance(exam, Folder)
        return rooms, await provider.list(exam), await walk(provider), await provider.list(exam)

    rooms, exam, videos, _again = run_provider(site, tmp_path, body)
    assert sorted(f.name for f in rooms.entries) == sorted(
        ["Exam Room 3", "Sim Lab A", "Interview Room 2", NO_ROOM_NAME]
    )
    assert sorted((f.name, f.remote_id) for f in exam.entries) == [
        ("Lecture 1", "101"),
        ("Skills check", "102"),
        ("Skills check", "103"),
    ]
    catalog = {str(r["id"]): r for r in site.catalog()["records"]}
    for record in exam.entries:
        assert record.mtime == catalog[record.remote_id]["created"]
        assert record.extra["room"] == "Exam Room 3" and record.extra["author"]

    lecture = catalog["101"]
    name = f"Exam Room 3/Lecture 1/{lecture['videos'][0]['display_name']}"
    video = videos[name]
    assert video.size is None and video.mtime == lecture["created"]
    assert video.remote_id == "101/1" and video.content_type == "video/mp4"
    assert dict(video.extra) == {
        "author": "Dr. Rivera",
        "cameras": "Ceiling cam",
        "duration": str(lecture["duration"]),
        "markers": "3",
        "record": "Lecture 1",
        "record_id": "101",
        "room": "Exam Room 3",
        "room_id": "3",
        "type": "record",
        "video_id": "1",
    }
    # the record whose URL has no filename: record name + the URL's extension
    patient = catalog_record(site, "Patient interview")
    assert f"Interview Room 2/Patient interview/Patient interview{patient['videos'][0]['ext']}" in videos
    # two videos of one record with one display name are told apart by video id
    intake = catalog_record(site, "Intake exam")
    shown = {n.split("/")[-1] for n in videos if n.startswith("Interview Room 2/Intake exam/")}
    assert shown == {
        f"{v['display_name'][:-4]} [{v['id']}]{v['display_name'][-4:]}" for v in intake["videos"]
    }
    assert any(n.startswith(f"{NO_ROOM_NAME}/Hallway test/") for n in videos)
    assert len(videos) == sum(len(r["videos"]) for r in catalog.values())
    # One POST /records pass (4 pages of 3 records overlapping by one, and the pages asked ahead past the
    # end: 1 or 2 here) served the root and every room listing; a pass per room would be 5 passes.
    assert site.log.count(method="POST", path=r"^/api/v3/records\?") <= 2 * 6


def test_the_rooms_layout_shows_every_video_of_a_room_in_its_directory(
    site: ValtSite, tmp_path: Path
) -> None:
    def rooms_walk(levels: int) -> Callable[[ValtProvider], Awaitable[list[tuple[str, Video]]]]:
        """(room name, video) for every video `levels` folders below its room folder."""

        async def body(provider: ValtProvider) -> list[tuple[str, Video]]:
            found: list[tuple[str, Video]] = []

            async def visit(folder: Folder, room: str, level: int) -> None:
                for entry in (await provider.list(folder)).entries:
                    if level < levels:
                        assert isinstance(entry, Folder)
                        await visit(entry, room, level + 1)
                    else:
                        assert isinstance(entry, Video)
                        found.append((room, entry))

            for room in (await provider.list(provider.root())).entries:
                assert isinstance(room, Folder)
                await visit(room, room.name, 0)
            return found

        return body

    by_record = run_provider(site, tmp_path, rooms_walk(1))
    by_room = run_provider(site, tmp_path, rooms_walk(0), layout="rooms")
    # the same videos (ids, names, sizes unknown alike), each in its record's room, each once
    assert len(by_room) == sum(len(r["videos"]) for r in site.catalog()["records"])
    assert sorted(by_room, key=lambda pair: pair[1].remote_id) == sorted(
        by_record, key=lambda pair: pair[1].remote_id
    )
    # with the same xattrs, record-level ones included (from each record's details, not from the pass)
    xattrs = {v.remote_id: dict(v.xattrs) for _room, v in by_record}
    assert {v.remote_id: dict(v.xattrs) for _room, v in by_room} == xattrs
    assert all(values["record_id"] and values["record"] for values in xattrs.values())
    assert any(values.get("room") for values in xattrs.values())
    # two videos of one record with one display name are still told apart by video id
    intake = catalog_record(site, "Intake exam")
    assert {(room, v.name) for room, v in by_room if v.remote_id.startswith(f"{intake['id']}/")} == {
        ("Interview Room 2", f"{v['display_name'][:-4]} [{v['id']}]{v['display_name'][-4:]}")
        for v in intake["videos"]
    }


def test_the_rooms_layout_lets_go_of_a_listed_rooms_records_and_lists_it_again_from_a_new_pass(
    site: ValtSite, tmp_path: Path
) -> None:
    async def body(provider: ValtProvider) -> tuple[Listing, Listing, bool]:
        rooms = [f for f in (await provider.list(provider.root())).entries if isinstance(f, Folder)]
        exam = next(f for f in rooms if f.name == "Exam Room 3")
        other = next(f for f in rooms if f is not exam)
        first = await provider.list(exam)
        # its videos' URLs are kept for their HEADs, as one listing's: the room's, not one per record
        assert provider._urls.statistics() == {"urls": len(first.entries), "folders": 1}
        assert all(provider._urls.take(video.remote_id) for video in first.entries)
        held = provider._records
        assert held is not None and exam.remote_id not in held.by_room and other.remote_id in held.by_room
        await provider.list(other)
        assert provider._records is held  # another room: still from the same pass
        again = await provider.list(exam)  # its records were given away: from a new pass
        return first, again, provider._records is not held

    first, again, new_pass = run_provider(site, tmp_path, body, layout="rooms")
    assert new_pass
    assert [v.remote_id for v in again.entries] == [v.remote_id for v in first.entries] != []


@pytest.mark.parametrize("layout", ["records", "rooms"])
def test_a_big_records_layout_suggests_the_rooms_layout_once(
    site: ValtSite,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
) -> None:
    records = len(site.records)
    monkeypatch.setattr(valt_module, "LAYOUT_HINT_RECORDS", records)

    async def two_passes(provider: ValtProvider) -> None:
        for _ in range(2):
            provider._records = None  # the next listing makes a new pass
            await provider.list(provider.root())

    caplog.set_level(logging.INFO)
    run_provider(site, tmp_path, two_passes, layout=layout)
    hints = [r.getMessage() for r in caplog.records if 'layout = "rooms"' in r.getMessage()]
    if layout == "rooms":
        assert hints == []
    else:
        assert hints == [
            f"site: {records} records, a directory each: every ls -lR, find or rsync asks 4 FUSE requests "
            f"per directory however warm the cache; {tmp_path / 'vidfs.toml'}: [providers.site] layout = "
            '"rooms" lists each room\'s videos in it'
        ]


def test_the_rooms_layout_leaves_out_a_vanished_record_and_fails_on_a_refusal(
    site: ValtSite, tmp_path: Path
) -> None:
    gone = catalog_record(site, "Skills check", room="Exam Room 3")

    async def exam_room(provider: ValtProvider) -> Listing:
        rooms = await provider.list(provider.root())
        (exam,) = [f for f in rooms.entries if f.name == "Exam Room 3"]
        assert isinstance(exam, Folder)
        return await provider.list(exam)

    site.faults.set_rules([{"kind": "status", "status": 404, "path": f"^/api/v3/records/{gone['id']}\\?"}])
    listing = run_provider(site, tmp_path, exam_room, layout="rooms")
    shown = {str(v.remote_id).split("/")[0] for v in listing.entries}
    assert shown == {"101", "102", "103"} - {str(gone["id"])}
    assert [(h.remote_id, h.name) for h in listing.hidden] == [(str(gone["id"]), "Skills check")]
    # any other failure of one record is the room's, as one plain error (no ExceptionGroup)
    site.faults.set_rules([{"kind": "status", "status": 503, "path": f"^/api/v3/records/{gone['id']}\\?"}])
    with pytest.raises(RemoteIOError):
        run_provider(site, tmp_path, exam_room, layout="rooms")


def test_an_unknown_layout_is_one_line_naming_the_key_and_the_file(site: ValtSite, tmp_path: Path) -> None:
    async def nothing(provider: ValtProvider) -> None:
        return None

    with pytest.raises(ConfigError) as caught:
        run_provider(site, tmp_path, nothing, layout="cameras")
    message = str(caught.value)
    assert (
        "\n" not in message
        and "vidfs.toml" in message
        and "key 'layout'" in message
        and "'cameras'" in message
    )


@pytest.mark.parametrize("videos_shape", ["ids", "objects", "mixed"])
def test_integer_and_uuid_ids_in_both_video_list_shapes(
    site: ValtSite, tmp_path: Path, videos_shape: str
) -> None:
    site.update_settings({"videos_shape": videos_shape})
    videos = run_provider(site, tmp_path, walk)
    expected = {f"{r['id']}/{v['id']}" for r in site.catalog()["records"] for v in r["videos"]}
    assert {v.remote_id for v in videos.values()} == expected


@pytest.mark.parametrize("shape", ["bare", "data"])
def test_resolve_gives_the_distribution_url_and_its_jwt_expiry(
    site: ValtSite, tmp_path: Path, shape: str
) -> None:
    site.update_settings({"download_shape": shape, "url_lifetime": 600})
    record = catalog_record(site, "Lecture 1")

    async def body(provider: ValtProvider) -> tuple[Any, Any, Any]:
        folder = Folder(str(record["id"]), record["name"])
        (video,) = (await provider.list(folder)).entries
        assert isinstance(video, Video)
        first = await provider.resolve(video)  # the URL the listing got, still fresh
        renewed = await provider.resolve(video, previous=first)  # storage refused it: a new one
        return video, first, renewed

    video, first, renewed = run_provider(site, tmp_path, body)
    assert first.url.startswith(site.distribution.url + "/distribution/")
    assert first.headers == {} and not first.uses_provider_auth
    token = dict(parse_qsl(urlsplit(first.url).query))["access_token"]
    assert first.expires_at == jwt_claims(token)["exp"]
    assert renewed.url.startswith(site.distribution.url + "/distribution/")
    assert site.log.count(path=r"^/api/v3/records/download/") == 2
    assert httpx.get(first.url, headers={"Range": "bytes=0-3"}).status_code == 206
    assert video.name == record["videos"][0]["display_name"]


def test_the_listed_url_serves_one_resolve(site: ValtSite, tmp_path: Path) -> None:
    """Listing a record asks each video's URL (for its name); the first resolve (the size probe) takes it,
    a later one asks again (the resolver keeps the leases it handed out): the store keeps no URL for good."""
    record = catalog_record(site, "Lecture 1")

    async def body(provider: ValtProvider) -> list[int]:
        def api_calls() -> int:  # counted as sent (the emulator logs a request after answering it)
            return sum(n for (tag, _), n in provider._http.stats.requests.items() if tag == provider._tag)

        (video,) = (await provider.list(Folder(str(record["id"]), record["name"]))).entries
        assert isinstance(video, Video)
        listed = api_calls()
        await provider.resolve(video)
        first = api_calls()
        await provider.resolve(video)
        return [first - listed, api_calls() - first]

    assert run_provider(site, tmp_path, body) == [0, 1]
    wait_until(lambda: site.log.count(path=r"^/api/v3/records/download/") == 2, "two download calls logged")


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": 401, "message": "No API key provided"}},
        {"error": {"code": 401, "message": "Bad credentials."}},
    ],
)
def test_one_new_login_on_either_401_body(site: ValtSite, tmp_path: Path, body: dict[str, Any]) -> None:
    async def rooms(provider: ValtProvider) -> Listing:
        return await provider.list(provider.root())

    logins_before = site.settings()["tokens_issued"]
    site.faults.set_rules(
        [{"kind": "status", "status": 401, "body": json.dumps(body), "path": "^/api/v3/records"}]
    )
    # always 401: one login, one new login, then a clear auth error
    with pytest.raises(AuthError, match=re.escape(body["error"]["message"])):
        run_provider(site, tmp_path, rooms)
    assert site.settings()["tokens_issued"] - logins_before == 2
    # 401 once: the new login fixes it
    site.faults.set_rules(
        [{"kind": "status", "status": 401, "body": json.dumps(body), "path": "^/api/v3/records", "count": 1}]
    )
    listing = run_provider(site, tmp_path, rooms)
    assert len(listing.entries) == 4
    assert site.settings()["tokens_issued"] - logins_before == 4


def test_a_failing_download_call_while_listing_a_record_is_one_plain_error(
    site: ValtSite, tmp_path: Path
) -> None:
    """Not an ExceptionGroup out of the concurrent URL fetches: the engine maps our errors to errnos."""
    record = catalog_record(site, "Skills check", room="Exam Room 3")

    async def listing(provider: ValtProvider) -> Listing:
        return await provider.list(Folder(str(record["id"]), record["name"]))

    body = json.dumps({"error": {"code": 401, "message": "Bad credentials."}})
    site.faults.set_rules(
        [{"kind": "status", "status": 401, "body": body, "path": "^/api/v3/records/download/"}]
    )
    with pytest.raises(AuthError):
        run_provider(site, tmp_path, listing)
    site.faults.set_rules([{"kind": "status", "status": 503, "path": "^/api/v3/records/download/"}])
    with pytest.raises(RemoteIOError):
        run_provider(site, tmp_path, listing)
    # a video whose download is 404 is a hidden item, the others are files
    site.faults.set_rules(
        [{"kind": "status", "status": 404, "path": f"^/api/v3/records/download/{record['id']}/2\\?"}]
    )
    result = run_provider(site, tmp_path, listing)
    assert [v.remote_id for v in result.entries] == [f"{record['id']}/3"]
    assert [h.remote_id for h in result.hidden] == [f"{record['id']}/2"]


def test_an_expired_token_is_renewed_by_logging_in_again(site: ValtSite, tmp_path: Path) -> None:
    async def body(provider: ValtProvider) -> int:
        await provider.list(provider.root())
        site.mutate({"action": "expire_tokens"})
        listing = await provider.list(Folder("101", "Lecture 1"))
        return len(listing.entries)

    before = site.settings()["tokens_issued"]
    assert run_provider(site, tmp_path, body) == 1
    assert site.settings()["tokens_issued"] - before == 2


def test_wrong_password_is_an_auth_error_without_the_password(site: ValtSite, tmp_path: Path) -> None:
    async def rooms(provider: ValtProvider) -> Listing:
        return await provider.list(provider.root())

    with pytest.raises(AuthError) as info:
        run_provider(site, tmp_path, rooms, password="not-the-password")
    message = str(info.value)
    assert "Invalid username or password" in message and "not-the-password" not in message
    assert "\n" not in message


def test_pages_until_nothing_new_even_when_the_server_caps_limit(site: ValtSite, tmp_path: Path) -> None:
    site.update_settings({"max_limit": 2})

    async def rooms(provider: ValtProvider) -> Listing:
        return await provider.list(provider.root())

    listing = run_provider(site, tmp_path, rooms, page_size=50)
    assert sum(int(f.extra["records"]) for f in listing.entries) == 8
    # The first page (2 records: shorter than asked) and one more at the overlap (2 again: a cap, not the
    # end); then pages of 2 overlapping by one record: offsets 2..7, the last one short; at most
    # PAGE_CONCURRENCY pages asked past the end (and the first and last read again for longer lists).
    asked = site.log.count(method="POST", path=r"^/api/v3/records\?")
    assert 8 <= asked <= 8 + PAGE_CONCURRENCY + 2


def test_a_vanished_record_is_not_found(site: ValtSite, tmp_path: Path) -> None:
    record = catalog_record(site, "Hallway test")
    site_records = dict(site.records)

    async def body(provider: ValtProvider) -> None:
        folder = Folder(str(record["id"]), record["name"])
        (video,) = (await provider.list(folder)).entries
        assert isinstance(video, Video)
        site.mutate({"action": "delete", "record_id": record["id"]})
        with pytest.raises(NotFoundError):
            await provider.list(folder)
        with pytest.raises(NotFoundError):
            await provider.resolve(video, previous=await provider.resolve(video))

    try:
        run_provider(site, tmp_path, body)
    finally:
        site.records.clear()
        site.records.update(site_records)


# ---------------------------------------------------------------------------------------------------------
# real mounts


def test_ls_l_shows_true_sizes_with_one_head_per_video(
    valt_emulator: Emulator, tmp_path: Path, mounts: Any
) -> None:
    emulator = valt_emulator
    mount = mounts(valt_config(emulator, tmp_path, ttl="1s"))
    expected = expected_files(emulator)
    record_dir = "Exam Room 3/Skills check [102]"
    files = {rel.rsplit("/", 1)[1]: e for rel, e in expected.items() if rel.startswith(record_dir + "/")}
    assert len(files) == 2
    catalog = {str(r["id"]): r for r in emulator.catalog("valt")["records"]}
    paths = [v["distribution_path"] for v in catalog["102"]["videos"]]

    def ls_l() -> dict[str, int]:
        out = subprocess.run(
            ["ls", "-l", "--time-style=+%s", str(mount.path / INSTANCE / record_dir)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        sizes = {}
        for line in out.splitlines()[1:]:
            fields = line.split(maxsplit=6)
            sizes[fields[6]] = int(fields[4])
            assert int(fields[5]) == catalog["102"]["created"]
        return sizes

    def details_calls() -> int:
        return len(requests_of(emulator, method="GET", path=r"^/api/v3/records/102\?"))

    assert ls_l() == {name: e.size for name, e in files.items()}
    first = details_calls()
    assert first >= 1

    # a second listing that really refreshes (metadata_ttl 1s): wait until the API was asked again
    second: dict[str, int] = {}

    def refreshed() -> bool:
        second.update(ls_l())
        return details_calls() > first

    wait_until(refreshed, "the record listing to be refreshed")
    assert second == {name: e.size for name, e in files.items()}
    heads = requests_of(emulator, method="HEAD", path="^/distribution/")
    for path in paths:
        assert sum(1 for h in heads if h["path"].startswith(path + "?")) <= 1, path
    assert all(h["origin"] == "valt-distribution" for h in heads)


def test_the_rooms_layout_through_a_mount(valt_emulator: Emulator, tmp_path: Path, mounts: Any) -> None:
    """Every video in its room's directory, with its true size and bytes; no record directories."""
    mount = mounts(valt_config(valt_emulator, tmp_path, layout="rooms"))
    expected = expected_files(valt_emulator)
    root = mount.path / INSTANCE
    got = []
    for room in sorted(os.listdir(root)):
        for name in os.listdir(root / room):
            path = root / room / name
            assert path.is_file(), path
            got.append((room, path.stat().st_size, sha256_file(path)))
    assert sorted(got) == sorted((rel.split("/")[0], e.size, e.sha256) for rel, e in expected.items())


def test_a_read_spanning_the_url_expiry_gives_identical_bytes(
    tmp_path: Path, media_dir: Path, mounts: Any
) -> None:
    emulator = start_emulator(tmp_path / "emulator", ["valt"], media_dir, "--set", "valt.url_lifetime=2")
    try:
        expected = expected_files(emulator)
        rel, expect = next((r, e) for r, e in sorted(expected.items()) if "Lecture 1" in r)
        emulator.post(
            "valt", "faults", {"rules": [{"kind": "latency", "seconds": 0.3, "path": "^/distribution/"}]}
        )
        config = valt_config(emulator, tmp_path, extra="[http]\nmax_connections_per_host = 1\n")
        mount = mounts(config)
        copy = tmp_path / "copy.mp4"
        subprocess.run(["cp", str(mount.path / INSTANCE / rel), str(copy)], check=True, timeout=300)
        assert sha256_file(copy) == expect.sha256

        downloads = requests_of(emulator, path=r"^/api/v3/records/download/101/1\?")
        assert len(downloads) >= 2, "the signed URL was never renewed"
        gets = requests_of(emulator, method="GET", path="^/distribution/101/")
        tokens = {dict(parse_qsl(urlsplit(g["path"]).query))["access_token"] for g in gets}
        assert len(tokens) >= 2, "every ranged GET used one URL"
        # nothing of ours reached the distribution host: only the JWT inside the URL the API gave
        settings = httpx.get(f"{emulator.control('valt')}/settings", timeout=30).json()
        assert settings["api_token_leaks"] == 0
        for entry in requests_of(emulator, path="^/distribution/"):
            query = dict(parse_qsl(urlsplit(entry["path"]).query))
            assert query["access_token"].count(".") == 2  # a JWT, never the 32-hex API token
            assert not any(re.fullmatch(r"[0-9a-f]{32}", str(v)) for v in entry["headers"].values())
    finally:
        stop_process(emulator.process)


@pytest.mark.parametrize("valt_emulator", [("--set", "valt.download_shape=data")], indirect=True)
def test_the_data_download_shape_through_a_mount(
    valt_emulator: Emulator, tmp_path: Path, mounts: Any
) -> None:
    """The contract suite runs the wiki sample's `{"url"}`; this is the wiki table's `{"data":{"url"}}`."""
    settings = httpx.get(f"{valt_emulator.control('valt')}/settings", timeout=30).json()
    assert settings["download_shape"] == "data"
    mount = mounts(valt_config(valt_emulator, tmp_path))
    expected = expected_files(valt_emulator)
    for rel, expect in sorted(expected.items()):
        if expect.size > 8 << 20:
            continue
        path = mount.path / INSTANCE / rel
        assert path.stat().st_size == expect.size
        assert sha256_file(path) == expect.sha256, rel


def test_wrong_password_gives_one_clear_line(valt_emulator: Emulator, tmp_path: Path) -> None:
    config = valt_config(valt_emulator, tmp_path, password="not-the-password")
    result = subprocess.run(vidfs_cmd("check", str(config)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    rows = [line for line in result.stdout.splitlines() if line.startswith(INSTANCE)]
    assert len(rows) == 1
    assert "FAIL" in rows[0] and "VALT login refused for user 'api': Invalid username or password" in rows[0]
    assert "not-the-password" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_vanished_record_gives_enoent(valt_emulator: Emulator, tmp_path: Path, mounts: Any) -> None:
    emulator = valt_emulator
    mount = mounts(valt_config(emulator, tmp_path, ttl="1s"))
    expected = expected_files(emulator)
    rel, expect = next((r, e) for r, e in expected.items() if r.startswith("Sim Lab A/Scenario sepsis"))
    path = mount.path / INSTANCE / rel
    assert path.stat().st_size == expect.size
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 16, 0)) == 16
        record_id = expect.remote_id.split("/")[0]
        emulator.post("valt", "mutate", {"action": "delete", "record_id": record_id})

        def gone() -> bool:
            try:
                path.stat()
            except FileNotFoundError:
                return True
            return False

        wait_until(gone, "the deleted record to disappear from the mount")
        with pytest.raises(FileNotFoundError):
            os.open(path, os.O_RDONLY)
        # the room's listing drops the record too, once it is refreshed
        record_dir = mount.path / INSTANCE / rel.rsplit("/", 1)[0]
        wait_until(lambda: not record_dir.exists(), "the deleted record's directory to disappear")
        # an already open file: bytes not cached yet are ENOENT now (the distribution host says 404)
        with pytest.raises(OSError) as info:
            os.pread(fd, 1 << 16, expect.size // 2)
        assert info.value.errno == errno.ENOENT
    finally:
        os.close(fd)


def test_changed_content_under_an_open_file_is_estale(
    valt_emulator: Emulator, tmp_path: Path, mounts: Any
) -> None:
    """Never mixed bytes: the distribution host's ETag changed, the If-Range read says so."""
    mount = mounts(valt_config(valt_emulator, tmp_path))
    rel, expect = max(expected_files(valt_emulator).items(), key=lambda item: item[1].size)
    with open(mount.path / INSTANCE / rel, "rb", buffering=0) as handle:
        with open(expect.source, "rb") as source:
            assert handle.read(64 * 1024) == source.read(64 * 1024)
        record_id, _, video_id = expect.remote_id.partition("/")
        changed = valt_emulator.post(
            "valt", "mutate", {"action": "change_content", "record_id": record_id, "video_id": video_id}
        )
        assert changed["sha256"] != expect.sha256
        with pytest.raises(OSError) as info:
            os.pread(handle.fileno(), 256 * 1024, expect.size // 2)
        assert info.value.errno == errno.ESTALE
