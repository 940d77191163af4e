"""`TokenKeeper.call`, in process: a refused token means one new login and one more try, never a loop, and
a burst of refused requests logs in once. Then the same through a provider (Pixop) over an
`httpx.MockTransport` API whose JWT "expires" on demand.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

from vidfs.config.types import HttpSettings, ProviderConfig
from vidfs.errors import AuthError
from vidfs.http.client import HttpClient
from vidfs.providers.auth import Token, TokenKeeper
from vidfs.providers.base import ProviderContext
from vidfs.providers.pixop import PixopProvider
from vidfs.stats import Stats


class Logins:
    """A login that hands out token-1, token-2, ... and counts itself."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> Token:
        self.count += 1
        await trio.lowlevel.checkpoint()  # a login takes a moment: others must wait, not repeat it
        return Token(f"token-{self.count}")


def _request(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://127.0.0.1/x"))


class Api:
    """An API call that refuses the tokens in `refused` (401) and records the tokens it was sent."""

    def __init__(self, *refused: str) -> None:
        self.refused = set(refused)
        self.sent: list[str] = []

    async def __call__(self, token: str) -> httpx.Response:
        self.sent.append(token)
        return _request(401 if token in self.refused or "*" in self.refused else 200)


async def test_a_refused_token_logs_in_again_once_and_sends_again() -> None:
    logins, api = Logins(), Api("token-1")
    keeper = TokenKeeper(logins)
    assert (await keeper.call(api)).status_code == 200
    assert api.sent == ["token-1", "token-2"] and logins.count == 2
    assert (await keeper.call(api)).status_code == 200 and api.sent[-1] == "token-2" and logins.count == 2


async def test_a_second_refusal_is_returned_not_looped() -> None:
    logins, api = Logins(), Api("*")
    assert (await TokenKeeper(logins).call(api)).status_code == 401
    assert api.sent == ["token-1", "token-2"] and logins.count == 2


async def test_only_what_the_vendor_calls_a_refusal_logs_in_again() -> None:
    logins = Logins()
    keeper = TokenKeeper(logins)

    async def forbidden(token: str) -> httpx.Response:
        return _request(403)

    assert (await keeper.call(forbidden)).status_code == 403 and logins.count == 1  # 403: not the token
    # A vendor whose expired session answers 419 says so.
    answers = [_request(419), _request(200)]

    async def session(token: str) -> httpx.Response:
        return answers.pop(0)

    assert (await keeper.call(session, refused=lambda r: r.status_code == 419)).status_code == 200
    assert logins.count == 2


async def test_a_burst_of_refusals_logs_in_once(caplog: pytest.LogCaptureFixture) -> None:
    logins = Logins()
    keeper = TokenKeeper(logins, name="site", log=logging.getLogger("test.auth"))
    await keeper.get()  # token-1, now refused by the server for everyone at once
    results: list[int] = []

    async def send(token: str) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return _request(401 if token == "token-1" else 200)

    async def one() -> None:
        results.append((await keeper.call(send, explain=lambda r: "expired")).status_code)

    with caplog.at_level(logging.INFO, logger="test.auth"):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
    assert results == [200] * 10 and logins.count == 2
    assert "site: token refused (expired); logging in again" in caplog.text


# ------------------------------------------------------------------------------ through a provider
class PixopApi:
    """Just enough of Pixop: a Basic-auth login giving a JWT-less token, and one project list that refuses
    tokens listed in `expired` with the vendor's 401 body."""

    def __init__(self) -> None:
        self.issued = 0
        self.expired: set[str] = set()
        self.always_refuse = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/accounts/v1/token":
            assert request.headers["Authorization"].startswith("Basic ")
            self.issued += 1
            return httpx.Response(200, json={"jwtToken": f"jwt-{self.issued}"})
        token = request.headers["Authorization"].removeprefix("Bearer ")
        if self.always_refuse or token in self.expired:
            body = {"exception": "ExpiredJWTTokenException", "errorMessage": "The JWT token has expired"}
            return httpx.Response(401, json=body)
        projects = [{"id": "p1", "name": "Project one", "timeLastUpdated": "2026-01-02 03:04:05"}]
        return httpx.Response(200, json={"_embedded": {"projects": projects}, "_links": {}})


@pytest.fixture
async def pixop(tmp_path: Path) -> AsyncIterator[tuple[PixopProvider, PixopApi]]:
    api = PixopApi()
    http = HttpClient(HttpSettings(retries=0), Stats(), transport=httpx.MockTransport(api))
    options: dict[str, Any] = {"base_url": "http://127.0.0.1:8001", "email": "a@b.c", "password": "pw"}
    config = ProviderConfig(name="site", type="pixop", options=options, source=tmp_path / "vidfs.toml")
    context = ProviderContext(instance="site", http=http, state_dir=tmp_path, log=logging.getLogger("t"))
    try:
        yield PixopProvider(config, context), api
    finally:
        await http.aclose()


async def test_a_provider_logs_in_again_once_when_its_token_expires(
    pixop: tuple[PixopProvider, PixopApi],
) -> None:
    provider, api = pixop
    assert [f.name for f in (await provider.list(provider.root())).entries] == ["Project one"]
    api.expired.add("jwt-1")
    assert [f.name for f in (await provider.list(provider.root())).entries] == ["Project one"]
    assert api.issued == 2
    api.always_refuse = True
    with pytest.raises(AuthError, match="ExpiredJWTTokenException: The JWT token has expired") as info:
        await provider.list(provider.root())
    assert api.issued == 3 and info.value.status == 401 and "pw" not in str(info.value)
