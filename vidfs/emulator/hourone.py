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
``scale``. ``--set hourone.url_lifetime=2`` on the command line. Mutations: ``set_status`` {video_id, status,
progress?}, ``rename`` {video_id, name (null: no name)}, ``delete`` {video_id}, ``change_content``
{video_id, extra_bytes?} (a re-render: new bytes under a new storage path), ``expire_urls``.

Scale: ``scale = N`` appends N rendered videos ("Render 000042", ``ready``) to the one flat list, as a
render account grows; the list has no pagination, so ``GET /videos`` answers all of them at once (its items
are made per request: each carries a freshly signed ``download_url``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from vidfs.emulator import credentials
from vidfs.emulator.content import Blob, FileBlob, SyntheticBlob, facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries
from vidfs.emulator.hourone_model import (
    CHARACTER,
    PALETTE,
    RENDERED,
    STATUSES,
    TEMPLATE,
    VOICE,
    HourOneVideo,
    detail,
    fastapi_422,
    hourone_id,
    scenes_of,
    valid_uuid,
    xml_error,
)
from vidfs.emulator.knobs import Knob, knob, one_of, positive, trigger
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, serve_file
from vidfs.emulator.vendor import Subsite, VendorSite, or_default, route

__all__ = ["DEFAULT_API_KEY", "STATUSES", "HourOneSite"]

DEFAULT_API_KEY = "hourone-demo-api-key"
WORKSPACE_ID = "ws-7d1c2b4e"
TEAM_ID = "team-31f0a9c2"
DEFAULT_URL_LIFETIME = 3600
URL_STYLES = ("expires", "opaque")
_TEXT_FIELDS = ("name", "source_draft_id", "recipe_id", "folder_id", "palette_id", "character_id", "voice_id")
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4")
_URL_SLOT = f"\x00url-{secrets.token_hex(8)}\x00"  # where a signed URL goes in the prepared list
_T0 = 1_700_000_000  # used only for Last-Modified of storage answers: the API itself has no times


class HourOneSite(VendorSite):
    """The Hour One API origin; `storage` is the download origin (a subsite)."""

    NAME = "hourone"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "api_key": knob("api_key"),
        "workspace_id": knob("workspace_id"),
        "team_id": knob("team_id"),
        "url_lifetime": knob("url_lifetime", positive),
        "url_style": knob("url_style", one_of(*URL_STYLES)),
        "expire_urls": trigger("mutate_expire_urls"),
    }

    def build(self, options: EmulatorOptions) -> None:
        self._secret = secrets.token_bytes(32)
        self.api_key = DEFAULT_API_KEY
        self.workspace_id = WORKSPACE_ID
        self.team_id = TEAM_ID
        self.url_lifetime = DEFAULT_URL_LIFETIME
        self.url_style = "expires"
        self.url_generation = 0
        self.urls_issued = 0
        self.created = 0
        self._storage_requests = 0
        self._storage_with_api_key = 0
        self._storage_with_other_credentials = 0
        self.videos: dict[str, HourOneVideo] = self.table()
        # Its own fault switchboard: rules posted to the API site are copied to it (each rule picks its origin
        # by path), so a rule's `count` is spent per origin.
        self.storage = Subsite(
            self,
            "hourone-storage",
            error_body=lambda status, message: xml_error(
                "NoSuchKey" if status == 404 else "InternalError", message
            ),
            catalog=self.storage_counters,
            share_faults=False,
        )
        self._build_catalog(options.catalog, or_default(options.videos_per_project, 200))

    # ---- catalog ----------------------------------------------------------------------------------------
    def _add(
        self, key: str, name: str | None, status: str, sample: str | Blob | None, **kw: Any
    ) -> HourOneVideo:
        progress = kw.pop("progress", 100 if status in RENDERED else 0)
        file_name = kw.pop("file_name", "video.mp4")
        draft = hourone_id("draft", key)
        video = HourOneVideo(
            id=hourone_id("video", key),
            name=name,
            status=status,
            progress=progress,
            blob=FileBlob(self.samples[sample]) if isinstance(sample, str) else sample,
            file_name=file_name,
            req_id=hourone_id("req", key),
            draft_id=draft,
            source_draft_id=kw.pop("source_draft_id", hourone_id("source", key)),
            recipe_id=kw.pop("recipe_id", None),
            template_id=kw.pop("template_id", TEMPLATE),
            palette_id=kw.pop("palette_id", PALETTE),
            character_id=kw.pop("character_id", CHARACTER),
            voice_id=kw.pop("voice_id", VOICE),
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

    def add_scaled(self, index: int) -> None:
        blob = SyntheticBlob.of(f"hourone/scale/{index}")
        self._add(f"scale-{index}", f"Render {index:06d}", "ready", blob, file_name=f"render_{index:06d}.mp4")

    def remove_scaled(self, index: int) -> None:
        self.videos.pop(hourone_id("video", f"scale-{index}"), None)

    # ---- auth -------------------------------------------------------------------------------------------
    def require_key(self, req: Request) -> None:
        key = req.headers.get("api-key")
        with self._lock:
            expected, workspace, team = self.api_key, self.workspace_id, self.team_id
        if not key:
            raise detail(403, "Not authenticated")
        if not credentials.same(key, expected):
            raise detail(401, "Invalid API key")
        wanted = req.headers.get("workspace-id")
        if wanted is not None and wanted != workspace:
            raise detail(403, f"No access to workspace {wanted}")
        wanted = req.headers.get("team-id")
        if wanted is not None and wanted != team:
            raise detail(403, f"No access to team {wanted}")

    def _video_param(self, req: Request) -> HourOneVideo:
        video_id = req.params["video_id"]
        if not valid_uuid(video_id):
            raise fastapi_422(["path", "video_id"], "value is not a valid uuid", "type_error.uuid")
        try:
            return self.copy(self.videos, video_id)
        except KeyError:
            raise detail(404, "Video not found") from None

    # ---- signed URLs ------------------------------------------------------------------------------------
    def _sign(self, path: str, expires: int, generation: int) -> str:
        message = f"{path}\n{expires}\n{generation}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def download_url(self, v: HourOneVideo) -> str:
        return self._url_signer(1)(v)

    def _url_signer(self, count: int) -> Callable[[HourOneVideo], str]:
        """Signs `count` download URLs with the current lifetime, style and generation."""
        with self._lock:
            self.urls_issued += count
            expires = math.ceil(time.time() + self.url_lifetime)  # at least the full lifetime
            generation, style = self.url_generation, self.url_style
        origin = self.storage.url

        def sign(v: HourOneVideo) -> str:
            path = v.storage_path
            signature = self._sign(path, expires, generation)
            if style == "opaque":
                token = base64.urlsafe_b64encode(f"{expires}:{signature}".encode()).decode().rstrip("=")
                query = f"sig={token}"  # URL-safe Base64: nothing to escape
            else:
                query = f"Expires={expires}&Signature={signature}"
            return f"{origin}{path}?{query}"

        return sign

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
        return HttpError(403, message, body=xml_error("AccessDenied", message))

    # ---- API handlers -----------------------------------------------------------------------------------
    def _item(self, v: HourOneVideo, *, listing: bool, signed: bool = True) -> JSON:
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
        item["palette_id"] = v.palette_id
        item["character_id"] = v.character_id
        item["voice_id"] = v.voice_id
        if listing:
            item["scenes"] = self._scenes(v) if v.blob is not None else None
        item["video_player_url"] = f"{self.url}/player/{v.id}"
        item["download_url"] = self.download_url(v) if v.downloadable and signed else None
        if listing:
            item["correlation_id"] = hourone_id("correlation", v.req_id)
        return item

    @staticmethod
    def _duration(v: HourOneVideo) -> float:
        if v.blob is None:
            return 0.0
        info = v.blob.probe()
        return round(float(info.get("format", {}).get("duration", 0) or 0), 3)

    def _scenes(self, v: HourOneVideo) -> list[JSON]:
        return scenes_of(self._duration(v))

    @route("GET", r"/api/v1/videos")
    def list_videos(self, req: Request) -> None:
        self.require_key(req)
        with self._lock:
            segments, signed = self.prepared("list-json", self._list_segments)
        sign = self._url_signer(len(signed))
        urls = [json.dumps(sign(v)) for v in signed]
        text = "".join(part for pair in zip(segments, [*urls, ""], strict=True) for part in pair)
        req.send_bytes(200, text.encode(), "application/json")

    def _list_segments(self) -> tuple[list[str], list[HourOneVideo]]:
        """The list as JSON text cut where each signed ``download_url`` goes, and the videos those URLs are
        for: a list of 100,000 videos is encoded once per catalog change, its URLs signed per call."""
        items, signed = [], []
        for v in self.videos.values():
            item = self._item(v, listing=True, signed=False)
            if v.downloadable:
                item["download_url"] = _URL_SLOT
                signed.append(v)
            items.append(item)
        return json.dumps(items, ensure_ascii=False).split(json.dumps(_URL_SLOT)), signed

    @route("GET", r"/api/v1/videos/(?P<video_id>[^/]+)")
    def get_video(self, req: Request) -> None:
        self.require_key(req)
        req.send_json(200, self._item(self._video_param(req), listing=False))

    @route("GET", r"/api/v1/videos/(?P<video_id>[^/]+)/metadata")
    def get_metadata(self, req: Request) -> None:
        self.require_key(req)
        v = self._video_param(req)
        if v.status not in RENDERED or v.blob is None:
            raise detail(404, "Video metadata not available: the video is not rendered")
        req.send_json(200, {"duration": self._duration(v), "scenes_metadata": self._scenes(v)})

    @route("POST", r"/api/v1/videos")
    def create_video(self, req: Request) -> None:
        self.require_key(req)
        body = req.json()
        if not isinstance(body, dict):
            raise fastapi_422(["body"], "value is not a valid dict", "type_error.dict")
        for key in _TEXT_FIELDS:
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
                palette_id=body.get("palette_id") or PALETTE,
                character_id=body.get("character_id") or CHARACTER,
                voice_id=body.get("voice_id") or VOICE,
            )
            item = self._item(replace(v), listing=False)
        req.send_json(200, item)

    @route("GET", r"/player/(?P<video_id>[^/]+)")
    def player(self, req: Request) -> None:
        v = self._video_param(req)
        title = (v.name or v.id).replace("&", "&amp;").replace("<", "&lt;")
        req.send_bytes(200, f"<!doctype html><title>{title}</title><p>{title}</p>\n".encode(), "text/html")

    # ---- storage ----------------------------------------------------------------------------------------
    @route(("GET", "HEAD"), r"/storage/videos/(?P<id>[^/]+)/r(?P<render>\d+)/(?P<file>[^/]+)", on="storage")
    def download(self, req: Request) -> None:
        with self._lock:
            self._storage_requests += 1
            if req.headers.get("api-key") is not None:
                self._storage_with_api_key += 1
            if req.headers.get("workspace-id") is not None or req.headers.get("team-id") is not None:
                self._storage_with_other_credentials += 1
        self._check_signature(req)
        try:
            v = self.copy(self.videos, req.params["id"])
        except KeyError:
            raise HttpError(404, body=xml_error("NoSuchKey", "The specified key does not exist.")) from None
        if (
            not v.downloadable
            or v.blob is None
            or str(v.render) != req.params["render"]
            or req.params["file"] != v.file_name
        ):
            raise HttpError(404, body=xml_error("NoSuchKey", "The specified key does not exist."))
        serve_file(
            req,
            v.blob,
            etag=v.blob.sha256[:32],
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
        return {"type": "hourone", "base_url": f"{self.url}/api/v1", **self.values("api_key", "workspace_id")}

    def _catalog_entry(self, v: HourOneVideo, compact: bool = False) -> JSON:
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
        if v.blob is not None:
            entry.update(facts(v.blob, compact=compact))
            entry["duration"] = self._duration(v)
        return entry

    def catalog_json(self, compact: bool) -> JSON:
        with self._lock:
            videos = [replace(v) for v in self.videos.values()]
        return {
            "provider": "hourone",
            "videos": [self._catalog_entry(v, compact) for v in videos],
            "storage": self.storage_counters(),
        }

    def status(self) -> JSON:
        with self._lock:
            return {"url_generation": self.url_generation, "urls_issued": self.urls_issued}

    # ---- mutations --------------------------------------------------------------------------------------
    def mutate_expire_urls(self, change: Mapping[str, Any] | None = None) -> JSON:
        with self._lock:
            self.url_generation += 1
            return {"url_generation": self.url_generation}

    def _target(self, change: Mapping[str, Any]) -> HourOneVideo:
        raw_id = change.get("video_id")
        if not isinstance(raw_id, str):
            raise ValueError(f"{change.get('action')} needs a video_id")
        return self.videos[raw_id]  # KeyError → 404

    def mutate_delete(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            v = self._target(change)
            del self.videos[v.id]
            return {"deleted": v.id}

    def mutate_rename(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            v = self._target(change)
            name = change.get("name")
            v.name = None if name is None else str(name)
            return self._catalog_entry(replace(v))

    def mutate_set_status(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            v = self._target(change)
            status = str(change.get("status"))
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}")
            v.status = status
            default = 100 if status in RENDERED else (-1 if status == "failed" else v.progress)
            v.progress = int(change.get("progress", default))
            if status in RENDERED:
                v.has_url = True
                if v.blob is None:
                    v.blob = FileBlob(self.samples["faststart.mp4"])
            return self._catalog_entry(replace(v))

    def mutate_change_content(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            v = self._target(change)
            if v.blob is None:
                raise ValueError("the video was never rendered")
            v.blob = self.changed_blob(v.blob, v.id, int(change.get("extra_bytes", 0)))
            v.render += 1
            return self._catalog_entry(replace(v))


def create_site(options: EmulatorOptions) -> HourOneSite:
    return HourOneSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """One flat directory; the API has no timestamps (mtime = first seen by the mount: not checked here)."""
    videos = [v for v in catalog["videos"] if v["visible"]]
    names = name_entries([(v["id"], v["name"] or v["id"], False, v["content_type"]) for v in videos])
    return {name: expect(v, None, v["id"]) for v, name in zip(videos, names, strict=True)}


def _mutation(action: str, remote_id: str) -> JSON:
    return (
        {"action": "expire_urls"} if action == "expire_tokens" else {"action": action, "video_id": remote_id}
    )


CONTRACT = Contract(
    expected=expected_layout,
    short_lived_args=("--set", "hourone.url_lifetime=2"),
    login_path=r"^/api/v1/videos/[0-9a-f-]{36}(\?|$)",
    storage_path=r"^/storage/videos/",
    secret_key="api_key",
    mutation=_mutation,
)
