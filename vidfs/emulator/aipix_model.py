"""The AIPIX emulator's catalog: cameras and archives, how they are made and scaled, and the helpers of its
Laravel answers (the site is `vidfs.emulator.aipix`).

Archives that share a name share one stored file (``stored``: storage key → (blob, Last-Modified)), and
``is_file_exists`` is whether that key is stored. Footage times are fixed; creation times are relative to
the emulator's start. The scaled archives (``scale = N``) all belong to one camera ("Scale camera", id
900, stream ``high``), 4-minute files every 5 minutes of footage, each created 5 s after the one before
it (20 days before the start for the first), so the newest come first in the list and archives added
at runtime land on its first page. Their list items carry no size, as AIPIX's never do: a mount HEADs each.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vidfs.emulator.content import Blob, FileBlob, SyntheticBlob
from vidfs.emulator.request import JSON, HttpError

CLIENTS = ("ios-cctv", "android-cctv", "thick-legal", "web")
SEED_ADDRESS = "City , st. Street 1"
SCALE_CAMERA = 900
SCALE_FIRST_ID = 1_000_000

_FOOTAGE_T0 = calendar.timegm((2024, 5, 13, 8, 0, 0, 0, 0, 0))
_MIN = 60
_HOUR = 3600
_DAY = 86400

USER: JSON = {
    "id": 5,
    "login": "user@mail.com",
    "name": "user",
    "parent_id": 3,
    "created_at": "2023-02-03T08:29:07.000000Z",
    "updated_at": "2023-02-06T09:19:35.000000Z",
    "access_token_id": None,
    "can_update_password": True,
}


def fmt_date(epoch: float) -> str:
    """``from``/``to``: "YYYY-MM-DD HH:MM:SS", UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def fmt_iso(epoch: float) -> str:
    """``created_at``/``updated_at``: Laravel's ISO form with microseconds and Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(epoch))


def parse_date(text: str) -> float | None:
    """What Laravel's ``date`` rule would accept, in the forms a client plausibly sends."""
    value = text.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def laravel_422(errors: Mapping[str, list[str]]) -> HttpError:
    messages = [m for field_messages in errors.values() for m in field_messages]
    message = messages[0] if messages else "The given data was invalid."
    if len(messages) > 1:
        more = len(messages) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return HttpError(
        422, message, body={"message": message, "errors": {k: list(v) for k, v in errors.items()}}
    )


def unauthenticated() -> HttpError:
    return HttpError(401, "Unauthenticated.", body={"message": "Unauthenticated."})


@dataclass
class Camera:
    id: int
    name: str  # the VMS's internal name
    pretty_name: str | None = None
    pretty_key: bool = True  # False: the answer has no pretty_name key at all
    exists: bool = True  # False: GET /cameras/{id} answers 404


@dataclass(slots=True)
class Archive:
    id: int
    name: str
    camera_id: int
    stream_id: int
    stream_type: str
    start: int  # footage `from`
    end: int  # footage `to`
    created: int
    updated: int
    blob: Blob
    exists: bool = True  # at build time only: afterwards the stored files say (see `AipixSite.stored`)
    url_form: str = "base"  # base: url is the storage base; file: url is the file itself
    has_sound: bool = False
    width: int | None = None
    height: int | None = None
    kind: str = "mp4"


