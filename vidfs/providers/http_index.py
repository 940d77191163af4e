"""Plain web directories (`type = "http"`): an nginx or Apache autoindex page mounted as a tree.

Layout: `/<instance>/<dir>/<file>`, exactly the directories and files the index pages link to, below the
configured `url` (a directory: a missing trailing `/` is added). Names are the URL-decoded last segment of
each link's `href` (`Caf%C3%A9%20%231.mp4` → `Café #1.mp4`), never the link text, which nginx cuts to 50
characters (`..>`) and Apache may replace with a description.

Understood index formats:
- nginx `autoindex` HTML: `<a href="name">name</a>   22-Nov-2026 10:00   12345` lines in a `<pre>`
  (`autoindex_exact_size on`: sizes in bytes; `off` gives `12M`-style sizes, which are treated as unknown);
- nginx `autoindex_format json`: `[{"name", "type": "file"|"directory", "mtime": RFC 1123, "size"}]`;
- Apache mod_autoindex: "fancy" tables (`<tr><td><a href>…</td><td>2026-11-22 10:00</td><td>12M</td>`),
  fancy `<pre>` lines and plain `<ul><li>` lists. Apache rounds sizes (`12M`, `4.0K`), so those are unknown.
Dates are read as UTC (nginx's default; Apache shows server local time, usually UTC on servers). A size the
index does not give exactly is left unknown and the engine learns it with a HEAD.

Which links count: only children of the listed directory on the same origin (scheme, host, port) and
below the base URL — one path segment deeper, ending in `/` for a directory. Parent links (`../`, an
absolute `/parent/`), sorting links (`?C=N;O=D`), fragments, other schemes and links to other hosts are
ignored, so a page can never lead the mount outside the configured tree.

Auth: optional HTTP Basic (`username` + `password`), sent only to the base URL's origin (the shared http
client drops it on a redirect to another origin); a 401/403 is an auth error (EACCES) and `vidfs check`
says so in one line. Download URLs do not expire: a lease is the file's URL plus the Basic header.

xattrs: `user.vidfs.url` (the file's URL, without credentials), `user.vidfs.path` (the decoded path below
the base URL), `user.vidfs.index_size` when the index showed an approximate size (`12M`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

import httpx

from vidfs.catalog.carry import carried
from vidfs.config.types import ProviderConfig
from vidfs.errors import ConfigError, InvalidRemoteData, redact_url
from vidfs.http.client import origin_of
from vidfs.http.policy import raise_for_status
from vidfs.model import Folder, FrozenMap, Listing, StreamLease, Video
from vidfs.providers.base import OptionSpec, ProviderBase, ProviderContext, ProviderSpec

ROOT_ID = ""  # folder ids are paths below the base URL as they appear in URLs (percent-encoded), "" = base

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# nginx: 22-Nov-2026 10:00 ; Apache: 2026-11-22 10:00 ; both optionally with :ss
_NGINX_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")
_SIZE_TOKEN = re.compile(r"^(?:-|\d+|\d+(?:\.\d+)?\s?[KMGTPE]i?B?)$", re.I)


# ------------------------------------------------------------------------------------------- parsing
FEED_CHARS = 256 * 1024


@dataclass(slots=True)
class IndexEntry:
    """One link of an index page, resolved and checked: what an entry of the listing needs. (The link as
    written and its absolute URL, kept as well, were 23 MiB of a 100,000-entry page's listing, its peak.)"""

    page: str  # the index page's URL: one string for all its links
    segment: str  # the path segment below the listed directory, percent-encoded, `/`-terminated for dirs
    name: str  # decoded display name (last path segment)
    is_dir: bool
    size: int | None = None
    size_text: str | None = None  # an approximate size as shown ("12M"), when not exact
    mtime: float | None = None

    @property
    def url(self) -> str:
        """The link's absolute URL."""
        return urljoin(self.page, "./" + self.segment)


@dataclass(slots=True)
class _Link:
    href: str
    tail: list[str] = field(default_factory=list)


class _IndexParser(HTMLParser):
    """Collects every `<a href>` with the text that follows it up to the next link or table row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[_Link] = []
        self._current: _Link | None = None
        self._in_anchor = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href is not None:
                self._current = _Link(href)
                self.links.append(self._current)
                self._in_anchor = True
            return
        if tag == "tr":
            self._current = None
        elif tag in ("td", "th") and self._current is not None:
            self._current.tail.append("\t")  # a cell boundary

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_anchor = False
        elif tag in ("tr", "li", "pre", "table", "ul"):
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None and not self._in_anchor:
            self._current.tail.append(data)
            if "\n" in data and not any(t == "\t" for t in self._current.tail):
                # <pre> formats: one entry per line; what follows the line break belongs to no link.
                before = "".join(self._current.tail).split("\n", 1)[0]
                self._current.tail = [before]
                self._current = None


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def parse_index_date(text: str) -> tuple[float | None, int]:
    """(epoch seconds, end position) of the first nginx- or Apache-style date in `text`."""
    found: list[tuple[int, float | None, int]] = []
    m = _NGINX_DATE.search(text)
    if m:
        month = _MONTHS.get(m.group(2).lower())
        when = None
        if month:
            when = _utc(
                int(m.group(3)),
                month,
                int(m.group(1)),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6) or 0),
            )
        found.append((m.start(), when, m.end()))
    m = _ISO_DATE.search(text)
    if m:
        when = _utc(*(int(m.group(i) or 0) for i in range(1, 7)))
        found.append((m.start(), when, m.end()))
    if not found:
        return None, 0
    _start, when, end = min(found, key=lambda item: item[0])
    return when, end


def parse_tail(text: str) -> tuple[float | None, int | None, str | None]:
    """(mtime, exact size, approximate size text) from the text following a link."""
    mtime, end = parse_index_date(text)
    rest = text[end:] if mtime is not None else text
    for token in rest.replace("\xa0", " ").replace("\t", " ").split():
        if _SIZE_TOKEN.match(token):
            if token == "-":
                return mtime, None, None
            if token.isdigit():
                return mtime, int(token), None
            return mtime, None, token
    return mtime, None, None


_SEGMENT_SAFE = "!$&'()*+,;=:@~-._"
_DIR_KEYS, _FILE_KEYS, _SIZED_KEYS = ("path",), ("path", "url"), ("index_size", "path", "url")  # sorted


def canonical_path(path: str) -> str:
    """A URL path with every segment percent-encoded the same way (`%c3%a9`, `é` → `%C3%A9`), so two
    spellings of one link give one remote id. `%2F` inside a segment stays encoded."""
    return "/".join(
        quote(unquote(part, errors="surrogateescape"), safe=_SEGMENT_SAFE, errors="surrogateescape")
        for part in path.split("/")
    )


def _below(url: str, directory_url: str) -> str | None:
    """The single path segment (with a trailing `/` for a directory) by which `url` lies directly below
    `directory_url`, or None when it is not a direct child on the same origin."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or parts.query or parts.username or parts.password:
        return None
    if origin_of(url) != origin_of(directory_url):
        return None
    base_path = canonical_path(urlsplit(directory_url).path)
    path = canonical_path(parts.path)
    if not path.startswith(base_path) or len(path) <= len(base_path):
        return None
    segment = path[len(base_path) :]
    stem = segment[:-1] if segment.endswith("/") else segment
    if not stem or "/" in stem or unquote(stem) in (".", ".."):
        return None
    return segment


def parse_index(body: str | bytes, page_url: str, content_type: str | None = None) -> list[IndexEntry]:
    """The entries of one autoindex page (HTML or nginx JSON) fetched from `page_url` (a directory URL)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if (content_type and "json" in content_type.lower()) or body.lstrip().startswith("["):
        try:
            return _parse_json(json.loads(body), page_url)
        except ValueError:
            pass
    parser = _IndexParser()
    entries: dict[str, IndexEntry] = {}
    plain = _takes_plain_links(page_url)
    # Fed a piece at a time, each finished link made an entry at once: a 100,000-entry page never holds
    # all its links and their texts besides its entries.
    for start in range(0, len(body), FEED_CHARS):
        parser.feed(body[start : start + FEED_CHARS])
        _take_links(parser, entries, page_url, plain, keep_last=True)
    parser.close()
    _take_links(parser, entries, page_url, plain, keep_last=False)
    return list(entries.values())


def _take_links(
    parser: _IndexParser, entries: dict[str, IndexEntry], page_url: str, plain: bool, *, keep_last: bool
) -> None:
    """Turn the parser's finished links into entries (the last one may still be growing its text)."""
    done = parser.links[:-1] if keep_last and parser._current is not None else parser.links
    for link in done:
        _add_link(link, entries, page_url, plain)
    del parser.links[: len(done)]


# A link that is one plain relative segment ("name" or "name/"): no scheme, query, fragment, space or other
# path part. nginx, Apache and lighttpd write one for every entry, and it lies directly below the page by
# construction, so it needs neither urljoin nor the origin and path checks of `_below`: those were 40% of
# the daemon's CPU listing a 100,000-entry page.
_PLAIN_SEGMENT = re.compile(r"[^/?#:\\\s]+/?")


def _takes_plain_links(page_url: str) -> bool:
    """Whether a plain segment joins `page_url` by concatenation (a directory URL without query)."""
    return page_url.endswith("/") and "?" not in page_url and "#" not in page_url


def _plain_segment(href: str) -> str | None:
    """`_below` for a plain segment (the same answer, without the URL work)."""
    segment = canonical_path(href)
    stem = segment[:-1] if segment.endswith("/") else segment
    return None if unquote(stem) in (".", "..") else segment


def _add_link(link: _Link, entries: dict[str, IndexEntry], page_url: str, plain: bool) -> None:
    href = link.href.strip()
    if plain and _PLAIN_SEGMENT.fullmatch(href):
        segment = _plain_segment(href)
    else:
        href = urldefrag(href)[0]
        if not href or href.startswith("?"):
            return
        segment = _below(urljoin(page_url, href), page_url)
    if segment is None:
        return
    is_dir = segment.endswith("/")
    raw = segment[:-1] if is_dir else segment
    mtime, size, size_text = parse_tail("".join(link.tail))
    entry = IndexEntry(
        page=page_url,
        segment=segment,
        name=unquote(raw, errors="replace"),
        is_dir=is_dir,
        size=None if is_dir else size,
        size_text=None if is_dir else size_text,
        mtime=mtime,
    )
    known = entries.get(segment)
    if known is None:
        entries[segment] = entry
    else:  # Apache links the icon and the name: keep what either occurrence told
        known.mtime = known.mtime if known.mtime is not None else entry.mtime
        known.size = known.size if known.size is not None else entry.size
        known.size_text = known.size_text or entry.size_text


def _parse_json(data: Any, page_url: str) -> list[IndexEntry]:
    if not isinstance(data, list):
        raise ValueError("not an nginx JSON index")
    plain = _takes_plain_links(page_url)
    out: list[IndexEntry] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        name = item["name"]
        is_dir = item.get("type") == "directory"
        if item.get("type") not in ("file", "directory") or not name or "/" in name or name in (".", ".."):
            continue  # symlinks to nowhere ("other") and odd names
        href = quote(name, safe="") + ("/" if is_dir else "")
        # A quoted name is a plain segment (see _add_link).
        segment = _plain_segment(href) if plain else _below(urljoin(page_url, href), page_url)
        if segment is None:
            continue
        mtime = None
        if isinstance(item.get("mtime"), str):
            try:
                mtime = parsedate_to_datetime(item["mtime"]).timestamp()
            except (TypeError, ValueError, IndexError):
                mtime = None
        size = item.get("size")
        out.append(
            IndexEntry(
                page=page_url,
                segment=segment,
                name=name,
                is_dir=is_dir,
                size=size if isinstance(size, int) and not isinstance(size, bool) and not is_dir else None,
                mtime=mtime,
            )
        )
    return out


# ------------------------------------------------------------------------------------------- provider
class HttpIndexProvider(ProviderBase, root_id=ROOT_ID):
    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        options = config.options
        url = str(options["url"]).strip()
        parts = urlsplit(url)
        where = f"{self._where} key 'url'"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: expected an http:// or https:// URL, got {redact_url(url)!r}")
        if parts.username or parts.password:
            raise ConfigError(f"{where}: put credentials in 'username' and 'password', not in the URL")
        if parts.query or parts.fragment:
            raise ConfigError(f"{where}: the URL of a directory takes no query or fragment")
        self._base = url if url.endswith("/") else url + "/"
        # What a video's `url` xattr shows: the base redacted once, then the remote id (canonical segments:
        # no query, no fragment), unless redacting the base alone would not give the same (then each URL).
        shown = redact_url(self._base)
        self._shown_base = shown if redact_url(self._base + "x%20y") == shown + "x%20y" else None
        username = options.get("username")
        password = options.get("password")
        if (username is None) != (password is None):
            raise ConfigError(f"{self._where} 'username' and 'password' go together")
        self._headers: dict[str, str] = {}
        if username is not None:
            token = base64.b64encode(f"{username}:{self._secret('password')}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"

    def _url(self, remote_id: str) -> str:
        return self._base + remote_id

    async def list(self, folder: Folder) -> Listing:
        url = self._url(folder.remote_id)
        response = await self._http.request(
            "GET",
            url,
            tag=self._tag,
            headers={**self._headers, "Accept": "text/html, application/json;q=0.9, */*;q=0.5"},
            follow_redirects=True,
        )
        raise_for_status(response, f"{self.instance}: index {redact_url(url)}", explain=self._explain)
        final = str(response.url)
        if not final.endswith("/") or origin_of(final) != origin_of(self._base):
            final = url  # resolve links against the directory we asked for, never another origin
        # The page is let go once parsed, before the entries are made (a 100,000-entry page: 15 MB).
        body, kind = response.content, response.headers.get("Content-Type")
        del response
        try:
            links = parse_index(body, final, kind)
        except (ValueError, AssertionError) as exc:
            what = f"{self.instance}: index {redact_url(url)}"
            raise InvalidRemoteData(f"{what}: not an index page ({type(exc).__name__})") from None
        del body
        return Listing(tuple(self._entries(folder.remote_id, links)))

    def _explain(self, response: httpx.Response) -> str:
        status = response.status_code
        if status in (401, 403):
            detail = "credentials refused" if self._headers else "the server asks for credentials"
            return f"HTTP {status} ({detail})"
        return f"HTTP {status}"

    def _entries(self, prefix: str, links: MutableSequence[IndexEntry]) -> Iterator[Folder | Video]:
        """The entries of `links`, in their order, each link let go once its entry is made (at 100,000, all
        of them beside all the entries were the peak of a re-listing). The xattr maps are made from keys
        already sorted (FrozenMap.of): per entry, frozen_extra's sort and the URL's redaction were a fifth of
        the daemon's CPU listing 100,000 entries."""
        shown = self._shown_base
        links.reverse()  # taken from the end
        while links:
            entry = links.pop()
            remote_id = prefix + entry.segment
            path = unquote(remote_id.rstrip("/"), errors="replace")  # never empty: a segment is not
            if entry.is_dir:
                yield Folder(remote_id, entry.name, mtime=entry.mtime, extra=FrozenMap.of(_DIR_KEYS, (path,)))
                continue
            url = shown + remote_id if shown is not None else redact_url(self._url(remote_id))
            extra = (
                FrozenMap.of(_SIZED_KEYS, (entry.size_text, path, url))
                if entry.size_text
                else FrozenMap.of(_FILE_KEYS, (path, url))
            )
            yield carried(
                Video(remote_id=remote_id, name=entry.name, size=entry.size, mtime=entry.mtime, extra=extra)
            )

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        return StreamLease(url=self._url(video.remote_id), headers=dict(self._headers))


SPEC = ProviderSpec(
    type="http",
    options={
        "url": OptionSpec(str, required=True),  # the directory URL (a trailing / is added if missing)
        "username": OptionSpec(str),  # HTTP Basic user, sent only to the url's origin
        "password": OptionSpec(str, secret=True),  # HTTP Basic password
    },
    factory=HttpIndexProvider,
)
