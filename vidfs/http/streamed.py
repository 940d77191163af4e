"""Streamed answers (ranged reads): the lean pool's (`LeanStream`, its body read straight off the socket) and
httpx's, as the range reader sees them (`Streamed`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import httpx
import trio

from vidfs.http.wire import Framing, Head, MalformedAnswer, UnsendableRequest

RECEIVE_SIZE = 64 * 1024  # bytes asked of the socket at a time
# Bytes asked of the socket at a time for a body of known length (the socket gives what has arrived, never
# waiting for more): 2,990 reads of 512 MiB over nginx at 0 ms cost 0.05-0.16 user CPU s/GB here, against
# 0.35 with 8,258 reads of 64 KiB and 0.50-0.57 through httpx (bodies only, 4 streams of 8 MiB ranges).
BODY_RECEIVE_SIZE = 1024 * 1024
MAX_BODY_EVENTS = 1 << 40  # bound of a chunked body's loop (each event a read or a part of the body)


class Connection(Protocol):
    """What a body is read from: the connection's stream."""

    stream: trio.abc.Stream


class LeanStream:
    """The answer of `LeanPool.stream`: status, headers, and the body as it arrives.

    Why not httpx for ranged reads: a body read through httpx's `aiter_raw` goes through httpx's and
    httpcore's stream layers and h11, which copies each network read three times (into its receive buffer,
    out of it, and into `bytes`): in a cold read at 20 ms those copies were 6% of the daemon's CPU (perf),
    and the layers' Python more. When the answer says its length, `aiter_raw` gives the socket's reads
    themselves, up to 1 MiB each and never past the body, and the connection is at a message boundary again
    for its next request. A chunked body goes through the parser that read its head
    (`vidfs.http.wire.ChunkedBody`); one that ends with the connection is read to that end. A cold `dd` of
    512 MiB through a mount over nginx on loopback: 375-403 MB/s at 1.6-1.9 user CPU s/GB with 64 KiB reads,
    509-629 MB/s at 0.84-1.04 with these. On a plain connection
    `receive_into` goes one step further: the body lands in the caller's buffers (the block cache's blocks)
    with one `recvmsg_into` each, no `bytes` made per read and none cut into blocks afterwards."""

    __slots__ = (
        "_connection",
        "_head",
        "_head_bytes",
        "_left",
        "_spoiled",
        "_timeout",
        "clean",
        "headers",
        "status_code",
    )

    def __init__(self, connection: Connection, head: Head, rest: bytes, timeout: float) -> None:
        self.status_code = head.status_code
        self.headers = httpx.Headers(head.fields)
        self.clean = False  # the body was read to its end: the connection can serve another request
        self._connection = connection
        self._timeout = timeout
        self._head = head
        self._left: int | None = None  # body bytes still to come, when the length is known
        if head.framing is Framing.NONE:
            self._left = 0
        elif head.framing is Framing.LENGTH:
            self._left = head.length
        # More came than the body, or the answer keeps no connection: the connection is not used again.
        self._spoiled = not head.keep_alive
        if self._left is not None and len(rest) > self._left:
            self._spoiled = True
            rest = rest[: self._left]
        self._head_bytes = rest  # body bytes that came with the head, not yet taken

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._body() if self._left is None else self._counted()

    @property
    def can_receive_into(self) -> bool:
        """Whether `receive_into` works: a body of known length on a plain socket (TLS has no receive into
        buffers of ours)."""
        return self._left is not None and isinstance(self._connection.stream, trio.SocketStream)

    async def receive_into(self, rooms: list[memoryview]) -> int:
        """Receive the body's next bytes straight into `rooms`, in order (one `recvmsg_into` for all of
        them), never past the body's end: how many, at least one."""
        left = self._left
        assert left is not None
        if not left:
            raise httpx.RemoteProtocolError("no body bytes left to receive")
        room = sum(map(len, rooms))
        head = self._take_head_bytes(min(room, left))
        if head:
            return spread(head, rooms)
        if room > left:
            rooms = _clip(rooms, left)
        stream = self._connection.stream
        assert isinstance(stream, trio.SocketStream)
        try:
            with trio.move_on_after(self._timeout) as waited:
                count = (await stream.socket.recvmsg_into(rooms))[0]
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise as_httpx(exc, self._timeout) from exc
        if waited.cancelled_caught:
            raise httpx.ReadTimeout(f"no data within {self._timeout:g}s")
        if not count:
            raise httpx.RemoteProtocolError(f"the connection ended {left} bytes before the body's end")
        self._consumed(count)
        return count

    def _take_head_bytes(self, limit: int) -> bytes:
        """Up to `limit` of the body bytes that arrived with the head."""
        taken = self._head_bytes
        if len(taken) > limit:
            taken, self._head_bytes = taken[:limit], taken[limit:]
        else:
            self._head_bytes = b""
        self._consumed(len(taken))
        return taken

    def _consumed(self, count: int) -> None:
        assert self._left is not None
        self._left -= count
        if not self._left and not self._spoiled:
            self.clean = True  # before the last bytes go: a reader may stop once it has them

    async def _counted(self) -> AsyncIterator[bytes]:
        assert self._left is not None
        head = self._take_head_bytes(self._left)
        if head:
            yield head
        for _ in range(MAX_BODY_EVENTS):
            left = self._left
            if left <= 0:
                break
            data = await self._receive(min(BODY_RECEIVE_SIZE, left))
            if not data:
                raise httpx.RemoteProtocolError(f"the connection ended {left} bytes before the body's end")
            self._consumed(len(data))
            yield data
        if not self._spoiled:
            self.clean = True  # a body of no bytes at all (204, 304, a length of 0)

    async def _body(self) -> AsyncIterator[bytes]:
        """A body without a known length: chunked, or until the connection ends."""
        data, self._head_bytes = self._head_bytes, b""
        chunked = self._head.chunked_body() if self._head.framing is Framing.CHUNKED else None
        for _ in range(MAX_BODY_EVENTS):
            if chunked is None:
                if data:
                    yield data
            else:
                try:
                    parts = chunked.feed(data)
                except MalformedAnswer as exc:
                    raise as_httpx(exc, self._timeout) from exc
                for part in parts:
                    yield part
                if chunked.complete:
                    self.clean = not (self._spoiled or chunked.spoiled)
                    return
            data = await self._receive(RECEIVE_SIZE)
            if not data:
                if chunked is not None:
                    raise httpx.RemoteProtocolError("the server closed the connection before the last chunk")
                return  # the body ends with the connection, which is not used again
        raise httpx.RemoteProtocolError(f"a body of more than {MAX_BODY_EVENTS} parts")

    async def _receive(self, size: int) -> bytes:
        # A scope per wait, never one around a `yield` (the body is an async generator).
        try:
            with trio.move_on_after(self._timeout) as waited:
                data = await self._connection.stream.receive_some(size)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise as_httpx(exc, self._timeout) from exc
        if waited.cancelled_caught:
            raise httpx.ReadTimeout(f"no data within {self._timeout:g}s")
        return data if type(data) is bytes else bytes(data)


