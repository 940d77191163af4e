"""`vidfs check` and `vidfs ls`: talk to the providers without mounting."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from vidfs.config import load_config
from vidfs.errors import VidfsError, leaf_error
from vidfs.http import HttpClient
from vidfs.metadata import MetadataCache
from vidfs.mount import build_providers, http_settings
from vidfs.resolver import Resolver
from vidfs.stats import Stats
from vidfs.tree import Tree


async def run_check(config_path: Path) -> int:
    config = load_config(config_path)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows: list[tuple[str, str, str, str, str]] = []
    failed = False
    async with AsyncExitStack() as stack:
        http = HttpClient(http_settings(config), Stats())
        stack.push_async_callback(http.aclose)
        providers = build_providers(config, http)
        for name, provider in providers.items():
            stack.push_async_callback(provider.aclose)
            kind = next(p.type for p in config.providers if p.name == name)
            started = time.monotonic()
            try:
                with trio.fail_after(config.mount.request_timeout):
                    listing = await provider.list(provider.root())
            except trio.TooSlowError:
                failed = True
                rows.append((name, kind, "FAIL", "-", f"no answer within {config.mount.request_timeout:g}s"))
                continue
            except (VidfsError, BaseExceptionGroup) as exc:
                failed = True
                rows.append((name, kind, "FAIL", "-", str(leaf_error(exc))))
                continue
            took = time.monotonic() - started
            names = ", ".join(entry.name for entry in listing.entries[:3])
            more = "…" if len(listing.entries) > 3 else ""
            rows.append((name, kind, "ok", str(len(listing.entries)), f"{took:.2f}s: {names}{more}"))
    _table(("PROVIDER", "TYPE", "STATUS", "ENTRIES", "DETAIL"), rows)
    return 1 if failed else 0


async def run_ls(config_path: Path, path: str) -> int:
    config = load_config(config_path)
    stats = Stats()
    async with AsyncExitStack() as stack:
        http = HttpClient(http_settings(config), stats)
        stack.push_async_callback(http.aclose)
        providers = build_providers(config, http)
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)
        resolver = Resolver(stats)
        metadata = MetadataCache(
            ttl=config.cache.metadata_ttl,
            negative_ttl=config.cache.negative_ttl,
            http=http,
            resolver=resolver,
            stats=stats,
        )
        tree = Tree(providers, metadata)
        with trio.fail_after(config.mount.request_timeout * 4):
            node = await tree.resolve_path(path)
            if not node.is_dir:
                rows = [_row(node.size, node.mtime, "file", node.name)]
            else:
                children = await tree.children(node.inode)
                rows = [
                    _row(
                        None if child.is_dir else child.size,
                        child.mtime,
                        "dir" if child.is_dir else "file",
                        child.name + ("/" if child.is_dir else ""),
                    )
                    for child in children
                ]
                hidden = await tree.hidden(node.inode) if node.instance is not None else ()
                rows += [
                    ("-", "-", item.status.lower(), f"{item.name}  (not a file: {item.status})")
                    for item in hidden
                ]
    _table(("SIZE", "MODIFIED (UTC)", "KIND", "NAME"), rows)
    return 0


def _row(size: int | None, mtime: float, kind: str, name: str) -> tuple[str, str, str, str]:
    when = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S") if mtime else "-"
    return ("-" if size is None else str(size), when, kind, name)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def render_stats(document: dict[str, Any]) -> None:
    """`vidfs stats` as tables: counters, requests by tag and status, caches."""
    counters = document.get("counters", {})
    memory = document.get("memory_cache", {})
    disk = document.get("disk_cache", {})
    hits = counters.get("cache.memory_hits", 0) + counters.get("cache.disk_hits", 0)
    misses = counters.get("cache.misses", 0)
    summary = [
        ("uptime", f"{document.get('uptime_s', 0):.0f} s"),
        ("peak RSS", f"{document.get('max_rss_kib', 0) / 1024:.1f} MiB"),
        ("open files", str(document.get("open_files", 0))),
        ("bytes read by clients", _mb(counters.get("bytes.read", 0))),
        ("bytes fetched", _mb(counters.get("bytes.fetched", 0))),
        ("block hits / misses", f"{hits} / {misses}"),
        ("memory cache", f"{_mb(memory.get('memory_bytes', 0))} of {_mb(memory.get('memory_budget', 0))}"),
        ("disk cache", f"{_mb(disk.get('bytes', 0))} of {_mb(disk.get('capacity', 0))}" if disk else "off"),
        (
            "URL leases resolved / renewed",
            f"{counters.get('leases.resolved', 0)} / {counters.get('leases.renewed', 0)}",
        ),
        ("URL refreshed after refusal", str(counters.get("leases.refreshed_after_refusal", 0))),
        ("HTTP retries / errors", f"{counters.get('http.retries', 0)} / {counters.get('http.errors', 0)}"),
    ]
    _table(("WHAT", "VALUE"), summary)
    print()
    rows = [(r["tag"], r["status"], str(r["count"])) for r in document.get("requests", [])]
    _table(("REQUESTS", "STATUS", "COUNT"), rows)


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"
