"""Hour One: the emulator's API and storage, the provider in-process, and real mounts (hidden statuses, URL
renewal mid-read without the api-key ever reaching storage, rsync twice across a remount)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import (
    Emulator,
    emulator_fixture,
    sha256_file,
    start_emulator,
    stop_process,
    unmount,
    vidfs_cmd,
    wait_until,
)
from tests.inprocess import make_provider, site_fixtures
from tests.providers import CASES
from vidfs.catalog import carry
from vidfs.catalog.naming import file_name
from vidfs.config.types import Secret
from vidfs.emulator.hourone import DEFAULT_API_KEY, STATUSES, HourOneSite
from vidfs.errors import AuthError
from vidfs.http.client import HttpClient
from vidfs.model import Video
from vidfs.providers import hourone
from vidfs.providers.hourone import ROOT_ID, STATE_FILE, HourOneProvider, _VideoList
from vidfs.providers.state import FirstSeen

INSTANCE = "site"
HIDDEN_STATUSES = ("started", "processing", "failed", "not_started", "stopped", "cancelled")
VIDEO_BY_ID = r"^/api/v1/videos/[0-9a-f-]{36}(\?|$)"
SCENE_FIELDS = frozenset({"scene_index", "start_time", "duration"})  # a scene of "Get Video Metadata"


# ---------------------------------------------------------------------------------------------------------
# fixtures


site, _clean = site_fixtures(
    lambda media_dir: HourOneSite(media_dir=media_dir),
    {"url_lifetime": 3600, "url_style": "expires", "api_key": DEFAULT_API_KEY},
)


@pytest.fixture
def api(site: HourOneSite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url + "/api/v1", headers={"api-key": DEFAULT_API_KEY}, timeout=10) as c:
        yield c


def _provider(site: HourOneSite, http: HttpClient, state_dir: Path, **options: Any) -> HourOneProvider:
    table: dict[str, Any] = {**site.config(), "metadata_concurrency": 8, "team_id": None, **options}
    table["api_key"] = Secret("literal", str(table["api_key"]))
    return make_provider(HourOneProvider, "hourone", table, http, state_dir, source=Path("test.toml"))


def _api_calls(http: HttpClient) -> int:
    """API requests the provider sent (counted client-side: the emulator logs a request after answering)."""
    return sum(count for (tag, _status), count in http.stats.requests.items() if tag == f"{INSTANCE}:api")


def _visible(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in catalog["videos"] if v["visible"]]


# ---------------------------------------------------------------------------------------------------------
# the emulator


def test_api_key_is_required(site: HourOneSite) -> None:
    with httpx.Client(base_url=site.url + "/api/v1", timeout=10) as c:
        missing = c.get("/videos")
        assert missing.status_code == 403 and missing.json() == {"detail": "Not authenticated"}
        wrong = c.get("/videos", headers={"api-key": "nope"})
        assert wrong.status_code == 401 and isinstance(wrong.json()["detail"], str)
        other_workspace = c.get("/videos", headers={"api-key": DEFAULT_API_KEY, "workspace-id": "ws-x"})
        assert other_workspace.status_code == 403


def test_list_is_a_plain_array_with_every_status(api: httpx.Client, site: HourOneSite) -> None:
    videos = api.get("/videos").json()
    assert isinstance(videos, list)
    assert {v["status"] for v in videos} == set(STATUSES)
    for v in videos:
        assert {"id", "name", "status", "progress", "req_id", "draft_id", "video_player_url"} <= set(v)
        assert -1 <= v["progress"] <= 100
        if v["download_url"]:
            assert v["status"] in ("ready", "published")
            assert not v["download_url"].startswith(site.url)  # storage is another origin
    names = [v["name"] for v in videos]
    assert None in names
    assert any(names.count(n) == 2 for n in names if n)
    assert any(v["status"] == "ready" and not v["download_url"] for v in videos)


def test_get_metadata_and_fastapi_errors(api: httpx.Client) -> None:
    video = next(v for v in api.get("/videos").json() if v["download_url"])
    one = api.get(f"/videos/{video['id']}").json()
    assert one["id"] == video["id"] and one["download_url"]
    assert "scenes" not in one  # "Get Video By Id" has fewer fields than the list
    meta = api.get(f"/videos/{video['id']}/metadata").json()
    assert meta["duration"] > 0
    assert set(meta["scenes_metadata"][0]) >= SCENE_FIELDS
    bad = api.get("/videos/not-a-uuid")
    assert bad.status_code == 422
    (error,) = bad.json()["detail"]
    assert error["loc"] == ["path", "video_id"] and error["msg"] and error["type"]
    assert api.get("/videos/00000000-0000-0000-0000-000000000000").status_code == 404
    created = api.post("/videos", json={"name": "x"})
    assert created.status_code == 422 and created.json()["detail"][0]["loc"][0] == "body"
    made = api.post("/videos", json={"name": "New", "source_draft_id": "d1"}).json()
    assert made["status"] == "not_started" and made["download_url"] is None


def test_download_urls_expire_and_are_signed(api: httpx.Client, site: HourOneSite) -> None:
    site.update_settings({"url_lifetime": 1})
    video = next(v for v in api.get("/videos").json() if v["download_url"])
    url = video["download_url"]
    with httpx.Client(timeout=10) as storage:
        ok = storage.get(url, headers={"Range": "bytes=0-9"})
        assert ok.status_code == 206 and len(ok.content) == 10
        tampered = re.sub(r"Signature=[0-9a-f]", "Signature=x", url)
        assert storage.head(tampered).status_code == 403
        wait_until(lambda: storage.head(url).status_code == 403, "the signed URL expires")
        refused = storage.get(url)
        assert refused.status_code == 403 and b"AccessDenied" in refused.content
    site.update_settings({"url_lifetime": 3600})
    fresh = api.get(f"/videos/{video['id']}").json()["download_url"]
    with httpx.Client(timeout=10) as storage:
        assert storage.head(fresh).status_code == 200
        site.mutate({"action": "expire_urls"})
        assert storage.head(fresh).status_code == 403


def test_opaque_urls_hide_their_expiry(api: httpx.Client, site: HourOneSite) -> None:
    site.update_settings({"url_style": "opaque"})
    url = next(v for v in api.get("/videos").json() if v["download_url"])["download_url"]
    assert "Expires" not in url and "sig=" in url
    assert httpx.head(url, timeout=10).status_code == 200


def test_faults_posted_to_the_api_reach_storage_and_storage_counts_api_keys(
    api: httpx.Client, site: HourOneSite
) -> None:
    url = next(v for v in api.get("/videos").json() if v["download_url"])["download_url"]
    rule = {"kind": "status", "status": 503, "path": r"^/storage/videos/"}
    httpx.post(f"{site.control_url}/faults", json={"rules": [rule]}, timeout=10).raise_for_status()
    assert httpx.head(url, timeout=10).status_code == 503
    assert api.get("/videos").status_code == 200  # the API paths do not match the rule
    httpx.post(f"{site.control_url}/faults", json={"rules": []}, timeout=10).raise_for_status()
    before = site.catalog()["storage"]["requests_with_api_key"]
    assert httpx.head(url, headers={"api-key": "leak"}, timeout=10).status_code == 200
    assert site.catalog()["storage"]["requests_with_api_key"] == before + 1
    merged = httpx.get(f"{site.control_url}/requests", timeout=10).json()
    assert {e["origin"] for e in merged} == {"hourone", "hourone-storage"}


# ---------------------------------------------------------------------------------------------------------
# the provider, in-process


async def test_listing_files_hidden_items_and_xattrs(site: HourOneSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        listing = await provider.list(provider.root())
    catalog = site.catalog()
    assert sorted(v.remote_id for v in listing.entries) == sorted(v["id"] for v in _visible(catalog))
    statuses = {h.status for h in listing.hidden}
    assert set(HIDDEN_STATUSES) <= statuses
    assert "ready (no download_url yet)" in statuses
    by_id = {v["id"]: v for v in catalog["videos"]}
    for video in listing.entries:
        assert isinstance(video, Video) and video.size is None and video.mtime
        assert video.handle == {}  # the signed URL never lands in the (persisted) listing
        expected = by_id[video.remote_id]
        # The name as it will stand on the mount, its extension from the content type; the API's raw name
        # is the `name` xattr.
        assert video.name == file_name(expected["name"] or expected["id"], video.remote_id, "video/mp4")
        assert video.name.endswith(".mp4")
        assert video.content_type == "video/mp4"
        extra = dict(video.extra)
        assert extra.get("name") == (expected["name"] or None)
        assert extra["status"] in ("ready", "published") and extra["progress"] == "100"
        assert extra["draft_id"] == expected["draft_id"]
        assert extra["video_player_url"] == expected["video_player_url"]
        assert float(extra["duration"]) == pytest.approx(expected["duration"], abs=0.01)


def test_an_id_listed_twice_keeps_its_first_item() -> None:
    """Whether its items are files or hidden ones, in whatever order they come."""

    def item(video_id: str, status: str = "ready") -> dict[str, str]:
        return {
            "id": video_id,
            "name": video_id,
            "status": status,
            "download_url": f"https://s/{video_id}.mp4",
        }

    videos = _VideoList(str.encode)
    listed = [item("a"), item("b", "processing"), item("a"), item("c"), item("b"), item("c", "failed")]
    for each in [*listed, item("d", "processing"), item("e"), item("d"), item("d", "failed")]:
        videos.take(each)
    videos.without_repeats()
    assert [file.remote_id for file in videos.files] == ["a", "c", "e"]
    assert videos.urls == [b"https://s/a.mp4", b"https://s/c.mp4", b"https://s/e.mp4"]
    assert [(hidden.remote_id, hidden.status) for hidden in videos.hidden] == [
        ("b", "processing"),
        ("d", "processing"),
    ]


async def test_durations_are_fetched_once_per_video(site: HourOneSite, tmp_path: Path) -> None:
    """A re-listing takes each duration from the previous listing's video, also in a new provider (as after
    a remount, the previous listing read from the snapshot)."""
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        first = await provider.list(provider.root())
        files = len(_visible(site.catalog()))
        assert _api_calls(http) == 1 + files  # GET /videos, then one metadata call per file
        wait_until(lambda: site.log.count(path=r"/metadata$") == files, "the metadata calls are logged")
        with carry.listing_for(ROOT_ID, {ROOT_ID: first}.get):
            again = await provider.list(provider.root())
        assert _api_calls(http) == 2 + files  # only GET /videos again
        remounted = _provider(site, http, tmp_path / "state")
        with carry.listing_for(ROOT_ID, {ROOT_ID: again}.get) as carries:
            third = await remounted.list(remounted.root())
        assert _api_calls(http) == 3 + files
    assert carries.carried == files
    assert sum("duration" in v.xattrs for v in third.entries if isinstance(v, Video)) == files


async def test_a_listing_goes_ahead_of_durations_that_cannot_come_in_time(
    site: HourOneSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While serving (background tasks attached), a listing waits for the durations it lacks only while all
    can come within the budget; when the first answers say they cannot, it goes ahead with what it has, the
    calls go on in the background, and what they learn comes with the next listing, never asked again."""
    monkeypatch.setattr(hourone, "METADATA_BUDGET", 1.0)
    site.update_settings({"scale": 40})
    files = len(_visible(site.catalog()))
    timed = lambda listing: {v.remote_id for v in listing.entries if "duration" in v.xattrs}  # noqa: E731
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state", metadata_concurrency=2)
        async with trio.open_nursery() as background:
            provider.attach(background)
            assert len(timed(await provider.list(provider.root()))) == files  # quick: waited for all

        fresh = _provider(site, http, tmp_path / "state2", metadata_concurrency=2)
        # 2 calls at a time, 0.15 s each: about 3 s for all, beyond twice the budget after the first two.
        site.faults.set_rules([{"kind": "latency", "path": "/metadata$", "seconds": 0.15}])
        async with trio.open_nursery() as background:
            fresh.attach(background)
            first = await fresh.list(fresh.root())
            assert len(timed(first)) < files
        # The nursery has waited for the background calls (the budget at most).
        site.faults.set_rules([])
        calls = _api_calls(http)
        async with trio.open_nursery() as background:
            fresh.attach(background)
            with carry.listing_for(ROOT_ID, {ROOT_ID: first}.get):
                second = await fresh.list(fresh.root())
        asked = _api_calls(http) - calls - 1  # GET /videos, then the metadata calls
    assert len(timed(second)) == files
    assert asked < files - len(timed(first))  # those learned in the background were not asked again


