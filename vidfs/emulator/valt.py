"""IVS VALT REST API v3 emulator: login, records, record details, signed download URLs, distribution host.

Follows the IVS wiki page "API Download Recording Video" and the VALT facts in VENDORS.md:

- ``POST /api/v3/login`` JSON ``{"username","password"}`` → ``{"data":{"access_token":"<32 hex>"}}``;
  wrong credentials → 401 ``{"data":"Invalid username or password"}``.
- Every other call carries ``?access_token=``. Without one: 401 ``{"error":{"code":401,"message":
  "No API key provided"}}``; with an unknown or expired one: 401 ``{"error":{"code":401,"message":
  "Bad credentials."}}``.
- ``POST /api/v3/records`` with an optional JSON body ``{search, start_date, end_date ("MM-DD-YYYY"),
  filter, offset, limit}`` → ``{"data":{"records":[{id, name, created (epoch s), author{id,name},
  type:"record", duration, room{id,name} | null, cameras{"<camId>":"name"}}]}}``. No total, no next link.
- ``GET /api/v3/records/{id}`` → ``{"data":{...the record..., "videos":[...], "markers":[...]}}``.
- ``GET /api/v3/records/download/{recordID}/{videoID}`` → ``{"url": ...}`` (the wiki's sample) or
  ``{"data":{"url": ...}}`` (the wiki's table), per the ``download_shape`` setting (``bare`` | ``data``).
- Unknown record or video: 404 ``application/problem+json`` ``{"type":"https://tools.ietf.org/html/
  rfc2616#section-10","title":"An error occurred","status":404,"detail":"Not Found"}``.

Download URLs point at a second origin (a subsite on its own port, as VALT's ``:8000``):
``http://127.0.0.1:PORT/distribution/{rec}/{vid}_{rec}_1.mp4?filename=<display name>&access_token=<JWT>``.
The ``filename`` value is form-encoded and then percent-encoded again, exactly like the wiki's sample
(``Just%2Ba%2Broom%2B%2B...``). The JWT is HS256 (the real one is PS512) with the sample's claims ``iat,
nbf, exp, iss, sub, aud`` and ``exp - iat = url_lifetime`` (1800 s by default, like the sample). The
distribution host answers GET/HEAD with Range/ETag (``serve_file``) when the JWT is valid, 401 when it is
missing, forged or expired, and 404 for a deleted record. A request reaching it with an API token anywhere
(query or headers) is refused and counted (``api_token_leaks`` in the settings and catalog).

The catalog mixes VALT 5 records (integer ids, a record's ``videos`` a list of ids) and VALT 6 records (UUIDs,
``videos`` a list of objects with ``id``); ``videos_shape`` (``mixed`` | ``ids`` | ``objects``) forces one
form. Rooms and records have spaces in their names, two records of one room share a name, one record has no
room, one record's two videos share a display name, one record's URL has no ``filename`` parameter.

Settings (``/_emulator/settings``, or ``--set valt.KEY=VALUE``): ``username``, ``password``, ``scale``,
``token_lifetime`` (API token, seconds, default 3600), ``url_lifetime`` (download JWT, default 1800;
``--jwt-lifetime`` sets it too), ``download_shape``, ``videos_shape``, ``default_limit`` (records per page
when the request gives no limit; ``--page-size``), ``max_limit`` (silently caps ``limit``; null = no cap),
``expire_all_tokens`` (true → every API token and download URL issued so far is refused).
Mutations (``/_emulator/mutate``): ``delete`` {record_id[, video_id]} (the record, or one of its videos,
vanishes: 404 from the API and the distribution host), ``rename`` {record_id, name}, ``change_content``
{record_id, video_id[, extra_bytes]} (new bytes, new ETag), ``expire_tokens`` (every API token is refused
and the URL signing key changes, so every download URL issued so far answers 401).

Scale: ``scale = N`` adds N one-video records (VALT 5 style, integer ids, "Session 000042"), a hundred to a
room ("Scale room 0001"...), a minute apart: the newest first in ``POST /records`` (created desc), so
records added at runtime land on its first page. The list is sorted once per catalog change; a page is a
slice at ``offset`` (date filters are two binary searches; a ``search`` text is a scan, as on any server).

The distribution subsite shares the main site's fault switchboard: rules posted to the main control URL (or
set with ``site.faults`` in-process) apply to both origins, each rule choosing its requests by path
(``^/distribution/`` for the bytes), and ``fired`` counters show there. The main request log includes the
subsite's entries (``origin`` = ``valt-distribution``).
"""

