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
``email``, ``password``, ``expire_all_tokens`` (true → every token issued so far is expired), ``scale``.
Mutations (``/_emulator/mutate``): ``change_content`` {video_id, extra_bytes?}, ``delete`` {video_id}
(an original takes its processed videos with it), ``expire_tokens``, ``rename`` {video_id, name?,
file_name?}, ``set_status`` {video_id, status}.

Scale: ``scale = N`` adds N synthetic originals in projects of 1,000 (``Scale project 001``...), as a Pixop
account grows project by project; listing a project pages through its videos (HAL links, ``totalFound``)
by slicing a list prepared once per catalog change.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from vidfs.emulator import credentials, jwt
from vidfs.emulator.content import Blob, SyntheticBlob, etag_of, facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries
from vidfs.emulator.knobs import Knob, as_int, at_least, knob, positive, trigger
from vidfs.emulator.pages import hal_page
from vidfs.emulator.pixop_model import (
    DAY,
    OTHER_TEAM_ID,
    T0,
    TEAM_ID,
    USER_ID,
    PixopVideo,
    Project,
    detail_json,
    fmt_time,
    list_item,
    pixop_id,
    progress_json,
    project_item,
    project_json,
    team_json,
    user_json,
)
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, serve_file
from vidfs.emulator.vendor import VendorSite, group_by, or_default, page_slice, required, route

__all__ = [
    "DEFAULT_EMAIL",
    "DEFAULT_PASSWORD",
    "OTHER_TEAM_ID",
    "TEAM_ID",
    "USER_ID",
    "PixopSite",
    "pixop_id",
]

DEFAULT_EMAIL = "demo@example.com"
DEFAULT_PASSWORD = "pixop-demo-password"
DEFAULT_JWT_LIFETIME = 900
DEFAULT_PAGE_SIZE = 2
DEFAULT_MAX_PAGE_SIZE = 100
SCALE_PROJECT_SIZE = 1000
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")


def failure(status: int, exception: str, message: str) -> HttpError:
    return HttpError(status, message, body={"exception": exception, "errorMessage": message})


