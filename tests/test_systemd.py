"""The systemd units: `systemd-analyze verify`, then each unit's ExecStart run as written.

No systemd manager is needed (nor used): the test reads the unit file, resolves its specifiers (%i, %h,
%E, %C...) and its Environment= variables the way the manager would, with test values: instance "test",
a temporary home and cache, a config over the Pixop emulator, and, for the system unit, /etc/vidfs and
/mnt/vidfs moved under a temporary root (as an /etc/vidfs/%i.env file would). It builds the
$CREDENTIALS_DIRECTORY that LoadCredential=/SetCredential= describe, reproduces the hardening that
applies to a process (NoNewPrivileges=, CapabilityBoundingSet= through setpriv; UMask=), listens on a unix
datagram socket as NOTIFY_SOCKET, and runs the ExecStart command in the foreground. Then: READY=1 and
STATUS= arrive, the mount serves files, SIGTERM brings STOPPING=1, a clean exit and no mount left.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Emulator, emulator_fixture
from vidfs.commands.demo import toml_value

REPO = Path(__file__).resolve().parent.parent
SYSTEM_UNIT = REPO / "systemd" / "vidfs@.service"
USER_UNIT = REPO / "systemd" / "vidfs-user@.service"
VENV_VIDFS = Path(sys.executable).parent / "vidfs"
SYSTEM_VIDFS = Path("/usr/local/bin/vidfs")
INSTANCE = "test"
PROVIDER = "site"
SECRET_NAME = "pixop-password"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


# ------------------------------------------------------------------------------------- unit parsing
def parse_unit(path: Path) -> dict[str, list[str]]:
    """`Key` → its values in file order (all sections; keys are unique enough in these units)."""
    values: dict[str, list[str]] = {}
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if not logical.startswith("[") and "=" in logical:
            key, _, value = logical.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
        logical = ""
    return values


def resolve_specifiers(text: str, spec: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter == "%":
            return "%"
        if letter not in spec:
            raise AssertionError(f"specifier %{letter} is not handled by this test")
        return spec[letter]

    return re.sub(r"%(.)", one, text)


def unit_environment(values: dict[str, list[str]], spec: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in values.get("Environment", []):
        for assignment in shlex.split(resolve_specifiers(line, spec)):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def expand_command(line: str, env: dict[str, str]) -> list[str]:
    """systemd's rules: `${VAR}` is replaced in place, a word that is exactly `$VAR` splits into words."""
    line = line.lstrip("-@:+!")
    argv: list[str] = []
    for word in shlex.split(line):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def hardening_prefix(values: dict[str, list[str]]) -> list[str]:
    """What NoNewPrivileges= and CapabilityBoundingSet= do to the process, through setpriv(1)."""
    prefix: list[str] = []
    if values.get("NoNewPrivileges", ["no"])[-1] == "yes":
        prefix.append("--no-new-privs")
    caps = " ".join(values.get("CapabilityBoundingSet", [])).split()
    if caps:
        names = ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
        prefix += ["--bounding-set", f"-all,{names}", "--inh-caps", "-all"]
    if not prefix:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing: cannot reproduce the unit's hardening")
    return ["setpriv", *prefix, "--"]


# ------------------------------------------------------------------------------------------ fixtures
pixop = emulator_fixture("pixop")


@pytest.fixture(scope="module")
def system_vidfs() -> Iterator[Path]:
    """/usr/local/bin/vidfs, the system unit's ExecStart program, running this checkout's vidfs.

    CI links it. Otherwise it is linked here for the module and put back as it was after: a link left by
    another checkout (dangling once that checkout is gone, so `exists()` is false but the name is taken)
    is replaced, not trusted. An installed program (a regular file) is used as it is."""
    if SYSTEM_VIDFS.exists() and not SYSTEM_VIDFS.is_symlink():
        yield SYSTEM_VIDFS
        return
    if SYSTEM_VIDFS.is_symlink() and SYSTEM_VIDFS.resolve() == VENV_VIDFS.resolve():
        yield SYSTEM_VIDFS
        return
    if os.geteuid() != 0:
        pytest.skip(f"{SYSTEM_VIDFS} is not this checkout's vidfs (linking it there needs root)")
    previous = os.readlink(SYSTEM_VIDFS) if SYSTEM_VIDFS.is_symlink() else None
    _link(SYSTEM_VIDFS, VENV_VIDFS)
    try:
        yield SYSTEM_VIDFS
    finally:
        if previous is None:
            SYSTEM_VIDFS.unlink(missing_ok=True)
        else:
            _link(SYSTEM_VIDFS, Path(previous))


