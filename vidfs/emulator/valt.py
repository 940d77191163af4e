"""IVS VALT REST API v3 emulator: login, records, record details, signed download URLs, distribution host.

Follows the IVS wiki page "API Download Recording Video" and the VALT facts in VENDORS.md:

- ``POST /api/v3/login`` JSON ``{"username","password"}`` → ``{"data":{"access_token":"<32 hex>"}}``;
  wrong credentials → 401 ``{"data":"Invalid username or password"}``.
- Every other call carries ``?access_token=``. Without one: 401 ``{"error":{"code":401,"message":
  "No API key provided"}}``; with an unknown or expired one: 401 ``{"error":{"code":401,"message":
  "Bad credentials."}}``.
- ``POST /api/v3/records`` with an optional JSON body ``{search, start_date, end_date ("MM-DD-YYYY"),
  filter, offset, limit}`` → ``{"data":{"records":[{id, name, created (epoch s), author{id,name},
  type:"record", duration, room{id,name} | null, cameras{"<camId>":"name"}}]}}``. No total, no next link.
- ``GET /api/v3/records/{id}`` → ``{"data":{...the record..., "videos":[...], "markers":[...]}}``.
- ``GET /api/v3/records/download/{recordID}/{videoID}`` → ``{"url": ...}`` (the wiki's sample) or
  ``{"data":{"url": ...}}`` (the wiki's table), per the ``download_shape`` setting (``bare`` | ``data``).
- Unknown record or video: 404 ``application/problem+json`` ``{"type":"https://tools.ietf.org/html/
  rfc2616#section-10","title":"An error occurred","status":404,"detail":"Not Found"}``.

Download URLs point at a second origin (a subsite on its own port, as VALT's ``:8000``):
``http://127.0.0.1:PORT/distribution/{rec}/{vid}_{rec}_1.mp4?filename=<display name>&access_token=<JWT>``.
The ``filename`` value is form-encoded and then percent-encoded again, exactly like the wiki's sample
(``Just%2Ba%2Broom%2B%2B...``). The JWT is HS256 (the real one is PS512) with the sample's claims ``iat,
nbf, exp, iss, sub, aud`` and ``exp - iat = url_lifetime`` (1800 s by default, like the sample). The
distribution host answers GET/HEAD with Range/ETag (``serve_file``) when the JWT is valid, 401 when it is
missing, forged or expired, and 404 for a deleted record. A request reaching it with an API token anywhere
(query or headers) is refused and counted (``api_token_leaks`` in the settings and catalog).

The catalog mixes VALT 5 records (integer ids, a record's ``videos`` a list of ids) and VALT 6 records (UUIDs,
``videos`` a list of objects with ``id``); ``videos_shape`` (``mixed`` | ``ids`` | ``objects``) forces one
form. Rooms and records have spaces in their names, two records of one room share a name, one record has no
room, one record's two videos share a display name, one record's URL has no ``filename`` parameter.

Settings (``/_emulator/settings``, or ``--set valt.KEY=VALUE``): ``username``, ``password``,
``token_lifetime`` (API token, seconds, default 3600), ``url_lifetime`` (download JWT, default 1800;
``--jwt-lifetime`` sets it too), ``download_shape``, ``videos_shape``, ``default_limit`` (records per page
when the request gives no limit; ``--page-size``), ``max_limit`` (silently caps ``limit``; null = no cap),
``expire_all_tokens`` (true → every API token and download URL issued so far is refused).
Mutations (``/_emulator/mutate``): ``delete`` {record_id[, video_id]} (the record, or one of its videos,
vanishes: 404 from the API and the distribution host), ``rename`` {record_id, name}, ``change_content``
{record_id, video_id[, extra_bytes]} (new bytes, new ETag), ``expire_tokens`` (every API token is refused
and the URL signing key changes, so every download URL issued so far answers 401).

The distribution subsite shares the main site's fault switchboard: rules posted to the main control URL (or
set with ``site.faults`` in-process) apply to both origins, each rule choosing its requests by path
(``^/distribution/`` for the bytes), and ``fired`` counters show there. The main request log includes the
subsite's entries (``origin`` = ``valt-distribution``).
"""

from __future__ import annotations

