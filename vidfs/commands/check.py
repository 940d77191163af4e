"""`vidfs check CONFIG`: validate a config, log in to each provider, list its top level; a table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

from vidfs.commands.output import print_table
from vidfs.config.loader import load_config
from vidfs.engine import open_engine
from vidfs.errors import VidfsError, leaf_error

HELP = "validate a config, log in, list each provider's top level"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path)


def run(args: argparse.Namespace) -> int:
    return trio.run(run_check, args.config)


async def run_check(config_path: Path) -> int:
    config = load_config(config_path)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows: list[tuple[str, str, str, str, str]] = []
    failed = False
    async with open_engine(config) as engine:
        for name, provider in engine.providers.items():
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
    print_table(("PROVIDER", "TYPE", "STATUS", "ENTRIES", "DETAIL"), rows)
    return 1 if failed else 0