from __future__ import annotations

import bisect
import json
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

from vidfs.emulator import credentials, jwt
from vidfs.emulator.content import facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries, split_ext
from vidfs.emulator.knobs import Knob, as_int, at_least, knob, one_of, optional, trigger
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, serve_file
from vidfs.emulator.valt_model import (
    BAD_CREDENTIALS,
    DAY,
    LOGIN_FAILED,
    NO_KEY,
    NOT_FOUND_BODY,
    Record,
    ValtCatalog,
    ValtVideo,
    api_error,
    parse_date,
    summary_json,
    valt_uuid,
)
from vidfs.emulator.vendor import Subsite, VendorSite, group_by, or_default, route

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_USERNAME", "ValtSite"]

DEFAULT_USERNAME = "api"
DEFAULT_PASSWORD = "valt-demo-password"
DEFAULT_TOKEN_LIFETIME = 3600
DEFAULT_URL_LIFETIME = 1800
DEFAULT_LIMIT = 50
CLIENT_PAGE_SIZE = 3  # the page_size the emulator's config() suggests, so pagination is always exercised
SCALED_PAGE_FROM = 1000  # from this scale on, config() leaves the provider's own page size

SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")


class ValtSite(ValtCatalog, VendorSite):
    """The VALT emulator: the API origin, plus the distribution host as a subsite."""

    NAME = "valt"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "username": knob("username"),
        "password": knob("password"),
        "token_lifetime": knob("token_lifetime", as_int),
        "url_lifetime": knob("url_lifetime", as_int),
        "download_shape": knob("download_shape", one_of("bare", "data")),
        "videos_shape": knob("videos_shape", one_of("mixed", "ids", "objects")),
        "default_limit": knob("default_limit", at_least(1)),
        "max_limit": knob("max_limit", optional(at_least(1))),
        "expire_all_tokens": trigger("_expire_everything"),
    }

    def build(self, options: EmulatorOptions) -> None:
        self.username = DEFAULT_USERNAME
        self.password = DEFAULT_PASSWORD
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self.url_lifetime = or_default(options.jwt_lifetime, DEFAULT_URL_LIFETIME)
        self.download_shape = "bare"
        self.videos_shape = "mixed"
        self.default_limit = or_default(options.page_size, DEFAULT_LIMIT)
        self.max_limit: int | None = None
        self.token_generation = 0
        self.tokens: dict[str, tuple[float, int]] = {}  # API token → (issued at, generation)
        self.tokens_issued = 0
        self.urls_issued = 0
        self.api_token_leaks = 0
        self._secret = secrets.token_bytes(32)
        self.records: dict[str, Record] = self.table()
        # One switchboard for both origins: rules posted to the parent's control URL apply here (each rule
        # filters by path), `count` is shared, and the parent's GET /_emulator/faults shows what fired here.
        self.distribution = Subsite(
            self, "valt-distribution", error_body=lambda status, message: _error(status, message)
        )
        self._build_catalog()

    def _record(self, record_id: str) -> Record | None:
        with self._lock:
            record = self.records.get(record_id)
            return replace(record, videos=list(record.videos)) if record else None

    # ---- auth -------------------------------------------------------------------------------------------
    @route("POST", r"/api/v3/login")
    def login(self, req: Request) -> None:
        body = req.json()
        if not isinstance(body, dict):
            body = {}
        with self._lock:
            ok = credentials.same(str(body.get("username", "")), self.username)
            ok &= credentials.same(str(body.get("password", "")), self.password)
            if not ok:
                raise HttpError(401, LOGIN_FAILED, body={"data": LOGIN_FAILED})
            token = secrets.token_hex(16)
            self.tokens[token] = (time.time(), self.token_generation)
            self.tokens_issued += 1
        req.send_json(200, {"data": {"access_token": token}})

    def require_token(self, req: Request) -> None:
        token = req.arg("access_token")
        if not token:
            raise api_error(NO_KEY)
        with self._lock:
            issued = self.tokens.get(token)
            valid = (
                issued is not None
                and issued[1] == self.token_generation
                and time.time() < issued[0] + self.token_lifetime
            )
        if not valid:
            raise api_error(BAD_CREDENTIALS)

    # ---- API --------------------------------------------------------------------------------------------
    @staticmethod
    def not_found(req: Request) -> None:
        body = json.dumps(NOT_FOUND_BODY).encode()
        req.send_bytes(404, body, "application/problem+json")

    def _newest_first(self) -> tuple[list[Record], list[int]]:
        """Every record, newest first, and their negated creation times (ascending), for binary searches."""

        def build() -> tuple[list[Record], list[int]]:
            ordered = sorted(self.records.values(), key=lambda r: (r.created, str(r.id)), reverse=True)
            return ordered, [-r.created for r in ordered]

        return self.prepared("newest-first", build)

    @route("POST", r"/api/v3/records")
    def list_records(self, req: Request) -> None:
        self.require_token(req)
        body = req.json()
        if not isinstance(body, dict):
            raise api_error("Invalid request body", 400)
        search = str(body.get("search") or "").strip().lower()
        start = parse_date(str(body["start_date"])).timestamp() if body.get("start_date") else None
        end = parse_date(str(body["end_date"])).timestamp() + DAY if body.get("end_date") else None
        with self._lock:
            default_limit, max_limit = self.default_limit, self.max_limit
        try:
            offset = max(0, int(body.get("offset") or 0))
            limit = int(body["limit"]) if body.get("limit") not in (None, "") else default_limit
        except (TypeError, ValueError):
            raise api_error("offset and limit must be integers", 400) from None
        if max_limit is not None:
            limit = min(limit, max_limit)
        limit = max(0, limit)
        with self._lock:
            ordered, keys = self._newest_first()
            lo = 0 if end is None else bisect.bisect_right(keys, -end)  # created < end
            hi = len(keys) if start is None else bisect.bisect_right(keys, -start)  # created >= start
            if search:
                found = [r for r in ordered[lo:hi] if search in r.name.lower()]
                page = found[offset : offset + limit]
            else:
                page = ordered[lo + offset : min(hi, lo + offset + limit)]
            records = [summary_json(r) for r in page]
        req.send_json(200, {"data": {"records": records}})

    def _videos_field(self, record: Record) -> list[Any]:
        with self._lock:
            shape = self.videos_shape
        as_objects = shape == "objects" or (shape == "mixed" and record.valt6)
        if not as_objects:
            return [v.id for v in record.videos]
        return [
            {"id": v.id, "camera": v.camera_id, "name": record.cameras.get(v.camera_id, "")}
            for v in record.videos
        ]

    @route("GET", r"/api/v3/records/(?P<rec>[^/]+)")
    def record_details(self, req: Request) -> None:
        self.require_token(req)
        record = self._record(req.params["rec"])
        if record is None:
            self.not_found(req)
            return
        data = summary_json(record)
        data["videos"] = self._videos_field(record)
        data["markers"] = list(record.markers)
        req.send_json(200, {"data": data})

    def issue_url(self, record: Record, video: ValtVideo) -> str:
        now = int(time.time())
        with self._lock:
            lifetime = self.url_lifetime
            self.urls_issued += 1
        dist = self.distribution
        claims = {"iat": now, "nbf": now, "exp": now + lifetime, "iss": dist.host, "sub": dist.host}
        claims["aud"] = dist.host
        token = jwt.encode(claims, self._secret, header={"kid": valt_uuid("signing-key")})
        path = f"/distribution/{quote(str(record.id), safe='')}/{quote(record.distribution_file(video))}"
        query = ""
        if record.filename_in_url:  # form-encoded, then percent-encoded again (as the wiki's sample)
            query = f"filename={quote(quote_plus(record.display_name(video)), safe='')}&"
        return f"{dist.url}{path}?{query}access_token={token}"

    @route("GET", r"/api/v3/records/download/(?P<rec>[^/]+)/(?P<vid>[^/]+)")
    def download(self, req: Request) -> None:
        self.require_token(req)
        record = self._record(req.params["rec"])
        video = record.video(req.params["vid"]) if record else None
        if record is None or video is None:
            self.not_found(req)
            return
        url = self.issue_url(record, video)
        with self._lock:
            shape = self.download_shape
        req.send_json(200, {"data": {"url": url}} if shape == "data" else {"url": url})

    # ---- distribution -------------------------------------------------------------------------------------
    def _check_jwt(self, token: str | None) -> None:
        def refuse(message: str) -> HttpError:
            return HttpError(401, message, body={"error": {"code": 401, "message": message}})

        if not token:
            raise refuse("Missing access token")
        claims = jwt.decode(token, self._secret)
        if claims is None:
            raise refuse("Invalid access token")
        now = time.time()
        if now < float(claims.get("nbf", 0)):
            raise refuse("Access token not valid yet")
        if now >= float(claims.get("exp", 0)):
            raise refuse("Access token expired")

    def _leaked(self, req: Request) -> bool:
        with self._lock:
            tokens = list(self.tokens)
        seen = [req.path, *(str(v) for v in req.headers.values())]
        return any(token in text for token in tokens for text in seen)

    @route(("GET", "HEAD"), r"/distribution/(?P<rec>[^/]+)/(?P<file>[^/]+)", on="distribution")
    def distribute(self, req: Request) -> None:
        if self._leaked(req):
            with self._lock:
                self.api_token_leaks += 1
            raise HttpError(
                401, "API token sent to the distribution host",
                body={"error": {"code": 401, "message": "API token sent to the distribution host"}},
            )  # fmt: skip
        self._check_jwt(req.arg("access_token"))
        record = self._record(req.params["rec"])
        video = None
        if record is not None:
            video = next(
                (v for v in record.videos if record.distribution_file(v) == req.params["file"]), None
            )
        if record is None or video is None:
            raise HttpError(404, "Not Found")
        serve_file(
            req,
            video.blob,
            etag=video.blob.sha256[:32],
            content_type=video.content_type,
            filename_for_disposition=record.display_name(video),
            last_modified=record.created,
        )

    # ---- control hooks ----------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        if status == 404:
            return dict(NOT_FOUND_BODY)
        return {"error": {"code": status, "message": message}}

    def config(self) -> JSON:
        account = self.values("username", "password")
        return {
            "type": "valt",
            "base_url": f"{self.url}/api/v3",
            **account,
            # A tiny page exercises paging on the sample catalog; a scaled one is read as a client would.
            **({"page_size": CLIENT_PAGE_SIZE} if self.scale < SCALED_PAGE_FROM else {}),
        }

    def status(self) -> JSON:
        with self._lock:
            return {
                "token_generation": self.token_generation,
                "tokens_issued": self.tokens_issued,
                "urls_issued": self.urls_issued,
                "api_token_leaks": self.api_token_leaks,
                "distribution_url": self.distribution.url,
            }

    def _video_entry(self, r: Record, v: ValtVideo, compact: bool) -> JSON:
        return {
            "id": v.id,
            "camera_id": v.camera_id,
            "filename": r.display_name(v) if r.filename_in_url else None,
            "display_name": r.display_name(v),
            "ext": v.ext,
            "content_type": v.content_type,
            **facts(v.blob, compact=compact),
            "distribution_path": f"/distribution/{r.id}/{r.distribution_file(v)}",
        }

    def catalog_json(self, compact: bool) -> JSON:
        with self._lock:
            records = [replace(r, videos=list(r.videos)) for r in self.records.values()]
            leaks = self.api_token_leaks
        out = [
            {
                **summary_json(r),
                "markers": len(r.markers),
                "videos": [self._video_entry(r, v, compact) for v in r.videos],
            }
            for r in records
        ]
        return {"provider": "valt", "records": out, "api_token_leaks": leaks}

    # ---- mutations --------------------------------------------------------------------------------------
    def _expire_everything(self) -> None:
        """Every API token and every download URL issued so far stops working."""
        with self._lock:
            self.token_generation += 1
            self._secret = secrets.token_bytes(32)

    def mutate_expire_tokens(self, change: Mapping[str, Any]) -> JSON:
        self._expire_everything()
        return {"token_generation": self.token_generation}

    def _target(self, change: Mapping[str, Any]) -> tuple[Record, ValtVideo | None]:
        """The record a mutation names, and its video when it names one (KeyError → 404)."""
        if change.get("record_id") is None:
            raise ValueError(f"{change.get('action')} needs a record_id")
        record = self.records[str(change["record_id"])]
        video_id = change.get("video_id")
        if video_id is None:
            return record, None
        video = record.video(str(video_id))
        if video is None:
            raise KeyError(str(video_id))
        return record, video

    def mutate_change_content(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            record, video = self._target(change)
            if video is None:
                raise ValueError("change_content needs a video_id")
        blob = self.changed_blob(video.blob, f"{record.id}/{video.id}", int(change.get("extra_bytes", 0)))
        with self._lock:
            video.blob = blob
            return {"record_id": str(record.id), "video_id": video.id, "sha256": blob.sha256}

    def mutate_rename(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            record, _video = self._target({**change, "video_id": None})
            record.name = str(change["name"])
            return summary_json(record)

    def mutate_delete(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            record, video = self._target(change)
            if video is None:
                del self.records[str(change["record_id"])]
                return {"deleted": {"record_id": record.id}}
            record.videos = [v for v in record.videos if v is not video]
            return {"deleted": {"record_id": record.id, "video_id": video.id}}


def _error(status: int, message: str) -> JSON:
    return {"error": {"code": status, "message": message}}


def create_site(options: EmulatorOptions) -> ValtSite:
    return ValtSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """room / record / video; a video is named by its URL's ``filename`` (else record name + extension), and
    videos of one record sharing a name get " [<video id>]" first, as vidfs.providers.valt does."""

    def room_key(record: JSON) -> str:
        return f"room:{record['room']['id']}" if record["room"] else "valt:no-room"

    records = catalog["records"]
    rooms: dict[str, str] = {}
    for record in records:
        rooms.setdefault(room_key(record), record["room"]["name"] if record["room"] else "(no room)")
    room_dirs = name_entries([(key, name, True, None) for key, name in rooms.items()])
    by_room = group_by(records, room_key)
    out: dict[str, Expect] = {}
    for key, room_dir in zip(rooms, room_dirs, strict=True):
        in_room = by_room[key]
        record_dirs = name_entries([(str(r["id"]), r["name"], True, None) for r in in_room])
        for record, record_dir in zip(in_room, record_dirs, strict=True):
            videos = record["videos"]
            raw = [v["filename"] or record["name"] + v["ext"] for v in videos]
            counts = Counter(raw)
            named = []
            for video, name in zip(videos, raw, strict=True):
                if counts[name] > 1:
                    stem, ext = split_ext(name)
                    name = f"{stem} [{video['id']}]{ext}"
                named.append((f"{record['id']}/{video['id']}", name, False, video["content_type"]))
            for video, file_name in zip(videos, name_entries(named), strict=True):
                remote_id = f"{record['id']}/{video['id']}"
                out[f"{room_dir}/{record_dir}/{file_name}"] = expect(video, record["created"], remote_id)
    return out


def _mutation(action: str, remote_id: str) -> JSON:
    record_id, _, video_id = remote_id.partition("/")
    return {"action": action, "record_id": record_id, "video_id": video_id}


CONTRACT = Contract(
    expected=expected_layout,
    short_lived_args=("--set", "valt.url_lifetime=2"),
    login_path=r"^/api/v3/records/download/",
    storage_path=r"^/distribution/",
    mutation=_mutation,
    # An open handle does get ESTALE (tests/test_provider_valt.py); but VALT tells no size, ETag or update
    # time, so the engine's HEAD-learned size/ETag (kept per fingerprint) would never be refreshed.
    unsupported={
        "change_content": "VALT recordings never change, and nothing in its API could tell a changed one"
    },
)
