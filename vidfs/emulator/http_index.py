"""A plain web server with directory indexes, like nginx `autoindex on` (or Apache mod_autoindex).

The tree lives below ``/pub/`` (the provider's ``url``); ``/`` is an index that links to it, so the
provider's "stay below the base URL" rule is exercised by every parent link::

    /pub/
      interview.mp4              moov at the end
      big reel.mp4               the 62 MB sample, moov at the end
      Café #1.mp4                faststart
      100% real.mov
      a file whose name is longer than the fifty characters nginx shows.mp4
      Archive 1987/reel.mp4
      Archive 1987/nested/deep clip.mov
      Ünïcødé/Møde i Århus.mp4
      empty/

Index pages follow nginx's `ngx_http_autoindex_module` byte for byte where it matters: directories first,
then files, by name; `href` percent-encoded (URI component); link text HTML-escaped and cut to 50
characters ending in ``..>``; ``dd-Mmm-yyyy hh:mm`` dates in UTC; exact sizes in bytes (``-`` for a
directory); a ``../`` link on every page; names starting with ``.`` are not listed. A directory asked
for without its trailing ``/`` answers 301 to it; files are served with `serve_file` (Range, HEAD,
ETag ``"<mtime hex>-<size hex>"`` like nginx, Last-Modified, If-Range). Query strings are ignored (as nginx
ignores Apache's ``?C=N;O=D``).

Settings (``/_emulator/settings``): ``index_format`` = ``nginx`` (default) | ``nginx_json`` (nginx's
``autoindex_format json``) | ``apache`` (an Apache 2.4 "fancy" table: sorting links, a Parent Directory
link to an absolute path, rounded sizes such as ``62M``, so the client must HEAD for sizes);
``auth`` (default true: HTTP Basic ``demo`` / ``http-demo-password`` on everything but the control API);
``username``, ``password``, ``scale``, ``scale_base`` (renames the scaled files: ``clip_<base + i>``, the same
number of files under new names). Mutations (``/_emulator/mutate``): ``add_file`` and ``remove_file``
with a ``path`` below ``/pub/`` (a synthetic file; its directory must exist).

Scale: ``scale = N`` adds the directory ``/pub/scale/`` holding N files ``clip_000000.mp4``... (a few KiB
each, made in memory), one big autoindexed directory as on a busy nginx. Index pages are rendered once per
catalog change and format, then served from memory.

Catalog: ``{"base_path", "format", "dirs": [...], "files": [{"path", "size", "mtime", "sha256",
"path_on_disk", "url_path", "content_type"}]}`` where ``path`` is decoded and relative to ``/pub/``.
"""

from __future__ import annotations

import calendar
import hmac
import html
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from vidfs.emulator import credentials
from vidfs.emulator.content import Blob, FileBlob, SyntheticBlob, facts
from vidfs.emulator.contract import Contract, Expect, expect, name_entries
from vidfs.emulator.knobs import Knob, as_bool, knob, non_negative, one_of
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, serve_file
from vidfs.emulator.vendor import VendorSite, route

BASE_PATH = "/pub/"
DEFAULT_USERNAME = "demo"
DEFAULT_PASSWORD = "http-demo-password"
FORMATS = ("nginx", "nginx_json", "apache")
NAME_COLUMN = 50  # nginx's NGX_HTTP_AUTOINDEX_NAME_LEN

_T0 = calendar.timegm((2026, 11, 22, 10, 0, 0, 0, 0, 0))
_CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

LONG_NAME = "a file whose name is longer than the fifty characters nginx shows.mp4"

# (path below /pub/, sample, minutes after _T0). Directories are implied; "empty/" is an empty directory.
TREE: tuple[tuple[str, str | None, int], ...] = (
    ("interview.mp4", "moov_end.mp4", 10),
    ("big reel.mp4", "big.mp4", 20),
    ("Café #1.mp4", "faststart.mp4", 30),
    ("100% real.mov", "clip.mov", 40),
    (LONG_NAME, "faststart.mp4", 50),
    ("Archive 1987/reel.mp4", "moov_end.mp4", 60),
    ("Archive 1987/nested/deep clip.mov", "clip.mov", 70),
    ("Ünïcødé/Møde i Århus.mp4", "faststart.mp4", 80),
    ("empty/", None, 90),
)
SAMPLES_USED = ("moov_end.mp4", "faststart.mp4", "big.mp4", "clip.mov")
SCALE_DIR = "scale"


