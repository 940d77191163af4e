"""The Pixop emulator's catalog objects and the JSON documents made of them (`vidfs.emulator.pixop` is the
site): ids, dates, projects, videos, users, teams, list items and video details, shaped as the Pixop API
reference shows them.

Kept apart from the site so the site reads as routes and rules. The quirks live here: list items say
``filename`` where details say ``upload.fileName``; the POST token answer spells
``apiRequestSignatureSethod``; dates are ``"YYYY-MM-DD hh:mm:ss"`` (UTC); sizes are absent from the details
of a video that does not report them.
"""

from __future__ import annotations

import calendar
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidfs.emulator.content import Blob
from vidfs.emulator.vendor import stable_uuid

JSON = dict[str, Any]

_NS = uuid.UUID("6f1f3c1e-9b5a-4a53-8f7e-5c0d1f2e3a4b")
T0 = calendar.timegm((2021, 6, 1, 9, 0, 0, 0, 0, 0))
DAY = 86400
_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}
CONTAINER_NAMES = {".mp4": "MPEG-4 Part 14 (MP4)", ".mov": "QuickTime File Format (MOV)"}
_PRESET_SIZES = {"hd_1080p": (1920, 1080), "uhd_4k": (3840, 2160)}
_CHROMA = {"yuv": "4:2:0", "bits": 8}
_QUALITY: JSON = {
    "metrics": [
        {"name": "sharpness", "sampleMean": 0.61, "subjectiveLabel": "good", "subjectiveScore": 3.9},
        {"name": "noise", "sampleMean": 0.12, "subjectiveLabel": "excellent", "subjectiveScore": 4.6},
    ],
    "overallSubjectiveScore": 4.25,
}


def pixop_id(kind: str, key: str) -> str:
    """Deterministic id (UUID5) of a catalog object."""
    return stable_uuid(_NS, f"pixop/{kind}/{key}")


USER_ID = pixop_id("user", "demo")
TEAM_ID = pixop_id("team", "demo")
OTHER_TEAM_ID = pixop_id("team", "other")


def fmt_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


@dataclass
class Project:
    id: str
    name: str
    team_id: str
    created: int
    updated: int


@dataclass(slots=True)
class PixopVideo:
    id: str
    project_id: str
    name: str
    file_name: str
    kind: str  # original | processed
    blob: Blob
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
        return Path(self.file_name).suffix.lower() or self.blob.suffix

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


def user_json(email: str, *, typo: bool = False) -> JSON:
    created = fmt_time(T0 - 30 * DAY)
    return {
        "id": USER_ID,
        "name": "Demo User",
        "email": email,
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


def team_json(team_id: str) -> JSON:
    created = fmt_time(T0 - 30 * DAY)
    name = "Demo Team" if team_id == TEAM_ID else "Other Team"
    return {"id": team_id, "name": name, "dateCreated": created, "timeLastUpdated": created}


def project_item(origin: str, p: Project) -> JSON:
    return {
        "_links": {"self": {"href": f"{origin}/videos/v1/project/{p.id}"}},
        "id": p.id,
        "name": p.name,
        "dateCreated": fmt_time(p.created),
        "timeLastUpdated": fmt_time(p.updated),
    }


def project_json(p: Project) -> JSON:
    """``GET /videos/v1/project/{id}``."""
    dates = {"dateCreated": fmt_time(p.created), "timeLastUpdated": fmt_time(p.updated)}
    return {"project": {"id": p.id, "name": p.name, "teamId": p.team_id, **dates}}


def progress_json(v: PixopVideo, which: str) -> JSON:
    """``check-process-video-progress`` (`which` = processing) or ``check-ingest-video-progress``."""
    updated = fmt_time(v.updated)
    state: JSON
    if which == "processing":
        processed = v.kind == "processed"
        state = {
            "updatedAt": updated,
            "processingStatus": v.processing_status if processed else "DONE",
            "processingProgressPercent": v.processing_progress if processed else 100.0,
        }
    else:
        state = {
            "updatedAt": updated,
            "ingestionStatus": "DONE" if v.upload_finished else "INITIAL",
            "videoMetadataAvailable": v.upload_finished,
        }
    return {"videoId": v.id, "projectId": v.project_id, f"{which}State": state}


def list_item(origin: str, v: PixopVideo) -> JSON:
    item: JSON = {"_links": {"self": {"href": f"{origin}/videos/v1/video/{v.id}"}}, "id": v.id}
    if v.parent_id:
        item["parentId"] = v.parent_id
    item["projectId"] = v.project_id
    item["name"] = v.name
    item["filename"] = v.file_name
    item["dateCreated"] = fmt_time(v.created)
    item["timeLastUpdated"] = fmt_time(v.updated)
    return item


def metadata_json(v: PixopVideo) -> JSON:
    info = v.blob.probe()
    fmt = info.get("format", {})
    vs: dict[str, Any] = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), {})
    num, _, den = str(vs.get("avg_frame_rate", "0/1")).partition("/")
    fps = round(float(num) / float(den or 1), 3) if float(den or 1) else 0.0
    duration = float(fmt.get("duration", vs.get("duration", 0)) or 0)
    stream_seconds = float(vs.get("duration", duration) or duration)
    progressive = {"scanningType": "progressive", "interlacedFieldOrder": None}
    meta: JSON = {
        "containerName": fmt.get("format_name"),
        "longContainerName": fmt.get("format_long_name"),
        "codecName": vs.get("codec_name"),
        "longCodecName": vs.get("codec_long_name"),
        "pixelFormat": {"name": vs.get("pix_fmt"), "chromaSubsampling": dict(_CHROMA)},
        "frameWidth": vs.get("width"),
        "frameHeight": vs.get("height"),
        "scanning": {"metadata": dict(progressive), "heuristics": dict(progressive)},
        "averageFramerate": fps,
        "durationInMillis": round(duration * 1000),
        "totalFrames": int(vs.get("nb_frames") or round(duration * fps)),
    }
    if v.report_size:
        meta["size"] = v.blob.size
        meta["videoStreamSize"] = int(float(vs.get("bit_rate") or 0) * stream_seconds / 8)
    return meta


