"""The emulators' HTTP/1.1 server reads requests itself (`vidfs.emulator.request.Request.parse_request`).

Raw sockets against a real emulator site on 127.0.0.1: header fields reach the handlers (any case, the body
by its Content-Length, several requests on one connection); a bad request line is 400, HTTP/2 is 505, a
folded field is 400, an overlong line or too many fields is 431; HTTP/1.0 and `Connection: close` end the
connection after the answer; `Expect: 100-continue` gets its 100 first. A small answer's head and body go
out in one write, so answers are read here as a client reads them, each to its length.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from vidfs.emulator.request import RequestLog
from vidfs.emulator.server import Site, create_site

TIMEOUT = 30.0


@pytest.fixture
def site(media_dir: Path) -> Iterator[Site]:
    started = create_site("valt", media_dir=media_dir, scale=3).start()
    try:
        yield started
    finally:
        started.close()


class _Connection:
    """A client socket and a buffered reader of its answers (pipelined answers arrive together)."""

    def __init__(self, site: Site) -> None:
        host, port = site.server.server_address[:2]
        self.sock = socket.create_connection((str(host), int(port)), timeout=TIMEOUT)
        self.reader: BinaryIO = self.sock.makefile("rb")

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)


def _connect(site: Site) -> _Connection:
    return _Connection(site)


def _answer(sock: _Connection) -> tuple[int, dict[str, str], bytes]:
    """One answer: status, fields (lower-case names), body read to its Content-Length."""
    reader = sock.reader
    status_line = reader.readline(65536)
    assert status_line, "connection closed before an answer"
    fields: dict[str, str] = {}
    for _ in range(200):
        line = reader.readline(65536).decode("iso-8859-1")
        if line in ("\r\n", ""):
            break
        name, _, value = line.partition(":")
        fields[name.lower()] = value.strip()
    body = reader.read(int(fields.get("content-length", "0")))
    return int(status_line.split()[1]), fields, body


def _closed(sock: _Connection) -> bool:
    return sock.reader.read(1) == b""


def _login(username: str = "api") -> bytes:
    body = json.dumps({"username": username, "password": "valt-demo-password"}).encode()
    return (
        b"POST /api/v3/login HTTP/1.1\r\nhost: x\r\ncontent-TYPE: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def test_requests_on_one_connection_reach_their_handlers(site: Site) -> None:
    with _connect(site) as sock:
        sock.sendall(_login() + _login("nobody") + b"GET /_emulator/info HTTP/1.1\r\nHost: x\r\n\r\n")
        status, fields, body = _answer(sock)
        assert status == 200 and fields["content-type"] == "application/json"
        assert len(json.loads(body)["data"]["access_token"]) == 32
        status, _, body = _answer(sock)
        assert status == 401 and json.loads(body) == {"data": "Invalid username or password"}
        status, _, body = _answer(sock)
        assert status == 200 and "control_url" in json.loads(body)
    logged = [entry for entry in site.log.entries() if entry["path"] == "/api/v3/login"]
    assert [entry["headers"]["content-type"] for entry in logged] == ["application/json"] * 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /_emulator/info\r\n\r\n", 400),
        (b"GET /_emulator/info HTTP/x.y\r\n\r\n", 400),
        (b"GET /_emulator/info HTTP/2.0\r\n\r\n", 505),
        (b"GET /_emulator/info HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /_emulator/info HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /_emulator/info HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /_emulator/info HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /_emulator/info HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_malformed_requests_are_refused_and_the_connection_closed(
    site: Site, request_bytes: bytes, status: int
) -> None:
    with _connect(site) as sock:
        sock.sendall(request_bytes)
        assert _answer(sock)[0] == status
        assert _closed(sock)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /_emulator/info HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /_emulator/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
)
def test_http_1_0_and_connection_close_end_the_connection(site: Site, request_bytes: bytes) -> None:
    with _connect(site) as sock:
        sock.sendall(request_bytes)
        assert _answer(sock)[0] == 200
        assert _closed(sock)


def test_http_1_0_keep_alive_keeps_the_connection(site: Site) -> None:
    with _connect(site) as sock:
        sock.sendall(b"GET /_emulator/info HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        assert _answer(sock)[0] == 200
        assert _answer(sock)[0] == 200


def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(site: Site) -> None:
    body = json.dumps({"username": "api", "password": "valt-demo-password"}).encode()
    head = (
        b"POST /api/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(site) as sock:
        sock.sendall(head)
        assert _answer(sock)[0] == 100
        sock.sendall(body)
        status, _, answer = _answer(sock)
        assert status == 200 and len(json.loads(answer)["data"]["access_token"]) == 32


def test_request_counts_stay_exact_past_the_bound_of_the_log(site: Site) -> None:
    site.log = RequestLog(limit=2)  # the entries keep the last two; a walk of 100,000 videos outgrows 200,000
    missing = b"GET /api/v3/no-such-thing HTTP/1.1\r\nHost: x\r\n\r\n"
    counts = b"GET /_emulator/requests/counts HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(site) as sock:
        sock.sendall(_login() * 3 + missing + counts)
        assert [_answer(sock)[0] for _ in range(4)] == [200, 200, 200, 404]
        status, _, body = _answer(sock)
    assert status == 200
    assert json.loads(body) == {site.name: {"POST": 3, "GET": 1}, **{s.name: {} for s in site.subsites}}
    assert [entry["method"] for entry in site.log.entries()] == ["POST", "GET"]
    assert site.log.clear() == 4 and site.log.counts() == {} and site.log.entries() == []
