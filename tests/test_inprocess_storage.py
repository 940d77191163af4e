"""Range reads and lease refusals, in process: `read_range` and `RemoteFile` against an `httpx.MockTransport`
storage that serves one blob with Range/ETag and misbehaves on demand.

What must hold: only provably right bytes are returned (206 whose Content-Range starts where we asked, 200
with the slice cut out), a file that changed is ESTALE (ETag, size, 416 before the end, If-Range refused), a
cut body resumes from the bytes received, 429/5xx are retried within the budget, and a refused lease
(401/403/404/410) is renewed once, then is what the failure policy says (EACCES, ENOENT).
"""

from __future__ import annotations

import errno
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import httpx
import pytest

from vidfs.config.types import HttpSettings
from vidfs.errors import RemoteIOError, StaleError, to_errno
from vidfs.http.client import HttpClient
from vidfs.io.leases import Resolver
from vidfs.io.range_reader import LeaseRefused, read_range
from vidfs.io.remote_file import RemoteFile
from vidfs.model import StreamLease, Video
from vidfs.providers.base import Provider
from vidfs.stats import Stats

BLOB = bytes(range(256)) * 64  # 16 KiB
ETAG = '"v1"'
URL = "http://127.0.0.1:8001/blob"
RETRIES = 3
Fault = Callable[[httpx.Request], httpx.Response | None]  # None: answer normally


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    """A response whose body is streamed, as from a socket (a `content=` body would arrive pre-read)."""
    headers = {**(headers or {}), "Content-Length": str(len(body))}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


