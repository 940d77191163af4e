"""The lean path of small requests (`vidfs.http.lean`): the size probes' HEADs (`HttpClient.head`) and the
API calls (`HttpClient.request`, pool "api"), against real servers on 127.0.0.1: hypercorn (HTTPS with a CA
made here, or plain HTTP), and raw trio TCP servers where a test needs a server that misbehaves on purpose
(closes a kept-alive connection, never answers, answers garbage).

- TLS, verified against the configured CA, HTTP/1.1, connections kept alive and reused across rounds of
  concurrent HEADs: `test_heads_over_tls_reuse_their_connections`;
- without the CA the handshake fails as a TLS failure, said so, and not retried: `test_untrusted_certificate`;
- a kept-alive connection the server closed while idle costs one more connection, not an error:
  `test_connection_closed_while_idle_is_replaced`;
- no answer ends in a timeout error; a refused connection in an error, then fast failures:
  `test_silent_server_times_out`, `test_refused_connection`;
- a malformed answer is an error and its connection is not kept: `test_malformed_answer`;
- redirects are followed, credentials only on the first origin: `test_redirect_keeps_credentials_home`;
- 429 with Retry-After is retried by the policy when asked (`retry=True`), and returned as an error with
  its status when not: `test_congested_head`;
- API calls over TLS: query, JSON bodies, a Basic-auth login, a gzip-encoded answer, all over kept-alive
  HTTP/1.1 connections: `test_api_calls_over_tls`; sent by the lean pool itself, they carry the query,
  body and headers httpx would have built: `test_api_calls_are_encoded_as_httpx_would`; ranged reads stay
  on httpx's pool:
  `test_ranged_reads_over_tls`;
- a POST is never sent on a kept-alive connection the server closed (it could not be sent again):
  `test_a_post_is_not_sent_on_a_connection_the_server_closed`;
- 40 requests at once all reach a server that holds them (nothing queued behind another), a second round
  rides the same connections, and nothing stays counted in flight after answers and failures:
  `test_many_requests_at_once_keep_their_connections`, `test_nothing_stays_in_flight`.
"""

from __future__ import annotations

import functools
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.asgi_server import Receive, Send, lifespan, running
from tests.certificates import make_certificates
from vidfs.config.types import HttpSettings
from vidfs.errors import RemoteIOError, RemoteTimeoutError, UnreachableError
from vidfs.http.client import HttpClient, _query

SIZE = 123_456
DEADLINE = 60.0


@dataclass
class Seen:
    """(method, path, HTTP version, client port, authorization header) per request."""

    requests: list[tuple[str, str, str, int, str]] = field(default_factory=list)