# The small catalog after the seed's items: (id, name, camera, stream, footage start after _FOOTAGE_T0,
# minutes, more fields of the archive).
_SMALL: tuple[tuple[int, str, int, str, int, int, dict[str, Any]], ...] = (
    (6417, f"{SEED_ADDRESS}, file.20240513-070000-071000.mp4", 1, "high", -_HOUR, 10,
     {"sample": "moov_end.mp4", "exists": False, "created_ago": 5 * _HOUR}),
    (6418, "Parking / Gate B, file.20240513-060000-060500.mp4", 2, "low", -2 * _HOUR, 5,
     {"sample": "faststart.mp4", "exists": False, "created_ago": 4 * _HOUR}),
    (6419, "Old archive, file.20240401-100000-101000.mp4", 3, "high", -42 * _DAY, 10,
     {"sample": "moov_end.mp4", "created_ago": 45 * _DAY}),
    (6420, "Parking / Gate B, file.20240513-081500-083900.mp4", 2, "high", 15 * _MIN, 24,
     {"sample": "big.mp4", "has_sound": True, "width": 1280, "height": 720, "created_ago": 20 * _MIN}),
    (6421, "Москва, ул. Тверская 7, file.20240513-090000-091000.mp4", 3, "high", _HOUR, 10,
     {"sample": "moov_end.mp4", "width": 640, "height": 360, "created_ago": 25 * _MIN}),
    (6422, "Back yard, file.20240513-093000-093500.mp4", 4, "low", 90 * _MIN, 5,
     {"sample": "faststart.mp4", "url_form": "file", "created_ago": 15 * _MIN}),
    (6423, "Old warehouse, file.20240513-100000-101000.mp4", 5, "high", 2 * _HOUR, 10,
     {"sample": "moov_end.mp4", "created_ago": 10 * _MIN}),
    (6424, "Lobby, file.20240513-110000-110500.mp4", 6, "high", 3 * _HOUR, 5,
     {"sample": "faststart.mp4", "has_sound": True, "created_ago": 8 * _MIN}),
    (6425, "Lobby, file.20240513-110000-110500 (2).mp4", 7, "high", 3 * _HOUR, 5,
     {"sample": "moov_end.mp4", "created_ago": 7 * _MIN}),
    (6426, f"{SEED_ADDRESS}, file.20240513-101500-102000", 1, "low", 135 * _MIN, 5,
     {"sample": "faststart.mp4", "created_ago": 5 * _MIN}),
)  # fmt: skip


