"""AIPIX VMS emulator: token login, the archive downloads list, cameras, and a storage origin.

API (the provider's ``base_url`` is ``<origin>/api/v1``):

``POST /api/v1/token``                 ``{"login","password"}`` (JSON or form) →
                                       ``{"user":{...},"access_token"}``.
                                       The token is an HS256 JWT (``exp = iat + token_lifetime``), bound to
                                       the ``X-UUID`` sent at login. Bad credentials: 422 with
                                       ``errors.login``; a new device beyond ``max_devices``: 419.
``GET /api/v1/downloads``              (also ``/api/v1/users/downloads``, as some versions) ``per_page``,
                                       ``page``, ``from``, ``to`` all required (422 with field messages
                                       otherwise); dates filter ``created_at``; newest first. Laravel
                                       pagination: ``links`` + ``meta`` (whose URLs say
                                       ``/api/v1/users/downloads?page=N``, as the seed does). ``per_page``
                                       is capped at ``max_per_page``. Items as in the seed; ``url`` is the
                                       storage base ending in ``/`` (one item gives its full file URL).
``GET /api/v1/cameras/{id}``           ``{"data": {"id","name","pretty_name"?,...}}``; 404 for a deleted one.

Every API call needs ``Authorization: Bearer`` (401 ``{"message":"Unauthenticated."}`` without a valid one,
or when ``X-UUID`` is not the device the token was issued to), ``X-Client`` (one of ``ios-cctv``,
``android-cctv``, ``thick-legal``, ``web``) and ``X-UUID`` (422 when missing). Errors are Laravel's
``{"message", "errors"?}``.

Storage: a subsite (``aipix-storage``, another port) serves ``GET|HEAD /storage/<URL-encoded name>`` and
``/storage/by-id/<id>.mp4`` with Range/ETag, no credentials. Items that share a name share the stored file,
and ``is_file_exists`` says whether it is stored: a file gone answers 404 and turns every item naming it
false. With the setting ``storage_origin = "api"`` the item URLs point at ``/storage/`` on the API origin
instead (as in the seed, where both are ``127.0.0.1:8080``), and there the files need a valid Bearer token:
the contract suite uses it, with a token lifetime of seconds, so a long read must log in again.

Fault rules posted to the API's control URL cover the storage subsite too: both sites share one `Faults`
object (so ``count`` spans both and ``GET /_emulator/faults`` reports what fired on either), and the
framework merges the request logs (entries name their ``origin``).

Catalog (``small``): the seed's four items (ids 6413-6416: two pairs sharing a name) on camera 1, cameras
with and without ``pretty_name`` (null, or no key), one whose camera endpoint answers 404, two cameras both
called "Lobby", names with spaces, commas, a slash, Cyrillic and no extension, a 62 MB recording, two
archives whose file is gone, one created outside the 30-day window. Footage times (``from``/``to``) are
fixed; creation times are relative to the emulator's start (archives live about three hours).
``big`` adds ``videos_per_project`` (default 1000) synthetic archives over ten cameras, plus 40 gone ones.

Settings: ``token_lifetime`` (``--jwt-lifetime``), ``max_per_page`` (``--page-size``, default 100),
``login``, ``password``, ``max_devices`` (null: unlimited; 0: every login answers 419), ``storage_origin``
(``separate`` | ``api``), ``expire_all_tokens``. Mutations: ``expire_tokens``, ``delete_file`` {id} (its
stored file goes), ``clear_sessions`` (forget every device, expire every token), ``rename_camera``
{camera_id, pretty_name}, ``change_content`` {id, extra_bytes?} (new bytes and ETag under the same URL:
AIPIX never does it, the fault suite needs it). Every request is logged (``/_emulator/requests``), headers
included.
"""

from __future__ import annotations

import calendar
import hmac
import math
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from vidfs.emulator import jwt, media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

DEFAULT_LOGIN = "user@mail.com"
DEFAULT_PASSWORD = "aipix-demo-password"
DEFAULT_TOKEN_LIFETIME = 3600
DEFAULT_MAX_PER_PAGE = 100
DEFAULT_BIG_ARCHIVES = 1000
WINDOW = "30d"
WINDOW_SECONDS = 30 * 86400
CLIENTS = ("ios-cctv", "android-cctv", "thick-legal", "web")
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4")

