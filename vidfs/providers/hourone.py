"""Hour One (MakeReals) API v1: the rendered videos of one account, as one flat directory.

Layout: `/<instance>/<video name>.mp4`. `GET /videos` is a plain JSON array (no pagination, no folders), so
the instance directory holds every rendered video. A video is a file when its `status` is `ready` or
`published` *and* it has a `download_url`; every other one (`started`, `processing`, `failed`,
`not_started`, `stopped`, `cancelled`, or ready without a URL yet) is a hidden item with its status, shown
by `vidfs ls`. Names come from `name` (optional and not unique: duplicates get ` [<id>]` from the naming
rules), else the id; the extension comes from the download URL's path (`.mp4`, `.mov`, ...), else `.mp4`.
A video's name is given as it will stand on the mount (`vidfs.catalog.naming.file_name`), so the video and
its node share one string (6.3 MiB at 100,000 videos); the raw `name` is the xattr.

Auth: every API call carries the `api-key` header (plus `workspace-id` / `team-id` when configured), and
only ever to the `base_url` origin. There is no login and nothing to renew: 401/403 is an auth error.

Downloads: `download_url` points at another origin (signed storage). The lease carries no headers at all,
so the api-key never reaches storage. The URL is kept in memory only (never in `Video.handle`, which the
engine persists in its listing snapshot), and only until it is handed out once
(`vidfs.providers.listed_urls`). Whether it expires is undocumented, so its expiry is read from the URL
when it says (`Expires=`, `X-Amz-*`, ...) and is otherwise None. When storage refuses it (401/403/410) the
engine calls `resolve(previous=...)` and we fetch `GET /videos/{id}` once for a fresh URL.

Quirks handled:
- The API has no timestamps at all. The mtime is *when this vidfs cache first saw the video as a file*,
  in whole seconds, persisted in `<cache dir>/state/<instance>/first_seen.json` (written atomically under
  an flock, merged so concurrent mounts agree, never pruned). A second `rsync -a` therefore copies
  nothing, also after a remount with the same cache dir. A new cache dir means new mtimes. A re-listing
  looks up only the videos it does not carry from the previous listing (`vidfs.catalog.carry`), whose
  mtime is that time already, so the file is neither read nor kept in memory for the others.
- No sizes either: `Video.size` is None and the engine learns it with a HEAD on the storage URL.
- `duration` lives at `GET /videos/{id}/metadata`. The engine reads xattrs synchronously from
  `Video.extra`, so durations are fetched during the listing, concurrently (bounded by
  `metadata_concurrency`, within a time budget), only for file videos whose duration is not known yet: a
  re-listing takes the others from the previous listing's videos, also after a remount (their values
  read back from the snapshot; a rendered video's duration does not change). A
  failed or slow metadata call never fails the listing: that file just lacks `user.vidfs.duration` until
  the next listing. While serving, the listing waits for them only while they can all come within the
  budget (`_DurationFetch`): when the answers of the first calls say the rest would take more than twice
  the budget (10,000 new videos at 20 ms of round trip: 25 s), the listing goes ahead at once, the calls go
  on in the background for the rest of the budget, and what they learn comes with the next listing. So the
  listing of a big account no longer waits its 2 s for about 8% of the durations (a cold `ls -R` of 10,000
  videos at 20 ms: 3.30 s, of which that wait was 2 s).
- 422 answers are FastAPI's `{"detail": [{"loc", "msg", "type"}]}`; 401/403 are `{"detail": "..."}`.

xattrs (`user.vidfs.*`): status, progress, draft_id, video_player_url, duration (seconds), name (the raw
API name, when there is one).
"""

from __future__ import annotations

import itertools
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import trio