@dataclass(slots=True)
class Node:
    name: str
    mtime: int
    is_dir: bool
    blob: Blob | None = None
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return 0 if self.blob is None else self.blob.size


def nginx_date(epoch: float) -> str:
    """``22-Nov-2026 10:00`` (UTC), as nginx's autoindex shows it."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}"


def apache_size(size: int) -> str:
    """Apache's rounded size column (apr_strfsize): ``512``, ``4.0K``, ``62M``."""
    if size < 973:
        return f"{size:3d} "
    value = float(size)
    for unit in "KMGTPE":
        value /= 1024
        if value < 973:
            return f"{value:3.1f}{unit}" if value < 9.95 else f"{value:3.0f}{unit}"
    return f"{value:3.0f}E"


def nginx_text(name: str) -> str:
    """The link text of an entry: cut to 50 characters (`..>` marks the cut), HTML-escaped."""
    if len(name) > NAME_COLUMN:
        name = name[: NAME_COLUMN - 3] + "..>"
    return html.escape(name, quote=False)


class HttpIndexSite(VendorSite):
    NAME = "http"
    SAMPLES = SAMPLES_USED
    SETTINGS: ClassVar[Mapping[str, Knob]] = {
        "index_format": knob("index_format", one_of(*FORMATS)),
        "auth": knob("auth", as_bool),
        "username": knob("username"),
        "password": knob("password"),
        "scale_base": Knob(None, non_negative, apply="set_scale_base"),
    }

    def build(self, options: EmulatorOptions) -> None:
        self.index_format = "nginx"
        self.auth = True
        self.username = DEFAULT_USERNAME
        self.password = DEFAULT_PASSWORD
        self.root = Node("", _T0, True)
        pub = self.root.children["pub"] = Node("pub", _T0, True)
        for rel, sample, minutes in TREE:
            parts = [p for p in rel.split("/") if p]
            node = pub
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                child = node.children.get(part)
                if child is None:
                    mtime = _T0 + minutes * 60
                    blob = FileBlob(self.samples[sample]) if last and sample is not None else None
                    child = Node(part, mtime, blob is None, blob)
                    node.children[part] = child
                node = child

    scale_base = 0  # item i of the scaled directory is clip_<scale_base + i>.mp4

    def set_scale_base(self, base: int) -> None:
        """Renumber the scaled directory: the same number of files under new names (a catalog that churns)."""
        with self._lock:
            count = self.scale
            self.set_scale(0)
            self.scale_base = base
            self.set_scale(count)

    def add_scaled(self, index: int) -> None:
        pub = self.root.children["pub"]
        folder = pub.children.get(SCALE_DIR)
        if folder is None:
            folder = pub.children[SCALE_DIR] = Node(SCALE_DIR, _T0 + 86400, True)
        number = self.scale_base + index
        name = f"clip_{number:06d}.mp4"
        folder.children[name] = Node(
            name, _T0 + 86400 + number * 60, False, SyntheticBlob.of(f"http/{number}")
        )

    def remove_scaled(self, index: int) -> None:
        folder = self.root.children["pub"].children.get(SCALE_DIR)
        if folder is not None:
            folder.children.pop(f"clip_{self.scale_base + index:06d}.mp4", None)
            if index == 0:
                del self.root.children["pub"].children[SCALE_DIR]

    # ---- mutations: files appear and vanish anywhere in the tree (``path`` relative to /pub/) --------
    def _parent_of(self, path: str) -> tuple[Node, str]:
        parts = [part for part in path.split("/") if part]
        if not parts:
            raise ValueError("a path below /pub/ is needed")
        node = self.root.children["pub"]
        for part in parts[:-1]:
            node = node.children[part]  # KeyError → 404: the directory must exist
        return node, parts[-1]

    def mutate_add_file(self, change: Mapping[str, Any]) -> JSON:
        """A synthetic file at ``path`` (its bytes made from the path): where a name sorts is the test's
        choice, so a listing can change before names a reader has already been given."""
        with self._lock:
            parent, name = self._parent_of(str(change.get("path", "")))
            parent.children[name] = Node(
                name, _T0 + 2 * 86400, False, SyntheticBlob.of(f"http/{change['path']}")
            )
            return {"added": change["path"]}

    def mutate_remove_file(self, change: Mapping[str, Any]) -> JSON:
        with self._lock:
            parent, name = self._parent_of(str(change.get("path", "")))
            parent.children.pop(name, None)
            return {"removed": change["path"]}

    # ---- hooks ------------------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        reason = {
            301: "Moved Permanently",
            401: "Authorization Required",
            404: "Not Found",
            405: "Not Allowed",
        }.get(status, "Error")
        return (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )

    def config(self) -> JSON:
        table: JSON = {"type": "http", "url": self.url + BASE_PATH}
        if self.auth:
            table.update({"username": self.username, "password": self.password})
        return table

    def catalog_json(self, compact: bool) -> JSON:
        files: list[JSON] = []
        dirs: list[str] = []

        def walk(node: Node, prefix: str) -> None:
            for name, child in sorted(node.children.items()):
                rel = prefix + name
                if child.is_dir:
                    dirs.append(rel)
                    walk(child, rel + "/")
                    continue
                assert child.blob is not None
                files.append(
                    {
                        "path": rel,
                        "url_path": BASE_PATH + "/".join(quote(p, safe="") for p in rel.split("/")),
                        **facts(child.blob, compact=compact),
                        "mtime": child.mtime,
                        "content_type": _content_type(name),
                    }
                )

        with self._lock:
            walk(self.root.children["pub"], "")
            fmt = self.index_format
        return {"base_path": BASE_PATH, "format": fmt, "dirs": dirs, "files": files}

    # ---- serving ----------------------------------------------------------------------------------------
    def _check_auth(self, req: Request) -> None:
        with self._lock:
            if not self.auth:
                return
            wanted = f"{self.username}:{self.password}".encode()
        try:
            given = credentials.basic_raw(req)
        except credentials.Malformed:
            given = b""
        if given is not None and hmac.compare_digest(given, wanted):
            return
        raise HttpError(401, "authorization required", headers={"WWW-Authenticate": 'Basic realm="vidfs"'})

    def _lookup(self, raw_path: str) -> tuple[Node, bool]:
        """(node, asked as a directory) for a URL path; 404 when nothing is there."""
        path = unquote(raw_path, errors="strict")
        node = self.root
        parts = path.split("/")
        for part in parts[1:-1] if path.endswith("/") else parts[1:]:
            if part in ("", ".", "..") or part.startswith("."):
                raise HttpError(404, "not found")
            child = node.children.get(part)
            if child is None:
                raise HttpError(404, "not found")
            node = child
        return node, path.endswith("/")

    @route(("GET", "HEAD"), r"/.*")
    def serve(self, req: Request) -> None:
        self._check_auth(req)
        try:
            node, as_dir = self._lookup(req.path_only)
        except UnicodeDecodeError:
            raise HttpError(404, "not found") from None
        if node.is_dir and not as_dir:
            location = f"{self.url}{req.path_only}/"
            req.send_bytes(
                301, self.error_body(301, "").encode(), "text/html", headers={"Location": location}
            )
            return
        if not node.is_dir:
            if as_dir:
                raise HttpError(404, "not found")
            assert node.blob is not None
            size = node.size
            serve_file(
                req,
                node.blob,
                etag=f'"{node.mtime:x}-{size:x}"',
                content_type=_content_type(node.name),
                last_modified=node.mtime,
            )
            return
        with self._lock:
            fmt = self.index_format
            page = self.prepared(("index", req.path_only, fmt), lambda: _index_page(fmt, req.path_only, node))
        req.send_bytes(200, *page)


