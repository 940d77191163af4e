"""Cupix (CupixWorks API v1): workspaces → facilities → records → captures → videos.

Layout, with no filter::

    /<instance>/<workspace name>/<facility name>/<record date>/<capture name>/<video file name>
    /site-a/Acme Construction/Harbor View Tower/2023-11-17/Level 1/VID_20231117_101500_00_038.insv

A record is one capture date of a facility: its directory is the date of `captured_at` as the API writes it
(the site's own offset, so the date the site engineer walked), `YYYY-MM-DD`; two records of one date get
the id suffix of the naming rules (`2023-11-24 [rec:302]`). Facilities are named by `name` (else their
`key`), captures by `name` (else `capture <id>`). Videos keep the API's `name`, so the Insta360 `.insv` pairs
(`VID_..._00_038.insv`, `VID_..._10_038.insv`) keep theirs; names repeat across captures (each capture is
its own directory) and a repeat within one capture gets ` [<video id>]`.

Filters narrow the tree; the root shows the narrowest level they name:
- `capture_ids` alone: `/<instance>/capture <id>/<video>`, listed through `GET /videos?capture_id=` only (the
  documented path; a capture's name needs its record, which we do not know). The root checks the token with
  `GET /me?fields=id`, so `vidfs check` still fails on a bad token.
- `facility_keys`: `/<instance>/<facility name>/<date>/<capture>/<video>`; names are found by walking the
  workspaces (those of `workspace_ids` when given). A key no workspace holds is a hidden item "not found".
- `workspace_ids`: the full layout, only those workspaces.
- `capture_ids` with another filter: captures not in the list are left out of record directories.

Quirks: every list call needs `fields=` (we always send it, plus `order_by=id&sort=asc` for a stable order);
items are JSON:API-like `{"id": "<string>", "type", "attributes"}`. Page 1's `pagination` tells
`total_entries` and `total_pages`: the other pages are asked concurrently and merged by
`vidfs.providers.paging` (pages answered under another total are asked again); without them, we follow
`pagination.next_page`.
Only `state == "done"` videos are files (size `filesize`, else a HEAD on storage; mtime `updated_at`); the
others (`created` = not uploaded yet, and any other state) are hidden items with their state, for `vidfs ls`.
The token goes in `X-CUPIX-AUTH`, to the API origin only; a 401 is final (a static token cannot be
renewed) and becomes EACCES, a 400 (body `{"result":{"code","type","reason","message"}}`) EIO.

Downloads: `GET /videos/{id}/download` answers 302 to a signed storage URL on another origin. We read the
`Location` ourselves (no redirect following) and keep that URL as the lease, expiring when its signature
says (`X-Amz-Date` + `X-Amz-Expires`, `Expires=`, ...) or after 10 minutes when it says nothing; the lease
has no headers, so no Cupix credential ever reaches storage. When storage refuses it (401/403/410) the
engine asks again and we resolve a fresh URL.
"""

from __future__ import annotations

import builtins
import dataclasses
import operator
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import trio

from vidfs.catalog.carry import carried
from vidfs.config.types import ProviderConfig
from vidfs.errors import ConfigError, InvalidRemoteData, NotFoundError, redact_url
from vidfs.http.client import REDIRECT_STATUSES
from vidfs.http.policy import one_line, raise_for_status
from vidfs.model import Folder, HiddenItem, Listing, StreamLease, Video, frozen_extra
from vidfs.providers.auth import expiry_from_url
from vidfs.providers.base import BASE_URL, OptionSpec, ProviderBase, ProviderContext, ProviderSpec
from vidfs.providers.paging import Page, numbered_pages

ROOT_ID = "cupix:root"
AUTH_HEADER = "X-CUPIX-AUTH"
DEFAULT_LEASE = 600.0  # a storage URL that does not say when it expires is renewed after 10 minutes
PAST_EXPIRY_GRACE = 30.0  # a URL "already expired" by our clock: use it briefly, storage has the last word
WALK_CONCURRENCY = 4

