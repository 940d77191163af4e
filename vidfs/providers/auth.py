"""Session tokens that expire: one login at a time, renewed ahead of expiry and once after a refusal.

Pixop (15-minute JWT), AIPIX (Bearer token) and VALT (`?access_token=`) all log in, use a token until it
expires or is refused, and must not let a burst of concurrent requests log in a dozen times. The provider
gives `TokenKeeper` its login call; the keeper decides when to call it. `TokenKeeper.call()` is the one
"send with the token; on a refusal (401) log in again once and send again" loop every vendor uses; what a
refusal looks like and how it is explained stay the vendor's (VALT has two 401 bodies, AIPIX a 419).

Whatever expires is judged by one rule, `still_fresh()`: not within the last 20 % of its lifetime (at most a
minute). The same rule serves the engine's URL leases (`vidfs.io.leases`). `jwt_expiry()` and
`expiry_from_url()` read when a token or a signed URL stops working: a JWT's `exp`,
`X-Amz-Date`+`X-Amz-Expires`, `X-Goog-Date`+`X-Goog-Expires`, `Expires=<epoch>`, Azure `se=`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

import httpx
import trio

MAX_MARGIN = 60.0
EXPIRY_CACHE = 1024  # signed URLs whose expiry is remembered (`expiry_from_url`)


def jwt_claims(token: str) -> dict[str, object]:
    """The claims of a JWT, without checking its signature (we only want `exp`)."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> float | None:
    exp = jwt_claims(token).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def utc_seconds(found: re.Match[str]) -> float | None:
    """Epoch seconds of a date matched as six groups (year, month, day, hour, minute, second), UTC; None
    when they are no date (month 13). Faster than `strptime` for the one format a vendor sends."""
    year, month, day, hour, minute, second = map(int, found.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return None


_AMZ_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def _amz_time(value: str) -> float | None:
    """`20250506T101112Z` as epoch seconds (`strptime` only for what the pattern does not take)."""
    found = _AMZ_TIME.fullmatch(value)
    if found is not None:
        return utc_seconds(found)
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


_EXPIRY_PARAMS = re.compile(
    r"(?:^|(?<=&))(x-amz-expires|x-amz-date|x-goog-expires|x-goog-date|expires|se|access_token|token|jwt|exp)"
    r"=([^&]*)",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=EXPIRY_CACHE)
def expiry_from_url(url: str) -> float | None:
    """When a signed URL stops working, from its query parameters; None if it does not say. Remembered for
    the last URLs: a lease is made of one URL more than once (a listing, its HEAD, its first read), and
    parsing its query (a JWT or an X-Amz-Date among it) each time was a twentieth of a HEAD's CPU."""
    query = url.partition("?")[2].partition("#")[0]
    # Only the parameters read below, decoded (as `parse_qsl` would, the last of a name winning): a signed
    # URL's other parameters (a long file name) cost more to decode than all of these.
    params = {key.lower(): unquote_plus(value) for key, value in _EXPIRY_PARAMS.findall(query)}
    for key in ("x-amz-expires", "x-goog-expires"):
        date_key = key.replace("expires", "date")
        if key in params and date_key in params:
            start = _amz_time(params[date_key])
            try:
                if start is not None:
                    return start + float(params[key])
            except ValueError:
                pass
    if "expires" in params:
        try:
            return float(params["expires"])
        except ValueError:
            pass
    if "se" in params:  # Azure SAS
        try:
            return datetime.fromisoformat(params["se"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    for key in ("access_token", "token", "jwt", "exp"):
        if key in params:
            if key == "exp":
                try:
                    return float(params[key])
                except ValueError:
                    continue
            expiry = jwt_expiry(params[key])
            if expiry is not None:
                return expiry
    return None


def still_fresh(obtained_at: float, expires_at: float | None, now: float) -> bool:
    """Whether something that expires (a URL, a token) is still worth using: not within the last 20 % of
    its lifetime (at most a minute before it ends). Unknown expiry: used until refused."""
    if expires_at is None:
        return True
    margin = min(MAX_MARGIN, 0.2 * max(0.0, expires_at - obtained_at))
    return now < expires_at - margin


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float | None = None  # a time.time() instant; None = unknown, used until refused
    obtained_at: float = 0.0


def _is_401(response: httpx.Response) -> bool:
    return response.status_code == 401


class TokenKeeper:
    """One session token of a provider instance: logged in once at a time, renewed ahead of its expiry and
    once after a refusal. `name` and `log` are for the line saying a token was refused."""

    def __init__(
        self, login: Callable[[], Awaitable[Token]], *, name: str = "", log: logging.Logger | None = None
    ) -> None:
        self._login = login
        self._token: Token | None = None
        self._lock = trio.Lock()
        self._name = name
        self._log = log or logging.getLogger(__name__)

    @property
    def expires_at(self) -> float | None:
        return self._token.expires_at if self._token is not None else None

    def fresh(self) -> bool:
        token = self._token
        return token is not None and still_fresh(token.obtained_at, token.expires_at, time.time())

    async def get(self) -> str:
        """The current token, logging in when there is none or it is about to expire."""
        if self.fresh():
            assert self._token is not None
            return self._token.value
        return await self.renew()

    async def renew(self, rejected: str | None = None) -> str:
        """Log in again — unless another task already replaced the token that was `rejected`."""
        async with self._lock:
            token = self._token
            if token is not None and token.value != rejected and self.fresh():
                return token.value
            fresh = await self._login()
            if not fresh.obtained_at:
                fresh = Token(fresh.value, fresh.expires_at, time.time())
            self._token = fresh
            return fresh.value

    async def call(
        self,
        send: Callable[[str], Awaitable[httpx.Response]],
        *,
        refused: Callable[[httpx.Response], bool] = _is_401,
        explain: Callable[[httpx.Response], str] | None = None,
    ) -> httpx.Response:
        """`send(token)` with the current token; when the answer says the token was `refused` (a 401 by
        default), log in again once (unless another task already did) and send again. The second answer is
        returned whatever it is: mapping its status to an error is the caller's (`raise_for_status`)."""
        token = await self.get()
        response = await send(token)
        if not refused(response):
            return response
        reason = explain(response) if explain is not None else f"HTTP {response.status_code}"
        self._log.info("%s: token refused (%s); logging in again", self._name, reason)
        token = await self.renew(rejected=token)
        return await send(token)
