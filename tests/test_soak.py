"""Concurrency soak: 64 readers (sequential and random, several files, every provider) with faults on.

Every read that completes must be byte-identical to the source; reads may fail (EIO/ESTALE are honest
answers under injected faults) but never return wrong bytes; the daemon must stay alive and its memory
bounded. The short version runs in CI; `--run-slow` runs the long one. Figures are printed (`-s`) and
written to the test's tmp dir as soak.json.
"""

from __future__ import annotations

import errno
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import alive, mount_config, start_emulator, stop_process, unmount, vidfs_cmd
from tests.providers import CASES, Expect
from vidfs.commands.demo import write_config

READERS = 64
MEMORY = 64 << 20


def _faults(storage_path: str) -> list[dict[str, object]]:
    return [
        {"kind": "reset_after", "bytes": 50_000, "rate": 0.02, "path": storage_path},
        {"kind": "status", "status": 503, "rate": 0.02, "path": storage_path},
        {"kind": "short_body", "bytes": 100, "rate": 0.01, "path": storage_path},
        {"kind": "ignore_range", "rate": 0.01, "path": storage_path},
        {"kind": "stall", "seconds": 1, "rate": 0.005, "path": storage_path},
    ]


def _soak(tmp_path: Path, media_dir: Path, seconds: float) -> dict[str, float]:
    names = sorted(CASES)
    emulator = start_emulator(tmp_path / "emulator", names, media_dir)
    mount = None
    try:
        tables = {name: emulator.config(name) for name in names}
        config = write_config(
            tmp_path / "vidfs.toml",
            tables,
            cache_dir=tmp_path / "cache",
            cache={"memory": "64MiB", "disk": "256MiB"},
            extra="[mount]\nrequest_timeout = 20\n[http]\nretries = 4\nread_timeout = 5.0\n",
        )
        files: list[tuple[Path, Expect]] = []
        for name in names:
            for rel, expect in CASES[name].expected(emulator.catalog(name)).items():
                files.append((Path(name) / rel, expect))
            emulator.post(name, "faults", {"rules": _faults(CASES[name].storage_path), "seed": 11})
        mount = mount_config(config, tmp_path / "mnt", tmp_path / "mount.log")
        figures = {"reads": 0, "bytes": 0, "errors": 0, "mismatches": 0}
        lock = threading.Lock()
        deadline = time.monotonic() + seconds
        sources: dict[str, bytes] = {}
        for _, expect in files:
            if expect.source not in sources:
                sources[expect.source] = Path(expect.source).read_bytes()

        def reader(index: int) -> None:
            rng = random.Random(index)
            while time.monotonic() < deadline:
                rel, expect = rng.choice(files)
                source = sources[expect.source]
                try:
                    with open(mount.path / rel, "rb", buffering=0) as handle:
                        if index % 2 == 0:  # sequential: a stretch of the file in 128 KiB reads
                            start = rng.randrange(0, max(1, expect.size - 1))
                            position, got = start, []
                            for _ in range(rng.randrange(1, 64)):
                                chunk = os.pread(handle.fileno(), 128 * 1024, position)
                                if not chunk:
                                    break
                                got.append(chunk)
                                position += len(chunk)
                            data, offset = b"".join(got), start
                        else:  # random
                            offset = rng.randrange(0, max(1, expect.size))
                            data = os.pread(handle.fileno(), rng.randrange(1, 256 * 1024), offset)
                    ok = data == source[offset : offset + len(data)]
                    with lock:
                        figures["reads"] += 1
                        figures["bytes"] += len(data)
                        figures["mismatches"] += 0 if ok else 1
                except OSError as exc:
                    assert exc.errno in (errno.EIO, errno.ESTALE, errno.EACCES, errno.ENOENT), exc
                    with lock:
                        figures["errors"] += 1

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
        assert not any(thread.is_alive() for thread in threads), "a reader hung"
        import subprocess

        stats = json.loads(
            subprocess.run(
                vidfs_cmd("stats", str(mount.path), "--json"),
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        assert alive(mount.pid), "the daemon died"
        injected = 0
        import httpx

        for name in names:
            snapshot = httpx.get(f"{emulator.control(name)}/faults", timeout=30).json()
            injected += sum(rule.get("fired", 0) for rule in snapshot.get("rules", []))
            emulator.post(name, "faults", {"rules": []})
        figures.update(
            faults_injected=injected,
            peak_rss_mib=stats["max_rss_kib"] / 1024,
            seconds=seconds,
            readers=READERS,
            files=len(files),
        )
        (tmp_path / "soak.json").write_text(json.dumps(figures, indent=2))
        print(f"\nsoak: {json.dumps(figures)}")
        return figures
    finally:
        if mount is not None:
            unmount(mount)
        stop_process(emulator.process)


def _check(figures: dict[str, float]) -> None:
    assert figures["mismatches"] == 0, "wrong bytes were served"
    assert figures["reads"] > 0
    assert figures["faults_injected"] > 0, "no fault fired: the soak proved nothing"
    # Memory bounded: the cache budget plus the interpreter and in-flight buffers, far below "unbounded".
    assert figures["peak_rss_mib"] < MEMORY / (1 << 20) + 400


def test_soak_short(tmp_path: Path, media_dir: Path) -> None:
    _check(_soak(tmp_path, media_dir, seconds=15))


@pytest.mark.slow
def test_soak_long(tmp_path: Path, media_dir: Path) -> None:
    _check(_soak(tmp_path, media_dir, seconds=300))
