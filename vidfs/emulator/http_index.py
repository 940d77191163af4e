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
``username``, ``password``.

Catalog: ``{"base_path", "format", "dirs": [...], "files": [{"path", "size", "mtime", "sha256",
"path_on_disk", "url_path", "content_type"}]}`` where ``path`` is decoded and relative to ``/pub/``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import html
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from vidfs.emulator import media
from vidfs.emulator.server import JSON, EmulatorOptions, HttpError, Request, Site, serve_file

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


@dataclass
class Node:
    name: str
    mtime: int
    is_dir: bool
    path_on_disk: Path | None = None
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return 0 if self.path_on_disk is None else self.path_on_disk.stat().st_size


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


class HttpIndexSite(Site):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        media_dir: Path | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        samples = {name: media.ensure_media(name, media_dir) for name in SAMPLES_USED}
        for path in samples.values():
            media.sha256_of(path)
        super().__init__("http", host=host, port=port, seed=seed, verbose=verbose)
        self._lock = threading.Lock()
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
                    if last and sample is not None:
                        child = Node(part, mtime, False, samples[sample])
                    else:
                        child = Node(part, mtime, True)
                    node.children[part] = child
                node = child
        self.add_route(("GET", "HEAD"), r"/.*", self.serve)

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

    def settings(self) -> JSON:
        with self._lock:
            return {
                "index_format": self.index_format,
                "auth": self.auth,
                "username": self.username,
                "password": self.password,
            }

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        unknown = set(changes) - {"index_format", "auth", "username", "password"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        with self._lock:
            if "index_format" in changes:
                if changes["index_format"] not in FORMATS:
                    raise ValueError(f"index_format must be one of {', '.join(FORMATS)}")
                self.index_format = str(changes["index_format"])
            if "auth" in changes:
                self.auth = bool(changes["auth"])
            if "username" in changes:
                self.username = str(changes["username"])
            if "password" in changes:
                self.password = str(changes["password"])
        return self.settings()

    def catalog(self) -> JSON:
        files: list[JSON] = []
        dirs: list[str] = []

        def walk(node: Node, prefix: str) -> None:
            for name, child in sorted(node.children.items()):
                rel = prefix + name
                if child.is_dir:
                    dirs.append(rel)
                    walk(child, rel + "/")
                    continue
                assert child.path_on_disk is not None
                files.append(
                    {
                        "path": rel,
                        "url_path": BASE_PATH + "/".join(quote(p, safe="") for p in rel.split("/")),
                        "size": child.size,
                        "mtime": child.mtime,
                        "sha256": media.sha256_of(child.path_on_disk),
                        "path_on_disk": str(child.path_on_disk),
                        "content_type": _content_type(name),
                    }
                )

        walk(self.root.children["pub"], "")
        with self._lock:
            fmt = self.index_format
        return {"base_path": BASE_PATH, "format": fmt, "dirs": dirs, "files": files}

    # ---- serving ----------------------------------------------------------------------------------------
    def _check_auth(self, req: Request) -> None:
        with self._lock:
            if not self.auth:
                return
            wanted = f"{self.username}:{self.password}".encode()
        scheme, _, value = (req.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (ValueError, binascii.Error):
                given = b""
            if hmac.compare_digest(given, wanted):
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
            assert node.path_on_disk is not None
            size = node.size
            serve_file(
                req,
                node.path_on_disk,
                etag=f'"{node.mtime:x}-{size:x}"',
                content_type=_content_type(node.name),
                last_modified=node.mtime,
            )
            return
        with self._lock:
            fmt = self.index_format
        entries = sorted(
            (child for child in node.children.values() if not child.name.startswith(".")),
            key=lambda c: (not c.is_dir, c.name),
        )
        if fmt == "nginx_json":
            req.send_bytes(200, _json_index(entries), "application/json")
        elif fmt == "apache":
            req.send_bytes(200, _apache_index(req.path_only, entries), "text/html;charset=UTF-8")
        else:
            req.send_bytes(200, _nginx_index(req.path_only, entries), "text/html")


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


def create_site(options: EmulatorOptions) -> Site:
    return HttpIndexSite(
        host=options.host,
        port=options.port,
        media_dir=options.media_dir,
        seed=options.seed,
        verbose=options.verbose,
    )