def _upload(v: PixopVideo, updated: str) -> JSON:
    upload: JSON = {
        "uploadState": {"updatedAt": updated, "uploadStatus": "DONE" if v.upload_finished else "IN_PROGRESS"},
        "hasFinishedUploading": v.upload_finished,
        "fileName": v.file_name,
    }
    if v.upload_finished and v.report_size:
        upload["fileSize"] = v.blob.size
    upload["fileType"] = v.content_type
    upload["fileContainerName"] = CONTAINER_NAMES.get(v.suffix, "unknown")
    return upload


def _ingestion(v: PixopVideo, updated: str) -> JSON:
    done = v.upload_finished
    state = {
        "updatedAt": updated,
        "ingestionStatus": "DONE" if done else "INITIAL",
        "videoMetadataAvailable": done,
        "videoMetadataCommitted": done,
        "processingProgressPercent": 100.0 if done else 0.0,
    }
    if not done:
        return {"ingestionState": state}
    return {"ingestionState": state, "metadata": metadata_json(v), "qualityAssessment": _QUALITY}


def _processing(v: PixopVideo, updated: str) -> JSON:
    width, height = _PRESET_SIZES.get(v.preset, (1920, 1080))
    target = {
        "preset": {"name": v.preset},
        "container": {"name": v.suffix.lstrip(".") or "mp4", "properties": {}},
        "codec": {"name": "h264", "properties": {"profile": "high"}},
        "pixelFormat": {"name": "yuv420p", "chromaSubsampling": dict(_CHROMA)},
        "bitrate": 12_000_000,
        "frameWidth": width,
        "frameHeight": height,
        "videoFilters": [
            {"name": "pabsr1", "properties": {"clarityBoost": "low"}},
            {"name": "denoise", "properties": {}},
        ],
    }
    state = {
        "updatedAt": updated,
        "processingStatus": v.processing_status,
        "processingProgressPercent": v.processing_progress,
    }
    return {
        "processingState": state,
        "processingParameters": {"sourceVideo": {"startPositionMilliseconds": 0}, "targetVideo": target},
    }


def detail_json(v: PixopVideo) -> JSON:
    """``GET /videos/v1/video/{id}``."""
    updated = fmt_time(v.updated)
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
    video["upload"] = _upload(v, updated)
    video["ingestion"] = _ingestion(v, updated)
    if v.kind == "processed":
        video["processing"] = _processing(v, updated)
    video["attributes"] = {}
    video["dateCreated"] = fmt_time(v.created)
    video["timeLastUpdated"] = updated
    return {"video": video}
