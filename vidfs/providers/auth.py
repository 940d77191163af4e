"""Session tokens that expire: one login at a time, renewed ahead of expiry and once after a refusal.

Pixop (15-minute JWT), AIPIX (Bearer token) and VALT (`?access_token=`) all log in, use a token until it
expires or is refused, and must not let a burst of concurrent requests log in a dozen times. The provider
gives `TokenKeeper` its login call; the keeper decides when to call it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from vidfs.resolver import still_fresh


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float | None = None  # a time.time() instant; None = unknown, used until refused
    obtained_at: float = 0.0


class TokenKeeper:
    def __init__(self, login: Callable[[], Awaitable[Token]]) -> None:
        self._login = login
        self._token: Token | None = None
        self._lock = trio.Lock()

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
