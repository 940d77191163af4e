"""Connection lanes (`vidfs.http.lanes`): many requests at once over small pools, none held back, none lost.

A real HTTP/1.1 server (hypercorn on trio, 127.0.0.1) holds every request until the test lets them go, and
tells each answer's client port (its connection). Through `HttpClient`, as the size probes send them:
- 40 HEADs at once all reach the server together (no lane queues a request while another has room), over
  more lanes than one, and a second round of 40 reuses those connections (no new connection);
- every lane's slot comes back: after the answers, bodies read and not, and after refused connections,
  nothing is counted in flight (byte transfers, a few large requests, keep one plain pool: not laned);
- plain http origins spread at once; with `http2=True` an https origin stays on its first lane until it
  answered in HTTP/1.1 (the HTTP/2 side, one connection for all, is `tests/test_http2.py`).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.asgi_server import Receive, Send, lifespan, running
from tests.test_http2 import make_certificates
from vidfs.config.types import HttpSettings
from vidfs.errors import RemoteError
from vidfs.http.client import HttpClient
from vidfs.http.lanes import LANE_CONNECTIONS, LanedTransport

DEADLINE = 60.0
AT_ONCE = 5 * LANE_CONNECTIONS  # more than one lane can carry


@dataclass
class Held:
    """The server's side: requests waiting, the ports they came from, and the gate that lets them go."""

    waiting: int = 0
    most_waiting: int = 0
    ports: list[int] = field(default_factory=list)
    gate: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)
    expect: int = AT_ONCE


