"""AIPIX VMS: the CCTV archive downloads of an account, by camera and stream.

Layout: `/<instance>/<camera>/<stream type>/<file>`, e.g.
`cctv/City , st. Street 1/high/City , st. Street 1, file.20190920-161320-162227.mp4`. The camera directory is
the camera's `pretty_name` (`GET /cameras/{id}`), else `camera-<id>`; the stream directory is the stream's
`type` (`high`/`low`). File names are the API's `name`, spaces and commas kept. Names repeat (the seed's
ids 6414 and 6416: two downloads of one interval): the engine's naming rules then add ` [<id>]`, decided by
id, so both stay visible and keep their names across listings and remounts.
No date level: archives are deleted about three hours after creation, so the list is short-lived and the
file names already carry the footage date and time. mtime is the archive's `to` (the end of the footage,
as a recorder's file would have), falling back to `created_at`; `user.vidfs.created_at` keeps the latter.
xattrs: `from`, `to`, `camera_id`, `camera`, `stream_id`, `stream_type`, `has_sound`, `width`, `height`,
`created_at`, `updated_at`, `type`, `status`.

Auth: `POST /token {"login","password"}` → `access_token`, sent as `Authorization: Bearer` with `X-Client`
(the `client` option, default `web`) and `X-UUID`, a device id generated once per provider instance and kept
in `<state_dir>/device-uuid` (0600, written atomically, race-free with `link`), so the VMS always sees the
same device across mounts rather than a new one per mount (AIPIX limits sessions: its 419, "session limit
exceeded", is explained in the error). The token lifetime is undocumented: when
the token is a JWT its `exp` is honoured (renewed ahead of it), else we log in again on a 401.

Listing: the whole archive is one scan, `GET /downloads?per_page&page&from&to` over `[now - window, now +
1 day]` (UTC, `YYYY-MM-DD HH:MM:SS`; the day of margin absorbs clock skew; the dates filter the *creation*
date of the archive). Page 1 tells `meta.last_page` and `meta.total`; the other pages are fetched
concurrently (at most 8 at a time) and merged by `vidfs.providers.paging` (one state of the list: pages
answered under another total are asked again; each item once, by id); without `meta`, page after page while
`links.next` says one follows. Page links are not followed: some versions point them at
`/users/downloads`. Camera names are fetched once per scan (at most 8 at a time; a failure keeps the last
known name). One scan answers every directory, each once: the engine caches each listing itself, so a
second `list()` of a directory means it wants fresh data (its TTL ran out, or a 404 invalidated it) and
starts a new scan; a scan also ages out after `scan_cache` (60 s), or ten times that for a directory no
scan has answered yet. So `ls -lR` (the root, then every camera and stream directory, with the engine's
HEADs in between) costs one scan when it takes less than ten minutes, and a vanished archive disappears at
the next look. Concurrent callers share one scan in flight.
Items with `is_file_exists: false` (deleted archives) are hidden items (`vidfs ls`) of their stream
directory, else of the nearest directory shown (a camera, the root).
A 422 names the rejected fields.

Bytes: an item's `url` ending in `/` is a storage base joined with the URL-encoded `name`; any other `url` is
the file itself. No size in the API: the engine HEADs. Storage on another origin gets no credentials; storage
on the API's own origin gets the Bearer, X-Client and X-UUID (a 401 there logs in again). URLs do not expire.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from sys import intern
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import trio

from vidfs.catalog.carry import carried
from vidfs.config.types import ProviderConfig
from vidfs.config.units import parse_duration
from vidfs.errors import AuthError, ConfigError, InvalidRemoteData, NotFoundError, RemoteIOError, redact_url
from vidfs.http.client import json_object, same_origin
from vidfs.http.policy import laravel_messages, raise_for_status
from vidfs.model import Folder, HiddenItem, Listing, StreamLease, Video, frozen, frozen_extra
from vidfs.providers.auth import Token, TokenKeeper, jwt_expiry
from vidfs.providers.base import OptionSpec, ProviderBase, ProviderContext, ProviderSpec, login_options
from vidfs.providers.once import AskedOnce
from vidfs.providers.paging import Page, numbered_pages
from vidfs.providers.state import device_uuid

ROOT_ID = "aipix:root"
CLIENTS = ("ios-cctv", "android-cctv", "thick-legal", "web")
CAMERA_CONCURRENCY = 8
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
TO_MARGIN = 86_400.0  # `to` = now + 1 day: an archive made "now" by a server whose clock runs ahead is kept
DEVICE_FILE = "device-uuid"
MAX_TOKEN_MARGIN = 60.0
UNKNOWN_CAMERA = "unknown"
FIRST_VISIT_AGES = 10  # a scan answers directories never listed before while younger than this × scan_cache

_CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "ts": "video/mp2t",
    "webm": "video/webm",
}


def format_date(epoch: float) -> str:
    """The API's date format, UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime(DATE_FORMAT)


