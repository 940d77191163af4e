"""Ranged bodies received straight into the block cache's blocks (`LeanStream.receive_into`, the block
assembler's `rooms`/`filled`), against real servers on 127.0.0.1 (hypercorn, and a raw trio server that
breaks a body on purpose).

- the assembler gives every block whole and in order, whatever the receives' sizes, whether they come into
  its buffers or as chunks handed over (`add`), mixed: `test_the_assembler_cuts_any_receives_into_blocks`;
- bytes at the wrong offset, or more than its buffers hold, are refused, never misplaced:
  `test_the_assembler_refuses_misplaced_bytes`;
- a body of known length on a plain connection is received into the caller's buffers, with the bytes that
  came with the head first, never past the body, and its connection is used again:
  `test_a_plain_body_is_received_into_given_buffers`; over TLS it is not offered:
  `test_a_tls_body_is_not_received_into_buffers`;
- `read_range` with the assembler as its sink: the blocks equal the file, also when the connection breaks
  mid-block and the read resumes on another one: `test_read_range_into_blocks_resumes_a_broken_body`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from tests.asgi_server import running
from tests.certificates import make_certificates
from tests.test_lean import SIZE, Seen, api_app, raw_server
from vidfs.config.types import HttpSettings
from vidfs.errors import StaleError
from vidfs.http.client import HttpClient
from vidfs.http.streamed import LeanStream
from vidfs.io.assembler import Assembler
from vidfs.io.range_reader import read_range
from vidfs.model import StreamLease

DEADLINE = 60.0
BLOCK = 1000


def content(start: int, length: int) -> bytes:
    """What api_app serves at `start` (the bytes (offset % 251))."""
    return bytes((start + i) % 251 for i in range(length))


def collect(start: int, end: int) -> tuple[Assembler, list[tuple[int, bytes]]]:
    handed: list[tuple[int, bytes]] = []
    return Assembler(start, end, BLOCK, lambda index, block: handed.append((index, bytes(block)))), handed


@pytest.mark.parametrize("seed", range(6))
def test_the_assembler_cuts_any_receives_into_blocks(seed: int) -> None:
    rng = random.Random(seed)
    start, end = 3 * BLOCK, 3 * BLOCK + 7 * BLOCK + rng.randrange(1, BLOCK)  # a short last block
    data = content(start, end - start)
    assembler, handed = collect(start, end)
    position = start
    for _turn in range(10_000):
        if position == end:
            break
        limit = rng.randrange(1, 3 * BLOCK)
        if rng.random() < 0.3:  # handed over as a chunk
            chunk = data[position - start : position - start + limit]
            assembler.add(position, chunk)
            position += len(chunk)
            continue
        rooms = assembler.rooms(position, limit)
        room = sum(map(len, rooms))
        assert 0 < room <= limit
        count = rng.randrange(1, room + 1)  # a receive fills only some of what it was given
        source = memoryview(data)[position - start : position - start + count]
        copied = 0
        for view in rooms:
            take = min(len(view), count - copied)
            view[:take] = source[copied : copied + take]
            copied += take
        assembler.filled(position, count)
        position += count
    assert assembler.position == end
    assert [index for index, _block in handed] == list(range(3, 3 + len(handed)))
    assert b"".join(block for _index, block in handed) == data
    assert all(len(block) == BLOCK for _index, block in handed[:-1])
    assert [(i, bytes(b)) for i, b in assembler.done] == handed


def test_the_assembler_refuses_misplaced_bytes() -> None:
    assembler, handed = collect(0, 2 * BLOCK)
    with pytest.raises(StaleError):
        assembler.rooms(5, 100)  # not where the range stands
    rooms = assembler.rooms(0, 100)
    assert sum(map(len, rooms)) == 100
    with pytest.raises(StaleError):
        assembler.filled(0, 2 * BLOCK + 1)  # more than any buffer given
    with pytest.raises(StaleError):
        assembler.add(0, bytes(2 * BLOCK + 1))  # past the end of the range
    assert handed[:1] == [(0, bytes(BLOCK))]  # what was placed before the refusal is where it belongs


async def test_a_plain_body_is_received_into_given_buffers() -> None:
    seen = Seen()
    async with running(api_app(seen)) as base:
        http = HttpClient()
        try:
            with trio.fail_after(DEADLINE):
                for start in (0, 50_000):
                    headers = {"Range": f"bytes={start}-{start + 9_999}"}
                    async with http.stream("GET", f"{base}/video.mp4", tag="t", headers=headers) as r:
                        assert isinstance(r, LeanStream) and r.can_receive_into
                        into = [bytearray(3_000) for _ in range(4)]  # 12,000 bytes for a body of 10,000
                        got = 0
                        for _turn in range(10_000):
                            if got == 10_000:
                                break
                            views = [memoryview(b) for b in into]
                            rooms = []
                            skip = got
                            for view in views:  # the part not filled yet
                                rooms.append(view[min(skip, len(view)) :])
                                skip = max(0, skip - len(view))
                            got += await r.receive_into([room for room in rooms if len(room)])
                        assert got == 10_000 and r.clean
                    assert bytes(b"".join(into))[:10_000] == content(start, 10_000)
                    assert bytes(b"".join(into))[10_000:] == bytes(2_000)  # never past the body
        finally:
            await http.aclose()
    assert http.statistics()["opened"] == 1 and http.statistics()["reused"] == 1


async def test_a_tls_body_is_not_received_into_buffers(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    async with running(api_app(Seen()), certificate=(cert, key)) as base:
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            with trio.fail_after(DEADLINE):
                async with http.stream(
                    "GET", f"{base}/video.mp4", tag="t", headers={"Range": "bytes=0-9"}
                ) as r:
                    assert isinstance(r, LeanStream) and not r.can_receive_into
                    assert b"".join([chunk async for chunk in r.aiter_raw()]) == content(0, 10)
        finally:
            await http.aclose()


async def test_read_range_into_blocks_resumes_a_broken_body() -> None:
    """The first answer stops 2,500 bytes into an 8,000-byte range (mid-block) and closes; the read goes
    on from there on a new connection, into the same block."""
    requests: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        for _request in range(10):
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buffer += data
            end = buffer.index(b"\r\n\r\n") + 4
            requests.append(bytes(buffer[:end]).decode().lower())
            del buffer[:end]
            first = 0 if len(requests) == 1 else 2_500
            body = content(first, 8_000 - first)
            answer = (
                f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
                f'Content-Range: bytes {first}-7999/{SIZE}\r\nETag: "e"\r\n\r\n'
            ).encode()
            if len(requests) == 1:
                await stream.send_all(answer + body[:1_000])  # body bytes with the head
                await stream.send_all(body[1_000:2_500])
                return  # and the connection closes mid-body
            await stream.send_all(answer + body)

    async with raw_server(handler) as base:
        http = HttpClient()
        assembler, handed = collect(0, 8_000)
        try:
            with trio.fail_after(DEADLINE):
                lease = StreamLease(url=f"{base}/video.mp4")
                await read_range(http, lease, 0, 8_000, tag="t:storage", etag=None, size=SIZE, sink=assembler)
        finally:
            await http.aclose()
    assert len(requests) == 2
    assert "range: bytes=0-7999" in requests[0] and "range: bytes=2500-7999" in requests[1]
    assert [index for index, _block in handed] == list(range(8))
    assert b"".join(block for _index, block in handed) == content(0, 8_000)