def make_app(seen: Seen, routes: dict[str, tuple[int, list[tuple[bytes, bytes]]]] | None = None) -> Any:
    """Every path is a file of SIZE bytes with an ETag, unless `routes` gives it (status, headers)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode()
        seen.requests.append(
            (scope["method"], scope["path"], scope["http_version"], scope["client"][1], auth)
        )
        status, answer = (routes or {}).get(scope["path"], (200, []))
        if status == 200:
            answer = [(b"content-length", str(SIZE).encode()), (b"etag", b'"v1"'), *answer]
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": b""})

    return app


@asynccontextmanager
async def raw_server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[str]:
    """http://127.0.0.1:PORT of a TCP server that hands each connection to `handler`, stopped on exit."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream, buffer: bytearray) -> bool:
    """Read up to the end of one request's head into `buffer` (consumed); False at the end of the stream."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(4096)
        if not data:
            return False
        buffer += data
    del buffer[: buffer.index(b"\r\n\r\n") + 4]
    return True


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 42\r\nETag: "e"\r\n\r\n'


async def test_heads_over_tls_reuse_their_connections(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    seen = Seen()
    async with running(make_app(seen), certificate=(cert, key)) as base:
        assert base.startswith("https://")
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            answers: list[tuple[int, str | None, str | None]] = []

            async def head(n: int) -> None:
                answer = await http.head(f"{base}/video-{n}.mp4", tag="t:storage")
                answers.append((answer.status_code, answer.header("Content-Length"), answer.header("etag")))

            with trio.fail_after(DEADLINE):
                for _round in range(3):
                    async with trio.open_nursery() as nursery:
                        for n in range(20):
                            nursery.start_soon(head, n)
        finally:
            await http.aclose()
    assert answers == [(200, str(SIZE), '"v1"')] * 60
    assert {version for _m, _p, version, _port, _a in seen.requests} == {"1.1"}
    ports = {port for *_rest, port, _a in seen.requests}
    stats = http.statistics()
    # 20 at once need at most 20 connections; the later rounds ride the ones the first opened.
    assert len(ports) <= 20 and stats["opened"] == len(ports)
    assert stats["reused"] >= 40


async def test_untrusted_certificate(tmp_path: Path) -> None:
    _ca, cert, key = make_certificates(tmp_path)
    seen = Seen()
    async with running(make_app(seen), certificate=(cert, key)) as base:
        http = HttpClient(HttpSettings(retries=3))
        try:
            with trio.fail_after(DEADLINE), pytest.raises(RemoteIOError) as caught:
                await http.head(f"{base}/video.mp4", tag="t:storage")
        finally:
            await http.aclose()
    assert "TLS failure" in str(caught.value)
    assert seen.requests == []
    assert http.stats.counters.get("http.retries", 0) == 0  # a certificate does not get better by waiting


async def test_connection_closed_while_idle_is_replaced() -> None:
    """The server answers one HEAD per connection and then closes it without saying so (allowed: a server
    may close an idle connection at any time). Every HEAD still gets its answer."""
    connections = 0

    async def one_answer(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        if await read_request(stream, bytearray()):
            await stream.send_all(OK)
        await stream.aclose()

    async with raw_server(one_answer) as base:
        http = HttpClient(HttpSettings(retries=0))
        try:
            with trio.fail_after(DEADLINE):
                sizes = [
                    (await http.head(f"{base}/v{n}", tag="t:storage")).header("content-length")
                    for n in range(4)
                ]
        finally:
            await http.aclose()
    assert sizes == ["42"] * 4
    assert connections == 4
    assert http.statistics()["stale"] == 3


async def test_silent_server_times_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await read_request(stream, bytearray())
        await trio.sleep_forever()

    async with raw_server(silent) as base:
        http = HttpClient(HttpSettings(read_timeout=0.3, retries=1, backoff_base=0.01))
        try:
            with trio.fail_after(DEADLINE), pytest.raises(RemoteTimeoutError):
                await http.head(f"{base}/video.mp4", tag="t:storage")
        finally:
            await http.aclose()
    assert http.stats.counters.get("http.retries", 0) == 1


async def test_an_answer_slower_in_all_than_the_read_timeout_arrives_whole() -> None:
    """The read timeout is for each wait, not the whole answer: a body that comes in parts, each well within
    it, 2.4 read timeouts in all, is read whole; the same server stalling past it is a timeout."""
    parts = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10]
    pause = {"s": 0.3}

    async def trickling(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while await read_request(stream, buffer):
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
            for part in parts:
                await trio.sleep(pause["s"])  # the server's pace, the point of the test
                await stream.send_all(part)

    async with raw_server(trickling) as base:
        http = HttpClient(HttpSettings(read_timeout=0.5, retries=0))
        try:
            with trio.fail_after(DEADLINE):
                response = await http.request("GET", f"{base}/slow.json", tag="t")
                assert response.content == b"".join(parts)
                pause["s"] = 0.8
                with pytest.raises(RemoteTimeoutError):
                    await http.request("GET", f"{base}/slow.json", tag="t")
        finally:
            await http.aclose()


async def test_refused_connection() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]  # bound, never listening: connections are refused
    http = HttpClient(HttpSettings(retries=1, backoff_base=0.01))
    try:
        with trio.fail_after(DEADLINE):
            with pytest.raises(RemoteIOError) as first:
                await http.head(f"http://127.0.0.1:{port}/v", tag="t:storage")
            assert not isinstance(first.value, UnreachableError)
            with pytest.raises(UnreachableError):  # held down a few seconds: fails at once
                await http.head(f"http://127.0.0.1:{port}/v", tag="t:storage")
    finally:
        listener.close()
        await http.aclose()


async def test_malformed_answer() -> None:
    connections = 0

    async def garbage_then_good(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        buffer = bytearray()
        while await read_request(stream, buffer):
            await stream.send_all(b"NONSENSE\r\n\r\n" if connections == 1 else OK)

    async with raw_server(garbage_then_good) as base:
        http = HttpClient(HttpSettings(retries=0))
        try:
            with trio.fail_after(DEADLINE):
                with pytest.raises(RemoteIOError) as caught:
                    await http.head(f"{base}/v", tag="t:storage")
                answer = await http.head(f"{base}/v", tag="t:storage")
        finally:
            await http.aclose()
    assert "malformed" in str(caught.value)
    assert answer.header("content-length") == "42"
    assert connections == 2  # the broken connection was not reused


async def test_redirect_keeps_credentials_home(tmp_path: Path) -> None:
    seen_home, seen_away = Seen(), Seen()
    async with running(make_app(seen_away)) as away:
        routes = {
            "/moved": (302, [(b"location", b"/here")]),
            "/elsewhere": (307, [(b"location", f"{away}/there?sig=1".encode())]),
        }
        async with running(make_app(seen_home, routes)) as home:
            http = HttpClient(HttpSettings())
            try:
                with trio.fail_after(DEADLINE):
                    same = await http.head(
                        f"{home}/moved", tag="t:storage", headers={"Authorization": "Bearer x"}
                    )
                    off = await http.head(
                        f"{home}/elsewhere", tag="t:storage", headers={"Authorization": "Bearer x"}
                    )
            finally:
                await http.aclose()
    assert same.status_code == off.status_code == 200
    assert off.url == f"{away}/there?sig=1"
    assert [(p, a) for _m, p, _v, _port, a in seen_home.requests] == [
        ("/moved", "Bearer x"),
        ("/here", "Bearer x"),
        ("/elsewhere", "Bearer x"),
    ]
    assert [(p, a) for _m, p, _v, _port, a in seen_away.requests] == [("/there", "")]


async def test_congested_head() -> None:
    requests = 0

    async def busy_once(stream: trio.SocketStream) -> None:
        nonlocal requests
        buffer = bytearray()
        while await read_request(stream, buffer):
            requests += 1
            if requests in (1, 3):
                await stream.send_all(b"HTTP/1.1 429 Too Many\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n")
            else:
                await stream.send_all(OK)

    async with raw_server(busy_once) as base:
        http = HttpClient(HttpSettings(backoff_base=0.01))
        try:
            with trio.fail_after(DEADLINE):
                retried = await http.head(f"{base}/v", tag="t:storage", retry=True)
                with pytest.raises(RemoteIOError) as refused:
                    await http.head(f"{base}/v", tag="t:storage", retry=False)
        finally:
            await http.aclose()
    assert retried.status_code == 200 and requests == 3
    assert refused.value.status == 429


# ------------------------------------------------------------------------------------------ API calls
def api_app(seen: Seen, arrived: trio.Event | None = None) -> Any:
    """/api/items?page=N: JSON telling the page and the Authorization seen; /api/login (POST): the JSON body
    back; /api/big: a gzip-encoded JSON answer; /api/list: a JSON array in many pieces, the last one sent
    only once `arrived` is set; /api/half: SIZE bytes with their length, the second half sent only then;
    /api/gone: 404 with a JSON error; anything else: a file of SIZE bytes
    (ranged GETs too)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode()
        path = scope["path"]
        seen.requests.append((scope["method"], path, scope["http_version"], scope["client"][1], auth))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, extra = 200, []
        if path == "/api/list" and arrived is not None:
            await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
            for piece in LIST_PIECES:
                if piece is LIST_PIECES[-1]:
                    await arrived.wait()  # the client must have had the pieces before it
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/api/half" and arrived is not None:  # a known length, its second half held back
            content = bytes(i % 251 for i in range(SIZE))
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % SIZE)],
            }
            await send(start)
            await send({"type": "http.response.body", "body": content[: SIZE // 2], "more_body": True})
            await arrived.wait()
            await send({"type": "http.response.body", "body": content[SIZE // 2 :]})
            return
        if path == "/api/gone":
            status, content = 404, b'{"detail": "no such thing"}'
        elif path == "/api/items":
            content = json.dumps({"query": scope["query_string"].decode(), "auth": auth}).encode()
        elif path == "/api/login":
            content = json.dumps({"got": json.loads(body), "auth": auth}).encode()
        elif path == "/api/echo":
            content = json.dumps(
                {
                    "query": scope["query_string"].decode(),
                    "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                    "body": body.decode(),
                }
            ).encode()
        elif path == "/api/big":
            content = gzip.compress(json.dumps({"items": list(range(5000))}).encode())
            extra = [(b"content-encoding", b"gzip")]
        else:
            start, end = 0, SIZE - 1
            ranged = headers.get(b"range", b"").decode()
            if ranged.startswith("bytes="):
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                status, start, end = 206, int(first), min(int(last or SIZE - 1), SIZE - 1)
                extra = [(b"content-range", f"bytes {start}-{end}/{SIZE}".encode())]
            content = bytes((start + i) % 251 for i in range(end - start + 1))
        fields = [
            (b"content-length", str(len(content)).encode()),
            (b"x-protocol", scope["http_version"].encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": fields + extra})
        await send({"type": "http.response.body", "body": content})

    return app


LIST_PIECES = [b"[", *(json.dumps({"id": n, "pad": "x" * 100}).encode() + b"," for n in range(99)), b"99]"]


@dataclass
class Sink:
    writes: list[bytes] = field(default_factory=list)
    arrived: trio.Event | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        if self.arrived is not None and len(self.writes) > 1:
            self.arrived.set()


async def test_a_sink_takes_an_answer_as_it_arrives() -> None:
    """`sink_for`: the body of a 2xx answer goes to the caller's sink while it arrives, decoded (gzip too);
    an error's body is read whole into the response; a client with a transport of its own (not the lean
    path) writes the whole body to the sink. The server sends the last piece of /api/list only once the
    sink has had two writes: a client that read the whole answer first would wait for ever (the deadline)."""
    arrived = trio.Event()
    sinks: list[tuple[int, Sink]] = []

    def sink_for(status: int, fields: list[tuple[bytes, bytes]]) -> Sink | None:
        if not 200 <= status < 300:
            return None
        sinks.append((status, Sink(arrived=arrived)))
        return sinks[-1][1]

    async with running(api_app(Seen(), arrived)) as base:
        http = HttpClient()
        try:
            with trio.fail_after(DEADLINE):
                listed = await http.request("GET", f"{base}/api/list", tag="t:api", sink_for=sink_for)
                gzipped = await http.request("GET", f"{base}/api/big", tag="t:api", sink_for=sink_for)
                gone = await http.request("GET", f"{base}/api/gone", tag="t:api", sink_for=sink_for)
        finally:
            await http.aclose()
    (_, streamed), (_, decoded) = sinks
    assert listed.status_code == 200 and listed.content == b""
    assert len(streamed.writes) > 2 and b"".join(streamed.writes) == b"".join(LIST_PIECES)
    assert json.loads(b"".join(decoded.writes)) == {"items": list(range(5000))} and gzipped.content == b""
    assert gone.status_code == 404 and gone.json() == {"detail": "no such thing"} and len(sinks) == 2

    body = b"".join(LIST_PIECES)
    elsewhere = HttpClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    try:
        answer = await elsewhere.request("GET", "http://127.0.0.1:9/api/list", tag="t:api", sink_for=sink_for)
    finally:
        await elsewhere.aclose()
    assert answer.content == b"" and sinks[-1][1].writes == [body]


async def test_api_calls_over_tls(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    seen = Seen()
    async with running(api_app(seen), certificate=(cert, key)) as base:
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            pages: dict[int, Any] = {}

            async def page(n: int) -> None:
                response = await http.request(
                    "GET",
                    f"{base}/api/items",
                    tag="t:api",
                    params={"page": n},
                    headers={"Authorization": "T"},
                )
                assert response.status_code == 200 and response.http_version == "HTTP/1.1"
                pages[n] = response.json()

            with trio.fail_after(DEADLINE):
                for _round in range(2):
                    async with trio.open_nursery() as nursery:
                        for n in range(16):
                            nursery.start_soon(page, n)
                login = await http.request(
                    "POST", f"{base}/api/login", tag="t:api", json={"user": "ü"}, auth=("me", "secret")
                )
                big = await http.request("GET", f"{base}/api/big", tag="t:api")
        finally:
            await http.aclose()
    assert pages == {n: {"query": f"page={n}", "auth": "T"} for n in range(16)}
    assert login.status_code == 200 and login.json() == {"got": {"user": "ü"}, "auth": "Basic bWU6c2VjcmV0"}
    assert big.json() == {"items": list(range(5000))}  # decoded from gzip
    assert {version for _m, _p, version, _port, _a in seen.requests} == {"1.1"}
    ports = {port for *_rest, port, _a in seen.requests}
    assert len(ports) <= 16 and http.statistics()["opened"] == len(ports)  # the second round reused them


async def test_ranged_reads_over_tls_share_one_kept_connection(tmp_path: Path) -> None:
    """Ranged reads go on the lean pool too: a body read to its end gives its connection back."""
    ca, cert, key = make_certificates(tmp_path)
    seen = Seen()
    async with running(api_app(seen), certificate=(cert, key)) as base:
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            with trio.fail_after(DEADLINE):
                for start in (0, 40_000, SIZE - 10):
                    headers = {"Range": f"bytes={start}-{start + 99_999}"}
                    async with http.stream("GET", f"{base}/video.mp4", tag="t:storage", headers=headers) as r:
                        body = b"".join([chunk async for chunk in r.aiter_raw()])
                        assert r.status_code == 206
                        assert r.headers["content-range"] == f"bytes {start}-{start + len(body) - 1}/{SIZE}"
                    assert body == bytes((start + i) % 251 for i in range(min(100_000, SIZE - start)))
        finally:
            await http.aclose()
    assert {version for _m, _p, version, _port, _a in seen.requests} == {"1.1"}
    assert len({port for *_rest, port, _a in seen.requests}) == 1
    assert http.statistics()["opened"] == 1 and http.statistics()["reused"] == 2


async def test_a_read_off_the_lean_path_goes_through_httpx_made_when_first_needed(tmp_path: Path) -> None:
    """A URL the lean path does not carry (here an `@` in its path) is read through httpx's pool, made at that
    first read, verified against the configured CA; a client that never needed it closes without it."""
    ca, cert, key = make_certificates(tmp_path)
    unused = HttpClient(HttpSettings(ca_bundle=ca))
    await unused.aclose()
    assert unused._httpx is None
    seen = Seen()
    async with running(api_app(seen), certificate=(cert, key)) as base:
        http = HttpClient(HttpSettings(ca_bundle=ca))
        assert http._httpx is None
        try:
            with trio.fail_after(DEADLINE):
                headers = {"Range": "bytes=10-109"}
                async with http.stream("GET", f"{base}/at@home.mp4", tag="t:storage", headers=headers) as r:
                    body = b"".join([chunk async for chunk in r.aiter_raw()])
                    assert r.status_code == 206
            assert body == bytes((10 + i) % 251 for i in range(100))
            assert http._httpx is not None and http.statistics()["opened"] == 0  # not on the lean pool
        finally:
            await http.aclose()
    assert [path for _m, path, *_rest in seen.requests] == ["/at@home.mp4"]


async def test_a_body_left_half_read_closes_its_connection() -> None:
    """Bytes still on their way must never reach the next request: that connection is not used again."""
    seen, arrived = Seen(), trio.Event()
    async with running(api_app(seen, arrived)) as base:
        http = HttpClient()
        try:
            with trio.fail_after(DEADLINE):
                async with http.stream("GET", f"{base}/api/half", tag="t") as r:
                    first = await anext(r.aiter_raw())  # and no more of it
                arrived.set()
                headers = {"Range": "bytes=5-14"}
                async with http.stream("GET", f"{base}/video.mp4", tag="t", headers=headers) as r:
                    small = b"".join([chunk async for chunk in r.aiter_raw()])
        finally:
            await http.aclose()
    assert 0 < len(first) <= SIZE // 2 and first == bytes(i % 251 for i in range(len(first)))
    assert small == bytes((5 + i) % 251 for i in range(10))
    assert http.statistics()["opened"] == 2 and len({port for *_r, port, _a in seen.requests}) == 2


async def test_a_chunked_body_streams_whole_and_keeps_its_connection() -> None:
    """Without a length the body still goes through h11: every piece, in order, and the connection kept."""
    arrived = trio.Event()
    arrived.set()
    async with running(api_app(Seen(), arrived)) as base:
        http = HttpClient()
        bodies = []
        try:
            with trio.fail_after(DEADLINE):
                for _round in range(2):
                    async with http.stream("GET", f"{base}/api/list", tag="t") as r:
                        assert "content-length" not in r.headers
                        bodies.append(b"".join([chunk async for chunk in r.aiter_raw()]))
        finally:
            await http.aclose()
    assert bodies == [b"".join(LIST_PIECES)] * 2
    assert http.statistics()["opened"] == 1


# ------------------------------------------------------------------------------------- many at once
AT_ONCE = 40


@dataclass
class Held:
    """The server's side: requests waiting, the ports they came from, and the gate that lets them go."""

    waiting: int = 0
    most_waiting: int = 0
    ports: list[int] = field(default_factory=list)
    gate: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)
    expect: int = AT_ONCE


def held_app(held: Held) -> Any:
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


async def a_round(http: HttpClient, base: str, held: Held) -> list[str]:
    """AT_ONCE requests at once, HEADs and API calls: let go only once the server holds them all; the ports
    they answer from."""
    held.gate, held.arrived, held.expect = trio.Event(), trio.Event(), AT_ONCE
    answered: list[str] = []

    async def head(n: int) -> None:
        answer = await http.head(f"{base}/video-{n}.mp4", tag="t:storage")
        assert answer.status_code == 200 and answer.header("content-length") == "1000"
        answered.append(answer.header("x-client-port") or "")

    async def call(n: int) -> None:
        response = await http.request("GET", f"{base}/api/{n}", tag="t:api")
        assert response.status_code == 200 and response.content == b"x" * 1000
        answered.append(response.headers["x-client-port"])

    async with trio.open_nursery() as nursery:
        for n in range(AT_ONCE):
            nursery.start_soon(head if n % 2 else call, n)
        # Waiting on a condition (the deadline only guards a hang): a pool queueing requests would hold some
        # of them back, and the server would never see them all at once.
        with trio.move_on_after(DEADLINE) as waited:
            await held.arrived.wait()
        assert not waited.cancelled_caught, (
            f"only {held.most_waiting} of {AT_ONCE} requests ever arrived together"
        )
        assert http.statistics()["in_flight"] == AT_ONCE
        held.gate.set()
    return answered


async def test_many_requests_at_once_keep_their_connections() -> None:
    held = Held()
    async with running(held_app(held), http11_only=True, keep_alive=DEADLINE) as base:
        # An API window as wide as the round (it starts at max_connections_per_host).
        http = HttpClient(HttpSettings(max_connections_per_host=AT_ONCE, max_api_requests_per_host=AT_ONCE))
        try:
            with trio.fail_after(DEADLINE * 3):
                first = await a_round(http, base, held)
                assert len(first) == AT_ONCE and len(set(first)) == AT_ONCE  # HTTP/1.1: a connection each
                assert http.statistics()["in_flight"] == 0
                second = await a_round(http, base, held)
        finally:
            await http.aclose()
    assert set(second) == set(first), "the second round opened new connections"
    assert len(held.ports) == 2 * AT_ONCE
    assert http.statistics()["in_flight"] == 0


async def test_nothing_stays_in_flight() -> None:
    held = Held()
    held.gate.set()
    async with running(held_app(held), http11_only=True) as base:
        http = HttpClient(HttpSettings(retries=0))
        try:
            with trio.fail_after(DEADLINE):
                for _ in range(3):
                    assert (await http.request("GET", f"{base}/a.mp4", tag="t:api")).content == b"x" * 1000
                with socket.socket() as unused:  # a port nobody listens on: connections refused
                    unused.bind(("127.0.0.1", 0))
                    refused = f"http://127.0.0.1:{unused.getsockname()[1]}/c.mp4"
                for _ in range(3):
                    with pytest.raises(RemoteIOError):
                        await http.head(refused, tag="t:storage", retry=False)
                    with pytest.raises(RemoteIOError):
                        await http.request("GET", refused, tag="t:api", retry=False)
                    http._down_until.clear()  # not the fast-failure hold: the pool itself, each time
        finally:
            await http.aclose()
    assert http.statistics()["in_flight"] == 0


async def test_a_post_is_not_sent_on_a_connection_the_server_closed() -> None:
    """A POST (VALT's record list, a login) may not be sent twice, so a kept-alive connection the server
    closed while idle must be noticed before it is sent, not after: every POST here gets its answer."""
    connections = 0
    closed = trio.Event()

    async def one_answer(stream: trio.SocketStream) -> None:
        nonlocal connections, closed
        connections += 1
        buffer = bytearray()
        if await read_request(stream, buffer):
            while len(buffer) < 7:  # the JSON body {"a":1}
                buffer += await stream.receive_some(4096)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await stream.aclose()
        closed.set()

    async with raw_server(one_answer) as base:
        http = HttpClient(HttpSettings(retries=0))
        try:
            with trio.fail_after(DEADLINE):
                for _ in range(3):
                    closed = trio.Event()
                    answer = await http.request("POST", f"{base}/records", tag="t:api", json={"a": 1})
                    assert answer.status_code == 200
                    await closed.wait()  # the server has closed this connection: the next POST must see it
        finally:
            await http.aclose()
    assert connections == 3
    assert http.statistics()["stale"] == 0  # noticed before sending, not by a failed exchange


async def test_api_calls_are_encoded_as_httpx_would() -> None:
    seen = Seen()
    async with running(api_app(seen)) as base:
        http = HttpClient()
        url = f"{base}/api/echo?a=1&page=0&q=x%20y"
        params = {"page": 5, "flag": True, "empty": None, "text": "ü &="}
        try:
            with trio.fail_after(DEADLINE):
                got = await http.request(
                    "GET", url, tag="t:api", params=params, headers={"Accept": "application/json"}
                )
                posted = await http.request("POST", f"{base}/api/echo", tag="t:api", json={"n": [1, "ü"]})
                empty = await http.request("POST", f"{base}/api/echo", tag="t:api")
        finally:
            await http.aclose()
    expected = httpx.URL(url).copy_merge_params(params)
    answer = got.json()
    assert answer["query"] == expected.query.decode()
    assert str(got.url) == str(expected)  # made when asked for: a redirect's Location is joined to it
    names = [name for name, _value in answer["headers"]]
    assert names.count("accept") == 1 and dict(answer["headers"])["accept"] == "application/json"
    assert dict(answer["headers"])["accept-encoding"] == httpx.AsyncClient().headers["accept-encoding"]
    sent = posted.json()
    assert sent["body"] == '{"n":[1,"ü"]}' and dict(sent["headers"])["content-type"] == "application/json"
    assert dict(empty.json()["headers"])["content-length"] == "0"  # a POST without a body says so
    assert http.statistics()["opened"] == 1  # all on the lean pool's one kept-alive connection


@pytest.mark.parametrize(
    ("query", "params"),
    [("", {"a": True}), ("", {"a": 1}), ("x=1", {"b": "c d"}), ("", {"l": [1, 2]}), ("", {"t": None})],
)
def test_an_api_call_s_query_is_encoded_as_httpx_encodes_it(query: str, params: dict[str, object]) -> None:
    """Encoded once per (query, params) and reused: True and 1 stay apart ("true", "1"), lists still work."""
    expected = str(httpx.QueryParams(query).merge(params) if query else httpx.QueryParams(params))
    assert _query(query, params) == expected
    assert _query(query, params) == expected  # the remembered one
    assert (_query("", {"flag": True}), _query("", {"flag": 1})) == ("flag=true", "flag=1")
