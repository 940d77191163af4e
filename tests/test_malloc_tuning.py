"""The daemon's malloc thresholds (`vidfs.daemon.memory`): a 2 MiB buffer comes from the heap, not from a
fresh `mmap`, once they are set; an operator's own `MALLOC_*_` setting leaves glibc as it is. Each case runs
in a fresh interpreter, since glibc moves its threshold after the first large free of a process."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json
from vidfs.daemon.memory import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = tune_malloc()
before = libc.mallinfo2().hblks
buffers = [bytearray(2 << 20) for _ in range(4)]
print(json.dumps({"tuned": tuned, "mmapped": libc.mallinfo2().hblks - before}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.fixture
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc >= 2.33 (no mallinfo2)")
    return env


def test_buffers_of_a_few_mib_come_from_the_heap_once_tuned(clean_env: dict[str, str]) -> None:
    assert probe(clean_env) == {"tuned": True, "mmapped": 0}


def test_an_operators_setting_is_left_alone(clean_env: dict[str, str]) -> None:
    # glibc's own default threshold (128 KiB), set explicitly: each 2 MiB buffer is a mapping of its own.
    assert probe({**clean_env, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}) == {"tuned": False, "mmapped": 4}