async def test_resolve_never_sends_the_key_and_renews_once_after_a_refusal(
    site: HourOneSite, tmp_path: Path
) -> None:
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        listing = await provider.list(provider.root())
        video = next(v for v in listing.entries if isinstance(v, Video))
        calls = _api_calls(http)
        lease = await provider.resolve(video)
        assert dict(lease.headers) == {} and not lease.uses_provider_auth
        assert lease.expires_at is not None  # Expires= in the URL
        assert _api_calls(http) == calls  # the listing's URL is still fresh: no API call
        site.mutate({"action": "expire_urls"})
        fresh = await provider.resolve(video, previous=lease)
        assert _api_calls(http) == calls + 1  # exactly one GET /videos/{id}
        wait_until(
            lambda: (
                [e["path"] for e in site.log.entries(path=VIDEO_BY_ID)]
                == [f"/api/v1/videos/{video.remote_id}"]
            ),
            "GET /videos/{id} is logged",
        )
        assert fresh.url != lease.url and dict(fresh.headers) == {}
        response = await http.request("HEAD", fresh.url, tag="t")
        assert response.status_code == 200


async def test_a_listed_url_is_handed_out_once_and_a_relisting_keeps_only_new_ones(
    site: HourOneSite, tmp_path: Path
) -> None:
    """The listing's URLs serve the first resolve of each video (the size probe) and are then let go (the
    resolver keeps its leases); a re-listing keeps URLs only for videos new to it."""
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        listing = await provider.list(provider.root())
        first, second = [v for v in listing.entries if isinstance(v, Video)][:2]
        calls = _api_calls(http)
        await provider.resolve(first)
        assert _api_calls(http) == calls  # the listing's URL
        await provider.resolve(first)
        assert _api_calls(http) == calls + 1  # handed out before: GET /videos/{id}
        appearing = next(h for h in listing.hidden if h.status == "processing")
        site.mutate({"action": "set_status", "video_id": appearing.remote_id, "status": "ready"})
        relisted = await provider.list(provider.root())
        new = next(v for v in relisted.entries if isinstance(v, Video) and v.remote_id == appearing.remote_id)
        calls = _api_calls(http)
        await provider.resolve(new)
        assert _api_calls(http) == calls  # new to this listing: its URL was kept
        await provider.resolve(second)
        assert _api_calls(http) == calls + 1  # listed twice, never asked: its URL was not kept


