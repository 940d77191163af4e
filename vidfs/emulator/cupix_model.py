"""The Cupix emulator's catalog: its objects, how it is made and scaled, and their JSON (the site is
`vidfs.emulator.cupix`).

Workspaces hold facilities (sites, each with a stable ``key``), a facility holds records (one capture date
each), a record holds captures, a capture holds videos. Times are epoch seconds; the API shows them as
Rails does (`iso`: milliseconds, ``Z``), except a record's and a capture's ``captured_at``, which carry the
facility's own offset. Errors: 400 has the seed's body (`bad_request`), 401/403/404 have none (`no_body`);
the storage answers S3's XML (`S3Denied`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from vidfs.emulator.content import Blob, FileBlob, SyntheticBlob
from vidfs.emulator.request import HttpError
from vidfs.emulator.vendor import stable_uuid

JSON = dict[str, Any]

ORDERABLE = ("id", "name", "created_at", "updated_at")
INSTA360 = {"make": "Insta360", "model": "ONE X2", "serial_number": "IXSE42A7KD91"}
THETA = {"make": "RICOH", "model": "THETA X", "serial_number": "10010583"}
DRONE = {"make": "DJI", "model": "Mavic 3 Enterprise", "serial_number": "1581F5FJD22B4"}
_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}
_T0 = 1698796800  # 2023-11-01T00:00:00Z
_DAY = 86400
_NS = uuid.UUID("0c6d3b52-2f0e-4a8e-9a51-6f3c2d1b7e40")
SCALE_IDS = {"workspace": 16, "facility": 207, "record": 351, "capture": 551, "video": 1_000_000}


def iso(epoch: float, offset_hours: int = 0) -> str:
    """Rails' JSON time: ``2023-11-17T10:15:00.000Z`` (UTC) or ``...000+09:00`` with an offset."""
    when = datetime.fromtimestamp(epoch, timezone(timedelta(hours=offset_hours)))
    text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    if offset_hours == 0:
        return text + "Z"
    sign = "+" if offset_hours > 0 else "-"
    return f"{text}{sign}{abs(offset_hours):02d}:00"


