# ruff: noqa: E501  (the tables of config snippets and expected messages read best one case a line)
"""Config loading: defaults, validation errors (one line naming file/table/key), secrets, permissions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vidfs import __version__
from vidfs.config.loader import config_from_dict, config_warnings, load_config
from vidfs.config.types import CacheOptions, Config, HttpSettings, MountOptions, Secret
from vidfs.config.units import parse_duration, parse_size
from vidfs.errors import ConfigError
from vidfs.providers import registry
from vidfs.providers.base import OptionSpec, ProviderSpec

SECRET = "s3cr3t-VALUE-do-not-print"
KiB, MiB, GiB = 1024, 1024**2, 1024**3


def _factory(config: Any, context: Any) -> Any:  # never called by the config code
    raise AssertionError("not used")


FAKE = ProviderSpec(
    type="fake",
    options={
        "base_url": OptionSpec(str, required=True),
        "token": OptionSpec(str, required=True, secret=True),
        "page_size": OptionSpec(int, default=50),
        "verify": OptionSpec(bool, default=True),
        "password": OptionSpec(str, secret=True),
        "ratio": OptionSpec(float, default=1.0),
    },
    factory=_factory,
)
PLAIN = ProviderSpec(type="plain", options={"url": OptionSpec(str, required=True)}, factory=_factory)


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "PROVIDERS", {"fake": FAKE, "plain": PLAIN})


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "FAKE_TOKEN": SECRET}


MINIMAL = """
[providers.site-a]
type = "fake"
base_url = "https://api.example.com/v1"
token = { env = "FAKE_TOKEN" }
"""


def write(tmp_path: Path, text: str, name: str = "config.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def error_of(path: Path, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    assert SECRET not in message
    return message


# ------------------------------------------------------------------------------------------------- basics


def test_minimal_config_and_defaults(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path, environ=env)
    assert isinstance(config, Config)
    assert config.path == path
    assert config.mount == MountOptions()
    assert config.mount.allow_other is False and config.mount.request_timeout == 30.0
    assert config.http == HttpSettings()
    assert config.http.user_agent == f"vidfs/{__version__}"
    assert config.cache == CacheOptions(dir=tmp_path / "home" / ".cache" / "vidfs")
    assert (config.cache.memory, config.cache.disk, config.cache.block_size) == (
        24 * MiB,
        10 * GiB,
        64 * 1024,
    )
    assert (config.cache.metadata_ttl, config.cache.negative_ttl) == (300.0, 10.0)
    assert config.cache.readahead_max == 64 * MiB
    assert config.warnings == ()
    [provider] = config.providers
    assert provider.name == "site-a" and provider.type == "fake" and provider.source == path
    assert provider.options["base_url"] == "https://api.example.com/v1"
    assert provider.options["token"].reveal() == SECRET
    assert provider.options["page_size"] == 50 and provider.options["verify"] is True
    assert provider.options["password"] is None
    assert config.provider("site-a") is provider and config.provider("nope") is None
    with pytest.raises(TypeError):
        provider.options["page_size"] = 1  # type: ignore[index]


def test_full_config(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "ca.pem").write_text("x")
    path = write(
        tmp_path,
        """
[mount]
allow_other = true
request_timeout = "45s"
fsname = "videos"

[cache]
dir = "cache-here"
memory = "64MiB"
disk = "0"
block_size = "4MiB"
metadata_ttl = "5m"
negative_ttl = 2
readahead_max = "128MiB"

[http]
connect_timeout = "5s"
read_timeout = 60
retries = 0
max_connections_per_host = 16
max_api_requests_per_host = 48
ca_bundle = "ca.pem"
user_agent = "test/1"

[providers.site-a]
type = "fake"
base_url = "http://127.0.0.1:8080/api"
token = "literal-token"
page_size = 10
verify = false
ratio = 2