def _index_page(fmt: str, path: str, node: Node) -> tuple[bytes, str]:
    """A directory's index page in `fmt`, and its content type."""
    entries = sorted(
        (child for child in node.children.values() if not child.name.startswith(".")),
        key=lambda c: (not c.is_dir, c.name),
    )
    if fmt == "nginx_json":
        return _json_index(entries), "application/json"
    if fmt == "apache":
        return _apache_index(path, entries), "text/html;charset=UTF-8"
    return _nginx_index(path, entries), "text/html"


def _content_type(name: str) -> str:
    return _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _nginx_index(path: str, entries: list[Node]) -> bytes:
    title = html.escape(unquote(path, errors="replace"), quote=False)
    out = [
        f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n",
        f'<h1>Index of {title}</h1><hr><pre><a href="../">../</a>\r\n',
    ]
    for entry in entries:
        slash = "/" if entry.is_dir else ""
        href = quote(entry.name, safe="") + slash
        text = nginx_text(entry.name + slash)
        shown = min(len(entry.name + slash), NAME_COLUMN)
        pad = " " * (NAME_COLUMN + 1 - shown)
        size = "-" if entry.is_dir else str(entry.size)
        out.append(f'<a href="{href}">{text}</a>{pad}{nginx_date(entry.mtime)} {size:>19}\r\n')
    out.append("</pre><hr></body>\r\n</html>\r\n")
    return "".join(out).encode("utf-8")