class AipixCatalog:
    """Cameras, archives and the stored files. A mixin of the site, which provides the tables and samples."""

    cameras: dict[int, Camera]
    archives: dict[int, Archive]
    stored: dict[str, tuple[Blob, int]]
    samples: dict[str, Path]
    started: int

    def _camera(
        self, cid: int, name: str, pretty: str | None, *, pretty_key: bool = True, exists: bool = True
    ) -> None:
        self.cameras[cid] = Camera(cid, name, pretty, pretty_key, exists)

    def _archive(
        self, aid: int, name: str, camera_id: int, stream: str, start: int, minutes: int, **kw: Any
    ) -> Archive:
        created = kw.pop("created", None)
        if created is None:
            created = self.started - kw.pop("created_ago", 30 * _MIN)
        sample = kw.pop("sample")
        kw["blob"] = FileBlob(self.samples[sample]) if isinstance(sample, str) else sample
        stream_id = kw.pop("stream_id", camera_id * 10 + (1 if stream == "high" else 2))
        archive = Archive(
            id=aid,
            name=name,
            camera_id=camera_id,
            stream_id=stream_id,
            stream_type=stream,
            start=start,
            end=start + minutes * _MIN,
            created=created,
            updated=created + 5 * _MIN,
            **kw,
        )
        self.archives[aid] = archive
        return archive

    def _build_catalog(self, catalog: str, big_archives: int) -> None:
        self._build_seed()
        self._build_small()
        if catalog == "big":
            self._build_big(big_archives)
        elif catalog != "small":
            raise ValueError(f"unknown catalog {catalog!r} (small | big)")
        self._share_files()

    def _build_seed(self) -> None:
        """Cameras, and the seed's items: two pairs of archives sharing a name (same camera, stream, span)."""
        seed_addr = SEED_ADDRESS
        self._camera(1, "cam_0001", seed_addr)
        self._camera(2, "cam_0002", "Parking / Gate B")
        self._camera(3, "cam_0003", None)
        self._camera(4, "cam_0004", None, pretty_key=False)
        self._camera(5, "cam_0005", "Old warehouse", exists=False)
        self._camera(6, "cam_0006", "Lobby")
        self._camera(7, "cam_0007", "Lobby")

        t_0924 = calendar.timegm((2019, 9, 24, 13, 3, 16, 0, 0, 0))
        t_0920 = calendar.timegm((2019, 9, 20, 16, 13, 20, 0, 0, 0))
        n_0924 = f"{seed_addr}, file.20190924-130316-131213.mp4"
        n_0920 = f"{seed_addr}, file.20190920-161320-162227.mp4"
        for aid in (6414, 6416):
            a = self._archive(aid, n_0924, 1, "low", t_0924, 0, stream_id=2, sample="faststart.mp4")
            a.end = calendar.timegm((2019, 9, 24, 13, 12, 13, 0, 0, 0))
            a.created, a.updated = self.started - 40 * _MIN, self.started - 35 * _MIN
        for aid in (6413, 6415):
            a = self._archive(aid, n_0920, 1, "high", t_0920, 0, stream_id=1, sample="moov_end.mp4")
            a.end = calendar.timegm((2019, 9, 20, 16, 22, 27, 0, 0, 0))
            a.created, a.updated = self.started - 50 * _MIN, self.started - 45 * _MIN

    def _build_small(self) -> None:
        """Gone files, an old archive, a big one, Cyrillic, a file URL, twin cameras, no extension."""
        for aid, name, camera, stream, footage, minutes, extra in _SMALL:
            self._archive(aid, name, camera, stream, _FOOTAGE_T0 + footage, minutes, **extra)

    def _build_big(self, big_archives: int) -> None:
        addresses = [
            "Main entrance", None, "Loading dock, north", "Server room", None,
            "Corridor 2, west wing", "Roof", None, "Car park, level -1", "Reception",
        ]  # fmt: skip
        for k, pretty in enumerate(addresses):
            cid = 101 + k
            self._camera(cid, f"cam_{cid:04d}", pretty, pretty_key=k % 2 == 0)
        cycle = ("moov_end.mp4", "faststart.mp4")
        for i in range(big_archives):
            cid = 101 + i % len(addresses)
            start = _FOOTAGE_T0 + 86400 + i * 5 * _MIN
            label = addresses[i % len(addresses)] or f"Camera {cid}"
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(start))
            end = time.strftime("%H%M%S", time.gmtime(start + 4 * _MIN))
            self._archive(
                20000 + i, f"{label}, file.{stamp}-{end}.mp4", cid, "high" if i % 3 else "low", start, 4,
                sample=cycle[i % 2], created_ago=_MIN + (i * 7) % (170 * _MIN),
            )  # fmt: skip
        for i in range(40):
            cid = 101 + i % len(addresses)
            start = _FOOTAGE_T0 + 2 * 86400 + i * 5 * _MIN
            self._archive(
                30000 + i, f"Expired {i:02d}, file.mp4", cid, "high", start, 4,
                sample="faststart.mp4", exists=False, created_ago=4 * _HOUR + i * _MIN,
            )  # fmt: skip

    def _share_files(self) -> None:
        """Archives that share a name share the stored file: it is the sample of the lowest id."""
        by_key: dict[str, Blob] = {}
        for archive in sorted(self.archives.values(), key=lambda a: a.id):
            archive.blob = by_key.setdefault(self.storage_key(archive), archive.blob)
            if archive.exists:
                self.stored.setdefault(self.storage_key(archive), (archive.blob, archive.created))

    @staticmethod
    def storage_key(archive: Archive) -> str:
        return archive.name if archive.url_form == "base" else f"by-id/{archive.id}.mp4"

    def add_scaled(self, index: int) -> None:
        if SCALE_CAMERA not in self.cameras:
            self._camera(SCALE_CAMERA, f"cam_{SCALE_CAMERA:04d}", "Scale camera")
        start = _FOOTAGE_T0 + 3 * _DAY + index * 5 * _MIN
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(start))
        end = time.strftime("%H%M%S", time.gmtime(start + 4 * _MIN))
        aid = SCALE_FIRST_ID + index
        archive = self._archive(
            aid, f"Scale camera, file.{stamp}-{end}.mp4", SCALE_CAMERA, "high", start, 4,
            sample=SyntheticBlob.of(f"aipix/{aid}"), created=self.started - 20 * _DAY + index * 5,
        )  # fmt: skip
        self.stored[self.storage_key(archive)] = (archive.blob, archive.created)

    def remove_scaled(self, index: int) -> None:
        archive = self.archives.pop(SCALE_FIRST_ID + index, None)
        if archive is not None:
            self.stored.pop(self.storage_key(archive), None)
        if index == 0:
            self.cameras.pop(SCALE_CAMERA, None)