[providers."My Archive"]
type = "plain"
url = "https://example.com/"
""",
    )
    config = load_config(path, environ=env)
    assert config.mount == MountOptions(allow_other=True, request_timeout=45.0, fsname="videos")
    assert config.cache == CacheOptions(
        dir=tmp_path / "cache-here",
        memory=64 * MiB,
        disk=0,
        block_size=4 * MiB,
        metadata_ttl=300.0,
        negative_ttl=2.0,
        readahead_max=128 * MiB,
    )
    assert config.http == HttpSettings(
        connect_timeout=5.0,
        read_timeout=60.0,
        retries=0,
        max_connections_per_host=16,
        max_api_requests_per_host=48,
        ca_bundle=tmp_path / "ca.pem",
        user_agent="test/1",
    )
    assert [p.name for p in config.providers] == ["site-a", "My Archive"]
    options = config.providers[0].options
    assert options["page_size"] == 10 and options["verify"] is False
    assert options["ratio"] == 2.0 and isinstance(options["ratio"], float)
    assert options["token"] == Secret("literal", "literal-token")


def test_cache_dir_defaults_and_expansion(tmp_path: Path, env: dict[str, str]) -> None:
    config = config_from_dict(_data(), path=tmp_path / "c.toml", environ={**env, "XDG_CACHE_HOME": "/xdg"})
    assert config.cache.dir == Path("/xdg/vidfs")
    config = config_from_dict(_data(), path=tmp_path / "c.toml", environ={**env, "XDG_CACHE_HOME": "rel"})
    assert config.cache.dir == tmp_path / "home" / ".cache" / "vidfs"  # a relative XDG dir is ignored
    config = config_from_dict(_data(cache={"dir": "~/videos"}), path=tmp_path / "c.toml", environ=env)
    assert config.cache.dir == tmp_path / "home" / "videos"
    config = config_from_dict(_data(cache={"dir": "/abs/dir"}), path=tmp_path / "c.toml", environ=env)
    assert config.cache.dir == Path("/abs/dir")


def test_relative_config_path_in_messages(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL.replace('token = { env = "FAKE_TOKEN" }\n', ""))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("config.toml", environ=env)
    assert str(info.value) == "config.toml: [providers.site-a] missing required key 'token'"


def _data(**tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "providers": {
            "site-a": {"type": "fake", "base_url": "https://api.example.com", "token": {"env": "FAKE_TOKEN"}}
        }
    }
    data.update(tables)
    return data


def test_config_from_dict(tmp_path: Path, env: dict[str, str]) -> None:
    config = config_from_dict(_data(mount={"allow_other": True}), path=tmp_path / "demo.toml", environ=env)
    assert config.mount.allow_other and config.providers[0].options["token"].reveal() == SECRET
    with pytest.raises(
        ConfigError, match=r"^demo\.toml: \[mount\] key 'allow_other': expected true or false"
    ):
        config_from_dict(_data(mount={"allow_other": "yes"}), path=Path("demo.toml"), environ=env)


# ------------------------------------------------------------------------------------------------- errors


BAD = [
    # (config text, expected message after "<path>: ")
    ("[mount]\nallow_other = 1\n" + MINIMAL, "[mount] key 'allow_other': expected true or false, got 1"),
    ('[mount]\nallow_other = "true"\n' + MINIMAL, "[mount] key 'allow_other': expected true or false, got \"true\""),
    ("[mount]\nallowother = true\n" + MINIMAL, "[mount] unknown key 'allowother' (did you mean 'allow_other'?)"),
    ("[mount]\nrequest_timeout = 0\n" + MINIMAL, "[mount] key 'request_timeout': must be greater than 0, got 0"),
    ('[mount]\nrequest_timeout = "soon"\n' + MINIMAL, "[mount] key 'request_timeout': expected a duration"),
    ('[mount]\nfsname = "a,b"\n' + MINIMAL, "[mount] key 'fsname': must not contain commas"),
    ("[cache]\nmemory = true\n" + MINIMAL, "[cache] key 'memory': expected a size like \"256MiB\", got true"),
    ('[cache]\nmemory = "lots"\n' + MINIMAL, "[cache] key 'memory': expected a size like \"256MiB\", got \"lots\""),
    ("[cache]\nmemory = -1\n" + MINIMAL, "[cache] key 'memory': expected a size"),
    ('[cache]\nmemory = "1KiB"\n' + MINIMAL, "[cache] key 'memory': must hold at least one block (64KiB)"),
    ('[cache]\nblock_size = "100KiB"\n' + MINIMAL, "[cache] key 'block_size': must be a power of two between"),
    ('[cache]\nblock_size = "32KiB"\n' + MINIMAL, "[cache] key 'block_size': must be a power of two between"),
    ('[cache]\nblock_size = "32MiB"\n' + MINIMAL, "[cache] key 'block_size': must be a power of two between"),
    ('[cache]\ndisk = "1KiB"\n' + MINIMAL, "[cache] key 'disk': must be 0 (off) or at least one block"),
    ("[cache]\nmetadata_ttl = true\n" + MINIMAL, "[cache] key 'metadata_ttl': expected a duration"),
    ("[cache]\ndir = 5\n" + MINIMAL, "[cache] key 'dir': expected a path (string), got 5"),
    ("[cache]\nsize = 5\n" + MINIMAL, "[cache] unknown key 'size'"),
    ("[http]\nretries = 1.5\n" + MINIMAL, "[http] key 'retries': expected an integer, got 1.5"),
    ("[http]\nretries = true\n" + MINIMAL, "[http] key 'retries': expected an integer, got true"),
    ("[http]\nretries = -1\n" + MINIMAL, "[http] key 'retries': must be between 0 and 100, got -1"),
    ("[http]\nmax_connections_per_host = 0\n" + MINIMAL, "[http] key 'max_connections_per_host': must be between"),
    ("[http]\nmax_api_requests_per_host = 0\n" + MINIMAL, "[http] key 'max_api_requests_per_host': must be between"),
    ('[http]\nca_bundle = "missing.pem"\n' + MINIMAL, "[http] key 'ca_bundle': no such file: "),
    ('[http]\nuser_agent = ""\n' + MINIMAL, "[http] key 'user_agent': must not be empty"),
    ("[extra]\na = 1\n" + MINIMAL, "unknown table [extra]"),
    ("debug = true\n" + MINIMAL, "unknown top-level key 'debug'"),
    ("mount = 5\n" + MINIMAL, "'mount' must be a table [mount], got 5"),
    ("[mount]\n", "no providers configured: add at least one [providers.NAME] table"),
    ("[providers]\n", "no providers configured"),
    ('providers = "x"\n', "'providers' must be a table [providers], got \"x\""),
    ('[providers]\nsite = "fake"\n', "[providers] key 'site': expected a table [providers.site], got \"fake\""),
    ("[providers.a]\nbase_url = 'https://x'\n", "[providers.a] missing required key 'type' (known types: fake, plain)"),
    ("[providers.a]\ntype = 3\n", "[providers.a] key 'type': expected a string, got 3 (known types: fake, plain)"),
    ('[providers.a]\ntype = "vimeo"\n', "[providers.a] key 'type': unknown provider type \"vimeo\" (known types: fake, plain)"),
    ('[providers.a]\ntype = "plain"\n', "[providers.a] missing required key 'url'"),
    ('[providers.a]\ntype = "plain"\nurl = "https://x/"\nuser = "me"\n', "[providers.a] unknown key 'user'"),
    ('[providers.a]\ntype = "plain"\nurl = "ftp://x/"\n', "[providers.a] key 'url': expected an http(s) URL with a host, got \"ftp://x/\""),
    ('[providers.a]\ntype = "plain"\nurl = "https:///path"\n', "[providers.a] key 'url': expected an http(s) URL"),
    ('[providers.a]\ntype = "plain"\nurl = "example.com"\n', "[providers.a] key 'url': expected an http(s) URL"),
    ('[providers.a]\ntype = "plain"\nurl = "http://x:99999/"\n', "[providers.a] key 'url': expected an http(s) URL"),
    ('[providers.a]\ntype = "plain"\nurl = 5\n', "[providers.a] key 'url': expected a string, got 5"),
    (MINIMAL + "page_size = \"10\"\n", "[providers.site-a] key 'page_size': expected an integer, got \"10\""),
    (MINIMAL + "page_size = true\n", "[providers.site-a] key 'page_size': expected an integer, got true"),
    (MINIMAL + "verify = 0\n", "[providers.site-a] key 'verify': expected true or false, got 0"),
    (MINIMAL + "ratio = \"x\"\n", "[providers.site-a] key 'ratio': expected a number, got \"x\""),
    (MINIMAL + "tokn = 1\n", "[providers.site-a] unknown key 'tokn' (did you mean 'token'?)"),
    (MINIMAL.replace('base_url = "https://api.example.com/v1"\n', ""), "[providers.site-a] missing required key 'base_url'"),
    ('[providers."a b"]\ntype = "plain"\n', '[providers."a b"] missing required key \'url\''),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_errors_name_file_table_and_key(
    tmp_path: Path, env: dict[str, str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    message = error_of(path, env)
    assert message.startswith(f"{path}: {expected}"), message


def test_toml_syntax_error_has_line_and_column(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL + "\nbroken = = 1\n")
    message = error_of(path, env)
    assert "invalid TOML" in message and "line 7" in message and "column" in message


def test_not_utf8(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[mount]\nfsname = '\xff'\n")
    assert "not valid UTF-8" in error_of(path, env)


def test_missing_file(tmp_path: Path, env: dict[str, str]) -> None:
    assert error_of(tmp_path / "config.toml", env) == f"{tmp_path / 'config.toml'}: config file not found"


def test_directory_instead_of_file(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "config.toml").mkdir()
    assert "is a directory" in error_of(tmp_path / "config.toml", env)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL, mode=0o000)
    assert "permission denied" in error_of(path, env)


def test_unknown_type_with_no_registered_types(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "PROVIDERS", {"fake": FAKE})
    path = write(tmp_path, '[providers.a]\ntype = "x"\n')
    assert error_of(path, env).endswith("(known types: fake)")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        (".", "must not be '.' or '..'"),
        ("..", "must not be '.' or '..'"),
        ("a/b", "must not contain '/'"),
        ("a\x00b", "must not contain NUL or control characters"),
        ("a\nb", "must not contain NUL or control characters"),
        ("a\x7fb", "must not contain NUL or control characters"),
        ("é" * 128, "must be at most 255 bytes"),
    ],
)
def test_bad_provider_names(tmp_path: Path, env: dict[str, str], name: str, problem: str) -> None:
    data = {"providers": {name: {"type": "plain", "url": "https://x/"}}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, path=Path("config.toml"), environ=env)
    message = str(info.value)
    assert message.startswith("config.toml: [providers.")
    assert f"provider name {problem}" in message
    assert "\n" not in message and "\x00" not in message


def test_long_but_valid_provider_name(env: dict[str, str]) -> None:
    name = "é" * 127 + "a"  # 255 bytes
    config = config_from_dict(
        {"providers": {name: {"type": "plain", "url": "https://x/"}}}, path=Path("c"), environ=env
    )
    assert config.providers[0].name == name


def test_toml_file_with_bad_name(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, '[providers."a/b"]\ntype = "plain"\nurl = "https://x/"\n')
    assert error_of(path, env).startswith(f"{path}: [providers.\"a/b\"] provider name must not contain '/'")


def test_url_with_credentials_is_redacted_in_message(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path, f'[providers.a]\ntype = "plain"\nurl = "ftp://user:{SECRET}@host/?token={SECRET}"\n'
    )
    error_of(path, env)  # asserts SECRET is absent


# ------------------------------------------------------------------------------------------------- secrets


def test_env_secret(tmp_path: Path, env: dict[str, str]) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ=env)
    token = config.providers[0].options["token"]
    assert isinstance(token, Secret)
    assert token.reveal() == SECRET
    assert token.source == "env:FAKE_TOKEN"
    assert repr(token) == str(token) == "Secret(env:FAKE_TOKEN)"
    assert f"{token}" == "Secret(env:FAKE_TOKEN)"
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_literal_secret(tmp_path: Path, env: dict[str, str]) -> None:
    config = load_config(
        write(tmp_path, MINIMAL.replace('{ env = "FAKE_TOKEN" }', f'"{SECRET}"')), environ=env
    )
    token = config.providers[0].options["token"]
    assert token.reveal() == SECRET and repr(token) == "Secret(literal)"
    assert SECRET not in repr(config)


@pytest.mark.parametrize("content", [SECRET, SECRET + "\n", SECRET + "\r\n", SECRET + "\n\n"])
def test_file_secret_relative_to_config(tmp_path: Path, env: dict[str, str], content: str) -> None:
    (tmp_path / "secrets").mkdir()
    secret_file = tmp_path / "secrets" / "token"
    secret_file.write_text(content)
    secret_file.chmod(0o600)
    config = load_config(
        write(tmp_path, MINIMAL.replace('env = "FAKE_TOKEN"', 'file = "secrets/token"')), environ=env
    )
    token = config.providers[0].options["token"]
    assert token.reveal() == SECRET
    assert repr(token) == f"Secret(file:{secret_file})"
    assert config.warnings == ()


def test_file_secret_home_expansion(tmp_path: Path, env: dict[str, str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "tok").write_text(SECRET + "\n")
    (home / "tok").chmod(0o400)
    config = load_config(
        write(tmp_path, MINIMAL.replace('env = "FAKE_TOKEN"', 'file = "~/tok"')), environ=env
    )
    assert config.providers[0].options["token"].reveal() == SECRET


def test_credential_secret(tmp_path: Path, env: dict[str, str]) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fake-token").write_text(SECRET)
    environ = {**env, "CREDENTIALS_DIRECTORY": str(creds)}
    text = MINIMAL.replace('env = "FAKE_TOKEN"', 'credential = "fake-token"')
    config = load_config(write(tmp_path, text), environ=environ)
    token = config.providers[0].options["token"]
    assert token.reveal() == SECRET and repr(token) == "Secret(credential:fake-token)"


SECRET_ERRORS = [
    ('{ env = "NOPE" }', "key 'token': environment variable NOPE is not set"),
    ('{ env = "EMPTY" }', "key 'token': environment variable EMPTY is empty"),
    ('{ env = "has space" }', "key 'token': 'env' must name an environment variable"),
    ("{ env = 5 }", "key 'token': 'env' must be a non-empty string, got an integer"),
    ('{ env = "" }', "key 'token': 'env' must be a non-empty string, got a string"),
    ('{ file = "missing.txt" }', "key 'token': secret file not found: {tmp}/missing.txt"),
    ('{ file = "secret-dir" }', "key 'token': secret file is a directory: {tmp}/secret-dir"),
    ('{ file = "empty.txt" }', "key 'token': secret file {tmp}/empty.txt is empty"),
    ('{ credential = "x" }', "key 'token': credential \"x\" needs $CREDENTIALS_DIRECTORY, which is not set"),
    ('{ credential = "../x" }', "key 'token': 'credential' must be a plain credential name"),
    ('{ vault = "x" }', "key 'token': unknown secret source 'vault': use { env = \"NAME\" }"),
    ('{ env = "A", file = "B" }', "key 'token': a secret takes exactly one of env, file, credential; got env, file"),
    ("{}", "key 'token': a secret takes exactly one of env, file, credential; got an empty table"),
    ('""', "key 'token': the secret is empty"),
    ("12345", "key 'token': expected a secret: { env = \"NAME\" }"),
    ("true", "key 'token': expected a secret: { env = \"NAME\" }"),
    ('["a"]', "key 'token': expected a secret: { env = \"NAME\" }"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), SECRET_ERRORS)
def test_secret_errors(tmp_path: Path, env: dict[str, str], value: str, expected: str) -> None:
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "empty.txt").write_text("\n")
    path = write(tmp_path, MINIMAL.replace('{ env = "FAKE_TOKEN" }', value))
    message = error_of(path, {**env, "EMPTY": ""})
    assert message.startswith(f"{path}: [providers.site-a] " + expected.replace("{tmp}", str(tmp_path))), (
        message
    )


def test_missing_credential_file(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "creds").mkdir()
    path = write(tmp_path, MINIMAL.replace('env = "FAKE_TOKEN"', 'credential = "nope"'))
    message = error_of(path, {**env, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert (
        message
        == f"{path}: [providers.site-a] key 'token': credential \"nope\" not found: {tmp_path}/creds/nope"
    )


def test_secret_values_never_in_messages(tmp_path: Path, env: dict[str, str]) -> None:
    """A secret given where a non-secret (or the wrong type) is expected is never echoed."""
    cases = [
        f'{{ env = "{SECRET}" }}',  # a pasted value instead of a variable name
        f'{{ vault = "{SECRET}" }}',
        f'{{ env = "FAKE_TOKEN", file = "{SECRET}" }}',
    ]
    for value in cases:
        error_of(write(tmp_path, MINIMAL.replace('{ env = "FAKE_TOKEN" }', value)), env)
    # a secret in a non-secret key gets a type error without the value
    error_of(write(tmp_path, MINIMAL + 'page_size = { env = "FAKE_TOKEN" }\n'), env)
    # a later error in a config with resolved secrets does not mention them
    error_of(write(tmp_path, MINIMAL + "page_size = 'x'\n"), env)
    # the secret file's content is never shown, even when it is not UTF-8
    (tmp_path / "bin").write_bytes(b"\xff" + SECRET.encode())
    message = error_of(write(tmp_path, MINIMAL.replace('env = "FAKE_TOKEN"', 'file = "bin"')), env)
    assert message.endswith("is not valid UTF-8")


def test_secret_equality_and_hash_do_not_leak() -> None:
    secret = Secret("env:X", SECRET)
    assert secret == Secret("env:X", SECRET)
    assert SECRET not in repr([secret]) and SECRET not in repr({"k": secret})
    assert isinstance(hash(secret), int)


# ------------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256MiB", 256 * MiB),
        ("10GiB", 10 * GiB),
        ("1MB", 1_000_000),
        ("1kB", 1000),
        ("512k", 512 * KiB),
        ("512K", 512 * KiB),
        ("64KiB", 64 * KiB),
        ("1m", MiB),
        ("2G", 2 * GiB),
        ("1T", 1024 * GiB),
        ("1TB", 10**12),
        ("1.5GiB", 3 * GiB // 2),
        ("0", 0),
        ("100", 100),
        ("100B", 100),
        (" 8 MiB ", 8 * MiB),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text, where="here") == expected


@pytest.mark.parametrize("text", ["", "MiB", "1 2MiB", "-1", -1, "1XB", "1MiBs", "lots", True, 1.5, "1,5MiB"])
def test_parse_size_errors(text: Any) -> None:
    with pytest.raises(ConfigError, match=r'^here: expected a size like "256MiB", got '):
        parse_size(text, where="here")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("30d", 30 * 86400.0),
        ("1w", 7 * 86400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1m 30s", 90.0),
        ("1.5s", 1.5),
        ("10", 10.0),
        ("0", 0.0),
        (10, 10.0),
        (2.5, 2.5),
        ("5min", 300.0),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text, where="here") == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "soon", "5x", "-5s", -1, "5s5", "m5", True, float("inf"), float("nan"), "1h-"]
)
def test_parse_duration_errors(text: Any) -> None:
    with pytest.raises(ConfigError, match=r"^here: expected a duration like"):
        parse_duration(text, where="here")


# ---------------------------------------------------------------------------------------------- permissions


def test_world_readable_config_warns(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL, mode=0o644)
    config = load_config(path, environ=env)
    [warning] = config.warnings
    assert str(path) in warning and "readable" in warning and "0644" in warning and "chmod 600" in warning
    assert config_warnings(path, environ=env) == [warning]


def test_group_writable_config_warns(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL, mode=0o620)
    [warning] = config_warnings(path, environ=env)
    assert "writable" in warning and "readable" not in warning


def test_private_config_has_no_warnings(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL, mode=0o600)
    assert config_warnings(path, environ=env) == []
    assert load_config(path, environ=env).warnings == ()


def test_readable_secret_file_warns(tmp_path: Path, env: dict[str, str]) -> None:
    secret_file = tmp_path / "token.secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o640)
    path = write(tmp_path, MINIMAL.replace('env = "FAKE_TOKEN"', 'file = "token.secret"'))
    config = load_config(path, environ=env)
    [warning] = config.warnings
    assert str(secret_file) in warning and "chmod 600" in warning and SECRET not in warning
    assert config_warnings(path, environ=env) == [warning]
    secret_file.chmod(0o600)
    assert config_warnings(path, environ=env) == []


def test_config_warnings_never_raise(tmp_path: Path) -> None:
    assert config_warnings(tmp_path / "missing.toml") == []
    broken = write(tmp_path, "this is = = not toml", mode=0o644)
    assert len(config_warnings(broken)) == 1


def test_unparseable_url_with_credentials_is_redacted(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path, f'[providers.a]\ntype = "plain"\nurl = "https://u:{SECRET}@host:99999/?k={SECRET}"\n'
    )
    assert error_of(path, env).endswith('got "https://host:99999/"')