def amz_date(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def bad_request(reason: str, message: str) -> HttpError:
    """The seed's ErrorResponse."""
    body = {
        "result": {"code": 400, "type": "BadRequest", "reason": reason, "message": message},
        "session": None,
    }
    return HttpError(400, message, body=body)


def no_body(status: int) -> HttpError:
    """401/403/404 have no documented body: send none."""
    return HttpError(status, body=b"")


class S3Denied(Exception):
    """A storage refusal, answered with S3's XML error body."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def xml(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{self.message}</Message></Error>"
        ).encode()


def s3_error(code: str, message: str, status: int = 403) -> S3Denied:
    return S3Denied(code, message, status)


@dataclass
class Workspace:
    id: int
    name: str
    created: int
    updated: int


@dataclass
class Facility:
    id: int
    key: str
    name: str
    workspace_id: int
    offset_hours: int
    created: int
    updated: int


@dataclass
class Record:
    id: int
    facility_key: str
    facility_id: int
    captured: int
    name: str | None
    created: int
    updated: int


@dataclass
class Capture:
    id: int
    record_id: int
    name: str
    captured: int
    created: int
    updated: int
    state: str = "done"


@dataclass(slots=True)
class CupixVideo:
    id: int
    capture_id: int
    name: str
    blob: Blob
    camera: dict[str, str]
    created: int
    updated: int
    state: str = "done"
    report_size: bool = True
    uuid: str = ""

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES.get(Path(self.name).suffix.lower(), "application/octet-stream")


@dataclass
class Failure:
    status: int
    remaining: int | None
    message: str = ""


def sort_value(item: Any, order_by: str) -> Any:
    """The value a list is ordered by (`ORDERABLE` names; times as epoch, which orders as their ISO text)."""
    if order_by == "created_at":
        return item.created
    if order_by == "updated_at":
        return item.updated
    return getattr(item, order_by)


def ws_attrs(w: Workspace) -> JSON:
    return {"id": w.id, "name": w.name, "created_at": iso(w.created), "updated_at": iso(w.updated)}


def fac_attrs(f: Facility) -> JSON:
    return {
        "id": f.id,
        "key": f.key,
        "name": f.name,
        "workspace_id": f.workspace_id,
        "time_zone": f"Etc/GMT{-f.offset_hours:+d}" if f.offset_hours else "UTC",
        "created_at": iso(f.created),
        "updated_at": iso(f.updated),
    }


def _dates(item: Record | Capture, offset: int) -> JSON:
    """``captured_at`` in the facility's offset, ``created_at`` and ``updated_at`` in UTC."""
    captured = iso(item.captured, offset)
    return {"captured_at": captured, "created_at": iso(item.created), "updated_at": iso(item.updated)}


def rec_attrs(r: Record, offset: int) -> JSON:
    head = {"id": r.id, "name": r.name, "facility_id": r.facility_id, "facility_key": r.facility_key}
    return {**head, **_dates(r, offset)}


def cap_attrs(c: Capture, offset: int) -> JSON:
    return {"id": c.id, "name": c.name, "state": c.state, "record_id": c.record_id, **_dates(c, offset)}


def video_attrs(v: CupixVideo) -> JSON:
    uploaded = v.state != "created"
    return {
        "id": v.id,
        "uuid": v.uuid,
        "name": v.name,
        "state": v.state,
        "filesize": v.blob.size if uploaded and v.report_size else None,
        "capture_id": v.capture_id,
        "created_at": iso(v.created),
        "updated_at": iso(v.updated),
        "camera": dict(v.camera),
    }


class CupixCatalog:
    """The account's catalog and how it is made: the hand-made sample (`_build_catalog`) and the scaled
    capture (`add_scaled` / `remove_scaled`). A mixin of the site, which provides the tables and samples."""

    workspaces: dict[int, Workspace]
    facilities: dict[int, Facility]
    records: dict[int, Record]
    captures: dict[int, Capture]
    videos: dict[int, CupixVideo]
    samples: dict[str, Path]

    def _workspace(self, wid: int, name: str, day: int) -> Workspace:
        t = _T0 - 300 * _DAY + day * _DAY
        ws = Workspace(wid, name, t, t + 3600)
        self.workspaces[wid] = ws
        return ws

    def _facility(self, ws: Workspace, fid: int, key: str, name: str, offset: int) -> Facility:
        t = ws.created + (fid % 50) * _DAY
        fac = Facility(fid, key, name, ws.id, offset, t, t + 7200)
        self.facilities[fid] = fac
        return fac

    def _record(self, fac: Facility, rid: int, when: str, name: str | None = None) -> Record:
        """`when` is the facility-local "YYYY-MM-DD HH:MM"."""
        local = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(
            tzinfo=timezone(timedelta(hours=fac.offset_hours))
        )
        captured = int(local.timestamp())
        rec = Record(rid, fac.key, fac.id, captured, name, captured + 1800, captured + 5400)
        self.records[rid] = rec
        fac.updated = max(fac.updated, rec.updated)
        return rec

    def _capture(self, rec: Record, cid: int, name: str, minute: int) -> Capture:
        t = rec.captured + minute * 60
        cap = Capture(cid, rec.id, name, t, t + 1200, t + 3600)
        self.captures[cid] = cap
        return cap

    def _video(
        self, cap: Capture, vid: int, name: str, blob: Blob | str, camera: dict[str, str], **kw: Any
    ) -> CupixVideo:
        created = kw.pop("created", cap.created + (vid % 100) * 60)
        video = CupixVideo(
            id=vid,
            capture_id=cap.id,
            name=name,
            blob=FileBlob(self.samples[blob]) if isinstance(blob, str) else blob,
            camera=camera,
            created=created,
            updated=created + 900,
            uuid=stable_uuid(_NS, f"video/{vid}"),
            **kw,
        )
        self.videos[vid] = video
        return video

    def _build_catalog(self) -> None:
        acme = self._workspace(11, "Acme Construction", 0)
        beta = self._workspace(12, "Beta Builders", 5)
        self._workspace(13, "Gamma Infrastructure", 9)
        self._workspace(14, "Delta Homes", 12)
        self._workspace(15, "Omega Facilities", 20)
        self._build_tower(self._facility(acme, 201, "hvt-2c9e41", "Harbor View Tower", 9))
        clinic = self._facility(acme, 202, "rvc-81d07a", "Riverside Clinic", -5)
        self._facility(acme, 203, "dp7-5521fe", "Depot 7", 1)
        self._facility(acme, 204, "ngs-90ab13", "Northgate School", 0)
        lofts = self._facility(acme, 205, "esl-33c0d8", "Eastside Lofts / Phase 2", 2)
        terminal = self._facility(beta, 206, "atb-77e2c5", "Airport Terminal B", -8)

        rc = self._record(clinic, 321, "2023-11-20 08:00", "Handover")
        self._video(
            self._capture(rc, 521, "Ground floor", 10), 9101, "clinic_walk.mp4", "moov_end.mp4", THETA
        )
        rl = self._record(lofts, 331, "2023-11-28 13:00")
        self._video(self._capture(rl, 531, "Unit 4B", 10), 9201, "unit4b.mp4", "faststart.mp4", THETA,
                    state="created")  # fmt: skip
        rt = self._record(terminal, 341, "2023-11-22 07:45", "Gate area")
        self._video(self._capture(rt, 541, "Gates 10-14", 10), 9301, "terminal_gates.mp4", "clip.mov", THETA)

    def _build_tower(self, tower: Facility) -> None:
        """Harbor View Tower: five records (two on the same date), one of them with five captures."""
        r1 = self._record(tower, 301, "2023-11-17 10:00", "Weekly walk")
        r2 = self._record(tower, 302, "2023-11-24 09:30", "Weekly walk")
        r3 = self._record(tower, 303, "2023-11-24 15:00", "Afternoon walk")
        self._record(tower, 304, "2023-12-01 09:00")
        r5 = self._record(tower, 305, "2023-12-08 11:00")
        level1 = self._capture(r1, 501, "Level 1", 5)
        level2 = self._capture(r1, 502, "Level 2", 25)
        level3 = self._capture(r1, 503, "Level 3", 45)
        roof = self._capture(r1, 504, "Roof", 65)
        self._capture(r1, 505, "Parking", 85)
        v = self._video
        # Level 1: six videos (three pages), three of them files.
        v(level1, 9001, "VID_20231117_101500_00_038.insv", "moov_end.mp4", INSTA360)
        v(level1, 9002, "VID_20231117_101500_10_038.insv", "faststart.mp4", INSTA360)
        v(level1, 9003, "VID_20231117_102000_00_039.insv", "moov_end.mp4", INSTA360, state="created")
        v(level1, 9004, "VID_20231117_102000_10_039.insv", "moov_end.mp4", INSTA360, state="created")
        v(level1, 9005, "site_overview.mp4", "moov_end.mp4", THETA)
        v(level1, 9006, "VID_20231117_103000_00_040.insv", "faststart.mp4", INSTA360, state="failed")
        # Level 2: a pair; Level 3: the same names as Level 1 (Insta360 names repeat across captures).
        v(level2, 9011, "VID_20231117_111500_00_041.insv", "faststart.mp4", INSTA360)
        v(level2, 9012, "VID_20231117_111500_10_041.insv", "clip.mov", INSTA360)
        v(level3, 9021, "VID_20231117_101500_00_038.insv", "clip.mov", INSTA360)
        v(level3, 9022, "VID_20231117_101500_10_038.insv", "faststart.mp4", INSTA360)
        # Roof: a re-upload under the very same name (both done), a drone video, one still processing.
        v(roof, 9031, "VID_20231117_140000_00_045.insv", "faststart.mp4", INSTA360)
        v(roof, 9032, "VID_20231117_140000_00_045.insv", "clip.mov", INSTA360)
        v(roof, 9033, "roof_drone.mp4", "big.mp4", DRONE)
        v(roof, 9034, "roof_drone_2.mp4", "big.mp4", DRONE, state="processing")
        v(self._capture(r2, 511, "Level 1", 5), 9041, "VID_20231124_093500_00_050.insv", "clip.mov", INSTA360)
        v(self.captures[511], 9042, "VID_20231124_093500_10_050.insv", "faststart.mp4", INSTA360)
        v(self._capture(r3, 512, "Level 2", 5), 9051, "level2_walk.mp4", "faststart.mp4", THETA)
        # A done video whose filesize the API does not tell (the size comes from a HEAD on storage).
        v(self._capture(r5, 513, "Basement", 10), 9061, "VID_20231208_111000_00_061.insv", "moov_end.mp4",
          INSTA360, report_size=False)  # fmt: skip

    def _scale_capture(self) -> Capture:
        """The capture scaled videos go to (made with its parents for the first one)."""
        ids = SCALE_IDS
        capture = self.captures.get(ids["capture"])
        if capture is None:
            ws = self._workspace(ids["workspace"], "Scale Works", 30)
            fac = self._facility(ws, ids["facility"], "scl-5ca1e0", "Scale site", 0)
            capture = self._capture(self._record(fac, ids["record"], "2024-01-15 09:00"), ids["capture"],
                                    "Scale capture", 0)  # fmt: skip
        return capture

    def add_scaled(self, index: int) -> None:
        capture = self._scale_capture()
        pair, lens = divmod(index, 2)
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(capture.captured + pair * 30))
        name = f"VID_{stamp}_{lens * 10:02d}_{pair:06d}.insv"
        vid = SCALE_IDS["video"] + index
        blob = SyntheticBlob.of(f"cupix/{vid}")
        self._video(capture, vid, name, blob, INSTA360, created=capture.created + index)

    def remove_scaled(self, index: int) -> None:
        self.videos.pop(SCALE_IDS["video"] + index, None)
        if index == 0:
            for kind, table in (("capture", self.captures), ("record", self.records)):
                table.pop(SCALE_IDS[kind], None)
            self.facilities.pop(SCALE_IDS["facility"], None)
            self.workspaces.pop(SCALE_IDS["workspace"], None)