from vidfs.catalog.carry import Carry, carry_of, previous_values
from vidfs.catalog.keys import repeated_keys
from vidfs.catalog.naming import CONTENT_TYPE_EXTENSIONS, file_name
from vidfs.config.types import ProviderConfig
from vidfs.errors import InvalidRemoteData, NotFoundError, VidfsError, redact_url
from vidfs.http.client import same_origin
from vidfs.http.json_stream import JsonArraySink, charset_of
from vidfs.http.lean import SinkFor
from vidfs.http.policy import raise_for_status
from vidfs.model import Folder, FrozenMap, HiddenItem, Listing, StreamLease, Video, frozen_extra
from vidfs.providers.auth import expiry_from_url, still_fresh
from vidfs.providers.base import BASE_URL, OptionSpec, ProviderBase, ProviderContext, ProviderSpec
from vidfs.providers.listed_urls import ListedUrls
from vidfs.providers.state import FirstSeen
from vidfs.tasks import for_each

ROOT_ID = "hourone:root"
FILE_STATUSES = frozenset({"ready", "published"})
DEFAULT_CONTENT_TYPE = "video/mp4"
METADATA_CONCURRENCY = 8
# Seconds a listing may spend on missing durations: an xattr must not hold up a directory (10,000 videos
# are 10,000 metadata calls; at 15 s the listing of such an account outlived every `ls`). Durations not
# fetched by then come with a later listing.
METADATA_BUDGET = 2.0
HOPELESS = 2.0  # the listing goes ahead when its durations project beyond this many budgets (_DurationFetch)
STATE_FILE = "first_seen.json"

_TYPE_BY_EXTENSION: dict[str, str] = {ext: ctype for ctype, ext in CONTENT_TYPE_EXTENSIONS.items() if ext}


def content_type_for(download_url: str) -> str:
    """The content type told by the download URL's path extension, else video/mp4."""
    try:
        path = unquote(urlsplit(download_url).path)
    except ValueError:
        return DEFAULT_CONTENT_TYPE
    ext = posixpath.splitext(path)[1].lower()
    return _TYPE_BY_EXTENSION.get(ext, DEFAULT_CONTENT_TYPE)


def display_name(video: Mapping[str, Any]) -> str:
    """`name` when it is a non-blank string, else the id."""
    name = video.get("name")
    if isinstance(name, str) and name.strip():
        return name
    return str(video["id"])


def is_file(video: Mapping[str, Any]) -> bool:
    status = str(video.get("status") or "").lower()
    url = video.get("download_url")
    return status in FILE_STATUSES and isinstance(url, str) and bool(url.strip())


def _hidden_status(video: Mapping[str, Any]) -> str:
    status = str(video.get("status") or "unknown").lower()
    if status in FILE_STATUSES:
        return f"{status} (no download_url yet)"
    return status


@dataclass(frozen=True, slots=True)
class _Item:
    """What an entry needs of a listed video (the rest of its JSON object is dropped as it is read). Its
    xattrs are frozen at once, as its entry keeps them: a dict of them per item, with an object per value,
    was about 28 MiB of a 100,000-video listing's peak, beside the entries being made from them."""

    remote_id: str
    name: str
    content_type: str
    extra: Mapping[str, str]

    @classmethod
    def of(cls, video_id: str, item: Mapping[str, Any], *, pack: bool = True) -> _Item:
        """The item; its xattr values deflated unless not `pack` (a re-listing: `_VideoList._kept` does
        then, unless the item is a video listed before: 7 µs a video that need not be spent)."""
        raw_name = item.get("name")
        extra = frozen_extra(
            {
                "status": str(item.get("status") or "").lower(),
                "progress": item.get("progress"),
                "draft_id": item.get("draft_id"),
                "video_player_url": item.get("video_player_url"),
                "name": raw_name if isinstance(raw_name, str) else None,
            },
            pack=pack,
        )
        content_type = content_type_for(str(item["download_url"]))
        return cls(video_id, file_name(display_name(item), video_id, content_type), content_type, extra)


