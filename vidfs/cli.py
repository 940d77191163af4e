"""The `vidfs` command: one module per verb in `vidfs.commands`, dispatched from here.

Each command module has `HELP`, `add_arguments(parser)` and `run(args) -> int`. Errors become one line and
an exit code: 0 success, 1 a remote or runtime failure, 2 a config or usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from vidfs import __version__
from vidfs.commands.process import report_failure
from vidfs.errors import ConfigError, UsageError, VidfsError, leaf_error
from vidfs.logs import say

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
COMMANDS = ("mount", "umount", "demo", "check", "ls", "stats", "prefetch", "refresh")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"vidfs: error: {message} (see '{self.prog} --help')\n")


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"vidfs.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidfs", description="Mount remote video catalogs as a read-only filesystem.")
    parser.add_argument("--version", action="version", version=f"vidfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = _command(name)
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
        command.add_argument("--debug", action="store_true", help="debug logging (same as -vv)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from vidfs.logs import setup_logging

    verbose = 2 if args.debug else args.verbose
    if not (args.command == "mount" and args.daemon):
        default = 1 if args.command == "mount" else 0
        setup_logging(verbose=max(verbose, default), log_file=getattr(args, "log_file", None))
    try:
        return int(_command(args.command).run(args))
    except (ConfigError, UsageError) as exc:
        return _fail(exc, EXIT_USAGE)
    except VidfsError as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vidfs stats M | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except BaseExceptionGroup as group:
        leaf = leaf_error(group)
        if not isinstance(leaf, VidfsError):
            raise
        return _fail(leaf, EXIT_USAGE if isinstance(leaf, ConfigError | UsageError) else EXIT_FAILURE)


def _fail(exc: BaseException, code: int) -> int:
    report_failure(str(exc))
    say(logging.ERROR, f"vidfs: error: {exc}")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
