"""A small framework of local HTTP servers that emulate vendor APIs, quirks included.

One `Site` is one origin (one port on 127.0.0.1) served by the standard library's
``http.server.ThreadingHTTPServer`` (HTTP/1.1 keep-alive, one thread per connection). A site has a route
table (method + regular expression on the path → handler), a request log, a fault switchboard
(`vidfs.emulator.faults`) and a control API under ``/_emulator/``:

==========================================  ==============================================================
``GET  /_emulator/info``                    url, control_url, config (the vidfs TOML table)
``GET  /_emulator/requests``                the request log, a JSON list (``?method=HEAD&path=<regex>``);
                                            a parent's includes its subsites' (``origin`` names the site)
``GET  /_emulator/requests/counts``         ``{origin: {method: n}}``: requests since the last clear,
                                            exact however many the log's entries (200,000) let go
``POST /_emulator/requests/clear``          empty the log (and the subsites' logs)
``GET  /_emulator/faults``                  rules with their ``fired`` counters and the RNG seed
``POST /_emulator/faults``                  ``{"rules": [...], "seed": 0}`` replaces every rule (subsites too)
``GET  /_emulator/catalog``                 what the emulated vendor holds (emulator-specific JSON);
                                            ``?compact=1``: without content hashes (nothing is hashed,
                                            however many videos the site holds)
``GET|POST /_emulator/settings``            read / change emulator knobs (``{"jwt_lifetime": 3}``); every
                                            vendor has ``scale`` (``{"scale": 100000}``: that many
                                            synthetic videos; raising it inserts videos at runtime)
``POST /_emulator/mutate``                  emulator-specific changes (``{"action": "delete", ...}``)
==========================================  ==============================================================

Control requests are neither logged nor faulted. Every other request is logged once answered: method,
path with query, headers (lower-cased names), status, body bytes sent, start time, duration, faults fired.

Writing a new emulator module (``vidfs/emulator/<vendor>.py``)
----------------------------------------------------------------
1. Subclass `vidfs.emulator.vendor.VendorSite` (a `Site` with settings and mutation tables, prepared
   listings and scale; its essay says what to declare) and register routes in ``build(options)``::

       self.add_route("GET", r"/api/v1/videos", self.list_videos)
       self.add_route(("GET", "HEAD"), r"/files/(?P<id>[^/]+)", self.download)

   Patterns must match the whole path (no query); named groups land in ``req.params`` (URL-decoded).
2. A handler takes the `Request` and answers through it::

       def list_videos(self, req: Request) -> None:
           page = int(req.arg("page", "1"))
           req.send_json(200, {"data": [...]}, headers={"X-Total": "3"})

       def download(self, req: Request) -> None:
           serve_file(req, video.blob, etag=sha, content_type="video/mp4", filename_for_disposition="a.mp4")

   ``raise HttpError(404, "no such video")`` answers with `Site.error_body` (override it to give the
   vendor's error shape) or with an explicit ``body=``. ``req.json()`` parses the request body;
   ``req.query`` / ``req.arg()`` give query parameters; ``req.headers`` the request headers.
   Use `serve_file` for every media download (a path, or a `vidfs.emulator.content` blob): it does
   Range/HEAD/ETag/304/If-Range and the body faults.
3. Provide what the control API shows: ``catalog_json(compact)`` (JSON the tests compare the mount
   with), ``status()``, the ``SETTINGS`` and ``MUTATIONS`` tables, and `Site.config` (the provider's vidfs
   TOML table, e.g. ``{"type": "valt", "base_url": self.url + "/api/v3", ...}``).
4. Need a second origin (e.g. a storage host that download URLs redirect to)? Create a
   `vidfs.emulator.vendor.Subsite` and add routes to it: it starts and stops with its parent, shares its
   fault switchboard and shows in the ready line and the parent's request log.
5. Expose ``create_site(options: EmulatorOptions) -> Site`` and ``CONTRACT`` (`vidfs.emulator.contract`:
   the files a mount must show, and the rest the contract suite needs) at module level. That is all: the
   module is found by `vidfs.emulator.emulators`, nothing is registered by hand.

In-process use (tests)::

    with start_sites("pixop", page_size=2) as sites:
        site = sites["pixop"]          # .url, .faults, .log, .catalog(), .mutate(), .close()

From the command line: ``python -m vidfs.emulator --provider pixop`` (see ``__main__.py``).
"""

