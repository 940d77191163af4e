"""The origin the fleet tests read from: a plain web server (nginx `autoindex_format json`) on 127.0.0.1,
in the test process, whose request log says what the vendor served.

Files are written under a directory of the test; each has a strong ETag (from its bytes' SHA-256), so the
fleet shares it, and `change(name)` gives it new bytes (replaced atomically: a response in flight keeps
its old file) and so a new ETag under the same URL.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidfs.emulator.server import Request, Site, serve_file

MTIME = "Sun, 22 Nov 2026 10:00:00 GMT"


@dataclass
class _Blob:
    path: Path
    size: int
    etag: str


@dataclass
class Origin:
    site: Site
    root: Path
    files: dict[str, _Blob] = field(default_factory=dict)  # "dir/name" or "name"
    folders: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.site.url + "/pub/"

    def add(self, path: str, data: bytes) -> str:
        """Serve `data` at /pub/<path>; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{digest[:8]}")
        temp.write_bytes(data)
        os.replace(temp, target)
        self.files[path] = _Blob(target, len(data), f'"{digest[:32]}"')
        return digest

    def change(self, path: str) -> str:
        """New bytes (same size), so a new ETag under the same URL; returns their SHA-256."""
        return self.add(path, os.urandom(self.files[path].size))

    # --------------------------------------------------------------------------------------- the log
    def entries(self, **filters: Any) -> list[dict[str, Any]]:
        return self.site.log.entries(**filters)

    def bytes_served(self, path: str) -> int:
        return sum(e["bytes_sent"] for e in self.entries(method="GET", path=f"/pub/{path}$"))

    def listing_calls(self) -> dict[str, int]:
        """Index pages served, by directory path (the vendor's "API" calls)."""
        counts: dict[str, int] = {}
        for entry in self.entries(method="GET", path=r"/$"):
            counts[entry["path"]] = counts.get(entry["path"], 0) + 1
        return counts

    def clear(self) -> None:
        self.site.log.clear()

    # -------------------------------------------------------------------------------------- handlers
    def _index(self, req: Request) -> None:
        prefix = req.path_only[len("/pub/") :]
        items: list[dict[str, Any]] = []
        for folder in self.folders:
            parent, _, name = folder.rstrip("/").rpartition("/")
            if (parent + "/" if parent else "") == prefix:
                items.append({"name": name, "type": "directory", "mtime": MTIME})
        for path, blob in self.files.items():
            parent, _, name = path.rpartition("/")
            if (parent + "/" if parent else "") == prefix:
                items.append({"name": name, "type": "file", "mtime": MTIME, "size": blob.size})
        req.send_bytes(200, json.dumps(items).encode(), "application/json")

    def _file(self, req: Request) -> None:
        blob = self.files.get(req.path_only[len("/pub/") :])
        if blob is None:
            req.send_bytes(404, b"not found", "text/plain")
            return
        serve_file(req, blob.path, etag=blob.etag)


def start_origin(root: Path) -> Origin:
    site = Site("origin")
    origin = Origin(site, root)
    site.add_route(("GET", "HEAD"), r"/pub/(?:.*/)?", origin._index)
    site.add_route(("GET", "HEAD"), r"/pub/.*[^/]", origin._file)
    site.start()
    return origin