async def test_a_relisting_keeps_the_videos_that_did_not_change(site: HourOneSite, tmp_path: Path) -> None:
    """Read against the previous listing (`vidfs.catalog.carry`, as the listing cache does), a re-listing
    gives back the previous objects of the videos that did not change, and new ones for a renamed video, a
    progress that moved (an xattr) and a duration learned only now."""
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        first = await provider.list(provider.root())
        before = {v.remote_id: v for v in first.entries if isinstance(v, Video)}
        previous = {ROOT_ID: first}
        with carry.listing_for(ROOT_ID, previous.get) as carries:
            again = await provider.list(provider.root())
        assert all(a is b for a, b in zip(first.entries, again.entries, strict=True))
        assert carries.carried == len(before)

        renamed, moved = sorted(before)[:2]
        site.mutate({"action": "rename", "video_id": renamed, "name": "Quarterly review"})
        site.mutate({"action": "set_status", "video_id": moved, "status": "published", "progress": 99})
        previous[ROOT_ID] = again
        with carry.listing_for(ROOT_ID, previous.get) as carries:
            third = await provider.list(provider.root())
    after = {v.remote_id: v for v in third.entries if isinstance(v, Video)}
    assert after[renamed] is not before[renamed] and after[renamed].name == "Quarterly review.mp4"
    assert after[moved] is not before[moved] and after[moved].xattrs["progress"] == "99"
    assert after[moved].xattrs["duration"] == before[moved].xattrs["duration"]
    assert all(after[rid] is before[rid] for rid in before if rid not in (renamed, moved))
    assert carries.carried == len(before) - 2

    # A duration the previous listing lacked (its metadata call failed) makes the video new too.
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state2", metadata_concurrency=0)
        bare = await provider.list(provider.root())
        assert not any("duration" in v.xattrs for v in bare.entries if isinstance(v, Video))
        provider._metadata_concurrency = 8
        with carry.listing_for(ROOT_ID, {ROOT_ID: bare}.get) as carries:
            timed = await provider.list(provider.root())
    assert carries.carried == 0
    assert all("duration" in v.xattrs for v in timed.entries if isinstance(v, Video))


