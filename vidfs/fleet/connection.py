"""The fleet's Redis connection: a supervised service, and every call bounded by `timeout`.

`FleetRedis.run` is a service that never holds up the mount: it reports started at once, then connects in
the background and keeps connecting (1 s doubling to 30 s, jittered) while Redis is down, so a mount comes
up when Redis is absent and finds it when it returns. The first node of `nodes` that answers says whether
it is a Redis Cluster (`INFO cluster`); a cluster gets coredis's cluster client (every node given is a
startup node, slots followed through MOVED/ASK), a plain node the plain client.

`call(fn)` runs ``fn(client)`` under `trio.move_on_after(timeout)`. At most `CONCURRENT_CALLS` run at once:
a reader's readahead can ask for dozens of 1 MiB groups together, and a `timeout` that also counted the
time they queue behind each other (in the client, on the wire, in Redis) would call a busy Redis a dead one.
The wait for a slot is bounded by `timeout` too (then it is a miss, `busy`, not a failure), so a call waits
at most `timeout` for its slot and `timeout` for Redis. Any error or timeout is `Unavailable`, which every
caller treats as a miss; the failures feed the circuit breaker (`breaker.py`), and while it is
open `call` raises `Unavailable` at once without touching the network. When probes keep failing the
client is rebuilt (a cluster whose nodes all restarted may need a fresh view of its slots). An open
breaker is probed with a PING when its backoff is over even when nobody reads, so it closes when Redis is
back. Errors are logged once per outage (one line when Redis goes away, one when it is back), counted
always.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import coredis
import trio
from coredis.connection import TCPLocation

from vidfs.config.types import SharedCacheOptions
from vidfs.fleet.breaker import Breaker, State

log = logging.getLogger("vidfs.fleet")

T = TypeVar("T")
Client = Any  # coredis.Redis[bytes] | coredis.RedisCluster[bytes]: their overloads are too rich to spell here
CONNECT_TIMEOUT = 2.0  # seconds for connecting and the first PING (in the background: no reader waits)
RECONNECT_FIRST, RECONNECT_LONGEST = 1.0, 30.0
PROBE_EVERY = 0.5  # seconds between looks at an open breaker (it probes only when its backoff is over)
REBUILD_AFTER_PROBES = 2  # failed probes in a row after which the client is built afresh
CONCURRENT_CALLS = 8  # calls in flight at once; the timeout of each starts when it has its slot


class Unavailable(Exception):
    """The shared tier did not answer in time (down, paused, breaker open): the caller's miss."""


