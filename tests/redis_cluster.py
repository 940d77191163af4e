"""A real Redis Cluster for the fleet tests: 3 masters on 127.0.0.1, started and ended by PID.

`start_cluster(workdir)` starts three `redis-server` processes on free ports (each with its cluster bus
port, +10000, free too), joins them with `redis-cli --cluster create … --cluster-replicas 0` and waits
until every node says `cluster_state:ok`. A module shares one cluster (`redis_cluster` fixture in the
test modules); `flush()` empties it between tests. Nodes can be killed (SIGKILL, by PID), restarted from
their own directory (their `nodes.conf` keeps their identity and slots), and paused (`CLIENT PAUSE`).
Admin reads and writes go through coredis in a `trio.run` of their own.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import coredis
import trio
from coredis.connection import TCPLocation

from tests.conftest import wait_until

T = TypeVar("T")
HAVE_REDIS = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (+10000) is free too."""
    found: list[int] = []
    for _ in range(1000):
        port = random.randint(20000, 55000)
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError("no free ports for Redis")


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, cluster: bool = True) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", "--maxmemory", "512mb"]
        args += ["--maxmemory-policy", "allkeys-lru", "--loglevel", "warning"]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "1000"]
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        wait_until(lambda: self.cli("PING") == "PONG", f"redis-server on {self.port}", 30)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout.strip()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    nodes: list[Node]
    workdir: Path
    cluster: bool = True
    down: set[int] = field(default_factory=set)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def table(self, secret: str, **extra: Any) -> str:
        """A `[cache.shared]` table for this cluster."""
        lines = ["[cache.shared]", f"nodes = {self.addresses!r}".replace("'", '"'), f'secret = "{secret}"']
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in extra.items()]
        return "\n".join(lines) + "\n"

    def healthy(self) -> bool:
        if not self.cluster:
            return self.nodes[0].cli("PING") == "PONG"
        return all("cluster_state:ok" in node.cli("CLUSTER", "INFO") for node in self.nodes)

    def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """`work(client)` with a fresh coredis client, in a trio run of its own."""

        async def main() -> T:
            if self.cluster:
                client: Any = coredis.RedisCluster(
                    startup_nodes=[TCPLocation("127.0.0.1", n.port) for n in self.nodes]
                )
            else:
                client = coredis.Redis(host="127.0.0.1", port=self.nodes[0].port)
            async with client:
                return await work(client)

        return trio.run(main)

    def items(self) -> dict[bytes, bytes]:
        """Every key and its value (strings), and for other types their members, from every node."""

        async def scan(client: Any) -> dict[bytes, bytes]:
            found: dict[bytes, bytes] = {}
            async for key in client.scan_iter(match=b"*"):
                kind = await client.type(key)
                if kind == b"string" or kind == "string":
                    found[key] = await client.get(key) or b""
                elif kind in (b"hash", "hash"):
                    found[key] = repr(await client.hgetall(key)).encode()
                elif kind in (b"zset", "zset"):
                    found[key] = repr(await client.zrange(key, 0, -1)).encode()
                else:
                    found[key] = b""
            return found

        return self.run(scan)

    def write_calls(self) -> dict[str, int]:
        """Calls of every write command so far, over all nodes (`INFO commandstats`)."""
        writes = ("set", "del", "unlink", "eval", "evalsha", "hset", "zadd", "zremrangebyscore", "expire")
        writes += ("pexpire", "mset", "getdel", "incr", "flushall")
        total: dict[str, int] = {}
        for node in self.nodes:
            for line in node.cli("INFO", "commandstats").splitlines():
                name, _, rest = line.partition(":")
                command = name.removeprefix("cmdstat_")
                if name.startswith("cmdstat_") and command in writes:
                    calls = int(rest.split(",")[0].split("=")[1])
                    total[command] = total.get(command, 0) + calls
        return total

    def flush(self) -> None:
        for node in self.nodes:
            node.cli("FLUSHALL")

    def kill(self, index: int) -> None:
        self.nodes[index].kill()
        self.down.add(index)

    def restart(self, index: int) -> None:
        self.nodes[index].start(cluster=self.cluster)
        self.down.discard(index)
        wait_until(self.healthy, "the cluster healthy again", 60)

    def pause(self, milliseconds: int) -> None:
        for node in self.nodes:
            node.cli("CLIENT", "PAUSE", str(milliseconds), "ALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(workdir: Path, *, masters: int = 3) -> Cluster:
    nodes = []
    for port in free_ports(masters):
        directory = workdir / str(port)
        directory.mkdir(parents=True)
        nodes.append(Node(port, directory))
    cluster = Cluster(nodes, workdir)
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *cluster.addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {created.stdout[-2000:]} {created.stderr}"
            )
        wait_until(cluster.healthy, "cluster_state:ok on every node", 60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_plain(workdir: Path) -> Cluster:
    """One plain (non-cluster) Redis node."""
    port = free_ports(1)[0]
    directory = workdir / str(port)
    directory.mkdir(parents=True)
    node = Node(port, directory)
    plain = Cluster([node], workdir, cluster=False)
    try:
        node.start(cluster=False)
    except BaseException:
        plain.stop()
        raise
    return plain
