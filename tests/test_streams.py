"""Parallel ranged streams for one sequential reader: the count follows measured throughput (in process),
and a real mount opens more than one stream at once only when `max_connections_per_host` allows it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import Emulator, most_in_flight, sha256_file, start_emulator, stop_process
from tests.providers import CASES
from vidfs.io.streams import MIN_RUN, PERIOD_BYTES, StreamPlanner

MiB = 1 << 20


async def feed(planner: StreamPlanner, link: float, per_stream: float, periods: int) -> list[int]:
    """Downloads at the rate a link gives `streams` parallel streams (each capped at `per_stream`, all at
    `link`): the stream counts the planner chose, period by period."""
    chosen = []
    for _ in range(periods):
        streams = planner.streams("p")
        rate = min(link, streams * per_stream)
        for _chunk in range(4):
            await trio.sleep(PERIOD_BYTES / 4 / rate)
            planner.downloaded("p", PERIOD_BYTES // 4)
        chosen.append(planner.streams("p"))
    return chosen


async def test_streams_grow_while_they_pay_and_stop_where_the_link_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    planner = StreamPlanner(max_streams=8, window=16 * MiB, max_run=8 * MiB)
    chosen = await feed(planner, link=400e6, per_stream=100e6, periods=40)  # 4 streams fill the link
    assert 4 <= chosen[-1] <= 5 and max(chosen) <= 6
    assert planner.run_bytes("p") == max(MIN_RUN, 16 * MiB // chosen[-1])


async def test_one_stream_when_one_fills_the_link(autojump_clock: trio.testing.MockClock) -> None:
    planner = StreamPlanner(max_streams=8, window=16 * MiB, max_run=8 * MiB)
    chosen = await feed(planner, link=300e6, per_stream=300e6, periods=30)
    assert chosen[-1] <= 3  # more streams gained nothing: it went back or held


async def test_never_more_streams_than_connections(autojump_clock: trio.testing.MockClock) -> None:
    planner = StreamPlanner(max_streams=1, window=16 * MiB, max_run=8 * MiB)
    chosen = await feed(planner, link=800e6, per_stream=50e6, periods=20)
    assert set(chosen) == {1}


@pytest.fixture
def web(tmp_path: Path, media_dir: Path) -> Emulator:
    emu = start_emulator(tmp_path / "emulator", ["http"], media_dir)
    yield emu  # type: ignore[misc]
    stop_process(emu.process)


@pytest.mark.parametrize("connections", [1, 8])
def test_a_sequential_reader_uses_parallel_streams_only_when_allowed(
    web: Emulator, make_config: Any, mounts: Any, connections: int
) -> None:
    expected = CASES["http"].expected(web.catalog("http"))
    rel = "big reel.mp4"
    # Storage answers each request after 50 ms: one stream at a time would leave the link idle.
    web.post("http", "faults", {"rules": [{"kind": "latency", "seconds": 0.05, "path": "^/pub/big"}]})
    config = make_config(
        {"web": web.config("http")}, extra=f"[http]\nmax_connections_per_host = {connections}\n"
    )
    mount = mounts(config)
    assert sha256_file(mount.path / "web" / rel) == expected[rel].sha256
    gets = [r for r in web.requests("http") if r["method"] == "GET" and r["path"].startswith("/pub/big")]
    print(f"\n{connections} connection(s): {len(gets)} GETs, at most {most_in_flight(gets)} at once")
    if connections == 1:
        assert most_in_flight(gets) == 1
    else:
        assert most_in_flight(gets) > 1
    assert os.path.getsize(mount.path / "web" / rel) == expected[rel].size
