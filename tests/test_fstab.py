"""The mount(8) helper: `mount -t fuse.vidfs`, an fstab line, mount.fuse3's `prog#source`, all for real.

mount(8) only looks for helpers in /sbin (= /usr/sbin on merged-/usr systems), so the tests link
/sbin/mount.fuse.vidfs to this checkout's console script when it is not there, and remove the link after.
They need root (mount(8) refuses `-t` for other users) and skip otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Emulator, emulator_fixture, wait_until
from vidfs.commands.demo import write_config
from vidfs.commands.mount_helper import HelperUsage, Invocation, mount_arguments, parse_args

INSTANCE = "site"
SBIN_HELPER = Path("/sbin/mount.fuse.vidfs")
VENV_HELPER = Path(sys.executable).parent / "mount.fuse.vidfs"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) with -t needs root")


pixop = emulator_fixture("pixop")


@pytest.fixture(scope="module")
def sbin_helper() -> Iterator[Path]:
    """/sbin/mount.fuse.vidfs → this checkout's console script, for the module's duration."""
    if os.geteuid() != 0:
        pytest.skip("installing a mount helper in /sbin needs root")
    if not VENV_HELPER.exists():
        pytest.skip(f"{VENV_HELPER} is missing: reinstall the package (pip install -e .)")
    created = False
    if SBIN_HELPER.is_symlink() or SBIN_HELPER.exists():
        if SBIN_HELPER.resolve() != VENV_HELPER.resolve():
            pytest.skip(f"{SBIN_HELPER} belongs to another vidfs install ({SBIN_HELPER.resolve()})")
    else:
        SBIN_HELPER.symlink_to(VENV_HELPER)
        created = True
    try:
        yield SBIN_HELPER
    finally:
        if created:
            SBIN_HELPER.unlink(missing_ok=True)


def _pid_from(output: str) -> int:
    assert "pid " in output, output
    return int(output.split("pid ", 1)[1].split(";", 1)[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    try:
        wait_until(lambda: not _alive(pid), f"process {pid} to end", timeout)
    except AssertionError:
        return False
    return True


def _findmnt(mountpoint: Path) -> tuple[str, str]:
    out = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "--mountpoint", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return (out[0], out[1]) if len(out) == 2 else ("", "")


class Mounted:
    """Cleans up whatever a test mounted through mount(8): unmount, then end the daemon."""

    def __init__(self) -> None:
        self.entries: list[tuple[Path, int | None]] = []

    def add(self, mountpoint: Path, pid: int | None) -> None:
        self.entries.append((mountpoint, pid))

    def cleanup(self) -> None:
        for mountpoint, pid in self.entries:
            if os.path.ismount(mountpoint):
                subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False, timeout=60)
            if pid is not None and not _wait_gone(pid, 20):
                os.kill(pid, signal.SIGKILL)
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, check=False)


@pytest.fixture
def mounted() -> Iterator[Mounted]:
    tracker = Mounted()
    yield tracker
    tracker.cleanup()


def _config(tmp_path: Path, pixop: Emulator) -> Path:
    return write_config(
        tmp_path / "vidfs.toml", {INSTANCE: pixop.config("pixop")}, cache_dir=tmp_path / "cache"
    )


def _read_one(root: Path) -> Path:
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            data = path.read_bytes()
            assert len(data) == path.stat().st_size > 0
            return path
    raise AssertionError(f"no file below {root}")


@needs_root
def test_mount_t_fuse_vidfs_reads_and_umounts(
    tmp_path: Path, pixop: Emulator, sbin_helper: Path, mounted: Mounted
) -> None:
    config = _config(tmp_path, pixop)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "fuse.vidfs", str(config), str(mountpoint), "-o", "allow_other"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    pid = _pid_from(result.stdout) if result.returncode == 0 else None
    mounted.add(mountpoint, pid)
    assert result.returncode == 0, result.stderr
    # mount(8) returned once the helper did: the mount answers already, the daemon serves in the background.
    assert os.path.ismount(mountpoint)
    fstype, options = _findmnt(mountpoint)
    assert fstype == "fuse.vidfs"
    assert "ro" in options.split(",") and "allow_other" in options.split(",")
    _read_one(mountpoint / INSTANCE)
    assert pid is not None and _alive(pid)

    umount = subprocess.run(
        ["umount", str(mountpoint)], capture_output=True, text=True, timeout=60, check=False
    )
    assert umount.returncode == 0, umount.stderr
    assert not os.path.ismount(mountpoint)
    assert _wait_gone(pid), "the daemon kept running after umount"


@needs_root
def test_an_fstab_line(tmp_path: Path, pixop: Emulator, sbin_helper: Path, mounted: Mounted) -> None:
    """The documented fstab line, with the options systemd and mount(8) add, via `mount -T FSTAB`."""
    config = _config(tmp_path, pixop)
    mountpoint = tmp_path / "media"
    mountpoint.mkdir()
    fstab = tmp_path / "fstab"
    options = "noauto,nofail,_netdev,x-systemd.automount,x-systemd.mount-timeout=2min,allow_other"
    options += f",subtree={INSTANCE}/Incoming,log_file={tmp_path / 'daemon.log'}"
    fstab.write_text(f"# test fstab\n{config}  {mountpoint}  fuse.vidfs  {options}  0  0\n")
    result = subprocess.run(
        ["mount", "-T", str(fstab), str(mountpoint)], capture_output=True, text=True, timeout=180, check=False
    )
    pid = _pid_from(result.stdout) if result.returncode == 0 else None
    mounted.add(mountpoint, pid)
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(mountpoint)
    # subtree= moved the root; log_file= took the log.
    assert sorted(os.listdir(mountpoint)) == ["promo.mp4"]
    _read_one(mountpoint)
    assert (tmp_path / "daemon.log").exists()
    assert subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=60).returncode == 0
    assert pid is not None and _wait_gone(pid)


@needs_root
def test_mount_fuse3_with_a_prog_hash_source(tmp_path: Path, pixop: Emulator, mounted: Mounted) -> None:
    """fuse3's generic convention, `-t fuse 'mount.fuse.vidfs#CONFIG'`, needs no link in /sbin: mount.fuse3
    runs the helper named before '#' from $PATH."""
    if shutil.which("mount.fuse3") is None:
        pytest.skip("mount.fuse3 (fuse3) is not installed")
    config = _config(tmp_path, pixop)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {**os.environ, "PATH": f"{VENV_HELPER.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    result = subprocess.run(
        ["mount", "-t", "fuse", f"mount.fuse.vidfs#{config}", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    pid = _pid_from(result.stdout) if result.returncode == 0 else None
    mounted.add(mountpoint, pid)
    assert result.returncode == 0, result.stderr
    _read_one(mountpoint / INSTANCE)
    assert subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=60).returncode == 0
    assert pid is not None and _wait_gone(pid)


def test_helper_translates_options() -> None:
    invocation = parse_args(
        ["/etc/vidfs/a.toml", "/mnt/a", "-o", "rw,nosuid,nodev,allow_other,_netdev,x-systemd.automount", "-v"]
    )
    assert invocation.verbose and not invocation.fake
    assert mount_arguments(invocation) == [
        "mount",
        "--daemon",
        "/etc/vidfs/a.toml",
        "/mnt/a",
        "--allow-other",
        "-v",
    ]
    invocation = parse_args(
        ["c.toml", "m", "-osubtree=a/b,log_file=/tmp/x.log,debug", "-n", "-t", "fuse.vidfs"]
    )
    assert mount_arguments(invocation)[4:] == ["--subtree", "a/b", "--log-file", "/tmp/x.log", "--debug"]
    for bad in (["c.toml"], ["c.toml", "m", "-N", "ns"], ["c.toml", "m", "-t", "ext4"]):
        with pytest.raises(HelperUsage):
            parse_args(bad)
    with pytest.raises(HelperUsage, match="unknown mount option 'colour=red'"):
        mount_arguments(Invocation("c", "m", ["colour=red"]))
    assert mount_arguments(Invocation("c", "m", ["colour=red"], sloppy=True)) == [
        "mount",
        "--daemon",
        "c",
        "m",
    ]


def test_helper_exit_codes(tmp_path: Path) -> None:
    helper = [sys.executable, "-m", "vidfs.commands.mount_helper"]
    bad = subprocess.run([*helper, "c.toml", str(tmp_path), "-o", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown mount option 'bogus'" in bad.stderr
    fake = subprocess.run(
        [*helper, "c.toml", str(tmp_path), "-f", "-v", "-o", "allow_other"], capture_output=True, text=True
    )
    assert fake.returncode == 0 and "mount --daemon c.toml" in fake.stderr
    missing = subprocess.run(
        [*helper, str(tmp_path / "nope.toml"), str(tmp_path)], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "config file not found" in missing.stderr
