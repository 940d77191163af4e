"""Secrets in the config, and the context every config message is made in.

A secret option is `{ env = "NAME" }`, `{ file = "PATH" }` (trailing line breaks stripped; `~` expanded,
relative to the config file's directory), `{ credential = "NAME" }` (systemd's $CREDENTIALS_DIRECTORY/NAME)
or a literal string. It becomes a `Secret`, whose repr never shows the value; no error message ever does:
messages name the key and the source only. Files holding secrets (and the config itself) that others can
read get a warning with the `chmod` that fixes it.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from vidfs.config.types import Secret
from vidfs.config.units import escape, fail, quote, type_word


@dataclass
class LoadContext:
    display: str  # the config path as the user wrote it
    base_dir: Path  # relative paths are resolved against it
    environ: Mapping[str, str]
    warnings: list[str] = field(default_factory=list)

    def where(self, table: str | None = None, key: str | None = None) -> str:
        text = self.display + ":"
        if table is not None:
            text += f" [{table}]"
        if key is not None:
            text += f" key '{escape(key)}'"
        return text

    def fail(self, table: str | None, key: str | None, message: str) -> NoReturn:
        sep = ": " if key is not None else " "
        fail(f"{self.where(table, key)}{sep}{message}")


def abs_path(path: Path | str) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def expand_user(text: str, environ: Mapping[str, str]) -> str:
    if text == "~" or text.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        return home + text[1:]
    if text.startswith("~"):
        return os.path.expanduser(text)
    return text


def resolve_path(ctx: LoadContext, text: str) -> Path:
    path = Path(expand_user(text, ctx.environ))
    if not path.is_absolute():
        path = ctx.base_dir / path
    return path


def mode_warning(path: Path, what: str) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    bits = stat.S_IMODE(mode)
    if not bits & 0o066:
        return None
    access = []
    if bits & 0o044:
        access.append("readable")
    if bits & 0o022:
        access.append("writable")
    return (
        f"{what} {path} is {' and '.join(access)} by group/others (mode {bits:04o}); "
        f"run: chmod 600 {shlex.quote(str(path))}"
    )


_SECRET_SOURCES = ("env", "file", "credential")
_SECRET_FORMS = '{ env = "NAME" }, { file = "PATH" }, { credential = "NAME" } or a string'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def secret_option(ctx: LoadContext, tname: str, key: str, value: object) -> Secret:
    """Resolve one secret option. Messages name the key and the source, never the value."""
    if isinstance(value, str):
        if not value:
            ctx.fail(tname, key, "the secret is empty")
        return Secret("literal", value)
    if not isinstance(value, Mapping):
        ctx.fail(tname, key, f"expected a secret: {_SECRET_FORMS}; got {type_word(value)}")
    sources = list(value)
    unknown = [k for k in sources if k not in _SECRET_SOURCES]
    if unknown:
        names = ", ".join(f"'{escape(str(k))}'" for k in unknown)
        ctx.fail(tname, key, f"unknown secret source {names}: use {_SECRET_FORMS}")
    if len(sources) != 1:
        got = ", ".join(sources) if sources else "an empty table"
        ctx.fail(tname, key, f"a secret takes exactly one of env, file, credential; got {got}")
    source = sources[0]
    ref = value[source]
    if not isinstance(ref, str) or not ref:
        ctx.fail(tname, key, f"'{source}' must be a non-empty string, got {type_word(ref)}")
    if source == "env":
        return _env_secret(ctx, tname, key, ref)
    if source == "file":
        return _file_secret(ctx, tname, key, ref)
    return _credential_secret(ctx, tname, key, ref)


def _env_secret(ctx: LoadContext, tname: str, key: str, name: str) -> Secret:
    if not _ENV_NAME.fullmatch(name):
        # Not echoed: a value that is not a variable name may well be the secret itself.
        ctx.fail(tname, key, "'env' must name an environment variable (letters, digits, '_')")
    value = ctx.environ.get(name)
    if value is None:
        ctx.fail(tname, key, f"environment variable {name} is not set")
    if not value:
        ctx.fail(tname, key, f"environment variable {name} is empty")
    return Secret(f"env:{name}", value)


def _read_secret_file(ctx: LoadContext, tname: str, key: str, path: Path, what: str) -> str:
    shown = escape(str(path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        ctx.fail(tname, key, f"{what} not found: {shown}")
    except IsADirectoryError:
        ctx.fail(tname, key, f"{what} is a directory: {shown}")
    except PermissionError:
        ctx.fail(tname, key, f"cannot read {what} {shown}: permission denied")
    except OSError as exc:
        ctx.fail(tname, key, f"cannot read {what} {shown}: {exc.strerror or type(exc).__name__}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        ctx.fail(tname, key, f"{what} {shown} is not valid UTF-8")
    text = text.rstrip("\r\n")
    if not text:
        ctx.fail(tname, key, f"{what} {shown} is empty")
    return text


def _file_secret(ctx: LoadContext, tname: str, key: str, ref: str) -> Secret:
    if "\x00" in ref:
        ctx.fail(tname, key, "'file' must be a path")
    path = resolve_path(ctx, ref)
    value = _read_secret_file(ctx, tname, key, path, "secret file")
    warning = mode_warning(path, "secret file")
    if warning and warning not in ctx.warnings:
        ctx.warnings.append(warning)
    return Secret(f"file:{path}", value)


def _credential_secret(ctx: LoadContext, tname: str, key: str, name: str) -> Secret:
    if "/" in name or name in (".", "..") or "\x00" in name:
        ctx.fail(tname, key, f"'credential' must be a plain credential name, got {quote(name)}")
    directory = ctx.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        ctx.fail(
            tname,
            key,
            f"credential {quote(name)} needs $CREDENTIALS_DIRECTORY, which is not set "
            "(systemd sets it for units with LoadCredential= or SetCredential=)",
        )
    value = _read_secret_file(ctx, tname, key, Path(directory) / name, f"credential {quote(name)}")
    return Secret(f"credential:{name}", value)
