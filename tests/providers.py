"""The provider contract suite's table: one entry per provider.

Each entry says how to start its emulator, which files the mount must show (computed from the emulator's
catalog with vidfs's naming rules), and how to make its credentials or URLs expire quickly.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidfs.catalog.naming import name_entries


@dataclass(frozen=True)
class Expect:
    size: int
    mtime: float | None
    sha256: str
    source: str  # path of the served bytes on disk
    remote_id: str = ""  # the vendor's id (for the fault suite's mutations)


@dataclass(frozen=True)
class Case:
    name: str
    expected: Callable[[dict[str, Any]], dict[str, Expect]]
    short_lived_args: tuple[str, ...]  # emulator args making tokens/URLs expire within seconds
    login_path: str  # regex of the request that obtains a token or URL (counted by the renewal test)
    storage_path: str  # regex of the byte-serving requests (latency is injected there)
    wrong_password: Callable[[dict[str, Any]], dict[str, Any]]  # a config table with bad credentials
    # The fault suite's hook: mutate(emulator, action, remote_id) with action one of "change_content" (new
    # bytes, new ETag), "delete" (the video vanishes: 404), "expire_tokens" (every token/URL issued so far
    # stops working). None: the provider's emulator cannot do it (those tests are skipped, with a reason).
    mutate: Callable[[Any, str, str], None] | None = None
    # False: nothing of the provider expires (plain HTTP with Basic auth), so the renewal test is skipped.
    renewal: bool = True


def _pixop_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    projects = catalog["projects"]
    project_names = name_entries([(p["id"], p["name"], True, None) for p in projects])
    out: dict[str, Expect] = {}
    for project, project_dir in zip(projects, project_names, strict=True):
        videos = [v for v in catalog["videos"] if v["projectId"] == project["id"] and v["visible"]]
        raw: list[tuple[str, str, bool, str | None]] = []
        for video in videos:
            name = video["fileName"] or video["name"]
            if video.get("parentId"):
                stem, ext = posixpath.splitext(name)
                name = f"{stem}.processed{ext}"
            raw.append((video["id"], name, False, None))
        for video, file_name in zip(videos, name_entries(raw), strict=True):
            out[f"{project_dir}/{file_name}"] = Expect(
                size=video["size"],
                mtime=video["mtime_epoch"],
                sha256=video["sha256"],
                source=video["path_on_disk"],
                remote_id=video["id"],
            )
    return out


def _hourone_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    # One flat directory; the API has no timestamps (mtime = first seen by the mount: not checked here).
    videos = [v for v in catalog["videos"] if v["visible"]]
    names = name_entries([(v["id"], v["name"] or v["id"], False, v["content_type"]) for v in videos])
    return {
        name: Expect(
            size=v["size"], mtime=None, sha256=v["sha256"], source=v["path_on_disk"], remote_id=v["id"]
        )
        for v, name in zip(videos, names, strict=True)
    }


def _cupix_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    # workspace / facility / record date / capture / video, each level named as the provider does.
    out: dict[str, Expect] = {}
    workspaces = catalog["workspaces"]
    ws_names = name_entries([(f"ws:{w['id']}", w["name"], True, None) for w in workspaces])
    for ws, ws_dir in zip(workspaces, ws_names, strict=True):
        facilities = [f for f in catalog["facilities"] if f["workspace_id"] == ws["id"] and f["key"]]
        fac_names = name_entries([(f"fac:{f['key']}", f["name"] or f["key"], True, None) for f in facilities])
        for fac, fac_dir in zip(facilities, fac_names, strict=True):
            records = [r for r in catalog["records"] if r["facility_key"] == fac["key"]]
            rec_names = name_entries([(f"rec:{r['id']}", r["date"], True, None) for r in records])
            for rec, rec_dir in zip(records, rec_names, strict=True):
                captures = [c for c in catalog["captures"] if c["record_id"] == rec["id"]]
                cap_names = name_entries([(f"cap:{c['id']}", c["name"], True, None) for c in captures])
                for cap, cap_dir in zip(captures, cap_names, strict=True):
                    videos = [v for v in catalog["videos"] if v["capture_id"] == cap["id"] and v["visible"]]
                    file_names = name_entries([(str(v["id"]), v["name"], False, None) for v in videos])
                    for video, file_name in zip(videos, file_names, strict=True):
                        out[f"{ws_dir}/{fac_dir}/{rec_dir}/{cap_dir}/{file_name}"] = Expect(
                            size=video["size"],
                            mtime=video["mtime_epoch"],
                            sha256=video["sha256"],
                            source=video["path_on_disk"],
                            remote_id=str(video["id"]),
                        )
    return out


def _http_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    # The served tree as is: every directory's children named by vidfs's rules (ids = paths).
    children: dict[str, list[tuple[str, str, bool]]] = {}
    for directory in catalog["dirs"]:
        parent, _, name = directory.rpartition("/")
        children.setdefault(parent, []).append((directory, name, True))
    files = {f["path"]: f for f in catalog["files"]}
    for path in files:
        parent, _, name = path.rpartition("/")
        children.setdefault(parent, []).append((path, name, False))
    shown: dict[str, str] = {"": ""}
    for parent in sorted(children, key=lambda p: p.count("/") + bool(p)):
        items = children[parent]
        names = name_entries([(rid, name, is_dir, None) for rid, name, is_dir in items])
        for (rid, _name, _is_dir), name in zip(items, names, strict=True):
            shown[rid] = f"{shown[parent]}/{name}" if shown[parent] else name
    return {
        shown[path]: Expect(size=f["size"], mtime=f["mtime"], sha256=f["sha256"], source=f["path_on_disk"])
        for path, f in files.items()
    }


def _valt_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    # room / record / video; a video is named by its URL's `filename` (else record name + extension), and
    # videos of one record sharing a name get " [<video id>]" first, as vidfs.providers.valt does.
    from collections import Counter

    from vidfs.catalog.naming import split_ext

    def room_key(record: dict[str, Any]) -> str:
        return f"room:{record['room']['id']}" if record["room"] else "valt:no-room"

    records = catalog["records"]
    rooms: dict[str, str] = {}
    for record in records:
        rooms.setdefault(room_key(record), record["room"]["name"] if record["room"] else "(no room)")
    room_dirs = name_entries([(key, name, True, None) for key, name in rooms.items()])
    out: dict[str, Expect] = {}
    for key, room_dir in zip(rooms, room_dirs, strict=True):
        in_room = [r for r in records if room_key(r) == key]
        record_dirs = name_entries([(str(r["id"]), r["name"], True, None) for r in in_room])
        for record, record_dir in zip(in_room, record_dirs, strict=True):
            videos = record["videos"]
            raw = [v["filename"] or record["name"] + v["ext"] for v in videos]
            counts = Counter(raw)
            named = []
            for video, name in zip(videos, raw, strict=True):
                if counts[name] > 1:
                    stem, ext = split_ext(name)
                    name = f"{stem} [{video['id']}]{ext}"
                named.append((f"{record['id']}/{video['id']}", name, False, video["content_type"]))
            for video, file_name in zip(videos, name_entries(named), strict=True):
                out[f"{room_dir}/{record_dir}/{file_name}"] = Expect(
                    size=video["size"],
                    mtime=record["created"],
                    sha256=video["sha256"],
                    source=video["path_on_disk"],
                    remote_id=f"{record['id']}/{video['id']}",
                )
    return out


def _aipix_expected(catalog: dict[str, Any]) -> dict[str, Expect]:
    # camera (pretty_name, else camera-<id>) / stream type / archive name, each level named by vidfs's
    # rules with the ids vidfs.providers.aipix uses (camera id, "<camera id>/<stream type>", archive id).
    archives = [a for a in catalog["archives"] if a["visible"]]
    cameras = {str(a["camera_id"]): a["camera_dir"] for a in archives}
    camera_names = name_entries([(cid, raw, True, None) for cid, raw in cameras.items()])
    camera_dirs = dict(zip(cameras, camera_names, strict=True))
    out: dict[str, Expect] = {}
    for cid, camera_dir in camera_dirs.items():
        streams = sorted({a["stream_type"] for a in archives if str(a["camera_id"]) == cid})
        stream_dirs = name_entries([(f"{cid}/{stream}", stream, True, None) for stream in streams])
        for stream, stream_dir in zip(streams, stream_dirs, strict=True):
            files = [a for a in archives if str(a["camera_id"]) == cid and a["stream_type"] == stream]
            names = name_entries([(str(a["id"]), a["name"], False, a["content_type"]) for a in files])
            for archive, name in zip(files, names, strict=True):
                out[f"{camera_dir}/{stream_dir}/{name}"] = Expect(
                    size=archive["size"],
                    mtime=archive["mtime_epoch"],
                    sha256=archive["sha256"],
                    source=archive["path_on_disk"],
                    remote_id=str(archive["id"]),
                )
    return out


def _aipix_mutate(emulator: Any, action: str, remote_id: str) -> None:
    # delete / change_content act on the stored file: every archive sharing its name sees it.
    body: dict[str, Any] = {"action": action}
    if action in ("delete", "change_content"):
        body = {"action": "delete_file" if action == "delete" else action, "id": int(remote_id)}
    emulator.post("aipix", "mutate", body)


def _valt_mutate(emulator: Any, action: str, remote_id: str) -> None:
    if action == "change_content":
        import pytest

        # An open handle does get ESTALE (tests/test_provider_valt.py); but VALT tells no size, ETag or update
        # time, so the engine's HEAD-learned size/ETag (kept per fingerprint) would never be refreshed.
        pytest.skip("VALT recordings never change, and nothing in its API could tell a changed one")
    record_id, _, video_id = remote_id.partition("/")
    emulator.post("valt", "mutate", {"action": action, "record_id": record_id, "video_id": video_id})


CASES: dict[str, Case] = {
    "valt": Case(
        name="valt",
        expected=_valt_expected,
        short_lived_args=("--set", "valt.url_lifetime=2"),
        login_path=r"^/api/v3/records/download/",
        storage_path=r"^/distribution/",
        wrong_password=lambda table: {**table, "password": "not-the-password"},
        mutate=_valt_mutate,
    ),
    "pixop": Case(
        name="pixop",
        expected=_pixop_expected,
        short_lived_args=("--jwt-lifetime", "2"),
        login_path=r"^/accounts/v1/token",
        storage_path=r"^/media/v1/download/",
        wrong_password=lambda table: {**table, "password": "not-the-password"},
        mutate=lambda emulator, action, rid: emulator.post(
            "pixop", "mutate", {"action": action, "video_id": rid}
        ),
    ),
    "hourone": Case(
        name="hourone",
        expected=_hourone_expected,
        short_lived_args=("--set", "hourone.url_lifetime=2"),
        login_path=r"^/api/v1/videos/[0-9a-f-]{36}(\?|$)",
        storage_path=r"^/storage/videos/",
        wrong_password=lambda table: {**table, "api_key": "not-the-password"},
        mutate=lambda emu, action, rid: emu.post(
            "hourone",
            "mutate",
            {"action": "expire_urls"} if action == "expire_tokens" else {"action": action, "video_id": rid},
        ),
    ),
    "cupix": Case(
        name="cupix",
        expected=_cupix_expected,
        short_lived_args=("--set", "cupix.url_lifetime=2"),
        login_path=r"/videos/\d+/download",
        storage_path=r"^/storage/",
        wrong_password=lambda table: {**table, "token": "not-the-password"},
        mutate=lambda emulator, action, rid: emulator.post(
            "cupix", "mutate", {"action": action, "video_id": rid}
        ),
    ),
    "http": Case(
        name="http",
        expected=_http_expected,
        short_lived_args=(),
        login_path=r"^/pub/$",
        storage_path=r"^/pub/.*[^/]$",
        wrong_password=lambda table: {**table, "password": "not-the-password"},
        renewal=False,
    ),
    "aipix": Case(
        name="aipix",
        expected=_aipix_expected,
        # The archive URLs never expire: the token does (2 s), and the files are served from the API's own
        # origin behind it (as in the seed), so a long read must log in again.
        short_lived_args=("--jwt-lifetime", "2", "--set", "aipix.storage_origin=api"),
        login_path=r"^/api/v1/token(\?|$)",
        storage_path=r"^/storage/",
        wrong_password=lambda table: {**table, "password": "not-the-password"},
        mutate=_aipix_mutate,
    ),
}
