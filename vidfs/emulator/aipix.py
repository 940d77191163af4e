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
(``separate`` | ``api``), ``expire_all_tokens``, ``scale`` (``aipix_model`` says where scaled archives
go). Mutations: ``expire_tokens``, ``delete_file`` {id} (its stored file goes), ``clear_sessions`` (forget
every device, expire every token), ``rename_camera`` {camera_id, pretty_name}, ``change_content`` {id,
extra_bytes?} (new bytes and ETag under the same URL: AIPIX never does it, the fault suite needs it).
Every request is logged (``/_emulator/requests``), headers included.

The list is prepared once per catalog change, newest first, with the creation times beside it: a page is
two binary searches (the ``from``/``to`` window) and a slice, whatever the archive's size.
"""

from __future__ import annotations

import bisect
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import parse_qs

from vidfs.emulator import credentials, jwt
from vidfs.emulator.aipix_model import (
    CLIENTS,
    USER,
    AipixCatalog,
    Archive,
    Camera,
    fmt_date,
    fmt_iso,
    laravel_422,
    parse_date,
    unauthenticated,
)
from vidfs.emulator.content import Blob, etag_of, facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries
from vidfs.emulator.knobs import Knob, as_int, at_least, knob, one_of, optional, positive, trigger
from vidfs.emulator.pages import laravel_page
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, serve_file
from vidfs.emulator.vendor import Subsite, VendorSite, group_by, or_default, route

__all__ = ["DEFAULT_LOGIN", "DEFAULT_PASSWORD", "AipixSite"]

DEFAULT_LOGIN = USER["login"]
DEFAULT_PASSWORD = "aipix-demo-password"
DEFAULT_TOKEN_LIFETIME = 3600
DEFAULT_MAX_PER_PAGE = 100
DEFAULT_BIG_ARCHIVES = 1000
WINDOW = "30d"
WINDOW_SECONDS = 30 * 86400
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4")


class AipixSite(AipixCatalog, VendorSite):
    NAME = "aipix"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "token_lifetime": knob("token_lifetime", as_int),
        "jwt_lifetime": knob("token_lifetime", as_int, shown=False),
        "max_per_page": knob("max_per_page", positive),
        "login": knob("login"),
        "password": knob("password"),
        "max_devices": knob("max_devices", optional(at_least(0))),
        "storage_origin": knob("storage_origin", one_of("separate", "api")),
        "expire_all_tokens": trigger("mutate_expire_tokens"),
    }

    def build(self, options: EmulatorOptions) -> None:
        self.login = DEFAULT_LOGIN
        self.password = DEFAULT_PASSWORD
        self.token_lifetime = or_default(options.jwt_lifetime, DEFAULT_TOKEN_LIFETIME)
        self.max_per_page = or_default(options.page_size, DEFAULT_MAX_PER_PAGE)
        self.max_devices: int | None = None
        self.storage_origin = "separate"
        self.mint = jwt.Mint()
        self.devices: dict[str, float] = {}
        self.started = int(time.time())
        self.cameras: dict[int, Camera] = self.table()
        self.archives: dict[int, Archive] = self.table()
        # The storage: key (the decoded path after /storage/) → (blob, Last-Modified). An archive's
        # `is_file_exists` is whether its key is stored: archives sharing a name share the file and its fate.
        self.stored: dict[str, tuple[Blob, int]] = {}
        # One vendor, one switchboard: the storage shares the API site's fault rules and their counters.
        self.storage = Subsite(self, "aipix-storage")
        self._build_catalog(options.catalog, or_default(options.videos_per_project, DEFAULT_BIG_ARCHIVES))

    def file_exists(self, archive: Archive) -> bool:
        with self._lock:
            return self.storage_key(archive) in self.stored

    # ---- auth -------------------------------------------------------------------------------------------
    def issue_token(self, device: str, client: str) -> str:
        claims = {"iss": "aipix-emulator", "sub": str(USER["id"]), "uuid": device, "client": client}
        with self._lock:
            lifetime = self.token_lifetime
        return self.mint.issue(claims, lifetime)

    def verify_token(self, token: str) -> dict[str, Any]:
        payload = self.mint.read(token)
        if payload is None or not self.mint.current(payload):
            raise unauthenticated()
        return payload

    def _bearer(self, req: Request) -> dict[str, Any]:
        token = credentials.bearer_token(req)
        if token is None:
            raise unauthenticated()
        claims = self.verify_token(token)
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

    @route("POST", r"/api/v1/token")
    def post_token(self, req: Request) -> None:
        body = self._credentials(req)
        errors: dict[str, list[str]] = {}
        for name in ("login", "password"):
            if not body.get(name):
                errors[name] = [f"The {name} field is required."]
        if errors:
            raise laravel_422(errors)
        with self._lock:
            ok = credentials.same(body["login"], self.login) and credentials.same(
                body["password"], self.password
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

    def _newest_first(self) -> tuple[list[Archive], list[int]]:
        """Every archive, newest first (ties by id), and their negated creation times (ascending)."""

        def build() -> tuple[list[Archive], list[int]]:
            ordered = sorted(self.archives.values(), key=lambda a: (-a.created, a.id))
            return ordered, [-a.created for a in ordered]

        return self.prepared("newest-first", build)

    @route("GET", r"/api/v1/(?:users/)?downloads")
    def list_downloads(self, req: Request) -> None:
        self.require_api(req)
        per_page, page, start, end = self._query(req)
        with self._lock:
            per_page = min(per_page, self.max_per_page)
            ordered, keys = self._newest_first()
            lo, hi = bisect.bisect_left(keys, -end), bisect.bisect_right(keys, -start)
            first = lo + (page - 1) * per_page
            chunk = [self.item_json(a) for a in ordered[first : min(hi, first + per_page)]]
        total = max(0, hi - lo)
        path = f"{self.url}/api/v1/users/downloads"
        req.send_json(200, laravel_page(chunk, total, page, per_page, path, self._page_url))

    # ---- cameras ----------------------------------------------------------------------------------------
    @route("GET", r"/api/v1/cameras/(?P<id>[^/]+)")
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
        blob, last_modified = stored
        serve_file(
            req,
            blob,
            etag=etag_of(blob),
            content_type="video/mp4",
            last_modified=last_modified,
            filename_for_disposition=key.rpartition("/")[2] if key else None,
        )

    @route(("GET", "HEAD"), r"/storage/by-id/(?P<id>\d+)\.mp4", on="storage")
    def storage_by_id(self, req: Request) -> None:
        with self._lock:
            archive = self.archives.get(int(req.params["id"]))
        key = self.storage_key(archive) if archive is not None and archive.url_form == "file" else None
        self._serve(req, key)

    @route(("GET", "HEAD"), r"/storage/(?P<name>.+)", on="storage")
    def storage_by_name(self, req: Request) -> None:
        self._serve(req, req.params["name"])

    def _api_storage(self, req: Request) -> None:
        with self._lock:
            api = self.storage_origin == "api"
        if not api:
            raise HttpError(404, "Not found.", body={"message": "Not found."})
        self._bearer(req)

    @route(("GET", "HEAD"), r"/storage/by-id/(?P<id>\d+)\.mp4")
    def api_storage_by_id(self, req: Request) -> None:
        self._api_storage(req)
        self.storage_by_id(req)

    @route(("GET", "HEAD"), r"/storage/(?P<name>.+)")
    def api_storage_by_name(self, req: Request) -> None:
        self._api_storage(req)
        self.storage_by_name(req)

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def config(self) -> JSON:
        account = self.values("login", "password")
        return {"type": "aipix", "base_url": f"{self.url}/api/v1", **account, "window": WINDOW}

    def camera_dir(self, cid: int) -> str:
        """The camera directory's raw name, as the provider makes it (before the naming rules)."""
        camera = self.cameras.get(cid)
        if camera is not None and camera.exists and camera.pretty_key and (camera.pretty_name or "").strip():
            return (camera.pretty_name or "").strip()
        return f"camera-{cid}"

    def catalog_json(self, compact: bool) -> JSON:
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
            blob = stored[0] if stored is not None else a.blob
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
                    **facts(blob, compact=compact),
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

    def status(self) -> JSON:
        with self._lock:
            devices = sorted(self.devices)
        return {
            "token_generation": self.mint.generation,
            "tokens_issued": self.mint.issued,
            "devices": devices,
        }

    # ---- mutations --------------------------------------------------------------------------------------
    def mutate_expire_tokens(self, change: Mapping[str, Any] | None = None) -> JSON:
        self.mint.expire_all()
        return {"token_generation": self.mint.generation}

    def mutate_clear_sessions(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            cleared = len(self.devices)
            self.devices.clear()
            self.mint.expire_all()
            return {"cleared": cleared}

    def mutate_delete_file(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            archive = self.archives[int(change["id"])]
            key = self.storage_key(archive)
            self.stored.pop(key, None)  # every archive stored under this key loses its file
            self._touch(key)
            return self.item_json(archive)

    def mutate_rename_camera(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            camera = self.cameras[int(change["camera_id"])]
            camera.pretty_name = change.get("pretty_name")
            camera.pretty_key = True
            return {"id": camera.id, "pretty_name": camera.pretty_name}

    def mutate_change_content(self, change: Mapping[str, Any]) -> JSON:
        return self._change_content(int(change["id"]), int(change.get("extra_bytes", 0)))

    def _change_content(self, archive_id: int, extra_bytes: int) -> JSON:
        """New bytes (and ETag) under the same URL. Not something AIPIX does (an archive is made once): here
        so tests can check that a file changing under a reader gives ESTALE, never mixed bytes."""
        with self._lock:
            archive = self.archives[archive_id]
            key = self.storage_key(archive)
            current = self.stored[key][0]
        blob = self.changed_blob(current, key, extra_bytes)
        with self._lock:
            self.stored[key] = (blob, int(time.time()))
            self._touch(key)
            return self.item_json(archive)

    def _touch(self, key: str) -> None:
        """Every archive stored under `key` was updated now (caller holds the lock)."""
        for other in self.archives.values():
            if self.storage_key(other) == key:
                other.updated = max(other.updated + 1, int(time.time()))


def create_site(options: EmulatorOptions) -> AipixSite:
    return AipixSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """camera (pretty_name, else camera-<id>) / stream type / archive name, each level named by vidfs's rules
    with the ids vidfs.providers.aipix uses (camera id, "<camera id>/<stream type>", archive id)."""
    archives = [a for a in catalog["archives"] if a["visible"]]
    cameras = {str(a["camera_id"]): a["camera_dir"] for a in archives}
    camera_names = name_entries([(cid, raw, True, None) for cid, raw in cameras.items()])
    by_stream = group_by(archives, lambda a: (str(a["camera_id"]), a["stream_type"]))
    out: dict[str, Expect] = {}
    for cid, camera_dir in zip(cameras, camera_names, strict=True):
        streams = sorted(stream for camera, stream in by_stream if camera == cid)
        stream_dirs = name_entries([(f"{cid}/{stream}", stream, True, None) for stream in streams])
        for stream, stream_dir in zip(streams, stream_dirs, strict=True):
            files = by_stream[(cid, stream)]
            names = name_entries([(str(a["id"]), a["name"], False, a["content_type"]) for a in files])
            for archive, name in zip(files, names, strict=True):
                out[f"{camera_dir}/{stream_dir}/{name}"] = expect(
                    archive, archive["mtime_epoch"], str(archive["id"])
                )
    return out


def _mutation(action: str, remote_id: str) -> JSON:
    # delete / change_content act on the stored file: every archive sharing its name sees it.
    if action in ("delete", "change_content"):
        return {"action": "delete_file" if action == "delete" else action, "id": int(remote_id)}
    return {"action": action}


CONTRACT = Contract(
    expected=expected_layout,
    # The archive URLs never expire: the token does (2 s), and the files are served from the API's own
    # origin behind it (as in the seed), so a long read must log in again.
    short_lived_args=("--jwt-lifetime", "2", "--set", "aipix.storage_origin=api"),
    login_path=r"^/api/v1/token(\?|$)",
    storage_path=r"^/storage/",
    mutation=_mutation,
)
