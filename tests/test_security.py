"""Security by default: secrets stay secret, credentials stay home, the mount is private, TLS is verified,
hostile names are tamed."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.conftest import Emulator, mount_config, start_emulator, stop_process, unmount, vidfs_cmd
from tests.providers import CASES, case_emulator
from vidfs.commands.demo import write_config
from vidfs.providers.registry import get_spec

INSTANCE = "sec"
# Request headers that carry a provider credential somewhere in our providers (and must not reach another
# origin). X-UUID (AIPIX) is a device id, not a secret: it stays home but may be kept in the state dir.
CREDENTIAL_HEADERS = ("authorization", "x-cupix-auth", "api-key", "x-uuid", "cookie")
SECRET_HEADERS = ("authorization", "x-cupix-auth", "api-key", "cookie")


@pytest.fixture(scope="module", params=sorted(CASES))
def session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, media_dir: Path
) -> Iterator[tuple[str, Emulator, Path]]:
    with case_emulator(request, tmp_path_factory, media_dir, "security") as (case, emulator, workdir):
        yield case.name, emulator, workdir


def _secret_values(name: str, table: dict[str, object]) -> list[str]:
    spec = get_spec(str(table["type"]))
    assert spec is not None
    return [str(table[key]) for key, option in spec.options.items() if option.secret and key in table]


def _api_credentials(emulator: Emulator, name: str) -> set[str]:
    """Every credential value the provider sent to its own API origin (tokens it obtained included)."""
    values: set[str] = set()
    for entry in emulator.requests(name):
        if entry.get("origin", name) != name:
            continue
        for header in SECRET_HEADERS:
            value = entry["headers"].get(header)
            if value:
                values.add(value.split(" ", 1)[-1])  # "Bearer xyz" → "xyz"; Basic credentials too
        for key, value in parse_qsl(urlsplit(entry["path"]).query):
            if key in ("access_token", "token", "api_key") and value:
                values.add(value)
    return {v for v in values if len(v) >= 8}


def test_secrets_never_appear_in_logs_outputs_or_xattrs(
    session: tuple[str, Emulator, Path], tmp_path: Path
) -> None:
    name, emulator, _ = session
    table = emulator.config(name)
    config = write_config(tmp_path / "vidfs.toml", {INSTANCE: table}, cache_dir=tmp_path / "cache")
    outputs: list[str] = []
    mount = mount_config(config, tmp_path / "mnt", tmp_path / "mount.log", "--debug")
    try:
        for dirpath, _dirs, files in os.walk(mount.path):
            for file_name in files:
                path = Path(dirpath) / file_name
                with open(path, "rb") as handle:
                    handle.read(256 * 1024)
                for attr in os.listxattr(path):
                    outputs.append(f"{attr}={os.getxattr(path, attr)!r}")
        outputs.append(
            subprocess.run(
                vidfs_cmd("stats", str(mount.path), "--json"), capture_output=True, text=True, check=True
            ).stdout
        )
    finally:
        unmount(mount)
    for args in (["check", str(config)], ["ls", str(config), INSTANCE]):
        result = subprocess.run(vidfs_cmd(*args), capture_output=True, text=True, timeout=120, check=False)
        outputs += [result.stdout, result.stderr]
    bad = CASES[name].wrong_password(table)
    bad_config = write_config(tmp_path / "bad.toml", {INSTANCE: bad}, cache_dir=tmp_path / "cache2")
    result = subprocess.run(
        vidfs_cmd("check", str(bad_config)), capture_output=True, text=True, timeout=120, check=False
    )
    outputs += [result.stdout, result.stderr]
    # Everything written under the cache dir (snapshots, state, block index) counts as output too.
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000 and not path.name.endswith((".blk", ".block")):
            outputs.append(path.read_bytes().decode("utf-8", "replace"))
    everything = "\n".join(outputs) + mount.log_text()
    secrets = (
        set(_secret_values(name, table)) | set(_secret_values(name, bad)) | _api_credentials(emulator, name)
    )
    assert secrets, "no secret to look for: the test would prove nothing"
    for secret in secrets:
        assert secret not in everything, f"a secret of {name} leaked"


def test_credentials_stay_on_the_provider_origin(session: tuple[str, Emulator, Path], tmp_path: Path) -> None:
    name, emulator, _ = session
    config = write_config(
        tmp_path / "vidfs.toml", {INSTANCE: emulator.config(name)}, cache_dir=tmp_path / "cache"
    )
    mount = mount_config(config, tmp_path / "mnt", tmp_path / "mount.log")
    try:
        for dirpath, _dirs, files in os.walk(mount.path):
            for file_name in files:
                with open(Path(dirpath) / file_name, "rb") as handle:
                    handle.read(128 * 1024)
    finally:
        unmount(mount)
    credentials = _api_credentials(emulator, name) | set(_secret_values(name, emulator.config(name)))
    foreign = [e for e in emulator.requests(name) if e.get("origin", name) != name]
    for entry in foreign:
        for header in CREDENTIAL_HEADERS:
            assert header not in entry["headers"], f"{header} reached {entry.get('origin')}"
        for credential in credentials:
            assert credential not in entry["path"], f"a provider credential reached {entry.get('origin')}"


def test_the_mount_is_private_unless_allow_other(tmp_path: Path, media_dir: Path) -> None:
    if subprocess.run(["id", "nobody"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no 'nobody' user")
    emulator = start_emulator(tmp_path / "emulator", ["pixop"], media_dir)
    try:
        config = write_config(
            tmp_path / "vidfs.toml", {"p": emulator.config("pixop")}, cache_dir=tmp_path / "cache"
        )
        # The mount point's parents must be traversable by others for the test to mean anything.
        base = Path(tempfile.mkdtemp(prefix="vidfs-private-"))
        base.chmod(0o755)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls"]
        try:
            for extra, allowed in (((), False), (("--allow-other",), True)):
                mount = mount_config(config, base / "mnt", tmp_path / "mount.log", *extra)
                try:
                    result = subprocess.run(
                        [*as_nobody, str(mount.path / "p")], capture_output=True, text=True, check=False
                    )
                    assert (result.returncode == 0) is allowed, (extra, result.stderr)
                    if not allowed:
                        assert "Permission denied" in result.stderr
                finally:
                    unmount(mount)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    finally:
        stop_process(emulator.process)


def test_tls_is_verified_and_a_ca_bundle_can_be_added(tmp_path: Path, media_dir: Path) -> None:
    from vidfs.emulator.server import create_site

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True,
    )  # fmt: skip
    os.environ.setdefault("VIDFS_MEDIA_DIR", str(media_dir))
    site = create_site("pixop", media_dir=media_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    site.server.socket = context.wrap_socket(site.server.socket, server_side=True)
    site.start()
    try:
        table = {**site.config(), "base_url": site.url.replace("http://", "https://")}
        config = write_config(tmp_path / "tls.toml", {"p": table}, cache_dir=tmp_path / "cache")
        refused = subprocess.run(
            vidfs_cmd("check", str(config)), capture_output=True, text=True, timeout=120, check=False
        )
        assert refused.returncode == 1 and re.search(r"certificate|CERTIFICATE|SSL", refused.stdout), (
            refused.stdout
        )
        trusted = write_config(
            tmp_path / "tls-ca.toml",
            {"p": table},
            cache_dir=tmp_path / "cache",
            extra=f'[http]\nca_bundle = "{cert}"\n',
        )
        accepted = subprocess.run(
            vidfs_cmd("check", str(trusted)), capture_output=True, text=True, timeout=120, check=False
        )
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    finally:
        site.close()


def test_world_readable_config_gives_a_warning(tmp_path: Path, media_dir: Path) -> None:
    config = write_config(
        tmp_path / "open.toml",
        {
            "p": {
                "type": "pixop",
                "base_url": "http://127.0.0.1:9",
                "email": "a@example.com",
                "password": "x" * 12,
            }
        },
        cache_dir=tmp_path / "cache",
    )
    config.chmod(0o644)
    result = subprocess.run(
        vidfs_cmd("check", str(config)), capture_output=True, text=True, timeout=120, check=False
    )
    assert "chmod 600" in result.stderr and "open.toml" in result.stderr


HOSTILE = [
    "a/b.mp4",
    "nul\x00byte.mp4",
    ".",
    "..",
    "x" * 300 + ".mp4",
    "dup.mp4",
    "dup.mp4",
    unicodedata.normalize("NFC", "café.mp4"),
    unicodedata.normalize("NFD", "café.mp4"),
    "bell\x07tab\tnew\nline.mp4",
    ".hidden.mp4",
]


def test_hostile_names_are_listed_distinct_and_stable(tmp_path: Path, media_dir: Path) -> None:
    emulator = start_emulator(
        tmp_path / "emulator", ["pixop"], media_dir, "--catalog", "big", "--videos-per-project", "12"
    )
    try:
        catalog = emulator.catalog("pixop")
        by_project: dict[str, list[dict[str, object]]] = {}
        for video in catalog["videos"]:
            if video["visible"] and not video.get("parentId"):
                by_project.setdefault(str(video["projectId"]), []).append(video)
        project_id, videos = max(by_project.items(), key=lambda item: len(item[1]))
        assert len(videos) >= len(HOSTILE)
        for video, hostile in zip(videos, HOSTILE, strict=False):
            emulator.post(
                "pixop", "mutate", {"action": "rename", "video_id": video["id"], "file_name": hostile}
            )
        project = next(p for p in catalog["projects"] if p["id"] == project_id)
        config = write_config(
            tmp_path / "vidfs.toml", {"p": emulator.config("pixop")}, cache_dir=tmp_path / "cache"
        )
        listings = []
        for attempt in range(2):  # mount, list, unmount, mount again: the same names and inodes
            mount = mount_config(config, tmp_path / f"mnt{attempt}", tmp_path / f"mount{attempt}.log")
            try:
                directory = next(
                    p
                    for p in (mount.path / "p").iterdir()
                    if project["name"] in p.name or p.name.startswith(str(project["name"])[:20])
                )
                entries = {e.name: e.inode() for e in os.scandir(directory)}
                for entry_name in entries:
                    assert "/" not in entry_name and "\x00" not in entry_name
                    assert len(os.fsencode(entry_name)) <= 255
                    assert entry_name not in (".", "..")
                    assert not any(unicodedata.category(c) == "Cc" for c in entry_name)
                    with open(directory / entry_name, "rb") as handle:  # every name opens
                        assert handle.read(16)
                listings.append(entries)
            finally:
                unmount(mount)
        assert len(listings[0]) == len(videos)  # all listed, none lost to a collision
        assert listings[0] == listings[1]
        nfc, nfd = unicodedata.normalize("NFC", "café.mp4"), unicodedata.normalize("NFD", "café.mp4")
        assert nfc in listings[0] and nfd in listings[0]
    finally:
        stop_process(emulator.process)
