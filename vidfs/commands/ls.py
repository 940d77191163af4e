"""`vidfs ls CONFIG [PATH]`: browse without mounting, items that are not files included (with status)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import trio

from vidfs.commands.output import print_table
from vidfs.config.loader import load_config
from vidfs.engine import open_engine

HELP = "browse a config's tree without mounting (shows items that are not files too)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path)
    parser.add_argument(
        "path", nargs="?", default="", help="a path below the mount root, e.g. my-provider/project"
    )


def run(args: argparse.Namespace) -> int:
    return trio.run(run_ls, args.config, args.path)


async def run_ls(config_path: Path, path: str) -> int:
    config = load_config(config_path)
    async with open_engine(config) as engine:
        tree = engine.tree
        with trio.fail_after(config.mount.request_timeout * 4):
            node = await tree.resolve_path(path)
            if not node.is_dir:
                node = await tree.sized(node)
                rows = [_row(node.size, node.mtime, "file", node.name)]
            else:
                children, unsized = await tree.sized_children(node.inode)
                failed = {id(child): exc for child, exc in unsized}
                rows = [
                    _row(
                        None if child.is_dir or id(child) in failed else child.size,
                        child.mtime,
                        "dir" if child.is_dir else "file",
                        child.name
                        + ("/" if child.is_dir else "")
                        + (f"  (size unknown: {failed[id(child)]})" if id(child) in failed else ""),
                    )
                    for child in children
                ]
                hidden = await tree.hidden(node.inode) if node.instance is not None else ()
                rows += [
                    ("-", "-", item.status.lower(), f"{item.name}  (not a file: {item.status})")
                    for item in hidden
                ]

    print_table(("SIZE", "MODIFIED (UTC)", "KIND", "NAME"), rows)
    return 0


def _row(size: int | None, mtime: float, kind: str, name: str) -> tuple[str, str, str, str]:
    when = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S") if mtime else "-"
    return ("-" if size is None else str(size), when, kind, name)
