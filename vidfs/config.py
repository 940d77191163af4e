"""The config file: TOML → frozen dataclasses, with errors that name the file, the table and the key.

    [mount]            allow_other, request_timeout, fsname
    [cache]            dir, memory, disk, block_size, metadata_ttl, negative_ttl, readahead_max
    [http]             connect_timeout, read_timeout, retries, max_connections_per_host, ca_bundle, user_agent
    [providers.NAME]   type = "<provider type>" plus the keys of that type's ProviderSpec.options

Sizes are "256MiB", "10GiB", "1MB", "512k" or plain byte counts: KiB/MiB/GiB/TiB and the single letters
k/K, M, G, T are powers of 1024, kB/KB, MB, GB, TB powers of 1000 (units are case-insensitive). Durations are
"250ms", "30s", "5m", "1h", "30d", "1w", combinations like "1h30m", or plain numbers of seconds.

A secret option is `{ env = "NAME" }`, `{ file = "PATH" }` (trailing line breaks stripped; `~` expanded,
relative to the config file's directory), `{ credential = "NAME" }` (systemd's $CREDENTIALS_DIRECTORY/NAME)
or a literal string. It becomes a `Secret`, whose repr never shows the value; no error message ever does.

Every problem raises `ConfigError` with a one-line message such as
`config.toml: [providers.site-a] missing required key 'token'`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from vidfs import __version__
from vidfs.errors import ConfigError, redact_url

if TYPE_CHECKING:
    from vidfs.providers.base import OptionSpec

__all__ = [
    "CacheOptions",
    "Config",
    "HttpOptions",
    "MountOptions",
    "ProviderConfig",
    "Secret",
    "config_from_dict",
    "config_warnings",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_BLOCK_SIZE = 64 * KiB
MAX_BLOCK_SIZE = 16 * MiB


# ---------------------------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret value. `repr()`/`str()` show only where it came from: `Secret(env:NAME)`."""

    source: str  # "env:NAME" | "file:/abs/path" | "credential:NAME" | "literal"
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__


@dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False
    request_timeout: float = 30.0  # seconds: every FUSE request is answered within it
    fsname: str = "vidfs"


@dataclass(frozen=True)
class CacheOptions:
    dir: Path
    memory: int = 32 * MiB  # blocks in RAM; the page cache and the disk cache keep the rest
    disk: int = 10 * GiB  # 0 = no disk cache
    block_size: int = 64 * KiB  # a power of two, 64 KiB .. 16 MiB: small so random reads stay cheap
    metadata_ttl: float = 300.0
    negative_ttl: float = 10.0
    readahead_max: int = 64 * MiB


@dataclass(frozen=True)
class HttpOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    retries: int = 4
    max_connections_per_host: int = 8
    ca_bundle: Path | None = None
    user_agent: str = f"vidfs/{__version__}"


@dataclass(frozen=True)
class ProviderConfig:
    name: str  # the table key: the directory name at the mount root
    type: str
    options: Mapping[str, Any] = field(hash=False)  # validated, defaults filled, secrets as Secret
    source: Path  # the config file it came from


@dataclass(frozen=True)
class Config:
    path: Path
    mount: MountOptions
    cache: CacheOptions
    http: HttpOptions
    providers: tuple[ProviderConfig, ...]
    warnings: tuple[str, ...] = ()

    def provider(self, name: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None


# ---------------------------------------------------------------------------------------------------------
# Message helpers: everything user-supplied is escaped so a message stays on one line.


def _escape(text: str, quote: str = "") -> str:
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\\" and quote:
            out.append("\\\\")
        elif quote and ch == quote:
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or ch in "\u2028\u2029" or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return '"' + _escape(text, '"') + '"'


def _show(value: object) -> str:
    """A TOML-ish rendering of a (non-secret) value for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return f"a {type(value).__name__}"


def _type_word(value: object) -> str:
    """The type of a value without the value: used for secrets."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return _show(value)


def _toml_key(name: str) -> str:
    if name and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return _quote(name, limit=300)


def format_size(n: int) -> str:
    """A byte count the way the config writes it: "1MiB", "64KiB", "1000"."""
    for unit, mult in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def _fail(message: str) -> NoReturn:
    raise ConfigError(message)


# ---------------------------------------------------------------------------------------------------------
# Sizes and durations

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIZE_RE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]*)\s*")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "kb": 1000,
    "m": MiB,
    "mib": MiB,
    "mb": 1000**2,
    "g": GiB,
    "gib": GiB,
    "gb": 1000**3,
    "t": TiB,
    "tib": TiB,
    "tb": 1000**4,
}