async def test_opaque_url_lease_has_no_expiry(site: HourOneSite, tmp_path: Path) -> None:
    site.update_settings({"url_style": "opaque"})
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state")
        listing = await provider.list(provider.root())
        video = next(v for v in listing.entries if isinstance(v, Video))
        assert (await provider.resolve(video)).expires_at is None


async def test_first_seen_times_survive_a_new_provider(site: HourOneSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient()) as http:
        one = _provider(site, http, tmp_path / "state")
        first = {v.remote_id: v.mtime for v in (await one.list(one.root())).entries}
        document = json.loads((tmp_path / "state" / STATE_FILE).read_text())
        assert set(document["first_seen"]) == set(first)
        assert all(float(int(m)) == m for m in first.values() if m is not None)  # whole seconds
        two = _provider(site, http, tmp_path / "state")
        again = {v.remote_id: v.mtime for v in (await two.list(two.root())).entries}
        assert again == first
        assert not list((tmp_path / "state").glob(".*.tmp"))  # written atomically


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_first_seen_times_of_two_mounts_of_one_cache_agree(tmp_path: Path) -> None:
    """Two mounts of one cache dir: what one stamped is the other's too, the first writer's time wins."""
    path, log = tmp_path / "state" / STATE_FILE, logging.getLogger("test")
    one_clock, two_clock = _Clock(1000), _Clock(2000)
    one, two = FirstSeen(path, log, one_clock), FirstSeen(path, log, two_clock)
    assert dict(await one.stamp(["a"])) == {"a": 1000}
    assert dict(await two.stamp(["b"])) == {"b": 2000}
    assert json.loads(path.read_text())["first_seen"] == {"a": 1000, "b": 2000}
    one_clock.now = 3000
    assert dict(await one.stamp(["a", "b", "c"])) == {"a": 1000, "b": 2000, "c": 3000}
    assert json.loads(path.read_text())["first_seen"] == {"a": 1000, "b": 2000, "c": 3000}
    assert await one.stamp([]) == {}