class _VideoList:
    """The listing's videos, taken an item of `GET /videos` at a time."""

    def __init__(self, pack_url: Callable[[str], bytes], carry: Carry | None = None) -> None:
        # An item, or the previous listing's video where the item is that video again (`_kept`).
        self.files: list[_Item | Video] = []
        # The download URL of each file, in step with `files` (no pair each), packed as it is read for the
        # `ListedUrls` that keeps it: 100,000 URL strings were 23 MiB until the listing was done, and their
        # packed copies 13 more at its end, the top of the cold walk's process (bench, 20 ms: its peak RSS
        # 150.3-152.0 -> 142.7 MiB). None for a video carried from the previous listing: its size is known,
        # and its URL would not be kept.
        self._pack_url = pack_url
        self.urls: list[bytes | None] = []
        self.timed = bytearray()  # in step with `files`: 1 where the file has its duration
        self._carry = carry if carry is not None else Carry(None)  # nothing to carry from
        self.hidden: list[HiddenItem] = []
        self._hidden_at: list[int] = []  # how many files came before each hidden item

    def take(self, item: object) -> None:
        if not isinstance(item, dict) or item.get("id") in (None, ""):
            return
        video_id = str(item["id"])
        if is_file(item):
            if self._carry:
                kept, timed = self._kept(_Item.of(video_id, item, pack=False))
            else:
                kept, timed = _Item.of(video_id, item), False
            self.files.append(kept)
            url = None if isinstance(kept, Video) else self._pack_url(str(item["download_url"]).strip())
            self.urls.append(url)
            self.timed.append(timed)
        else:
            self._hidden_at.append(len(self.files))
            self.hidden.append(HiddenItem(video_id, display_name(item), _hidden_status(item)))

    def without_repeats(self) -> None:
        """An id listed twice keeps its first item. The repeated ids are found once the list is read, in a
        sorted list of them all: a set of every id seen while reading (4 MiB at 100,000) and the new copy of
        each id it held (5.5 MiB; a carried video has its own) were most of a re-listing's rise."""
        ids = itertools.chain((f.remote_id for f in self.files), (h.remote_id for h in self.hidden))
        repeated = repeated_keys(ids)
        if not repeated:
            return
        first: dict[str, tuple[int, int, int]] = {}  # id → its first item's place in the list
        for at, file in enumerate(self.files):
            if file.remote_id in repeated:
                first.setdefault(file.remote_id, (at, 1, 0))
        for index, (hidden, at) in enumerate(zip(self.hidden, self._hidden_at, strict=True)):
            if hidden.remote_id in repeated:
                first[hidden.remote_id] = min(first.get(hidden.remote_id, (at, 0, index)), (at, 0, index))
        kept = [
            at
            for at, file in enumerate(self.files)
            if file.remote_id not in repeated or first[file.remote_id] == (at, 1, 0)
        ]
        self.files = [self.files[at] for at in kept]
        self.urls = [self.urls[at] for at in kept]
        self.timed = bytearray(self.timed[at] for at in kept)
        self.hidden = [
            hidden
            for index, (hidden, at) in enumerate(zip(self.hidden, self._hidden_at, strict=True))
            if hidden.remote_id not in repeated or first[hidden.remote_id] == (at, 0, index)
        ]

    def _kept(self, item: _Item) -> tuple[_Item | Video, bool]:
        """`item`, or the previous listing's video in its place when the two agree (`vidfs.catalog.carry`;
        its mtime is its first-seen time), and whether it has a duration. A re-listing of 100,000 unchanged
        videos then holds no second copy of their ids, names and xattr values, nor an item each, while it
        is read (Hour One, 0 ms: peak 201-246 MiB before). The duration comes from the previous video (a
        rendered video's does not change), read back with its values: a table of them by id was 10 MiB
        at 100,000, and was empty after a remount, so every video that had one was made anew."""
        old = self._carry.previous(item.remote_id)
        values = previous_values(old) if old is not None else None
        duration = values.get("duration") if values is not None else None
        extra = item.extra
        if duration is not None:
            extra = frozen_extra({**extra, "duration": duration}, pack=False)
        if (
            old is not None
            and (old.name, old.content_type) == (item.name, item.content_type)
            and values == extra
        ):
            return old, duration is not None
        packed = FrozenMap(extra.items(), pack=True)
        return _Item(item.remote_id, item.name, item.content_type, packed), duration is not None


