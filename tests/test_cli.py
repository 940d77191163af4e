"""The command line: help, version, bad input (one clear line, exit 2), stats, ls, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import Emulator, emulator_fixture, stop_process, vidfs_cmd, wait_until
from vidfs import __version__
from vidfs.commands.demo import write_config

VERBS = ["mount", "umount", "demo", "check", "ls", "stats"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(vidfs_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)


def test_version_and_help_on_every_verb() -> None:
    assert run("--version").stdout.strip() == f"vidfs {__version__}"
    for verb in VERBS:
        result = run(verb, "--help")
        assert result.returncode == 0 and "usage: vidfs" in result.stdout, verb


pixop = emulator_fixture("pixop")


def _bad_configs(tmp_path: Path, pixop: Emulator) -> dict[str, tuple[str, list[str]]]:
    good = pixop.config("pixop")
    table = "\n".join(f'{k} = "{v}"' for k, v in good.items())
    without_email = "\n".join(f'{k} = "{v}"' for k, v in good.items() if k != "email")
    return {
        "missing key": (f"[providers.a]\n{without_email}\n", ["[providers.a]", "email"]),
        "unknown key": (f"[providers.a]\n{table}\ncolour = 'red'\n", ["[providers.a]", "colour"]),
        "wrong type": (f"[providers.a]\n{table}\n[cache]\nmemory = true\n", ["[cache]", "memory"]),
        "secret file missing": (
            "[providers.a]\n"
            + "\n".join(f'{k} = "{v}"' for k, v in good.items() if k != "password")
            + f'\npassword = {{ file = "{tmp_path / "nope.secret"}" }}\n',
            ["password", "nope.secret"],
        ),
        "toml syntax": ("[providers.a\n", ["line"]),
    }


def test_bad_configs_give_one_clear_line(tmp_path: Path, pixop: Emulator) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    for what, (text, words) in _bad_configs(tmp_path, pixop).items():
        config = tmp_path / f"{what.replace(' ', '-')}.toml"
        config.write_text(text)
        config.chmod(0o600)
        for args in (["check", str(config)], ["mount", str(config), str(mountpoint)]):
            result = run(*args)
            assert result.returncode == 2, (what, args, result.stderr)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, (what, result.stderr)
            assert str(config) in lines[0] or config.name in lines[0], (what, lines)
            for word in words:
                assert word in lines[0], (what, word, lines[0])
            assert "Traceback" not in result.stderr
            assert "pixop-demo-password" not in result.stderr + result.stdout


def test_wrong_password_mount_fails_with_one_line(tmp_path: Path, pixop: Emulator) -> None:
    table = {**pixop.config("pixop"), "password": "wrong-password"}
    config = write_config(tmp_path / "c.toml", {"a": table}, cache_dir=tmp_path / "cache")
    (tmp_path / "mnt").mkdir()
    # The mount itself succeeds lazily; listing the provider gives EACCES, and `check` says why in one line.
    result = run("check", str(config))
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "login refused" in result.stdout
    assert "wrong-password" not in result.stdout + result.stderr


def test_missing_mountpoint_is_a_usage_error(tmp_path: Path, pixop: Emulator) -> None:
    config = write_config(tmp_path / "c.toml", {"a": pixop.config("pixop")}, cache_dir=tmp_path / "cache")
    result = run("mount", str(config), str(tmp_path / "does-not-exist"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_ls_shows_hidden_items_with_status(tmp_path: Path, pixop: Emulator) -> None:
    config = write_config(tmp_path / "c.toml", {"a": pixop.config("pixop")}, cache_dir=tmp_path / "cache")
    top = run("ls", str(config), "a")
    assert top.returncode == 0 and "Restoration demo/" in top.stdout
    project = run("ls", str(config), "a/Restoration demo")
    assert project.returncode == 0
    assert "interview.mp4" in project.stdout
    assert "not a file: IN_PROGRESS" in project.stdout  # the processed render still running


def test_stats_of_a_mount(tmp_path: Path, pixop: Emulator, mounts) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "c.toml", {"a": pixop.config("pixop")}, cache_dir=tmp_path / "cache")
    mount = mounts(config)
    video = mount.path / "a" / "Restoration demo" / "interview.mp4"
    data = video.read_bytes()
    result = run("stats", str(mount.path), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["counters"]["bytes.read"] >= len(data)
    assert any(r["tag"] == "a:storage" and r["status"] == "206" for r in document["requests"])
    table = run("stats", str(mount.path))
    assert "bytes fetched" in table.stdout and "REQUESTS" in table.stdout
    assert "pixop-demo-password" not in result.stdout + table.stdout
    assert run("stats", str(tmp_path)).returncode == 2


def test_demo_check_mounts_lists_and_probes(tmp_path: Path, media_dir: Path) -> None:
    private_tmp = tmp_path / "tmp"  # where the demo makes its work dir: nothing may be left there
    private_tmp.mkdir()
    env = dict(os.environ, VIDFS_MEDIA_DIR=str(media_dir), TMPDIR=str(private_tmp))
    result = subprocess.run(
        vidfs_cmd("demo", str(tmp_path / "demo-mnt"), "--check"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Mounted the demo catalogs" in result.stdout
    assert "ffprobe" in result.stdout and "duration" in result.stdout
    assert not os.path.ismount(tmp_path / "demo-mnt")
    assert list(private_tmp.iterdir()) == []


def test_demo_prints_its_tour_at_once_and_ctrl_c_leaves_nothing(tmp_path: Path, media_dir: Path) -> None:
    """Under a service manager or into a log, stdout is a pipe: the tour must show while the demo runs (not
    at exit); Ctrl-C at the prompt unmounts, exits 0, and the work dir is gone though a mount point was
    given."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, VIDFS_MEDIA_DIR=str(media_dir), TMPDIR=str(private_tmp))
    env.pop("PYTHONUNBUFFERED", None)  # as under a service manager: Python's own default, block buffering
    mountpoint = tmp_path / "demo-mnt"
    lines: list[str] = []
    with open(tmp_path / "demo.err", "wb") as errors:
        process = subprocess.Popen(
            vidfs_cmd("demo", str(mountpoint), "--provider", "pixop"),
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            start_new_session=True,
        )
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in process.stdout or []))
    reader.start()
    try:
        wait_until(lambda: any("Press Ctrl-C" in line for line in lines), "the demo's prompt", 120)
        assert any("Mounted the demo catalogs" in line for line in lines)
        assert os.path.ismount(mountpoint) and os.listdir(mountpoint) == ["pixop"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, (tmp_path / "demo.err").read_text()
    finally:
        stop_process(process)  # SIGTERM: the demo cleans up on it too
        reader.join(timeout=60)
    assert not os.path.ismount(mountpoint)
    assert list(private_tmp.iterdir()) == []
