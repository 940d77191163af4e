"""Deterministic display names for remote items.

A remote name becomes a file or directory name by these rules, always in this order:

1. Characters: `/` becomes `∕` (U+2215 DIVISION SLASH). Tabs and line breaks (`\\t \\n \\v \\f \\r`,
   U+0085) become a space; NUL and every other control character (C0, DEL, C1) are dropped. Lone
   surrogates (undecodable text some JSON APIs produce) become U+FFFD, so every name encodes as UTF-8.
2. Leading and trailing whitespace is stripped; an empty result is replaced by the fallback (the remote id,
   cleaned by the same rules, else `_`).
3. A name starting with `.` (so also `.` and `..`) gets a `_` prefix: `.` → `_.`, `..` → `_..`,
   `.hidden` → `_.hidden`. Nothing shown is special to the kernel, and nothing is hidden from `ls`.
4. Files only: when the content type maps to a video extension (video/mp4 → `.mp4`, ...) and the name does
   not already end in a known media extension, the extension is added. `Meeting 2024.01.15` with
   video/mp4 becomes `Meeting 2024.01.15.mp4`; `clip.mkv` stays `clip.mkv` whatever the content type.
5. A name over 255 bytes (UTF-8) is cut at a character boundary; the extension (a `.` and 1-15 ASCII
   letters/digits, at least one a letter) is kept, so `<very long title>.mp4` still ends in `.mp4`.
6. Duplicates are byte-identical names within one directory (files and directories share the namespace).
   Unicode is NOT normalised and case is NOT folded: an NFC name and its NFD twin are two distinct names
   and both appear as given. EVERY holder of a duplicated name gets ` [<id>]` before the extension
   (`clip [6414].mp4`, `clip [6416].mp4`; at the end for directories); the id is cleaned like a name and,
   when longer than 40 bytes, shortened to its start plus `~` and a hash. Should a suffixed name still
   collide (with another item's plain name, or ids that clean to the same text), a short hash of the id
   is added (`clip [6414] [1f0c2a9b].mp4`), then a counter. Names stay within 255 bytes.

Everything is decided by the items' ids and names, never by listing order: the same set of items gets the
same names whatever order the API returns them in. All functions are pure.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

from vidfs.catalog.keys import SortedKeys

__all__ = [
    "CONTENT_TYPE_EXTENSIONS",
    "MAX_NAME_BYTES",
    "extension_for",
    "name_entries",
    "sanitize",
    "split_ext",
]

MAX_NAME_BYTES = 255
_MAX_EXT_CHARS = 16  # including the dot
_MAX_TAG_BYTES = 40

CONTENT_TYPE_EXTENSIONS: dict[str, str] = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
    "video/webm": ".webm",
    "video/mp2t": ".ts",
    "video/x-msvideo": ".avi",
    "video/mpeg": ".mpg",
    "video/x-m4v": ".m4v",
    "video/3gpp": ".3gp",
    "video/ogg": ".ogv",
    "video/x-flv": ".flv",
    "video/x-ms-wmv": ".wmv",
    "application/octet-stream": "",
}

# Extensions that count as "the name already has one" when deciding whether to add one from the type.
_KNOWN_EXTENSIONS = frozenset(
    {ext for ext in CONTENT_TYPE_EXTENSIONS.values() if ext}
    | {
        ".m2ts", ".mts", ".qt", ".mpeg", ".mpe", ".m2v", ".mxf", ".dv", ".vob", ".f4v", ".asf", ".rm",
        ".rmvb", ".3g2", ".hevc", ".h264", ".h265", ".264", ".265", ".y4m", ".ivf", ".divx", ".ogg",
        ".mp3", ".m4a", ".aac", ".wav", ".flac", ".opus", ".jpg", ".jpeg", ".png", ".gif", ".webp",
        ".srt", ".vtt", ".json", ".xml", ".txt", ".pdf", ".zip", ".m3u8", ".mpd",
        ".insv", ".insp", ".lrv", ".360",
    }
)  # fmt: skip

_SPACE_CONTROLS = "\t\n\v\f\r\x85"
# Rule 1 as one C-level pass: `/` → `∕`, the space-like controls → " ", every other C0/DEL/C1 control dropped.
_TRANSLATION = {
    ord("/"): "\u2215",
    **{code: " " if chr(code) in _SPACE_CONTROLS else None for code in (*range(0x20), *range(0x7F, 0xA0))},
}
_SURROGATE = re.compile("[\ud800-\udfff]")
_NEEDS_RULE_1 = re.compile("[\x00-\x1f\x7f-\x9f/\ud800-\udfff]")


def _clean_chars(raw: str) -> str:
    # Most remote names need nothing: one regex scan decides (this runs for every entry of a listing).
    if _NEEDS_RULE_1.search(raw) is not None:
        raw = _SURROGATE.sub("\ufffd", raw.translate(_TRANSLATION))
    return raw.strip()


def _clean(raw: str, fallback: str) -> str:
    name = _clean_chars(raw) or _clean_chars(fallback) or "_"
    if name.startswith("."):
        name = "_" + name
    return name


def split_ext(name: str) -> tuple[str, str]:
    r"""(stem, extension) where the extension is `.` + 1-15 ASCII letters/digits with at least one letter
    and a non-empty stem; else (name, "").

    Found from the last dot: a regex search for `\.[A-Za-z0-9]{1,15}\Z` tried every position of the name (a
    tenth of a remount walk's tree building, at 100,000 names)."""
    stem, _dot, tail = name.rpartition(".")
    if not stem or len(tail) > 15 or not (tail.isascii() and tail.isalnum()) or tail.isdigit():
        return name, ""
    return stem, "." + tail


@functools.lru_cache(maxsize=256)
def extension_for(content_type: str | None) -> str:
    """The extension for a content type ("" when unknown or generic); parameters are ignored. (Cached: it
    is asked once per file of every listing built, of a handful of types.)"""
    if not content_type:
        return ""
    base = content_type.split(";", 1)[0].strip().lower()
    return CONTENT_TYPE_EXTENSIONS.get(base, "")


def _has_known_extension(name: str) -> bool:
    _stem, ext = split_ext(name)
    return ext.lower() in _KNOWN_EXTENSIONS


def _cut_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `limit` bytes."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: max(limit, 0)].decode("utf-8", errors="ignore")


def _compose(stem: str, tail: str) -> str:
    """`stem + tail`, the stem cut so the whole fits in MAX_NAME_BYTES (tail: suffixes and extension)."""
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    cut = _cut_bytes(stem, budget)
    if cut != stem:
        cut = cut.rstrip() or cut
    return cut + tail


def _fit(name: str, *, keep_ext: bool = True) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, ext = split_ext(name) if keep_ext else (name, "")
    return _compose(stem, ext)


def sanitize(raw: str, *, fallback: str) -> str:
    """One remote name made into a safe file name (rules 1-3 and 5 of the module docstring)."""
    return _fit(_clean(raw, fallback))


def _short_hash(remote_id: str, length: int = 8) -> str:
    digest = hashlib.sha256(remote_id.encode("utf-8", errors="surrogatepass")).hexdigest()
    return digest[:length]


def _id_tag(remote_id: str) -> str:
    tag = _clean_chars(remote_id)
    if not tag:
        return _short_hash(remote_id)
    if len(tag.encode("utf-8")) > _MAX_TAG_BYTES:
        tag = _cut_bytes(tag, _MAX_TAG_BYTES - 9).rstrip() + "~" + _short_hash(remote_id)
    return tag


def _base_name(raw_name: str, remote_id: str, is_dir: bool, content_type: str | None) -> str:
    name = _clean(raw_name, remote_id)
    if not is_dir:
        ext = extension_for(content_type)
        if ext and not _has_known_extension(name):
            name += ext
    return _fit(name, keep_ext=not is_dir)


def file_name(raw_name: str, remote_id: str, content_type: str | None) -> str:
    """The name a file called `raw_name` gets here, before names held twice are told apart (`name_entries`).
    A provider whose names lack the extension may give this as the video's name: naming is idempotent and
    gives back that very string, so the video and its node share one (Hour One: 6.3 MiB at 100,000)."""
    return _base_name(raw_name, remote_id, False, content_type)


def _suffixed(base: str, is_dir: bool, remote_id: str, level: int) -> str:
    """`base` with the duplicate suffix of `level` (1: id, 2: id + hash, 3+: id + hash + counter)."""
    stem, ext = ("", "") if is_dir else split_ext(base)
    if not ext:
        stem = base
    tail = f" [{_id_tag(remote_id)}]"
    if level >= 2:
        tail += f" [{_short_hash(remote_id)}]"
    if level >= 3:
        tail += f" [{level - 1}]"
    return _compose(stem, tail + ext)


def name_entries(items: Sequence[tuple[str, str, bool, str | None]]) -> list[str]:
    """The unique names of one directory's children.

    `items` are (remote_id, raw_name, is_dir, content_type or None) in listing order; the result has the
    final names in the same order. The names depend on the set of items, not on their order.
    """
    bases = [_base_name(raw, rid, is_dir, ctype) for rid, raw, is_dir, ctype in items]
    listed = SortedKeys(bases)  # the names as listed: sorted references (0.8 MiB at 100,000), not a set
    shared = listed.repeated()  # the names held twice or more
    if not shared:  # no name twice, as in most directories: nothing more to make
        return bases
    # Taken: the names held once (holders of a shared one all get a suffix), and the suffixed names given.
    # A Counter, then sets of all the names, were 10 MiB, then 5-6 MiB, at the peak of a walk and of a
    # re-listing of 100,000 videos (Hour One's renders share names): the names held once are asked of the
    # sorted list instead, and only the suffixed ones make a set.
    given: set[str] = set()

    def taken(name: str) -> bool:
        return name in given or (name in listed and name not in shared)

    # Holders of duplicated names, in an order that depends on the items only (not on listing order).
    pending = sorted(
        ((i, bases[i]) for i, base in enumerate(bases) if base in shared),
        key=lambda held: (*items[held[0]][:3], items[held[0]][3] or "", held[1]),
    )
    names = bases  # in place: each holder's suffixed name replaces its base (read above, in `pending`)
    for i, base in pending:
        remote_id, _raw, is_dir, _ctype = items[i]
        level = 1
        candidate = _suffixed(base, is_dir, remote_id, level)
        while taken(candidate):
            level += 1
            candidate = _suffixed(base, is_dir, remote_id, level)
        given.add(candidate)
        names[i] = candidate
    return names