def _with_duration(extra: Mapping[str, str], duration: str | None) -> Mapping[str, str]:
    return extra if duration is None else frozen_extra({**extra, "duration": duration})


def _timed(video: Video, duration: str | None) -> Video:
    """A video carried from the previous listing, with the duration learned only now if there is one."""
    return video if duration is None else replace(video, extra=_with_duration(video.xattrs, duration))


class _DurationFetch:
    """The metadata calls of one listing's videos without a duration: `found` fills as they answer, for at
    most METADATA_BUDGET seconds. `settled` is set when the listing need wait no longer: every call answered,
    the budget spent, or (`hopeless`) the answers so far project more than HOPELESS times the budget for
    all of them. Projected from the mean time per answer, and only once a round of `workers` calls has come
    back: the first round pays the connections' setup, hence the margin of HOPELESS, so that a listing that
    would finish in time (a hundred videos at 100 ms) is not let go for a slow start."""

    def __init__(self, missing: list[str], workers: int) -> None:
        self.missing, self.workers = missing, workers
        self.found: dict[str, str] = {}
        self.settled = trio.Event()
        self.hopeless = False
        self.projected_s = 0.0
        self._answers = 0
        self._began = trio.current_time()

    def answered(self) -> None:
        self._answers += 1
        if self.settled.is_set() or self._answers < self.workers:
            return
        self.projected_s = (trio.current_time() - self._began) * len(self.missing) / self._answers
        if self.projected_s > HOPELESS * METADATA_BUDGET:
            self.hopeless = True
            self.settled.set()


class HourOneProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        self._base = str(options["base_url"]).rstrip("/")
        headers = {"api-key": self._secret("api_key"), "Accept": "application/json"}
        if options.get("workspace_id"):
            headers["workspace-id"] = str(options["workspace_id"])
        if options.get("team_id"):
            headers["team-id"] = str(options["team_id"])
        self._headers = headers
        concurrency = options.get("metadata_concurrency")
        self._metadata_concurrency = METADATA_CONCURRENCY if concurrency is None else int(concurrency)
        self._urls = ListedUrls()  # the listing's download URLs, until each is handed out once
        self._learned_durations: dict[str, str] = {}  # by video id, for the next listing (`_DurationFetch`)
        self.first_seen = FirstSeen(context.state_dir / STATE_FILE, context.log)

    # --------------------------------------------------------------------------------------------- api
    async def _get(self, path: str, what: str, *, sink_for: SinkFor | None = None) -> httpx.Response:
        """GET from the API with the api-key (never off the base_url origin); an error status raised."""
        url = f"{self._base}{path}"
        if not same_origin(url, self._base):  # pragma: no cover - paths are ours
            raise InvalidRemoteData(f"{self.instance}: refusing to send the api-key off the API origin")
        response = await self._http.request(
            "GET", url, tag=self._tag, headers=self._headers, sink_for=sink_for
        )
        raise_for_status(response, f"{self.instance}: {what}", explain=_explain)
        return response

    async def _api(self, path: str, what: str) -> Any:
        """A JSON document from the API."""
        response = await self._get(path, what)
        try:
            return response.json()
        except ValueError as exc:
            raise InvalidRemoteData(f"{self.instance}: {what}: the answer is not JSON") from exc

    # ----------------------------------------------------------------------------------------- listing
    async def list(self, folder: Folder) -> Listing:
        if folder.remote_id != ROOT_ID:
            raise NotFoundError(f"{self.instance}: Hour One has no folder {folder.name!r}")
        # The list is one JSON array (no pages): its items are decoded as the body arrives, and only what
        # an entry needs of each is kept (100,000 decoded at once made a listing's peak RSS 600 MiB; the
        # body and its whole text side by side, 340 MiB; now the catalog after the walk is the peak).
        sinks: list[tuple[_VideoList, JsonArraySink]] = []
        what = f"{self.instance}: listing videos"
        carry = carry_of()

        def sink_for(status: int, fields: list[tuple[bytes, bytes]]) -> JsonArraySink | None:
            if not 200 <= status < 300:
                return None  # an error's body is read whole, for its message
            videos = _VideoList(self._urls.pack, carry)
            sinks.append((videos, JsonArraySink(videos.take, what, encoding=charset_of(fields))))
            return sinks[-1][1]

        asked_at = time.time()  # before any URL was given: their age is never underestimated
        await self._get("/videos", "listing videos", sink_for=sink_for)
        videos, sink = sinks.pop()  # the answer's: an attempt that failed had its own
        sinks.clear()
        sink.close()
        videos.without_repeats()
        files, urls, hidden = videos.files, videos.urls, videos.hidden
        untimed = [item.remote_id for item, timed in zip(files, videos.timed, strict=True) if not timed]
        del videos, sink
        # A video carried from the previous listing has its first-seen time as its mtime: only the others
        # are looked up (and new ones stamped) in the state file.
        first_seen = await self.first_seen.stamp(
            item.remote_id for item in files if not isinstance(item, Video)
        )
        # Durations learned in the background after the last listing went ahead (`_DurationFetch`).
        learned, self._learned_durations = self._learned_durations, {}
        durations = {video_id: learned[video_id] for video_id in untimed if video_id in learned}
        del learned
        await self._fetch_durations(untimed, durations)
        del untimed
        # Videos first seen together share one mtime: one float for them, not one each (2.3 MiB at 100,000).
        mtimes = {seen: float(seen) for seen in set(first_seen.values())}
        entries = tuple(
            self._video(item, durations.get(item.remote_id), mtimes[first_seen[item.remote_id]])
            if isinstance(item, _Item)
            else _timed(item, durations.get(item.remote_id))
            for item in files
        )
        carry.carried += sum(1 for item, entry in zip(files, entries, strict=True) if entry is item)
        # The URLs are kept once the items are gone, not beside them and the entries (100,000 records of
        # them, and their table, were 8 MiB of the listing's peak): a file opened meanwhile asks the API.
        del files
        self._urls.remember(ROOT_ID, zip((entry.remote_id for entry in entries), urls, strict=True), asked_at)
        return Listing(entries, tuple(hidden))

    def _video(self, item: _Item, duration: str | None, mtime: float) -> Video:
        return Video(
            remote_id=item.remote_id,
            name=item.name,
            size=None,  # the API tells no size: the engine HEADs the download URL
            mtime=mtime,
            content_type=item.content_type,
            extra=_with_duration(item.extra, duration),
        )

    async def _fetch_durations(self, ids: Sequence[str], durations: dict[str, str]) -> None:
        """Adds to `durations` those of `ids` it lacks, asked of the API: all it learns within the budget,
        or, while serving, what it has when the rest could not come in time (the module's essay)."""
        missing = [i for i in ids if i not in durations]
        if not missing or self._metadata_concurrency <= 0:
            return
        fetch = _DurationFetch(missing, min(self._metadata_concurrency, len(missing)))
        if self._background is None:
            await self._learn_durations(fetch)
        else:
            self._background.start_soon(self._learn_durations, fetch, name=f"{self.instance}: durations")
            await fetch.settled.wait()
        durations.update(fetch.found)
        if fetch.hopeless:
            self._log.info(
                "%s: the durations of %d videos would take about %.0f s: the listing goes ahead with %d,"
                " the others come with later listings",
                self.instance,
                len(missing),
                fetch.projected_s,
                len(durations),
            )

    async def _learn_durations(self, fetch: _DurationFetch) -> None:
        async def one(video_id: str) -> None:
            try:
                document = await self._api(f"/videos/{video_id}/metadata", f"metadata of {video_id}")
            except VidfsError as exc:
                self._log.debug("%s: no duration for %s: %s", self.instance, video_id, exc)
                document = None
            duration = document.get("duration") if isinstance(document, dict) else None
            if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
                fetch.found[video_id] = f"{float(duration):.3f}"
            fetch.answered()

        try:
            with trio.move_on_after(METADATA_BUDGET) as scope:
                await for_each(fetch.missing, one, workers=fetch.workers)
        finally:
            fetch.settled.set()
        if fetch.hopeless:  # the listing went ahead: what was learned since goes with the next one
            self._learned_durations.update(fetch.found)
        elif scope.cancelled_caught:
            self._log.info(
                "%s: video metadata is slow; some durations come with a later listing", self.instance
            )

    # ----------------------------------------------------------------------------------------- resolve
    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        known = self._urls.take(video.remote_id)
        now = time.time()
        # Nothing in the URL may say it expires: then used until storage refuses it (resolved again).
        fresh = known is not None and still_fresh(known.obtained_at, expiry_from_url(known.url), now)
        if known is not None and fresh and (previous is None or known.url != previous.url):
            return self._lease(known.url, now)
        # Expired, refused by storage, handed out before (the resolver keeps its leases), or never listed
        # by this process (e.g. a listing from the snapshot).
        item = await self._api(f"/videos/{video.remote_id}", f"video {video.remote_id}")
        if not isinstance(item, dict):
            raise InvalidRemoteData(f"{self.instance}: video {video.remote_id}: expected a JSON object")
        if not is_file(item):
            raise NotFoundError(
                f"{self.instance}: video {video.remote_id} is not downloadable now ({_hidden_status(item)})"
            )
        url = str(item["download_url"]).strip()
        now = time.time()
        if previous is not None and url == previous.url:
            self._log.info(
                "%s: Hour One gave the same download URL again for %s", self.instance, video.remote_id
            )
        return self._lease(url, now)

    def _lease(self, url: str, now: float) -> StreamLease:
        expires = expiry_from_url(url)
        if expires is not None and expires <= now:
            # Already past its expiry by our clock (skew?): let storage decide instead of renewing in a loop.
            self._log.debug(
                "%s: %s looks expired on arrival; ignoring its expiry", self.instance, redact_url(url)
            )
            expires = None
        # No headers: the api-key is for the API origin only, never for storage.
        return StreamLease(url=url, expires_at=expires)


