"""HTTP/1.1 on the wire (`vidfs.http.wire`, httptools' llhttp) and the lean pool's framing over it.

- requests are written as given, and a request HTTP cannot carry (a header value with CR LF, a target with a
  space) is refused before a byte is sent: `test_a_request_is_written_as_given`, `test_header_injection_*`;
- an answer's body is framed as RFC 9112 §6.3 says (HEAD, 1xx, 204, 304: none; Transfer-Encoding's last
  coding; Content-Length; else until the close), and an answer that frames itself twice (the request
  smuggling shapes) or is not HTTP is refused: `test_framing_*`, `test_malformed_heads_are_refused`;
- a chunked body is decoded whole, and bytes after its last chunk spoil the connection:
  `test_a_chunked_body_*`;
- against raw servers on 127.0.0.1: interim 1xx answers are skipped, an HTTP/1.0 answer read to the close is
  whole and its connection not kept, a kept connection serves the next request, a head too large is an
  error: `test_pool_*`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.test_lean import raw_server
from vidfs.http.lean import LeanPool
from vidfs.http.wire import (
    MAX_HEAD_BYTES,
    Framing,
    MalformedAnswer,
    UnsendableRequest,
    encode_request,
    parse_head,
    split_url,
)

DEADLINE = 30.0


def test_a_request_is_written_as_given() -> None:
    fields = [(b"Host", b"example.test:8080"), (b"Accept", b"*/*"), (b"Content-Length", b"2")]
    assert encode_request(b"POST", b"/a/b?c=d%20e", fields, b"{}") == (
        b"POST /a/b?c=d%20e HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    ("method", "target", "field"),
    [
        (b"GET", b"/a", (b"X-Evil", b"v\r\nInjected: 1")),
        (b"GET", b"/a", (b"X-Evil", b"v\nInjected: 1")),
        (b"GET", b"/a", (b"X Evil", b"v")),
        (b"GET", b"/a", (b"X-Evil", b"v\x00")),
        (b"GET", b"/a b", (b"Host", b"h")),
        (b"GET", b"/a\r\nX: 1", (b"Host", b"h")),
        (b"GE T", b"/a", (b"Host", b"h")),
    ],
)
def test_header_injection_and_bad_requests_are_refused(
    method: bytes, target: bytes, field: tuple[bytes, bytes]
) -> None:
    with pytest.raises(UnsendableRequest):
        encode_request(method, target, [field], b"")


def head_of(raw: bytes, *, answers_head: bool = False) -> tuple[object, ...]:
    parsed = parse_head(raw, answers_head=answers_head)
    assert parsed is not None
    head, rest = parsed
    return head.status_code, head.framing, head.length, head.keep_alive, rest


@pytest.mark.parametrize(
    ("raw", "answers_head", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            False,
            (200, Framing.LENGTH, 5, True, b"hello"),
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True, (200, Framing.NONE, None, True, b"")),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, (204, Framing.NONE, None, True, b"")),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            False,
            (304, Framing.NONE, None, True, b""),
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1", False, (100, Framing.NONE, None, True, b"HTTP/1.1")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            False,
            (200, Framing.CHUNKED, None, True, b""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            False,
            (200, Framing.CHUNKED, None, True, b""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            False,
            (200, Framing.UNTIL_CLOSE, None, False, b""),
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nrest", False, (200, Framing.UNTIL_CLOSE, None, False, b"rest")),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            False,
            (200, Framing.LENGTH, 0, False, b""),
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False, (200, Framing.LENGTH, 0, False, b"")),
    ],
)
def test_framing_follows_rfc_9112(raw: bytes, answers_head: bool, expected: tuple[object, ...]) -> None:
    assert head_of(raw, answers_head=answers_head) == expected


def test_framing_waits_for_the_whole_head_and_gives_fields_in_lower_case() -> None:
    raw = (
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/10  \r\n"
        b'ETag: "x"\r\nContent-Length: 2\r\n\r\n'
    )
    for cut in range(1, len(raw)):
        assert parse_head(raw[:cut], answers_head=False) is None
    parsed = parse_head(raw, answers_head=False)
    assert parsed is not None
    assert parsed[0].fields == [
        (b"content-range", b"bytes 0-1/10"),
        (b"etag", b'"x"'),
        (b"content-length", b"2"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        parse_head(raw, answers_head=False)


def test_a_head_too_large_is_refused() -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(MalformedAnswer):
        parse_head(endless, answers_head=False)


def test_a_chunked_body_is_decoded_whole_in_any_pieces() -> None:
    parsed = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", answers_head=False)
    assert parsed is not None
    wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    body = parsed[0].chunked_body()
    got = b"".join(part for byte in range(len(wire)) for part in body.feed(wire[byte : byte + 1]))
    assert got == b"abc0123456789abcdef" and body.complete and not body.spoiled


def test_a_chunked_body_with_bytes_after_its_end_spoils_the_connection() -> None:
    parsed = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", answers_head=False)
    assert parsed is not None
    body = parsed[0].chunked_body()
    assert body.feed(b"2\r\nok\r\n0\r\n\r\nGARBAGE") == [b"ok"]
    assert body.complete and body.spoiled


def test_a_broken_chunk_is_refused() -> None:
    parsed = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", answers_head=False)
    assert parsed is not None
    with pytest.raises(MalformedAnswer):
        parsed[0].chunked_body().feed(b"zz\r\nok\r\n")


# ------------------------------------------------------------------------------------- over a socket
async def requests_of(stream: trio.SocketStream) -> AsyncIterator[bytes]:
    """Each request's head as it arrives on `stream` (bodies none), until the client closes."""
    buffer = b""
    for _ in range(1000):
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        yield head