class FleetRedis:
    def __init__(self, options: SharedCacheOptions, *, ca_bundle: Path | None = None) -> None:
        self.options = options
        self.timeout = options.timeout
        self.breaker = Breaker()
        self._slots = trio.Semaphore(CONCURRENT_CALLS)
        self._ca_bundle = ca_bundle
        self._client: Client | None = None
        self._rebuild = trio.Event()
        self._down_logged = False
        self._first_attempt = trio.Event()  # set once the first connection attempt succeeded or failed
        self.cluster = False
        self.counts: dict[str, int] = dict.fromkeys(
            ("calls", "errors", "timeouts", "cut_short", "skipped", "busy", "connects", "connect_failures"), 0
        )

    # -------------------------------------------------------------------------------------- the service
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, stay connected, connect again; never raises but `Cancelled`."""
        task_status.started()  # the mount never waits for Redis
        delay = RECONNECT_FIRST
        while True:  # bounded by the mount's life; at most one attempt per backoff delay
            try:
                await self._connect_and_serve()
                delay = RECONNECT_FIRST
            except Exception as exc:
                self.counts["connect_failures"] += 1
                self.breaker.trip()
                self._went_down(f"cannot connect ({_describe(exc)})")
                self._first_attempt.set()
            finally:
                self._client = None
            await trio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, RECONNECT_LONGEST)

    async def _connect_and_serve(self) -> None:
        client = await self._open_client()
        async with client:
            with trio.fail_after(self.connect_step):
                await client.ping()
            self._rebuild = trio.Event()
            self._client = client
            self.counts["connects"] += 1
            self.breaker.success(probe=True)
            self._first_attempt.set()
            if self._down_logged or self.counts["connects"] == 1:
                kind = "Redis Cluster" if self.cluster else "Redis"
                log.warning("shared cache: connected to %s (%d node(s) given)", kind, len(self.options.nodes))
            self._down_logged = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._probe_while_open)
                await self._rebuild.wait()
                nursery.cancel_scope.cancel()
            log.info("shared cache: probes keep failing; connecting afresh")
            self.breaker.trip()

    async def _probe_while_open(self) -> None:
        """An open breaker is probed when its backoff is over even when nobody reads (a PING), so it closes
        as soon as Redis answers again."""
        while True:  # bounded by the connection's life; one look per PROBE_EVERY
            await trio.sleep(PROBE_EVERY)
            if self.breaker.state is not State.CLOSED:
                try:
                    await self.call(lambda client: client.ping())
                except Unavailable:
                    pass

    async def _open_client(self) -> Client:
        """The first node that answers tells whether this is a cluster."""
        failure: BaseException | None = None
        for host, port in self.options.nodes:
            try:
                probe = coredis.Redis(host=host, port=port, **self._client_options())
                with trio.fail_after(self.connect_step):
                    async with probe:
                        info = await probe.info("cluster")
            except Exception as exc:
                failure = exc
                continue
            self.cluster = bool(int(str(info.get("cluster_enabled", 0))))
            if not self.cluster:
                return coredis.Redis(host=host, port=port, **self._client_options())
            nodes = [TCPLocation(h, p) for h, p in self.options.nodes]
            return coredis.RedisCluster(startup_nodes=nodes, **self._client_options())
        raise failure or OSError("no Redis node given")

    def _client_options(self) -> dict[str, Any]:
        options = self.options
        stream_timeout = max(1.0, 10 * self.timeout)  # our own deadline (`call`) fires first
        settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "stream_timeout": stream_timeout}
        if options.username is not None:
            settings["username"] = options.username
        if options.password is not None:
            settings["password"] = options.password.reveal()
        if options.tls:
            settings["ssl_context"] = ssl.create_default_context(
                cafile=str(self._ca_bundle) if self._ca_bundle else None
            )
        return settings

    # ----------------------------------------------------------------------------------------- calls
    @property
    def connected(self) -> bool:
        return self._client is not None

    async def first_attempt(self) -> None:
        """Returns once the first connection attempt is over, connected or not (each of its steps is bounded
        by `connect_step`; a refused node fails at once)."""
        await self._first_attempt.wait()

    @property
    def connect_step(self) -> float:
        """The bound of each step of connecting: a node's `INFO` (is it a cluster?), then the `PING`."""
        return max(self.timeout, CONNECT_TIMEOUT)

    async def call(self, fn: Callable[[Client], Awaitable[T]], *, timeout: float | None = None) -> T:
        """``fn(client)`` within `timeout` (default: the configured one), or `Unavailable`."""
        if self._client is None or (self.breaker.state is not State.CLOSED and not self.breaker.due()):
            self.counts["skipped"] += 1
            raise Unavailable
        limit = self.timeout if timeout is None else max(0.0, timeout)
        with trio.move_on_after(limit) as waiting:
            await self._slots.acquire()
        if waiting.cancelled_caught:  # our own calls queue here: busy, not a sign of a sick Redis
            self.counts["busy"] += 1
            raise Unavailable
        try:
            return await self._call_in_slot(fn, limit)
        finally:
            self._slots.release()

    async def _call_in_slot(self, fn: Callable[[Client], Awaitable[T]], limit: float) -> T:
        client = self._client
        probe = self.breaker.allow() if client is not None else None
        if probe is None:
            self.counts["skipped"] += 1
            raise Unavailable
        self.counts["calls"] += 1
        started = trio.current_time()
        with trio.move_on_after(limit) as scope:
            try:
                result = await fn(client)
            except Exception as exc:
                self._failed("errors", _describe(exc), probe, None)  # a node refused: each counts
                raise Unavailable from None
        if scope.cancelled_caught:
            if limit < self.timeout:  # the caller's own deadline was near: not a sign of a sick Redis
                self.counts["cut_short"] += 1
            else:
                self._failed("timeouts", "no answer within the timeout", probe, started)
            raise Unavailable
        self.breaker.success(probe)
        if self._down_logged:
            self._down_logged = False
            log.warning("shared cache: Redis answers again")
        return result

    def _failed(self, kind: str, reason: str, probe: bool, started: float | None) -> None:
        self.counts[kind] += 1
        if self.breaker.failure(probe, started):
            self._went_down(reason)
        if self.breaker.state is State.OPEN and self.breaker.failed_probes >= REBUILD_AFTER_PROBES:
            self._rebuild.set()

    def _went_down(self, reason: str) -> None:
        if not self._down_logged:
            self._down_logged = True
            log.warning("shared cache: Redis unavailable (%s); reads go to the origin meanwhile", reason)

    def statistics(self) -> dict[str, Any]:
        breaker = self.breaker.statistics()
        return {
            "connected": int(self.connected),
            "cluster": int(self.cluster),
            "breaker": breaker["state"],
            "breaker_opens": breaker["opens"],
            "breaker_closes": breaker["closes"],
            "breaker_probes": breaker["probes"],
            **self.counts,
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