def _link(name: Path, target: Path) -> None:
    """Make `name` a link to `target` in one step (a new link renamed over whatever `name` was)."""
    name.parent.mkdir(parents=True, exist_ok=True)
    fresh = name.with_name(f".{name.name}.{os.getpid()}")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, name)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for the cache: the control socket lives below it, and unix socket paths are
    limited to 107 bytes (pytest's tmp_path is long)."""
    path = Path(tempfile.mkdtemp(prefix="vidfs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class UserHome:
    home: Path
    runtime: Path


@pytest.fixture
def user_home(tmp_path: Path) -> UserHome:
    """A home where `pipx install vidfs` would have put ~/.local/bin/vidfs (here: the venv's)."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "vidfs").symlink_to(VENV_VIDFS)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return UserHome(home, runtime)


# ------------------------------------------------------------------------------------------- verify
@needs_analyze
def test_system_unit_passes_systemd_analyze_verify(system_vidfs: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(SYSTEM_UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # Also as a named instance, the way `systemctl enable vidfs@media` loads it.
    result = subprocess.run(
        ["systemd-analyze", "verify", str(SYSTEM_UNIT.with_name("vidfs@media.service"))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_analyze
def test_user_unit_passes_systemd_analyze_verify(user_home: UserHome) -> None:
    env = {**os.environ, "HOME": str(user_home.home), "XDG_RUNTIME_DIR": str(user_home.runtime)}
    env.pop("XDG_CONFIG_HOME", None)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(USER_UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_units_keep_the_mount_visible_and_notify() -> None:
    """No option that would give the service its own mount namespace (the mount would be invisible)."""
    namespaced = {
        "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "ReadWritePaths",
        "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
        "ProtectProc", "MountFlags", "DynamicUser", "RootDirectory", "RootImage",
    }  # fmt: skip
    for unit in (SYSTEM_UNIT, USER_UNIT):
        values = parse_unit(unit)
        assert not namespaced & set(values), (unit.name, namespaced & set(values))
        assert values["Type"] == ["notify"] and values["NotifyAccess"] == ["main"]
        assert any(v.startswith("vidfs:") for v in values["LoadCredential"])
    user = parse_unit(USER_UNIT)
    # fusermount3 is setuid: no NoNewPrivileges= (nor the options that imply it in a user manager).
    for implies_nnp in ("NoNewPrivileges", "SystemCallFilter", "RestrictAddressFamilies", "LockPersonality"):
        assert implies_nnp not in user
    system = parse_unit(SYSTEM_UNIT)
    assert system["DeviceAllow"] == ["/dev/fuse rw"] and system["DevicePolicy"] == ["closed"]


# ---------------------------------------------------------------------------------- run ExecStart
class Notifications:
    def __init__(self) -> None:
        self.address = f"@vidfs-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.messages: list[str] = []

    def wait_for(self, field: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                for line in message.splitlines():
                    if line.startswith(field):
                        return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {field} within {timeout}s; got {self.messages}\n{log.read_text()}")
            if process.poll() is not None and field != "STOPPING=1":
                raise AssertionError(f"exited with {process.returncode} before {field}\n{log.read_text()}")
            self.sock.settimeout(0.2)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def credentials_directory(
    values: dict[str, list[str]], spec: dict[str, str], reroot: Path | None, dest: Path
) -> Path:
    """What LoadCredential=ID:DIR plus SetCredential=ID:VALUE produce: DIR/NAME → ID_NAME, else ID."""
    dest.mkdir(mode=0o700)
    for line in values.get("LoadCredential", []):
        ident, _, source = resolve_specifiers(line, spec).partition(":")
        directory = Path(str(reroot) + source) if reroot else Path(source)
        if directory.is_dir():
            for item in sorted(directory.iterdir()):
                (dest / f"{ident}_{item.name}").write_bytes(item.read_bytes())
    for line in values.get("SetCredential", []):  # a default, used when nothing was loaded under its ID
        ident, _, value = line.partition(":")
        if not (dest / ident).exists():
            (dest / ident).write_text(value)
    return dest


def write_instance_config(path: Path, pixop: Emulator) -> None:
    """A config that relies on the unit: no [cache] dir (the unit's XDG_CACHE_HOME decides), the password
    as a systemd credential."""
    table = {k: v for k, v in pixop.config("pixop").items() if k != "password"}
    lines = [f"[providers.{PROVIDER}]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    lines.append(f'password = {{ credential = "vidfs_{SECRET_NAME}" }}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def run_exec_start(
    unit: Path, spec: dict[str, str], pixop: Emulator, tmp_path: Path, *, reroot: Path | None, hardened: bool
) -> None:
    values = parse_unit(unit)
    env = unit_environment(values, spec)
    if reroot is not None:  # the system unit's /etc/vidfs and /mnt/vidfs, moved under a temporary root
        for name in ("VIDFS_CONFIG", "VIDFS_MOUNTPOINT"):
            env[name] = str(reroot) + env[name]
    config, mountpoint = Path(env["VIDFS_CONFIG"]), Path(env["VIDFS_MOUNTPOINT"])
    write_instance_config(config, pixop)
    mountpoint.mkdir(parents=True, exist_ok=True)  # what the unit's ExecStartPre=mkdir -p does
    cache_dir = Path(env["XDG_CACHE_HOME"])  # what CacheDirectory= creates
    cache_dir.mkdir(parents=True, exist_ok=True)

    # The secret, where the unit's LoadCredential= directory says, for instance "test".
    secret_dir_line = next(v for v in values["LoadCredential"] if v.startswith("vidfs:"))
    secret_dir = Path(
        (str(reroot) if reroot else "") + resolve_specifiers(secret_dir_line, spec).partition(":")[2]
    )
    secret_dir.mkdir(parents=True, mode=0o700)
    (secret_dir / SECRET_NAME).write_text(pixop.config("pixop")["password"] + "\n")
    credentials = credentials_directory(values, spec, reroot, tmp_path / "credentials")
    assert (credentials / f"vidfs_{SECRET_NAME}").exists()

    (exec_start,) = values["ExecStart"]
    argv = expand_command(resolve_specifiers(exec_start, spec), env)
    assert Path(argv[0]).name == "vidfs" and argv[1:4] == ["mount", str(config), str(mountpoint)], argv
    if Path(argv[0]).resolve() != VENV_VIDFS.resolve():
        pytest.skip(f"{argv[0]} is another vidfs install than this checkout's ({VENV_VIDFS})")
    prefix = hardening_prefix(values) if hardened else []
    umask = int(values.get("UMask", ["0022"])[-1], 8)

    notify = Notifications()
    log = tmp_path / "service.log"
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": spec["h"],
        **env,
        "NOTIFY_SOCKET": notify.address,
        "CREDENTIALS_DIRECTORY": str(credentials),
        "INVOCATION_ID": uuid.uuid4().hex,  # as systemd sets it
    }
    with open(log, "wb") as log_handle:
        # systemd names the journal stream it gives the service: with stderr that stream, logs take the
        # journald format (vidfs compares the name with its stderr, so the log file stands in for it).
        stream = os.fstat(log_handle.fileno())
        child_env["JOURNAL_STREAM"] = f"{stream.st_dev}:{stream.st_ino}"
        process = subprocess.Popen(
            [*prefix, *argv],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            preexec_fn=lambda: os.umask(umask),  # the unit's UMask=
        )
    try:
        ready = notify.wait_for("READY=1", process, log)
        status = notify.wait_for("STATUS=", process, log)
        assert ready == "READY=1"
        assert "serving 1 provider(s)" in status, status
        # The mount serves files, and its cache is the unit's per-instance one.
        assert os.path.ismount(mountpoint)
        root = mountpoint / PROVIDER
        files = [Path(d) / n for d, _, names in os.walk(root) for n in names]
        assert files
        sample = files[0]
        assert len(sample.read_bytes()) == sample.stat().st_size > 0
        control = os.getxattr(mountpoint, "user.vidfs.control").decode()
        assert control.startswith(str(cache_dir / "vidfs")), control
        assert os.stat(control).st_mode & 0o077 == 0
        journal_lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert journal_lines and all(re.match(r"<\d>", line) for line in journal_lines), journal_lines[:5]

        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", process, log)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert not os.path.ismount(mountpoint)
    finally:
        notify.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, check=False)


def test_system_unit_exec_start_as_written(
    tmp_path: Path, pixop: Emulator, system_vidfs: Path, short_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the system unit runs as root")
    spec = {
        "i": INSTANCE,
        "I": INSTANCE,
        "n": f"vidfs@{INSTANCE}.service",
        "p": "vidfs",
        "h": "/root",
        "u": "root",
        "C": str(short_dir),  # /var/cache for the system manager
        "E": "/etc",
    }
    run_exec_start(SYSTEM_UNIT, spec, pixop, tmp_path, reroot=tmp_path / "root", hardened=True)


def test_user_unit_exec_start_as_written(
    tmp_path: Path, pixop: Emulator, user_home: UserHome, short_dir: Path
) -> None:
    home = user_home.home
    spec = {
        "i": INSTANCE,
        "I": INSTANCE,
        "n": f"vidfs-user@{INSTANCE}.service",
        "p": "vidfs-user",
        "h": str(home),
        "u": os.environ.get("USER", "user"),
        "C": str(short_dir),  # ~/.cache
        "E": str(home / ".config"),
    }
    run_exec_start(USER_UNIT, spec, pixop, tmp_path, reroot=None, hardened=False)
