"""The HTTP failure policy, in process: the status table, every httpx exception mapped, retries with backoff
and Retry-After, redirects that keep credentials on their origin.

`HttpClient(transport=httpx.MockTransport(...))` answers from a function, so each test says exactly what the
server does and counts what the client sent. Pauses between retries run on trio's autojump clock (virtual
time), so a Retry-After of an hour costs nothing and the pause taken can be read off the clock exactly.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from vidfs.config.types import HttpSettings
from vidfs.errors import (
    AuthError,
    InvalidRemoteData,
    NotFoundError,
    RemoteError,
    RemoteIOError,
    RemoteTimeoutError,
    StaleError,
    UnreachableError,
    to_errno,
)
from vidfs.http.client import HttpClient
from vidfs.http.policy import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    TempFailure,
    error_for,
    is_temp_failure,
    raise_for_status,
    renews_lease,
)
from vidfs.stats import Stats

Handler = Callable[[httpx.Request], httpx.Response]
RETRIES = 3
SETTINGS = HttpSettings(retries=RETRIES, backoff_base=0.001, backoff_cap=0.002)


class Server:
    """A MockTransport handler that records every request it is sent."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


MakeClient = Callable[[Handler], tuple[HttpClient, Server]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[HttpClient] = []

    def make(answer: Handler) -> tuple[HttpClient, Server]:
        server = Server(answer)
        client = HttpClient(SETTINGS, Stats(), transport=httpx.MockTransport(server))
        clients.append(client)
        return client, server

    yield make
    for client in clients:
        await client.aclose()


def _answers(*responses: httpx.Response) -> Handler:
    """A server that gives these answers, in order."""
    queue = list(responses)
    return lambda request: queue.pop(0)


# ------------------------------------------------------------------------------------------ status table
@pytest.mark.parametrize(
    ("status", "api", "storage"),
    [
        (400, errno.EIO, errno.EIO),
        (401, errno.EACCES, errno.EACCES),
        (403, errno.EACCES, errno.EACCES),
        (404, errno.ENOENT, errno.ENOENT),
        (410, errno.ENOENT, errno.ENOENT),  # Gone: not there, never a permission problem
        (416, errno.EIO, errno.ESTALE),
        (422, errno.EIO, errno.EIO),
        (429, errno.EIO, errno.EIO),
        (500, errno.EIO, errno.EIO),
        (503, errno.EIO, errno.EIO),
    ],
)
def test_one_status_table_for_api_calls_and_storage(status: int, api: int, storage: int) -> None:
    response = httpx.Response(status, request=httpx.Request("GET", "http://127.0.0.1/x"))
    for is_storage, wanted in ((False, api), (True, storage)):
        with pytest.raises(RemoteError) as info:
            raise_for_status(response, "what", storage=is_storage)
        assert to_errno(info.value) == wanted, (status, is_storage)
        assert info.value.status == status
        assert str(info.value) == f"what: HTTP {status}"


def test_success_and_redirects_raise_nothing_and_explain_words_the_error() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    for status in (200, 204, 206, 302, 304):
        raise_for_status(httpx.Response(status, request=request), "what")
    with pytest.raises(AuthError, match=r"^what: the vendor says no$"):
        raise_for_status(httpx.Response(401, request=request), "what", explain=lambda r: "the vendor says no")


def test_storage_renews_its_lease_on_401_403_404_410_only() -> None:
    assert [s for s in (400, 401, 403, 404, 410, 416, 429, 500) if renews_lease(s)] == [401, 403, 404, 410]
    assert isinstance(error_for(410, "x", storage=True), NotFoundError)
    assert isinstance(error_for(416, "x", storage=True), StaleError)


# ----------------------------------------------------------------------------------- httpx exceptions
def _raising(exc: Exception) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


REQUEST = httpx.Request("GET", "http://127.0.0.1/x")
# (exception the transport raises, our exception, retried?)
HTTPX_CASES: list[tuple[Exception, type[RemoteError], bool]] = [
    (httpx.ConnectError("refused", request=REQUEST), RemoteIOError, True),
    (httpx.ConnectTimeout("slow", request=REQUEST), RemoteTimeoutError, True),
    (httpx.ReadTimeout("slow", request=REQUEST), RemoteTimeoutError, True),
    (httpx.WriteTimeout("slow", request=REQUEST), RemoteTimeoutError, True),
    (httpx.PoolTimeout("busy", request=REQUEST), RemoteTimeoutError, True),
    (httpx.ReadError("reset", request=REQUEST), RemoteIOError, True),
    (httpx.WriteError("broken pipe", request=REQUEST), RemoteIOError, True),
    (httpx.CloseError("close", request=REQUEST), RemoteIOError, True),
    (httpx.RemoteProtocolError("server hung up", request=REQUEST), RemoteIOError, True),
    (httpx.LocalProtocolError("bad header", request=REQUEST), RemoteIOError, False),
    (httpx.ProxyError("proxy", request=REQUEST), RemoteIOError, False),
    (httpx.UnsupportedProtocol("ftp://", request=REQUEST), RemoteIOError, False),
    (httpx.DecodingError("bad gzip", request=REQUEST), RemoteIOError, False),
    (httpx.TooManyRedirects("loop", request=REQUEST), RemoteIOError, False),
    (httpx.InvalidURL("bad url"), InvalidRemoteData, False),
    (httpx.StreamConsumed(), RemoteIOError, False),
    (httpx.CookieConflict("two cookies"), RemoteIOError, False),
]


@pytest.mark.parametrize(("raised", "mapped", "retried"), HTTPX_CASES, ids=lambda v: type(v).__name__)
async def test_every_httpx_exception_becomes_ours(
    make_client: MakeClient,
    raised: Exception,
    mapped: type[RemoteError],
    retried: bool,
) -> None:
    client, server = make_client(_raising(raised))
    with pytest.raises(RemoteError) as info:
        await client.request("GET", "http://127.0.0.1/x?token=secret", tag="t")
    assert type(info.value) is mapped
    assert to_errno(info.value) == errno.EIO
    assert "secret" not in str(info.value)
    assert len(server.requests) == (RETRIES + 1 if retried else 1)
    assert client.stats.counters["http.errors"] == 1


async def test_a_body_that_cannot_be_decoded_is_eio_not_a_traceback(
    make_client: MakeClient,
) -> None:
    """A real DecodingError (issue 12): gzip announced, garbage sent. It escaped as httpx.DecodingError."""
    client, server = make_client(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")
    )
    with pytest.raises(RemoteIOError, match="could not be decoded"):
        await client.request("GET", "http://127.0.0.1/list", tag="t")
    assert len(server.requests) == 1  # not worth another try


async def test_a_post_is_not_retried_after_a_dropped_connection(
    make_client: MakeClient,
) -> None:
    client, server = make_client(_raising(httpx.ReadError("reset", request=REQUEST)))
    with pytest.raises(RemoteIOError):
        await client.request("POST", "http://127.0.0.1/login", tag="t", json={"password": "x"})
    assert len(server.requests) == 1  # the server may have acted on it


async def test_an_origin_that_refused_connections_fails_fast_afterwards(
    make_client: MakeClient,
) -> None:
    client, server = make_client(_raising(httpx.ConnectError("refused", request=REQUEST)))
    with pytest.raises(RemoteIOError):
        await client.request("GET", "http://127.0.0.1/a", tag="t")
    sent = len(server.requests)
    with pytest.raises(UnreachableError, match="unreachable"):
        await client.request("GET", "http://127.0.0.1/b", tag="t")
    assert len(server.requests) == sent and client.stats.counters["http.fast_failures"] == 1
    assert not is_temp_failure(UnreachableError("x"))


# ------------------------------------------------------------------------------------------- retries
async def test_5xx_is_retried_within_the_budget_then_eio(
    make_client: MakeClient,
) -> None:
    client, server = make_client(lambda request: httpx.Response(503))
    with pytest.raises(RemoteIOError, match=rf"HTTP 503 \(after {RETRIES + 1} attempts\)") as info:
        await client.request("GET", "http://127.0.0.1/x", tag="t")
    assert info.value.status == 503 and len(server.requests) == RETRIES + 1
    assert client.stats.counters["http.retries"] == RETRIES


async def test_a_5xx_that_heals_is_invisible(
    make_client: MakeClient,
) -> None:
    client, server = make_client(
        _answers(httpx.Response(502), httpx.Response(500), httpx.Response(200, json={"ok": True}))
    )
    response = await client.request("GET", "http://127.0.0.1/x", tag="t")
    assert response.json() == {"ok": True} and len(server.requests) == 3


async def test_5xx_on_a_post_is_returned_but_429_is_retried(
    make_client: MakeClient,
) -> None:
    client, server = make_client(lambda request: httpx.Response(503))
    assert (await client.request("POST", "http://127.0.0.1/x", tag="t")).status_code == 503
    assert len(server.requests) == 1
    client, server = make_client(
        _answers(httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(201))
    )
    assert (await client.request("POST", "http://127.0.0.1/x", tag="t")).status_code == 201
    assert len(server.requests) == 2


async def test_retry_false_means_one_attempt(
    make_client: MakeClient,
) -> None:
    client, server = make_client(lambda request: httpx.Response(500))
    with pytest.raises(RemoteIOError, match=r"after 1 attempts"):
        await client.request("GET", "http://127.0.0.1/x", tag="t", retry=False)
    assert len(server.requests) == 1


async def test_retry_after_is_honoured_and_capped(
    make_client: MakeClient, autojump_clock: trio.testing.MockClock
) -> None:
    for hint, least, most in (("7", 7.0, 7.0), ("3600", MAX_RETRY_AFTER, MAX_RETRY_AFTER)):
        client, _ = make_client(
            _answers(httpx.Response(503, headers={"Retry-After": hint}), httpx.Response(200))
        )
        started = trio.current_time()
        await client.request("GET", "http://127.0.0.1/x", tag="t")
        waited = trio.current_time() - started
        assert least <= waited <= most + SETTINGS.backoff_cap, (hint, waited)


def test_backoff_is_jittered_exponential_and_reads_http_dates() -> None:
    policy = RetryPolicy(attempts=5, base=1.0, cap=8.0)
    for attempt in range(6):
        for _ in range(50):
            assert 0.0 <= policy.delay(attempt) <= min(8.0, 2.0**attempt)
    assert len({round(policy.delay(3), 6) for _ in range(20)}) > 1  # jittered, not a fixed step
    assert policy.delay(0, "Wed, 21 Oct 2015 07:28:00 GMT") <= 1.0  # a date in the past: no extra wait
    assert policy.delay(0, "soon") <= 1.0  # nonsense is ignored


async def test_the_policy_runs_until_success_or_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.01)
    tries: list[int] = []

    async def flaky(attempt: int) -> str:
        tries.append(attempt)
        if attempt < 2:
            raise TempFailure("not yet")
        return "done"

    assert await policy.run(flaky, what="x") == "done" and tries == [0, 1, 2]

    async def hopeless(attempt: int) -> str:
        raise TempFailure("never") from httpx.ReadTimeout("slow")

    with pytest.raises(RemoteTimeoutError, match=r"^x: never \(after 3 attempts\)$"):
        await policy.run(hopeless, what="x")

    async def broken(attempt: int) -> str:
        raise NotFoundError("gone")

    with pytest.raises(NotFoundError):  # not a TempFailure: no second try
        await policy.run(broken, what="x")