def parse_size(text: str | int, *, where: str) -> int:
    """Bytes from "256MiB", "10GiB", "1MB", "512k", "0" or an int; `where` prefixes the error message."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            _fail(f'{where}: expected a size like "256MiB", got {text} (negative)')
        return text
    if isinstance(text, str):
        match = _SIZE_RE.fullmatch(text)
        if match:
            mult = _SIZE_UNITS.get(match.group(2).lower())
            if mult is not None:
                number = match.group(1)
                if "." in number:
                    whole, _, frac = number.partition(".")
                    frac = frac or "0"
                    return (int(whole or "0") * 10 ** len(frac) + int(frac)) * mult // 10 ** len(frac)
                return int(number) * mult
    _fail(f'{where}: expected a size like "256MiB", got {_show(text)}')


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]+)")
_PLAIN_NUMBER = re.compile(rf"\s*({_NUMBER})\s*")


def parse_duration(text: str | int | float, *, where: str) -> float:
    """Seconds from "250ms", "30s", "5m", "1h", "30d", "1w", "1h30m", or a plain number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if math.isfinite(text) and text >= 0:
            return float(text)
    elif isinstance(text, str):
        plain = _PLAIN_NUMBER.fullmatch(text)
        if plain:
            return float(plain.group(1))
        total = 0.0
        pos = 0
        parts = 0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                if text[pos:].strip() == "":
                    pos = len(text)
                    break
                parts = 0
                break
            unit = _DURATION_UNITS.get(match.group(2).lower())
            if unit is None:
                parts = 0
                break
            total += float(match.group(1)) * unit
            parts += 1
            pos = match.end()
        if parts and pos == len(text) and math.isfinite(total):
            return total
    _fail(f'{where}: expected a duration like "30s", "5m" or "1h", got {_show(text)}')


# ---------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class _Ctx:
    display: str  # the config path as the user wrote it
    base_dir: Path  # relative paths are resolved against it
    environ: Mapping[str, str]
    warnings: list[str] = field(default_factory=list)

    def where(self, table: str | None = None, key: str | None = None) -> str:
        text = self.display + ":"
        if table is not None:
            text += f" [{table}]"
        if key is not None:
            text += f" key '{_escape(key)}'"
        return text

    def fail(self, table: str | None, key: str | None, message: str) -> NoReturn:
        sep = ": " if key is not None else " "
        _fail(f"{self.where(table, key)}{sep}{message}")


def _abs_path(path: Path | str) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _expand_user(text: str, environ: Mapping[str, str]) -> str:
    if text == "~" or text.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        return home + text[1:]
    if text.startswith("~"):
        return os.path.expanduser(text)
    return text


def _resolve_path(ctx: _Ctx, text: str) -> Path:
    path = Path(_expand_user(text, ctx.environ))
    if not path.is_absolute():
        path = ctx.base_dir / path
    return path


def _mode_warning(path: Path, what: str) -> str | None:
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