import calendar
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from vidfs.emulator import jwt, media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

DEFAULT_USERNAME = "api"
DEFAULT_PASSWORD = "valt-demo-password"
DEFAULT_TOKEN_LIFETIME = 3600
DEFAULT_URL_LIFETIME = 1800
DEFAULT_LIMIT = 50
CLIENT_PAGE_SIZE = 3  # the page_size the emulator's config() suggests, so pagination is always exercised

SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")
_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}

_NS = uuid.UUID("1c0e7a52-6a43-4f3e-9d1b-2b8f2f8c4d11")
_T0 = calendar.timegm((2025, 5, 6, 10, 18, 0, 0, 0, 0))
_DAY = 86400

NOT_FOUND_BODY: JSON = {
    "type": "https://tools.ietf.org/html/rfc2616#section-10",
    "title": "An error occurred",
    "status": 404,
    "detail": "Not Found",
}
NO_KEY = "No API key provided"
BAD_CREDENTIALS = "Bad credentials."
LOGIN_FAILED = "Invalid username or password"


def valt_uuid(key: str) -> str:
    return str(uuid.uuid5(_NS, f"valt/{key}"))


def api_error(message: str, status: int = 401) -> HttpError:
    return HttpError(status, message, body={"error": {"code": status, "message": message}})


def parse_date(text: str) -> datetime:
    """VALT's "MM-DD-YYYY" (UTC here)."""
    try:
        return datetime.strptime(text, "%m-%d-%Y").replace(tzinfo=UTC)
    except ValueError:
        raise api_error(f"Invalid date {text!r}: expected MM-DD-YYYY", 400) from None


@dataclass
class Room:
    id: int | str
    name: str


@dataclass
class ValtVideo:
    id: int | str
    path: Path
    camera_id: str

    @property
    def ext(self) -> str:
        return self.path.suffix.lower() or ".mp4"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES.get(self.ext, "application/octet-stream")


@dataclass
class Record:
    id: int | str
    name: str
    room: Room | None
    created: int
    author: tuple[int | str, str]
    cameras: dict[str, str]
    videos: list[ValtVideo]
    markers: list[JSON] = field(default_factory=list)
    filename_in_url: bool = True
    duration: int = 0  # seconds, of the longest video

    @property
    def valt6(self) -> bool:
        return isinstance(self.id, str)

    def video(self, video_id: str) -> ValtVideo | None:
        return next((v for v in self.videos if str(v.id) == video_id), None)

    def display_name(self, video: ValtVideo) -> str:
        """VALT's download file name: record, camera, date and time of the recording."""
        when = datetime.fromtimestamp(self.created, UTC)
        camera = self.cameras.get(video.camera_id, "Camera")
        return f"{self.name} {camera} {when:%m-%d-%Y} {when:%I-%M-%p}{video.ext}"

    def distribution_file(self, video: ValtVideo) -> str:
        return f"{video.id}_{self.id}_1{video.ext}"


class DistributionSite(Site):
    """The download host (VALT's ``:8000``): serves the files behind signed URLs."""

    def __init__(self, parent: ValtSite, *, host: str, seed: int, verbose: bool) -> None:
        super().__init__("valt-distribution", host=host, port=0, seed=seed, verbose=verbose)
        self.parent = parent
        # One switchboard for both origins: rules posted to the parent's control URL apply here (each rule
        # filters by path), `count` is shared, and the parent's GET /_emulator/faults shows what fired here.
        self.faults = parent.faults
        self.add_route(("GET", "HEAD"), r"/distribution/(?P<rec>[^/]+)/(?P<file>[^/]+)", parent.distribute)

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message}}


