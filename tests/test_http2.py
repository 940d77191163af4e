"""HTTP/2 where the origin offers it (issue 16): API calls multiplexed over one connection, byte transfers
and the size probes' HEADs on HTTP/1.1 (`vidfs.http.client`; the HEADs' lean path: `tests/test_heads.py`).

A real HTTPS server that speaks HTTP/2 and HTTP/1.1 (hypercorn on trio, ALPN offering both) with a
certificate made here by a CA made here (`cryptography`), trusted through `HttpSettings(ca_bundle=...)`.
Each answer says the protocol of its request and the client port of its connection:
- 100 concurrent API calls (`pool="api"`) all arrive as HTTP/2 over one connection:
  `test_api_calls_share_one_http2_connection`;
- ranged GETs (`HttpClient.stream`, the read path) arrive as HTTP/1.1 although the server offers both:
  `test_ranged_reads_stay_on_http11`;
- a plain-http origin sees HTTP/1.1 for everything, as before: `test_plain_http_stays_http11`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.asgi_server import Receive, Send, lifespan, running
from vidfs.config.types import HttpSettings
from vidfs.http.client import HttpClient

SIZE = 100_000  # the size the server tells of every file
DEADLINE = 60.0


# ----------------------------------------------------------------------------------- certificates
def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) as PEM files: a CA and a server for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("vidfs test CA"))
        .issuer_name(_name("vidfs test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


# --------------------------------------------------------------------------------------- the server
@dataclass
class Seen:
    """What the server saw: (method, HTTP version, client port) per request."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)


def make_app(seen: Seen) -> Callable[..., Awaitable[None]]:
    """An ASGI app: every path is a file of SIZE bytes (HEAD, GET, ranged GET); each answer tells the
    request's protocol (`x-protocol`) and its connection's client port (`x-client-port`)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        method, version, port = scope["method"], scope["http_version"], scope["client"][1]
        seen.requests.append((method, version, port))
        headers = dict(scope["headers"])
        status, start, end = 200, 0, SIZE - 1
        ranged = headers.get(b"range", b"").decode()
        if method == "GET" and ranged.startswith("bytes="):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            status, start, end = 206, int(first), min(int(last or SIZE - 1), SIZE - 1)
        answer = [
            (b"x-protocol", version.encode()),
            (b"x-client-port", str(port).encode()),
            (b"accept-ranges", b"bytes"),
            (b"content-length", str(end - start + 1 if method == "GET" else SIZE).encode()),
        ]
        if status == 206:
            answer.append((b"content-range", f"bytes {start}-{end}/{SIZE}".encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer})
        body = bytes((start + i) % 251 for i in range(end - start + 1)) if method == "GET" else b""
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def server(tmp_path: Path, *, tls: bool) -> AsyncIterator[tuple[str, Seen, Path | None]]:
    """(base URL, what it saw, the CA to trust) of a hypercorn server on 127.0.0.1, stopped on exit."""
    seen = Seen()
    ca: Path | None = None
    certificate: tuple[Path, Path] | None = None
    if tls:
        ca, cert, key = make_certificates(tmp_path)
        certificate = cert, key
    async with running(make_app(seen), certificate=certificate) as base:
        yield base, seen, ca


# ------------------------------------------------------------------------------------------ tests
async def test_api_calls_share_one_http2_connection(tmp_path: Path) -> None:
    async with server(tmp_path, tls=True) as (base, seen, ca):
        assert base.startswith("https://")
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            answers: list[tuple[str, str, str]] = []

            async def call(n: int) -> None:
                response = await http.request("GET", f"{base}/api/video-{n}", tag="t:api")
                assert response.status_code == 200
                assert len(response.content) == SIZE
                answers.append(
                    (response.http_version, response.headers["x-protocol"], response.headers["x-client-port"])
                )

            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    for n in range(100):
                        nursery.start_soon(call, n)
                api = await http.request("GET", f"{base}/api/list", tag="t:api")
            assert len(answers) == 100
            assert {version for version, _said, _port in answers} == {"HTTP/2"}
            assert {said for _version, said, _port in answers} == {"2"}
            ports = {port for *_rest, port in answers}
            assert len(ports) == 1, f"100 API calls over {len(ports)} connections"
            assert api.http_version == "HTTP/2" and api.headers["x-client-port"] in ports
            calls = [r for r in seen.requests if r[0] == "GET"]
            assert len(calls) == 101 and {(v, p) for _m, v, p in calls} == {("2", int(next(iter(ports))))}
            assert http.stats.counters["http.http2"] == 101
        finally:
            await http.aclose()


async def test_ranged_reads_stay_on_http11(tmp_path: Path) -> None:
    async with server(tmp_path, tls=True) as (base, seen, ca):
        http = HttpClient(HttpSettings(ca_bundle=ca))
        try:
            with trio.fail_after(DEADLINE):
                api = await http.request("GET", f"{base}/api/video", tag="t:api")
                versions: list[str] = []
                for start in (0, 40_000, 99_990):
                    headers = {"Range": f"bytes={start}-{start + 9_999}"}
                    async with http.stream("GET", f"{base}/video.mp4", tag="t:storage", headers=headers) as r:
                        body = b"".join([chunk async for chunk in r.aiter_raw()])
                        assert r.status_code == 206 and r.headers["x-protocol"] == "1.1"
                        assert body == bytes((start + i) % 251 for i in range(len(body)))
                        versions.append(r.http_version)
            assert api.http_version == "HTTP/2"  # the server offers both: the API call took HTTP/2
            assert versions == ["HTTP/1.1"] * 3
            assert [v for m, v, _p in seen.requests if m == "GET"] == ["2"] + ["1.1"] * 3
        finally:
            await http.aclose()


async def test_plain_http_stays_http11(tmp_path: Path) -> None:
    async with server(tmp_path, tls=False) as (base, seen, _ca):
        assert base.startswith("http://")
        http = HttpClient(HttpSettings())
        try:
            with trio.fail_after(DEADLINE):
                head = await http.request("HEAD", f"{base}/video.mp4", tag="t:storage", pool=None)
                api = await http.request("GET", f"{base}/api/list", tag="t:api")
            assert head.http_version == api.http_version == "HTTP/1.1"
            assert {v for _m, v, _p in seen.requests} == {"1.1"}
            assert http.stats.counters.get("http.http2", 0) == 0
        finally:
            await http.aclose()