def config_warnings(path: Path | str, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Permission warnings for the config file and the `{ file = ... }` secrets it names.

    Never raises: an unreadable or invalid file just yields fewer warnings (`load_config` reports it).
    """
    env = os.environ if environ is None else environ
    config_path = Path(_expand_user(os.fspath(path), env))
    warnings: list[str] = []
    warning = _mode_warning(config_path, "config file")
    if warning:
        warnings.append(warning)
    try:
        data = tomllib.loads(config_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return warnings
    ctx = _Ctx(str(path), _abs_path(config_path).parent, env)
    providers = data.get("providers")
    if isinstance(providers, Mapping):
        for table in providers.values():
            if not isinstance(table, Mapping):
                continue
            for value in table.values():
                if isinstance(value, Mapping) and list(value) == ["file"] and isinstance(value["file"], str):
                    warning = _mode_warning(_resolve_path(ctx, value["file"]), "secret file")
                    if warning and warning not in warnings:
                        warnings.append(warning)
    return warnings


def load_config(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a config file. `environ` (default: os.environ) serves env secrets,
    $CREDENTIALS_DIRECTORY, $XDG_CACHE_HOME and $HOME."""
    env = os.environ if environ is None else environ
    display = os.fspath(path)
    file_path = Path(_expand_user(display, env))
    try:
        raw = file_path.read_bytes()
    except FileNotFoundError:
        _fail(f"{display}: config file not found")
    except IsADirectoryError:
        _fail(f"{display}: is a directory, not a config file")
    except PermissionError:
        _fail(f"{display}: cannot read the config file: permission denied")
    except OSError as exc:
        _fail(f"{display}: cannot read the config file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{display}: not valid UTF-8 (at byte {exc.start})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(f"{display}: invalid TOML: {_escape(str(exc))}")
    ctx = _Ctx(display, _abs_path(file_path).parent, env)
    warning = _mode_warning(file_path, "config file")
    if warning:
        ctx.warnings.append(warning)
    return _build(ctx, data, _abs_path(file_path))


def config_from_dict(
    data: Mapping[str, Any], *, path: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """A Config from already-parsed data, validated exactly like a file (`path` names it in messages and
    anchors relative paths)."""
    env = os.environ if environ is None else environ
    ctx = _Ctx(os.fspath(path), _abs_path(path).parent, env)
    return _build(ctx, data, _abs_path(path))


_TOP_LEVEL = ("mount", "cache", "http", "providers")


def _build(ctx: _Ctx, data: Mapping[str, Any], abs_path: Path) -> Config:
    for key, value in data.items():
        if key not in _TOP_LEVEL:
            known = "[mount], [cache], [http], [providers.NAME]"
            if isinstance(value, Mapping):
                ctx.fail(None, None, f"unknown table [{_toml_key(key)}] (known: {known})")
            ctx.fail(None, None, f"unknown top-level key '{_escape(key)}' (known tables: {known})")
    mount = _mount(ctx, _table(ctx, data, "mount"))
    cache = _cache(ctx, _table(ctx, data, "cache"))
    http = _http(ctx, _table(ctx, data, "http"))
    providers_table = _table(ctx, data, "providers")
    if not providers_table:
        ctx.fail(None, None, "no providers configured: add at least one [providers.NAME] table")
    providers = tuple(_provider(ctx, name, table, abs_path) for name, table in providers_table.items())
    return Config(
        path=abs_path,
        mount=mount,
        cache=cache,
        http=http,
        providers=providers,
        warnings=tuple(ctx.warnings),
    )


def _table(ctx: _Ctx, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        ctx.fail(None, None, f"'{name}' must be a table [{name}], got {_show(value)}")
    return value


def _reject_unknown(ctx: _Ctx, table_name: str, table: Mapping[str, Any], known: list[str]) -> None:
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            listing = ", ".join(known) if known else "none"
            ctx.fail(table_name, None, f"unknown key '{_escape(key)}'{extra}; known keys: {listing}")


# -- typed getters: each takes the table, the key, and a default used when the key is absent ----------------


def _get_bool(ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        ctx.fail(tname, key, f"expected true or false, got {_show(value)}")
    return value


def _get_str(ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        ctx.fail(tname, key, f"expected a string, got {_show(value)}")
    if not value.strip():
        ctx.fail(tname, key, "must not be empty")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        ctx.fail(tname, key, f"must not contain control characters, got {_show(value)}")
    return value


def _get_int(
    ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str, default: int, lo: int, hi: int
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(tname, key, f"expected an integer, got {_show(value)}")
    if not lo <= value <= hi:
        ctx.fail(tname, key, f"must be between {lo} and {hi}, got {value}")
    return value


def _get_size(ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str, default: int) -> int:
    if key not in table:
        return default
    return parse_size(table[key], where=ctx.where(tname, key))


def _get_duration(
    ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str, default: float, *, positive: bool
) -> float:
    if key not in table:
        return default
    seconds = parse_duration(table[key], where=ctx.where(tname, key))
    if positive and seconds <= 0:
        ctx.fail(tname, key, f"must be greater than 0, got {_show(table[key])}")
    return seconds


def _get_path(ctx: _Ctx, tname: str, table: Mapping[str, Any], key: str) -> Path | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, Path):
        value = os.fspath(value)
    if not isinstance(value, str):
        ctx.fail(tname, key, f"expected a path (string), got {_show(value)}")
    if not value.strip() or "\x00" in value:
        ctx.fail(tname, key, f"expected a path, got {_show(value)}")
    return _resolve_path(ctx, value)


# -- the fixed tables --


def _mount(ctx: _Ctx, table: Mapping[str, Any]) -> MountOptions:
    d = MountOptions()
    _reject_unknown(ctx, "mount", table, ["allow_other", "request_timeout", "fsname"])
    fsname = _get_str(ctx, "mount", table, "fsname", d.fsname)
    if "," in fsname or any(c.isspace() for c in fsname):
        ctx.fail("mount", "fsname", f"must not contain commas or spaces, got {_show(fsname)}")
    return MountOptions(
        allow_other=_get_bool(ctx, "mount", table, "allow_other", d.allow_other),
        request_timeout=_get_duration(
            ctx, "mount", table, "request_timeout", d.request_timeout, positive=True
        ),
        fsname=fsname,
    )


def _default_cache_dir(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "vidfs"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "vidfs"


def _cache(ctx: _Ctx, table: Mapping[str, Any]) -> CacheOptions:
    t = "cache"
    keys = ["dir", "memory", "disk", "block_size", "metadata_ttl", "negative_ttl", "readahead_max"]
    _reject_unknown(ctx, t, table, keys)
    d = CacheOptions(dir=Path())
    block_size = _get_size(ctx, t, table, "block_size", d.block_size)
    if not (MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE and block_size & (block_size - 1) == 0):
        ctx.fail(
            t,
            "block_size",
            f"must be a power of two between 64KiB and 16MiB, got {_show(table['block_size'])}",
        )
    memory = _get_size(ctx, t, table, "memory", d.memory)
    if memory < block_size:
        ctx.fail(
            t,
            "memory",
            f"must hold at least one block ({format_size(block_size)}), got {_show(table['memory'])}",
        )
    disk = _get_size(ctx, t, table, "disk", d.disk)
    if 0 < disk < block_size:
        ctx.fail(
            t,
            "disk",
            f"must be 0 (off) or at least one block ({format_size(block_size)}), got {_show(table['disk'])}",
        )
    return CacheOptions(
        dir=_get_path(ctx, t, table, "dir") or _default_cache_dir(ctx.environ),
        memory=memory,
        disk=disk,
        block_size=block_size,
        metadata_ttl=_get_duration(ctx, t, table, "metadata_ttl", d.metadata_ttl, positive=False),
        negative_ttl=_get_duration(ctx, t, table, "negative_ttl", d.negative_ttl, positive=False),
        readahead_max=_get_size(ctx, t, table, "readahead_max", d.readahead_max),
    )


def _http(ctx: _Ctx, table: Mapping[str, Any]) -> HttpOptions:
    t = "http"
    keys = [
        "connect_timeout",
        "read_timeout",
        "retries",
        "max_connections_per_host",
        "ca_bundle",
        "user_agent",
    ]
    _reject_unknown(ctx, t, table, keys)
    d = HttpOptions()
    ca_bundle = _get_path(ctx, t, table, "ca_bundle")
    if ca_bundle is not None and not ca_bundle.is_file():
        ctx.fail(t, "ca_bundle", f"no such file: {_escape(str(ca_bundle))}")
    return HttpOptions(
        connect_timeout=_get_duration(ctx, t, table, "connect_timeout", d.connect_timeout, positive=True),
        read_timeout=_get_duration(ctx, t, table, "read_timeout", d.read_timeout, positive=True),
        retries=_get_int(ctx, t, table, "retries", d.retries, 0, 100),
        max_connections_per_host=_get_int(
            ctx, t, table, "max_connections_per_host", d.max_connections_per_host, 1, 1000
        ),
        ca_bundle=ca_bundle,
        user_agent=_get_str(ctx, t, table, "user_agent", d.user_agent),
    )


# -- providers --


def _check_provider_name(ctx: _Ctx, name: str, tname: str) -> None:
    problem = None
    if not name:
        problem = "must not be empty"
    elif name in (".", ".."):
        problem = "must not be '.' or '..'"
    elif "/" in name:
        problem = "must not contain '/'"
    elif any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        problem = "must not contain NUL or control characters"
    elif len(name.encode("utf-8", errors="surrogatepass")) > 255:
        problem = "must be at most 255 bytes (UTF-8)"
    elif any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        problem = "must be valid Unicode"
    if problem:
        ctx.fail(tname, None, f"provider name {problem} (it becomes a directory name at the mount root)")


def _type_list() -> str:
    from vidfs.providers import registry  # imported late: the registry pulls in every provider module

    known = registry.known_types()
    return f"known types: {', '.join(known)}" if known else "no provider types are registered"


def _provider(ctx: _Ctx, name: str, table: object, source: Path) -> ProviderConfig:
    tname = f"providers.{_toml_key(name)}"
    _check_provider_name(ctx, name, tname)
    if not isinstance(table, Mapping):
        ctx.fail("providers", name, f"expected a table [{tname}], got {_show(table)}")
    if "type" not in table:
        ctx.fail(tname, None, f"missing required key 'type' ({_type_list()})")
    type_name = table["type"]
    if not isinstance(type_name, str):
        ctx.fail(tname, "type", f"expected a string, got {_show(type_name)} ({_type_list()})")
    from vidfs.providers import registry

    spec = registry.get_spec(type_name)
    if spec is None:
        ctx.fail(tname, "type", f"unknown provider type {_quote(type_name)} ({_type_list()})")
    _reject_unknown(ctx, tname, table, ["type", *spec.options])
    options: dict[str, Any] = {}
    for key, opt in spec.options.items():
        if key not in table:
            if opt.required:
                ctx.fail(tname, None, f"missing required key '{_escape(key)}'")
            options[key] = opt.default
        elif opt.secret:
            options[key] = _secret(ctx, tname, key, table[key])
        else:
            options[key] = _option_value(ctx, tname, key, table[key], opt)
    return ProviderConfig(name=name, type=type_name, options=MappingProxyType(options), source=source)


_NOTHING: Any = object()
_KIND_WORDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    Path: "a path (string)",
    list: "an array",
    tuple: "an array",
    dict: "a table",
}


def _option_value(ctx: _Ctx, tname: str, key: str, value: object, opt: OptionSpec) -> Any:
    kinds = opt.kind if isinstance(opt.kind, tuple) else (opt.kind,)
    result: Any = _NOTHING
    if isinstance(value, bool):
        if bool in kinds:
            result = value
    elif isinstance(value, int) and int in kinds:
        result = value
    elif isinstance(value, int | float) and float in kinds:
        result = float(value)
    elif isinstance(value, str) and str in kinds:
        if key in ("url", "base_url") or key.endswith("_url"):
            _check_url(ctx, tname, key, value)
        result = value
    elif isinstance(value, str) and Path in kinds:
        result = _get_path(ctx, tname, {key: value}, key)
    elif isinstance(value, list) and tuple in kinds:
        result = tuple(value)
    elif isinstance(value, list) and list in kinds:
        result = list(value)
    elif isinstance(value, Mapping) and (dict in kinds or Mapping in kinds):
        result = MappingProxyType(dict(value))
    else:
        plain = tuple(k for k in kinds if k not in _KIND_WORDS)
        if plain and isinstance(value, plain):
            result = value
    if result is _NOTHING:
        expected = " or ".join(_KIND_WORDS.get(k, k.__name__) for k in kinds)
        ctx.fail(tname, key, f"expected {expected}, got {_show(value)}")
    return result


def _check_url(ctx: _Ctx, tname: str, key: str, value: str) -> None:
    ok = False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if ok and any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        ok = False
    if not ok:
        ctx.fail(tname, key, f"expected an http(s) URL with a host, got {_quote(_redacted(value))}")


def _redacted(url: str) -> str:
    """`redact_url`, also for URLs it cannot parse (bad port): then user info and query are dropped."""
    try:
        return redact_url(url)
    except ValueError:
        return re.sub(r"//[^/?#]*@", "//", url).split("?", 1)[0].split("#", 1)[0]


# -- secrets --

_SECRET_SOURCES = ("env", "file", "credential")
_SECRET_FORMS = '{ env = "NAME" }, { file = "PATH" }, { credential = "NAME" } or a string'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _secret(ctx: _Ctx, tname: str, key: str, value: object) -> Secret:
    """Resolve one secret option. Messages name the key and the source, never the value."""
    if isinstance(value, str):
        if not value:
            ctx.fail(tname, key, "the secret is empty")
        return Secret("literal", value)
    if not isinstance(value, Mapping):
        ctx.fail(tname, key, f"expected a secret: {_SECRET_FORMS}; got {_type_word(value)}")
    sources = list(value)
    unknown = [k for k in sources if k not in _SECRET_SOURCES]
    if unknown:
        names = ", ".join(f"'{_escape(str(k))}'" for k in unknown)
        ctx.fail(tname, key, f"unknown secret source {names}: use {_SECRET_FORMS}")
    if len(sources) != 1:
        got = ", ".join(sources) if sources else "an empty table"
        ctx.fail(tname, key, f"a secret takes exactly one of env, file, credential; got {got}")
    source = sources[0]
    ref = value[source]
    if not isinstance(ref, str) or not ref:
        ctx.fail(tname, key, f"'{source}' must be a non-empty string, got {_type_word(ref)}")
    if source == "env":
        return _env_secret(ctx, tname, key, ref)
    if source == "file":
        return _file_secret(ctx, tname, key, ref)
    return _credential_secret(ctx, tname, key, ref)


def _env_secret(ctx: _Ctx, tname: str, key: str, name: str) -> Secret:
    if not _ENV_NAME.fullmatch(name):
        # Not echoed: a value that is not a variable name may well be the secret itself.
        ctx.fail(tname, key, "'env' must name an environment variable (letters, digits, '_')")
    value = ctx.environ.get(name)
    if value is None:
        ctx.fail(tname, key, f"environment variable {name} is not set")
    if not value:
        ctx.fail(tname, key, f"environment variable {name} is empty")
    return Secret(f"env:{name}", value)


def _read_secret_file(ctx: _Ctx, tname: str, key: str, path: Path, what: str) -> str:
    shown = _escape(str(path))
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


def _file_secret(ctx: _Ctx, tname: str, key: str, ref: str) -> Secret:
    if "\x00" in ref:
        ctx.fail(tname, key, "'file' must be a path")
    path = _resolve_path(ctx, ref)
    value = _read_secret_file(ctx, tname, key, path, "secret file")
    warning = _mode_warning(path, "secret file")
    if warning and warning not in ctx.warnings:
        ctx.warnings.append(warning)
    return Secret(f"file:{path}", value)


def _credential_secret(ctx: _Ctx, tname: str, key: str, name: str) -> Secret:
    if "/" in name or name in (".", "..") or "\x00" in name:
        ctx.fail(tname, key, f"'credential' must be a plain credential name, got {_quote(name)}")
    directory = ctx.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        ctx.fail(
            tname,
            key,
            f"credential {_quote(name)} needs $CREDENTIALS_DIRECTORY, which is not set "
            "(systemd sets it for units with LoadCredential= or SetCredential=)",
        )
    value = _read_secret_file(ctx, tname, key, Path(directory) / name, f"credential {_quote(name)}")
    return Secret(f"credential:{name}", value)