class Storage:
    """Serves BLOB with Range and ETag; each queued fault answers one request instead."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.ranges: list[str] = []  # the Range header of every request, in order
        self.data = BLOB
        self.etag = ETAG

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("Range", ""))
        if self.faults:
            answer = self.faults.pop(0)(request)
            if answer is not None:
                return answer
        return self.serve(request)

    def serve(self, request: httpx.Request, *, body_limit: int | None = None) -> httpx.Response:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("Range", ""))
        headers = {"ETag": self.etag}
        if match is None:
            return answer(200, headers, self.data)
        first, last = int(match[1]), min(int(match[2]), len(self.data) - 1)
        if first >= len(self.data):
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(self.data)}"})
        body = self.data[first : last + 1][:body_limit]
        headers["Content-Range"] = f"bytes {first}-{last}/{len(self.data)}"
        return answer(206, headers, body)


@pytest.fixture
async def world() -> AsyncIterator[tuple[HttpClient, Storage]]:
    storage = Storage()
    http = HttpClient(
        HttpSettings(retries=RETRIES, backoff_base=0.001, backoff_cap=0.002),
        Stats(),
        transport=httpx.MockTransport(storage),
    )
    try:
        yield http, storage
    finally:
        await http.aclose()


async def _read(
    http: HttpClient, start: int, end: int, *, etag: str | None = ETAG, size: int = len(BLOB)
) -> bytes:
    result = await read_range(http, StreamLease(URL), start, end, tag="t", etag=etag, size=size)
    return result.data


# ---------------------------------------------------------------------------------------- range reads
async def test_a_206_gives_exactly_the_bytes_asked_for(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    assert await _read(http, 1000, 3000) == BLOB[1000:3000]
    assert storage.ranges == ["bytes=1000-2999"]


async def test_a_server_ignoring_range_gives_the_slice_cut_out(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    storage.faults.append(lambda request: answer(200, {"ETag": ETAG}, BLOB))
    assert await _read(http, 5000, 5100) == BLOB[5000:5100]
    assert http.stats.counters["range.ignored"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        lambda r: answer(206, {"ETag": '"v2"', "Content-Range": "bytes 0-9/16384"}, b"x" * 10),
        lambda r: answer(206, {"ETag": ETAG, "Content-Range": "bytes 0-9/99999"}, b"x" * 10),
        lambda r: httpx.Response(416, headers={"Content-Range": "bytes */100"}),  # shrank
        lambda r: answer(200, {}, b"y" * len(BLOB)),  # If-Range refused, no ETag told
        lambda r: answer(200, {"ETag": ETAG}, b"y" * 10),  # another length
    ],
    ids=["etag", "total", "416-shrank", "if-range", "200-length"],
)
async def test_a_changed_file_is_estale(world: tuple[HttpClient, Storage], fault: Fault) -> None:
    http, storage = world
    storage.faults.append(fault)
    with pytest.raises(StaleError) as info:
        await _read(http, 0, 10)
    assert to_errno(info.value) == errno.ESTALE
    assert storage.ranges == ["bytes=0-9"]  # no retry: a changed file is not a transient failure


async def test_if_range_is_sent_once_the_etag_is_known(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    seen: list[str | None] = []

    def spy(request: httpx.Request) -> None:
        seen.append(request.headers.get("If-Range"))

    storage.faults += [spy, spy]
    first = await read_range(http, StreamLease(URL), 0, 10, tag="t", etag=None, size=None)
    assert first.etag == ETAG and first.total == len(BLOB)
    await _read(http, 10, 20)
    assert seen == [None, ETAG]


async def test_416_at_the_end_is_the_end_of_the_file(world: tuple[HttpClient, Storage]) -> None:
    http, _ = world
    assert await _read(http, len(BLOB), len(BLOB) + 100) == b""
    assert await _read(http, len(BLOB) - 4, len(BLOB) + 100) == BLOB[-4:]


async def test_a_cut_body_resumes_from_the_bytes_received(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    storage.faults.append(lambda request: storage.serve(request, body_limit=700))
    assert await _read(http, 100, 2100) == BLOB[100:2100]
    assert storage.ranges == ["bytes=100-2099", "bytes=800-2099"]


async def test_a_wrong_content_range_is_refused_and_asked_again(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    wrong = {"ETag": ETAG, "Content-Range": "bytes 7-16/16384"}
    storage.faults.append(lambda request: answer(206, wrong, BLOB[7:17]))
    assert await _read(http, 0, 10) == BLOB[:10]
    assert len(storage.ranges) == 2 and http.stats.counters["range.retries"] == 1


async def test_429_and_5xx_are_retried_then_eio(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    storage.faults += [
        lambda request: httpx.Response(503),
        lambda request: httpx.Response(429, headers={"Retry-After": "0"}),
    ]
    assert await _read(http, 0, 10) == BLOB[:10]
    storage.faults += [lambda request: httpx.Response(500)] * (RETRIES + 1)
    with pytest.raises(RemoteIOError, match=rf"bytes 0-9: HTTP 500 \(after {RETRIES + 1} attempts\)"):
        await _read(http, 0, 10)


async def test_a_dropped_connection_is_retried(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    storage.faults.append(drop)
    assert await _read(http, 0, 10) == BLOB[:10]
    assert len(storage.ranges) == 2


@pytest.mark.parametrize(
    ("status", "wanted"), [(401, errno.EACCES), (403, errno.EACCES), (404, errno.ENOENT), (410, errno.ENOENT)]
)
async def test_a_refused_lease_says_what_it_finally_is(
    world: tuple[HttpClient, Storage], status: int, wanted: int
) -> None:
    http, storage = world
    storage.faults.append(lambda request: httpx.Response(status))
    with pytest.raises(LeaseRefused) as info:
        await _read(http, 0, 10)
    assert info.value.status == status and to_errno(info.value.error) == wanted
    assert len(storage.ranges) == 1


# ----------------------------------------------------------------------------------- lease renewal
@dataclass
class Leases:
    """A provider as `RemoteFile` uses it (through the resolver): it only resolves, giving out the URLs it
    is told to, one per call (the last one again when they run out)."""

    urls: list[str]
    resolves: int = 0

    async def resolve(self, video: Video, *, previous: StreamLease | None = None) -> StreamLease:
        self.resolves += 1
        return StreamLease(self.urls[min(self.resolves, len(self.urls)) - 1])


def _file(http: HttpClient, leases: Leases) -> RemoteFile:
    video = Video("v1", "v1.mp4", size=len(BLOB), etag=ETAG)
    provider = cast(Provider, leases)
    return RemoteFile(
        instance="t", provider=provider, video=video, size=len(BLOB), http=http, resolver=Resolver(Stats())
    )


async def test_a_refused_lease_is_renewed_once(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    provider = Leases([URL + "?sig=old", URL + "?sig=new"])
    storage.faults.append(lambda request: httpx.Response(403) if "old" in str(request.url) else None)
    assert await _file(http, provider).fetch(0, 100) == BLOB[:100]
    assert provider.resolves == 2


@pytest.mark.parametrize(("status", "wanted"), [(403, errno.EACCES), (410, errno.ENOENT)])
async def test_a_second_refusal_is_final(world: tuple[HttpClient, Storage], status: int, wanted: int) -> None:
    http, storage = world
    provider = Leases([URL + "?sig=1", URL + "?sig=2", URL + "?sig=3"])
    storage.faults += [lambda request: httpx.Response(status)] * 2
    with pytest.raises(Exception) as info:
        await _file(http, provider).fetch(0, 100)
    assert to_errno(info.value) == wanted
    assert provider.resolves == 2 and len(storage.ranges) == 2


async def test_the_same_lease_again_is_not_asked_twice(world: tuple[HttpClient, Storage]) -> None:
    http, storage = world
    provider = Leases([URL])  # a URL that never changes (a plain web directory)
    storage.faults.append(lambda request: httpx.Response(404))
    with pytest.raises(Exception) as info:
        await _file(http, provider).fetch(0, 100)
    assert to_errno(info.value) == errno.ENOENT
    assert provider.resolves == 2 and len(storage.ranges) == 1
