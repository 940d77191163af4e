"""Download URLs a listing brought, each kept until it is handed out once.

Hour One lists every video with its signed download URL; VALT asks one per video while listing (its file
name is in the URL). The first use of those URLs is the size probe that `stat` makes right after the
listing: keeping them saves an API call per video then. Keeping them *after* was the cost: 100,000 Hour
One URLs of 180 characters, each with its record and dict slot, held for the life of the mount though
none was used again (the resolver keeps the leases it handed out, `vidfs.io.leases`, while fresh and in its
LRU). Letting them go took the peak RSS of a cold walk of 100,000 Hour One videos from 247.6 to 222.0 MiB.
A dict never shrinks as its items are popped, so once most URLs are taken the table is copied to its size
(the emptied table of 100,000 slots was 5 MiB).

So a URL leaves this store when it is handed out (`take`), and a listing of a folder keeps only the URLs
of videos that folder's previous listing did not have: new videos, whose sizes are not known yet. A URL
that was not asked for during a whole listing period is dropped at the next listing of its folder. What
is asked after that (an open, much later) costs the provider one API call, as after a remount.

A URL is kept deflated (zlib) once many are held, with the first URL packed as the dictionary: the URLs of one
storage share their origin, path and query names, and the rest is ids and a signature. 100,000 Hour One
URLs of 189 characters were 22.9 MiB as strings, and are 12.8 MiB so (98 bytes each), for 0.7 s of CPU
per 100,000 listed; with sizes learned when `stat` needs them, they are alive while the directory's nodes
are built, the peak of a cold walk. Hour One packs each URL as it reads the list (`pack`): the strings of
100,000 were 23 MiB held until `remember`, beside their packed copies. The time it was listed at, which
every URL of one `remember` shares, is that call's: kept once for the latest call, and for each URL of an
earlier call still here when the next call comes (VALT lists a record at a time, and its URLs are taken by
the HEADs right after). A record of (URL, time) each was 4.6 MiB of a 100,000-video Hour One listing's
peak. Up to TEXTS_HELD URLs given as text are kept as they are: VALT's come one record at a time and are
taken by the HEADs a moment later, and deflating each and inflating it back was, with their xattr values
deflated alike (`vidfs.providers.valt`), 6% of the daemon's CPU in a cold walk of 10,000 records (0 ms,
3 runs each: 6.80 -> 6.39 s). TEXTS_HELD of them are at most 1 MiB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vidfs.catalog.keys import SortedKeys
from vidfs.model import TextPacker

SHRINK_BELOW = 8  # the table is copied once it holds less than an eighth of what it held
TEXTS_HELD = 2048  # URLs given as text kept so, not deflated, at most (see the module's essay)


@dataclass(frozen=True, slots=True)
class ListedUrl:
    url: str
    obtained_at: float  # time.time() when the listing brought it


class ListedUrls:
    """Per provider instance: video id → the URL its folder's latest listing brought, until taken."""

    def __init__(self) -> None:
        self._urls: dict[str, bytes | str] = {}  # deflated, but for up to TEXTS_HELD (the module's essay)
        self._texts = 0  # the values of `_urls` that are text
        self._packer = TextPacker()
        self._high = 0  # the most URLs held since the table was last copied to its size
        # folder id → the video ids its last listing had: the id itself when it had one (a VALT record: a
        # tuple of one each was 4.6 MiB at 100,000 records)
        self._listed: dict[str, str | tuple[str, ...]] = {}
        self._latest: tuple[float, list[str]] = (0.0, [])  # the last call's time, and the ids it kept
        self._older: dict[str, float] = {}  # video id → its time, for URLs of earlier calls

    def pack(self, url: str) -> bytes:
        """`url` as this store keeps it, for a listing to hold its URLs so until it hands them to `remember`
        (not a string each meanwhile, and a packed copy at the end)."""
        return self._packer.pack(url)

    def remember(self, folder_id: str, urls: Iterable[tuple[str, str | bytes | None]], now: float) -> None:
        """The listing of `folder_id` brought these (video id, URL) pairs, each URL as text or `pack`ed; None
        for a URL its provider did not keep (Hour One: a video carried from the previous listing, whose URL
        is not kept here either)."""
        held = self._listed.get(folder_id)
        previous = (held,) if isinstance(held, str) else held
        for video_id in previous or ():  # not asked for since that listing: not worth keeping
            if self._pop(video_id) is not None:
                self._older.pop(video_id, None)
        at, kept = self._latest
        for video_id in kept:  # the last call's URLs still here are told their time from now on
            if video_id in self._urls:
                self._older[video_id] = at
        # The previous listing's ids, sorted at the first URL to check against them (`vidfs.catalog.keys`):
        # a re-listing of Hour One has hardly any URL to keep (new videos').
        known: SortedKeys | None = None
        listed: list[str] = []
        kept = []
        for video_id, url in urls:
            listed.append(video_id)
            if url is None:
                continue
            if previous:
                known = SortedKeys(previous) if known is None else known
                if video_id in known:
                    continue
            self._pop(video_id)  # listed again by this call (another folder's, moved)
            self._older.pop(video_id, None)
            if isinstance(url, str):
                if self._texts < TEXTS_HELD:
                    self._texts += 1
                else:
                    url = self._packer.pack(url)
            self._urls[video_id] = url
            kept.append(video_id)
        self._latest = (now, kept)
        self._listed[folder_id] = listed[0] if len(listed) == 1 else tuple(listed)
        self._high = max(self._high, len(self._urls))

    def take(self, video_id: str) -> ListedUrl | None:
        """The URL listed for `video_id`, if still here; it is not kept any longer."""
        held = self._pop(video_id)
        if held is None:
            return None
        url = held if isinstance(held, str) else self._packer.unpack(held)
        if len(self._urls) * SHRINK_BELOW < self._high:
            self._urls = dict(self._urls)  # O(n) once per n / SHRINK_BELOW * (SHRINK_BELOW - 1) takes
            self._high = len(self._urls)
        at = self._older.pop(video_id, None)
        return ListedUrl(url, self._latest[0] if at is None else at)

    def _pop(self, video_id: str) -> bytes | str | None:
        held = self._urls.pop(video_id, None)
        if isinstance(held, str):
            self._texts -= 1
        return held

    def statistics(self) -> dict[str, int]:
        return {"urls": len(self._urls), "folders": len(self._listed)}