class PixopSite(VendorSite):
    """The Pixop emulator: one origin serving the accounts, videos and media services."""

    NAME = "pixop"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "jwt_lifetime": knob("jwt_lifetime", as_int),
        "page_size": knob("page_size", positive),
        "max_page_size": knob("max_page_size", at_least(1)),
        "email": knob("email"),
        "password": knob("password"),
        "expire_all_tokens": trigger("mutate_expire_tokens"),
    }

    def build(self, options: EmulatorOptions) -> None:
        self.email = DEFAULT_EMAIL
        self.password = DEFAULT_PASSWORD
        self.jwt_lifetime = or_default(options.jwt_lifetime, DEFAULT_JWT_LIFETIME)
        self.page_size = or_default(options.page_size, DEFAULT_PAGE_SIZE)
        self.max_page_size = DEFAULT_MAX_PAGE_SIZE
        self.mint = jwt.Mint()
        self.projects: dict[str, Project] = self.table()
        self.videos: dict[str, PixopVideo] = self.table()
        self._build_catalog(options.catalog, or_default(options.videos_per_project, 50))

    # ---- catalog ----------------------------------------------------------------------------------------
    def _add_project(self, name: str, day: int) -> Project:
        t = T0 + day * DAY
        project = Project(pixop_id("project", name), name, TEAM_ID, t, t + 3600)
        self.projects[project.id] = project
        return project

    def _add_video(self, project: Project, key: str, blob: Blob, minute: int, **kw: Any) -> PixopVideo:
        created = project.created + minute * 60
        name = kw.pop("name", None)
        file_name = kw.pop("file_name")
        video = PixopVideo(
            id=pixop_id("video", f"{project.name}/{key}"),
            project_id=project.id,
            name=name if name is not None else file_name,
            file_name=file_name,
            kind=kw.pop("kind", "original"),
            blob=blob,
            created=created,
            updated=created + 600,
            **kw,
        )
        self.videos[video.id] = video
        project.updated = max(project.updated, video.updated)
        return video

    def _build_catalog(self, catalog: str, videos_per_project: int) -> None:
        s = self.sample
        demo = self._add_project("Restoration demo", 0)
        interview = self._add_video(demo, "interview", s("moov_end.mp4"), 10, file_name="interview.mp4")
        self._add_video(
            demo, "interview-hd", s("faststart.mp4"), 20, file_name="interview_pixop_hd_1080p.mp4",
            kind="processed", parent_id=interview.id, preset="hd_1080p",
        )  # fmt: skip
        self._add_video(
            demo, "interview-4k", s("faststart.mp4"), 30, file_name="interview_pixop_uhd_4k.mp4",
            kind="processed", parent_id=interview.id, preset="uhd_4k",
            processing_status="IN_PROGRESS", processing_progress=42.5, upload_finished=False,
        )  # fmt: skip
        self._add_video(demo, "big-reel", s("big.mp4"), 40, name="Big reel master", file_name="big_reel.mp4")
        self._add_video(demo, "before-after", s("faststart.mp4"), 50, file_name="before/after.mp4")
        self._add_video(demo, "aarhus", s("moov_end.mp4"), 60, file_name="Møde i Århus.mp4")

        archive = self._add_project("Archive footage", 1)
        self._add_video(archive, "archive-1987", s("clip.mov"), 10, file_name="archive_1987.mov")
        self._add_video(archive, "reel-a", s("moov_end.mp4"), 20, file_name="reel.mp4")
        self._add_video(archive, "reel-b", s("faststart.mp4"), 30, file_name="reel.mp4")
        self._add_video(
            archive, "no-size", s("faststart.mp4"), 40, file_name="no_size.mp4", report_size=False
        )

        incoming = self._add_project("Incoming", 2)
        self._add_video(
            incoming, "pending", s("moov_end.mp4"), 10, file_name="pending_upload.mp4", upload_finished=False
        )
        promo = self._add_video(incoming, "promo", s("moov_end.mp4"), 20, file_name="promo.mp4")
        self._add_video(
            incoming, "promo-4k", s("faststart.mp4"), 30, file_name="promo_pixop_uhd_4k.mp4",
            kind="processed", parent_id=promo.id, preset="uhd_4k", processing_status="FAILED",
            processing_progress=13.0,
        )  # fmt: skip

        self._add_project("Empty project", 3)
        if catalog == "big":
            self._add_big(videos_per_project)
        elif catalog != "small":
            raise ValueError(f"unknown catalog {catalog!r} (small | big)")

    def _add_big(self, videos_per_project: int) -> None:
        cycle = ("moov_end.mp4", "faststart.mp4", "clip.mov")
        for p in range(4):
            project = self._add_project(f"Synthetic project {p + 1:02d}", 10 + p)
            for i in range(videos_per_project):
                sample = cycle[(p + i) % len(cycle)]
                name = f"clip_{p + 1:02d}_{i:04d}{Path(sample).suffix}"
                self._add_video(project, f"synthetic-{i}", self.sample(sample), i, file_name=name)

    @staticmethod
    def _scale_project(index: int) -> tuple[str, int]:
        number = index // SCALE_PROJECT_SIZE
        return f"Scale project {number + 1:03d}", 30 + number

    def add_scaled(self, index: int) -> None:
        name, day = self._scale_project(index)
        project = self.projects.get(pixop_id("project", name)) or self._add_project(name, day)
        blob = SyntheticBlob.of(f"pixop/scale/{index}")
        minute = index % SCALE_PROJECT_SIZE
        self._add_video(project, f"scale-{index}", blob, minute, file_name=f"clip_{index:06d}.mp4")

    def remove_scaled(self, index: int) -> None:
        name, _day = self._scale_project(index)
        self.videos.pop(pixop_id("video", f"{name}/scale-{index}"), None)
        if index % SCALE_PROJECT_SIZE == 0:
            self.projects.pop(pixop_id("project", name), None)

    # ---- auth -------------------------------------------------------------------------------------------
    def issue_token(self, user_id: str = USER_ID, team_id: str = TEAM_ID) -> str:
        claims = {"iss": "pixop-emulator", "sub": user_id, "userId": user_id, "teamId": team_id}
        with self._lock:
            claims["email"] = self.email
            lifetime = self.jwt_lifetime
        return self.mint.issue(claims, lifetime, not_before=True)

    def verify_token(self, token: str) -> dict[str, Any]:
        """Claims of a valid token, or the HttpError Pixop answers."""
        payload = self.mint.read(token)
        if payload is None:
            raise failure(
                401, "InvalidJWTTokenFoundException", "The JWT token supplied could not be interpreted"
            )
        if "exp" not in payload:
            raise failure(401, "EternalJWTTokenException", "The JWT token does not have a TTL")
        if payload.get("userId") != USER_ID or payload.get("teamId") not in (TEAM_ID, OTHER_TEAM_ID):
            raise failure(
                401, "InconsistentJWTClaimsException", "The JWT claims are not suitable for this API"
            )
        if time.time() < float(payload.get("nbf", 0)):
            raise failure(401, "PrematureJWTTokenException", "The JWT token is not valid yet")
        if not self.mint.current(payload):
            raise failure(401, "ExpiredJWTTokenException", "The JWT token has expired")
        return payload

    def require_jwt(self, req: Request) -> dict[str, Any]:
        token = credentials.bearer_token(req)
        if token is None:
            raise failure(
                401, "NoJWTTokenFoundException", "No JWT token was found in the Authorization header"
            )
        return self.verify_token(token)

    def _team_of_login(self, req: Request) -> str:
        """The team a token request may have: Basic credentials, or a valid token being renewed."""
        try:
            creds = credentials.basic_credentials(req)
        except credentials.Malformed:
            raise failure(401, "AuthException", "Malformed HTTP Basic credentials") from None
        if creds is None:
            if credentials.bearer_token(req) is not None:  # a valid token may be renewed
                return str(self.require_jwt(req)["teamId"])
            raise failure(401, "AuthException", "No credentials supplied: use HTTP Basic authentication")
        with self._lock:
            ok = credentials.same(creds[0], self.email) and credentials.same(creds[1], self.password)
        if not ok:
            raise failure(401, "AuthException", "Invalid email address or password")
        return TEAM_ID

    # ---- accounts service -------------------------------------------------------------------------------
    @route("GET", r"/accounts/v1/token")
    def get_token(self, req: Request) -> None:
        team_id = self._team_of_login(req)
        wanted = req.arg("team-id")
        if wanted:
            if wanted not in (TEAM_ID, OTHER_TEAM_ID):
                raise failure(401, "AuthException", f"User is not a member of team {wanted}")
            team_id = wanted
        req.send_json(
            200, {"userId": USER_ID, "teamId": team_id, "jwtToken": self.issue_token(USER_ID, team_id)}
        )

    @route("POST", r"/accounts/v1/token")
    def post_token(self, req: Request) -> None:
        claims = self.require_jwt(req)
        team = claims["teamId"]
        others = [team_json(t) for t in (TEAM_ID, OTHER_TEAM_ID) if t != team]
        user = user_json(self.email, typo=True)
        req.send_json(200, {"user": user, "team": team_json(team), "otherTeams": others})

    @route("GET", r"/accounts/v1/account")
    def get_account(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, {"user": user_json(self.email), "team": team_json(claims["teamId"])})

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

    @route("GET", r"/videos/v1/projects")
    def list_projects(self, req: Request) -> None:
        claims = self.require_jwt(req)
        page, size = self._paging(req)
        with self._lock:
            projects = [p for p in self.projects.values() if p.team_id == claims["teamId"]]
            items = [project_item(self.url, p) for p in page_slice(projects, page, size)]
        base = f"{self.url}/videos/v1/projects"
        req.send_json(200, hal_page(base, [], "projects", items, len(projects), page, size))

    def _project_for(self, project_id: str, claims: Mapping[str, Any]) -> Project:
        with self._lock:
            project = self.projects.get(project_id)
        if project is None or project.team_id != claims["teamId"]:
            raise failure(404, "ProjectNotFoundException", f"Project {project_id} not found")
        return project

    @route("GET", r"/videos/v1/project/(?P<id>[^/]+)")
    def get_project(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, project_json(self._project_for(req.params["id"], claims)))

    def _video_for(self, video_id: str, claims: Mapping[str, Any]) -> PixopVideo:
        with self._lock:
            video = self.videos.get(video_id)
            project = self.projects.get(video.project_id) if video else None
            video = replace(video) if video else None
        if video is None or project is None or project.team_id != claims["teamId"]:
            raise failure(404, "VideoNotFoundException", f"Video {video_id} not found")
        return video

    def _listed(self, team_id: str, project_id: str | None, parent_id: str | None) -> list[PixopVideo]:
        """The videos a list call selects, in catalog order (prepared once per catalog change)."""

        def select() -> list[PixopVideo]:
            candidates: Iterable[PixopVideo] = self.videos.values()
            if project_id is not None:
                by_project = self.prepared("by-project", lambda: group_by(self.videos.values(), _project_of))
                candidates = by_project.get(project_id, [])
            return [
                v
                for v in candidates
                if self._team_has(team_id, v.project_id) and (parent_id is None or v.parent_id == parent_id)
            ]

        return self.prepared(("videos", team_id, project_id, parent_id), select)

    def _team_has(self, team_id: str, project_id: str) -> bool:
        project = self.projects.get(project_id)
        return project is not None and project.team_id == team_id

    @route("GET", r"/videos/v1/videos")
    def list_videos(self, req: Request) -> None:
        claims = self.require_jwt(req)
        project_id = req.arg("project-id") or None
        parent_id = req.arg("parent-id") or None
        filters = [(k, v) for k, v in (("project-id", project_id), ("parent-id", parent_id)) if v]
        page, size = self._paging(req)
        with self._lock:
            selected = self._listed(claims["teamId"], project_id, parent_id)
            items = [list_item(self.url, v) for v in page_slice(selected, page, size)]
        base = f"{self.url}/videos/v1/videos"
        req.send_json(200, hal_page(base, filters, "videos", items, len(selected), page, size))

    @route("GET", r"/videos/v1/video/(?P<id>[^/]+)")
    def get_video(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, detail_json(self._video_for(req.params["id"], claims)))

    @route("GET", r"/videos/v1/check-process-video-progress/(?P<id>[^/]+)")
    def process_progress(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, progress_json(self._video_for(req.params["id"], claims), "processing"))

    @route("GET", r"/videos/v1/check-ingest-video-progress/(?P<id>[^/]+)")
    def ingest_progress(self, req: Request) -> None:
        claims = self.require_jwt(req)
        req.send_json(200, progress_json(self._video_for(req.params["id"], claims), "ingestion"))

    # ---- media service ----------------------------------------------------------------------------------
    @staticmethod
    def etag_of(v: PixopVideo) -> str:
        """The ETag header value: a hash of the stored media (first 32 hex digits of its SHA-256), quoted."""
        return etag_of(v.blob)

    @route(("GET", "HEAD"), r"/media/v1/download/(?P<which>original|processed)/(?P<id>[^/]+)")
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
            v.blob,
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
        return {"type": "pixop", "base_url": self.url, **self.values("email", "password")}

    def status(self) -> JSON:
        return {"token_generation": self.mint.generation, "tokens_issued": self.mint.issued}

    def _catalog_entry(self, v: PixopVideo, compact: bool = False) -> JSON:
        return {
            "id": v.id,
            "projectId": v.project_id,
            "parentId": v.parent_id,
            "name": v.name,
            "fileName": v.file_name,
            "visible": v.downloadable,
            **facts(v.blob, compact=compact),
            "mtime_epoch": v.updated,
            "kind": v.kind,
            "status": v.status,
            "content_type": v.content_type,
            "reports_size": v.report_size and v.upload_finished,
        }

    def catalog_json(self, compact: bool) -> JSON:
        with self._lock:
            projects = list(self.projects.values())
            videos = [replace(v) for v in self.videos.values()]
        return {
            "provider": "pixop",
            "projects": [
                {"id": p.id, "name": p.name, "timeLastUpdated": fmt_time(p.updated), "mtime_epoch": p.updated}
                for p in projects
            ],
            "videos": [self._catalog_entry(v, compact) for v in videos],
        }

    # ---- mutations --------------------------------------------------------------------------------------
    def mutate_expire_tokens(self, change: Mapping[str, Any] | None = None) -> JSON:
        self.mint.expire_all()
        return {"token_generation": self.mint.generation}

    def mutate_change_content(self, change: Mapping[str, Any]) -> JSON:
        video_id = required(change, "video_id", _text)
        current = self.copy(self.videos, video_id)
        blob = self.changed_blob(current.blob, video_id, int(change.get("extra_bytes", 0)))
        with self._lock:
            v = self.videos[video_id]
            v.blob = blob
            self._touch(v)
            return self._catalog_entry(replace(v))

    def mutate_delete(self, change: Mapping[str, Any]) -> JSON:
        video_id = required(change, "video_id", _text)
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

    def mutate_rename(self, change: Mapping[str, Any]) -> JSON:
        video_id = required(change, "video_id", _text)
        with self._lock:
            v = self.videos[video_id]
            if "name" in change:
                v.name = str(change["name"])
            if "file_name" in change:
                v.file_name = str(change["file_name"])
            self._touch(v)
            return self._catalog_entry(replace(v))

    def mutate_set_status(self, change: Mapping[str, Any]) -> JSON:
        video_id = required(change, "video_id", _text)
        status = str(change.get("status", "DONE"))
        with self._lock:
            v = self.videos[video_id]
            if v.kind == "processed":
                v.processing_status = status
                v.processing_progress = 100.0 if status == "DONE" else v.processing_progress
            v.upload_finished = status == "DONE"
            self._touch(v)
            return self._catalog_entry(replace(v))

    def _touch(self, v: PixopVideo) -> None:
        """Mark a video (and its project) updated now, strictly later than before (caller holds the lock)."""
        v.updated = max(v.updated + 1, int(time.time()))
        project = self.projects.get(v.project_id)
        if project is not None:
            project.updated = max(project.updated, v.updated)