# ----------------------------------------------------------------------------------------- redirects
def _hosts(routes: dict[str, Handler]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        return routes[f"{request.url.host}:{request.url.port}{request.url.path}"](request)

    return answer


def _to(location: str, status: int = 302) -> Handler:
    return lambda request: httpx.Response(status, headers={"Location": location})


async def test_redirects_keep_credentials_on_their_origin(
    make_client: MakeClient,
) -> None:
    client, server = make_client(
        _hosts(
            {
                "127.0.0.1:8001/start": _to("/moved"),
                "127.0.0.1:8001/moved": _to("http://127.0.0.2:8002/elsewhere"),
                "127.0.0.2:8002/elsewhere": lambda request: httpx.Response(200, text="bytes"),
            }
        )
    )
    response = await client.request(
        "GET",
        "http://127.0.0.1:8001/start",
        tag="t",
        headers={"X-Api-Key": "secret"},
        params={"access_token": "secret"},
        auth=("user", "secret"),
        follow_redirects=True,
    )
    assert response.text == "bytes"
    start, moved, elsewhere = server.requests
    for home in (start, moved):  # the caller's origin: credentials go
        assert home.headers["X-Api-Key"] == "secret" and home.headers["Authorization"].startswith("Basic ")
    assert start.url.params["access_token"] == "secret"
    assert "access_token" not in moved.url.params  # the Location carries its own query
    assert "authorization" not in elsewhere.headers and "x-api-key" not in elsewhere.headers
    assert "secret" not in str(elsewhere.url)


async def test_a_body_never_follows_a_redirect_to_another_origin(
    make_client: MakeClient,
) -> None:
    client, server = make_client(
        _hosts({"127.0.0.1:8001/login": _to("http://127.0.0.2:8002/steal", status=307)})
    )
    response = await client.request(
        "POST", "http://127.0.0.1:8001/login", tag="t", json={"password": "secret"}, follow_redirects=True
    )
    assert response.status_code == 307 and len(server.requests) == 1


async def test_303_turns_into_a_get_without_the_body(
    make_client: MakeClient,
) -> None:
    client, server = make_client(
        _hosts(
            {
                "127.0.0.1:8001/form": _to("/result", status=303),
                "127.0.0.1:8001/result": lambda request: httpx.Response(200),
            }
        )
    )
    await client.request("POST", "http://127.0.0.1:8001/form", tag="t", json={"a": 1}, follow_redirects=True)
    assert [(r.method, r.content) for r in server.requests] == [("POST", b'{"a":1}'), ("GET", b"")]


async def test_a_redirect_loop_is_one_eio_not_retried(
    make_client: MakeClient,
) -> None:
    client, server = make_client(_hosts({"127.0.0.1:8001/loop": _to("/loop")}))
    with pytest.raises(RemoteIOError, match="too many redirects"):
        await client.request("GET", "http://127.0.0.1:8001/loop", tag="t", follow_redirects=True)
    assert len(server.requests) == 6  # the first request and five hops, once


async def test_a_stream_sends_only_the_range_off_its_origin(
    make_client: MakeClient,
) -> None:
    client, server = make_client(
        _hosts(
            {
                "127.0.0.1:8001/file": _to("http://127.0.0.2:8002/cdn/file"),
                "127.0.0.2:8002/cdn/file": lambda request: httpx.Response(206, content=b"x"),
            }
        )
    )
    headers = {"Authorization": "Bearer secret", "Range": "bytes=0-0", "If-Range": '"e1"'}
    async with client.stream("GET", "http://127.0.0.1:8001/file", tag="t", headers=headers) as response:
        assert response.status_code == 206
    first, second = server.requests
    assert first.headers["Authorization"] == "Bearer secret"
    assert "authorization" not in second.headers
    assert second.headers["Range"] == "bytes=0-0" and second.headers["If-Range"] == '"e1"'


async def test_a_stream_maps_transport_errors(
    make_client: MakeClient,
) -> None:
    client, _ = make_client(_raising(httpx.ReadTimeout("slow", request=REQUEST)))
    with pytest.raises(RemoteTimeoutError) as info:
        async with client.stream("GET", "http://127.0.0.1:8001/file", tag="t"):
            pass
    assert is_temp_failure(info.value)
