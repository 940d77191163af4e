"""Hour One (MakeReals) API v1 emulator, with its signed storage on a second origin.

API (the provider's ``base_url`` is ``<url>/api/v1``), every call needs the ``api-key`` header:

- ``GET  /api/v1/videos``                  a plain JSON array of every video, no pagination, in creation
  order. Items carry the "List Videos" fields: ``id, name, status, progress, req_id, draft_id,
  source_draft_id, recipe_id, template_id, palette_id, character_id, voice_id, scenes, video_player_url,
  download_url, correlation_id`` (optional fields are ``null`` when unset, FastAPI style).
- ``GET  /api/v1/videos/{video_id}``        one video, "Get Video By Id" fields (no template_id, scenes,
  correlation_id). A fresh signed ``download_url`` on every call.
- ``GET  /api/v1/videos/{video_id}/metadata`` ``{"duration": s, "scenes_metadata": [{scene_index,
  start_time, duration}]}`` for rendered videos; 404 ``{"detail": ...}`` otherwise.
- ``POST /api/v1/videos``                   create a video from ``source_draft_id`` or ``recipe_id`` (one of
  them is required: 422 otherwise); it stays ``not_started`` until a ``set_status`` mutation.

Auth: no ``api-key`` → 403 ``{"detail": "Not authenticated"}`` (FastAPI's APIKeyHeader); a wrong one → 401
``{"detail": "Invalid API key"}``. ``workspace-id`` / ``team-id`` headers are optional; when sent they must
name the emulated workspace / team (403 otherwise). Video ids are UUIDs: a malformed one answers FastAPI's
422 ``{"detail": [{"loc": ["path", "video_id"], "msg": "value is not a valid uuid", "type":
"type_error.uuid"}]}``; an unknown one 404 ``{"detail": "Video not found"}``.

Statuses: ``started, processing, ready, published, failed, not_started, stopped, cancelled``. Only
``ready``/``published`` videos have a ``download_url`` (the catalog also holds a ``ready`` video whose URL is
not there yet). ``progress`` is 100 when rendered, -1 when failed.

Storage (subsite ``hourone-storage``, another port): ``GET|HEAD /storage/videos/{id}/{file}`` with a signed
query, valid ``url_lifetime`` seconds (default 3600). ``url_style`` ``expires`` (default) signs as
``?Expires=<epoch>&Signature=<hmac>`` (vidfs can read the expiry); ``opaque`` as ``?sig=<token>`` (expiry
hidden inside, like vendors whose URL says nothing). Expired, tampered or revoked (``expire_urls``) → 403
with an S3-like XML body. Storage counts the requests that carried an ``api-key`` (or ``workspace-id`` /
``team-id``) header: ``catalog()["storage"]``; its request-log entries show every header too.
One video's storage file name has no extension (``.../download``): clients must default to MP4.

Control API: rules posted to ``/_emulator/faults`` of the API site reach the storage site too, and the API
site's ``/_emulator/requests`` merges both logs (``origin`` is ``hourone`` or ``hourone-storage``); that is
the framework's parent/subsite behaviour. Settings: ``api_key``, ``workspace_id``, ``team_id``,
``url_lifetime``, ``url_style``, ``expire_urls`` (true → every URL issued so far is refused).
``--set hourone.url_lifetime=2`` on the command line. Mutations: ``set_status`` {video_id, status,
progress?}, ``rename`` {video_id, name (null: no name)}, ``delete`` {video_id}, ``change_content``
{video_id, extra_bytes?} (a re-render: new bytes under a new storage path), ``expire_urls``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from vidfs.emulator import media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

DEFAULT_API_KEY = "hourone-demo-api-key"
WORKSPACE_ID = "ws-7d1c2b4e"
TEAM_ID = "team-31f0a9c2"
DEFAULT_URL_LIFETIME = 3600
URL_STYLES = ("expires", "opaque")
STATUSES = ("started", "processing", "ready", "published", "failed", "not_started", "stopped", "cancelled")
RENDERED = frozenset({"ready", "published"})
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4")

_NS = uuid.UUID("0d6f4a52-3c1b-4f7e-9a0e-2b8c5d7e9f11")
_T0 = 1_700_000_000  # used only for Last-Modified of storage answers: the API itself has no times


def hourone_id(kind: str, key: str) -> str:
    return str(uuid.uuid5(_NS, f"hourone/{kind}/{key}"))


def fastapi_422(loc: list[Any], msg: str, type_: str) -> HttpError:
    return HttpError(422, msg, body={"detail": [{"loc": loc, "msg": msg, "type": type_}]})


def detail(status: int, message: str) -> HttpError:
    return HttpError(status, message, body={"detail": message})


def _valid_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass
class HourOneVideo:
    id: str
    name: str | None
    status: str
    progress: int
    path: Path | None  # the rendered file (None: never rendered)
    file_name: str  # the storage file name (its extension tells the type; may have none)
    has_url: bool = True  # ready/published but no download_url yet when False
    req_id: str = ""
    draft_id: str = ""
    source_draft_id: str | None = None
    recipe_id: str | None = None
    template_id: str | None = None
    palette_id: str | None = None
    character_id: str | None = None
    voice_id: str | None = None
    render: int = 0  # bumped on change_content: the storage path changes with it

    @property
    def downloadable(self) -> bool:
        return self.status in RENDERED and self.has_url and self.path is not None

    @property
    def storage_path(self) -> str:
        return f"/storage/videos/{self.id}/r{self.render}/{quote(self.file_name)}"

    @property
    def content_type(self) -> str:
        return "video/quicktime" if self.file_name.lower().endswith(".mov") else "video/mp4"


class StorageSite(Site):
    """The storage origin the download URLs point at."""

    def __init__(self, parent: HourOneSite, host: str, seed: int, verbose: bool) -> None:
        super().__init__("hourone-storage", host=host, port=0, seed=seed, verbose=verbose)
        self.parent = parent
        self.add_route(
            ("GET", "HEAD"),
            r"/storage/videos/(?P<id>[^/]+)/r(?P<render>\d+)/(?P<file>[^/]+)",
            parent.download,
        )

    def error_body(self, status: int, message: str) -> Any:
        return _xml_error("NoSuchKey" if status == 404 else "InternalError", message)

    def catalog(self) -> JSON:
        return self.parent.storage_counters()


def _xml_error(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
    )


class HourOneSite(Site):
    """The Hour One API origin; `storage` is the download origin (a subsite)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        catalog: str = "small",
        videos: int = 200,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.samples = media.ensure_samples(SAMPLES_USED, media_dir)
        super().__init__("hourone", host=host, port=port, seed=seed, verbose=verbose)
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(32)
        self.api_key = DEFAULT_API_KEY
        self.workspace_id = WORKSPACE_ID
        self.team_id = TEAM_ID
        self.url_lifetime = DEFAULT_URL_LIFETIME
        self.url_style = "expires"
        self.url_generation = 0
        self.urls_issued = 0
        self.created = 0
        self._mutations = 0
        self._storage_requests = 0
        self._storage_with_api_key = 0
        self._storage_with_other_credentials = 0
        self.videos: dict[str, HourOneVideo] = {}
        try:
            self.storage = StorageSite(self, host, seed, verbose)
            self.subsites.append(self.storage)
            self._build_catalog(catalog, videos)
        except BaseException:
            self.close()
            raise
        a = self.add_route
        a("GET", r"/api/v1/videos", self.list_videos)
        a("POST", r"/api/v1/videos", self.create_video)
        a("GET", r"/api/v1/videos/(?P<video_id>[^/]+)", self.get_video)
        a("GET", r"/api/v1/videos/(?P<video_id>[^/]+)/metadata", self.get_metadata)
        a("GET", r"/player/(?P<video_id>[^/]+)", self.player)

    # ---- catalog ----------------------------------------------------------------------------------------
    def _add(self, key: str, name: str | None, status: str, sample: str | None, **kw: Any) -> HourOneVideo:
        progress = kw.pop("progress", 100 if status in RENDERED else 0)
        file_name = kw.pop("file_name", "video.mp4")
        draft = hourone_id("draft", key)
        video = HourOneVideo(
            id=hourone_id("video", key),
            name=name,
            status=status,
            progress=progress,
            path=self.samples[sample] if sample else None,
            file_name=file_name,
            req_id=hourone_id("req", key),
            draft_id=draft,
            source_draft_id=kw.pop("source_draft_id", hourone_id("source", key)),
            recipe_id=kw.pop("recipe_id", None),
            template_id=kw.pop("template_id", hourone_id("template", "corporate")),
            palette_id=kw.pop("palette_id", hourone_id("palette", "brand")),
            character_id=kw.pop("character_id", hourone_id("character", "presenter")),
            voice_id=kw.pop("voice_id", hourone_id("voice", "en-us-1")),
            **kw,
        )
        self.videos[video.id] = video
        return video

    def _build_catalog(self, catalog: str, count: int) -> None:
        a = self._add
        a("welcome", "Welcome to the team", "ready", "moov_end.mp4", file_name="welcome_to_the_team.mp4")
        a("q3-a", "Quarterly update", "published", "faststart.mp4", file_name="quarterly_update.mp4")
        a("q3-b", "Quarterly update", "ready", "moov_end.mp4", file_name="quarterly_update.mp4")
        a("unnamed", None, "ready", "faststart.mp4")
        a("launch", "Product launch (4K master)", "published", "big.mp4", file_name="product_launch.mp4")
        a("onboarding", "Onboarding / part 2", "ready", "faststart.mp4", file_name="download")
        a("holiday", "Holiday greeting", "started", None, progress=3)
        a("pitch", "Sales pitch", "processing", None, progress=57)
        a("training", "Training module", "failed", None, progress=-1)
        a("story", "Customer story", "not_started", None, progress=0)
        a("investor", "Investor update", "stopped", None, progress=40)
        a("old", "Old draft", "cancelled", None, progress=12)
        a("pending-url", "Ready, link pending", "ready", "faststart.mp4", has_url=False)
        if catalog == "big":
            cycle = ("moov_end.mp4", "faststart.mp4")
            for i in range(count):
                status = ("ready", "published", "processing", "ready", "failed")[i % 5]
                sample = cycle[i % 2] if status in RENDERED else None
                a(
                    f"synthetic-{i}",
                    f"Synthetic render {i:04d}",
                    status,
                    sample,
                    file_name=f"render_{i:04d}.mp4",
                )
        elif catalog != "small":
            raise ValueError(f"unknown catalog {catalog!r} (small | big)")

    def _get(self, video_id: str) -> HourOneVideo:
        with self._lock:
            video = self.videos.get(video_id)
            if video is None:
                raise KeyError(video_id)
            return replace(video)

    # ---- auth -------------------------------------------------------------------------------------------
    def require_key(self, req: Request) -> None:
        key = req.headers.get("api-key")
        with self._lock:
            expected, workspace, team = self.api_key, self.workspace_id, self.team_id
        if not key:
            raise detail(403, "Not authenticated")
        if not hmac.compare_digest(key.encode(), expected.encode()):
            raise detail(401, "Invalid API key")
        wanted = req.headers.get("workspace-id")
        if wanted is not None and wanted != workspace:
            raise detail(403, f"No access to workspace {wanted}")
        wanted = req.headers.get("team-id")
        if wanted is not None and wanted != team:
            raise detail(403, f"No access to team {wanted}")

    def _video_param(self, req: Request) -> HourOneVideo:
        video_id = req.params["video_id"]
        if not _valid_uuid(video_id):
            raise fastapi_422(["path", "video_id"], "value is not a valid uuid", "type_error.uuid")
        try:
            return self._get(video_id)
        except KeyError:
            raise detail(404, "Video not found") from None

    # ---- signed URLs ------------------------------------------------------------------------------------
    def _sign(self, path: str, expires: int, generation: int) -> str:
        message = f"{path}\n{expires}\n{generation}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def download_url(self, v: HourOneVideo) -> str:
        with self._lock:
            self.urls_issued += 1
            expires = math.ceil(time.time() + self.url_lifetime)  # at least the full lifetime
            generation, style = self.url_generation, self.url_style
        path = v.storage_path
        signature = self._sign(path, expires, generation)
        if style == "opaque":
            token = base64.urlsafe_b64encode(f"{expires}:{signature}".encode()).decode().rstrip("=")
            query = urlencode({"sig": token})
        else:
            query = urlencode({"Expires": expires, "Signature": signature})
        return f"{self.storage.url}{path}?{query}"

    def _check_signature(self, req: Request) -> None:
        """403 unless the query is a valid, unexpired signature of this path."""
        path = req.path_only
        expires_s, signature = req.arg("Expires"), req.arg("Signature")
        token = req.arg("sig")
        if token is not None:
            try:
                raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
                expires_s, _, signature = raw.partition(":")
            except (ValueError, binascii.Error, UnicodeDecodeError):
                expires_s = signature = None
        if not expires_s or not signature or not expires_s.isdigit():
            raise self._denied("Query-string authentication requires the Signature and Expires parameters")
        with self._lock:
            generation = self.url_generation
        if not hmac.compare_digest(self._sign(path, int(expires_s), generation), signature):
            raise self._denied(
                "The request signature we calculated does not match the signature you provided"
            )
        if time.time() >= int(expires_s):
            raise self._denied("Request has expired")

    @staticmethod
    def _denied(message: str) -> HttpError:
        return HttpError(403, message, body=_xml_error("AccessDenied", message))

    # ---- API handlers -----------------------------------------------------------------------------------
    def _item(self, v: HourOneVideo, *, listing: bool) -> JSON:
        item: JSON = {
            "id": v.id,
            "name": v.name,
            "status": v.status,
            "progress": v.progress,
            "req_id": v.req_id,
            "draft_id": v.draft_id,
            "source_draft_id": v.source_draft_id,
            "recipe_id": v.recipe_id,
        }
        if listing:
            item["template_id"] = v.template_id
        item.update(
            {
                "palette_id": v.palette_id,
                "character_id": v.character_id,
                "voice_id": v.voice_id,
            }
        )
        if listing:
            item["scenes"] = self._scenes(v) if v.path is not None else None
        item["video_player_url"] = f"{self.url}/player/{v.id}"
        item["download_url"] = self.download_url(v) if v.downloadable else None
        if listing:
            item["correlation_id"] = hourone_id("correlation", v.req_id)
        return item

    @staticmethod
    def _duration(v: HourOneVideo) -> float:
        if v.path is None:
            return 0.0
        info = media.probe(v.path)
        return round(float(info.get("format", {}).get("duration", 0) or 0), 3)

    def _scenes(self, v: HourOneVideo) -> list[JSON]:
        total = self._duration(v)
        parts = 3
        out = []
        for index in range(parts):
            start = round(total * index / parts, 3)
            end = round(total * (index + 1) / parts, 3)
            out.append({"scene_index": index, "start_time": start, "duration": round(end - start, 3)})
        return out

    def list_videos(self, req: Request) -> None:
        self.require_key(req)
        with self._lock:
            videos = [replace(v) for v in self.videos.values()]
        req.send_json(200, [self._item(v, listing=True) for v in videos])

    def get_video(self, req: Request) -> None:
        self.require_key(req)
        req.send_json(200, self._item(self._video_param(req), listing=False))

    def get_metadata(self, req: Request) -> None:
        self.require_key(req)
        v = self._video_param(req)
        if v.status not in RENDERED or v.path is None:
            raise detail(404, "Video metadata not available: the video is not rendered")
        scenes = [
            {"scene_index": s["scene_index"], "start_time": s["start_time"], "duration": s["duration"]}
            for s in self._scenes(v)
        ]
        req.send_json(200, {"duration": self._duration(v), "scenes_metadata": scenes})

    def create_video(self, req: Request) -> None:
        self.require_key(req)
        body = req.json()
        if not isinstance(body, dict):
            raise fastapi_422(["body"], "value is not a valid dict", "type_error.dict")
        for key in (
            "name",
            "source_draft_id",
            "recipe_id",
            "folder_id",
            "palette_id",
            "character_id",
            "voice_id",
        ):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise fastapi_422(["body", key], "str type expected", "type_error.str")
        if not body.get("source_draft_id") and not body.get("recipe_id"):
            raise fastapi_422(
                ["body", "source_draft_id"], "either source_draft_id or recipe_id is required", "value_error"
            )
        with self._lock:
            self.created += 1
            key = f"created-{self.created}-{secrets.token_hex(4)}"
            v = self._add(
                key,
                body.get("name"),
                "not_started",
                None,
                progress=0,
                source_draft_id=body.get("source_draft_id"),
                recipe_id=body.get("recipe_id"),
                palette_id=body.get("palette_id") or hourone_id("palette", "brand"),
                character_id=body.get("character_id") or hourone_id("character", "presenter"),
                voice_id=body.get("voice_id") or hourone_id("voice", "en-us-1"),
            )
            item = self._item(replace(v), listing=False)
        req.send_json(200, item)

    def player(self, req: Request) -> None:
        v = self._video_param(req)
        title = (v.name or v.id).replace("&", "&amp;").replace("<", "&lt;")
        req.send_bytes(200, f"<!doctype html><title>{title}</title><p>{title}</p>\n".encode(), "text/html")

    # ---- storage ----------------------------------------------------------------------------------------
    def download(self, req: Request) -> None:
        with self._lock:
            self._storage_requests += 1
            if req.headers.get("api-key") is not None:
                self._storage_with_api_key += 1
            if req.headers.get("workspace-id") is not None or req.headers.get("team-id") is not None:
                self._storage_with_other_credentials += 1
        self._check_signature(req)
        try:
            v = self._get(req.params["id"])
        except KeyError:
            raise HttpError(404, body=_xml_error("NoSuchKey", "The specified key does not exist.")) from None
        if (
            not v.downloadable
            or v.path is None
            or str(v.render) != req.params["render"]
            or req.params["file"] != v.file_name
        ):
            raise HttpError(404, body=_xml_error("NoSuchKey", "The specified key does not exist."))
        serve_file(
            req,
            v.path,
            etag=media.sha256_of(v.path)[:32],
            content_type=v.content_type,
            last_modified=_T0 + v.render,
        )

    def storage_counters(self) -> JSON:
        with self._lock:
            return {
                "url": self.storage.url,
                "requests": self._storage_requests,
                "requests_with_api_key": self._storage_with_api_key,
                "requests_with_workspace_or_team": self._storage_with_other_credentials,
            }

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        names = {404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
        return {"detail": names.get(status, message)}

    def config(self) -> JSON:
        with self._lock:
            return {
                "type": "hourone",
                "base_url": f"{self.url}/api/v1",
                "api_key": self.api_key,
                "workspace_id": self.workspace_id,
            }

    def _catalog_entry(self, v: HourOneVideo) -> JSON:
        entry: JSON = {
            "id": v.id,
            "name": v.name,
            "status": v.status,
            "progress": v.progress,
            "draft_id": v.draft_id,
            "visible": v.downloadable,
            "has_download_url": v.downloadable,
            "file_name": v.file_name,
            "content_type": v.content_type,
            "video_player_url": f"{self.url}/player/{v.id}",
        }
        if v.path is not None:
            entry.update(
                {
                    "size": v.path.stat().st_size,
                    "sha256": media.sha256_of(v.path),
                    "path_on_disk": str(v.path),
                    "duration": self._duration(v),
                }
            )
        return entry

    def catalog(self) -> JSON:
        with self._lock:
            videos = [replace(v) for v in self.videos.values()]
        return {
            "provider": "hourone",
            "videos": [self._catalog_entry(v) for v in videos],
            "storage": self.storage_counters(),
        }

    def settings(self) -> JSON:
        with self._lock:
            return {
                "api_key": self.api_key,
                "workspace_id": self.workspace_id,
                "team_id": self.team_id,
                "url_lifetime": self.url_lifetime,
                "url_style": self.url_style,
                "expire_urls": False,
                "url_generation": self.url_generation,
                "urls_issued": self.urls_issued,
            }

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        known = {"api_key", "workspace_id", "team_id", "url_lifetime", "url_style", "expire_urls"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        if "url_style" in changes and changes["url_style"] not in URL_STYLES:
            raise ValueError(f"url_style must be one of {', '.join(URL_STYLES)}")
        if "url_lifetime" in changes and int(changes["url_lifetime"]) < 1:
            raise ValueError("url_lifetime must be >= 1 (seconds)")
        with self._lock:
            for key in ("api_key", "workspace_id", "team_id"):
                if key in changes:
                    setattr(self, key, str(changes[key]))
            if "url_lifetime" in changes:
                self.url_lifetime = int(changes["url_lifetime"])
            if "url_style" in changes:
                self.url_style = str(changes["url_style"])
            if changes.get("expire_urls"):
                self.url_generation += 1
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        if action == "expire_urls":
            with self._lock:
                self.url_generation += 1
                return {"url_generation": self.url_generation}
        known = ("set_status", "rename", "delete", "change_content")
        if action not in known:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(known)}, expire_urls")
        raw_id = change.get("video_id")
        if not isinstance(raw_id, str):
            raise ValueError(f"{action} needs a video_id")
        with self._lock:
            if raw_id not in self.videos:
                raise KeyError(raw_id)
            v = self.videos[raw_id]
            if action == "delete":
                del self.videos[raw_id]
                return {"deleted": raw_id}
            if action == "rename":
                name = change.get("name")
                v.name = None if name is None else str(name)
            elif action == "set_status":
                status = str(change.get("status"))
                if status not in STATUSES:
                    raise ValueError(f"status must be one of {', '.join(STATUSES)}")
                v.status = status
                default = 100 if status in RENDERED else (-1 if status == "failed" else v.progress)
                v.progress = int(change.get("progress", default))
                if status in RENDERED:
                    v.has_url = True
                    if v.path is None:
                        v.path = self.samples["faststart.mp4"]
            elif action == "change_content":
                if v.path is None:
                    raise ValueError("the video was never rendered")
                self._mutations += 1
                tag = f"{v.id}:{self._mutations}"
                v.path = media.variant(
                    v.path, tag, out_dir=self.work_dir, extra_bytes=int(change.get("extra_bytes", 0))
                )
                v.render += 1
            return self._catalog_entry(replace(v))


def create_site(options: EmulatorOptions) -> HourOneSite:
    """The registry entry point."""
    return HourOneSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        catalog=options.catalog,
        videos=options.videos_per_project if options.videos_per_project is not None else 200,
        seed=options.seed,
        verbose=options.verbose,
    )
