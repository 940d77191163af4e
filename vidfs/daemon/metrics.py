"""The Prometheus endpoint: `GET /metrics` in the text format, when `[metrics] listen` is set.

What is measured, and where
---------------------------
Nothing is counted twice. The daemon already counts everything in one `Stats` (`vidfs.stats`) and in the
`statistics()` of its parts, gathered by `VideoFS.stats_document()` (what `vidfs stats --json` prints). The
collector here turns that one document into metric families at scrape time (`families`), so a scrape costs
one document and nothing is added to the read path beyond the counters that were already there (plus the
bytes served by source, counted where the block cache hands blocks to readers, and the FUSE read latency
histogram, observed in `operations.read`).

Names follow the Prometheus conventions (`vidfs_…_total` for counters, `_bytes`, `_seconds`). Label values
are drawn from closed vocabularies (sources, tiers, errno names, service names, HTTP statuses) or from
provider instance names, which are keys of the config; never a URL, a file name, a remote id or a secret.
The served-bytes `source` label always lists memory, disk, shared and network (zero until used, so a
dashboard's series exist from the first scrape), and any other source a new tier counts as
`bytes.served.<source>` appears by itself.

Serving without harming the mount
---------------------------------
The HTTP side is `prometheus_client`'s own WSGI app in a `socketserver` thread: nothing of it runs on the
trio loop. A scrape thread asks the trio thread for the document (`trio.from_thread.run_sync`), so the
counters are only ever read where they are written, without a lock; a scrape never blocks the loop for
longer than building the document. Each connection has a socket timeout (a silent client is dropped) and at
most `MAX_CLIENTS` are served at once (more are closed at once), so a crowd costs bounded threads.

The endpoint is a supervised service (`vidfs.daemon.supervisor`) started before the kernel mount. An address
that cannot be bound (in use, not local, a bad name) is one warning in the log and the mount goes on
without metrics; the service is not retried. On unmount the server is shut down and its socket closed.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector

from vidfs import __version__

log = logging.getLogger(__name__)

SOURCES = ("memory", "disk", "shared", "network")  # always exported; others appear when counted
MAX_CLIENTS = 16  # scrapes served at once
CLIENT_TIMEOUT = 10.0  # seconds a connection may stay silent
POLL_INTERVAL = 0.2  # how often the accept loop looks for a shutdown

Document = Mapping[str, Any]


# ------------------------------------------------------------------------------------------ the families
def families(document: Document) -> Iterator[Metric]:
    """Every metric family of one stats document (`VideoFS.stats_document()`)."""
    counters: Mapping[str, int] = document.get("counters", {})
    yield from _process(document)
    yield from _bytes(counters)
    yield from _http(document.get("requests", []), counters)
    yield from _caches(document, counters)
    yield from _fuse(document, counters)
    yield from _catalog(document, counters)
    yield from _services(document.get("services", {}), counters)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _by_prefix(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix) :]: value for name, value in counters.items() if name.startswith(prefix)}


def _process(document: Document) -> Iterator[Metric]:
    info = GaugeMetricFamily("vidfs_build_info", "vidfs version (always 1)", labels=["version"])
    info.add_metric([__version__], 1)
    yield info
    yield _gauge("vidfs_uptime_seconds", "Seconds since the mount started", document.get("uptime_s", 0))
    yield _gauge(
        "vidfs_start_time_seconds", "When the mount started (Unix time)", document.get("started_at", 0)
    )


def _bytes(counters: Mapping[str, int]) -> Iterator[Metric]:
    served = CounterMetricFamily(
        "vidfs_served_bytes",
        "Bytes handed to readers, by where each block was when the reader asked for it "
        "(memory: in the memory cache; disk, shared: read from that tier for this read; "
        "network: the reader waited for a download)",
        labels=["source"],
    )
    by_source = _by_prefix(counters, "bytes.served.")
    for source in [*SOURCES, *sorted(set(by_source) - set(SOURCES))]:
        served.add_metric([source], by_source.get(source, 0))
    yield served
    yield _counter(
        "vidfs_fetched_bytes", "Bytes downloaded from the vendors", counters.get("bytes.fetched", 0)
    )
    yield _counter(
        "vidfs_prefetch_scheduled_bytes",
        "Bytes the readahead asked for ahead of the readers",
        counters.get("prefetch.bytes_scheduled", 0),
    )


def _http(requests: Iterable[Mapping[str, Any]], counters: Mapping[str, int]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "vidfs_http_requests",
        "HTTP responses by provider instance, kind (api: the vendor's API; storage: media bytes) and status",
        labels=["provider", "kind", "status"],
    )
    for row in requests:
        instance, _, kind = str(row["tag"]).rpartition(":")
        family.add_metric([instance or str(row["tag"]), kind, str(row["status"])], row["count"])
    yield family
    retries = CounterMetricFamily(
        "vidfs_http_retries",
        "Attempts repeated after a temporary failure (request: API calls and probes; "
        "range: a ranged download started again after a pause)",
        labels=["kind"],
    )
    retries.add_metric(["request"], counters.get("http.retries", 0))
    retries.add_metric(["range"], counters.get("range.retries", 0))
    yield retries
    yield _counter(
        "vidfs_range_resumes",
        "Ranged downloads continued at once from the bytes received after the body ended early",
        counters.get("range.resumes", 0),
    )
    yield _counter(
        "vidfs_http_failures",
        "Requests that failed for good (retries exhausted or not retryable)",
        counters.get("http.errors", 0),
    )
    yield _counter(
        "vidfs_http_fast_failures",
        "Requests refused at once because their host was unreachable moments before",
        counters.get("http.fast_failures", 0),
    )
    yield _counter(
        "vidfs_url_resolutions",
        "Download URLs (leases) obtained from the vendors",
        counters.get("leases.resolved", 0),
    )
    renewals = CounterMetricFamily(
        "vidfs_url_renewals",
        "Download URLs obtained again (expiring: at or before their expiry; refused: storage refused one)",
        labels=["reason"],
    )
    renewals.add_metric(["expiring"], counters.get("leases.renewed", 0))
    renewals.add_metric(["refused"], counters.get("leases.refreshed_after_refusal", 0))
    yield renewals


def _caches(document: Document, counters: Mapping[str, int]) -> Iterator[Metric]:
    memory: Mapping[str, int] = document.get("memory_cache", {})
    disk: Mapping[str, int] | None = document.get("disk_cache")
    size = GaugeMetricFamily("vidfs_cache_size_bytes", "Bytes held by a cache tier", labels=["tier"])
    budget = GaugeMetricFamily("vidfs_cache_budget_bytes", "Bytes a cache tier may hold", labels=["tier"])
    size.add_metric(["memory"], memory.get("memory_bytes", 0))
    budget.add_metric(["memory"], memory.get("memory_budget", 0))
    if disk is not None:
        size.add_metric(["disk"], disk.get("bytes", 0))
        budget.add_metric(["disk"], disk.get("capacity", 0))
    yield size
    yield budget
    blocks = CounterMetricFamily(
        "vidfs_cache_blocks",
        "Block lookups by outcome (memory_hit, joined: a reader found the block in memory or in flight; "
        "disk_hit, miss: a reader's or the readahead's block read from disk or downloaded)",
        labels=["result"],
    )
    for result, counter in (
        ("memory_hit", "cache.memory_hits"),
        ("disk_hit", "cache.disk_hits"),
        ("joined", "cache.joined_in_flight"),
        ("miss", "cache.misses"),
    ):
        blocks.add_metric([result], counters.get(counter, 0))
    yield blocks
    if disk is not None:
        yield _gauge(
            "vidfs_disk_cache_usable_bytes",
            "Bytes the disk cache may use now (its budget, or less while its file system is short of room)",
            disk.get("usable", 0),
        )
        yield _gauge(
            "vidfs_disk_cache_pinned_bytes", "Bytes pinned in the disk cache", disk.get("pinned_bytes", 0)
        )
        yield _counter(
            "vidfs_disk_cache_evictions", "Extents evicted from the disk cache", disk.get("evictions", 0)
        )
        yield _gauge(
            "vidfs_disk_cache_unwritable",
            "1 while the disk cache cannot write (full or read-only file system)",
            disk.get("unwritable", 0),
        )


def _fuse(document: Document, counters: Mapping[str, int]) -> Iterator[Metric]:
    yield _gauge("vidfs_open_files", "Files open through the mount", document.get("open_files", 0))
    yield _gauge(
        "vidfs_open_directories", "Directories open through the mount", document.get("open_directories", 0)
    )
    yield _gauge("vidfs_inodes", "Inodes the daemon keeps for the kernel", document.get("inodes", 0))
    yield _counter("vidfs_files_opened", "Opens of files", counters.get("files.opened", 0))
    errors = CounterMetricFamily(
        "vidfs_fuse_errors", "FUSE requests answered with an error, by errno", labels=["errno"]
    )
    for name, value in sorted(_by_prefix(counters, "fuse.errors.").items()):
        errors.add_metric([name], value)
    yield errors
    read = document.get("histograms", {}).get("fuse.read")
    latency = HistogramMetricFamily(
        "vidfs_fuse_read_duration_seconds",
        "Time to answer a FUSE read (the page cache's hits never get here)",
    )
    if read is not None:
        buckets = [(_bound(bound), count) for bound, count in read["buckets"]]
        latency.add_metric([], buckets, sum_value=read["sum"])
    else:
        latency.add_metric([], [("+Inf", 0)], sum_value=0)
    yield latency


def _bound(bound: float | str) -> str:
    return bound if isinstance(bound, str) else repr(float(bound))


def _catalog(document: Document, counters: Mapping[str, int]) -> Iterator[Metric]:
    listings: Mapping[str, int] = document.get("listings", {})
    served = CounterMetricFamily(
        "vidfs_listings_served",
        "Directory listings answered from the cache (fresh: within metadata_ttl; stale: older, "
        "refreshed in the background)",
        labels=["freshness"],
    )
    served.add_metric(["fresh"], counters.get("metadata.hits", 0))
    served.add_metric(["stale"], counters.get("metadata.stale_served", 0))
    yield served
    yield _counter(
        "vidfs_listing_fetches", "Listings asked of the vendors", counters.get("metadata.refreshes", 0)
    )
    yield _counter(
        "vidfs_listing_videos_carried",
        "Videos a re-listing found unchanged and kept as they were",
        counters.get("metadata.carried", 0),
    )
    yield _counter(
        "vidfs_listing_fetch_failures",
        "Listings the vendors failed to give",
        counters.get("metadata.fetch_failures", 0),
    )
    yield _counter(
        "vidfs_refreshes", "Refresh requests (vidfs refresh) answered", counters.get("refresh.requests", 0)
    )
    yield _counter(
        "vidfs_refreshed_listings",
        "Cached listings dropped by refresh requests",
        counters.get("refresh.listings", 0),
    )
    yield _gauge(
        "vidfs_listing_directories", "Directories whose listing is cached", listings.get("directories", 0)
    )
    yield _counter(
        "vidfs_listing_refreshes_deferred",
        "Refreshes of stale listings that waited for the mount to be idle (refresh_idle)",
        counters.get("metadata.refreshes_deferred", 0),
    )
    yield _gauge(
        "vidfs_listing_refreshes_queued",
        "Refreshes of stale listings waiting for the mount to be idle",
        listings.get("refreshes_queued", 0),
    )
    yield _gauge(
        "vidfs_api_window",
        "API calls of one origin allowed in flight at once (the widest adaptive window)",
        document.get("http", {}).get("api_window", 0),
    )
    yield _gauge(
        "vidfs_probe_window",
        "Size probes of one storage origin allowed in flight at once (the widest adaptive window)",
        document.get("probes", {}).get("concurrency", 0),
    )
    yield _gauge(
        "vidfs_providers_down",
        "Provider instances whose listings fail to connect",
        listings.get("instances_down", 0),
    )


def _services(services: Mapping[str, Mapping[str, Any]], counters: Mapping[str, int]) -> Iterator[Metric]:
    failures = CounterMetricFamily(
        "vidfs_service_failures",
        "Failures of the mount's background services and tasks (each logged once, none ends the mount)",
        labels=["service"],
    )
    restarts = CounterMetricFamily(
        "vidfs_service_restarts", "Restarts of background services after a failure", labels=["service"]
    )
    running = GaugeMetricFamily(
        "vidfs_service_running",
        "Background services running, or tasks of a kind in flight",
        labels=["service"],
    )
    for name, record in sorted(services.items()):
        failures.add_metric([name], record.get("failures", 0))
        restarts.add_metric([name], counters.get(f"services.{name}.restarts", 0))
        running.add_metric([name], record.get("running", 0))
    yield failures
    yield restarts
    yield running
    control = CounterMetricFamily(
        "vidfs_control_connections",
        "Connections to the control socket, by outcome (answered, or why not)",
        labels=["outcome"],
    )
    for outcome, value in sorted(_by_prefix(counters, "control.").items()):
        if outcome != "connections":
            control.add_metric([outcome], value)
    yield control


# ----------------------------------------------------------------------------------------- the collector
class DocumentCollector(Collector):
    """Metric families from a stats document fetched at each scrape (from the trio thread)."""

    def __init__(self, document: Callable[[], Document]) -> None:
        self._document = document
        self._failed_once = False

    def describe(self) -> list[Metric]:
        return []  # nothing to declare up front; collect() must not run at registration (wrong thread)

    def collect(self) -> Iterator[Metric]:
        try:
            document = self._document()
        except trio.RunFinishedError:  # the mount is ending: an empty answer
            return iter(())
        except Exception:
            if not self._failed_once:
                self._failed_once = True
                log.exception("metrics: the statistics could not be gathered (logged once)")
            return iter(())
        return families(document)


# -------------------------------------------------------------------------------------------- the server
class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT  # on the connection's socket: a silent client does not hold a thread

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per scrape (and a client's request line never reaches our log)


class _Server(ThreadingWSGIServer):
    """prometheus_client's threaded WSGI server, bounded in threads, that binds without a DNS lookup."""

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.turned_away = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks socket.getfqdn(), a reverse DNS lookup that can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.turned_away += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def bind_server(host: str, port: int, app: Callable[..., Any]) -> _Server:
    """A bound, listening server for `app` (blocking: call it in a worker thread)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    server = _Server((str(address[0]), port), family)
    server.set_app(app)
    return server


class MetricsEndpoint:
    """The `metrics` service of a mount: serves `families(document())` at http://HOST:PORT/metrics."""

    def __init__(self, listen: tuple[str, int], document: Callable[[], Document]) -> None:
        self.host, self.port = listen
        self.document = document
        self._server: _Server | None = None

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            DocumentCollector(lambda: trio.from_thread.run_sync(self.document, trio_token=token))
        )
        registry.register(ProcessCollector(registry=None))  # process_cpu_seconds_total, resident memory, fds
        try:
            server = await trio.to_thread.run_sync(bind_server, self.host, self.port, make_wsgi_app(registry))
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                reason = "the address is in use"
            log.warning("no metrics endpoint at %s (%s); the mount goes on without it", self.where, reason)
            task_status.started()
            return
        self._server = server
        thread = threading.Thread(
            target=server.serve_forever, args=(POLL_INTERVAL,), name="vidfs-metrics", daemon=True
        )
        thread.start()
        log.info("metrics at http://%s/metrics", self.where)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(server.shutdown)  # returns once serve_forever did
            server.server_close()
            self._server = None

    def statistics(self) -> dict[str, int]:
        server = self._server
        return {"listening": int(server is not None), "turned_away": server.turned_away if server else 0}
