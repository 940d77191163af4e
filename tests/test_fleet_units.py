"""In-process parts of the fleet (issue 15): the `[cache.shared]` and `api_rate` config, sealed values
and listings, the circuit breaker, the local share of the API budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.redis_cluster import HAVE_REDIS, Cluster, free_ports, start_plain
from vidfs.config.loader import config_from_dict
from vidfs.errors import ConfigError
from vidfs.fleet import Fleet
from vidfs.fleet.breaker import Breaker, State
from vidfs.fleet.budget import ApiBudget
from vidfs.fleet.sealing import FleetKeys
from vidfs.model import Folder, Listing, Video

PROVIDER = {"type": "http", "url": "http://127.0.0.1:9/pub/"}


def load(cache: dict[str, object], provider: dict[str, object] | None = None, **env: str) -> object:
    data = {"cache": {"dir": "/tmp/vidfs-fleet-units", **cache}, "providers": {"site": provider or PROVIDER}}
    return config_from_dict(data, path=Path("/tmp/fleet.toml"), environ={"HOME": "/tmp", **env})


def test_shared_config_reads_exactly_the_issue_keys(tmp_path: Path) -> None:
    password = tmp_path / "redis.secret"
    password.write_text("pw-123\n")
    password.chmod(0o600)
    shared = {
        "type": "redis",
        "nodes": ["10.0.0.5:7000", "[fd00::6]:7000", "redis.vidfs.svc:6379"],
        "secret": {"env": "VIDFS_FLEET_KEY"},
        "username": "vidfs",
        "password": {"file": str(password)},
        "tls": True,
        "mode": "ro",
        "timeout": "100ms",
    }
    config = load({"shared": shared}, VIDFS_FLEET_KEY="k-1")
    options = config.cache.shared  # type: ignore[attr-defined]
    assert options.nodes == (("10.0.0.5", 7000), ("fd00::6", 7000), ("redis.vidfs.svc", 6379))
    assert (options.secret.reveal(), options.password.reveal()) == ("k-1", "pw-123")
    assert (options.username, options.tls, options.mode, options.timeout, options.writes) == (
        "vidfs", True, "ro", 0.1, False,
    )  # fmt: skip
    assert "k-1" not in repr(options) and "pw-123" not in repr(options)
    assert load({}).cache.shared is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("shared", "message"),
    [
        ({"nodes": ["a:1"]}, "missing required key 'secret'"),
        ({"secret": "s"}, "missing required key 'nodes'"),
        ({"nodes": [], "secret": "s"}, "non-empty array"),
        ({"nodes": ["a"], "secret": "s"}, '"host:port"'),
        ({"nodes": ["a:70000"], "secret": "s"}, '"host:port"'),
        ({"nodes": ["a:1"], "secret": "s", "mode": "w"}, '"rw" or "ro"'),
        ({"nodes": ["a:1"], "secret": "s", "timeout": "0s"}, "greater than 0"),
        ({"nodes": ["a:1"], "secret": "s", "type": "memcached"}, '"redis"'),
        ({"nodes": ["a:1"], "secret": "s", "ttl": "1h"}, "unknown key 'ttl'"),
        ({"nodes": ["a:1"], "secret": {"env": "NOPE"}}, "NOPE is not set"),
    ],
)
def test_shared_config_errors_name_the_key(shared: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load({"shared": shared})
    assert "[cache.shared]" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "per_second"), [("20/s", 20.0), ("600/min", 10.0), ("5/500ms", 10.0), ("3600/1h", 1.0)]
)
def test_api_rate_is_accepted_by_every_provider_table(text: str, per_second: float) -> None:
    config = load({}, {**PROVIDER, "api_rate": text})
    rate = config.providers[0].api_rate  # type: ignore[attr-defined]
    assert rate.per_second == pytest.approx(per_second) and rate.text == text


@pytest.mark.parametrize("text", ["fast", "20", "0/s", "20/never", 20])
def test_api_rate_errors(text: object) -> None:
    with pytest.raises(ConfigError, match="api_rate"):
        load({}, {**PROVIDER, "api_rate": text})


# ------------------------------------------------------------------------------------------- sealing
KEYS = FleetKeys.from_secret("unit-secret")


def test_a_sealed_block_opens_only_under_its_own_key_index_size_and_length() -> None:
    data = bytes(range(256)) * 256
    key = b"vb{abc}3"
    value = KEYS.seal_block(key, 3, 10**6, data)
    assert KEYS.open_block(key, 3, 10**6, len(data), value) == data
    flipped = bytearray(value)
    flipped[100] ^= 1
    assert KEYS.open_block(key, 3, 10**6, len(data), bytes(flipped)) is None
    assert KEYS.open_block(key, 3, 10**6, len(data), value[:-1]) is None
    assert KEYS.open_block(b"vb{abc}4", 3, 10**6, len(data), value) is None  # copied to another key
    assert KEYS.open_block(key, 4, 10**6, len(data), value) is None
    assert KEYS.open_block(key, 3, 10**6 + 1, len(data), value) is None
    assert KEYS.open_block(key, 3, 10**6, len(data) - 1, value) is None
    assert FleetKeys.from_secret("other").open_block(key, 3, 10**6, len(data), value) is None
    assert "unit-secret" not in repr(KEYS)


def test_a_sealed_listing_hides_its_names_and_opens_only_under_its_key() -> None:
    entries = (Folder("f1", "Holiday folder"), Video("v1", "secret-clip-name.mp4", size=5, mtime=1.0))
    listing = Listing(entries)
    value = KEYS.seal_listing(b"vl{x}", "dir-id", listing, 1000.0)
    assert b"secret-clip-name" not in value and b"Holiday" not in value
    opened = KEYS.open_listing(b"vl{x}", "dir-id", value)
    assert opened is not None and opened[0] == listing and opened[1] == 1000.0
    assert KEYS.open_listing(b"vl{y}", "dir-id", value) is None
    assert KEYS.open_listing(b"vl{x}", "other-dir", value) is None
    assert KEYS.open_listing(b"vl{x}", "dir-id", value[:-1]) is None


def test_key_names_are_keyed_hashes() -> None:
    name = KEYS.name("listing", "site", "folder/with/a name")
    assert len(name) == 32 and int(name, 16) >= 0
    assert name != FleetKeys.from_secret("other").name("listing", "site", "folder/with/a name")


# ------------------------------------------------------------------------------------------- breaker
async def test_the_breaker_opens_after_failures_probes_after_its_backoff_and_closes_on_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = Breaker(failures_to_open=3, first=1.0, longest=4.0)
    assert breaker.allow() is False  # closed: a normal call
    assert not breaker.failure() and not breaker.failure()
    assert breaker.failure()  # the third opens it
    assert breaker.state is State.OPEN and breaker.allow() is None
    breaker.success()  # a call that started before it opened: says nothing
    assert breaker.state is State.OPEN
    autojump_clock.jump(1.0)  # virtual time: the first backoff is over
    assert breaker.allow() is True  # the probe
    assert breaker.allow() is None  # only one
    breaker.failure(probe=True)  # a failed probe: open again, a longer backoff
    assert breaker.state is State.OPEN and breaker.probes == 1
    autojump_clock.jump(0.9)  # the second backoff is drawn between 1 and 2 s
    assert breaker.allow() is None
    autojump_clock.jump(1.2)
    assert breaker.allow() is True
    breaker.success(probe=True)
    assert breaker.state is State.CLOSED
    assert (breaker.opens, breaker.closes) == (1, 1)


async def test_calls_in_flight_together_fail_as_one_failure(autojump_clock: trio.testing.MockClock) -> None:
    # A stall of the host times out every call in flight at once: that is one failure, not eight.
    breaker = Breaker(failures_to_open=3, first=1.0, longest=4.0)
    began = trio.current_time()
    autojump_clock.jump(0.1)
    assert not any(breaker.failure(started=began) for _ in range(8))
    assert breaker.state is State.CLOSED
    for _ in range(2):  # failures of calls begun after the last counted one: in a row
        began = trio.current_time()
        autojump_clock.jump(0.1)
        opened = breaker.failure(started=began)
    assert opened and breaker.state is State.OPEN


# ------------------------------------------------------------------------------------- local budget
async def test_without_redis_the_api_budget_is_a_local_bucket(autojump_clock: trio.testing.MockClock) -> None:
    budget = ApiBudget({"site": 10.0}, redis=None, keys=None, identities={}, writes=False)
    start = trio.current_time()
    for _ in range(30):
        await budget.take("site:api")
    await budget.take("site:storage")  # not an API call: never waits
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx((30 - 10) / 10.0, abs=0.01)  # a burst of 10, then 10 per second
    assert budget.statistics()["site"]["local_requests"] == 30


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[Cluster]:
    if not HAVE_REDIS:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    plain = start_plain(tmp_path / "redis")
    try:
        yield plain
    finally:
        plain.stop()


async def eight_requests_at_start(nodes: list[str]) -> tuple[Fleet, dict[str, Any]]:
    """A fleet at 4 API requests a second whose shared tier is at `nodes`: 8 requests at once as soon as it
    started (its connection still being made), then its budget's statistics."""
    shared = {"nodes": nodes, "secret": "fleet-units-secret", "timeout": "5s"}
    config: Any = load({"shared": shared}, {**PROVIDER, "api_rate": "4/s"})
    fleet = Fleet(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        async with trio.open_nursery() as requests:
            for _ in range(8):
                requests.start_soon(fleet.budget.take, "site:api")
        nursery.cancel_scope.cancel()
    assert fleet.redis is not None
    return fleet, fleet.budget.statistics()


async def test_a_mount_just_started_asks_redis_for_its_first_api_requests(plain_redis: Cluster) -> None:
    """The first requests come while the connection is still being made: they wait for it rather than go
    at the whole rate alone (each host of a fleet started together did)."""
    fleet, budget = await eight_requests_at_start(plain_redis.addresses)
    assert fleet.redis is not None and fleet.redis.counts["connects"] == 1
    assert (budget["site"]["requests"], budget["site"]["local_requests"]) == (8, 0), budget
    # Reserved in Redis together: a burst of 4, then one each 0.25 s (0.25 + 0.5 + 0.75 + 1.0 s waited).
    assert budget["site"]["waited_s"] > 2.0, budget
    assert budget["members"] == 1, budget  # the heartbeat counted this host once connected


async def test_a_mount_whose_redis_is_down_at_start_takes_its_share_locally_at_once() -> None:
    """Nothing listens where Redis should be: the first connection attempt fails at once, and the first
    API requests go by the local bucket (the whole rate: no other host was ever seen), not after a wait."""
    fleet, budget = await eight_requests_at_start([f"127.0.0.1:{free_ports(1)[0]}"])
    assert fleet.redis is not None and fleet.redis.counts["connect_failures"] >= 1
    assert (budget["site"]["requests"], budget["site"]["local_requests"]) == (8, 8), budget
    # A burst of 4, then one each 0.25 s: this host's bucket held them (0.25 + 0.5 + 0.75 + 1.0 s waited).
    assert budget["site"]["waited_s"] > 2.0, budget
