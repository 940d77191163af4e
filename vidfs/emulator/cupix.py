"""Cupix (CupixWorks API v1) emulator: workspaces → facilities → records → captures → videos, and the
signed-storage origin the downloads redirect to.

The API lives under ``/api/v1`` of the main origin (the provider's ``base_url`` is ``<url>/api/v1``):

``GET /me?fields=id``                      the token's user (a token check)
``GET /workspaces``                        every workspace of the user
``GET /facilities?workspace_id=``          facilities (sites, each with a stable ``key``)
``GET /records?facility_key=``             records: one capture date of a facility each
``GET /captures?record_id=``               captures of a record
``GET /videos?capture_id=``                uploaded videos of a capture (the seed's page)
``GET /videos/{id}/download``              302 to the file on the storage origin (a signed URL)

Every call needs the ``X-CUPIX-AUTH`` token header: without it, or with a wrong one, 401 with no body.
Every list needs ``fields=`` (a comma list; spaces around names are fine, as in the seed's sample
``'id, name, state'``): without it 400 with the seed's error body
``{"result":{"code","type","reason","message"},"session":null}``. Only the requested attributes are returned
(unknown names are ignored; ``camera`` is an object ``{make, model, serial_number}``). Lists take ``page``
(from 1), ``per_page`` (default `page_size`, capped at ``max_page_size``), ``order_by`` (id, name,
created_at, updated_at) and ``sort`` (asc | desc); without ``order_by`` they come newest-updated first.
The envelope is ``{"result":{"data":[{"id":"<string>","type":"video","attributes":{...}}],
"pagination":{total_entries,total_pages,per_page,current_page,next_page,previous_page}},"session":null}``
with ``next_page`` a page number or null. 404 and 403 have no body either. Timestamps are ISO 8601 with
milliseconds, ``Z`` (UTC); a record's and a capture's ``captured_at`` carry the facility's own offset.

Video states: ``created`` (not uploaded yet), ``done``, and others (``processing``, ``failed``) that only
``done`` videos leave; downloading a video that is not done answers 404. Insta360 videos come in pairs
(``VID_<date>_<time>_00_<n>.insv`` + ``..._10_<n>.insv``); the same names repeat across captures and one
capture holds a re-upload with the very same name twice. The ``.insv`` files carry real MP4 sample bytes.

Storage: a second `Site` (``cupix-storage``, another port) serves ``GET|HEAD /storage/<bucket>/<uuid>/<file>``
with Range, ETag and Last-Modified, but only with a valid signature: the 302 ``Location`` carries S3-style
query parameters ``X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date (YYYYMMDDTHHMMSSZ), X-Amz-Expires
(url_lifetime seconds), X-Amz-SignedHeaders, X-Amz-Signature`` (HMAC-SHA256 of path, date and expiry with a
per-process secret). A bad signature → 403 ``SignatureDoesNotMatch``, an expired URL → 403 ``AccessDenied``
(S3's XML bodies). Storage never needs, and records, any provider credential: every storage request that
carries ``X-CUPIX-AUTH``, ``Authorization``, ``Cookie`` or the API token anywhere is counted
(``storage.requests_with_credentials`` in the catalog and the settings).

Both origins share one fault switchboard (the storage site uses the main site's `Faults` object), so
``POST <control_url>/faults`` and, in-process, ``site.faults.set_rules`` reach the bytes too, and a rule's
``count`` is spent across both; pick the origin with the rule's ``path`` regex (``^/api/v1/`` for the API,
``^/storage/`` for the storage). The main control URL's request log lists both origins (``origin`` is
``cupix`` or ``cupix-storage``); the storage's own control URL lists only its requests.

Settings (``/_emulator/settings``): ``page_size`` (default 2, so every level spans three pages or more),
``max_page_size`` (100), ``url_lifetime`` (seconds a signed URL lives, default 300), ``token``, ``scale``;
read-only
``storage_requests``, ``storage_requests_with_credentials``, ``downloads_resolved``.
Mutations (``/_emulator/mutate``): ``fail`` {endpoint: workspaces|facilities|records|captures|videos|
download|me, status (400 → the seed's body, others no body), count?, message?}, ``clear_failures``,
``set_state`` {video_id, state}, ``change_content`` {video_id, extra_bytes?} (new bytes, new ETag, later
``updated_at``), ``delete`` {video_id}, ``expire_tokens`` (a new signing secret: every storage URL issued so
far is refused with 403; the API token is the user's own and is left alone — change it with the ``token``
setting).

Scale: ``scale = N`` adds one huge capture (workspace "Scale Works" / facility "Scale site" / record of
2024-01-15 / capture "Scale capture") holding N Insta360 videos in ``_00_``/``_10_`` pairs, as a long
site walk grows; newer videos come first in the default order (``updated_at`` desc), so videos added at
runtime land on page 1. Lists are prepared per parent and order, and pages slice them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, ClassVar
from urllib.parse import quote

from vidfs.emulator.content import facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries
from vidfs.emulator.cupix_model import (
    ORDERABLE,
    Capture,
    CupixCatalog,
    CupixVideo,
    Facility,
    Failure,
    Record,
    S3Denied,
    Workspace,
    amz_date,
    bad_request,
    cap_attrs,
    fac_attrs,
    no_body,
    rec_attrs,
    s3_error,
    sort_value,
    video_attrs,
    ws_attrs,
)
from vidfs.emulator.knobs import Knob, knob, positive
from vidfs.emulator.pages import rails_pagination
from vidfs.emulator.server import JSON, EmulatorOptions, Request, serve_file
from vidfs.emulator.vendor import Subsite, VendorSite, group_by, or_default, page_slice, route

SCALED_PAGE_FROM = 1000  # from this scale on, config() asks for pages of SCALED_PAGE_SIZE
SCALED_PAGE_SIZE = 100

__all__ = ["DEFAULT_TOKEN", "CupixSite", "amz_date"]

DEFAULT_TOKEN = "cupix-emulator-token-4f1c2a9e7b3d"
DEFAULT_PAGE_SIZE = 2
DEFAULT_MAX_PAGE_SIZE = 100
DEFAULT_URL_LIFETIME = 300
BUCKET = "cupix-works-videos"
ACCESS_KEY = "AKIAEMULATORCUPIX00"
CREDENTIAL_HEADERS = ("x-cupix-auth", "authorization", "cookie", "proxy-authorization")

SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")
ENDPOINTS = ("workspaces", "facilities", "records", "captures", "videos", "download", "me")

#: list endpoint → (item kind, its table, the query parameter naming its parent, which is also the item's
#: attribute; None: no parent)
_LISTS = {
    "workspaces": ("workspace", "workspaces", None),
    "facilities": ("facility", "facilities", "workspace_id"),
    "records": ("record", "records", "facility_key"),
    "captures": ("capture", "captures", "record_id"),
    "videos": ("video", "videos", "capture_id"),
}
#: parent parameter → the table its value must be a key of
_PARENTS = {"workspace_id": "workspaces", "record_id": "records", "capture_id": "captures"}


def _token(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or re.search(r"\s", value):
        raise ValueError("token must be a non-empty string without spaces")
    return value


@dataclass
class _Counters:
    downloads: int = 0
    secret_generation: int = 0


class CupixSite(CupixCatalog, VendorSite):
    """The Cupix emulator: the API origin plus its storage subsite."""

    NAME = "cupix"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "page_size": knob("page_size", positive),
        "max_page_size": knob("max_page_size", positive),
        "url_lifetime": knob("url_lifetime", positive),
        "token": knob("token", _token),
    }

    def build(self, options: EmulatorOptions) -> None:
        self._secret = secrets.token_bytes(32)
        self.token = DEFAULT_TOKEN
        self.page_size = or_default(options.page_size, DEFAULT_PAGE_SIZE)
        self.max_page_size = DEFAULT_MAX_PAGE_SIZE
        self.url_lifetime = DEFAULT_URL_LIFETIME
        self.failures: dict[str, Failure] = {}
        self.counters = _Counters()
        self.workspaces: dict[int, Workspace] = self.table()
        self.facilities: dict[int, Facility] = self.table()
        self.records: dict[int, Record] = self.table()
        self.captures: dict[int, Capture] = self.table()
        self.videos: dict[int, CupixVideo] = self.table()
        self._build_catalog()
        self.storage = Subsite(self, "cupix-storage", error_body=lambda s, m: S3Denied(str(s), m, s).xml())

    # ---- auth and common list machinery -------------------------------------------------------------------
    def _auth(self, req: Request, endpoint: str) -> None:
        supplied = req.headers.get("X-CUPIX-AUTH")
        with self._lock:
            token = self.token
        if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
            raise no_body(401)
        self._maybe_fail(endpoint)

    def _maybe_fail(self, endpoint: str) -> None:
        with self._lock:
            failure = self.failures.get(endpoint)
            if failure is None:
                return
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self.failures[endpoint]
        if failure.status == 400:
            raise bad_request("InvalidParameter", failure.message or f"{endpoint}: invalid request")
        raise no_body(failure.status)

    @staticmethod
    def _fields(req: Request) -> list[str]:
        raw = req.arg("fields")
        names = [name.strip() for name in (raw or "").split(",") if name.strip()]
        if not names:
            raise bad_request("ParameterMissing", "param is missing or the value is empty: fields")
        return names

    @staticmethod
    def _int_arg(req: Request, name: str, default: int | None = None) -> int | None:
        raw = req.arg(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise bad_request("InvalidParameter", f"{name} must be an integer, got {raw!r}") from None

    def _rows(self, endpoint: str, parent: Any, order_by: str | None, sort: str) -> list[Any]:
        """The objects of one list call (a parent's, or all), sorted as asked; prepared per catalog change."""
        kind, table_name, parent_attr = _LISTS[endpoint]

        def ordered() -> list[Any]:
            table: dict[Any, Any] = getattr(self, table_name)
            if parent_attr is None or parent is None:
                rows = list(table.values())
            else:
                groups = self.prepared(
                    (kind, "groups"), lambda: group_by(table.values(), attrgetter(parent_attr))
                )
                rows = list(groups.get(parent, []))
            if order_by is None:  # newest-updated first
                rows.sort(key=lambda o: (o.updated, o.id), reverse=True)
            else:
                rows.sort(
                    key=lambda o: (sort_value(o, order_by) is not None, sort_value(o, order_by) or "", o.id),
                    reverse=sort == "desc",
                )
            return rows

        return self.prepared((kind, parent, order_by, sort), ordered)

    def _page(self, req: Request, endpoint: str, parent: Any) -> None:
        """Answer one page of a list (only the requested fields of each item)."""
        fields = self._fields(req)
        order_by = req.arg("order_by")
        sort = (req.arg("sort") or "asc").lower()
        if order_by is not None and order_by not in ORDERABLE:
            raise bad_request("InvalidParameter", f"order_by must be one of {', '.join(ORDERABLE)}")
        if sort not in ("asc", "desc"):
            raise bad_request("InvalidParameter", "sort must be asc or desc")
        page = self._int_arg(req, "page", 1) or 1
        with self._lock:
            default_size, max_size = self.page_size, self.max_page_size
        per_page = self._int_arg(req, "per_page", default_size) or default_size
        if page < 1 or per_page < 1:
            raise bad_request("InvalidParameter", "page and per_page must be >= 1")
        per_page = min(per_page, max_size)
        kind = _LISTS[endpoint][0]
        attrs = self._attrs(kind)
        with self._lock:
            rows = self._rows(endpoint, parent, order_by, sort)
            chunk = [attrs(o) for o in page_slice(rows, page, per_page)]
        data = [
            {"id": str(a["id"]), "type": kind, "attributes": {name: a[name] for name in fields if name in a}}
            for a in chunk
        ]
        pagination = rails_pagination(len(rows), page, per_page)
        req.send_json(200, {"result": {"data": data, "pagination": pagination}, "session": None})

    def _offset_of(self, facility_key: str) -> int:
        facility = self._facility_keys().get(facility_key)
        return facility.offset_hours if facility is not None else 0

    def _rec_attrs(self, r: Record) -> JSON:
        return rec_attrs(r, self._offset_of(r.facility_key))

    def _cap_attrs(self, c: Capture) -> JSON:
        return cap_attrs(c, self._offset_of(self.records[c.record_id].facility_key))

    # ---- API routes -------------------------------------------------------------------------------------
    @route("GET", r"/api/v1/me")
    def me(self, req: Request) -> None:
        self._auth(req, "me")
        fields = self._fields(req)
        attrs = {"id": 7, "email": "site.engineer@example.com", "name": "Site Engineer"}
        data = {"id": "7", "type": "user", "attributes": {k: attrs[k] for k in fields if k in attrs}}
        req.send_json(200, {"result": {"data": data}, "session": None})

    def _attrs(self, kind: str) -> Callable[[Any], JSON]:
        by_kind: dict[str, Callable[[Any], JSON]] = {
            "workspace": ws_attrs,
            "facility": fac_attrs,
            "record": self._rec_attrs,
            "capture": self._cap_attrs,
            "video": video_attrs,
        }
        return by_kind[kind]

    def _facility_keys(self) -> dict[str, Facility]:
        return self.prepared("facility-keys", lambda: {f.key: f for f in self.facilities.values()})

    @route("GET", r"/api/v1/(?P<endpoint>workspaces|facilities|records|captures|videos)")
    def list_items(self, req: Request) -> None:
        """A list, all of it or one parent's (404 for a parent that does not exist)."""
        endpoint = req.params["endpoint"]
        self._auth(req, endpoint)
        parent_key = _LISTS[endpoint][2]
        parent: Any = None
        if parent_key == "facility_key":
            parent = req.arg(parent_key) or None
        elif parent_key is not None:
            parent = self._int_arg(req, parent_key)
        if parent is not None and parent_key is not None:
            with self._lock:
                parents = (
                    self._facility_keys()
                    if parent_key == "facility_key"
                    else getattr(self, _PARENTS[parent_key])
                )
                if parent not in parents:
                    raise no_body(404)
        self._page(req, endpoint, parent)

    @route("GET", r"/api/v1/videos/(?P<id>\d+)/download")
    def download(self, req: Request) -> None:
        self._auth(req, "download")
        vid = int(req.params["id"])
        with self._lock:
            video = self.videos.get(vid)
            if video is None or video.state != "done":
                raise no_body(404)
            self.counters.downloads += 1
            location = self.sign(video)
        html = f'<html><body>You are being <a href="{location}">redirected</a>.</body></html>'
        req.send_bytes(
            302,
            html.encode(),
            "text/html; charset=utf-8",
            headers={"Location": location, "Cache-Control": "no-cache"},
        )

    # ---- signed storage URLs -------------------------------------------------------------------------------
    def _signature(self, path: str, date: str, expires: str) -> str:
        message = f"GET\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, video: CupixVideo) -> str:
        now = time.time()
        date = amz_date(now)
        with self._lock:
            expires = str(self.url_lifetime)
        path = f"/storage/{BUCKET}/{video.uuid}/{quote(video.name, safe='')}"
        scope = f"{ACCESS_KEY}/{date[:8]}/us-west-2/s3/aws4_request"
        query = (
            f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={quote(scope, safe='')}"
            f"&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={self._signature(path, date, expires)}"
        )
        return f"{self.storage.url}{path}?{query}"

    def verify_signed(self, req: Request) -> CupixVideo:
        """The video a storage request may read, or S3's 403."""
        date, expires, signature = req.arg("X-Amz-Date"), req.arg("X-Amz-Expires"), req.arg("X-Amz-Signature")
        if not date or not expires or not signature:
            raise s3_error(
                "AccessDenied", "Query-string authentication requires the Signature, Expires and Date"
            )
        expected = self._signature(req.path_only, date, expires)
        if not hmac.compare_digest(expected, signature):
            raise s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match")
        try:
            signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
            lifetime = int(expires)
        except ValueError:
            raise s3_error(
                "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is malformed"
            ) from None
        if time.time() >= signed_at + lifetime:
            raise s3_error("AccessDenied", "Request has expired")
        with self._lock:
            by_uuid = self.prepared("uuids", lambda: {v.uuid: v for v in self.videos.values()})
            video = by_uuid.get(req.params["uuid"])
            if video is not None and video.state == "done":
                return replace(video)
        raise s3_error("NoSuchKey", "The specified key does not exist.", 404)

    @route(("GET", "HEAD"), r"/storage/(?P<bucket>[^/]+)/(?P<uuid>[^/]+)/(?P<file>[^/]+)", on="storage")
    def storage_get(self, req: Request) -> None:
        try:
            video = self.verify_signed(req)
        except S3Denied as denied:
            req.send_bytes(denied.status, denied.xml(), "application/xml")
            return
        serve_file(
            req,
            video.blob,
            etag=f'"{video.blob.sha256[:32]}"',
            content_type=video.content_type,
            filename_for_disposition=video.name,
            last_modified=video.updated,
        )

    def storage_credential_requests(self) -> list[JSON]:
        """Every storage request that carried a provider credential (there must be none)."""
        with self._lock:
            token = self.token
        out = []
        for entry in self.storage.log.entries():
            headers: Mapping[str, str] = entry.get("headers") or {}
            if (
                any(name in headers for name in CREDENTIAL_HEADERS)
                or token in entry.get("path", "")
                or any(token in value for value in headers.values())
            ):
                out.append(entry)
        return out

    # ---- control hooks ------------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        if status == 400:
            return {
                "result": {"code": 400, "type": "BadRequest", "reason": "BadRequest", "message": message},
                "session": None,
            }
        return b""

    def config(self) -> JSON:
        # The server's small default page exercises paging on the sample catalog; a scaled one is read with
        # pages of 100, as a client listing a big capture would ask.
        pages = {"page_size": SCALED_PAGE_SIZE} if self.scale >= SCALED_PAGE_FROM else {}
        return {"type": "cupix", "base_url": f"{self.url}/api/v1", **self.values("token"), **pages}

    def _storage_info(self) -> JSON:
        return {
            "url": self.storage.url,
            "control_url": self.storage.control_url,
            "path_regex": r"^/storage/",
            "requests": self.storage.log.count(),
            "requests_with_credentials": len(self.storage_credential_requests()),
        }

    def status(self) -> JSON:
        storage = self._storage_info()
        with self._lock:
            failures = {k: {"status": f.status, "remaining": f.remaining} for k, f in self.failures.items()}
            return {
                "downloads_resolved": self.counters.downloads,
                "failures": failures,
                "storage_requests": storage["requests"],
                "storage_requests_with_credentials": storage["requests_with_credentials"],
            }

    def _video_entry(self, v: CupixVideo, compact: bool = False) -> JSON:
        attrs = video_attrs(v)
        return {
            **attrs,
            "visible": v.state == "done",
            "reports_size": attrs["filesize"] is not None,
            **facts(v.blob, compact=compact),
            "mtime_epoch": v.updated,
            "content_type": v.content_type,
        }

    def catalog_json(self, compact: bool) -> JSON:
        with self._lock:
            records = []
            for r in self.records.values():
                attrs = self._rec_attrs(r)
                records.append({**attrs, "date": attrs["captured_at"][:10], "mtime_epoch": r.updated})
            out: JSON = {
                "provider": "cupix",
                "workspaces": [{**ws_attrs(w), "mtime_epoch": w.updated} for w in self.workspaces.values()],
                "facilities": [{**fac_attrs(f), "mtime_epoch": f.updated} for f in self.facilities.values()],
                "records": records,
                "captures": [
                    {**self._cap_attrs(c), "mtime_epoch": c.updated} for c in self.captures.values()
                ],
                "videos": [self._video_entry(replace(v), compact) for v in self.videos.values()],
            }
        out["storage"] = self._storage_info()
        return out

    # ---- mutations ----------------------------------------------------------------------------------------
    def mutate_fail(self, change: Mapping[str, Any]) -> JSON:
        endpoint = str(change.get("endpoint", ""))
        if endpoint not in ENDPOINTS:
            raise ValueError(f"fail needs an endpoint among {', '.join(ENDPOINTS)}")
        status = int(change.get("status", 400))
        count = change.get("count")
        with self._lock:
            remaining = None if count is None else int(count)
            self.failures[endpoint] = Failure(status, remaining, str(change.get("message") or ""))
        return {"failing": endpoint, "status": status}

    def mutate_clear_failures(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            self.failures.clear()
        return {"failing": None}

    def mutate_expire_tokens(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            self._secret = secrets.token_bytes(32)  # every signed URL issued so far stops working
            self.counters.secret_generation += 1
            return {"secret_generation": self.counters.secret_generation}

    @staticmethod
    def _video_id(change: Mapping[str, Any]) -> int:
        try:
            return int(change.get("video_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{change.get('action')} needs a video_id") from None

    def mutate_delete(self, change: Mapping[str, Any]) -> JSON:
        vid = self._video_id(change)
        with self._lock:
            del self.videos[vid]  # KeyError → 404
            return {"deleted": vid}

    def mutate_set_state(self, change: Mapping[str, Any]) -> JSON:
        vid = self._video_id(change)
        with self._lock:
            v = self.videos[vid]
            v.state = str(change.get("state", "done"))
            v.updated = max(v.updated + 1, int(time.time()))
            return self._video_entry(replace(v))

    def mutate_change_content(self, change: Mapping[str, Any]) -> JSON:
        vid = self._video_id(change)
        with self._lock:
            current = self.videos[vid].blob
        blob = self.changed_blob(current, f"cupix:{vid}", int(change.get("extra_bytes", 0)))
        with self._lock:
            v = self.videos[vid]
            v.blob = blob
            v.updated = max(v.updated + 1, int(time.time()))
            return self._video_entry(replace(v))


def create_site(options: EmulatorOptions) -> CupixSite:
    return CupixSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """workspace / facility / record date / capture / video, each level named as the provider does."""
    facilities = group_by((f for f in catalog["facilities"] if f["key"]), lambda f: f["workspace_id"])
    records = group_by(catalog["records"], lambda r: r["facility_key"])
    captures = group_by(catalog["captures"], lambda c: c["record_id"])
    videos = group_by((v for v in catalog["videos"] if v["visible"]), lambda v: v["capture_id"])
    out: dict[str, Expect] = {}

    def level(
        prefix: str, items: list[JSON], raw: Callable[[JSON], tuple[str, str]]
    ) -> list[tuple[JSON, str]]:
        names = name_entries([(*raw(item), True, None) for item in items])
        return [(item, f"{prefix}{name}/") for item, name in zip(items, names, strict=True)]

    for ws, ws_dir in level("", catalog["workspaces"], lambda w: (f"ws:{w['id']}", w["name"])):
        fac_level = level(
            ws_dir, facilities.get(ws["id"], []), lambda f: (f"fac:{f['key']}", f["name"] or f["key"])
        )
        for fac, fac_dir in fac_level:
            for rec, rec_dir in level(
                fac_dir, records.get(fac["key"], []), lambda r: (f"rec:{r['id']}", r["date"])
            ):
                for cap, cap_dir in level(
                    rec_dir, captures.get(rec["id"], []), lambda c: (f"cap:{c['id']}", c["name"])
                ):
                    files = videos.get(cap["id"], [])
                    names = name_entries([(str(v["id"]), v["name"], False, None) for v in files])
                    for video, name in zip(files, names, strict=True):
                        out[cap_dir + name] = expect(video, video["mtime_epoch"], str(video["id"]))
    return out


CONTRACT = Contract(
    expected=expected_layout,
    short_lived_args=("--set", "cupix.url_lifetime=2"),
    login_path=r"/videos/\d+/download",
    storage_path=r"^/storage/",
    secret_key="token",
    mutation=lambda action, remote_id: {"action": action, "video_id": remote_id},
)
