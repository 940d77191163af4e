"""`vidfs stats MOUNTPOINT [--json]`: a mounted vidfs's statistics, read from the root's xattr."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vidfs.commands.output import megabytes, print_table
from vidfs.errors import UsageError
from vidfs.fs.videofs import STATS_XATTR

HELP = "show a mounted vidfs's statistics (cache, requests, renewals, errors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--json", action="store_true", help="print the raw JSON")


def run(args: argparse.Namespace) -> int:
    try:
        raw = os.getxattr(args.mountpoint, STATS_XATTR)
    except OSError as exc:
        raise UsageError(f"{args.mountpoint} is not a vidfs mount ({exc.strerror})") from None
    document = json.loads(raw)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        render_stats(document)
    return 0


def shared_rows(shared: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The fleet's shared tier (vidfs.fleet), when configured."""
    if not shared or "redis" not in shared:
        return []
    redis, blocks, listings = shared["redis"], shared.get("blocks", {}), shared.get("listings", {})
    return [
        ("shared cache", f"{shared.get('mode')}, breaker {redis.get('breaker')}"),
        ("shared hits / misses", f"{blocks.get('hits', 0)} / {blocks.get('misses', 0)}"),
        ("shared rejected values", str(blocks.get("rejected", 0))),
        ("shared errors / timeouts", f"{redis.get('errors', 0)} / {redis.get('timeouts', 0)}"),
        (
            "shared listings hits / vendor calls",
            f"{listings.get('hits', 0)} / {listings.get('vendor_calls', 0)}",
        ),
    ]


def render_stats(document: dict[str, Any]) -> None:
    """`vidfs stats` as tables: counters, requests by tag and status, caches."""
    counters = document.get("counters", {})
    memory = document.get("memory_cache", {})
    disk = document.get("disk_cache", {})
    hits = counters.get("cache.memory_hits", 0) + counters.get("cache.disk_hits", 0)
    misses = counters.get("cache.misses", 0)
    disk_text = "off"
    if disk:
        disk_text = f"{megabytes(disk.get('bytes', 0))} of {megabytes(disk.get('capacity', 0))}"
    summary = [
        ("uptime", f"{document.get('uptime_s', 0):.0f} s"),
        ("peak RSS", f"{document.get('max_rss_kib', 0) / 1024:.1f} MiB"),
        ("open files", str(document.get("open_files", 0))),
        ("bytes read by clients", megabytes(counters.get("bytes.read", 0))),
        ("bytes fetched", megabytes(counters.get("bytes.fetched", 0))),
        ("block hits / misses", f"{hits} / {misses}"),
        (
            "memory cache",
            f"{megabytes(memory.get('memory_bytes', 0))} of {megabytes(memory.get('memory_budget', 0))}",
        ),
        ("disk cache", disk_text),
        (
            "URL leases resolved / renewed",
            f"{counters.get('leases.resolved', 0)} / {counters.get('leases.renewed', 0)}",
        ),
        ("URL refreshed after refusal", str(counters.get("leases.refreshed_after_refusal", 0))),
        ("HTTP retries / errors", f"{counters.get('http.retries', 0)} / {counters.get('http.errors', 0)}"),
        ("requests at once: API window / size probes", _windows(document)),
        *_extra_rows(counters, document.get("services") or {}),
    ]
    summary += shared_rows(document.get("shared"))  # the fleet's shared tier, when configured
    print_table(("WHAT", "VALUE"), summary)
    print()
    rows = [(r["tag"], r["status"], str(r["count"])) for r in document.get("requests", [])]
    print_table(("REQUESTS", "STATUS", "COUNT"), rows)
    services = document.get("services")
    if services:
        print()
        print_table(
            ("SERVICE", "KIND", "RUNNING", "STARTS", "FAILURES", "LAST ERROR"), _service_rows(services)
        )


def _windows(document: dict[str, Any]) -> str:
    api = document.get("http", {}).get("api_window", 0)
    return f"{api} / {document.get('probes', {}).get('concurrency', 0)}"


def _listed(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(values.items()) if count) or "none"


def _by_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix) :]: value for name, value in counters.items() if name.startswith(prefix)}


def _extra_rows(counters: dict[str, int], services: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Bytes served by source, errors by errno, service failures and, when present, the control socket."""
    served = _by_prefix(counters, "bytes.served.")
    sources = ["memory", "disk", *sorted(set(served) - {"memory", "disk", "network"}), "network"]
    rows = [
        (
            f"bytes served from {' / '.join(sources)}",
            " / ".join(megabytes(served.get(s, 0)) for s in sources),
        ),
        ("FUSE errors by errno", _listed(_by_prefix(counters, "fuse.errors."))),
        ("service failures", _listed({name: r.get("failures", 0) for name, r in services.items()})),
    ]
    control = _by_prefix(counters, "control.")
    if control:
        answered = f"{control.pop('connections', 0)} / {control.pop('answered', 0)}"
        rows.append(("control connections / answered", answered))
        rows.append(("control refusals", _listed(control)))
    return rows


def _service_rows(services: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            name,
            str(record.get("kind", "")),
            str(record.get("running", 0)),
            str(record.get("starts", 0)),
            str(record.get("failures", 0)),
            str(record.get("last_error", ""))[:80] or "-",
        )
        for name, record in sorted(services.items())
    ]