def make_app(held: Held) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        held.ports.append(scope["client"][1])
        held.waiting += 1
        held.most_waiting = max(held.most_waiting, held.waiting)
        if held.waiting >= held.expect:
            held.arrived.set()
        await held.gate.wait()
        held.waiting -= 1
        body = b"x" * 1000 if scope["method"] == "GET" else b""
        headers = [(b"content-length", b"1000"), (b"x-client-port", str(scope["client"][1]).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def server(tls: Path | None = None) -> AsyncIterator[tuple[str, Held]]:
    """(base URL, the server's side) of a server speaking HTTP/1.1 only (over TLS, with certificates made in
    `tls`, when given)."""
    held = Held()
    certificate = make_certificates(tls)[1:] if tls is not None else None
    async with running(
        make_app(held), certificate=certificate, http11_only=True, keep_alive=DEADLINE
    ) as base:
        yield base, held


def in_flight(http: HttpClient) -> int:
    """Requests counted in flight by both of the client's transports."""
    return http.statistics()["in_flight"]


async def a_round(http: HttpClient, base: str, held: Held) -> list[str]:
    """AT_ONCE HEADs at once: let go only once the server holds them all; the ports they answer from."""
    held.gate, held.arrived, held.expect = trio.Event(), trio.Event(), AT_ONCE
    answered: list[str] = []

    async def head(n: int) -> None:
        response = await http.request("HEAD", f"{base}/video-{n}.mp4", tag="t:storage", pool=None)
        assert response.status_code == 200 and response.headers["content-length"] == "1000"
        answered.append(response.headers["x-client-port"])

    async with trio.open_nursery() as nursery:
        for n in range(AT_ONCE):
            nursery.start_soon(head, n)
        # Waiting on a condition (the deadline only guards a hang): a lane queueing requests while another
        # lane has room would hold some of them back, and the server would never see them all at once.
        with trio.move_on_after(DEADLINE) as waited:
            await held.arrived.wait()
        assert not waited.cancelled_caught, (
            f"only {held.most_waiting} of {AT_ONCE} requests ever arrived together"
        )
        held.gate.set()
    return answered


async def test_many_heads_at_once_spread_over_lanes_and_keep_their_connections() -> None:
    async with server() as (base, held):
        http = HttpClient(HttpSettings())
        try:
            with trio.fail_after(DEADLINE * 3):
                first = await a_round(http, base, held)
                assert len(first) == AT_ONCE and len(set(first)) == AT_ONCE  # HTTP/1.1: a connection each
                lanes = http.statistics()["lanes"]
                assert lanes >= AT_ONCE // LANE_CONNECTIONS, f"{AT_ONCE} requests over {lanes} lane(s)"
                assert in_flight(http) == 0
                second = await a_round(http, base, held)
            assert set(second) == set(first), "the second round opened new connections"
            assert len(held.ports) == 2 * AT_ONCE
            assert in_flight(http) == 0
        finally:
            await http.aclose()


async def test_every_slot_comes_back_after_bodies_read_or_not_and_after_failures() -> None:
    async with server() as (base, held):
        held.gate.set()
        http = HttpClient(HttpSettings(retries=0))
        try:
            with trio.fail_after(DEADLINE):
                for _ in range(3):  # whole bodies, read by the client
                    assert (await http.request("GET", f"{base}/a.mp4", tag="t:api")).content == b"x" * 1000
                assert in_flight(http) == 0
                lanes = LanedTransport(verify=True)
                try:
                    response = await lanes.handle_async_request(httpx.Request("GET", f"{base}/b.mp4"))
                    assert response.status_code == 200 and lanes.statistics()["in_flight"] == 1
                    await response.aclose()  # its body unread
                    assert lanes.statistics()["in_flight"] == 0
                finally:
                    await lanes.aclose()
                with socket.socket() as unused:  # a port nobody listens on: connections refused
                    unused.bind(("127.0.0.1", 0))
                    refused = f"http://127.0.0.1:{unused.getsockname()[1]}/c.mp4"
                for _ in range(3):
                    with pytest.raises(RemoteError):
                        await http.request("HEAD", refused, tag="t:storage", pool=None, retry=False)
                    http._down_until.clear()  # not the fast-failure hold: the transport itself, each time
            assert in_flight(http) == 0
        finally:
            await http.aclose()


async def burst(transport: LanedTransport, base: str, held: Held, *, expect: int) -> dict[str, int]:
    """2 lanes' worth of HEADs at once through `transport`; its statistics once `expect` of them arrived."""
    held.gate, held.arrived, held.expect = trio.Event(), trio.Event(), expect

    async def head(n: int) -> None:
        response = await transport.handle_async_request(httpx.Request("HEAD", f"{base}/v{n}"))
        await response.aclose()  # its connection free for the next request (and its lane's slot back)

    async with trio.open_nursery() as nursery:
        for n in range(2 * LANE_CONNECTIONS):
            nursery.start_soon(head, n)
        await held.arrived.wait()
        seen = transport.statistics()
        held.gate.set()
    assert transport.statistics()["in_flight"] == 0
    return seen


async def test_an_https_origin_stays_on_one_lane_until_it_answers_in_http11(tmp_path: Path) -> None:
    async with server(tls=tmp_path) as (base, held):
        assert base.startswith("https://")
        multiplexed = LanedTransport(
            verify=ssl.create_default_context(cafile=tmp_path / "ca.pem"), http2=True
        )
        try:
            with trio.fail_after(DEADLINE):
                # Not heard from yet: every request on the first lane (had the origin answered in HTTP/2,
                # one connection there would carry them all: tests/test_http2.py).
                seen = await burst(multiplexed, base, held, expect=LANE_CONNECTIONS)
                assert seen == {"lanes": 1, "in_flight": 2 * LANE_CONNECTIONS}
                # It answered in HTTP/1.1: now its requests spread, and all reach the server at once.
                assert (await burst(multiplexed, base, held, expect=2 * LANE_CONNECTIONS))["lanes"] >= 2
        finally:
            await multiplexed.aclose()


async def test_plain_http_origins_spread_at_once() -> None:
    async with server() as (base, held):
        for transport in (LanedTransport(verify=True), LanedTransport(verify=True, http2=True)):
            try:
                with trio.fail_after(DEADLINE):
                    assert (await burst(transport, base, held, expect=2 * LANE_CONNECTIONS))["lanes"] >= 2
            finally:
                await transport.aclose()
