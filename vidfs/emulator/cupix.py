"""Cupix (CupixWorks API v1) emulator: workspaces → facilities → records → captures → videos, and the
signed-storage origin the downloads redirect to.

The API lives under ``/api/v1`` of the main origin (the provider's ``base_url`` is ``<url>/api/v1``):

``GET /me?fields=id``                      the token's user (a token check)
``GET /workspaces``                        every workspace of the user
``GET /facilities?workspace_id=``          facilities (sites, each with a stable ``key``)
``GET /records?facility_key=``             records: one capture date of a facility each
``GET /captures?record_id=``               captures of a record
``GET /videos?capture_id=``                uploaded videos of a capture (the seed's page)
``GET /videos/{id}/download``              302 to the file on the storage origin (a signed URL)

Every call needs the ``X-CUPIX-AUTH`` token header: without it, or with a wrong one, 401 with no body.
Every list needs ``fields=`` (a comma list; spaces around names are fine, as in the seed's sample
``'id, name, state'``): without it 400 with the seed's error body
``{"result":{"code","type","reason","message"},"session":null}``. Only the requested attributes are returned
(unknown names are ignored; ``camera`` is an object ``{make, model, serial_number}``). Lists take ``page``
(from 1), ``per_page`` (default `page_size`, capped at ``max_page_size``), ``order_by`` (id, name,
created_at, updated_at) and ``sort`` (asc | desc); without ``order_by`` they come newest-updated first.
The envelope is ``{"result":{"data":[{"id":"<string>","type":"video","attributes":{...}}],
"pagination":{total_entries,total_pages,per_page,current_page,next_page,previous_page}},"session":null}``
with ``next_page`` a page number or null. 404 and 403 have no body either. Timestamps are ISO 8601 with
milliseconds, ``Z`` (UTC); a record's and a capture's ``captured_at`` carry the facility's own offset.

Video states: ``created`` (not uploaded yet), ``done``, and others (``processing``, ``failed``) that only
``done`` videos leave; downloading a video that is not done answers 404. Insta360 videos come in pairs
(``VID_<date>_<time>_00_<n>.insv`` + ``..._10_<n>.insv``); the same names repeat across captures and one
capture holds a re-upload with the very same name twice. The ``.insv`` files carry real MP4 sample bytes.

Storage: a second `Site` (``cupix-storage``, another port) serves ``GET|HEAD /storage/<bucket>/<uuid>/<file>``
with Range, ETag and Last-Modified, but only with a valid signature: the 302 ``Location`` carries S3-style
query parameters ``X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date (YYYYMMDDTHHMMSSZ), X-Amz-Expires
(url_lifetime seconds), X-Amz-SignedHeaders, X-Amz-Signature`` (HMAC-SHA256 of path, date and expiry with a
per-process secret). A bad signature → 403 ``SignatureDoesNotMatch``, an expired URL → 403 ``AccessDenied``
(S3's XML bodies). Storage never needs, and records, any provider credential: every storage request that
carries ``X-CUPIX-AUTH``, ``Authorization``, ``Cookie`` or the API token anywhere is counted
(``storage.requests_with_credentials`` in the catalog and the settings).

Both origins share one fault switchboard (the storage site uses the main site's `Faults` object), so
``POST <control_url>/faults`` and, in-process, ``site.faults.set_rules`` reach the bytes too, and a rule's
``count`` is spent across both; pick the origin with the rule's ``path`` regex (``^/api/v1/`` for the API,
``^/storage/`` for the storage). The main control URL's request log lists both origins (``origin`` is
``cupix`` or ``cupix-storage``); the storage's own control URL lists only its requests.

Settings (``/_emulator/settings``): ``page_size`` (default 2, so every level spans three pages or more),
``max_page_size`` (100), ``url_lifetime`` (seconds a signed URL lives, default 300), ``token``; read-only
``storage_requests``, ``storage_requests_with_credentials``, ``downloads_resolved``.
Mutations (``/_emulator/mutate``): ``fail`` {endpoint: workspaces|facilities|records|captures|videos|
download|me, status (400 → the seed's body, others no body), count?, message?}, ``clear_failures``,
``set_state`` {video_id, state}, ``change_content`` {video_id, extra_bytes?} (new bytes, new ETag, later
``updated_at``), ``delete`` {video_id}, ``expire_tokens`` (a new signing secret: every storage URL issued so
far is refused with 403; the API token is the user's own and is left alone — change it with the ``token``
setting).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vidfs.emulator import media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

DEFAULT_TOKEN = "cupix-emulator-token-4f1c2a9e7b3d"
DEFAULT_PAGE_SIZE = 2
DEFAULT_MAX_PAGE_SIZE = 100
DEFAULT_URL_LIFETIME = 300
BUCKET = "cupix-works-videos"
ACCESS_KEY = "AKIAEMULATORCUPIX00"
CREDENTIAL_HEADERS = ("x-cupix-auth", "authorization", "cookie", "proxy-authorization")

SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")
_T0 = calendar.timegm((2023, 11, 1, 0, 0, 0, 0, 0, 0))
_DAY = 86400
_NS = uuid.UUID("0c6d3b52-2f0e-4a8e-9a51-6f3c2d1b7e40")

ORDERABLE = ("id", "name", "created_at", "updated_at")
ENDPOINTS = ("workspaces", "facilities", "records", "captures", "videos", "download", "me")

INSTA360 = {"make": "Insta360", "model": "ONE X2", "serial_number": "IXSE42A7KD91"}
THETA = {"make": "RICOH", "model": "THETA X", "serial_number": "10010583"}
DRONE = {"make": "DJI", "model": "Mavic 3 Enterprise", "serial_number": "1581F5FJD22B4"}


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


@dataclass
class CupixVideo:
    id: int
    capture_id: int
    name: str
    path: Path
    camera: dict[str, str]
    created: int
    updated: int
    state: str = "done"
    report_size: bool = True
    uuid: str = ""

    @property
    def content_type(self) -> str:
        suffix = Path(self.name).suffix.lower()
        return {".mp4": "video/mp4", ".mov": "video/quicktime"}.get(suffix, "application/octet-stream")


@dataclass
class Failure:
    status: int
    remaining: int | None
    message: str = ""


@dataclass
class _Counters:
    downloads: int = 0
    secret_generation: int = 0


class StorageSite(Site):
    """The second origin: signed URLs only, no provider credential ever needed."""

    def __init__(self, parent: CupixSite, *, host: str, verbose: bool) -> None:
        super().__init__("cupix-storage", host=host, port=0, verbose=verbose)
        self.parent = parent
        self.faults = parent.faults  # one switchboard for both origins (see the module docstring)
        self.add_route(
            ("GET", "HEAD"), r"/storage/(?P<bucket>[^/]+)/(?P<uuid>[^/]+)/(?P<file>[^/]+)", self.get
        )

    def error_body(self, status: int, message: str) -> Any:
        return S3Denied(str(status), message, status).xml()

    def get(self, req: Request) -> None:
        try:
            video = self.parent.verify_signed(req)
        except S3Denied as denied:
            req.send_bytes(denied.status, denied.xml(), "application/xml")
            return
        serve_file(
            req,
            video.path,
            etag=f'"{media.sha256_of(video.path)[:32]}"',
            content_type=video.content_type,
            filename_for_disposition=video.name,
            last_modified=video.updated,
        )


class CupixSite(Site):
    """The Cupix emulator: the API origin plus its storage subsite."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        # media first: generating it can take a while and must not hold a bound port meanwhile
        self.samples = media.ensure_samples(SAMPLES_USED, media_dir)
        super().__init__("cupix", host=host, port=port, seed=seed, verbose=verbose)
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(32)
        self.token = DEFAULT_TOKEN
        self.page_size = int(page_size)
        self.max_page_size = DEFAULT_MAX_PAGE_SIZE
        self.url_lifetime = DEFAULT_URL_LIFETIME
        self.failures: dict[str, Failure] = {}
        self.counters = _Counters()
        self._mutations = 0
        self.workspaces: dict[int, Workspace] = {}
        self.facilities: dict[int, Facility] = {}
        self.records: dict[int, Record] = {}
        self.captures: dict[int, Capture] = {}
        self.videos: dict[int, CupixVideo] = {}
        try:
            self._build_catalog()
            self.storage = StorageSite(self, host=host, verbose=verbose)
        except BaseException:
            self.close()
            raise
        self.subsites.append(self.storage)

        a = self.add_route
        a("GET", r"/api/v1/me", self.me)
        a("GET", r"/api/v1/workspaces", self.list_workspaces)
        a("GET", r"/api/v1/facilities", self.list_facilities)
        a("GET", r"/api/v1/records", self.list_records)
        a("GET", r"/api/v1/captures", self.list_captures)
        a("GET", r"/api/v1/videos", self.list_videos)
        a("GET", r"/api/v1/videos/(?P<id>\d+)/download", self.download)

    # ---- catalog ----------------------------------------------------------------------------------------
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
        self, cap: Capture, vid: int, name: str, sample: str, camera: dict[str, str], **kw: Any
    ) -> CupixVideo:
        created = cap.created + (vid % 100) * 60
        video = CupixVideo(
            id=vid,
            capture_id=cap.id,
            name=name,
            path=self.samples[sample],
            camera=dict(camera),
            created=created,
            updated=created + 900,
            uuid=str(uuid.uuid5(_NS, f"video/{vid}")),
            **kw,
        )
        self.videos[vid] = video
        return video

    def _build_catalog(self) -> None:
        acme = self._workspace(11, "Acme Construction", 0)
        self._workspace(12, "Beta Builders", 5)
        self._workspace(13, "Gamma Infrastructure", 9)
        self._workspace(14, "Delta Homes", 12)
        self._workspace(15, "Omega Facilities", 20)
        beta = self.workspaces[12]

        tower = self._facility(acme, 201, "hvt-2c9e41", "Harbor View Tower", 9)
        clinic = self._facility(acme, 202, "rvc-81d07a", "Riverside Clinic", -5)
        self._facility(acme, 203, "dp7-5521fe", "Depot 7", 1)
        self._facility(acme, 204, "ngs-90ab13", "Northgate School", 0)
        lofts = self._facility(acme, 205, "esl-33c0d8", "Eastside Lofts / Phase 2", 2)
        terminal = self._facility(beta, 206, "atb-77e2c5", "Airport Terminal B", -8)

        # Harbor View Tower: five records (two on the same date), one of them with five captures.
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

        # Level 1: six videos (three pages), three of them files.
        self._video(level1, 9001, "VID_20231117_101500_00_038.insv", "moov_end.mp4", INSTA360)
        self._video(level1, 9002, "VID_20231117_101500_10_038.insv", "faststart.mp4", INSTA360)
        self._video(
            level1, 9003, "VID_20231117_102000_00_039.insv", "moov_end.mp4", INSTA360, state="created"
        )
        self._video(
            level1, 9004, "VID_20231117_102000_10_039.insv", "moov_end.mp4", INSTA360, state="created"
        )
        self._video(level1, 9005, "site_overview.mp4", "moov_end.mp4", THETA)
        self._video(
            level1, 9006, "VID_20231117_103000_00_040.insv", "faststart.mp4", INSTA360, state="failed"
        )
        # Level 2: a pair; Level 3: the same names as Level 1 (Insta360 names repeat across captures).
        self._video(level2, 9011, "VID_20231117_111500_00_041.insv", "faststart.mp4", INSTA360)
        self._video(level2, 9012, "VID_20231117_111500_10_041.insv", "clip.mov", INSTA360)
        self._video(level3, 9021, "VID_20231117_101500_00_038.insv", "clip.mov", INSTA360)
        self._video(level3, 9022, "VID_20231117_101500_10_038.insv", "faststart.mp4", INSTA360)
        # Roof: a re-upload under the very same name (both done), a drone video, one still processing.
        self._video(roof, 9031, "VID_20231117_140000_00_045.insv", "faststart.mp4", INSTA360)
        self._video(roof, 9032, "VID_20231117_140000_00_045.insv", "clip.mov", INSTA360)
        self._video(roof, 9033, "roof_drone.mp4", "big.mp4", DRONE)
        self._video(roof, 9034, "roof_drone_2.mp4", "big.mp4", DRONE, state="processing")

        self._video(self._capture(r2, 511, "Level 1", 5), 9041, "VID_20231124_093500_00_050.insv",
                    "clip.mov", INSTA360)  # fmt: skip
        self._video(self.captures[511], 9042, "VID_20231124_093500_10_050.insv", "faststart.mp4", INSTA360)
        self._video(self._capture(r3, 512, "Level 2", 5), 9051, "level2_walk.mp4", "faststart.mp4", THETA)
        # A done video whose filesize the API does not tell (the size comes from a HEAD on storage).
        self._video(self._capture(r5, 513, "Basement", 10), 9061, "VID_20231208_111000_00_061.insv",
                    "moov_end.mp4", INSTA360, report_size=False)  # fmt: skip

        rc = self._record(clinic, 321, "2023-11-20 08:00", "Handover")
        self._video(
            self._capture(rc, 521, "Ground floor", 10), 9101, "clinic_walk.mp4", "moov_end.mp4", THETA
        )

        rl = self._record(lofts, 331, "2023-11-28 13:00")
        self._video(self._capture(rl, 531, "Unit 4B", 10), 9201, "unit4b.mp4", "faststart.mp4", THETA,
                    state="created")  # fmt: skip

        rt = self._record(terminal, 341, "2023-11-22 07:45", "Gate area")
        self._video(self._capture(rt, 541, "Gates 10-14", 10), 9301, "terminal_gates.mp4", "clip.mov", THETA)

    # ---- auth and common list machinery -------------------------------------------------------------------
    def _auth(self, req: Request, endpoint: str) -> None:
        supplied = req.headers.get("X-CUPIX-AUTH")
        with self._lock:
            token = self.token
        if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
            raise no_body(401)
        self._maybe_fail(endpoint)

    def _maybe_fail(self, endpoint: str) -> None:
        with self._lock:
            failure = self.failures.get(endpoint)
            if failure is None:
                return
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self.failures[endpoint]
        if failure.status == 400:
            raise bad_request("InvalidParameter", failure.message or f"{endpoint}: invalid request")
        raise no_body(failure.status)

    @staticmethod
    def _fields(req: Request) -> list[str]:
        raw = req.arg("fields")
        names = [name.strip() for name in (raw or "").split(",") if name.strip()]
        if not names:
            raise bad_request("ParameterMissing", "param is missing or the value is empty: fields")
        return names

    @staticmethod
    def _int_arg(req: Request, name: str, default: int | None = None) -> int | None:
        raw = req.arg(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise bad_request("InvalidParameter", f"{name} must be an integer, got {raw!r}") from None

    def _page(
        self,
        req: Request,
        kind: str,
        rows: list[tuple[Any, JSON]],
    ) -> None:
        """Sort, paginate and answer `rows` ((object, full attributes)) with only the requested fields."""
        fields = self._fields(req)
        order_by = req.arg("order_by")
        sort = (req.arg("sort") or "asc").lower()
        if order_by is not None and order_by not in ORDERABLE:
            raise bad_request("InvalidParameter", f"order_by must be one of {', '.join(ORDERABLE)}")
        if sort not in ("asc", "desc"):
            raise bad_request("InvalidParameter", "sort must be asc or desc")
        if order_by is None:
            rows.sort(key=lambda row: (row[1]["updated_at"], row[1]["id"]), reverse=True)
        else:
            key = order_by
            rows.sort(
                key=lambda row: (row[1][key] is not None, row[1][key] or "", row[1]["id"]),
                reverse=sort == "desc",
            )
        page = self._int_arg(req, "page", 1) or 1
        with self._lock:
            default_size, max_size = self.page_size, self.max_page_size
        per_page = self._int_arg(req, "per_page", default_size) or default_size
        if page < 1 or per_page < 1:
            raise bad_request("InvalidParameter", "page and per_page must be >= 1")
        per_page = min(per_page, max_size)
        total = len(rows)
        total_pages = -(-total // per_page)
        chunk = rows[(page - 1) * per_page : page * per_page]
        data = [
            {
                "id": str(attrs["id"]),
                "type": kind,
                "attributes": {name: attrs[name] for name in fields if name in attrs},
            }
            for _obj, attrs in chunk
        ]
        pagination = {
            "total_entries": total,
            "total_pages": total_pages,
            "per_page": per_page,
            "previous_page": page - 1 if page > 1 else None,
            "current_page": page,
            "next_page": page + 1 if page < total_pages else None,
        }
        req.send_json(200, {"result": {"data": data, "pagination": pagination}, "session": None})

    # ---- attributes -------------------------------------------------------------------------------------
    @staticmethod
    def _ws_attrs(w: Workspace) -> JSON:
        return {"id": w.id, "name": w.name, "created_at": iso(w.created), "updated_at": iso(w.updated)}

    @staticmethod
    def _fac_attrs(f: Facility) -> JSON:
        return {
            "id": f.id,
            "key": f.key,
            "name": f.name,
            "workspace_id": f.workspace_id,
            "time_zone": f"Etc/GMT{-f.offset_hours:+d}" if f.offset_hours else "UTC",
            "created_at": iso(f.created),
            "updated_at": iso(f.updated),
        }

    def _rec_attrs(self, r: Record) -> JSON:
        offset = self._offset_of(r.facility_key)
        return {
            "id": r.id,
            "name": r.name,
            "facility_id": r.facility_id,
            "facility_key": r.facility_key,
            "captured_at": iso(r.captured, offset),
            "created_at": iso(r.created),
            "updated_at": iso(r.updated),
        }

    def _cap_attrs(self, c: Capture) -> JSON:
        record = self.records[c.record_id]
        return {
            "id": c.id,
            "name": c.name,
            "state": c.state,
            "record_id": c.record_id,
            "captured_at": iso(c.captured, self._offset_of(record.facility_key)),
            "created_at": iso(c.created),
            "updated_at": iso(c.updated),
        }

    @staticmethod
    def _video_attrs(v: CupixVideo) -> JSON:
        uploaded = v.state != "created"
        return {
            "id": v.id,
            "uuid": v.uuid,
            "name": v.name,
            "state": v.state,
            "filesize": v.path.stat().st_size if uploaded and v.report_size else None,
            "capture_id": v.capture_id,
            "created_at": iso(v.created),
            "updated_at": iso(v.updated),
            "camera": dict(v.camera),
        }

    def _offset_of(self, facility_key: str) -> int:
        for f in self.facilities.values():
            if f.key == facility_key:
                return f.offset_hours
        return 0

    # ---- API routes -------------------------------------------------------------------------------------
    def me(self, req: Request) -> None:
        self._auth(req, "me")
        fields = self._fields(req)
        attrs = {"id": 7, "email": "site.engineer@example.com", "name": "Site Engineer"}
        data = {"id": "7", "type": "user", "attributes": {k: attrs[k] for k in fields if k in attrs}}
        req.send_json(200, {"result": {"data": data}, "session": None})

    def list_workspaces(self, req: Request) -> None:
        self._auth(req, "workspaces")
        with self._lock:
            rows = [(w, self._ws_attrs(w)) for w in self.workspaces.values()]
        self._page(req, "workspace", rows)

    def list_facilities(self, req: Request) -> None:
        self._auth(req, "facilities")
        wid = self._int_arg(req, "workspace_id")
        with self._lock:
            if wid is not None and wid not in self.workspaces:
                raise no_body(404)
            rows = [
                (f, self._fac_attrs(f))
                for f in self.facilities.values()
                if wid is None or f.workspace_id == wid
            ]
        self._page(req, "facility", rows)

    def list_records(self, req: Request) -> None:
        self._auth(req, "records")
        key = req.arg("facility_key") or None
        with self._lock:
            if key is not None and not any(f.key == key for f in self.facilities.values()):
                raise no_body(404)
            rows = [
                (r, self._rec_attrs(r)) for r in self.records.values() if key is None or r.facility_key == key
            ]
        self._page(req, "record", rows)

    def list_captures(self, req: Request) -> None:
        self._auth(req, "captures")
        rid = self._int_arg(req, "record_id")
        with self._lock:
            if rid is not None and rid not in self.records:
                raise no_body(404)
            rows = [
                (c, self._cap_attrs(c)) for c in self.captures.values() if rid is None or c.record_id == rid
            ]
        self._page(req, "capture", rows)

    def list_videos(self, req: Request) -> None:
        self._auth(req, "videos")
        cid = self._int_arg(req, "capture_id")
        with self._lock:
            if cid is not None and cid not in self.captures:
                raise no_body(404)
            rows = [
                (v, self._video_attrs(v)) for v in self.videos.values() if cid is None or v.capture_id == cid
            ]
        self._page(req, "video", rows)

    def download(self, req: Request) -> None:
        self._auth(req, "download")
        vid = int(req.params["id"])
        with self._lock:
            video = self.videos.get(vid)
            if video is None or video.state != "done":
                raise no_body(404)
            self.counters.downloads += 1
            location = self.sign(video)
        html = f'<html><body>You are being <a href="{location}">redirected</a>.</body></html>'
        req.send_bytes(
            302,
            html.encode(),
            "text/html; charset=utf-8",
            headers={"Location": location, "Cache-Control": "no-cache"},
        )

    # ---- signed storage URLs -------------------------------------------------------------------------------
    def _signature(self, path: str, date: str, expires: str) -> str:
        message = f"GET\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, video: CupixVideo) -> str:
        now = time.time()
        date = amz_date(now)
        with self._lock:
            expires = str(self.url_lifetime)
        path = f"/storage/{BUCKET}/{video.uuid}/{quote(video.name, safe='')}"
        scope = f"{ACCESS_KEY}/{date[:8]}/us-west-2/s3/aws4_request"
        query = (
            f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={quote(scope, safe='')}"
            f"&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={self._signature(path, date, expires)}"
        )
        return f"{self.storage.url}{path}?{query}"

    def verify_signed(self, req: Request) -> CupixVideo:
        """The video a storage request may read, or S3's 403."""
        date, expires, signature = req.arg("X-Amz-Date"), req.arg("X-Amz-Expires"), req.arg("X-Amz-Signature")
        if not date or not expires or not signature:
            raise s3_error(
                "AccessDenied", "Query-string authentication requires the Signature, Expires and Date"
            )
        path = req.path_only
        expected = self._signature(path, date, expires)
        if not hmac.compare_digest(expected, signature):
            raise s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match")
        try:
            signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
            lifetime = int(expires)
        except ValueError:
            raise s3_error(
                "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is malformed"
            ) from None
        if time.time() >= signed_at + lifetime:
            raise s3_error("AccessDenied", "Request has expired")
        wanted = req.params["uuid"]
        with self._lock:
            for video in self.videos.values():
                if video.uuid == wanted and video.state == "done":
                    return replace(video)
        raise s3_error("NoSuchKey", "The specified key does not exist.", 404)

    def storage_credential_requests(self) -> list[JSON]:
        """Every storage request that carried a provider credential (there must be none)."""
        with self._lock:
            token = self.token
        out = []
        for entry in self.storage.log.entries():
            headers: Mapping[str, str] = entry.get("headers") or {}
            if (
                any(name in headers for name in CREDENTIAL_HEADERS)
                or token in entry.get("path", "")
                or any(token in value for value in headers.values())
            ):
                out.append(entry)
        return out

    # ---- control hooks ------------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        if status == 400:
            return {
                "result": {"code": 400, "type": "BadRequest", "reason": "BadRequest", "message": message},
                "session": None,
            }
        return b""

    def config(self) -> JSON:
        with self._lock:
            return {"type": "cupix", "base_url": f"{self.url}/api/v1", "token": self.token}

    def _storage_info(self) -> JSON:
        return {
            "url": self.storage.url,
            "control_url": self.storage.control_url,
            "path_regex": r"^/storage/",
            "requests": self.storage.log.count(),
            "requests_with_credentials": len(self.storage_credential_requests()),
        }

    def _video_entry(self, v: CupixVideo) -> JSON:
        sha = media.sha256_of(v.path)
        attrs = self._video_attrs(v)
        return {
            **attrs,
            "visible": v.state == "done",
            "size": v.path.stat().st_size,
            "reports_size": attrs["filesize"] is not None,
            "sha256": sha,
            "etag": f'"{sha[:32]}"',
            "mtime_epoch": v.updated,
            "path_on_disk": str(v.path),
            "content_type": v.content_type,
        }

    def catalog(self) -> JSON:
        with self._lock:
            out: JSON = {
                "provider": "cupix",
                "workspaces": [
                    {**self._ws_attrs(w), "mtime_epoch": w.updated} for w in self.workspaces.values()
                ],
                "facilities": [
                    {**self._fac_attrs(f), "mtime_epoch": f.updated} for f in self.facilities.values()
                ],
                "records": [
                    {
                        **self._rec_attrs(r),
                        "date": self._rec_attrs(r)["captured_at"][:10],
                        "mtime_epoch": r.updated,
                    }
                    for r in self.records.values()
                ],
                "captures": [
                    {**self._cap_attrs(c), "mtime_epoch": c.updated} for c in self.captures.values()
                ],
                "videos": [self._video_entry(replace(v)) for v in self.videos.values()],
            }
        out["storage"] = self._storage_info()
        return out

    def settings(self) -> JSON:
        with self._lock:
            values: JSON = {
                "page_size": self.page_size,
                "max_page_size": self.max_page_size,
                "url_lifetime": self.url_lifetime,
                "token": self.token,
                "downloads_resolved": self.counters.downloads,
                "failures": {
                    k: {"status": f.status, "remaining": f.remaining} for k, f in self.failures.items()
                },
            }
        storage = self._storage_info()
        values["storage_requests"] = storage["requests"]
        values["storage_requests_with_credentials"] = storage["requests_with_credentials"]
        return values

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        setters: dict[str, Callable[[Any], None]] = {
            "page_size": lambda v: setattr(self, "page_size", _positive("page_size", v)),
            "max_page_size": lambda v: setattr(self, "max_page_size", _positive("max_page_size", v)),
            "url_lifetime": lambda v: setattr(self, "url_lifetime", _positive("url_lifetime", v)),
            "token": lambda v: setattr(self, "token", _token(v)),
        }
        unknown = set(changes) - set(setters)
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(setters))}"
            )
        with self._lock:
            for key, value in changes.items():
                setters[key](value)
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        if action == "fail":
            endpoint = str(change.get("endpoint", ""))
            if endpoint not in ENDPOINTS:
                raise ValueError(f"fail needs an endpoint among {', '.join(ENDPOINTS)}")
            status = int(change.get("status", 400))
            count = change.get("count")
            with self._lock:
                self.failures[endpoint] = Failure(
                    status, None if count is None else int(count), str(change.get("message") or "")
                )
            return {"failing": endpoint, "status": status}
        if action == "clear_failures":
            with self._lock:
                self.failures.clear()
            return {"failing": None}
        if action == "expire_tokens":
            with self._lock:
                self._secret = secrets.token_bytes(32)  # every signed URL issued so far stops working
                self.counters.secret_generation += 1
                return {"secret_generation": self.counters.secret_generation}
        raw_id = change.get("video_id")
        if action == "delete":
            try:
                vid = int(raw_id)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError("delete needs a video_id") from None
            with self._lock:
                del self.videos[vid]  # KeyError → 404
                return {"deleted": vid}
        if action in ("set_state", "change_content"):
            try:
                vid = int(raw_id)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"{action} needs a video_id") from None
            if action == "set_state":
                with self._lock:
                    v = self.videos[vid]
                    v.state = str(change.get("state", "done"))
                    v.updated = max(v.updated + 1, int(time.time()))
                    return self._video_entry(replace(v))
            extra = int(change.get("extra_bytes", 0))
            with self._lock:
                current = replace(self.videos[vid])
                self._mutations += 1
                tag = f"cupix:{vid}:{self._mutations}"
            new_path = media.variant(current.path, tag, out_dir=self.work_dir, extra_bytes=extra)
            media.sha256_of(new_path)
            with self._lock:
                v = self.videos[vid]
                v.path = new_path
                v.updated = max(v.updated + 1, int(time.time()))
                return self._video_entry(replace(v))
        raise ValueError(
            f"unknown action {action!r}; known: fail, clear_failures, set_state, change_content, delete, "
            "expire_tokens"
        )


def _positive(name: str, value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1")
    return number


def _token(value: Any) -> str:
    if not isinstance(value, str) or not value or re.search(r"\s", value):
        raise ValueError("token must be a non-empty string without spaces")
    return value


def create_site(options: EmulatorOptions) -> CupixSite:
    """The registry entry point."""
    return CupixSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        page_size=options.page_size if options.page_size is not None else DEFAULT_PAGE_SIZE,
        seed=options.seed,
        verbose=options.verbose,
    )
