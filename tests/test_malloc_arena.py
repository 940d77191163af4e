"""The daemon's one malloc arena (`vidfs.daemon.memory`): a worker thread's allocations come from the main
arena once it is set, so blocks the trio thread frees are reused by the next reads; an operator's own
`MALLOC_ARENA_MAX` is left alone. Each case runs in a fresh interpreter (a thread keeps its first arena),
and counts the arenas glibc's `malloc_stats` reports after a thread allocated 1 MiB."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, threading
from vidfs.daemon.memory import one_arena

print("tuned" if one_arena() else "left", flush=True)
held = []
worker = threading.Thread(target=lambda: held.extend(bytes(65536) for _ in range(16)))
worker.start()
worker.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" section per arena, on stderr
"""


def arenas(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip(), len(re.findall(r"^Arena \d+:", done.stderr, re.MULTILINE))


@pytest.fixture
def clean_env() -> dict[str, str]:
    if not hasattr(ctypes.CDLL(None), "malloc_stats"):
        pytest.skip("not glibc (no malloc_stats)")
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


def test_a_worker_thread_allocates_from_the_main_arena(clean_env: dict[str, str]) -> None:
    assert arenas(clean_env) == ("tuned", 1)


def test_an_operators_arena_count_is_left_alone(clean_env: dict[str, str]) -> None:
    assert arenas({**clean_env, "MALLOC_ARENA_MAX": "4"}) == ("left", 2)
