"""IVS VALT (REST API v3): rooms → records → videos, downloaded through short-lived signed URLs.

Layout: `/<instance>/<room>/<record>/<video file>`. VALT users think in rooms (the place a session was
recorded) and records (one session, one video per camera), so the tree is the VALT web UI's: a directory per
room, a directory per record inside it, and the record's videos as files. Records without a room go to
`(no room)`. Two records of one room with the same name (a recurring class) are told apart by their id
(`Skills check [102]`, `Skills check [103]`); `ls -t` sorts them by date since a record's mtime is its
`created` time (also the mtime of its videos; a room's is its newest record's).

`layout = "rooms"` drops the record level: `/<instance>/<room>/<video file>`, every video of a room's records
in the room's directory (VALT's file names already carry the record's name, camera and time). It is for
archives of tens of thousands of records, where a directory per record is what a walk pays for: pyfuse3
cannot let the kernel keep directory listings (`FOPEN_CACHE_DIR`), so each directory costs four FUSE round
trips per `ls -lR` however warm the cache (10,000 records: 40,529 requests, 2.4-2.9 s of a warm walk).
Listing a room then asks the details and download URLs of all its records (`RECORDS_AT_ONCE` at a time);
a record that vanished meanwhile is left out of the room, listed among its hidden items. Names shared within
a room get the usual ` [<id>]` (`vidfs.catalog.naming`). File ids are the same in both layouts, so the disk
cache serves either.

A video's file name is the one VALT gives the download: the `filename` parameter of the signed URL (e.g.
`Skills check Ceiling cam 05-07-2025 10-18-AM.mp4`), which VALT form-encodes and then percent-encodes again
(`Just%2Ba%2Broom...`), so it is decoded twice. When the URL has no `filename`, the record's name plus the
URL's extension is used. Videos of one record sharing a name get ` [<video id>]` before the extension.

xattrs (`user.vidfs.*`): `room`, `room_id`, `record`, `record_id`, `video_id`, `author`, `cameras` (names,
comma-separated), `duration` (seconds, as VALT reports it), `markers` (count; files only, since markers come
with the record details), `type`.

API quirks handled:
- `POST /login` JSON → `{"data":{"access_token":"<32 hex>"}}`; the token goes in `?access_token=` on every
  call (only to the API origin); its lifetime is undocumented, so we log in again once on a 401, whichever
  of the two documented bodies it has (`No API key provided`, `Bad credentials.`); a second 401 is EACCES.
  A refused login answers `{"data":"Invalid username or password"}`.
- `POST /records` pages with `offset`/`limit` and says nothing about totals, and a server may cap `limit`
  silently: `vidfs.providers.paging.offset_pages` asks pages that overlap by one record, several ahead at
  once, and fills the holes a list that moved meanwhile leaves (its essay says how); a first page shorter
  than asked is the end or the cap, and one more page tells which. One pass serves the root and the room
  listings for a couple of seconds, or ten times as long as the pass took (`RECORDS_REUSE`), so `ls -R`
  costs one pass over the records, not one per room, however many records there are. In layout "rooms"
  it serves each room once, for up to five minutes (`ROOMS_PASS_REUSE`), and lets go of its records.
- Record ids are integers (VALT 5) or UUIDs (VALT 6); a record's `videos` (key unknown, we also try
  `video_ids`) are ids or objects with `id`.
- `GET /records/download/{rec}/{vid}` answers `{"data":{"url"}}` (the wiki's table) or `{"url"}` (its
  sample): both are accepted. The URL is on another origin (the distribution host) and carries its own JWT
  (`access_token`, `exp - iat` = 30 min); its `exp` is the lease's expiry, the engine renews ahead of it and
  once more on a 401. Nothing of ours is ever sent there: the URL is used exactly as the API gave it.
- No sizes anywhere: videos are listed with `size=None`; the engine HEADs the signed URL (bounded
  concurrency) and keeps the size for the mount's life. Listing a record resolves each video's URL (for its
  name); each is handed out once more, to the HEAD, while fresh (`vidfs.providers.listed_urls`).
- 404 is `application/problem+json` `{"detail":"Not Found"}`: a vanished record or video is ENOENT.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote_plus, urljoin, urlsplit

import trio

from vidfs.catalog.carry import carried
from vidfs.catalog.naming import CONTENT_TYPE_EXTENSIONS, split_ext
from vidfs.config.types import ProviderConfig
from vidfs.errors import AuthError, ConfigError, InvalidRemoteData, NotFoundError, VidfsError, redact_url
from vidfs.http.client import dig, json_object
from vidfs.http.policy import raise_for_status
from vidfs.model import Folder, FrozenMap, HiddenItem, Listing, StreamLease, Video, frozen, frozen_extra
from vidfs.providers.auth import Token, TokenKeeper, expiry_from_url
from vidfs.providers.base import OptionSpec, ProviderBase, ProviderContext, ProviderSpec, login_options
from vidfs.providers.listed_urls import ListedUrl, ListedUrls
from vidfs.providers.paging import offset_pages
from vidfs.providers.valt_records import (
    NO_ROOM_ID,
    ROOM_PREFIX,
    ListedRecord,
    RecordsPass,
    RoomRecord,
    epoch,
    listed_record,
    record_extra,
    record_key,
    valt_id,
)
from vidfs.tasks import for_each

ROOT_ID = "valt:root"
RECORDS_REUSE = 2.0  # seconds one POST /records pass serves further listings, at least …
RECORDS_REUSE_PER_SCAN = 10.0  # … and this many times the pass took (10,000 records: not one per room)
# Layout "rooms": a pass serves each room once (`RecordsPass.take`), for this long. A walk of 1,004 rooms
# (100,000 records) at the pass's usual 30 s made a new pass every 30 s (1,023 POSTs each), and each new
# one held again the records of all the rooms not listed yet: 90,000 folders still held at the walk's end.
ROOMS_PASS_REUSE = 300.0
# Layout "records" is a directory per record, and every walk pays 4 FUSE requests for each however warm
# the cache (OPENDIR, two READDIRPLUS, RELEASEDIR: pyfuse3 cannot let the kernel keep a listing; 100,000
# records at 20 ms: 16.0 s warm and 244 MiB, against 0.71 s and 140 MiB in layout "rooms"). A pass this big
# says so.
LAYOUT_HINT_RECORDS = 20_000
DOWNLOAD_CONCURRENCY = 8
RECORDS_AT_ONCE = 8  # records whose details a room listing asks at once (layout "rooms"), each with its URLs
LAYOUTS = ("records", "rooms")
VIDEO_KEYS = ("videos", "video_ids", "videoIds")
_EXT_TYPES = {ext: ctype for ctype, ext in CONTENT_TYPE_EXTENSIONS.items() if ext}


def display_name_from_url(url: str) -> str | None:
    """The `filename` parameter of a VALT download URL, decoded (VALT encodes it twice)."""
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key.lower() == "filename" and value.strip():
            return unquote_plus(value).strip() or None
    return None


def url_extension(url: str) -> str:
    """`.mp4` from `.../1_rec_1.mp4?...`; "" when the path has none."""
    path = urlsplit(url).path
    _stem, ext = split_ext(path.rsplit("/", 1)[-1])
    return ext.lower()


def video_ids(details: Mapping[str, Any]) -> list[str]:
    """A record's video ids: a list of ids or of objects with `id` (the exact key is undocumented)."""
    for key in VIDEO_KEYS:
        raw = details.get(key)
        if not isinstance(raw, list):
            continue
        ids: list[str] = []
        for item in raw:
            video_id = valt_id(item.get("id")) if isinstance(item, Mapping) else valt_id(item)
            if video_id is not None and video_id not in ids:
                ids.append(video_id)
        return ids
    return []


