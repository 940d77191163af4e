"""The daemon's one malloc arena (`vidfs.daemon.memory`): a worker thread's allocations come from the main
arena once it is set, so blocks the trio thread frees are reused by the next reads; an operator's own
`MALLOC_ARENA_MAX` is left alone. Each case runs in a fresh interpreter (a thread keeps its first arena),
and counts the arenas glibc's `malloc_stats` reports after a thread allocated 1 MiB. The heap trimmer gives
free pages inside the heap back, and only after the catalog's work changed."""

from __future__ import annotations

import ctypes
import gc
import os
import re
import subprocess
import sys

import pytest
import trio

from vidfs.daemon.memory import FULL_AFTER, FULL_PAUSE, CollectorPacing, HeapTrimmer

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


# ------------------------------------------------------------------------------------------ heap trimmer
TRIM_PROBE = """
import trio
from vidfs.daemon.memory import FULL_AFTER, FULL_PAUSE, CollectorPacing, HeapTrimmer, one_arena

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

one_arena()
freed = [bytearray(65536) for _ in range(512)]  # 32 MiB in the heap, below glibc's mmap threshold
kept = bytearray(65536)  # above them: the heap's top stays in use, so free() alone gives nothing back
del freed
before = rss_mib()

async def main():
    work = [0]
    trimmer = HeapTrimmer(lambda: work[0], interval=0.01)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(trimmer.run)
            work[0] += 1  # the catalog did something
            while trimmer.statistics()["trims"] == 0:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

trio.run(main)
print(round(before - rss_mib()), flush=True)
"""


def test_the_trimmer_gives_the_heaps_free_pages_back_to_the_kernel(clean_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(done.stdout) >= 24, done.stdout  # MiB of the 32 freed that left the process


async def test_the_heap_is_trimmed_once_per_change_of_the_catalogs_work() -> None:
    work = [0]
    trimmer = HeapTrimmer(lambda: work[0], interval=0.01)

    async def after_looks(count: int) -> dict[str, int]:
        """The statistics once the trimmer looked `count` more times."""
        target = trimmer.statistics()["looks"] + count
        while trimmer.statistics()["looks"] < target:
            await trio.sleep(0.01)
        return trimmer.statistics()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(trimmer.run)
            assert (await after_looks(5))["trims"] == 0  # nothing done
            work[0] += 1
            assert (await after_looks(2))["trims"] == 1
            assert (await after_looks(5))["trims"] == 1  # nothing more done
            work[0] += 1
            assert (await after_looks(2))["trims"] == 2
            nursery.cancel_scope.cancel()


PACING_PROBE = """
import gc, sys
from vidfs.daemon.memory import CollectorPacing

pacing = CollectorPacing() if sys.argv[1] == "paced" else None
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
kept = []
for index in range(1_500_000):  # a catalog growing: containers that stay, and some that die young
    kept.append([index])  # a list stays tracked (a dict of atomic values leaves the collector)
    transient = [index]
print(len(full), pacing.statistics()["full_after"] if pacing else gc.get_threshold()[2], flush=True)
if pacing is not None:
    gc.collect()
    stats = pacing.statistics()
    print(stats["collections"][2], stats["full_after"], stats["seconds"] >= 0, flush=True)
"""


def test_full_collections_are_paced_and_counted() -> None:
    """With `CollectorPacing`, a heap that grows by a million and a half containers sets off fewer full
    collections than Python's default pacing; a full collection is counted in its statistics."""

    def run(mode: str) -> list[str]:
        command = [sys.executable, "-c", PACING_PROBE, mode]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.split()

    default_full, default_after = (int(word) for word in run("default")[:2])
    paced = run("paced")
    paced_full, paced_after = int(paced[0]), int(paced[1])
    assert default_after == 10 and paced_after == 100
    assert paced_full < default_full, (paced_full, default_full)
    assert paced[2:] == [str(paced_full + 1), "100", "True"]


def test_a_full_collection_pauses_the_next_for_a_multiple_of_its_time() -> None:
    """After a full collection that took d seconds there is none for FULL_PAUSE * d seconds (the threshold
    of full collections is out of reach meanwhile), then the usual pacing again. The clock is ours: a full
    collection takes one second of it (a callback before the pacing's moves it on)."""
    now = [0.0]

    def one_second_per_full(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            now[0] += 1.0

    gc.callbacks.append(one_second_per_full)
    pacing = CollectorPacing(clock=lambda: now[0])
    try:
        assert gc.get_threshold()[2] == FULL_AFTER
        gc.collect(2)  # from 0 to 1: paused until 1 + FULL_PAUSE
        assert gc.get_threshold()[2] > 10**6 and pacing.statistics()["full_paused"]
        now[0] = 1 + FULL_PAUSE - 0.5
        gc.collect(0)
        assert gc.get_threshold()[2] > 10**6 and pacing.statistics()["full_paused"]
        now[0] = 1 + FULL_PAUSE
        gc.collect(0)  # the first collection that starts once the pause is over ends it
        assert gc.get_threshold()[2] == FULL_AFTER and not pacing.statistics()["full_paused"]
        assert pacing.statistics()["pauses"] == 1 and pacing.statistics()["collections"][2] == 1
    finally:
        pacing.close()
        gc.callbacks.remove(one_second_per_full)
