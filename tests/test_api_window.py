"""The API window (`HttpClient.api_window`, `vidfs.http.adaptive`): API calls of one origin in flight at once.

A real HTTP/1.1 server (hypercorn on trio, 127.0.0.1) answers every call after a fixed latency (its own
`trio.sleep`: the round trip it emulates) and counts how many it holds at once. Through `HttpClient`:
- with answers keeping their pace, more calls than `max_connections_per_host` run at once, never more than
  `max_api_requests_per_host`;
- `max_api_requests_per_host = 1`: one call at a time, whatever else is set;
- 429 answers halve the window (below `max_connections_per_host`), and every call still gets its answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from tests.asgi_server import Receive, Send, lifespan, running
from vidfs.config.types import HttpSettings
from vidfs.http.adaptive import AdaptiveLimit
from vidfs.http.client import HttpClient

DEADLINE = 120.0
LATENCY = 0.05  # the server's answer time: large next to the scheduling jitter of a busy test machine


@dataclass
class Site:
    holding: int = 0
    most: int = 0
    answered: int = 0
    busy_for: int = 0  # the next this many calls get 429


def make_app(site: Site) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        site.holding += 1
        site.most = max(site.most, site.holding)
        try:
            await trio.sleep(LATENCY)
        finally:
            site.holding -= 1
        status, body = 200, b'{"ok": true}'
        headers = [(b"content-type", b"application/json")]
        if site.busy_for > 0:
            site.busy_for -= 1
            status, body = 429, b""
            headers.append((b"retry-after", b"0"))
        else:
            site.answered += 1
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def server() -> AsyncIterator[tuple[str, Site]]:
    site = Site()
    async with running(make_app(site)) as base:
        yield base, site


async def calls(http: HttpClient, base: str, count: int) -> None:
    """`count` API calls, all started at once (the window decides how many are sent); each must succeed."""

    async def one(n: int) -> None:
        response = await http.request("GET", f"{base}/api/item/{n}", tag="t:api")
        assert response.status_code == 200 and response.json() == {"ok": True}

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)


async def test_api_calls_grow_past_the_connection_limit_while_answers_keep_their_pace() -> None:
    async with server() as (base, site):
        http = HttpClient(HttpSettings(max_connections_per_host=4, max_api_requests_per_host=12))
        try:
            with trio.fail_after(DEADLINE):
                await calls(http, base, 400)
            assert site.answered == 400
            assert 4 < site.most <= 12, f"at most {site.most} calls at once"
            assert 4 < http.statistics()["api_window"] <= 12
        finally:
            await http.aclose()


async def test_one_api_call_at_a_time_when_so_configured() -> None:
    async with server() as (base, site):
        http = HttpClient(HttpSettings(max_connections_per_host=8, max_api_requests_per_host=1))
        try:
            with trio.fail_after(DEADLINE):
                await calls(http, base, 40)
            assert site.answered == 40 and site.most == 1
        finally:
            await http.aclose()


async def test_429_answers_halve_the_window_and_every_call_is_answered() -> None:
    async with server() as (base, site):
        http = HttpClient(HttpSettings(max_connections_per_host=8, retries=10))
        try:
            with trio.fail_after(DEADLINE):
                site.busy_for = 3
                # Few calls: the answers after the 429s grow the window again, by one per window's worth.
                await calls(http, base, 12)
            assert site.answered == 12 and site.busy_for == 0
            window = http.statistics()["api_window"]
            assert window < 8, f"three 429 answers left the window at {window}"
        finally:
            await http.aclose()


def test_a_burst_of_slow_answers_shrinks_the_window_once() -> None:
    """A pause of the daemon slows every answer in flight at once: one shrink for them, not one each; the
    answers after them (sent under the new limit) may shrink it again."""
    window = AdaptiveLimit(start=40, lowest=1, highest=64, steady=8)
    for _ in range(40):
        window.answered(0.02)  # a window's worth at the fastest pace: grows by one
    assert window.limit == 41
    for _ in range(41):
        window.answered(0.02)
    assert window.limit == 42
    for _ in range(42):  # the pause: every answer in flight three times slower and more
        window.answered(0.5)
    assert window.limit == 31, "shrunk by a quarter, once"
    window.answered(0.5)  # a call sent under the new limit, slow still: a new signal
    assert window.limit == 23
    for _ in range(30):  # the others in flight under 31
        window.answered(0.5)
    assert window.limit == 23
    window.answered(0.5)
    assert window.limit == 17
    for _ in range(200):  # slowness alone never goes below steady
        window.answered(0.5)
    assert window.limit == 8
