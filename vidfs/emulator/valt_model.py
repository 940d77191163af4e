"""The VALT emulator's catalog: rooms, records and their videos, how they are made and scaled, and a record's
JSON (the site is `vidfs.emulator.valt`).

VALT 5 records have integer ids and list their videos as ids; VALT 6 records have UUIDs and list video
objects. A video's download file is named after its record, camera and recording time (`display_name`).
"""

from __future__ import annotations

import calendar
import functools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vidfs.emulator.content import Blob, FileBlob, SyntheticBlob
from vidfs.emulator.request import JSON, HttpError
from vidfs.emulator.vendor import stable_uuid

SCALE_ROOM_SIZE = 100
SCALE_FIRST_ID = 1_000_000
_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}

_NS = uuid.UUID("1c0e7a52-6a43-4f3e-9d1b-2b8f2f8c4d11")
_T0 = calendar.timegm((2025, 5, 6, 10, 18, 0, 0, 0, 0))
DAY = _DAY = 86400
_SCALE_CAMERAS = {"21": "Room cam"}

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
    return stable_uuid(_NS, f"valt/{key}")


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


@dataclass(slots=True)
class ValtVideo:
    id: int | str
    blob: Blob
    camera_id: str

    @property
    def ext(self) -> str:
        return self.blob.suffix or ".mp4"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES.get(self.ext, "application/octet-stream")


@dataclass(slots=True)
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


_NO_MARKERS: list[JSON] = []


def _duration(record: Record) -> int:
    """Seconds, of the record's longest video."""
    return round(max(float(v.blob.probe()["format"]["duration"]) for v in record.videos))


def summary_json(r: Record) -> JSON:
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


@functools.lru_cache(maxsize=4096)
def _scale_room(number: int) -> Room:
    """The room of scaled records (one object per room, shared by its hundred records)."""
    return Room(1000 + number, f"Scale room {number + 1:04d}")


class ValtCatalog:
    """The records. A mixin of the site, which provides the table and the samples. Scaled records: one video
    each, a hundred to a room, a minute apart (see the site's essay)."""

    records: dict[str, Record]
    samples: dict[str, Path]

    def _build_catalog(self) -> None:
        exam = Room(3, "Exam Room 3")
        sim = Room(valt_uuid("room/sim-a"), "Sim Lab A")
        interview = Room(valt_uuid("room/interview-2"), "Interview Room 2")
        s = {name: FileBlob(path) for name, path in self.samples.items()}
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
            record.duration = _duration(record)

    def add_scaled(self, index: int) -> None:
        room = index // SCALE_ROOM_SIZE
        rid = SCALE_FIRST_ID + index
        video = ValtVideo(SCALE_FIRST_ID + index, SyntheticBlob.of(f"valt/{rid}"), "21")
        scale_room = _scale_room(room)
        created = _T0 + 10 * _DAY + index * 60
        record = Record(
            rid,
            f"Session {index:06d}",
            scale_room,
            created,
            (2, "Dr. Rivera"),
            _SCALE_CAMERAS,
            [video],
            _NO_MARKERS,
        )
        record.duration = _duration(record)
        self.records[str(rid)] = record

    def remove_scaled(self, index: int) -> None:
        self.records.pop(str(SCALE_FIRST_ID + index), None)