Items = list[dict[str, Any]]  # a module-level alias: inside the class, `list` is the method
T = TypeVar("T")

FIELDS = {
    "workspaces": "id,name,created_at,updated_at",
    "facilities": "id,key,name,workspace_id,time_zone,created_at,updated_at",
    "records": "id,name,captured_at,facility_id,facility_key,created_at,updated_at",
    "captures": "id,name,state,record_id,captured_at,created_at,updated_at",
    "videos": "id,uuid,name,state,filesize,created_at,updated_at,camera",
}


def parse_time(value: object) -> float | None:
    """ISO 8601 (`2023-11-17T10:15:00.000Z`, `...+09:00`) as epoch seconds; naive times are UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def local_date(value: object) -> str | None:
    """The calendar date of an ISO 8601 time in its own offset: the date on site."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.strip()).date().isoformat()
    except ValueError:
        return None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number >= 0 else None


class CupixProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        self._base = str(options["base_url"]).rstrip("/") + "/"
        self._token = self._secret("token")
        where = self._where
        self._workspace_ids = _id_list(options.get("workspace_ids"), where, "workspace_ids")
        self._facility_keys = _key_list(options.get("facility_keys"), where)
        self._capture_ids = _id_list(options.get("capture_ids"), where, "capture_ids")
        page_size = options.get("page_size")
        if page_size is not None and (isinstance(page_size, bool) or not 1 <= int(page_size) <= 1000):
            raise ConfigError(f"{where} key 'page_size': must be between 1 and 1000, got {page_size!r}")
        self._page_size: int | None = int(page_size) if page_size is not None else None
        if self._capture_ids and not self._workspace_ids and not self._facility_keys:
            self._mode = "captures"
        elif self._facility_keys:
            self._mode = "facilities"
        else:
            self._mode = "workspaces"

    # ------------------------------------------------------------------------------------------- http
    def _url(self, path: str) -> str:
        return urljoin(self._base, path)

    def _headers(self) -> dict[str, str]:
        return {AUTH_HEADER: self._token, "Accept": "application/json"}

    def _raise(self, response: Any, what: str) -> None:
        """The failure policy's error, said in Cupix's terms; never the token."""
        raise_for_status(response, f"{self.instance}: {what}", explain=_explain)

    async def _get(self, path: str, params: Mapping[str, Any], what: str) -> dict[str, Any]:
        response = await self._http.request(
            "GET", self._url(path), tag=self._tag, params=params, headers=self._headers()
        )
        self._raise(response, what)
        try:
            document = response.json()
        except ValueError:
            raise InvalidRemoteData(f"{self.instance}: {what}: the answer is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("result"), dict):
            raise InvalidRemoteData(f"{self.instance}: {what}: the answer has no 'result' object")
        return document

    async def _page(self, path: str, params: Mapping[str, Any], number: int, what: str) -> Page:
        """One page of a list endpoint, with what its `pagination` says of the others."""
        query: dict[str, Any] = {
            **params,
            "fields": FIELDS[path],
            "order_by": "id",
            "sort": "asc",
            "page": number,
        }
        if self._page_size is not None:
            query["per_page"] = self._page_size
        result = (await self._get(path, query, what))["result"]
        data = result.get("data")
        if not isinstance(data, list):
            raise InvalidRemoteData(f"{self.instance}: {what}: result.data is not a list")
        pagination = result.get("pagination")
        if not isinstance(pagination, dict):
            return Page(data, more=False)
        return Page(
            data,
            total=_int_or_none(pagination.get("total_entries")),
            last=_int_or_none(pagination.get("total_pages")),
            more=_int_or_none(pagination.get("next_page")) is not None,
        )

    async def _pages(self, path: str, params: Mapping[str, Any], what: str) -> Items:
        """Every item of a list endpoint as its attributes (with `id`): page 1, then the others concurrently
        once `pagination` tells their number (`vidfs.providers.paging`: one state of the list, each item
        once); without a total, page after page while `next_page` says one follows."""
        return await self._converted_pages(path, params, what, lambda attrs: attrs)

    async def _converted_pages(
        self, path: str, params: Mapping[str, Any], what: str, convert: Callable[[dict[str, Any]], T]
    ) -> builtins.list[T]:
        """`_pages`, each item made into what the caller keeps (`convert`, given its attributes) the moment
        its page arrives: the pages of a list are held until the list is whole, and a capture of 100,000
        videos as the API's JSON objects was most of the mount's 217 MiB peak."""

        async def fetch(number: int) -> Page:
            page = await self._page(path, params, number, what)
            kept = []
            for item in page.items:
                item_id = _item_id(item)
                if item_id is not None:
                    attributes = item.get("attributes")
                    attrs = dict(attributes) if isinstance(attributes, dict) else {}
                    attrs["id"] = item_id
                    kept.append((item_id, convert(attrs)))
            return dataclasses.replace(page, items=kept)

        paged = await numbered_pages(fetch, key=operator.itemgetter(0))
        paged.warn_if_unsettled(self._log, self.instance, what)
        return [made for _id, made in paged.items]

    # ----------------------------------------------------------------------------------------- listing
    async def list(self, folder: Folder) -> Listing:
        if folder.remote_id == ROOT_ID:
            return await self._list_root()
        kind, _, value = folder.remote_id.partition(":")
        if kind == "ws":
            return await self._list_facilities(folder, value)
        if kind == "fac":
            return await self._list_records(folder, value)
        if kind == "rec":
            return await self._list_captures(folder, value)
        if kind == "cap":
            return await self._list_videos(folder, value)
        raise NotFoundError(f"{self.instance}: unknown folder {folder.remote_id!r}")

    async def _list_root(self) -> Listing:
        if self._mode == "captures":
            await self._get("me", {"fields": "id"}, "checking the API token")
            return Listing(
                tuple(
                    Folder(f"cap:{cid}", f"capture {cid}", extra=frozen_extra({"capture_id": cid}))
                    for cid in self._capture_ids
                )
            )
        workspaces = await self._workspaces()
        if self._mode == "workspaces":
            seen = {w["id"] for w in workspaces}
            hidden = tuple(
                HiddenItem(f"ws:{wid}", f"workspace {wid}", "not found")
                for wid in self._workspace_ids
                if wid not in seen
            )
            return Listing(tuple(self._workspace_folder(w) for w in workspaces), hidden)
        # facility_keys: find each facility (for its name) in the workspaces we may see.
        found: dict[str, dict[str, Any]] = {}
        limiter = trio.CapacityLimiter(WALK_CONCURRENCY)

        async def walk(workspace: dict[str, Any]) -> None:
            async with limiter:
                facilities = await self._facilities_of(workspace)
            for facility in facilities:
                key = str(facility.get("key") or "")
                if key in self._facility_keys:
                    found.setdefault(key, facility)

        async with trio.open_nursery() as nursery:
            for workspace in workspaces:
                nursery.start_soon(walk, workspace)
        entries = tuple(self._facility_folder(found[key]) for key in self._facility_keys if key in found)
        hidden = tuple(
            HiddenItem(f"fac:{key}", key, "not found") for key in self._facility_keys if key not in found
        )
        return Listing(entries, hidden)

    async def _workspaces(self) -> Items:
        workspaces = await self._pages("workspaces", {}, "listing workspaces")
        if self._workspace_ids:
            wanted = set(self._workspace_ids)
            workspaces = [w for w in workspaces if w["id"] in wanted]
        return workspaces

    async def _facilities_of(self, workspace: dict[str, Any]) -> Items:
        name = workspace.get("name") or workspace["id"]
        return await self._pages(
            "facilities", {"workspace_id": workspace["id"]}, f"listing facilities of workspace {name!r}"
        )

    def _workspace_folder(self, w: dict[str, Any]) -> Folder:
        return Folder(
            f"ws:{w['id']}",
            str(w.get("name") or f"workspace {w['id']}"),
            mtime=parse_time(w.get("updated_at")) or parse_time(w.get("created_at")),
            extra=frozen_extra({"workspace_id": w["id"]}),
        )

    def _facility_folder(self, f: dict[str, Any]) -> Folder:
        key = str(f.get("key") or "")
        return Folder(
            f"fac:{key}",
            str(f.get("name") or key),
            mtime=parse_time(f.get("updated_at")) or parse_time(f.get("created_at")),
            extra=frozen_extra(
                {
                    "facility_key": key,
                    "facility_id": f["id"],
                    "workspace_id": f.get("workspace_id"),
                    "time_zone": f.get("time_zone"),
                }
            ),
        )

    async def _list_facilities(self, folder: Folder, workspace_id: str) -> Listing:
        facilities = await self._facilities_of({"id": workspace_id, "name": folder.name})
        entries = tuple(self._facility_folder(f) for f in facilities if f.get("key"))
        hidden = tuple(
            HiddenItem(f"facility:{f['id']}", str(f.get("name") or f["id"]), "no facility key")
            for f in facilities
            if not f.get("key")
        )
        return Listing(entries, hidden)

    async def _list_records(self, folder: Folder, facility_key: str) -> Listing:
        records = await self._pages(
            "records", {"facility_key": facility_key}, f"listing records of facility {folder.name!r}"
        )
        entries = []
        for r in records:
            date = local_date(r.get("captured_at")) or local_date(r.get("created_at"))
            entries.append(
                Folder(
                    f"rec:{r['id']}",
                    date or str(r.get("name") or f"record {r['id']}"),
                    mtime=parse_time(r.get("updated_at")) or parse_time(r.get("created_at")),
                    extra=frozen_extra(
                        {
                            "record_id": r["id"],
                            "record_name": r.get("name"),
                            "captured_at": r.get("captured_at"),
                            "facility_key": facility_key,
                        }
                    ),
                )
            )
        return Listing(tuple(entries))

    async def _list_captures(self, folder: Folder, record_id: str) -> Listing:
        captures = await self._pages(
            "captures", {"record_id": record_id}, f"listing captures of record {folder.name!r}"
        )
        if self._capture_ids:
            wanted = set(self._capture_ids)
            captures = [c for c in captures if c["id"] in wanted]
        return Listing(
            tuple(
                Folder(
                    f"cap:{c['id']}",
                    str(c.get("name") or f"capture {c['id']}"),
                    mtime=parse_time(c.get("updated_at")) or parse_time(c.get("created_at")),
                    extra=frozen_extra(
                        {
                            "capture_id": c["id"],
                            "record_id": c.get("record_id") or record_id,
                            "state": c.get("state"),
                            "captured_at": c.get("captured_at"),
                        }
                    ),
                )
                for c in captures
            )
        )

    async def _list_videos(self, folder: Folder, capture_id: str) -> Listing:
        record_id = folder.extra.get("record_id")

        def made(v: dict[str, Any]) -> Video | HiddenItem:
            name = str(v.get("name") or f"video {v['id']}")
            state = str(v.get("state") or "unknown")
            if state != "done":
                return HiddenItem(v["id"], name, state)
            camera: dict[str, Any] = v["camera"] if isinstance(v.get("camera"), dict) else {}
            return carried(
                Video(
                    remote_id=v["id"],
                    name=name,
                    size=_int_or_none(v.get("filesize")),
                    mtime=parse_time(v.get("updated_at")) or parse_time(v.get("created_at")),
                    extra=frozen_extra(
                        {
                            "state": state,
                            "camera_make": camera.get("make"),
                            "camera_model": camera.get("model"),
                            "camera_serial": camera.get("serial_number"),
                            "capture_id": capture_id,
                            "record_id": record_id,
                            "uuid": v.get("uuid"),
                        }
                    ),
                )
            )

        videos = await self._converted_pages(
            "videos", {"capture_id": capture_id}, f"listing videos of capture {folder.name!r}", made
        )
        files = tuple(v for v in videos if isinstance(v, Video))
        hidden = tuple(v for v in videos if isinstance(v, HiddenItem))
        return Listing(files, hidden)

    # ----------------------------------------------------------------------------------------- resolve
    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        what = f"download URL of {video.name!r}"
        if previous is not None:
            self._log.debug("%s: storage refused %s; asking Cupix again", self.instance, what)
        response = await self._http.request(
            "GET",
            self._url(f"videos/{quote(video.remote_id, safe='')}/download"),
            tag=self._tag,
            headers=self._headers(),
            follow_redirects=False,  # we read Location ourselves: the token must not go to storage
        )
        self._raise(response, what)
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            raise InvalidRemoteData(
                f"{self.instance}: {what}: expected a redirect to the file, got HTTP {response.status_code}"
            )
        target = urljoin(str(response.url), location)
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise InvalidRemoteData(f"{self.instance}: {what}: redirect to {redact_url(target)!r}")
        now = time.time()
        expires = expiry_from_url(target)
        if expires is None:
            expires = now + DEFAULT_LEASE
        elif expires <= now:
            self._log.debug(
                "%s: %s is already expired by our clock (%s); using it briefly",
                self.instance,
                what,
                redact_url(target),
            )
            expires = now + PAST_EXPIRY_GRACE
        return StreamLease(url=target, expires_at=expires)


def _explain(response: Any) -> str:
    """One clear phrase per failure: a 401 is the token (static: it cannot be renewed, check it)."""
    status = response.status_code
    if status == 401:
        return "Cupix refused the API token (HTTP 401); check 'token'"
    if status == 403:
        return "permission denied (HTTP 403)"
    if status == 404:
        return "not found (HTTP 404)"
    if status == 400:
        return f"Cupix rejected the request ({_failure(response)})"
    return f"HTTP {status}"


def _failure(response: Any) -> str:
    """The seed's error body `{"result":{"code","type","reason","message"}}` as a short phrase."""
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    result = data.get("result") if isinstance(data, dict) else None
    if isinstance(result, dict) and (result.get("message") or result.get("reason")):
        reason = result.get("reason") or result.get("type") or ""
        message = result.get("message") or ""
        return one_line(f"HTTP {response.status_code} {reason}: {message}".replace(" : ", ": "))
    return f"HTTP {response.status_code}"


def _item_id(item: Any) -> str | None:
    """A list item's id (JSON:API-like: `id` beside `attributes`, or inside them); None: no id."""
    if not isinstance(item, dict):
        return None
    attributes = item.get("attributes")
    item_id = item.get("id", attributes.get("id") if isinstance(attributes, dict) else None)
    return None if item_id is None else str(item_id)


def _id_list(value: object, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} key '{key}': expected an array of ids")
    out: list[str] = []
    for item in value:
        number = _int_or_none(item)
        if number is None or isinstance(item, float):
            raise ConfigError(f"{where} key '{key}': expected integer ids, got {item!r}")
        out.append(str(number))
    return tuple(dict.fromkeys(out))


def _key_list(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(k, str) and k.strip() for k in value):
        raise ConfigError(f"{where} key 'facility_keys': expected an array of non-empty strings")
    return tuple(dict.fromkeys(k.strip() for k in value))


SPEC = ProviderSpec(
    type="cupix",
    options={
        "base_url": BASE_URL,  # the API root, e.g. https://api.cupix.works/api/v1 (or a regional host)
        "token": OptionSpec(str, required=True, secret=True),  # the API token, sent as X-CUPIX-AUTH
        "workspace_ids": OptionSpec(list),  # only these workspaces (integer ids)
        "facility_keys": OptionSpec(list),  # only these facilities (their keys); the root lists them
        "capture_ids": OptionSpec(list),  # only these captures; alone, the root lists them (GET /videos)
        "page_size": OptionSpec(int),  # per_page of list calls (default: the server's)
    },
    factory=CupixProvider,
)


__all__ = ["SPEC", "CupixProvider", "local_date", "parse_time"]
