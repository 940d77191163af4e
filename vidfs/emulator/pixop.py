"""Pixop Video Processing REST API v1 emulator (accounts, videos and media services on one origin).

Follows the public API reference page: ``/accounts/v1/token`` (GET with HTTP Basic → JWT; POST introspects a
JWT), ``/accounts/v1/account``, ``/videos/v1/projects``, ``/videos/v1/project/{id}``,
``/videos/v1/videos?project-id=&parent-id=&page=&page-size=`` (HAL pages, ``_links.next`` absent on the
last page, ``_embedded.totalFound``), ``/videos/v1/video/{id}``, the two progress endpoints, and
``GET|HEAD /media/v1/download/{original,processed}/{id}``. The provider's ``base_url`` is the origin.

Quirks kept on purpose: list items call the file name ``filename`` while details say ``upload.fileName``;
the POST token response spells ``apiRequestSignatureSethod`` (as the reference page does); dates are
``"YYYY-MM-DD hh:mm:ss"`` (UTC here); every failure is ``{"exception": ..., "errorMessage": ...}``.
Lists show every video, also those still processing or uploading: only the details tell them apart.
Pages are numbered from 1.

The JWT is a real HS256 token (per-process random secret) with ``iat``, ``nbf``, ``exp = iat +
jwt_lifetime`` (900 s by default, like Pixop's 15 minutes). Settings (``/_emulator/settings``):
``jwt_lifetime``, ``page_size`` (default 2, so pagination is always exercised), ``max_page_size``,
``email``, ``password``, ``expire_all_tokens`` (true → every token issued so far is expired).
Mutations (``/_emulator/mutate``): ``change_content`` {video_id, extra_bytes?}, ``delete`` {video_id}
(an original takes its processed videos with it), ``expire_tokens``, ``rename`` {video_id, name?,
file_name?}, ``set_status`` {video_id, status}.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from vidfs.emulator import jwt, media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

DEFAULT_EMAIL = "demo@example.com"
DEFAULT_PASSWORD = "pixop-demo-password"
DEFAULT_JWT_LIFETIME = 900
DEFAULT_PAGE_SIZE = 2
DEFAULT_MAX_PAGE_SIZE = 100

_NS = uuid.UUID("6f1f3c1e-9b5a-4a53-8f7e-5c0d1f2e3a4b")
_T0 = calendar.timegm((2021, 6, 1, 9, 0, 0, 0, 0, 0))
_DAY = 86400

_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}
_CONTAINER_NAMES = {".mp4": "MPEG-4 Part 14 (MP4)", ".mov": "QuickTime File Format (MOV)"}

SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")


def pixop_id(kind: str, key: str) -> str:
    """Deterministic id (UUID5) of a catalog object."""
    return str(uuid.uuid5(_NS, f"pixop/{kind}/{key}"))


USER_ID = pixop_id("user", "demo")
TEAM_ID = pixop_id("team", "demo")
OTHER_TEAM_ID = pixop_id("team", "other")


def fmt_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def failure(status: int, exception: str, message: str) -> HttpError:
    return HttpError(status, message, body={"exception": exception, "errorMessage": message})


@dataclass
class Project:
    id: str
    name: str
    team_id: str
    created: int
    updated: int


@dataclass
class PixopVideo:
    id: str
    project_id: str
    name: str
    file_name: str
    kind: str  # original | processed
    path: Path
    created: int
    updated: int
    parent_id: str | None = None
    upload_finished: bool = True
    report_size: bool = True  # False: details give no upload.fileSize nor metadata size
    processing_status: str = "DONE"  # processed videos only: DONE | IN_PROGRESS | FAILED | INITIAL
    processing_progress: float = 100.0
    preset: str = "hd_1080p"
    description: str = ""

    @property
    def suffix(self) -> str:
        return Path(self.file_name).suffix.lower() or self.path.suffix.lower()

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES.get(self.suffix, "application/octet-stream")

    @property
    def downloadable(self) -> bool:
        if not self.upload_finished:
            return False
        return self.kind == "original" or self.processing_status == "DONE"

    @property
    def status(self) -> str:
        if not self.upload_finished:
            return "IN_PROGRESS" if self.kind == "original" else self.processing_status
        return "DONE" if self.kind == "original" else self.processing_status


class PixopSite(Site):
    """The Pixop emulator: one origin serving the accounts, videos and media services."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        jwt_lifetime: int = DEFAULT_JWT_LIFETIME,
        page_size: int = DEFAULT_PAGE_SIZE,
        catalog: str = "small",
        videos_per_project: int = 50,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        # media first: generating it can take a while and must not hold a bound port meanwhile
        self.samples = {name: media.ensure_media(name, media_dir) for name in SAMPLES_USED}
        for path in self.samples.values():  # warm the caches: details and catalog answer at once
            media.sha256_of(path)
            media.probe(path)
        super().__init__("pixop", host=host, port=port, seed=seed, verbose=verbose)
        self.media_dir = media_dir
        self.email = DEFAULT_EMAIL
        self.password = DEFAULT_PASSWORD
        self.jwt_lifetime = int(jwt_lifetime)
        self.page_size = int(page_size)
        self.max_page_size = DEFAULT_MAX_PAGE_SIZE
        self.token_generation = 0
        self.tokens_issued = 0
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._mutations = 0
        self.projects: dict[str, Project] = {}
        self.videos: dict[str, PixopVideo] = {}
        try:
            self._build_catalog(catalog, videos_per_project)
        except BaseException:
            self.close()
            raise

        a = self.add_route
        a("GET", r"/accounts/v1/token", self.get_token)
        a("POST", r"/accounts/v1/token", self.post_token)
        a("GET", r"/accounts/v1/account", self.get_account)
        a("GET", r"/videos/v1/projects", self.list_projects)
        a("GET", r"/videos/v1/project/(?P<id>[^/]+)", self.get_project)
        a("GET", r"/videos/v1/videos", self.list_videos)
        a("GET", r"/videos/v1/video/(?P<id>[^/]+)", self.get_video)
        a("GET", r"/videos/v1/check-process-video-progress/(?P<id>[^/]+)", self.process_progress)
        a("GET", r"/videos/v1/check-ingest-video-progress/(?P<id>[^/]+)", self.ingest_progress)
        a(("GET", "HEAD"), r"/media/v1/download/(?P<which>original|processed)/(?P<id>[^/]+)", self.download)

    # ---- catalog ----------------------------------------------------------------------------------------
    def _add_project(self, name: str, day: int) -> Project:
        t = _T0 + day * _DAY
        project = Project(pixop_id("project", name), name, TEAM_ID, t, t + 3600)
        self.projects[project.id] = project
        return project

    def _add_video(self, project: Project, key: str, sample: str, minute: int, **kw: Any) -> PixopVideo:
        created = project.created + minute * 60
        name = kw.pop("name", None)
        file_name = kw.pop("file_name")
        video = PixopVideo(
            id=pixop_id("video", f"{project.name}/{key}"),
            project_id=project.id,
            name=name if name is not None else file_name,
            file_name=file_name,
            kind=kw.pop("kind", "original"),
            path=self.samples[sample],
            created=created,
            updated=created + 600,
            **kw,
        )
        self.videos[video.id] = video
        project.updated = max(project.updated, video.updated)
        return video

    def _build_catalog(self, catalog: str, videos_per_project: int) -> None:
        demo = self._add_project("Restoration demo", 0)
        interview = self._add_video(demo, "interview", "moov_end.mp4", 10, file_name="interview.mp4")
        self._add_video(
            demo, "interview-hd", "faststart.mp4", 20, file_name="interview_pixop_hd_1080p.mp4",
            kind="processed", parent_id=interview.id, preset="hd_1080p",
        )  # fmt: skip
        self._add_video(
            demo, "interview-4k", "faststart.mp4", 30, file_name="interview_pixop_uhd_4k.mp4",
            kind="processed", parent_id=interview.id, preset="uhd_4k",
            processing_status="IN_PROGRESS", processing_progress=42.5, upload_finished=False,
        )  # fmt: skip
        self._add_video(demo, "big-reel", "big.mp4", 40, name="Big reel master", file_name="big_reel.mp4")
        self._add_video(demo, "before-after", "faststart.mp4", 50, file_name="before/after.mp4")
        self._add_video(demo, "aarhus", "moov_end.mp4", 60, file_name="Møde i Århus.mp4")

        archive = self._add_project("Archive footage", 1)
        self._add_video(archive, "archive-1987", "clip.mov", 10, file_name="archive_1987.mov")
        self._add_video(archive, "reel-a", "moov_end.mp4", 20, file_name="reel.mp4")
        self._add_video(archive, "reel-b", "faststart.mp4", 30, file_name="reel.mp4")
        self._add_video(archive, "no-size", "faststart.mp4", 40, file_name="no_size.mp4", report_size=False)

        incoming = self._add_project("Incoming", 2)
        self._add_video(
            incoming, "pending", "moov_end.mp4", 10, file_name="pending_upload.mp4", upload_finished=False
        )
        promo = self._add_video(incoming, "promo", "moov_end.mp4", 20, file_name="promo.mp4")
        self._add_video(
            incoming, "promo-4k", "faststart.mp4", 30, file_name="promo_pixop_uhd_4k.mp4",
            kind="processed", parent_id=promo.id, preset="uhd_4k", processing_status="FAILED",
            processing_progress=13.0,
        )  # fmt: skip

        self._add_project("Empty project", 3)

        if catalog == "big":
            cycle = ("moov_end.mp4", "faststart.mp4", "clip.mov")
            for p in range(4):
                project = self._add_project(f"Synthetic project {p + 1:02d}", 10 + p)
                for i in range(videos_per_project):
                    sample = cycle[(p + i) % len(cycle)]
                    ext = Path(sample).suffix
                    self._add_video(
                        project, f"synthetic-{i}", sample, i, file_name=f"clip_{p + 1:02d}_{i:04d}{ext}"
                    )
        elif catalog != "small":
            raise ValueError(f"unknown catalog {catalog!r} (small | big)")

    def _video(self, video_id: str) -> PixopVideo:
        with self._lock:
            video = self.videos.get(video_id)
            if video is None:
                raise KeyError(video_id)
            return replace(video)

    # ---- auth -------------------------------------------------------------------------------------------
    def issue_token(self, user_id: str = USER_ID, team_id: str = TEAM_ID) -> str:
        now = int(time.time())
        with self._lock:
            self.tokens_issued += 1
            jti = f"{self.tokens_issued}-{secrets.token_hex(4)}"
            payload = {
                "iss": "pixop-emulator",
                "sub": user_id,
                "userId": user_id,
                "teamId": team_id,
                "email": self.email,
                "iat": now,
                "nbf": now,
                "exp": now + self.jwt_lifetime,
                "jti": jti,
                "gen": self.token_generation,
            }
        return jwt.encode(payload, self._secret)

    def verify_token(self, token: str) -> dict[str, Any]:
        """Claims of a valid token, or the HttpError Pixop answers."""
        invalid = failure(
            401, "InvalidJWTTokenFoundException", "The JWT token supplied could not be interpreted"
        )
        payload = jwt.decode(token, self._secret)
        if payload is None:
            raise invalid
        if "exp" not in payload:
            raise failure(401, "EternalJWTTokenException", "The JWT token does not have a TTL")
        if payload.get("userId") != USER_ID or payload.get("teamId") not in (TEAM_ID, OTHER_TEAM_ID):
            raise failure(
                401, "InconsistentJWTClaimsException", "The JWT claims are not suitable for this API"
            )
        now = time.time()
        if now < float(payload.get("nbf", 0)):
            raise failure(401, "PrematureJWTTokenException", "The JWT token is not valid yet")
        with self._lock:
            generation = self.token_generation
        if now >= float(payload["exp"]) or payload.get("gen") != generation:
            raise failure(401, "ExpiredJWTTokenException", "The JWT token has expired")
        return payload

    def require_jwt(self, req: Request) -> dict[str, Any]:
        auth = req.headers.get("Authorization") or ""
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise failure(
                401, "NoJWTTokenFoundException", "No JWT token was found in the Authorization header"
            )
        return self.verify_token(token.strip())

    def _basic_credentials(self, req: Request) -> tuple[str, str] | None:
        auth = req.headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise failure(401, "AuthException", "Malformed HTTP Basic credentials") from None
        email, sep, password = decoded.partition(":")
        if not sep:
            raise failure(401, "AuthException", "Malformed HTTP Basic credentials")
        return email, password

    # ---- accounts service -------------------------------------------------------------------------------
    def get_token(self, req: Request) -> None:
        creds = self._basic_credentials(req)
        if creds is None:
            auth = req.headers.get("Authorization") or ""
            if auth.strip().lower().startswith("bearer "):  # a valid token may be renewed
                claims = self.require_jwt(req)
                team_id = claims["teamId"]
            else:
                raise failure(401, "AuthException", "No credentials supplied: use HTTP Basic authentication")
        else:
            with self._lock:
                ok = hmac.compare_digest(creds[0].encode(), self.email.encode()) and hmac.compare_digest(
                    creds[1].encode(), self.password.encode()
                )
            if not ok:
                raise failure(401, "AuthException", "Invalid email address or password")
            team_id = TEAM_ID
        wanted = req.arg("team-id")
        if wanted:
            if wanted not in (TEAM_ID, OTHER_TEAM_ID):
                raise failure(401, "AuthException", f"User is not a member of team {wanted}")
            team_id = wanted
        req.send_json(
            200, {"userId": USER_ID, "teamId": team_id, "jwtToken": self.issue_token(USER_ID, team_id)}
        )

    def _user(self, *, typo: bool = False) -> JSON:
        created = fmt_time(_T0 - 30 * _DAY)
        user: JSON = {
            "id": USER_ID,
            "name": "Demo User",
            "email": self.email,
            "emailConfirmed": True,
            "authSignatureMethod": "HS256",
            "authSignaturePublicKey": "",
            "authSignaturePublicKeyId": "",
            "banned": False,
            "bannedReason": None,
            "bannedDate": None,
            "apiRequestSignatureSecret": "emulator-signature-secret",
            "apiRequestSignatureSethod" if typo else "apiRequestSignatureMethod": "HmacSHA256",
            "dateCreated": created,
            "timeLastUpdated": created,
        }
        return user

    @staticmethod
    def _team(team_id: str) -> JSON:
        created = fmt_time(_T0 - 30 * _DAY)
        name = "Demo Team" if team_id == TEAM_ID else "Other Team"
        return {"id": team_id, "name": name, "dateCreated": created, "timeLastUpdated": created}

    def post_token(self, req: Request) -> None:
        claims = self.require_jwt(req)
        team = claims["teamId"]
        others = [self._team(t) for t in (TEAM_ID, OTHER_TEAM_ID) if t != team]
        req.send_json(200, {"user": self._user(typo=True), "team": self._team(team), "otherTeams": others})

    def get_account(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, {"user": self._user(), "team": self._team(claims["teamId"])})

    # ---- videos service ---------------------------------------------------------------------------------
    def _paging(self, req: Request) -> tuple[int, int]:
        def number(name: str, default: int) -> int:
            raw = req.arg(name)
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise failure(400, "BadRequestException", f"Invalid value for {name}: {raw!r}") from None
            if value < 1:
                raise failure(400, "BadRequestException", f"{name} must be >= 1")
            return value

        with self._lock:
            default_size, max_size = self.page_size, self.max_page_size
        return number("page", 1), min(number("page-size", default_size), max_size)

    def _hal_page(
        self, path: str, filters: list[tuple[str, str]], key: str, items: list[JSON], req: Request
    ) -> JSON:
        page, size = self._paging(req)
        total = len(items)
        last = max(1, -(-total // size))

        def href(n: int) -> JSON:
            return {"href": f"{self.url}{path}?{urlencode([*filters, ('page', n), ('page-size', size)])}"}

        links: JSON = {"self": href(page)}
        if page < last:
            links["next"] = href(page + 1)
        if page > 1:
            links["previous"] = href(min(page - 1, last))
        links["first"] = href(1)
        links["last"] = href(last)
        chunk = items[(page - 1) * size : page * size]
        return {
            "pageSize": size,
            "page": page,
            "_links": links,
            "_embedded": {key: chunk, "totalFound": total},
        }

    def list_projects(self, req: Request) -> None:
        claims = self.require_jwt(req)
        with self._lock:
            projects = [p for p in self.projects.values() if p.team_id == claims["teamId"]]
            items = [
                {
                    "_links": {"self": {"href": f"{self.url}/videos/v1/project/{p.id}"}},
                    "id": p.id,
                    "name": p.name,
                    "dateCreated": fmt_time(p.created),
                    "timeLastUpdated": fmt_time(p.updated),
                }
                for p in projects
            ]
        req.send_json(200, self._hal_page("/videos/v1/projects", [], "projects", items, req))

    def _project_for(self, project_id: str, claims: Mapping[str, Any]) -> Project:
        with self._lock:
            project = self.projects.get(project_id)
        if project is None or project.team_id != claims["teamId"]:
            raise failure(404, "ProjectNotFoundException", f"Project {project_id} not found")
        return project

    def get_project(self, req: Request) -> None:
        claims = self.require_jwt(req)
        p = self._project_for(req.params["id"], claims)
        project = {
            "id": p.id,
            "name": p.name,
            "teamId": p.team_id,
            "dateCreated": fmt_time(p.created),
            "timeLastUpdated": fmt_time(p.updated),
        }
        req.send_json(200, {"project": project})

    def _video_for(self, video_id: str, claims: Mapping[str, Any]) -> PixopVideo:
        with self._lock:
            video = self.videos.get(video_id)
            project = self.projects.get(video.project_id) if video else None
            video = replace(video) if video else None
        if video is None or project is None or project.team_id != claims["teamId"]:
            raise failure(404, "VideoNotFoundException", f"Video {video_id} not found")
        return video

    def list_videos(self, req: Request) -> None:
        claims = self.require_jwt(req)
        project_id = req.arg("project-id") or None
        parent_id = req.arg("parent-id") or None
        filters: list[tuple[str, str]] = []
        if project_id:
            filters.append(("project-id", project_id))
        if parent_id:
            filters.append(("parent-id", parent_id))
        with self._lock:
            team_projects = {p.id for p in self.projects.values() if p.team_id == claims["teamId"]}
            selected = [
                v
                for v in self.videos.values()
                if v.project_id in team_projects
                and (project_id is None or v.project_id == project_id)
                and (parent_id is None or v.parent_id == parent_id)
            ]
            items = []
            for v in selected:
                item: JSON = {"_links": {"self": {"href": f"{self.url}/videos/v1/video/{v.id}"}}, "id": v.id}
                if v.parent_id:
                    item["parentId"] = v.parent_id
                item.update(
                    {
                        "projectId": v.project_id,
                        "name": v.name,
                        "filename": v.file_name,
                        "dateCreated": fmt_time(v.created),
                        "timeLastUpdated": fmt_time(v.updated),
                    }
                )
                items.append(item)
        req.send_json(200, self._hal_page("/videos/v1/videos", filters, "videos", items, req))

    @staticmethod
    def _metadata(v: PixopVideo) -> JSON:
        info = media.probe(v.path)
        fmt = info.get("format", {})
        vs: dict[str, Any] = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), {})
        num, _, den = str(vs.get("avg_frame_rate", "0/1")).partition("/")
        fps = round(float(num) / float(den or 1), 3) if float(den or 1) else 0.0
        duration = float(fmt.get("duration", vs.get("duration", 0)) or 0)
        stream_seconds = float(vs.get("duration", duration) or duration)
        meta: JSON = {
            "containerName": fmt.get("format_name"),
            "longContainerName": fmt.get("format_long_name"),
            "codecName": vs.get("codec_name"),
            "longCodecName": vs.get("codec_long_name"),
            "pixelFormat": {"name": vs.get("pix_fmt"), "chromaSubsampling": {"yuv": "4:2:0", "bits": 8}},
            "frameWidth": vs.get("width"),
            "frameHeight": vs.get("height"),
            "scanning": {
                "metadata": {"scanningType": "progressive", "interlacedFieldOrder": None},
                "heuristics": {"scanningType": "progressive", "interlacedFieldOrder": None},
            },
            "averageFramerate": fps,
            "durationInMillis": round(duration * 1000),
            "totalFrames": int(vs.get("nb_frames") or round(duration * fps)),
        }
        if v.report_size:
            meta["size"] = v.path.stat().st_size
            meta["videoStreamSize"] = int(float(vs.get("bit_rate") or 0) * stream_seconds / 8)
        return meta

    def _detail(self, v: PixopVideo) -> JSON:
        updated = fmt_time(v.updated)
        upload: JSON = {
            "uploadState": {
                "updatedAt": updated,
                "uploadStatus": "DONE" if v.upload_finished else "IN_PROGRESS",
            },
            "hasFinishedUploading": v.upload_finished,
            "fileName": v.file_name,
        }
        if v.upload_finished and v.report_size:
            upload["fileSize"] = v.path.stat().st_size
        upload["fileType"] = v.content_type
        upload["fileContainerName"] = _CONTAINER_NAMES.get(v.suffix, "unknown")
        ingestion: JSON
        if v.upload_finished:
            meta = self._metadata(v)
            ingestion = {
                "ingestionState": {
                    "updatedAt": updated,
                    "ingestionStatus": "DONE",
                    "videoMetadataAvailable": True,
                    "videoMetadataCommitted": True,
                    "processingProgressPercent": 100.0,
                },
                "metadata": meta,
                "qualityAssessment": {
                    "metrics": [
                        {
                            "name": "sharpness",
                            "sampleMean": 0.61,
                            "subjectiveLabel": "good",
                            "subjectiveScore": 3.9,
                        },
                        {
                            "name": "noise",
                            "sampleMean": 0.12,
                            "subjectiveLabel": "excellent",
                            "subjectiveScore": 4.6,
                        },
                    ],
                    "overallSubjectiveScore": 4.25,
                },
            }
        else:
            ingestion = {
                "ingestionState": {
                    "updatedAt": updated,
                    "ingestionStatus": "INITIAL",
                    "videoMetadataAvailable": False,
                    "videoMetadataCommitted": False,
                    "processingProgressPercent": 0.0,
                }
            }
        video: JSON = {
            "id": v.id,
            "name": v.name,
            "description": v.description,
            "projectId": v.project_id,
            "userId": USER_ID,
            "teamId": TEAM_ID,
        }
        if v.parent_id:
            video["parentId"] = v.parent_id
        video["upload"] = upload
        video["ingestion"] = ingestion
        if v.kind == "processed":
            width, height = {"hd_1080p": (1920, 1080), "uhd_4k": (3840, 2160)}.get(v.preset, (1920, 1080))
            video["processing"] = {
                "processingState": {
                    "updatedAt": updated,
                    "processingStatus": v.processing_status,
                    "processingProgressPercent": v.processing_progress,
                },
                "processingParameters": {
                    "sourceVideo": {"startPositionMilliseconds": 0},
                    "targetVideo": {
                        "preset": {"name": v.preset},
                        "container": {"name": v.suffix.lstrip(".") or "mp4", "properties": {}},
                        "codec": {"name": "h264", "properties": {"profile": "high"}},
                        "pixelFormat": {"name": "yuv420p", "chromaSubsampling": {"yuv": "4:2:0", "bits": 8}},
                        "bitrate": 12_000_000,
                        "frameWidth": width,
                        "frameHeight": height,
                        "videoFilters": [
                            {"name": "pabsr1", "properties": {"clarityBoost": "low"}},
                            {"name": "denoise", "properties": {}},
                        ],
                    },
                },
            }
        video["attributes"] = {}
        video["dateCreated"] = fmt_time(v.created)
        video["timeLastUpdated"] = updated
        return {"video": video}

    def get_video(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, self._detail(self._video_for(req.params["id"], claims)))

    def process_progress(self, req: Request) -> None:
        claims = self.require_jwt(req)
        v = self._video_for(req.params["id"], claims)
        status, pct = (
            (v.processing_status, v.processing_progress) if v.kind == "processed" else ("DONE", 100.0)
        )
        state = {
            "updatedAt": fmt_time(v.updated),
            "processingStatus": status,
            "processingProgressPercent": pct,
        }
        req.send_json(200, {"videoId": v.id, "projectId": v.project_id, "processingState": state})

    def ingest_progress(self, req: Request) -> None:
        claims = self.require_jwt(req)
        v = self._video_for(req.params["id"], claims)
        state = {
            "updatedAt": fmt_time(v.updated),
            "ingestionStatus": "DONE" if v.upload_finished else "INITIAL",
            "videoMetadataAvailable": v.upload_finished,
        }
        req.send_json(200, {"videoId": v.id, "projectId": v.project_id, "ingestionState": state})

    # ---- media service ----------------------------------------------------------------------------------
    @staticmethod
    def etag_of(v: PixopVideo) -> str:
        """The ETag header value: a hash of the stored media (first 32 hex digits of its SHA-256), quoted."""
        return f'"{media.sha256_of(v.path)[:32]}"'

    def download(self, req: Request) -> None:
        claims = self.require_jwt(req)
        which, video_id = req.params["which"], req.params["id"]
        try:
            v = self._video_for(video_id, claims)
        except HttpError:
            raise failure(404, "MediaNotFoundException", f"No {which} media for video {video_id}") from None
        if v.kind != which or not v.downloadable:
            raise failure(404, "MediaNotFoundException", f"No {which} media for video {video_id}")
        serve_file(
            req,
            v.path,
            etag=self.etag_of(v),
            content_type=v.content_type,
            filename_for_disposition=v.file_name,
            last_modified=v.updated,
        )

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        names = {400: "BadRequestException", 404: "NotFoundException", 405: "MethodNotAllowedException"}
        return {"exception": names.get(status, "ServiceException"), "errorMessage": message}

    def config(self) -> JSON:
        with self._lock:
            return {"type": "pixop", "base_url": self.url, "email": self.email, "password": self.password}

    def _catalog_entry(self, v: PixopVideo) -> JSON:
        sha = media.sha256_of(v.path)
        return {
            "id": v.id,
            "projectId": v.project_id,
            "parentId": v.parent_id,
            "name": v.name,
            "fileName": v.file_name,
            "visible": v.downloadable,
            "size": v.path.stat().st_size,
            "sha256": sha,
            "mtime_epoch": v.updated,
            "etag": f'"{sha[:32]}"',
            "path_on_disk": str(v.path),
            "kind": v.kind,
            "status": v.status,
            "content_type": v.content_type,
            "reports_size": v.report_size and v.upload_finished,
        }

    def catalog(self) -> JSON:
        with self._lock:
            projects = list(self.projects.values())
            videos = [replace(v) for v in self.videos.values()]
        return {
            "provider": "pixop",
            "projects": [
                {"id": p.id, "name": p.name, "timeLastUpdated": fmt_time(p.updated), "mtime_epoch": p.updated}
                for p in projects
            ],
            "videos": [self._catalog_entry(v) for v in videos],
        }

    def settings(self) -> JSON:
        with self._lock:
            return {
                "jwt_lifetime": self.jwt_lifetime,
                "page_size": self.page_size,
                "max_page_size": self.max_page_size,
                "email": self.email,
                "password": self.password,
                "expire_all_tokens": False,
                "token_generation": self.token_generation,
                "tokens_issued": self.tokens_issued,
            }

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        known = {"jwt_lifetime", "page_size", "max_page_size", "email", "password", "expire_all_tokens"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        with self._lock:
            if "jwt_lifetime" in changes:
                self.jwt_lifetime = int(changes["jwt_lifetime"])
            if "page_size" in changes:
                if int(changes["page_size"]) < 1:
                    raise ValueError("page_size must be >= 1")
                self.page_size = int(changes["page_size"])
            if "max_page_size" in changes:
                self.max_page_size = max(1, int(changes["max_page_size"]))
            if "email" in changes:
                self.email = str(changes["email"])
            if "password" in changes:
                self.password = str(changes["password"])
            if changes.get("expire_all_tokens"):
                self.token_generation += 1
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        if action == "expire_tokens":
            with self._lock:
                self.token_generation += 1
                return {"token_generation": self.token_generation}
        raw_id = change.get("video_id")
        if action in ("change_content", "delete", "rename", "set_status") and not isinstance(raw_id, str):
            raise ValueError(f"{action} needs a video_id")
        video_id = str(raw_id)
        if action == "change_content":
            extra = int(change.get("extra_bytes", 0))
            current = self._video(video_id)
            with self._lock:
                self._mutations += 1
                tag = f"{video_id}:{self._mutations}"
            new_path = media.variant(current.path, tag, out_dir=self.work_dir, extra_bytes=extra)
            media.sha256_of(new_path)
            with self._lock:
                v = self.videos[video_id]
                v.path = new_path
                self._touch(v)
                return self._catalog_entry(replace(v))
        if action == "delete":
            with self._lock:
                if video_id not in self.videos:
                    raise KeyError(video_id)
                doomed = [video_id] + [v.id for v in self.videos.values() if v.parent_id == video_id]
                for vid in doomed:
                    gone = self.videos.pop(vid)
                    project = self.projects.get(gone.project_id)
                    if project is not None:
                        project.updated = max(project.updated + 1, int(time.time()))
                return {"deletedVideos": [{"videoId": vid} for vid in doomed]}
        if action == "rename":
            with self._lock:
                v = self.videos[video_id]
                if "name" in change:
                    v.name = str(change["name"])
                if "file_name" in change:
                    v.file_name = str(change["file_name"])
                self._touch(v)
                return self._catalog_entry(replace(v))
        if action == "set_status":
            status = str(change.get("status", "DONE"))
            with self._lock:
                v = self.videos[video_id]
                if v.kind == "processed":
                    v.processing_status = status
                    v.processing_progress = 100.0 if status == "DONE" else v.processing_progress
                    v.upload_finished = status == "DONE"
                else:
                    v.upload_finished = status == "DONE"
                self._touch(v)
                return self._catalog_entry(replace(v))
        raise ValueError(
            f"unknown action {action!r}; known: change_content, delete, rename, set_status, expire_tokens"
        )

    def _touch(self, v: PixopVideo) -> None:
        """Mark a video (and its project) updated now, strictly later than before (caller holds the lock)."""
        v.updated = max(v.updated + 1, int(time.time()))
        project = self.projects.get(v.project_id)
        if project is not None:
            project.updated = max(project.updated, v.updated)


def create_site(options: EmulatorOptions) -> PixopSite:
    """The registry entry point."""
    return PixopSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        jwt_lifetime=options.jwt_lifetime if options.jwt_lifetime is not None else DEFAULT_JWT_LIFETIME,
        page_size=options.page_size if options.page_size is not None else DEFAULT_PAGE_SIZE,
        catalog=options.catalog,
        videos_per_project=options.videos_per_project if options.videos_per_project is not None else 50,
        seed=options.seed,
        verbose=options.verbose,
    )
