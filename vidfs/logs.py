"""Logging to the three places vidfs writes to: the systemd journal, a log file, a terminal.

Under a service manager, stderr is a stream socket into journald. journald stamps every line with its own
time and reads an optional syslog priority prefix, `<N>`, at the start of each line (`SyslogLevelPrefix=`,
on by default). So there a record is written as `<N>logger: message`: no timestamp of ours, the priority
that `journalctl -p warning` filters on, and exactly one line per record. A traceback or any multi-line
message is folded into its one line (line breaks become ` ⏎ `): journald would make every further line an
entry of its own, at the default priority, cut off from the record it belongs to.

How we know stderr *is* the journal: systemd sets `JOURNAL_STREAM=<st_dev>:<st_ino>` of the stream it
connected, and systemd.exec(5) asks programs to compare it with their own stderr rather than trust the
variable alone: it is inherited by children whose stderr went elsewhere (`vidfs mount --daemon` gives its
serving child a log file), and a unit may send stdout to the journal and stderr to a file.
`INVOCATION_ID` (set for every unit, whatever its output) says nothing about stderr and is not used.

Everywhere else: `--log-file` (and `--daemon`'s default log file) gets full timestamps, a terminal short
ones, and any other stderr (a pipe, a file) full ones. In the journal, Python warnings and uncaught
exceptions also go through the same handler, so they too arrive as one prefixed line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import TextIO

# syslog(3) priorities, as journald reads them from a `<N>` prefix.
_PRIORITIES = (
    (logging.CRITICAL, 2),  # LOG_CRIT
    (logging.ERROR, 3),  # LOG_ERR
    (logging.WARNING, 4),  # LOG_WARNING
    (logging.INFO, 6),  # LOG_INFO
)
_DEBUG_PRIORITY = 7  # LOG_DEBUG
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
FOLD_MARK = " ⏎ "
# journald splits a line longer than LineMax= (48 KiB by default) into several entries, and only the first
# carries the prefix: keep a record below that.
MAX_RECORD_CHARS = 32 * 1024

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The journal priority of a logging level (levels between the named ones round down)."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return _DEBUG_PRIORITY


def journal_line(priority: int, text: str) -> str:
    """`<priority>text` folded onto one line (no newline at the end), at most `MAX_RECORD_CHARS` long."""
    folded = _LINE_BREAK.sub(FOLD_MARK, text.rstrip("\r\n"))
    if len(folded) > MAX_RECORD_CHARS:
        cut = len(folded) - MAX_RECORD_CHARS
        folded = f"{folded[:MAX_RECORD_CHARS]} … ({cut} characters cut)"
    return f"<{priority}>{folded}"


def stream_is_journal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stderr) is the journal stream systemd named in `JOURNAL_STREAM`."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not backed by a file descriptor
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`, one line per record (traceback included)."""

    def __init__(self, fmt: str = JOURNAL_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        return journal_line(syslog_priority(record.levelno), super().format(record))


def say(level: int, text: str) -> None:
    """Write one message for the user to stderr: as it is, or with its priority when stderr is the journal.

    For the command line's own one-line messages (`vidfs: error: ...`) that are printed, not logged.
    """
    line = journal_line(syslog_priority(level), text) if stream_is_journal() else text
    print(line, file=sys.stderr, flush=True)


def setup_logging(*, verbose: int = 0, log_file: Path | None = None) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    elif stream_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        _route_stray_output_to_logging()
    elif sys.stderr.isatty():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT, "%H:%M:%S"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO with full URLs (signed query strings included): keep it quiet.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _route_stray_output_to_logging() -> None:
    """Python warnings and uncaught exceptions write several raw lines to stderr: make them records."""
    logging.captureWarnings(True)
    crash_log = logging.getLogger("vidfs")

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        crash_log.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        crash_log.critical("uncaught exception in thread %s", name, exc_info=exc_info)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