from __future__ import annotations

import re
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

from vidfs.emulator import faults as fault_kinds
from vidfs.emulator.faults import FaultRule, Faults
from vidfs.emulator.request import JSON, Handler, HttpError, Request, RequestLog, Route
from vidfs.emulator.serving import content_disposition, parse_range, quote_etag, serve_file

__all__ = [
    "JSON",
    "EmulatorOptions",
    "HttpError",
    "Request",
    "Site",
    "SiteGroup",
    "content_disposition",
    "create_site",
    "parse_range",
    "quote_etag",
    "serve_file",
    "start_sites",
]


@dataclass
class EmulatorOptions:
    """Options every emulator module's ``create_site`` receives. None means "the module's default"."""

    host: str = "127.0.0.1"
    port: int = 0
    media_dir: Path | None = None
    page_size: int | None = None
    jwt_lifetime: int | None = None
    catalog: str = "small"  # small | big
    videos_per_project: int | None = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # extra knobs, applied via update_settings
    verbose: bool = False
    scale: int | None = None  # synthetic videos added to the catalog (see vidfs.emulator.scale)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    site: Site

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.site._track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.site._track(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away, connection aborted on purpose, ...
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Site:
    """One emulated origin. Subclass it per vendor (see the module docstring)."""

    def __init__(
        self,
        name: str = "site",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.name = name
        self.verbose = verbose
        self.routes: list[Route] = []
        self.log = RequestLog()
        self.faults = Faults(seed)
        self.subsites: list[Site] = []
        self.closing = threading.Event()
        self._connections: set[Any] = set()
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._work_dir: Path | None = None
        handler_cls = type(f"{type(self).__name__}Request", (Request,), {"site": self})
        server_cls = _Server6 if ":" in host else _Server
        self.server = server_cls((host, port), handler_cls, bind_and_activate=False)
        self.server.site = self
        try:
            self.server.server_bind()
            self.server.server_activate()
        except BaseException:
            self.server.server_close()
            raise
        self.host = host
        self.port = self.server.server_port

    # ---- identity ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The origin, e.g. ``http://127.0.0.1:43121`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.url}/_emulator"

    def info(self) -> JSON:
        """What the CLI prints for this site in its ready line."""
        out: JSON = {"url": self.url, "control_url": self.control_url, "config": self.config()}
        if self.subsites:
            out["subsites"] = {s.name: {"url": s.url, "control_url": s.control_url} for s in self.subsites}
        return out

    # ---- routes -----------------------------------------------------------------------------------------
    def add_route(self, methods: str | Iterable[str], pattern: str, handler: Handler) -> None:
        """Answer `methods` on paths fully matching regex `pattern` with `handler(req)`."""
        names = [methods] if isinstance(methods, str) else list(methods)
        self.routes.append(Route(frozenset(m.upper() for m in names), re.compile(pattern), handler))

    def route(self, methods: str | Iterable[str], pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(methods, pattern, handler)
            return handler

        return register

    # ---- hooks (override per vendor) ----------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        """The vendor's error body for `status` (used by HttpError without body, 404/405 routes, 500)."""
        return {"error": message, "status": status}

    def catalog(self) -> JSON:
        return {}

    def compact_catalog(self) -> JSON:
        """The catalog without what is costly at scale (``GET /_emulator/catalog?compact=1``)."""
        return self.catalog()

    def settings(self) -> JSON:
        return {}

    def update_settings(self, changes: Mapping[str, Any]) -> JSON:
        """Apply knobs (unknown names → ValueError) and return every current setting."""
        if changes:
            raise ValueError(f"unknown settings: {', '.join(changes)}")
        return self.settings()

    def mutate(self, change: Mapping[str, Any]) -> JSON:
        """Apply an emulator-specific change (KeyError → 404, ValueError → 400)."""
        raise ValueError(f"{self.name} supports no mutations")

    def config(self) -> JSON:
        """The provider's table in vidfs's TOML config, pointing at this site."""
        return {}

    # ---- helpers ----------------------------------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns False (early) when the site is closing."""
        return not self.closing.wait(max(0.0, float(seconds)))

    def _track(self, conn: Any, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, req: Request) -> None:
        method, target, arrived = req.command, req.path, req.fault_generation
        if self.faults:
            rule = self.faults.take({fault_kinds.LATENCY}, method, target, arrived=arrived)
            if rule is not None:
                req.faults_fired.append(rule.kind)
                self.wait(rule["seconds"])
            rule = self.faults.take(
                {fault_kinds.STALL}, method, target, lambda r: bool(r["before_headers"]), arrived
            )
            if rule is not None:
                req.faults_fired.append("stall_before_headers")
                self.wait(rule["seconds"])
            rule = self.faults.take(fault_kinds.PRE_RESPONSE_KINDS, method, target, arrived=arrived)
            if rule is not None:
                req.faults_fired.append(rule.kind)
                _answer_fault(req, rule)
                return
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.fullmatch(req.path_only)
            if match is None:
                continue
            if method not in route.methods:
                allowed |= route.methods
                continue
            req.params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            route.handler(req)
            if req._status == 0:  # a handler must answer: never leave the client waiting
                raise RuntimeError(f"handler for {method} {req.path_only} sent no response")
            return
        if allowed:
            raise HttpError(
                405, f"method {method} not allowed", headers={"Allow": ", ".join(sorted(allowed))}
            )
        raise HttpError(404, f"no such resource: {req.path_only}")

    def _fault_boards(self) -> list[Faults]:
        """This site's switchboard and its subsites' (once each: a subsite may share its parent's)."""
        boards: list[Faults] = []
        for site in (self, *self.subsites):
            if all(site.faults is not b for b in boards):
                boards.append(site.faults)
        return boards

    def _faults_snapshot(self) -> JSON:
        """The rules with `fired` summed over every switchboard of this vendor."""
        boards = self._fault_boards()
        snapshot = boards[0].snapshot()
        for board in boards[1:]:
            for rule, other in zip(snapshot["rules"], board.snapshot()["rules"], strict=False):
                rule["fired"] = rule.get("fired", 0) + other.get("fired", 0)
        return snapshot

    def _control(self, req: Request) -> None:
        path, method = req.path_only.rstrip("/"), req.command
        try:
            if path in ("/_emulator", "/_emulator/info") and method == "GET":
                req.send_json(200, {"name": self.name, **self.info()})
            elif path == "/_emulator/requests" and method == "GET":
                # A parent's log includes its subsites' (each entry names its `origin`), so one control URL
                # shows every request of an emulated vendor, API and storage alike.
                entries = []
                for site in (self, *self.subsites):
                    for entry in site.log.entries(method=req.arg("method"), path=req.arg("path")):
                        entry["origin"] = site.name
                        entries.append(entry)
                entries.sort(key=lambda e: (e["time"], e["origin"], e["seq"]))
                req.send_json(200, entries)
            elif path == "/_emulator/requests/counts" and method == "GET":
                # Counted as they come, not from the log's entries (bounded): exact at any scale.
                req.send_json(200, {site.name: site.log.counts() for site in (self, *self.subsites)})
            elif path == "/_emulator/requests/clear" and method == "POST":
                cleared = sum(site.log.clear() for site in (self, *self.subsites))
                req.send_json(200, {"cleared": cleared})
            elif path == "/_emulator/faults" and method == "GET":
                req.send_json(200, self._faults_snapshot())
            elif path == "/_emulator/faults" and method == "POST":
                body = req.json()
                if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
                    raise ValueError('expected {"rules": [...]}')
                # Rules posted to a parent apply to its subsites too (each rule filters by path itself).
                snapshot = self._faults_snapshot()  # the counters of the rules being replaced
                for board in self._fault_boards():
                    board.set_rules(body["rules"], body.get("seed"))
                req.send_json(200, snapshot)
            elif path == "/_emulator/catalog" and method == "GET":
                compact = (req.arg("compact") or "").lower() in ("1", "true", "yes")
                req.send_json(200, self.compact_catalog() if compact else self.catalog())
            elif path == "/_emulator/settings" and method == "GET":
                req.send_json(200, self.settings())
            elif path == "/_emulator/settings" and method == "POST":
                body = req.json()
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object of settings")
                req.send_json(200, self.update_settings(body))
            elif path == "/_emulator/mutate" and method == "POST":
                body = req.json()
                if not isinstance(body, dict):
                    raise ValueError('expected {"action": ...}')
                req.send_json(200, self.mutate(body))
            else:
                req.send_json(404, {"error": f"no control endpoint {method} {path}"})
        except HttpError:
            raise
        except KeyError as exc:
            req.send_json(404, {"error": f"not found: {exc.args[0] if exc.args else exc}"})
        except (ValueError, TypeError) as exc:
            req.send_json(400, {"error": str(exc)})

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve in a background (daemon) thread. Idempotent; starts subsites too."""
        for sub in self.subsites:
            sub.start()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"emulator-{self.name}"
            )
            self._thread.daemon = True
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end open connections (stalled handlers wake up), close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.closing.set()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()
        for sub in self.subsites:
            sub.close()
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    @property
    def work_dir(self) -> Path:
        """A private scratch directory (changed-content variants...), removed when the site closes."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix=f"vidfs-{self.name}-"))
        return self._work_dir

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer_fault(req: Request, rule: FaultRule) -> None:
    if rule.kind == fault_kinds.RETRY_AFTER:
        status = int(rule["status"])
        req.send_text(status, "Too Many Requests (emulated)\n", headers={"Retry-After": str(rule["seconds"])})
    else:
        status = int(rule["status"])
        body = rule["body"] if rule["body"] is not None else f"emulated fault: HTTP {status}\n"
        req.send_text(status, str(body))


# ---------------------------------------------------------------------------------------------------------
# several sites in one process


def create_site(provider: str, options: EmulatorOptions | None = None, **overrides: Any) -> Site:
    """Build (bind, not start) the site of a registered emulator. `overrides` set `EmulatorOptions` fields."""
    from vidfs.emulator import load_emulator  # late: the package imports this module

    opts = options or EmulatorOptions()
    if overrides:
        opts = EmulatorOptions(**{**opts.__dict__, **overrides})
    site: Site = load_emulator(provider).create_site(opts)
    if opts.settings:
        site.update_settings(opts.settings)
    return site


class SiteGroup:
    """Started sites by provider name; a context manager that closes them all."""

    def __init__(self, sites: Mapping[str, Site]) -> None:
        self.sites: dict[str, Site] = dict(sites)

    def __getitem__(self, name: str) -> Site:
        return self.sites[name]

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites.values())

    def __len__(self) -> int:
        return len(self.sites)

    def info(self) -> JSON:
        """``{provider: {"url", "control_url", "config"}}`` — the CLI's ready line."""
        return {name: site.info() for name, site in self.sites.items()}

    def close(self) -> None:
        for site in self.sites.values():
            site.close()

    def __enter__(self) -> SiteGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_sites(
    *providers: str | Site, options: EmulatorOptions | None = None, **overrides: Any
) -> SiteGroup:
    """Create and start sites (provider names, or ready-made `Site` objects), each in its own thread.

    With a fixed port P, the i-th site created by name gets port P + i.
    """
    opts = options or EmulatorOptions()
    if overrides:
        opts = EmulatorOptions(**{**opts.__dict__, **overrides})
    sites: dict[str, Site] = {}
    try:
        for i, item in enumerate(providers):
            if isinstance(item, Site):
                site = item
            else:
                port = opts.port + i if opts.port else 0
                site = create_site(item, EmulatorOptions(**{**opts.__dict__, "port": port}))
            sites[site.name if isinstance(item, Site) else item] = site
            site.start()
    except BaseException:
        for site in sites.values():
            site.close()
        raise
    return SiteGroup(sites)
