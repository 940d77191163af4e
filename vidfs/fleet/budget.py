"""The API budget: `api_rate = "20/s"` in a provider table is shared by every host of the fleet.

Each provider instance with an `api_rate` has a token bucket. With a shared tier it lives in Redis (one
hash per instance, ``va{<hash>}``), refilled by one Lua script with Redis's own clock (`TIME`), so hosts
with skewed clocks agree: every API request *reserves* a token (the bucket may go negative) and sleeps for
as long as the reservation says (a queue in arrival order across the fleet, no retry loop, no polling).
The bucket holds at most one second of requests (burst), so over any window of W seconds the fleet sends
at most rate × W + burst requests.

When Redis does not answer (down, slow, the breaker open) or the mount is `mode = "ro"` (which never
writes), the host falls back to a local bucket at its share of the rate: the rate divided by the number
of hosts that were alive at the last look (each host refreshes its membership, a random id in a sorted
set ``vm{…}``, every `HEARTBEAT` seconds). Without `[cache.shared]` there is only the local bucket, at the
whole rate.

A mount that has just started has not looked yet: its connection is still being made, in the background.
Its first API requests wait for that first attempt to be over (`FleetRedis.first_attempt`, at most two
connection steps; a refused node ends it at once) and so does the first heartbeat. Without that wait each
host of a fleet started together went at the whole rate until it was connected: three hosts whose first
walk read ahead 30 directories sent all 30 listings within 3 s at 4/s (1 of 5 CI runs).

Only requests tagged ``<instance>:api`` (the providers' API calls: listings, logins, URL resolution) are
counted; storage (the bytes) is not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from vidfs.fleet.connection import FleetRedis, Unavailable
from vidfs.fleet.sealing import FleetKeys

log = logging.getLogger("vidfs.fleet")

HEARTBEAT = 5.0
MEMBER_TTL = 3 * HEARTBEAT
MAX_WAIT = 60.0  # a reservation further out than this is a fleet far over budget: wait this long at most
BURST_SECONDS = 1.0
RESERVE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)
"""
MEMBERS = """
local t = redis.call('TIME')
local now = tonumber(t[1])
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""


@dataclass(slots=True)
class _LocalBucket:
    """The same reservation scheme with trio's clock, for this host alone."""

    tokens: float
    at: float

    def reserve(self, rate: float, burst: float) -> float:
        now = trio.current_time()
        self.tokens = min(burst, self.tokens + max(0.0, now - self.at) * rate) - 1
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


@dataclass(slots=True)
class _Budget:
    instance: str
    rate: float
    key: bytes
    local: _LocalBucket
    waited: float = 0.0
    requests: int = 0
    local_requests: int = 0


class ApiBudget:
    """Implements `vidfs.http.client.ApiBudget`: `take(tag)` before every API request."""

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        redis: FleetRedis | None,
        keys: FleetKeys | None,
        identities: Mapping[str, str],
        writes: bool,
    ) -> None:
        self.redis = redis
        self.writes = writes
        self.members = 1  # hosts of the fleet at the last look (this one included)
        self._member = os.urandom(8).hex() if writes else ""
        self._members_key = f"vm{{{keys.name('members')}}}".encode() if keys is not None else b""
        self._budgets: dict[str, _Budget] = {}
        self._contacted = redis is None or not writes  # the first connection attempt is over (see above)
        for instance, rate in rates.items():
            key = keys.name("api", identities.get(instance, instance)) if keys is not None else ""
            local = _LocalBucket(tokens=self._burst(rate), at=0.0)
            self._budgets[f"{instance}:api"] = _Budget(instance, rate, f"va{{{key}}}".encode(), local)

    @staticmethod
    def _burst(rate: float) -> float:
        return max(1.0, rate * BURST_SECONDS)

    async def take(self, tag: str) -> None:
        """Wait until this request fits in its instance's budget (at once for tags without one)."""
        budget = self._budgets.get(tag)
        if budget is None:
            return
        budget.requests += 1
        if not self._contacted and self.redis is not None:
            await self._first_contact(self.redis)
        wait = await self._shared_reservation(budget)
        if wait is None:
            budget.local_requests += 1
            share = budget.rate / max(1, self.members)
            wait = budget.local.reserve(share, self._burst(share))
        wait = min(wait, MAX_WAIT)
        if wait > 0:
            budget.waited += wait
            await trio.sleep(wait)

    async def _first_contact(self, redis: FleetRedis) -> None:
        with trio.move_on_after(2 * redis.connect_step):
            await redis.first_attempt()
        self._contacted = True

    async def _shared_reservation(self, budget: _Budget) -> float | None:
        if self.redis is None or not self.writes:
            return None
        burst = self._burst(budget.rate)
        try:
            wait_ms = await self.redis.call(
                lambda client: client.eval(RESERVE, keys=[budget.key], args=[budget.rate, burst])
            )
        except Unavailable:
            return None
        return float(wait_ms) / 1000

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The membership heartbeat (how many hosts share the budget when Redis is away). A service."""
        task_status.started()
        if self.redis is None or not self._budgets:
            return
        redis = self.redis
        await self._first_contact(redis)
        while True:
            try:
                count = await redis.call(self._count_members)
                self.members = max(1, int(count) + (0 if self.writes else 1))
            except Unavailable:
                pass
            await trio.sleep(HEARTBEAT)

    async def _count_members(self, client: Any) -> int:
        if self.writes:
            return int(await client.eval(MEMBERS, keys=[self._members_key], args=[self._member, MEMBER_TTL]))
        # "ro" never writes: count who refreshed lately by our own clock
        return int(await client.zcount(self._members_key, time.time() - MEMBER_TTL, "+inf"))

    def statistics(self) -> dict[str, Any]:
        return {
            "members": self.members,
            **{
                budget.instance: {
                    "rate": budget.rate,
                    "requests": budget.requests,
                    "local_requests": budget.local_requests,
                    "waited_s": round(budget.waited, 3),
                }
                for budget in self._budgets.values()
            },
        }
