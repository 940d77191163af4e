"""Pixop (Video Processing REST API v1): projects → videos, originals and processed versions.

Layout: `/<instance>/<project name>/<file>`. Originals keep their uploaded file name; a processed video is
named after its own file name with `.processed` before the extension (`interview_hd.processed.mp4`), so
restored versions are told apart at a glance and sort next to each other; `user.vidfs.kind` says
`original` or `processed` and `user.vidfs.parent_id` links a processed video to its source.

Auth: `GET accounts/v1/token` with HTTP Basic gives a JWT valid 15 minutes. We read its `exp` and log in
again ahead of it (20 % of its lifetime, at most a minute), and again at once on a 401
(`ExpiredJWTTokenException` and friends); a second 401 is an auth error (EACCES).

Listings are HAL pages: when page 1 tells `_embedded.totalFound` and its `_links.last` names the last page
(`page=N`), the other pages are asked concurrently at that href with their own `page` and merged by
`vidfs.providers.paging` (pages answered under another total are asked again); else `_links.next` is
followed page after page, as HAL means. The list entries lack sizes and status, so each video's details
(`videos/v1/video/{id}`) are fetched, with bounded concurrency: `upload.fileSize` is the size (the engine
HEADs the download when it is missing), `timeLastUpdated` the mtime; originals are files once uploaded,
processed videos once `processingStatus` is DONE; the rest are listed as hidden items for `vidfs ls`.
Bytes come from `media/v1/download/{original|processed}/{id}` on the same origin, with the JWT.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from vidfs.catalog.carry import carried
from vidfs.config.types import ProviderConfig
from vidfs.errors import AuthError, InvalidRemoteData, NotFoundError, VidfsError
from vidfs.http.client import dig, json_object, same_origin
from vidfs.http.policy import raise_for_status
from vidfs.model import (
    Folder,
    HiddenItem,
    Listing,
    StreamLease,
    Video,
    frozen,
    frozen_extra,
    shared_content_type,
)
from vidfs.providers.auth import Token, TokenKeeper, jwt_expiry, utc_seconds
from vidfs.providers.base import OptionSpec, ProviderBase, ProviderContext, ProviderSpec, login_options
from vidfs.providers.paging import Page, numbered_pages
from vidfs.tasks import for_each

ROOT_ID = "pixop:root"
DETAIL_CONCURRENCY = 64  # details of one project asked at once; the API origin's window sends fewer
DONE = "DONE"

# The two handles a video can have, one map each for every video (not one per video: 10 MiB at 100,000).
_PROCESSED, _ORIGINAL = frozen({"kind": "processed"}), frozen({"kind": "original"})


_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?: |T)(\d{2}):(\d{2}):(\d{2})")


def parse_time(value: object) -> float | None:
    """Pixop dates are "YYYY-MM-DD hh:mm:ss", UTC (also read with a "T", and a "Z" after it). The usual
    forms without `strptime`: it was a fiftieth of a 100,000-video listing's CPU."""
    if not isinstance(value, str) or not value:
        return None
    found = _TIME.fullmatch(value[:-1] if value[10:11] == "T" and value.endswith("Z") else value)
    if found is not None:
        return utc_seconds(found)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class PixopProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        self._origin = str(options["base_url"]).rstrip("/") + "/"
        self._email = str(options["email"])
        self._password = self._secret("password")
        self._team_id = options.get("team_id")
        self._page_size = int(options.get("page_size") or 100)
        # A project's listing asks its details up to DETAIL_CONCURRENCY at once; counted as 16, four projects
        # are listed at once: their pages overlap the others' details, and only four projects' summaries are
        # held (64 projects at once, each holding its 1,000 summaries until its details are in: 168 MiB
        # peak at 100,000 videos in process, against 99 so).
        self.listing_calls = 16
        self._tokens = TokenKeeper(self._login, name=self.instance, log=self._log)

    # -------------------------------------------------------------------------------------------- auth
    async def _login(self) -> Token:
        params = {"team-id": self._team_id} if self._team_id else None
        response = await self._http.request(
            "GET",
            self._url("accounts/v1/token"),
            tag=self._tag,
            params=params,
            auth=(self._email, self._password),
            headers={"Accept": "application/json"},
        )
        if response.status_code in (401, 403):
            raise AuthError(f"{self.instance}: Pixop login refused for {self._email}: {_failure(response)}")
        raise_for_status(response, f"{self.instance}: Pixop login", explain=_failure)
        token = json_object(response, "login").get("jwtToken")
        if not isinstance(token, str) or not token:
            raise InvalidRemoteData(f"{self.instance}: Pixop login answered without a jwtToken")
        now = time.time()
        expires_at = jwt_expiry(token) or (now + 15 * 60)
        self._log.info("%s: logged in to Pixop (token valid %.0fs)", self.instance, expires_at - now)
        return Token(token, expires_at, now)

    def _url(self, path: str) -> str:
        return urljoin(self._origin, path)

    async def _api(self, url: str, *, params: Mapping[str, Any] | None = None, what: str) -> dict[str, Any]:
        """GET a JSON document with the JWT; log in again once on 401."""
        if not same_origin(url, self._origin):
            raise InvalidRemoteData(f"{self.instance}: refusing to follow a link off the API origin")
        response = await self._tokens.call(
            lambda token: self._http.request(
                "GET",
                url,
                tag=self._tag,
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            ),
            explain=_failure,  # ExpiredJWTTokenException and friends
        )
        raise_for_status(response, f"{self.instance}: {what}", explain=_failure)
        return json_object(response, what)

    async def _hal_page(self, url: str, params: dict[str, Any] | None, key: str, what: str) -> _HalPage:
        """One HAL page: its `_embedded.{key}`, `totalFound`, and the hrefs of its `next` and `last`."""
        document = await self._api(url, params=params, what=what)
        embedded = dig(document, "_embedded", key) or []
        if not isinstance(embedded, list):
            raise InvalidRemoteData(f"{self.instance}: {what}: _embedded.{key} is not a list")
        items = [_scalars(item) for item in embedded if isinstance(item, dict)]
        total = dig(document, "_embedded", "totalFound")
        total = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
        next_href, last_href = (
            dig(document, "_links", "next", "href"),
            dig(document, "_links", "last", "href"),
        )
        return _HalPage(
            items,
            total,
            urljoin(url, next_href) if isinstance(next_href, str) and next_href else None,
            urljoin(url, last_href) if isinstance(last_href, str) and last_href else None,
        )

    async def _pages(self, path: str, params: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
        """Every item of a HAL list. When page 1 tells `totalFound` and its `_links.last` names the last
        page (`page=N`), pages 2..N are asked concurrently at that href with their own number
        (`vidfs.providers.paging`: one state of the list, each item once); else `_links.next` is followed
        page after page."""
        first = await self._hal_page(self._url(path), {**params, "page-size": self._page_size}, key, what)
        template = _numbered(first.last_href)[0]
        hrefs: dict[int, str | None] = {1: first.next_href}  # sequential: page n's href is page n-1's next
        seen: set[str] = set()

        async def fetch(number: int) -> Page:
            if template is not None:
                hal = await self._hal_page(_with_page(template, number), None, key, what)
            else:
                href = hrefs.get(number - 1)
                if href is None:
                    return Page([], more=False)
                seen.add(href)
                hal = await self._hal_page(href, None, key, what)
                hrefs[number] = hal.next_href
            return hal.page(template is not None, seen)

        paged = await numbered_pages(fetch, key=_item_id, first=first.page(template is not None, seen))
        paged.warn_if_unsettled(self._log, self.instance, what)
        return paged.items

    # ----------------------------------------------------------------------------------------- listing
    async def list(self, folder: Folder) -> Listing:
        if folder.remote_id == ROOT_ID:
            projects = await self._pages("videos/v1/projects", {}, "projects", "listing projects")
            entries = tuple(
                Folder(
                    f"project:{project['id']}",
                    str(project.get("name") or project["id"]),
                    mtime=parse_time(project.get("timeLastUpdated")),
                    extra=frozen_extra({"project_id": project["id"]}),
                )
                for project in projects
                if project.get("id")
            )
            return Listing(entries)
        project_id = folder.remote_id.removeprefix("project:")
        summaries = await self._pages(
            "videos/v1/videos", {"project-id": project_id}, "videos", f"listing project {folder.name!r}"
        )
        # Each detail is made into what the listing keeps (a Video or a hidden item) the moment it arrives:
        # the raw documents of a 10,000-video catalog, held until every project is complete, were 50 MiB.
        items: dict[str, Video | HiddenItem] = {}

        errors: list[VidfsError] = []

        async def detail(summary: dict[str, Any]) -> None:
            video_id = str(summary["id"])
            try:
                document = await self._api(self._url(f"videos/v1/video/{video_id}"), what=f"video {video_id}")
            except NotFoundError:
                return  # deleted between the list and the details: simply not there
            except VidfsError as exc:
                errors.append(exc)
                return
            video = document.get("video")
            if isinstance(video, dict):
                items[video_id] = self._video({**summary, **video})

        listed = [summary for summary in summaries if summary.get("id")]
        await for_each(listed, detail, workers=DETAIL_CONCURRENCY)
        if errors:  # one clear error (the first), not a group of them
            raise errors[0]
        entries_out: list[Video] = []
        hidden: list[HiddenItem] = []
        for summary in summaries:
            item = items.get(str(summary.get("id") or ""))
            if isinstance(item, Video):
                entries_out.append(item)
            elif item is not None:
                hidden.append(item)
        return Listing(tuple(entries_out), tuple(hidden))

    def _video(self, video: dict[str, Any]) -> Video | HiddenItem:
        video_id = str(video["id"])
        parent_id = video.get("parentId")
        processed = bool(parent_id)
        upload: dict[str, Any] = video["upload"] if isinstance(video.get("upload"), dict) else {}
        metadata: dict[str, Any] = dig(video, "ingestion", "metadata") or {}
        processing_state: dict[str, Any] = dig(video, "processing", "processingState") or {}
        processing_status = processing_state.get("processingStatus")
        file_name = upload.get("fileName") or video.get("filename") or video.get("name") or video_id
        name = str(file_name)
        if processed:
            stem, ext = posixpath.splitext(name)
            container = dig(video, "processing", "processingParameters", "targetVideo", "container", "name")
            if not ext and isinstance(container, str):
                ext = f".{container}"
            name = f"{stem}.processed{ext}"
            status = str(processing_status or "UNKNOWN")
            visible = status == DONE
        else:
            finished = upload.get("hasFinishedUploading")
            status = str(dig(upload, "uploadState", "uploadStatus") or ("DONE" if finished else "UPLOADING"))
            visible = finished is not False
        if not visible:
            return HiddenItem(video_id, name, status)
        size = upload.get("fileSize")
        try:
            size = int(size) if size not in (None, "") else None
        except (TypeError, ValueError):
            size = None
        duration = metadata.get("durationInMillis")
        extra = frozen_extra(
            {
                "kind": "processed" if processed else "original",
                "parent_id": parent_id,
                "project_id": video.get("projectId"),
                "name": video.get("name"),
                "codec": metadata.get("codecName"),
                "container": metadata.get("containerName"),
                "width": metadata.get("frameWidth"),
                "height": metadata.get("frameHeight"),
                "duration": f"{duration / 1000:.3f}" if isinstance(duration, int | float) else None,
                "frame_rate": metadata.get("averageFramerate"),
                "total_frames": metadata.get("totalFrames"),
                "status": processing_status if processed else status,
                "ingestion_status": dig(video, "ingestion", "ingestionState", "ingestionStatus"),
                "preset": dig(video, "processing", "processingParameters", "targetVideo", "preset", "name"),
            }
        )
        file_type = upload.get("fileType")
        return carried(
            Video(
                remote_id=video_id,
                name=name,
                size=size,
                mtime=parse_time(video.get("timeLastUpdated")) or parse_time(video.get("dateCreated")),
                content_type=shared_content_type(file_type if isinstance(file_type, str) else None),
                extra=extra,
                handle=_PROCESSED if processed else _ORIGINAL,
            )
        )

    # ----------------------------------------------------------------------------------------- resolve
    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        if previous is not None:
            token = await self._tokens.renew(
                previous.headers.get("Authorization", "").removeprefix("Bearer ")
            )
        else:
            token = await self._tokens.get()
        kind = video.handle.get("kind", "original")
        return StreamLease(
            url=self._url(f"media/v1/download/{kind}/{video.remote_id}"),
            headers={"Authorization": f"Bearer {token}"},
            expires_at=self._tokens.expires_at,
            uses_provider_auth=True,
        )


@dataclass(frozen=True, slots=True)
class _HalPage:
    items: list[dict[str, Any]]
    total: int | None  # _embedded.totalFound
    next_href: str | None
    last_href: str | None

    def page(self, numbered: bool, seen: set[str]) -> Page:
        """As `vidfs.providers.paging` reads it: `numbered`, with the total and the number of the last
        page this answer tells; else another follows while `next` names a page not asked yet."""
        more = self.next_href is not None and self.next_href not in seen
        last = _numbered(self.last_href)[1] if numbered else None
        return Page(self.items, self.total if last is not None else None, last, more)


def _numbered(href: str | None) -> tuple[str | None, int | None]:
    """(href, N) when `href` (the `last` link) names its page as `page=N`; else (None, None)."""
    if href is None:
        return None, None
    numbers = [v for k, v in parse_qsl(urlsplit(href).query, keep_blank_values=True) if k == "page"]
    if len(numbers) != 1 or not numbers[0].isdigit() or int(numbers[0]) < 1:
        return None, None
    return href, int(numbers[0])


def _with_page(href: str, number: int) -> str:
    """`href` asking for page `number` (its other query parameters kept as they are)."""
    parts = urlsplit(href)
    query = [
        (k, str(number) if k == "page" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _scalars(item: dict[str, Any]) -> dict[str, Any]:
    """A list item as it is kept until its details arrive: its scalar fields (id, names, times), which the
    details may lack; not its `_links`, which nothing reads. The summaries of the 32 projects listed at once
    as a walker goes were most of the daemon's peak at 100,000 videos: 1.2 KB each whole, 0.75 KB so."""
    return {key: value for key, value in item.items() if not isinstance(value, dict | list)}


def _item_id(item: Any) -> str | None:
    return str(item["id"]) if isinstance(item, dict) and item.get("id") else None


def _failure(response: Any) -> str:
    """The seed's failure body `{"exception","errorMessage"}` as one line."""
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(data, dict) and (data.get("exception") or data.get("errorMessage")):
        return (
            f"HTTP {response.status_code} {data.get('exception', '')}: {data.get('errorMessage', '')}".strip()
        )
    return f"HTTP {response.status_code}"


SPEC = ProviderSpec(
    type="pixop",
    options={
        **login_options("email"),  # base_url: the origin of the accounts/videos/media services
        "team_id": OptionSpec(str),
        "page_size": OptionSpec(int, default=100),
    },
    factory=PixopProvider,
)