def lean_pool() -> LeanPool:
    return LeanPool(connect_timeout=5.0, read_timeout=5.0, user_agent="vidfs-test")


async def test_pool_skips_interim_answers_and_keeps_the_connection() -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        async for _request in requests_of(stream):
            await stream.send_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            )
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")

    pool = lean_pool()
    async with raw_server(handler) as base:
        with trio.fail_after(DEADLINE):
            answers = [await pool.request("GET", f"{base}/x") for _ in range(3)]
        await pool.aclose()
    assert [(a.status_code, a.content) for a in answers] == [(200, b"body")] * 3
    assert connections == 1


async def test_pool_reads_an_http10_answer_to_its_close_and_drops_the_connection() -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        async for _request in requests_of(stream):
            await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\nfirst part, ")
            await stream.send_all(b"second part")
            await stream.aclose()
            return

    pool = lean_pool()
    async with raw_server(handler) as base:
        with trio.fail_after(DEADLINE):
            answers = [await pool.request("GET", f"{base}/x") for _ in range(2)]
        stats = pool.statistics()
        await pool.aclose()
    assert [a.content for a in answers] == [b"first part, second part"] * 2
    assert connections == 2 and stats["idle"] == 0


async def test_pool_a_chunked_answer_then_another_request_on_the_same_connection() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        async for request in requests_of(stream):
            seen.append(request.split(b"\r\n")[0])
            await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await stream.send_all(b"6\r\n world\r\n0\r\n\r\n")

    pool = lean_pool()
    async with raw_server(handler) as base:
        with trio.fail_after(DEADLINE):
            first = await pool.request("GET", f"{base}/one")
            second = await pool.request("HEAD", f"{base}/two")
        await pool.aclose()
    assert first.content == b"hello world"
    assert second.status_code == 200 and second.content == b""
    assert seen == [b"GET /one HTTP/1.1", b"HEAD /two HTTP/1.1"] and connections == 1


async def test_pool_a_body_cut_short_is_an_error() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        async for _request in requests_of(stream):
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await stream.aclose()
            return

    pool = lean_pool()
    async with raw_server(handler) as base:
        with trio.fail_after(DEADLINE), pytest.raises(httpx.RemoteProtocolError, match="91 bytes before"):
            await pool.request("GET", f"{base}/x")
        await pool.aclose()


async def test_pool_refuses_a_header_value_with_a_line_break_before_connecting() -> None:
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1

    pool = lean_pool()
    async with raw_server(handler) as base:
        with trio.fail_after(DEADLINE), pytest.raises(httpx.LocalProtocolError):
            await pool.request("GET", f"{base}/x", {"X-Name": "a\r\nInjected: yes"})
        await pool.aclose()
    assert accepted == 0 and pool.statistics()["opened"] == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://example.test:8080/a/b?c=d#frag",
            (("http", "example.test", 8080), "example.test:8080", "/a/b?c=d"),
        ),
        ("https://user:secret@Example.Test/x", (("https", "example.test", 443), "Example.Test", "/x")),
        ("http://example.test?x=1", (("http", "example.test", 80), "example.test", "/?x=1")),
        ("http://example.test", (("http", "example.test", 80), "example.test", "/")),
        ("HTTP://example.test/#only-a-fragment", (("http", "example.test", 80), "example.test", "/")),
    ],
)
def test_a_url_splits_into_origin_host_and_target(url: str, expected: tuple[object, ...]) -> None:
    assert split_url(url) == expected
    assert split_url(url) == expected  # the second time from what the first parsed


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.test/a", httpx.UnsupportedProtocol),
        ("http://example.test:99999999/a", httpx.InvalidURL),
        ("/relative/path", httpx.UnsupportedProtocol),
    ],
)
def test_a_url_that_is_not_http_is_refused(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        split_url(url)