def _project_of(video: PixopVideo) -> str:
    return video.project_id


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def create_site(options: EmulatorOptions) -> PixopSite:
    return PixopSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """project / file: processed videos get ``.processed`` before their extension, as vidfs names them."""
    projects = catalog["projects"]
    project_names = name_entries([(p["id"], p["name"], True, None) for p in projects])
    by_project = group_by((v for v in catalog["videos"] if v["visible"]), lambda v: v["projectId"])
    out: dict[str, Expect] = {}
    for project, project_dir in zip(projects, project_names, strict=True):
        videos = by_project.get(project["id"], [])
        raw: list[tuple[str, str, bool, str | None]] = []
        for video in videos:
            name = video["fileName"] or video["name"]
            if video.get("parentId"):
                stem, ext = posixpath.splitext(name)
                name = f"{stem}.processed{ext}"
            raw.append((video["id"], name, False, None))
        for video, file_name in zip(videos, name_entries(raw), strict=True):
            out[f"{project_dir}/{file_name}"] = expect(video, video["mtime_epoch"], video["id"])
    return out


CONTRACT = Contract(
    expected=expected_layout,
    short_lived_args=("--jwt-lifetime", "2"),
    login_path=r"^/accounts/v1/token",
    storage_path=r"^/media/v1/download/",
    mutation=lambda action, remote_id: {"action": action, "video_id": remote_id},
)