_FOOTAGE_T0 = calendar.timegm((2024, 5, 13, 8, 0, 0, 0, 0, 0))
_MIN = 60
_HOUR = 3600

USER: JSON = {
    "id": 5,
    "login": DEFAULT_LOGIN,
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


@dataclass
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
    sample: str
    exists: bool = True  # at build time only: afterwards the stored files say (see `AipixSite.stored`)
    url_form: str = "base"  # base: url is the storage base; file: url is the file itself
    has_sound: bool = False
    width: int | None = None
    height: int | None = None
    kind: str = "mp4"


class StorageSite(Site):
    """The storage origin: files by URL-encoded name (or by id), no credentials."""

    def __init__(self, parent: AipixSite, *, host: str, seed: int, verbose: bool) -> None:
        super().__init__("aipix-storage", host=host, port=0, seed=seed, verbose=verbose)
        self.add_route(("GET", "HEAD"), r"/storage/by-id/(?P<id>\d+)\.mp4", parent.storage_by_id)
        self.add_route(("GET", "HEAD"), r"/storage/(?P<name>.+)", parent.storage_by_name)


class AipixSite(Site):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        max_per_page: int = DEFAULT_MAX_PER_PAGE,
        catalog: str = "small",
        big_archives: int = DEFAULT_BIG_ARCHIVES,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.samples = media.ensure_samples(SAMPLES_USED, media_dir)
        super().__init__("aipix", host=host, port=port, seed=seed, verbose=verbose)
        self._lock = threading.RLock()
        self.login = DEFAULT_LOGIN
        self.password = DEFAULT_PASSWORD
        self.token_lifetime = int(token_lifetime)
        self.max_per_page = int(max_per_page)
        self.max_devices: int | None = None
        self.storage_origin = "separate"
        self.token_generation = 0
        self.tokens_issued = 0
        self.devices: dict[str, float] = {}
        self._secret = secrets.token_bytes(32)
        self.started = int(time.time())
        self.cameras: dict[int, Camera] = {}
        self.archives: dict[int, Archive] = {}
        # The storage: key (the decoded path after /storage/) → (file on disk, Last-Modified). An archive's
        # `is_file_exists` is whether its key is stored: archives sharing a name share the file and its fate.
        self.stored: dict[str, tuple[Path, int]] = {}
        self._mutations = 0
        try:
            self.storage = StorageSite(self, host=host, seed=seed, verbose=verbose)
        except BaseException:
            super().close()
            raise
        # One vendor, one switchboard: the storage shares the API site's fault rules and their counters, so
        # a rule's `count` spans both origins and GET /_emulator/faults on the API site reports what fired.
        self.storage.faults = self.faults
        self.subsites.append(self.storage)
        try:
            self._build_catalog(catalog, big_archives)
        except BaseException:
            self.close()
            raise

        a = self.add_route
        a("POST", r"/api/v1/token", self.post_token)
        a("GET", r"/api/v1/(?:users/)?downloads", self.list_downloads)
        a("GET", r"/api/v1/cameras/(?P<id>[^/]+)", self.get_camera)
        a(("GET", "HEAD"), r"/storage/by-id/(?P<id>\d+)\.mp4", self.api_storage_by_id)
        a(("GET", "HEAD"), r"/storage/(?P<name>.+)", self.api_storage_by_name)

    # ---- catalog ----------------------------------------------------------------------------------------
    def _camera(
        self, cid: int, name: str, pretty: str | None, *, pretty_key: bool = True, exists: bool = True
    ) -> None:
        self.cameras[cid] = Camera(cid, name, pretty, pretty_key, exists)

    def _archive(
        self, aid: int, name: str, camera_id: int, stream: str, start: int, minutes: int, **kw: Any
    ) -> Archive:
        created_ago = kw.pop("created_ago", 30 * _MIN)
        created = self.started - created_ago
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
        seed_addr = "City , st. Street 1"
        self._camera(1, "cam_0001", seed_addr)
        self._camera(2, "cam_0002", "Parking / Gate B")
        self._camera(3, "cam_0003", None)
        self._camera(4, "cam_0004", None, pretty_key=False)
        self._camera(5, "cam_0005", "Old warehouse", exists=False)
        self._camera(6, "cam_0006", "Lobby")
        self._camera(7, "cam_0007", "Lobby")

        # The seed's items: two pairs of archives sharing a name (same camera, stream and interval).
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

        t = _FOOTAGE_T0
        self._archive(
            6417, f"{seed_addr}, file.20240513-070000-071000.mp4", 1, "high", t - _HOUR, 10,
            sample="moov_end.mp4", exists=False, created_ago=5 * _HOUR,
        )  # fmt: skip
        self._archive(
            6418, "Parking / Gate B, file.20240513-060000-060500.mp4", 2, "low", t - 2 * _HOUR, 5,
            sample="faststart.mp4", exists=False, created_ago=4 * _HOUR,
        )  # fmt: skip
        self._archive(
            6419, "Old archive, file.20240401-100000-101000.mp4", 3, "high", t - 42 * 86400, 10,
            sample="moov_end.mp4", created_ago=45 * 86400,
        )  # fmt: skip
        self._archive(
            6420, "Parking / Gate B, file.20240513-081500-083900.mp4", 2, "high", t + 15 * _MIN, 24,
            sample="big.mp4", has_sound=True, width=1280, height=720, created_ago=20 * _MIN,
        )  # fmt: skip
        self._archive(
            6421, "Москва, ул. Тверская 7, file.20240513-090000-091000.mp4", 3, "high", t + _HOUR, 10,
            sample="moov_end.mp4", width=640, height=360, created_ago=25 * _MIN,
        )  # fmt: skip
        self._archive(
            6422, "Back yard, file.20240513-093000-093500.mp4", 4, "low", t + 90 * _MIN, 5,
            sample="faststart.mp4", url_form="file", created_ago=15 * _MIN,
        )  # fmt: skip
        self._archive(
            6423, "Old warehouse, file.20240513-100000-101000.mp4", 5, "high", t + 2 * _HOUR, 10,
            sample="moov_end.mp4", created_ago=10 * _MIN,
        )  # fmt: skip
        self._archive(
            6424, "Lobby, file.20240513-110000-110500.mp4", 6, "high", t + 3 * _HOUR, 5,
            sample="faststart.mp4", has_sound=True, created_ago=8 * _MIN,
        )  # fmt: skip
        self._archive(
            6425, "Lobby, file.20240513-110000-110500 (2).mp4", 7, "high", t + 3 * _HOUR, 5,
            sample="moov_end.mp4", created_ago=7 * _MIN,
        )  # fmt: skip
        self._archive(
            6426, f"{seed_addr}, file.20240513-101500-102000", 1, "low", t + 135 * _MIN, 5,
            sample="faststart.mp4", created_ago=5 * _MIN,
        )  # fmt: skip

        if catalog == "big":
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
        elif catalog != "small":
            raise ValueError(f"unknown catalog {catalog!r} (small | big)")
        # Archives that share a name share the stored file: it is the sample of the lowest id.
        by_key: dict[str, str] = {}
        for archive in sorted(self.archives.values(), key=lambda a: a.id):
            archive.sample = by_key.setdefault(self.storage_key(archive), archive.sample)
            if archive.exists:
                self.stored.setdefault(
                    self.storage_key(archive), (self.samples[archive.sample], archive.created)
                )

    @staticmethod
    def storage_key(archive: Archive) -> str:
        return archive.name if archive.url_form == "base" else f"by-id/{archive.id}.mp4"

    def file_exists(self, archive: Archive) -> bool:
        with self._lock:
            return self.storage_key(archive) in self.stored

    # ---- auth -------------------------------------------------------------------------------------------
    def issue_token(self, device: str, client: str) -> str:
        now = int(time.time())
        with self._lock:
            self.tokens_issued += 1
            payload = {
                "iss": "aipix-emulator",
                "sub": str(USER["id"]),
                "uuid": device,
                "client": client,
                "iat": now,
                "exp": now + self.token_lifetime,
                "jti": f"{self.tokens_issued}-{secrets.token_hex(4)}",
                "gen": self.token_generation,
            }
        return jwt.encode(payload, self._secret)

    def verify_token(self, token: str) -> dict[str, Any]:
        payload = jwt.decode(token, self._secret)
        if payload is None:
            raise unauthenticated()
        with self._lock:
            generation = self.token_generation
        if time.time() >= float(payload.get("exp", 0)) or payload.get("gen") != generation:
            raise unauthenticated()
        return payload

    def _bearer(self, req: Request) -> dict[str, Any]:
        scheme, _, token = (req.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated()
        claims = self.verify_token(token.strip())
        device = req.headers.get("X-UUID")
        if device is not None and claims.get("uuid") and device.strip() != claims["uuid"]:
            raise unauthenticated()  # a token is good only for the device it was issued to
        return claims

    def require_api(self, req: Request) -> dict[str, Any]:
        """Bearer, then X-Client and X-UUID."""
        claims = self._bearer(req)
        errors: dict[str, list[str]] = {}
        client = (req.headers.get("X-Client") or "").strip()
        if not client:
            errors["X-Client"] = ["The X-Client header is required."]
        elif client not in CLIENTS:
            errors["X-Client"] = [f"The selected X-Client is invalid ({'|'.join(CLIENTS)})."]
        if not (req.headers.get("X-UUID") or "").strip():
            errors["X-UUID"] = ["The X-UUID header is required."]
        if errors:
            raise laravel_422(errors)
        return claims

    def _credentials(self, req: Request) -> dict[str, str]:
        content_type = (req.headers.get("Content-Type") or "").lower()
        if "application/x-www-form-urlencoded" in content_type:
            form = parse_qs(req.body().decode("utf-8", "replace"), keep_blank_values=True)
            return {k: v[0] for k, v in form.items() if v}
        body = req.json()
        if not isinstance(body, dict):
            raise laravel_422({"login": ["The login field is required."]})
        return {k: v for k, v in body.items() if isinstance(v, str)}

    def post_token(self, req: Request) -> None:
        body = self._credentials(req)
        errors: dict[str, list[str]] = {}
        for name in ("login", "password"):
            if not body.get(name):
                errors[name] = [f"The {name} field is required."]
        if errors:
            raise laravel_422(errors)
        with self._lock:
            ok = hmac.compare_digest(body["login"].encode(), self.login.encode()) and hmac.compare_digest(
                body["password"].encode(), self.password.encode()
            )
        if not ok:
            raise laravel_422({"login": ["These credentials do not match our records."]})
        device = (req.headers.get("X-UUID") or "").strip() or f"anonymous-{secrets.token_hex(8)}"
        client = (req.headers.get("X-Client") or "web").strip()
        with self._lock:
            limit = self.max_devices
            if limit is not None and (
                limit == 0 or (device not in self.devices and len(self.devices) >= limit)
            ):
                raise HttpError(419, "Session limit exceeded.", body={"message": "Session limit exceeded."})
            self.devices[device] = time.time()
        req.send_json(200, {"user": dict(USER), "access_token": self.issue_token(device, client)})

    # ---- downloads --------------------------------------------------------------------------------------
    def _query(self, req: Request) -> tuple[int, int, float, float]:
        errors: dict[str, list[str]] = {}
        numbers: dict[str, int] = {}
        for name, label in (("per_page", "per page"), ("page", "page")):
            raw = (req.arg(name) or "").strip()
            if not raw:
                errors[name] = [f"The {label} field is required."]
                continue
            try:
                value = int(raw)
            except ValueError:
                errors[name] = [f"The {label} must be an integer."]
                continue
            if value < 1:
                errors[name] = [f"The {label} must be at least 1."]
                continue
            numbers[name] = value
        dates: dict[str, float] = {}
        for name in ("from", "to"):
            raw = req.arg(name) or ""
            if not raw.strip():
                errors[name] = [f"The {name} field is required."]
                continue
            parsed = parse_date(raw)
            if parsed is None:
                errors[name] = [f"The {name} is not a valid date."]
                continue
            dates[name] = parsed
        if "from" in dates and "to" in dates and dates["to"] < dates["from"]:
            errors["to"] = ["The to must be a date after or equal to from."]
        if errors:
            raise laravel_422(errors)
        return numbers["per_page"], numbers["page"], dates["from"], dates["to"]

    def storage_base(self) -> str:
        with self._lock:
            api = self.storage_origin == "api"
        return f"{self.url if api else self.storage.url}/storage/"

    def item_json(self, a: Archive) -> JSON:
        base = self.storage_base()
        url = base if a.url_form == "base" else f"{base}by-id/{a.id}.mp4"
        return {
            "id": a.id,
            "attributes": [],
            "name": a.name,
            "type": a.kind,
            "url": url,
            "from": fmt_date(a.start),
            "to": fmt_date(a.end),
            "created_at": fmt_iso(a.created),
            "updated_at": fmt_iso(a.updated),
            "is_file_exists": self.file_exists(a),
            "stream": {
                "id": a.stream_id,
                "type": a.stream_type,
                "camera_id": a.camera_id,
                "is_preview_from_server": True,
                "is_archive_from_server": None,
                "status": None,
                "has_sound": a.has_sound,
                "width": a.width,
                "height": a.height,
            },
            "user_id": USER["id"],
            "user": dict(USER),
        }

    def _page_url(self, page: int) -> str:
        return f"{self.url}/api/v1/users/downloads?page={page}"

    def _meta_links(self, page: int, last: int) -> list[JSON]:
        if last < 14:
            shown: list[int | None] = list(range(1, last + 1))
        else:
            window = set(range(max(1, page - 3), min(last, page + 3) + 1)) | {1, 2, last - 1, last}
            shown = []
            for number in sorted(window):
                if shown and shown[-1] is not None and number - shown[-1] > 1:
                    shown.append(None)
                shown.append(number)
        links: list[JSON] = [
            {
                "url": self._page_url(page - 1) if page > 1 else None,
                "label": "pagination.previous",
                "active": False,
            }
        ]
        for n in shown:
            if n is None:
                links.append({"url": None, "label": "...", "active": False})
            else:
                links.append({"url": self._page_url(n), "label": str(n), "active": n == page})
        links.append(
            {
                "url": self._page_url(page + 1) if page < last else None,
                "label": "pagination.next",
                "active": False,
            }
        )
        return links

    def list_downloads(self, req: Request) -> None:
        self.require_api(req)
        per_page, page, start, end = self._query(req)
        with self._lock:
            per_page = min(per_page, self.max_per_page)
            selected = [replace(a) for a in self.archives.values() if start <= a.created <= end]
        selected.sort(key=lambda a: (-a.created, a.id))
        total = len(selected)
        last = max(1, math.ceil(total / per_page))
        chunk = selected[(page - 1) * per_page : page * per_page]
        first_index = (page - 1) * per_page + 1
        req.send_json(
            200,
            {
                "data": [self.item_json(a) for a in chunk],
                "links": {
                    "first": self._page_url(1),
                    "last": self._page_url(last),
                    "prev": self._page_url(page - 1) if page > 1 else None,
                    "next": self._page_url(page + 1) if page < last else None,
                },
                "meta": {
                    "current_page": page,
                    "from": first_index if chunk else None,
                    "last_page": last,
                    "links": self._meta_links(page, last),
                    "path": f"{self.url}/api/v1/users/downloads",
                    "per_page": per_page,
                    "to": first_index + len(chunk) - 1 if chunk else None,
                    "total": total,
                },
            },
        )

    # ---- cameras ----------------------------------------------------------------------------------------
    def get_camera(self, req: Request) -> None:
        self.require_api(req)
        try:
            cid = int(req.params["id"])
        except ValueError:
            raise HttpError(404, "Not found.", body={"message": "Not found."}) from None
        with self._lock:
            camera = self.cameras.get(cid)
            camera = replace(camera) if camera is not None else None
        if camera is None or not camera.exists:
            raise HttpError(404, "Not found.", body={"message": "Not found."})
        data: JSON = {"id": camera.id, "name": camera.name}
        if camera.pretty_key:
            data["pretty_name"] = camera.pretty_name
        data.update({"status": "active", "is_archive_enabled": True, "streams": [
            {"id": cid * 10 + 1, "type": "high"}, {"id": cid * 10 + 2, "type": "low"}
        ]})  # fmt: skip
        req.send_json(200, {"data": data})

    # ---- storage ----------------------------------------------------------------------------------------
    def _serve(self, req: Request, key: str | None) -> None:
        with self._lock:
            stored = self.stored.get(key) if key is not None else None
        if stored is None:
            raise HttpError(404, "Not found.", body={"message": "File not found."})
        path, last_modified = stored
        serve_file(
            req,
            path,
            etag=f'"{media.sha256_of(path)[:32]}"',
            content_type="video/mp4",
            last_modified=last_modified,
            filename_for_disposition=key.rpartition("/")[2] if key else None,
        )

    def storage_by_name(self, req: Request) -> None:
        self._serve(req, req.params["name"])

    def storage_by_id(self, req: Request) -> None:
        with self._lock:
            archive = self.archives.get(int(req.params["id"]))
        key = self.storage_key(archive) if archive is not None and archive.url_form == "file" else None
        self._serve(req, key)

    def _api_storage(self, req: Request) -> None:
        with self._lock:
            api = self.storage_origin == "api"
        if not api:
            raise HttpError(404, "Not found.", body={"message": "Not found."})
        self._bearer(req)

    def api_storage_by_name(self, req: Request) -> None:
        self._api_storage(req)
        self.storage_by_name(req)

    def api_storage_by_id(self, req: Request) -> None:
        self._api_storage(req)
        self.storage_by_id(req)

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def config(self) -> JSON:
        with self._lock:
            return {
                "type": "aipix",
                "base_url": f"{self.url}/api/v1",
                "login": self.login,
                "password": self.password,
                "window": WINDOW,
            }

    def camera_dir(self, cid: int) -> str:
        """The camera directory's raw name, as the provider makes it (before the naming rules)."""
        camera = self.cameras.get(cid)
        if camera is not None and camera.exists and camera.pretty_key and (camera.pretty_name or "").strip():
            return (camera.pretty_name or "").strip()
        return f"camera-{cid}"

    def catalog(self) -> JSON:
        now = time.time()
        base = self.storage_base()
        with self._lock:
            archives = [replace(a) for a in self.archives.values()]
            cameras = [replace(c) for c in self.cameras.values()]
            dirs = {c.id: self.camera_dir(c.id) for c in cameras}
        out = []
        for a in sorted(archives, key=lambda a: a.id):
            with self._lock:
                stored = self.stored.get(self.storage_key(a))
            path = stored[0] if stored is not None else self.samples[a.sample]
            sha = media.sha256_of(path)
            in_window = now - WINDOW_SECONDS <= a.created <= now + 86400
            out.append(
                {
                    "id": a.id,
                    "name": a.name,
                    "camera_id": a.camera_id,
                    "camera_dir": dirs.get(a.camera_id, f"camera-{a.camera_id}"),
                    "stream_id": a.stream_id,
                    "stream_type": a.stream_type,
                    "is_file_exists": stored is not None,
                    "in_window": in_window,
                    "visible": stored is not None and in_window,
                    "from": fmt_date(a.start),
                    "to": fmt_date(a.end),
                    "created_at": fmt_iso(a.created),
                    "mtime_epoch": a.end,
                    "size": path.stat().st_size,
                    "sha256": sha,
                    "etag": f'"{sha[:32]}"',
                    "path_on_disk": str(path),
                    "content_type": "video/mp4",
                    "has_sound": a.has_sound,
                    "width": a.width,
                    "height": a.height,
                    "url": base if a.url_form == "base" else f"{base}by-id/{a.id}.mp4",
                }
            )
        return {
            "provider": "aipix",
            "window": WINDOW,
            "storage_url": self.storage.url,
            "cameras": [
                {
                    "id": c.id,
                    "pretty_name": c.pretty_name if c.pretty_key else None,
                    "endpoint": c.exists,
                    "dir": dirs[c.id],
                }
                for c in sorted(cameras, key=lambda c: c.id)
            ],
            "archives": out,
        }

    def settings(self) -> JSON:
        with self._lock:
            return {
                "token_lifetime": self.token_lifetime,
                "max_per_page": self.max_per_page,
                "login": self.login,
                "password": self.password,
                "max_devices": self.max_devices,
                "storage_origin": self.storage_origin,
                "expire_all_tokens": False,
                "token_generation": self.token_generation,
                "tokens_issued": self.tokens_issued,
                "devices": sorted(self.devices),
            }

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        known = {
            "token_lifetime", "jwt_lifetime", "max_per_page", "login", "password", "max_devices",
            "storage_origin", "expire_all_tokens",
        }  # fmt: skip
        unknown = set(changes) - known
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        with self._lock:
            for key in ("token_lifetime", "jwt_lifetime"):
                if key in changes:
                    self.token_lifetime = int(changes[key])
            if "max_per_page" in changes:
                if int(changes["max_per_page"]) < 1:
                    raise ValueError("max_per_page must be >= 1")
                self.max_per_page = int(changes["max_per_page"])
            if "login" in changes:
                self.login = str(changes["login"])
            if "password" in changes:
                self.password = str(changes["password"])
            if "max_devices" in changes:
                value = changes["max_devices"]
                self.max_devices = None if value is None else max(0, int(value))
            if "storage_origin" in changes:
                if changes["storage_origin"] not in ("separate", "api"):
                    raise ValueError("storage_origin must be 'separate' or 'api'")
                self.storage_origin = str(changes["storage_origin"])
            if changes.get("expire_all_tokens"):
                self.token_generation += 1
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        action = change.get("action")
        if action == "change_content":
            return self._change_content(int(change["id"]), int(change.get("extra_bytes", 0)))
        with self._lock:
            if action == "expire_tokens":
                self.token_generation += 1
                return {"token_generation": self.token_generation}
            if action == "clear_sessions":
                cleared = len(self.devices)
                self.devices.clear()
                self.token_generation += 1
                return {"cleared": cleared}
            if action == "delete_file":
                archive = self.archives[int(change["id"])]
                key = self.storage_key(archive)
                self.stored.pop(key, None)  # every archive stored under this key loses its file
                self._touch(key)
                return self.item_json(archive)
            if action == "rename_camera":
                camera = self.cameras[int(change["camera_id"])]
                camera.pretty_name = change.get("pretty_name")
                camera.pretty_key = True
                return {"id": camera.id, "pretty_name": camera.pretty_name}
        raise ValueError(
            f"unknown action {action!r}; known: expire_tokens, clear_sessions, delete_file, change_content, "
            "rename_camera"
        )

    def _change_content(self, archive_id: int, extra_bytes: int) -> JSON:
        """New bytes (and ETag) under the same URL. Not something AIPIX does (an archive is made once): here
        so tests can check that a file changing under a reader gives ESTALE, never mixed bytes."""
        with self._lock:
            archive = self.archives[archive_id]
            key = self.storage_key(archive)
            current = self.stored[key][0]
            self._mutations += 1
            tag = f"{key}:{self._mutations}"
        new_path = media.variant(current, tag, out_dir=self.work_dir, extra_bytes=extra_bytes)
        media.sha256_of(new_path)
        with self._lock:
            self.stored[key] = (new_path, int(time.time()))
            self._touch(key)
            return self.item_json(archive)

    def _touch(self, key: str) -> None:
        """Every archive stored under `key` was updated now (caller holds the lock)."""
        for other in self.archives.values():
            if self.storage_key(other) == key:
                other.updated = max(other.updated + 1, int(time.time()))


def create_site(options: EmulatorOptions) -> AipixSite:
    """The registry entry point."""
    return AipixSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        token_lifetime=options.jwt_lifetime if options.jwt_lifetime is not None else DEFAULT_TOKEN_LIFETIME,
        max_per_page=options.page_size if options.page_size is not None else DEFAULT_MAX_PER_PAGE,
        catalog=options.catalog,
        big_archives=options.videos_per_project
        if options.videos_per_project is not None
        else DEFAULT_BIG_ARCHIVES,
        seed=options.seed,
        verbose=options.verbose,
    )