def spread(data: bytes | memoryview, rooms: list[memoryview]) -> int:
    """Copy `data` into `rooms` in order, as much as they hold: the bytes copied."""
    source = memoryview(data)
    copied = 0
    for room in rooms:
        if copied == len(source):
            break
        take = min(len(room), len(source) - copied)
        room[:take] = source[copied : copied + take]
        copied += take
    return copied


def _clip(rooms: list[memoryview], total: int) -> list[memoryview]:
    """The first `total` bytes of `rooms`."""
    clipped = []
    for room in rooms:
        if total <= 0:
            break
        clipped.append(room[:total])
        total -= len(clipped[-1])
    return clipped


def as_httpx(exc: BaseException, read_timeout: float) -> Exception:
    """The httpx exception for a failed exchange (the one failure policy classifies and retries those)."""
    if isinstance(exc, trio.TooSlowError):
        return httpx.ReadTimeout(f"no answer within {read_timeout:g}s")
    if isinstance(exc, MalformedAnswer):
        return httpx.RemoteProtocolError(f"a malformed answer: {exc}")
    if isinstance(exc, UnsendableRequest):
        return httpx.LocalProtocolError(f"cannot send this request: {exc}")
    return httpx.ReadError(str(exc.__cause__ or exc) or type(exc).__name__)


class Streamed(Protocol):
    """A streamed answer, from httpx or the lean pool: what the range reader uses of it."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> httpx.Headers: ...
    def aiter_raw(self) -> AsyncIterator[bytes]: ...


@asynccontextmanager
async def httpx_stream(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> AsyncIterator[httpx.Response]:
    response = await client.send(client.build_request(method, url, headers=headers), stream=True)
    try:
        yield response
    finally:
        await response.aclose()