def _json_index(entries: list[Node]) -> bytes:
    rows = []
    for entry in entries:
        row: JSON = {
            "name": entry.name,
            "type": "directory" if entry.is_dir else "file",
            "mtime": formatdate(entry.mtime, usegmt=True),
        }
        if not entry.is_dir:
            row["size"] = entry.size
        rows.append(json.dumps(row, ensure_ascii=False, separators=(", ", ":")))
    return ("[\n" + ",\n".join(rows) + "\n]\n").encode("utf-8")


def _apache_index(path: str, entries: list[Node]) -> bytes:
    shown = unquote(path, errors="replace").rstrip("/") or "/"
    title = html.escape(shown, quote=False)
    parent = shown.rsplit("/", 1)[0] + "/"
    rows = [
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n',
        f"  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n  <table>\n",
        '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>'
        '<th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>'
        '<th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>\n',
        '   <tr><th colspan="5"><hr></th></tr>\n',
        '<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td>'
        f'<td><a href="{html.escape(quote(parent))}">Parent Directory</a></td><td>&nbsp;</td>'
        '<td align="right">  - </td><td>&nbsp;</td></tr>\n',
    ]
    for entry in entries:
        slash = "/" if entry.is_dir else ""
        href = html.escape(quote(entry.name, safe="") + slash)
        icon, alt = ("/icons/folder.gif", "[DIR]") if entry.is_dir else ("/icons/movie.gif", "[VID]")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.mtime))
        size = "  - " if entry.is_dir else apache_size(entry.size)
        rows.append(
            f'<tr><td valign="top"><a href="{href}"><img src="{icon}" alt="{alt}"></a></td>'
            f'<td><a href="{href}">{html.escape(entry.name + slash, quote=False)}</a></td>'
            f'<td align="right">{when}  </td><td align="right">{size}</td><td>&nbsp;</td></tr>\n'
        )
    rows.append('   <tr><th colspan="5"><hr></th></tr>\n</table>\n')
    rows.append("<address>Apache/2.4.57 (Debian) Server at 127.0.0.1 Port 80</address>\n</body></html>\n")
    return "".join(rows).encode("utf-8")


def create_site(options: EmulatorOptions) -> HttpIndexSite:
    return HttpIndexSite(options)


def expected_layout(catalog: JSON) -> dict[str, Expect]:
    """The served tree as is: every directory's children named by vidfs's rules (ids = paths)."""
    children: dict[str, list[tuple[str, str, bool]]] = {}
    for directory in catalog["dirs"]:
        parent, _, name = directory.rpartition("/")
        children.setdefault(parent, []).append((directory, name, True))
    files = {f["path"]: f for f in catalog["files"]}
    for path in files:
        parent, _, name = path.rpartition("/")
        children.setdefault(parent, []).append((path, name, False))
    shown: dict[str, str] = {"": ""}
    for parent in sorted(children, key=lambda p: p.count("/") + bool(p)):
        items = children[parent]
        names = name_entries([(rid, name, is_dir, None) for rid, name, is_dir in items])
        for (rid, _name, _is_dir), name in zip(items, names, strict=True):
            shown[rid] = f"{shown[parent]}/{name}" if shown[parent] else name
    return {shown[path]: expect(f, f["mtime"]) for path, f in files.items()}


CONTRACT = Contract(
    expected=expected_layout,
    login_path=r"^/pub/$",
    storage_path=r"^/pub/.*[^/]$",
    renewal=False,
    provider="http",
)
