"""`vidfs umount MOUNTPOINT`: unmount (`fusermount3 -u`); the daemon then exits on its own."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidfs.commands.process import unmount

HELP = "unmount a vidfs mount"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path)


def run(args: argparse.Namespace) -> int:
    return unmount(args.mountpoint)