def parse_time(value: object) -> float | None:
    """`from`/`to` ("YYYY-MM-DD HH:MM:SS", UTC) and `created_at`/`updated_at` (ISO 8601 with Z)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def file_url(url: str, name: str) -> str:
    """A `url` ending in `/` is a storage base for the URL-encoded `name`; any other is the file itself."""
    return url + quote(name, safe="") if url.endswith("/") else url


MAX_SHARED_BASES = 4096  # storage bases kept as one shared handle each (a camera's archives share one)


def download_url(video: Video) -> str:
    """Where a video's bytes are: its handle's `url`, or its `base` joined with its name (`file_url`)."""
    url, base = video.handle.get("url"), video.handle.get("base")
    return url if url is not None else file_url(base, video.name) if base else ""


@dataclass
class _Scan:
    """One scan of the archive, as listings per folder id."""

    listings: dict[str, Listing]
    files: int
    started: float = 0.0
    finished: float = 0.0
    pages: int = 0
    items: int = 0
    served: set[str] = field(default_factory=set)  # folder ids already answered from this scan

    def video(self, remote_id: str) -> Video | None:
        """A file of this scan by its id, looked up when a storage refusal asks (a table made with every
        scan was 5 MiB of a 100,000-archive camera, kept for the mount's life and mostly unused)."""
        found = (e for listing in self.listings.values() for e in listing.entries if e.remote_id == remote_id)
        return next((e for e in found if isinstance(e, Video)), None)


class AipixProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        self._state_dir = context.state_dir
        where = self._where
        self._base = str(options["base_url"]).rstrip("/")
        self._login_name = str(options["login"])
        self._password = self._secret("password")
        window = options.get("window")
        self._window = parse_duration(window if window is not None else "30d", where=f"{where} key 'window'")
        if self._window <= 0:
            raise ConfigError(f"{where} key 'window': must be longer than 0")
        scan_cache = options.get("scan_cache")
        self._scan_ttl = parse_duration(
            scan_cache if scan_cache is not None else "60s", where=f"{where} key 'scan_cache'"
        )
        client = str(options.get("client") or "web")
        if client not in CLIENTS:
            raise ConfigError(f"{where} key 'client': expected one of {', '.join(CLIENTS)}, got {client!r}")
        self._client = client
        per_page = int(options["per_page"]) if options.get("per_page") is not None else 100
        if per_page < 1:
            raise ConfigError(f"{where} key 'per_page': must be at least 1")
        self._per_page = per_page
        self._tokens = TokenKeeper(self._login, name=self.instance, log=self._log)
        self._device_id: str | None = None
        self._scan: _Scan | None = None
        self._scan_lock = trio.Lock()
        self._listed: set[str] = set()  # directories some scan answered (a next listing wants fresh data)
        self._camera_names: dict[str, str] = {}
        self._bases: dict[str, Mapping[str, str]] = {}  # storage base → the handle its archives share

    @property
    def device_file(self) -> Path:
        return self._state_dir / DEVICE_FILE

    def device_id(self) -> str:
        """The X-UUID: generated once, kept in the state dir so every mount is the same device."""
        if self._device_id is None:
            self._device_id = device_uuid(self.device_file, self._log, self.instance)
        return self._device_id

    # ------------------------------------------------------------------------------------------- auth
    def _device_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "X-Client": self._client, "X-UUID": self.device_id()}

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {**self._device_headers(), "Authorization": f"Bearer {token}"}

    def _session_limit(self, response: httpx.Response) -> AuthError:
        return AuthError(
            f"{self.instance}: AIPIX session limit exceeded (HTTP 419{_detail(response)}): the account "
            f"{self._login_name} has too many active sessions or devices; end one in the VMS, or raise the "
            f"limit (this filesystem is one device, its id kept in {self.device_file})",
            status=419,
        )

    async def _login(self) -> Token:
        response = await self._http.request(
            "POST",
            f"{self._base}/token",
            tag=self._tag,
            json={"login": self._login_name, "password": self._password},
            headers=self._device_headers(),
        )
        status = response.status_code
        if status == 419:
            raise self._session_limit(response)
        if status in (400, 401, 403, 422):
            detail = laravel_messages(response)
            raise AuthError(
                f"{self.instance}: AIPIX login refused for {self._login_name}: {detail}", status=status
            )
        raise_for_status(response, f"{self.instance}: AIPIX login", explain=laravel_messages)
        document = json_object(response, f"{self.instance}: AIPIX login")
        token = document.get("access_token")
        if not isinstance(token, str) and isinstance(document.get("data"), Mapping):
            token = document["data"].get("access_token")
        if not isinstance(token, str) or not token:
            raise InvalidRemoteData(f"{self.instance}: AIPIX login answered without an access_token")
        now = time.time()
        expiry = jwt_expiry(token)
        expires_in = document.get("expires_in")
        if expiry is None and isinstance(expires_in, int | float) and expires_in > 0:
            expiry = now + float(expires_in)
        self._log.info(
            "%s: logged in to AIPIX as %s (token %s)",
            self.instance,
            self._login_name,
            f"valid {expiry - now:.0f}s" if expiry is not None else "lifetime unknown",
        )
        return Token(token, expiry, now)

    async def _get(self, url: str, *, params: Mapping[str, Any] | None = None, what: str) -> httpx.Response:
        """GET on the API with the session headers; log in again once on 401. An error status raises the
        failure policy's error with AIPIX's field messages (a 422 names the rejected fields), or the
        explained session limit (419)."""
        response = await self._tokens.call(
            lambda token: self._http.request(
                "GET", url, tag=self._tag, params=params, headers=self._auth_headers(token)
            ),
            explain=lambda _response: what,
        )
        if response.status_code == 419:
            raise self._session_limit(response)
        raise_for_status(response, f"{self.instance}: {what}", explain=laravel_messages)
        return response

    # ------------------------------------------------------------------------------------------- scan
    async def _page(self, number: int, params: Mapping[str, Any], cameras: AskedOnce) -> Page:
        """One page of the archive list, with what its Laravel `meta` and `links` say of the others; the
        cameras it names for the first time are asked for their names before its entries are made."""
        what = f"archive list page {number}"
        response = await self._get(f"{self._base}/downloads", params={**params, "page": number}, what=what)
        document = json_object(response, f"{self.instance}: {what}")
        data = document.get("data")
        if not isinstance(data, list):
            raise InvalidRemoteData(f"{self.instance}: {what}: `data` is not a list")
        meta: Mapping[str, Any] = document["meta"] if isinstance(document.get("meta"), Mapping) else {}
        links = document.get("links")
        more = bool(links["next"]) if isinstance(links, Mapping) and "next" in links else None
        # Each item reduced to what the scan keeps the moment its page arrives: the raw JSON of 100,000
        # items, held until the last page came, was most of a big scan's peak memory.
        items = [item for item in data if _item_key(item) is not None]
        await cameras.learn({_camera_key(item) for item in items})
        archives = [self._archive(item, cameras.values) for item in items]
        return Page(archives, _count(meta.get("total")), _count(meta.get("last_page"), least=1), more)

    async def _fetch_items(self, cameras: AskedOnce) -> tuple[list[_Archive], int]:
        """Every archive item of the window: page 1, then the rest concurrently once `meta` tells the last
        page and the total (`vidfs.providers.paging`: one state of the list, each item once)."""
        now = time.time()
        params = {
            "per_page": self._per_page,
            "from": format_date(now - self._window),
            "to": format_date(now + TO_MARGIN),
        }
        paged = await numbered_pages(lambda number: self._page(number, params, cameras), key=_archive_key)
        if not paged.settled:
            self._log.warning(
                "%s: the archive list kept changing while it was read (%d pages, %d asked again): it may "
                "miss an archive until the next scan",
                self.instance,
                paged.requests,
                paged.again,
            )
        elif paged.again or paged.repeats:
            self._log.info(
                "%s: the archive list changed during the scan: %d pages asked again, %d repeats dropped",
                self.instance,
                paged.again,
                paged.repeats,
            )
        return paged.items, paged.requests

    async def _camera_display_name(self, camera_id: str) -> str:
        pretty = await self._camera_name(camera_id)
        return pretty if pretty is not None else f"camera-{camera_id}"

    async def _camera_name(self, camera_id: str) -> str | None:
        """The camera's `pretty_name`, None when it has none; a failure keeps the last known name."""
        what = f"camera {camera_id}"
        try:
            response = await self._get(f"{self._base}/cameras/{quote(camera_id, safe='')}", what=what)
        except NotFoundError:
            return None
        except (RemoteIOError, AuthError) as exc:
            if isinstance(exc, AuthError) and exc.status != 403:
                raise  # the session is gone (401 after a new login, 419): the whole scan fails
            self._log.warning("%s: %s: %s", self.instance, what, exc)
            return self._camera_names.get(camera_id)
        try:
            document = response.json()
        except ValueError:
            return self._camera_names.get(camera_id)
        data = document.get("data") if isinstance(document, dict) else None
        camera = data if isinstance(data, dict) else document
        pretty = camera.get("pretty_name") if isinstance(camera, dict) else None
        if isinstance(pretty, str) and pretty.strip():
            return pretty.strip()
        return None

    async def _scan_now(self) -> _Scan:
        started = time.monotonic()
        known = {UNKNOWN_CAMERA: "unknown camera"}
        cameras = AskedOnce(self._camera_display_name, concurrency=CAMERA_CONCURRENCY, known=known)
        items, pages = await self._fetch_items(cameras)
        names = cameras.values
        camera_ids = names.keys() - {UNKNOWN_CAMERA}
        self._camera_names.update((camera_id, names[camera_id]) for camera_id in camera_ids)
        scan = self._build(items, names)
        scan.started, scan.finished, scan.pages, scan.items = started, time.monotonic(), pages, len(items)
        took = scan.finished - started
        what = f"{len(items)} items ({scan.files} files) in {pages} pages, {len(camera_ids)} cameras"
        self._log.info("%s: scanned the AIPIX archive: %s, %.2fs", self.instance, what, took)
        return scan

    def _archive(self, item: dict[str, Any], camera_names: Mapping[str, str]) -> _Archive:
        camera_id = intern(_camera_key(item))  # one string per camera and stream, not one per archive
        return _Archive(camera_id, intern(_stream_key(item)), self._entry(item, camera_names[camera_id]))

    def _build(self, items: list[_Archive], camera_names: Mapping[str, str]) -> _Scan:
        file_count = 0
        tree: dict[str, dict[str, list[Video]]] = {}
        hidden: dict[str, list[HiddenItem]] = {}
        for archive in items:
            camera_id, stream_type = archive.camera_id, archive.stream_type
            entry = archive.entry
            if isinstance(entry, Video):
                file_count += 1
                tree.setdefault(camera_id, {}).setdefault(stream_type, []).append(entry)
            else:
                hidden.setdefault(f"{camera_id}/{stream_type}", []).append(entry)
        listings: dict[str, Listing] = {}
        root_entries: list[Folder] = []
        root_hidden: list[HiddenItem] = []
        for camera_id, streams in sorted(tree.items()):
            stream_entries: list[Folder] = []
            camera_hidden: list[HiddenItem] = []
            for stream_type, files in sorted(streams.items()):
                folder_id = f"{camera_id}/{stream_type}"
                mtime = _newest(files)
                stream_entries.append(
                    Folder(
                        folder_id,
                        stream_type,
                        mtime=mtime,
                        extra=frozen_extra({"camera_id": _id_value(camera_id), "stream_type": stream_type}),
                    )
                )
                listings[folder_id] = Listing(tuple(files), tuple(hidden.pop(folder_id, ())))
            for folder_id in [k for k in hidden if k.split("/", 1)[0] == camera_id]:
                stream_type = folder_id.split("/", 1)[1]
                camera_hidden += [
                    HiddenItem(h.remote_id, f"{stream_type}/{h.name}", h.status)
                    for h in hidden.pop(folder_id)
                ]
            listings[camera_id] = Listing(tuple(stream_entries), tuple(camera_hidden))
            display = camera_names.get(camera_id, f"camera-{camera_id}")
            root_entries.append(
                Folder(
                    camera_id,
                    display,
                    mtime=_newest(stream_entries),
                    extra=frozen_extra({"camera_id": _id_value(camera_id), "camera": display}),
                )
            )
        for folder_id, items_hidden in sorted(hidden.items()):
            camera_id, stream_type = folder_id.split("/", 1)
            camera = camera_names.get(camera_id, f"camera-{camera_id}")
            root_hidden += [
                HiddenItem(h.remote_id, f"{camera}/{stream_type}/{h.name}", h.status) for h in items_hidden
            ]
        listings[ROOT_ID] = Listing(tuple(root_entries), tuple(root_hidden))
        return _Scan(listings, file_count)

    def _entry(self, item: Mapping[str, Any], camera: str) -> Video | HiddenItem:
        remote_id = str(item["id"])
        name = str(item.get("name") or "").strip() or f"archive-{remote_id}"
        if item.get("is_file_exists") is False:
            return HiddenItem(remote_id, name, "file deleted")  # is_file_exists: false
        url = item.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
            return HiddenItem(remote_id, name, "no download url")
        stream: Mapping[str, Any] = item["stream"] if isinstance(item.get("stream"), Mapping) else {}
        kind = item.get("type")
        content_type = _CONTENT_TYPES.get(kind.lower()) if isinstance(kind, str) else None
        mtime = parse_time(item.get("to")) or parse_time(item.get("created_at"))
        extra = frozen_extra(
            {
                "from": item.get("from"),
                "to": item.get("to"),
                "camera_id": stream.get("camera_id"),
                "stream_id": stream.get("id"),
                "stream_type": stream.get("type"),
                "has_sound": stream.get("has_sound"),
                "width": stream.get("width"),
                "height": stream.get("height"),
                "created_at": item.get("created_at"),
                "updated_at": item.get("updated_at"),
                "type": kind,
                "status": item.get("status") if isinstance(item.get("status"), str | int) else None,
                "camera": camera,
            }
        )
        video = Video(
            remote_id=remote_id,
            name=name,
            size=None,
            mtime=mtime or parse_time(item.get("updated_at")),
            content_type=content_type,
            extra=extra,
            handle=self._handle(url),
        )
        return carried(video, f"{_camera_key(item)}/{_stream_key(item)}")  # a scan lists every directory

    def _handle(self, url: str) -> Mapping[str, str]:
        """A video's handle: a storage base (a `url` ending in `/`) as one map shared by every archive under
        it, the name being the video's own; any other URL as the file's. At 100,000 archives a joined URL
        each was 12.5 MiB of the daemon (and 4.6 more for its map), for a few bases per camera."""
        if not url.endswith("/"):
            return frozen({"url": url})
        shared = self._bases.get(url) or frozen({"base": url})
        if len(self._bases) < MAX_SHARED_BASES:
            self._bases.setdefault(url, shared)
        return shared

    def _usable(self, scan: _Scan | None, folder_id: str) -> bool:
        """Whether `scan` may answer its first listing of `folder_id`: while younger than `scan_cache`, or
        ten times that for a directory no scan answered yet (a walk's first visit wants no fresher data than
        its siblings got; a walk of 100,000 archives that spent 80 s on sizes before the next directory
        scanned all again: 1,000 more requests, 135 MiB more at the daemon's peak)."""
        if scan is None or folder_id in scan.served:
            return False
        limit = self._scan_ttl if folder_id in self._listed else self._scan_ttl * FIRST_VISIT_AGES
        return time.monotonic() - scan.finished < limit

    async def _scan_for(self, folder_id: str | None) -> _Scan:
        """A scan for one directory listing: the current one if it has not answered this directory yet and
        is younger than `scan_cache`, else a new one. `None`: a scan started after this call (fresh data).
        Concurrent callers share one scan in flight."""
        asked = time.monotonic()
        scan = self._scan
        if folder_id is not None and self._usable(scan, folder_id):
            assert scan is not None
            scan.served.add(folder_id)
            self._listed.add(folder_id)
            return scan
        async with self._scan_lock:
            scan = self._scan
            reusable = scan is not None and (
                scan.started >= asked or (folder_id is not None and self._usable(scan, folder_id))
            )
            if not reusable:
                scan = self._scan = await self._scan_now()
            assert scan is not None
            if folder_id is not None:
                scan.served.add(folder_id)
                self._listed.add(folder_id)
            return scan

    # ------------------------------------------------------------------------------------ protocol
    async def list(self, folder: Folder) -> Listing:
        scan = await self._scan_for(folder.remote_id)
        listing = scan.listings.get(folder.remote_id)
        if listing is None:
            raise NotFoundError(f"{self.instance}: {folder.name!r} is no longer in the AIPIX archive")
        return listing

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        url = download_url(video)
        if previous is not None and not same_origin(url, self._base):
            # The storage refused a plain URL: the archive may be gone or have moved. Look again.
            scan = await self._scan_for(None)
            fresh = scan.video(video.remote_id)
            if fresh is None:
                raise NotFoundError(
                    f"{self.instance}: archive {video.remote_id} is gone from {redact_url(url)}"
                )
            url = download_url(fresh) or url
        if not url:
            raise InvalidRemoteData(f"{self.instance}: archive {video.remote_id} has no download url")
        if not same_origin(url, self._base):
            return StreamLease(url=url)  # another origin: no credentials; the URL does not expire
        if previous is not None:
            token = await self._tokens.renew(
                previous.headers.get("Authorization", "").removeprefix("Bearer ") or None
            )
        else:
            token = await self._tokens.get()
        headers = self._auth_headers(token)
        headers.pop("Accept", None)
        return StreamLease(
            url=url, headers=headers, expires_at=self._tokens.expires_at, uses_provider_auth=True
        )