async def test_first_seen_times_hold_while_the_state_file_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not persisted: the mount keeps them (mtimes stay put until unmount), and writes them when it can."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory goes\n")
    clock = _Clock(1000)
    first_seen = FirstSeen(blocker / STATE_FILE, logging.getLogger("test"), clock)
    with caplog.at_level(logging.WARNING):
        assert dict(await first_seen.stamp(["a"])) == {"a": 1000}
        clock.now = 2000
        assert dict(await first_seen.stamp(["a", "b"])) == {"a": 1000, "b": 2000}
        clock.now = 3000
        assert dict(await first_seen.stamp(["b", "a"])) == {"a": 1000, "b": 2000}
    assert len([r for r in caplog.records if "cannot persist" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1  # said once
    blocker.unlink()
    assert dict(await first_seen.stamp(["c"])) == {"c": 3000}  # and the times held are written with it
    document = json.loads((blocker / STATE_FILE).read_text())
    assert document["first_seen"] == {"a": 1000, "b": 2000, "c": 3000}


async def test_the_first_seen_file_is_read_a_line_at_a_time_and_an_earlier_one_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An id a line, as json.dumps writes it (escapes included), read back without decoding the whole file;
    a file written whole by an earlier version is read and then rewritten a line an id; a damaged line is
    said once and its file treated as unreadable from there."""
    path, log = tmp_path / STATE_FILE, logging.getLogger("test")
    path.write_text(json.dumps({"format": 1, "first_seen": {"old": 500, "x:y": 600.0}}))  # one line
    first_seen = FirstSeen(path, log, _Clock(1000))
    odd = 'quote " back \\ colon : été'
    assert await first_seen.stamp(["old", odd, "x:y"]) == {"old": 500, odd: 1000, "x:y": 600}
    lines = path.read_text().splitlines()
    assert lines[0] == '{"format":1,"first_seen":{' and lines[-1] == "}}" and len(lines) == 5
    assert json.loads(path.read_text())["first_seen"] == {"old": 500, "x:y": 600, odd: 1000}
    again = FirstSeen(path, log, _Clock(2000))
    assert await again.stamp([odd, "x:y", "new"]) == {odd: 1000, "x:y": 600, "new": 2000}
    assert json.loads(path.read_text())["first_seen"] == {"old": 500, "x:y": 600, odd: 1000, "new": 2000}

    path.write_text('{"format":1,"first_seen":{\n"a":10,\nnot a line\n"b":20\n}}\n')
    damaged = FirstSeen(path, log, _Clock(3000))
    with caplog.at_level(logging.WARNING):
        assert await damaged.stamp(["a", "b"]) == {"a": 10, "b": 3000}
        assert await damaged.stamp(["c"]) == {"c": 3000}
    assert json.loads(path.read_text())["first_seen"] == {"a": 10, "b": 3000, "c": 3000}
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1


async def test_wrong_api_key_is_one_clear_auth_error(site: HourOneSite, tmp_path: Path) -> None:
    async with aclosing(HttpClient()) as http:
        provider = _provider(site, http, tmp_path / "state", api_key="not-the-key")
        with pytest.raises(AuthError) as info:
            await provider.list(provider.root())
    message = str(info.value)
    assert "api-key" in message and "401" in message and "not-the-key" not in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------------------
# real mounts


emulator = emulator_fixture("hourone")


def test_unfinished_videos_are_absent(emulator: Emulator, make_config: Any, mounts: Any) -> None:
    catalog = emulator.catalog("hourone")
    expected = CASES["hourone"].expected(catalog)
    config = make_config({INSTANCE: emulator.config("hourone")})
    mount = mounts(config)
    shown = sorted(os.listdir(mount.path / INSTANCE))
    assert shown == sorted(expected)
    hidden = [v for v in catalog["videos"] if v["status"] in HIDDEN_STATUSES]
    assert {v["status"] for v in hidden} == set(HIDDEN_STATUSES)
    for video in hidden:
        assert not any(name.startswith(video["name"]) for name in shown), video["name"]
    # Every rendered file carries the API's facts as xattrs.
    for name in shown:
        path = mount.path / INSTANCE / name
        attrs = set(os.listxattr(path))
        for key in ("status", "progress", "draft_id", "video_player_url", "duration", "remote_id"):
            assert f"user.vidfs.{key}" in attrs, (name, key)
        assert float(os.getxattr(path, "user.vidfs.duration")) > 0
    # `vidfs ls` names the items that are not files, with their status.
    result = subprocess.run(
        vidfs_cmd("ls", str(config), INSTANCE), capture_output=True, text=True, timeout=120, check=True
    )
    for video in hidden:
        assert re.search(rf"{video['status']}\s+{re.escape(video['name'])}", result.stdout), video


@pytest.mark.parametrize("style", ["opaque", "expires"])
def test_url_expiring_mid_read_is_renewed(
    style: str, tmp_path: Path, media_dir: Path, make_config: Any, mounts: Any
) -> None:
    emu = start_emulator(
        tmp_path / "emulator",
        ["hourone"],
        media_dir,
        "--set",
        "hourone.url_lifetime=2",
        "--set",
        f"hourone.url_style={style}",
    )
    try:
        catalog = emu.catalog("hourone")
        expected = CASES["hourone"].expected(catalog)
        rel, expect = max(
            ((r, e) for r, e in expected.items() if e.size <= 8 << 20), key=lambda item: item[1].size
        )
        video_id = next(v["id"] for v in _visible(catalog) if v["path_on_disk"] == expect.source)
        # Slow storage (the rule is posted to the API's control URL and reaches the storage subsite) and one
        # connection per origin: the read outlives several URL lifetimes.
        emu.post("hourone", "faults", {"rules": [{"kind": "latency", "seconds": 1.0, "path": "^/storage/"}]})
        config = make_config(
            {INSTANCE: emu.config("hourone")},
            extra="[http]\nmax_connections_per_host = 1\n",
        )
        config.write_text(config.read_text().replace("[cache]\n", '[cache]\nreadahead_max = "64KiB"\n', 1))
        mount = mounts(config)
        assert sha256_file(mount.path / INSTANCE / rel) == expect.sha256
        unmount(mount)
        log = emu.requests("hourone")
        storage = [e for e in log if e["origin"] == "hourone-storage"]
        assert storage and all("api-key" not in e["headers"] for e in storage)
        assert all("workspace-id" not in e["headers"] for e in storage)
        assert emu.catalog("hourone")["storage"]["requests_with_api_key"] == 0
        renewals = [e for e in log if e["origin"] == "hourone" and re.search(VIDEO_BY_ID, e["path"])]
        assert any(video_id in e["path"] for e in renewals), "the URL was never renewed"
        assert all(e["headers"].get("api-key") for e in renewals)
        if style == "opaque":
            # Nothing in the URL tells its expiry: storage refused it during the read (a GET, not the HEAD
            # of the listing) and the read went on with a new URL.
            gets = [e for e in storage if e["method"] == "GET" and video_id in e["path"]]
            refused = [e["seq"] for e in gets if e["status"] == 403]
            assert refused, "storage never refused the URL mid-read"
            assert any(e["status"] == 206 and e["seq"] > max(refused) for e in gets)
    finally:
        stop_process(emu.process)


def _rsync_transferred(source: Path, target: Path) -> int:
    result = subprocess.run(
        ["rsync", "-a", "--itemize-changes", "--stats", f"{source}/", f"{target}/"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    match = re.search(r"Number of regular files transferred: ([\d,]+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1).replace(",", ""))


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync missing")
def test_rsync_twice_across_a_remount_copies_nothing(
    emulator: Emulator, make_config: Any, mounts: Any, tmp_path: Path
) -> None:
    expected = CASES["hourone"].expected(emulator.catalog("hourone"))
    config = make_config({INSTANCE: emulator.config("hourone")})
    target = tmp_path / "copy"
    first = mounts(config)
    mtimes = {name: (first.path / INSTANCE / name).stat().st_mtime for name in expected}
    assert _rsync_transferred(first.path / INSTANCE, target) == len(expected)
    unmount(first)
    state = tmp_path / "cache" / "state" / INSTANCE / STATE_FILE
    assert state.is_file()
    second = mounts(config)  # same mount point, same cache dir
    assert {name: (second.path / INSTANCE / name).stat().st_mtime for name in expected} == mtimes
    assert _rsync_transferred(second.path / INSTANCE, target) == 0
    for name, expect in expected.items():
        assert sha256_file(target / name) == expect.sha256, name
