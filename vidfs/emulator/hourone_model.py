"""The Hour One emulator's videos, ids, statuses and error shapes (the site is `vidfs.emulator.hourone`).

Ids are UUIDs derived from a key (`hourone_id`); FastAPI's errors are ``{"detail": ...}`` (`detail`) or, for
a malformed request, a list of ``{loc, msg, type}`` (`fastapi_422`); the storage answers S3-like XML
(`xml_error`). Only ``ready`` and ``published`` videos are rendered (`RENDERED`).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from vidfs.emulator.content import Blob
from vidfs.emulator.request import JSON, HttpError
from vidfs.emulator.vendor import stable_uuid

STATUSES = ("started", "processing", "ready", "published", "failed", "not_started", "stopped", "cancelled")
RENDERED = frozenset({"ready", "published"})

_NS = uuid.UUID("0d6f4a52-3c1b-4f7e-9a0e-2b8c5d7e9f11")


def hourone_id(kind: str, key: str) -> str:
    return stable_uuid(_NS, f"hourone/{kind}/{key}")


TEMPLATE = hourone_id("template", "corporate")
PALETTE = hourone_id("palette", "brand")
CHARACTER = hourone_id("character", "presenter")
VOICE = hourone_id("voice", "en-us-1")


def fastapi_422(loc: list[Any], msg: str, type_: str) -> HttpError:
    return HttpError(422, msg, body={"detail": [{"loc": loc, "msg": msg, "type": type_}]})


def detail(status: int, message: str) -> HttpError:
    return HttpError(status, message, body={"detail": message})


def valid_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class HourOneVideo:
    id: str
    name: str | None
    status: str
    progress: int
    blob: Blob | None  # the rendered file (None: never rendered)
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
        return self.status in RENDERED and self.has_url and self.blob is not None

    @property
    def storage_path(self) -> str:
        return f"/storage/videos/{self.id}/r{self.render}/{quote(self.file_name)}"

    @property
    def content_type(self) -> str:
        return "video/quicktime" if self.file_name.lower().endswith(".mov") else "video/mp4"


@functools.lru_cache(maxsize=256)
def scenes_of(total: float, parts: int = 3) -> list[JSON]:
    """Three equal scenes: ``scene_index``, ``start_time``, ``duration`` (seconds, 3 decimals); shared, so
    never changed by a caller."""
    bounds = [round(total * index / parts, 3) for index in range(parts + 1)]
    return [
        {"scene_index": i, "start_time": bounds[i], "duration": round(bounds[i + 1] - bounds[i], 3)}
        for i in range(parts)
    ]


def xml_error(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
    )
