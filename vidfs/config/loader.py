"""The config file: TOML → frozen dataclasses, with errors that name the file, the table and the key.

    [mount]            allow_other, request_timeout, fsname
    [cache]            dir, memory, disk, block_size, metadata_ttl, negative_ttl, refresh_idle, readahead_max
    [cache.shared]     type, nodes, secret, username, password, tls, mode, timeout (vidfs.fleet)
    [http]             connect_timeout, read_timeout, retries, max_connections_per_host,
                       max_api_requests_per_host, ca_bundle, user_agent
    [metrics]          listen ("HOST:PORT": the Prometheus endpoint; absent: none)
    [providers.NAME]   type = "<provider type>", api_rate, plus the keys of that type's ProviderSpec.options

Sizes and durations are parsed by `units`, secrets resolved by `secrets`; the types are in `types`.

Every problem raises `ConfigError` with a one-line message such as
`config.toml: [providers.site-a] missing required key 'token'`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vidfs.config.secrets import (
    LoadContext,
    abs_path,
    expand_user,
    mode_warning,
    resolve_path,
    secret_option,
)
from vidfs.config.types import (
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    ApiRate,
    CacheOptions,
    Config,
    HttpSettings,
    MetricsOptions,
    MountOptions,
    ProviderConfig,
    Secret,
    SharedCacheOptions,
)
from vidfs.config.units import escape, fail, format_size, parse_duration, parse_size, quote, show, toml_key
from vidfs.errors import redact_url

if TYPE_CHECKING:
    from vidfs.providers.base import OptionSpec


def config_warnings(path: Path | str, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Permission warnings for the config file and the `{ file = ... }` secrets it names.

    Never raises: an unreadable or invalid file just yields fewer warnings (`load_config` reports it).
    """
    env = os.environ if environ is None else environ
    config_path = Path(expand_user(os.fspath(path), env))
    warnings: list[str] = []
    warning = mode_warning(config_path, "config file")
    if warning:
        warnings.append(warning)
    try:
        data = tomllib.loads(config_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return warnings
    ctx = LoadContext(str(path), abs_path(config_path).parent, env)
    providers = data.get("providers")
    if isinstance(providers, Mapping):
        for table in providers.values():
            if not isinstance(table, Mapping):
                continue
            for value in table.values():
                if isinstance(value, Mapping) and list(value) == ["file"] and isinstance(value["file"], str):
                    warning = mode_warning(resolve_path(ctx, value["file"]), "secret file")
                    if warning and warning not in warnings:
                        warnings.append(warning)
    return warnings


def load_config(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a config file. `environ` (default: os.environ) serves env secrets,
    $CREDENTIALS_DIRECTORY, $XDG_CACHE_HOME and $HOME."""
    env = os.environ if environ is None else environ
    display = os.fspath(path)
    file_path = Path(expand_user(display, env))
    try:
        raw = file_path.read_bytes()
    except FileNotFoundError:
        fail(f"{display}: config file not found")
    except IsADirectoryError:
        fail(f"{display}: is a directory, not a config file")
    except PermissionError:
        fail(f"{display}: cannot read the config file: permission denied")
    except OSError as exc:
        fail(f"{display}: cannot read the config file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{display}: not valid UTF-8 (at byte {exc.start})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fail(f"{display}: invalid TOML: {escape(str(exc))}")
    ctx = LoadContext(display, abs_path(file_path).parent, env)
    warning = mode_warning(file_path, "config file")
    if warning:
        ctx.warnings.append(warning)
    return _build(ctx, data, abs_path(file_path))


def config_from_dict(
    data: Mapping[str, Any], *, path: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """A Config from already-parsed data, validated exactly like a file (`path` names it in messages and
    anchors relative paths)."""
    env = os.environ if environ is None else environ
    ctx = LoadContext(os.fspath(path), abs_path(path).parent, env)
    return _build(ctx, data, abs_path(path))


_TOP_LEVEL = ("mount", "cache", "http", "metrics", "providers")


def _build(ctx: LoadContext, data: Mapping[str, Any], abs_path: Path) -> Config:
    for key, value in data.items():
        if key not in _TOP_LEVEL:
            known = "[mount], [cache], [http], [metrics], [providers.NAME]"
            if isinstance(value, Mapping):
                ctx.fail(None, None, f"unknown table [{toml_key(key)}] (known: {known})")
            ctx.fail(None, None, f"unknown top-level key '{escape(key)}' (known tables: {known})")
    mount = _mount(ctx, _table(ctx, data, "mount"))
    cache = _cache(ctx, _table(ctx, data, "cache"))
    http = _http(ctx, _table(ctx, data, "http"))
    metrics = _metrics(ctx, _table(ctx, data, "metrics"))
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
        metrics=metrics,
    )


def _table(ctx: LoadContext, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        ctx.fail(None, None, f"'{name}' must be a table [{name}], got {show(value)}")
    return value


def _reject_unknown(ctx: LoadContext, table_name: str, table: Mapping[str, Any], known: list[str]) -> None:
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            listing = ", ".join(known) if known else "none"
            ctx.fail(table_name, None, f"unknown key '{escape(key)}'{extra}; known keys: {listing}")


# -- typed getters: each takes the table, the key, and a default used when the key is absent ----------------


def _get_bool(ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        ctx.fail(tname, key, f"expected true or false, got {show(value)}")
    return value


def _get_str(ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        ctx.fail(tname, key, f"expected a string, got {show(value)}")
    if not value.strip():
        ctx.fail(tname, key, "must not be empty")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        ctx.fail(tname, key, f"must not contain control characters, got {show(value)}")
    return value


def _get_int(
    ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str, default: int, lo: int, hi: int
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(tname, key, f"expected an integer, got {show(value)}")
    if not lo <= value <= hi:
        ctx.fail(tname, key, f"must be between {lo} and {hi}, got {value}")
    return value


def _get_size(ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str, default: int) -> int:
    if key not in table:
        return default
    return parse_size(table[key], where=ctx.where(tname, key))


def _get_duration(
    ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str, default: float, *, positive: bool
) -> float:
    if key not in table:
        return default
    seconds = parse_duration(table[key], where=ctx.where(tname, key))
    if positive and seconds <= 0:
        ctx.fail(tname, key, f"must be greater than 0, got {show(table[key])}")
    return seconds


def get_path(ctx: LoadContext, tname: str, table: Mapping[str, Any], key: str) -> Path | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, Path):
        value = os.fspath(value)
    if not isinstance(value, str):
        ctx.fail(tname, key, f"expected a path (string), got {show(value)}")
    if not value.strip() or "\x00" in value:
        ctx.fail(tname, key, f"expected a path, got {show(value)}")
    return resolve_path(ctx, value)


# -- the fixed tables --


def _mount(ctx: LoadContext, table: Mapping[str, Any]) -> MountOptions:
    d = MountOptions()
    _reject_unknown(ctx, "mount", table, ["allow_other", "request_timeout", "fsname"])
    fsname = _get_str(ctx, "mount", table, "fsname", d.fsname)
    if "," in fsname or any(c.isspace() for c in fsname):
        ctx.fail("mount", "fsname", f"must not contain commas or spaces, got {show(fsname)}")
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


def _cache(ctx: LoadContext, table: Mapping[str, Any]) -> CacheOptions:
    t = "cache"
    keys = ["dir", "memory", "disk", "block_size", "metadata_ttl", "negative_ttl", "refresh_idle"]
    keys += ["readahead_max", "shared"]
    _reject_unknown(ctx, t, table, keys)
    d = CacheOptions(dir=Path())
    block_size = _get_size(ctx, t, table, "block_size", d.block_size)
    if not (MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE and block_size & (block_size - 1) == 0):
        ctx.fail(
            t,
            "block_size",
            f"must be a power of two between 64KiB and 16MiB, got {show(table['block_size'])}",
        )
    memory = _get_size(ctx, t, table, "memory", d.memory)
    if memory < block_size:
        ctx.fail(
            t,
            "memory",
            f"must hold at least one block ({format_size(block_size)}), got {show(table['memory'])}",
        )
    disk = _get_size(ctx, t, table, "disk", d.disk)
    if 0 < disk < block_size:
        ctx.fail(
            t,
            "disk",
            f"must be 0 (off) or at least one block ({format_size(block_size)}), got {show(table['disk'])}",
        )
    return CacheOptions(
        dir=get_path(ctx, t, table, "dir") or _default_cache_dir(ctx.environ),
        memory=memory,
        disk=disk,
        block_size=block_size,
        metadata_ttl=_get_duration(ctx, t, table, "metadata_ttl", d.metadata_ttl, positive=False),
        negative_ttl=_get_duration(ctx, t, table, "negative_ttl", d.negative_ttl, positive=False),
        refresh_idle=_get_duration(ctx, t, table, "refresh_idle", d.refresh_idle, positive=False),
        readahead_max=_get_size(ctx, t, table, "readahead_max", d.readahead_max),
        shared=_shared(ctx, table["shared"]) if "shared" in table else None,
    )


_SHARED_KEYS = ["type", "nodes", "secret", "username", "password", "tls", "mode", "timeout"]


def _shared(ctx: LoadContext, table: object) -> SharedCacheOptions:
    """`[cache.shared]`: the fleet's Redis (see vidfs.fleet). Secrets are resolved like a provider's."""
    t = "cache.shared"
    if not isinstance(table, Mapping):
        ctx.fail("cache", "shared", f"expected a table [cache.shared], got {show(table)}")
    _reject_unknown(ctx, t, table, _SHARED_KEYS)
    kind = _get_str(ctx, t, table, "type", "redis")
    if kind != "redis":
        ctx.fail(t, "type", f'the only shared cache type is "redis", got {quote(kind)}')
    for key in ("nodes", "secret"):
        if key not in table:
            ctx.fail(t, None, f"missing required key '{key}'")
    d = SharedCacheOptions(nodes=(), secret=Secret("literal", ""))
    mode = _get_str(ctx, t, table, "mode", d.mode)
    if mode not in ("rw", "ro"):
        ctx.fail(t, "mode", f'expected "rw" or "ro", got {quote(mode)}')
    username = _get_str(ctx, t, table, "username", "-") if "username" in table else None
    password = secret_option(ctx, t, "password", table["password"]) if "password" in table else None
    return SharedCacheOptions(
        nodes=_nodes(ctx, t, table["nodes"]),
        secret=secret_option(ctx, t, "secret", table["secret"]),
        username=username,
        password=password,
        tls=_get_bool(ctx, t, table, "tls", d.tls),
        mode=mode,
        timeout=_get_duration(ctx, t, table, "timeout", d.timeout, positive=True),
    )


def _nodes(ctx: LoadContext, t: str, value: object) -> tuple[tuple[str, int], ...]:
    """["10.0.0.5:7000", "[fd00::5]:7000", "redis.vidfs.svc:6379"] → ((host, port), ...)."""
    if not isinstance(value, list) or not value:
        ctx.fail(t, "nodes", f'expected a non-empty array of "host:port", got {show(value)}')
    nodes = []
    for item in value:
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9_.-]+):(\d{1,5})", str(item))
        if not isinstance(item, str) or match is None or not 0 < int(match[2] or match[4]) < 65536:
            ctx.fail(t, "nodes", f'expected "host:port" (e.g. "10.0.0.5:7000"), got {show(item)}')
        nodes.append((match[1] or match[3], int(match[2] or match[4])))
    return tuple(nodes)


_RATE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*/\s*(\S.*?)\s*")


def parse_rate(ctx: LoadContext, tname: str, value: object) -> ApiRate:
    """`api_rate`: "20/s", "600/min", "5/500ms", "1000/1h": requests per period, as requests per second."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        ctx.fail(tname, "api_rate", f'expected a rate like "20/s" or "600/min", got {show(value)}')
    period = match[2] if match[2][0].isdigit() else "1" + match[2]
    seconds = parse_duration(period, where=ctx.where(tname, "api_rate"))
    count = float(match[1])
    if seconds <= 0 or count <= 0:
        ctx.fail(tname, "api_rate", f"must be a positive rate, got {show(value)}")
    return ApiRate(per_second=count / seconds, text=str(value))


def _http(ctx: LoadContext, table: Mapping[str, Any]) -> HttpSettings:
    t = "http"
    keys = [
        "connect_timeout",
        "read_timeout",
        "retries",
        "max_connections_per_host",
        "max_api_requests_per_host",
        "ca_bundle",
        "user_agent",
    ]
    _reject_unknown(ctx, t, table, keys)
    d = HttpSettings()
    ca_bundle = get_path(ctx, t, table, "ca_bundle")
    if ca_bundle is not None and not ca_bundle.is_file():
        ctx.fail(t, "ca_bundle", f"no such file: {escape(str(ca_bundle))}")
    return HttpSettings(
        connect_timeout=_get_duration(ctx, t, table, "connect_timeout", d.connect_timeout, positive=True),
        read_timeout=_get_duration(ctx, t, table, "read_timeout", d.read_timeout, positive=True),
        retries=_get_int(ctx, t, table, "retries", d.retries, 0, 100),
        max_connections_per_host=_get_int(
            ctx, t, table, "max_connections_per_host", d.max_connections_per_host, 1, 1000
        ),
        max_api_requests_per_host=_get_int(
            ctx, t, table, "max_api_requests_per_host", d.max_api_requests_per_host, 1, 1000
        ),
        ca_bundle=ca_bundle,
        user_agent=_get_str(ctx, t, table, "user_agent", d.user_agent),
    )


def _metrics(ctx: LoadContext, table: Mapping[str, Any]) -> MetricsOptions:
    _reject_unknown(ctx, "metrics", table, ["listen"])
    if "listen" not in table:
        return MetricsOptions()
    return MetricsOptions(listen=parse_listen(ctx, _get_str(ctx, "metrics", table, "listen", "")))


def parse_listen(ctx: LoadContext, value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[IPv6]:PORT`) → (host, port); the host is an address or a name, the port 1..65535."""
    expected = f'expected "HOST:PORT" (e.g. "127.0.0.1:9580" or "[::1]:9580"), got {show(value)}'
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            ctx.fail("metrics", "listen", expected)
        port_text = rest[1:]
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon or ":" in host:
            ctx.fail("metrics", "listen", expected)
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        ctx.fail("metrics", "listen", expected)
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        ctx.fail("metrics", "listen", f"the port must be a number from 1 to 65535, got {show(value)}")
    return host, int(port_text)


# -- providers --


def _check_provider_name(ctx: LoadContext, name: str, tname: str) -> None:
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


def _provider(ctx: LoadContext, name: str, table: object, source: Path) -> ProviderConfig:
    tname = f"providers.{toml_key(name)}"
    _check_provider_name(ctx, name, tname)
    if not isinstance(table, Mapping):
        ctx.fail("providers", name, f"expected a table [{tname}], got {show(table)}")
    if "type" not in table:
        ctx.fail(tname, None, f"missing required key 'type' ({_type_list()})")
    type_name = table["type"]
    if not isinstance(type_name, str):
        ctx.fail(tname, "type", f"expected a string, got {show(type_name)} ({_type_list()})")
    from vidfs.providers import registry

    spec = registry.get_spec(type_name)
    if spec is None:
        ctx.fail(tname, "type", f"unknown provider type {quote(type_name)} ({_type_list()})")
    _reject_unknown(ctx, tname, table, ["type", "api_rate", *spec.options])
    options: dict[str, Any] = {}
    for key, opt in spec.options.items():
        if key not in table:
            if opt.required:
                ctx.fail(tname, None, f"missing required key '{escape(key)}'")
            options[key] = opt.default
        elif opt.secret:
            options[key] = secret_option(ctx, tname, key, table[key])
        else:
            options[key] = _option_value(ctx, tname, key, table[key], opt)
    api_rate = parse_rate(ctx, tname, table["api_rate"]) if "api_rate" in table else None
    return ProviderConfig(
        name=name, type=type_name, options=MappingProxyType(options), source=source, api_rate=api_rate
    )


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


def _option_value(ctx: LoadContext, tname: str, key: str, value: object, opt: OptionSpec) -> Any:
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
        result = get_path(ctx, tname, {key: value}, key)
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
        ctx.fail(tname, key, f"expected {expected}, got {show(value)}")
    return result


def _check_url(ctx: LoadContext, tname: str, key: str, value: str) -> None:
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
        ctx.fail(tname, key, f"expected an http(s) URL with a host, got {quote(_redacted(value))}")


def _redacted(url: str) -> str:
    """`redact_url`, also for URLs it cannot parse (bad port): then user info and query are dropped."""
    try:
        return redact_url(url)
    except ValueError:
        return re.sub(r"//[^/?#]*@", "//", url).split("?", 1)[0].split("#", 1)[0]