def _explain(response: httpx.Response) -> str:
    """A refusal names the api-key (a wrong one is 401, a missing one or a foreign workspace 403)."""
    if response.status_code in (401, 403):
        return f"Hour One refused the api-key ({_failure(response)})"
    return _failure(response)


def _failure(response: httpx.Response) -> str:
    """FastAPI's error body as one short line: `{"detail": "..."}` or `{"detail": [{"loc","msg","type"}]}`."""
    status = f"HTTP {response.status_code}"
    try:
        data = response.json()
    except ValueError:
        return status
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, str) and detail:
        return f"{status} {detail[:200]}"
    if isinstance(detail, list):
        parts = []
        for error in detail[:3]:
            if not isinstance(error, dict):
                continue
            loc = ".".join(str(p) for p in error.get("loc") or [])
            parts.append(f"{loc}: {error.get('msg', '')}".strip(": "))
        if parts:
            return f"{status} {'; '.join(parts)[:200]}"
    return status


SPEC = ProviderSpec(
    type="hourone",
    options={
        "base_url": BASE_URL,  # the API root, e.g. https://api.makereals.com/api/v1
        "api_key": OptionSpec(str, required=True, secret=True),  # sent as the api-key header
        "workspace_id": OptionSpec(str),  # sent as the workspace-id header
        "team_id": OptionSpec(str),  # sent as the team-id header
        # Parallel GET /videos/{id}/metadata calls (0: no durations).
        "metadata_concurrency": OptionSpec(int, default=METADATA_CONCURRENCY),
    },
    factory=HourOneProvider,
)