@dataclass(frozen=True, slots=True)
class _Archive:
    """One archive item of the list, reduced as its page arrives: its camera and stream, and its entry
    (with its camera's display name: see `vidfs.providers.once`), which holds its id (a re-listing's
    entries are the previous ones, `vidfs.catalog.carry`: 100,000 ids of its own were 5 MiB more)."""

    camera_id: str
    stream_type: str
    entry: Video | HiddenItem


def _archive_key(archive: _Archive) -> str:
    return archive.entry.remote_id


def _item_key(item: Any) -> str | None:
    """An archive's id (items without one are dropped)."""
    if not isinstance(item, dict) or item.get("id") is None:
        return None
    return str(item["id"])


def _count(value: object, *, least: int = 0) -> int | None:
    """A `meta` number (total, last_page), None when absent or not a whole number of at least `least`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= least:
        return value
    return None


def _camera_key(item: Mapping[str, Any]) -> str:
    stream = item.get("stream")
    camera_id = stream.get("camera_id") if isinstance(stream, Mapping) else None
    if camera_id is None or isinstance(camera_id, bool) or str(camera_id).strip() == "":
        return UNKNOWN_CAMERA
    return str(camera_id).strip()


def _stream_key(item: Mapping[str, Any]) -> str:
    stream = item.get("stream")
    if not isinstance(stream, Mapping):
        return "unknown stream"
    kind = stream.get("type")
    if isinstance(kind, str) and kind.strip():
        return kind.strip()
    if stream.get("id") is not None:
        return f"stream-{stream['id']}"
    return "unknown stream"


def _id_value(key: str) -> str | None:
    return None if key == UNKNOWN_CAMERA else key


def _newest(entries: list[Video] | list[Folder]) -> float | None:
    times = [e.mtime for e in entries if e.mtime is not None and math.isfinite(e.mtime)]
    return max(times) if times else None


def _detail(response: httpx.Response) -> str:
    text = laravel_messages(response)
    prefix = f"HTTP {response.status_code}"
    return text[len(prefix) :] if text.startswith(prefix) else ""


SPEC = ProviderSpec(
    type="aipix",
    options={
        **login_options("login"),  # base_url: the API root, e.g. https://vms.example.com/api/v1
        "window": OptionSpec((str, int, float), default="30d"),  # how far back the archive list reaches
        "client": OptionSpec(str, default="web"),  # X-Client: ios-cctv | android-cctv | thick-legal | web
        "per_page": OptionSpec(int, default=100),  # archive items asked per page
        "scan_cache": OptionSpec((str, int, float), default="60s"),  # how long one scan serves directories
    },
    factory=AipixProvider,
)