class ValtSite(Site):
    """The VALT emulator: the API origin, plus the distribution host as a subsite."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        url_lifetime: int = DEFAULT_URL_LIFETIME,
        default_limit: int = DEFAULT_LIMIT,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.samples = media.ensure_samples(SAMPLES_USED, media_dir)
        super().__init__("valt", host=host, port=port, seed=seed, verbose=verbose)
        self._lock = threading.RLock()
        self.username = DEFAULT_USERNAME
        self.password = DEFAULT_PASSWORD
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self.url_lifetime = int(url_lifetime)
        self.download_shape = "bare"
        self.videos_shape = "mixed"
        self.default_limit = int(default_limit)
        self.max_limit: int | None = None
        self.token_generation = 0
        self.tokens: dict[str, tuple[float, int]] = {}  # API token → (issued at, generation)
        self.tokens_issued = 0
        self.urls_issued = 0
        self.api_token_leaks = 0
        self._secret = secrets.token_bytes(32)
        self._mutations = 0
        self.records: dict[str, Record] = {}
        try:
            self.distribution = DistributionSite(self, host=host, seed=seed, verbose=verbose)
            self.subsites.append(self.distribution)
            self._build_catalog()
        except BaseException:
            self.close()
            raise
        a = self.add_route
        a("POST", r"/api/v3/login", self.login)
        a("POST", r"/api/v3/records", self.list_records)
        a("GET", r"/api/v3/records/download/(?P<rec>[^/]+)/(?P<vid>[^/]+)", self.download)
        a("GET", r"/api/v3/records/(?P<rec>[^/]+)", self.record_details)

    # ---- catalog ----------------------------------------------------------------------------------------
    def _build_catalog(self) -> None:
        exam = Room(3, "Exam Room 3")
        sim = Room(valt_uuid("room/sim-a"), "Sim Lab A")
        interview = Room(valt_uuid("room/interview-2"), "Interview Room 2")
        s = self.samples
        rivera, chen = (2, "Dr. Rivera"), (5, "Sam Chen")

        def marker(i: int, name: str) -> JSON:
            return {"id": i, "time": 5 * i, "name": name, "color": "#f0a030"}

        def add(record: Record) -> None:
            self.records[str(record.id)] = record

        # VALT 5 style: integer ids, videos as a list of ids.
        add(Record(
            101, "Lecture 1", exam, _T0, rivera, {"11": "Ceiling cam"},
            [ValtVideo(1, s["moov_end.mp4"], "11")], [marker(1, "Start"), marker(2, "Q&A"), marker(3, "End")],
        ))  # fmt: skip
        add(Record(
            102, "Skills check", exam, _T0 + _DAY, chen, {"11": "Ceiling cam", "12": "Wall cam"},
            [ValtVideo(2, s["faststart.mp4"], "11"), ValtVideo(3, s["clip.mov"], "12")], [marker(1, "Pass")],
        ))  # fmt: skip
        add(Record(
            103, "Skills check", exam, _T0 + 2 * _DAY + 3600, chen, {"12": "Wall cam"},
            [ValtVideo(4, s["faststart.mp4"], "12")],
        ))  # fmt: skip
        add(Record(
            104, "Hallway test", None, _T0 + 3 * _DAY, rivera, {"13": "Hall cam"},
            [ValtVideo(5, s["clip.mov"], "13")],
        ))  # fmt: skip
        # VALT 6 style: UUIDs, videos as objects with an id.
        cam_a, cam_b = valt_uuid("camera/sim-a-1"), valt_uuid("camera/interview-wall")
        add(Record(
            valt_uuid("record/sepsis"), "Scenario sepsis, team 4", sim, _T0 + 4 * _DAY, chen,
            {cam_a: "Sim cam 1"}, [ValtVideo(valt_uuid("video/sepsis-1"), s["big.mp4"], cam_a)],
            [marker(1, "Handover"), marker(2, "Escalation")],
        ))  # fmt: skip
        add(Record(
            valt_uuid("record/debrief"), "Q&A / debrief", sim, _T0 + 4 * _DAY + 7200, rivera,
            {cam_a: "Sim cam 1"}, [ValtVideo(valt_uuid("video/debrief-1"), s["moov_end.mp4"], cam_a)],
        ))  # fmt: skip
        add(Record(
            valt_uuid("record/intake"), "Intake exam", interview, _T0 + 5 * _DAY, rivera, {cam_b: "Wall cam"},
            [  # the camera restarted: two videos, one camera, one display name
                ValtVideo(valt_uuid("video/intake-1"), s["faststart.mp4"], cam_b),
                ValtVideo(valt_uuid("video/intake-2"), s["moov_end.mp4"], cam_b),
            ],
        ))  # fmt: skip
        add(Record(
            valt_uuid("record/patient"), "Patient interview", interview, _T0 + 6 * _DAY, chen,
            {cam_b: "Wall cam"},
            [ValtVideo(valt_uuid("video/patient-1"), s["clip.mov"], cam_b)], filename_in_url=False,
        ))  # fmt: skip
        for record in self.records.values():
            record.duration = round(
                max(float(media.probe(v.path)["format"]["duration"]) for v in record.videos)
            )

    def _record(self, record_id: str) -> Record | None:
        with self._lock:
            record = self.records.get(record_id)
            return replace(record, videos=list(record.videos)) if record else None

    def _summary(self, r: Record) -> JSON:
        return {
            "id": r.id,
            "name": r.name,
            "created": r.created,
            "author": {"id": r.author[0], "name": r.author[1]},
            "type": "record",
            "duration": r.duration,
            "room": {"id": r.room.id, "name": r.room.name} if r.room else None,
            "cameras": dict(r.cameras),
        }

    # ---- auth -------------------------------------------------------------------------------------------
    def login(self, req: Request) -> None:
        body = req.json()
        if not isinstance(body, dict):
            body = {}
        with self._lock:
            ok = hmac.compare_digest(str(body.get("username", "")).encode(), self.username.encode())
            ok &= hmac.compare_digest(str(body.get("password", "")).encode(), self.password.encode())
            if not ok:
                raise HttpError(401, LOGIN_FAILED, body={"data": LOGIN_FAILED})
            token = secrets.token_hex(16)
            self.tokens[token] = (time.time(), self.token_generation)
            self.tokens_issued += 1
        req.send_json(200, {"data": {"access_token": token}})

    def require_token(self, req: Request) -> None:
        token = req.arg("access_token")
        if not token:
            raise api_error(NO_KEY)
        with self._lock:
            issued = self.tokens.get(token)
            valid = (
                issued is not None
                and issued[1] == self.token_generation
                and time.time() < issued[0] + self.token_lifetime
            )
        if not valid:
            raise api_error(BAD_CREDENTIALS)

    # ---- API --------------------------------------------------------------------------------------------
    @staticmethod
    def not_found(req: Request) -> None:
        body = json.dumps(NOT_FOUND_BODY).encode()
        req.send_bytes(404, body, "application/problem+json")

    def list_records(self, req: Request) -> None:
        self.require_token(req)
        body = req.json()
        if not isinstance(body, dict):
            raise api_error("Invalid request body", 400)
        with self._lock:
            records = sorted(self.records.values(), key=lambda r: (r.created, str(r.id)), reverse=True)
            default_limit, max_limit = self.default_limit, self.max_limit
        search = str(body.get("search") or "").strip().lower()
        if search:
            records = [r for r in records if search in r.name.lower()]
        if body.get("start_date"):
            start = parse_date(str(body["start_date"])).timestamp()
            records = [r for r in records if r.created >= start]
        if body.get("end_date"):
            end = parse_date(str(body["end_date"])).timestamp() + _DAY
            records = [r for r in records if r.created < end]
        try:
            offset = max(0, int(body.get("offset") or 0))
            limit = int(body["limit"]) if body.get("limit") not in (None, "") else default_limit
        except (TypeError, ValueError):
            raise api_error("offset and limit must be integers", 400) from None
        if max_limit is not None:
            limit = min(limit, max_limit)
        page = records[offset : offset + max(0, limit)]
        req.send_json(200, {"data": {"records": [self._summary(r) for r in page]}})

    def _videos_field(self, record: Record) -> list[Any]:
        with self._lock:
            shape = self.videos_shape
        as_objects = shape == "objects" or (shape == "mixed" and record.valt6)
        if not as_objects:
            return [v.id for v in record.videos]
        return [
            {"id": v.id, "camera": v.camera_id, "name": record.cameras.get(v.camera_id, "")}
            for v in record.videos
        ]

    def record_details(self, req: Request) -> None:
        self.require_token(req)
        record = self._record(req.params["rec"])
        if record is None:
            self.not_found(req)
            return
        data = self._summary(record)
        data["videos"] = self._videos_field(record)
        data["markers"] = list(record.markers)
        req.send_json(200, {"data": data})

    def issue_url(self, record: Record, video: ValtVideo) -> str:
        now = int(time.time())
        with self._lock:
            lifetime = self.url_lifetime
            self.urls_issued += 1
        dist = self.distribution
        claims = {"iat": now, "nbf": now, "exp": now + lifetime, "iss": dist.host, "sub": dist.host}
        claims["aud"] = dist.host
        token = jwt.encode(claims, self._secret, header={"kid": valt_uuid("signing-key")})
        path = f"/distribution/{quote(str(record.id), safe='')}/{quote(record.distribution_file(video))}"
        query = ""
        if record.filename_in_url:  # form-encoded, then percent-encoded again (as the wiki's sample)
            query = f"filename={quote(quote_plus(record.display_name(video)), safe='')}&"
        return f"{dist.url}{path}?{query}access_token={token}"

    def download(self, req: Request) -> None:
        self.require_token(req)
        record = self._record(req.params["rec"])
        video = record.video(req.params["vid"]) if record else None
        if record is None or video is None:
            self.not_found(req)
            return
        url = self.issue_url(record, video)
        with self._lock:
            shape = self.download_shape
        req.send_json(200, {"data": {"url": url}} if shape == "data" else {"url": url})

    # ---- distribution -------------------------------------------------------------------------------------
    def _check_jwt(self, token: str | None) -> None:
        def refuse(message: str) -> HttpError:
            return HttpError(401, message, body={"error": {"code": 401, "message": message}})

        if not token:
            raise refuse("Missing access token")
        claims = jwt.decode(token, self._secret)
        if claims is None:
            raise refuse("Invalid access token")
        now = time.time()
        if now < float(claims.get("nbf", 0)):
            raise refuse("Access token not valid yet")
        if now >= float(claims.get("exp", 0)):
            raise refuse("Access token expired")

    def _leaked(self, req: Request) -> bool:
        with self._lock:
            tokens = list(self.tokens)
        seen = [req.path, *(str(v) for v in req.headers.values())]
        return any(token in text for token in tokens for text in seen)

    def distribute(self, req: Request) -> None:
        if self._leaked(req):
            with self._lock:
                self.api_token_leaks += 1
            raise HttpError(
                401, "API token sent to the distribution host",
                body={"error": {"code": 401, "message": "API token sent to the distribution host"}},
            )  # fmt: skip
        self._check_jwt(req.arg("access_token"))
        record = self._record(req.params["rec"])
        video = None
        if record is not None:
            video = next(
                (v for v in record.videos if record.distribution_file(v) == req.params["file"]), None
            )
        if record is None or video is None:
            raise HttpError(404, "Not Found")
        serve_file(
            req,
            video.path,
            etag=media.sha256_of(video.path)[:32],
            content_type=video.content_type,
            filename_for_disposition=record.display_name(video),
            last_modified=record.created,
        )

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        if status == 404:
            return dict(NOT_FOUND_BODY)
        return {"error": {"code": status, "message": message}}

    def config(self) -> JSON:
        with self._lock:
            return {
                "type": "valt",
                "base_url": f"{self.url}/api/v3",
                "username": self.username,
                "password": self.password,
                "page_size": CLIENT_PAGE_SIZE,
            }

    def catalog(self) -> JSON:
        with self._lock:
            records = [replace(r, videos=list(r.videos)) for r in self.records.values()]
            leaks = self.api_token_leaks
        out = []
        for r in records:
            videos = []
            for v in r.videos:
                sha = media.sha256_of(v.path)
                videos.append(
                    {
                        "id": v.id,
                        "camera_id": v.camera_id,
                        "filename": r.display_name(v) if r.filename_in_url else None,
                        "display_name": r.display_name(v),
                        "ext": v.ext,
                        "content_type": v.content_type,
                        "size": v.path.stat().st_size,
                        "sha256": sha,
                        "etag": f'"{sha[:32]}"',
                        "path_on_disk": str(v.path),
                        "distribution_path": f"/distribution/{r.id}/{r.distribution_file(v)}",
                    }
                )
            out.append({**self._summary(r), "markers": len(r.markers), "videos": videos})
        return {"provider": "valt", "records": out, "api_token_leaks": leaks}

    def settings(self) -> JSON:
        with self._lock:
            return {
                "username": self.username,
                "password": self.password,
                "token_lifetime": self.token_lifetime,
                "url_lifetime": self.url_lifetime,
                "download_shape": self.download_shape,
                "videos_shape": self.videos_shape,
                "default_limit": self.default_limit,
                "max_limit": self.max_limit,
                "expire_all_tokens": False,
                "token_generation": self.token_generation,
                "tokens_issued": self.tokens_issued,
                "urls_issued": self.urls_issued,
                "api_token_leaks": self.api_token_leaks,
                "distribution_url": self.distribution.url,
            }

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        known = {
            "username", "password", "token_lifetime", "url_lifetime", "download_shape", "videos_shape",
            "default_limit", "max_limit", "expire_all_tokens",
        }  # fmt: skip
        unknown = set(changes) - known
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        shape = changes.get("download_shape")
        if shape is not None and shape not in ("data", "bare"):
            raise ValueError("download_shape must be 'data' or 'bare'")
        videos_shape = changes.get("videos_shape")
        if videos_shape is not None and videos_shape not in ("mixed", "ids", "objects"):
            raise ValueError("videos_shape must be 'mixed', 'ids' or 'objects'")
        with self._lock:
            if "username" in changes:
                self.username = str(changes["username"])
            if "password" in changes:
                self.password = str(changes["password"])
            if "token_lifetime" in changes:
                self.token_lifetime = int(changes["token_lifetime"])
            if "url_lifetime" in changes:
                self.url_lifetime = int(changes["url_lifetime"])
            if shape is not None:
                self.download_shape = str(shape)
            if videos_shape is not None:
                self.videos_shape = str(videos_shape)
            if "default_limit" in changes:
                self.default_limit = max(1, int(changes["default_limit"]))
            if "max_limit" in changes:
                raw = changes["max_limit"]
                self.max_limit = None if raw is None else max(1, int(raw))
            if changes.get("expire_all_tokens"):
                self._expire_everything()
        return self.settings()

    def _expire_everything(self) -> None:
        """Every API token and every download URL issued so far stops working (caller holds the lock)."""
        self.token_generation += 1
        self._secret = secrets.token_bytes(32)

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        if action == "expire_tokens":
            with self._lock:
                self._expire_everything()
                return {"token_generation": self.token_generation}
        if action not in ("delete", "rename", "change_content"):
            raise ValueError(
                f"unknown action {action!r}; known: delete, rename, change_content, expire_tokens"
            )
        if change.get("record_id") is None:
            raise ValueError(f"{action} needs a record_id")
        record_id = str(change["record_id"])
        video_id = change.get("video_id")
        if action == "change_content":
            if video_id is None:
                raise ValueError("change_content needs a video_id")
            with self._lock:
                video = self.records[record_id].video(str(video_id))
                if video is None:
                    raise KeyError(str(video_id))
                self._mutations += 1
                tag = f"{record_id}/{video_id}:{self._mutations}"
                source = video.path
            extra = int(change.get("extra_bytes", 0))
            new_path = media.variant(source, tag, out_dir=self.work_dir, extra_bytes=extra)
            media.sha256_of(new_path)
            with self._lock:
                video.path = new_path
                return {"record_id": record_id, "video_id": video.id, "sha256": media.sha256_of(new_path)}
        with self._lock:
            record = self.records[record_id]
            if action == "rename":
                record.name = str(change["name"])
                return self._summary(record)
            if video_id is None:
                del self.records[record_id]
                return {"deleted": {"record_id": record.id}}
            video = record.video(str(video_id))
            if video is None:
                raise KeyError(str(video_id))
            record.videos = [v for v in record.videos if v is not video]
            return {"deleted": {"record_id": record.id, "video_id": video.id}}


def create_site(options: EmulatorOptions) -> ValtSite:
    """The registry entry point."""
    return ValtSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        url_lifetime=options.jwt_lifetime if options.jwt_lifetime is not None else DEFAULT_URL_LIFETIME,
        default_limit=options.page_size if options.page_size is not None else DEFAULT_LIMIT,
        seed=options.seed,
        verbose=options.verbose,
    )