def unique_video_names(items: list[tuple[str, str]]) -> list[str]:
    """(video id, raw name) → names; names shared within the record get ` [<video id>]` before the
    extension (decided by id, so the listing order does not matter)."""
    counts = Counter(name for _vid, name in items)
    out: list[str] = []
    for video_id, name in items:
        if counts[name] > 1:
            stem, ext = split_ext(name)
            name = f"{stem} [{video_id}]{ext}"
        out.append(name)
    return out


_NO_HANDLE = FrozenMap()
UrlPairs = list[tuple[str, str]]  # (remote id, download URL) of a listing's videos


def _handle(remote_id: str, record_id: str, video_id: str) -> Mapping[str, str]:
    """A video's ids are the two halves of its remote id ("<record>/<video>"): no handle (a map of about 180
    bytes a video, 17 MiB at 100,000) unless an id holds a "/", which VALT's integers and UUIDs never do."""
    if remote_id.count("/") == 1:
        return _NO_HANDLE
    return frozen({"record": record_id, "video": video_id})


def reusable(listed: ListedUrl, now: float) -> bool:
    """A listed URL fresh enough to hand out as a new lease: half its lifetime (at most a minute) ahead."""
    expires_at = expiry_from_url(listed.url)
    if expires_at is None:
        return now - listed.obtained_at < 60.0
    lifetime = max(0.0, expires_at - listed.obtained_at)
    return now < expires_at - min(60.0, 0.5 * lifetime)


class ValtProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        self._base = str(options["base_url"]).rstrip("/")
        self._username = str(options["username"])
        self._password = self._secret("password")
        self._page_size = max(1, int(options.get("page_size") or 200))
        layout = str(options.get("layout") or "records")
        if layout not in LAYOUTS:
            raise ConfigError(
                f"{self._where} key 'layout': expected one of {', '.join(LAYOUTS)}, got {layout!r}"
            )
        self._rooms_layout = layout == "rooms"
        self.listing_calls = RECORDS_AT_ONCE if self._rooms_layout else 1
        # VALT tokens have no known lifetime: used until refused.
        self._tokens = TokenKeeper(self._login, name=self.instance, log=self._log)
        self._records_lock = trio.Lock()
        self._records: RecordsPass | None = None
        self._records_at = 0.0
        self._records_reuse = RECORDS_REUSE
        self._layout_hinted = False
        self._pass_rooms: dict[tuple[str, str], tuple[str, str]] = {}  # during a pass (`listed_record`)
        self._pass_kept: dict[str, Folder] = {}  # during a pass: the previous pass's folders
        self._urls = ListedUrls()  # the listings' download URLs, until each is handed out once

    # -------------------------------------------------------------------------------------------- auth
    async def _login(self) -> Token:
        response = await self._http.request(
            "POST",
            self._base + "/login",
            tag=self._tag,
            json={"username": self._username, "password": self._password},
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            raise AuthError(
                f"{self.instance}: VALT login refused for user {self._username!r}: {_failure(response)}",
                status=response.status_code,
            )
        raise_for_status(response, f"{self.instance}: VALT login", explain=_failure)
        data = json_object(response, f"{self.instance}: VALT login")
        token = dig(data, "data", "access_token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise InvalidRemoteData(f"{self.instance}: VALT login answered without an access_token")
        self._log.info("%s: logged in to VALT as %s", self.instance, self._username)
        return Token(token)

    async def _api(self, method: str, path: str, *, what: str, json: Any = None) -> dict[str, Any]:
        """A JSON call with `?access_token=`; one new login on a 401, whichever of VALT's two 401 bodies
        (`No API key provided`, `Bad credentials.`) it has: both mean the token is no good."""
        response = await self._tokens.call(
            lambda token: self._http.request(
                method,
                self._base + path,
                tag=self._tag,
                params={"access_token": token},
                json=json,
                headers={"Accept": "application/json"},
            ),
            explain=_failure,
        )
        raise_for_status(response, f"{self.instance}: {what}", explain=_failure)
        return json_object(response, f"{self.instance}: {what}")

    # ----------------------------------------------------------------------------------------- records
    async def _records_page(self, offset: int, limit: int) -> list[ListedRecord | RoomRecord | None]:
        document = await self._api(
            "POST", "/records", json={"offset": offset, "limit": limit}, what="listing records"
        )
        page = dig(document, "data", "records")
        if page is None:
            page = document.get("records", document.get("data"))
        if not isinstance(page, list):
            raise InvalidRemoteData(f"{self.instance}: listing records: data.records is not a list")
        shown = not self._rooms_layout
        kept = self._pass_kept
        return [listed_record(record, self._pass_rooms, shown=shown, previous=kept) for record in page]

    async def _all_records(self, room: str | None = None) -> RecordsPass:
        """Every record (`vidfs.providers.paging.offset_pages`: pages overlapping by one record, asked
        ahead concurrently, holes left by a moving list filled), as the listings use them; reused briefly:
        one pass serves the root and every room (100 rooms of 10,000 records: not a million looked at), but
        not a `room` whose records it gave away (`RecordsPass.take`)."""
        async with self._records_lock:
            now = time.monotonic()
            held = self._records
            reuse = self._records_reuse if room is None else max(self._records_reuse, ROOMS_PASS_REUSE)
            if held is not None and now - self._records_at < reuse and room not in held.taken:
                return held
            self._pass_rooms = {}
            self._pass_kept = held.folders() if held is not None and not self._rooms_layout else {}
            try:
                paged = await offset_pages(self._records_page, size=self._page_size, key=record_key)
            finally:
                self._pass_rooms, self._pass_kept = {}, {}
            if not paged.settled:
                self._log.warning(
                    "%s: the records kept changing while they were read (%d pages, %d asked again)",
                    self.instance,
                    paged.requests,
                    paged.again,
                )
            self._records = records = RecordsPass.of(paged.items)
            if not self._rooms_layout and not self._layout_hinted and len(paged.items) >= LAYOUT_HINT_RECORDS:
                self._layout_hinted = True
                self._log.info(
                    "%s: %d records, a directory each: every ls -lR, find or rsync asks 4 FUSE requests per "
                    'directory however warm the cache; %s layout = "rooms" lists each room\'s videos in it',
                    self.instance,
                    len(paged.items),
                    self._where,
                )
            self._records_at = time.monotonic()
            self._records_reuse = max(RECORDS_REUSE, RECORDS_REUSE_PER_SCAN * (self._records_at - now))
            return records

    # ----------------------------------------------------------------------------------------- listing
    async def list(self, folder: Folder) -> Listing:
        if folder.remote_id == ROOT_ID:
            return await self._list_rooms()
        if folder.remote_id == NO_ROOM_ID or folder.remote_id.startswith(ROOM_PREFIX):
            if self._rooms_layout:
                return await self._list_room_videos(folder)
            return await self._list_room(folder)
        return await self._list_record(folder)

    async def _list_rooms(self) -> Listing:
        return (await self._all_records()).rooms

    async def _list_room(self, folder: Folder) -> Listing:
        # Layout "records": its passes keep each record as the Folder its room's listing shows.
        return Listing(cast(tuple[Folder, ...], self._records_of(await self._all_records(), folder)))

    def _records_of(self, records: RecordsPass, folder: Folder) -> tuple[Folder | RoomRecord, ...]:
        found = records.by_room.get(folder.remote_id)
        if not found:  # rooms exist only through their records: this one is gone
            raise NotFoundError(f"{self.instance}: room {folder.name!r} has no records any more")
        return found

    async def _list_room_videos(self, folder: Folder) -> Listing:
        """Layout "rooms": the videos of every record of the room, in the records' list order."""
        records_pass = await self._all_records(folder.remote_id)
        records = self._records_of(records_pass, folder)
        listings: dict[str, Listing] = {}
        gone: list[HiddenItem] = []
        failures: list[VidfsError] = []
        listed_urls: UrlPairs = []

        async def fetch(record: Folder) -> None:
            try:
                listings[record.remote_id] = await self._list_record(record, listed_urls)
            except NotFoundError as exc:  # deleted since the records pass: not a reason to fail the room
                gone.append(HiddenItem(record.remote_id, record.name, f"record gone: {exc}"))
            except VidfsError as exc:  # raised below: a nursery would wrap it in an ExceptionGroup
                failures.append(exc)

        folders = [record if isinstance(record, Folder) else record.folder for record in records]
        asked_at = time.time()  # before any URL was given: their age is never underestimated
        await for_each(folders, fetch, workers=min(RECORDS_AT_ONCE, len(folders)))
        if failures:
            raise failures[0]
        # The room's URLs as one listing's: what the store keeps to tell a room's new videos at its next
        # listing is one tuple per room, not one per record (with a key and a string of its own: about 250
        # bytes a video, 25 MiB at 100,000).
        self._urls.remember(folder.remote_id, listed_urls, asked_at)
        records_pass.take(folder.remote_id)
        shown = [listings[record.remote_id] for record in folders if record.remote_id in listings]
        hidden = [item for listing in shown for item in listing.hidden] + gone
        hidden.sort(key=lambda item: item.remote_id)
        return Listing(tuple(entry for listing in shown for entry in listing.entries), tuple(hidden))

    async def _list_record(self, folder: Folder, listed_urls: UrlPairs | None = None) -> Listing:
        """A record's videos. Their URLs go to the store as this record's listing, or to `listed_urls` (a
        room listing's, layout "rooms"), as (remote id, URL): the remote ids the videos hold."""
        record_id = folder.remote_id
        document = await self._api("GET", f"/records/{quote(record_id, safe='')}", what=f"record {record_id}")
        details = document.get("data") if isinstance(document.get("data"), dict) else document
        assert isinstance(details, dict)
        ids = video_ids(details)
        urls: dict[str, str] = {}
        hidden: list[HiddenItem] = []
        failures: list[VidfsError] = []

        async def fetch(video_id: str) -> None:
            try:
                urls[video_id] = await self._download_url(record_id, video_id)
            except NotFoundError as exc:
                hidden.append(HiddenItem(f"{record_id}/{video_id}", video_id, f"no download: {exc}"))
            except VidfsError as exc:  # raised below: a nursery would wrap it in an ExceptionGroup
                failures.append(exc)

        asked_at = time.time()  # before any URL was given: their age is never underestimated
        await for_each(ids, fetch, workers=min(DOWNLOAD_CONCURRENCY, len(ids)))
        if failures:
            raise failures[0]
        record_name = str(details.get("name") or folder.name or record_id)
        ready = [video_id for video_id in ids if video_id in urls]
        raw_names = []
        for video_id in ready:
            url = urls[video_id]
            raw_names.append((video_id, display_name_from_url(url) or record_name + url_extension(url)))
        mtime = epoch(details.get("created")) or folder.mtime
        markers = details.get("markers")
        marker_count = len(markers) if isinstance(markers, list) else None
        base_extra = record_extra(details)
        entries: list[Video] = []
        for video_id, name in zip(ready, unique_video_names(raw_names), strict=True):
            remote_id = f"{record_id}/{video_id}"
            ext = split_ext(name)[1].lower() or url_extension(urls[video_id])
            entries.append(
                carried(  # the folder being listed: this record, or its room (layout "rooms")
                    Video(
                        remote_id=remote_id,
                        name=name,
                        size=None,  # VALT never tells: the engine HEADs the signed URL
                        mtime=mtime,
                        content_type=_EXT_TYPES.get(ext),
                        # Not deflated (`vidfs.model`): a listing of a record or a room is saved within
                        # seconds and its values let go then; deflating them (and the URLs, `ListedUrls`)
                        # was 6% of the CPU of a cold walk of 10,000 records.
                        extra=frozen_extra(
                            {
                                **base_extra,
                                "record_id": record_id,
                                "video_id": video_id,
                                "markers": marker_count,
                            },
                            pack=False,
                        ),
                        handle=_handle(remote_id, record_id, video_id),
                    )
                )
            )
        listed = [(video.remote_id, urls[video_id]) for video, video_id in zip(entries, ready, strict=True)]
        if listed_urls is None:
            self._urls.remember(record_id, listed, asked_at)
        else:
            listed_urls.extend(listed)
        hidden.sort(key=lambda item: item.remote_id)
        return Listing(tuple(entries), tuple(hidden))

    # ----------------------------------------------------------------------------------------- resolve
    async def _download_url(self, record_id: str, video_id: str) -> str:
        document = await self._api(
            "GET",
            f"/records/download/{quote(record_id, safe='')}/{quote(video_id, safe='')}",
            what=f"download URL of record {record_id} video {video_id}",
        )
        url = dig(document, "data", "url")
        if not isinstance(url, str):
            url = document.get("url")
        if not isinstance(url, str) or not url.strip():
            raise InvalidRemoteData(
                f"{self.instance}: download of record {record_id} video {video_id}: no url in the answer"
            )
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):  # absolute as a rule: nothing to parse
            url = urljoin(self._base + "/", url)
            if urlsplit(url).scheme not in ("http", "https"):
                raise InvalidRemoteData(f"{self.instance}: download URL {redact_url(url)} is not http(s)")
        return url

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        cached = self._urls.take(video.remote_id)
        if previous is None and cached is not None and reusable(cached, time.time()):
            return StreamLease(url=cached.url, expires_at=expiry_from_url(cached.url))
        record_id = video.handle.get("record")
        video_id = video.handle.get("video")
        if not record_id or not video_id:  # the usual case (`_handle`)
            record_id, _, video_id = video.remote_id.partition("/")
        url = await self._download_url(record_id, video_id)
        return StreamLease(url=url, expires_at=expiry_from_url(url))


def _failure(response: Any) -> str:
    """VALT's error bodies as one line: `{"error":{"code","message"}}`, `{"data":"..."}` (login) or
    problem+json `{"title","detail"}`."""
    status = f"HTTP {response.status_code}"
    try:
        data = response.json()
    except ValueError:
        return status
    if not isinstance(data, dict):
        return status
    message = dig(data, "error", "message")
    if not isinstance(message, str):
        message = data.get("data") if isinstance(data.get("data"), str) else None
    if not isinstance(message, str):
        message = data.get("detail") if isinstance(data.get("detail"), str) else data.get("message")
    if isinstance(message, str) and message.strip():
        return f"{message.strip()[:200]} ({status})"
    return status


SPEC = ProviderSpec(
    type="valt",
    options={
        **login_options("username"),  # base_url: the API root, e.g. https://valt.example.com/api/v3
        # Records per POST /records page. 200, not 50: the pass over all records comes before any room
        # listing, and at 20 ms 10,000 records took 205 pages, 0.7 s of a 10 s walk (a server that caps
        # `limit` is followed: `offset_pages`).
        "page_size": OptionSpec(int, default=200),
        "layout": OptionSpec(str, default="records"),  # "records": room/record/video; "rooms": room/video
    },
    factory=ValtProvider,
)
