"""Supervision: the background work of a mount runs under one supervisor, so that no failure of it ends
the mount.

Why
---
A mount does much besides answering FUSE requests: it writes the listing snapshot, serves the control
socket and each of its connections, fetches blocks and warms containers in the background, writes the
disk cache. All of it lives in trio nurseries around `pyfuse3.main()`, and in a trio nursery an exception
in one child cancels every other one: a client that hangs up early, one `OSError` in a periodic save, and
the whole filesystem used to exit ("Transport endpoint is not connected" for every reader). The supervisor
is the one place that stands between such a failure and the mount.

Two kinds of work
-----------------
*Services* run as long as the mount: ``await services.start_service(name, async_fn, *args)``. The service
is started with `nursery.start()`; when its function takes ``task_status`` (the control server does: it
publishes its socket first), `start_service` returns once it called ``task_status.started()``, so what is
built next can rely on it. When a service raises, the exception is logged with its traceback (once per
distinct failure: the same failure again is logged at debug level), counted (``services.<name>.failures``
in `vidfs stats`) and the service is started again after a backoff: 0.5 s doubling up to 60 s, each delay
drawn between half and all of it (jitter: services that fail for one cause, say a full disk, do not retry
in lockstep); a service that ran for 5 minutes before failing starts again from the shortest delay. The
restart loop is bounded by the mount's life and, through the backoff, to at most one attempt per 30 s once
a service keeps failing. If the first run fails before it reported `started()`, `start_service` returns
anyway and the service is retried in the background: the mount comes up without it rather than not at all.
A service that returns is done (the control server returns when it cannot bind its socket).

*Tasks* are one-shot: a fetch of a run of blocks, a container warm-up, one control connection.
``services.tasks(name)`` is an object with a nursery's ``start_soon(async_fn, *args, name=None)``, so the
block cache and `VideoFS`, which were written against a nursery, take it in its place and keep their code.
A task that raises is logged once and counted; it is not restarted (whoever waited for its result has
already been told, e.g. the block cache's pending readers).

What is never caught
--------------------
`trio.Cancelled` (the mount is being torn down, or a deadline expired) and `KeyboardInterrupt` are
`BaseException`s and pass through, as does an exception group holding one of them: swallowing them would
keep alive what was told to stop. Only an unmount or a signal ends `pyfuse3.main()` (`vidfs.daemon.mount`).

Shape
-----
`Supervisor(stats)` holds the policy and the records (what `statistics()` and the ``services`` section of
`vidfs stats --json` show); it owns no nursery. ``supervisor.bind(nursery)`` gives a `ServiceNursery` that
starts work in that nursery, so each part of the mount keeps its work in a nursery whose lifetime is right
for it (fetches must end before the HTTP client closes) while every failure lands in one place.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from vidfs.stats import Stats

log = logging.getLogger(__name__)

MAX_REMEMBERED_FAILURES = 1000  # distinct (name, type, message) logged in full; then only at debug level


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts of a failing service: doubling, capped, jittered."""

    first: float = 0.5
    longest: float = 60.0
    healthy_after: float = 300.0  # a run at least this long forgets earlier failures

    def delay(self, failures_in_a_row: int, rng: random.Random) -> float:
        ceiling = min(self.longest, self.first * 2 ** min(failures_in_a_row - 1, 30))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class _Record:
    """What the supervisor knows of one service or one kind of task."""

    kind: str  # "service" or "tasks"
    running: int = 0
    starts: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "running": self.running,
            "starts": self.starts,
            "failures": self.failures,
            "last_error": self.last_error,
        }


class _StartedOnce:
    """The `task_status` handed to each run of a service: only the first `started()` reaches the nursery
    (later runs are restarts nobody waits for)."""

    def __init__(self, status: trio.TaskStatus[Any]) -> None:
        self._status = status
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._status.started(value)


class Supervisor:
    def __init__(self, stats: Stats, *, backoff: Backoff | None = None, seed: int | None = None) -> None:
        self.stats = stats
        self.backoff = backoff or Backoff()
        self._rng = random.Random(seed)
        self._records: dict[str, _Record] = {}
        self._logged: set[tuple[str, str, str]] = set()

    def bind(self, nursery: trio.Nursery) -> ServiceNursery:
        """Services and tasks started through the result run in `nursery`, under this supervisor."""
        return ServiceNursery(self, nursery)

    def record(self, name: str, kind: str) -> _Record:
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = _Record(kind)
        return record

    def report(self, name: str, exc: BaseException, *, action: str = "") -> None:
        """A failure of `name`: counted always, logged with its traceback the first time it is seen."""
        record = self.record(name, "tasks")
        record.failures += 1
        record.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.stats.incr(f"services.{name}.failures")
        key = (name, type(exc).__name__, str(exc)[:200])
        suffix = f"; {action}" if action else ""
        if key in self._logged or len(self._logged) >= MAX_REMEMBERED_FAILURES:
            log.debug("%s failed again: %s%s", name, record.last_error, suffix)
            return
        self._logged.add(key)
        log.error("%s failed: %s%s", name, record.last_error, suffix, exc_info=exc)

    def restart_delay(self, record: _Record) -> float:
        return self.backoff.delay(record.failures_in_a_row, self._rng)

    def statistics(self) -> dict[str, dict[str, Any]]:
        return {name: record.as_dict() for name, record in sorted(self._records.items())}


class ServiceNursery:
    """A nursery under a supervisor: `start_service` for services, `tasks(name)` for one-shot tasks."""

    def __init__(self, supervisor: Supervisor, nursery: trio.Nursery) -> None:
        self.supervisor = supervisor
        self.nursery = nursery

    async def start_service(self, name: str, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `async_fn(*args)` for as long as the nursery lives, restarted after a failure; returns once
        it has started (see the module's essay)."""
        await self.nursery.start(self._supervise, name, async_fn, args)

    def tasks(self, name: str) -> TaskGuard:
        """A `start_soon` for one-shot tasks whose failures are logged and counted under `name`."""
        self.supervisor.record(name, "tasks")
        return TaskGuard(self.supervisor, self.nursery, name)

    async def _supervise(
        self,
        name: str,
        async_fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        supervisor = self.supervisor
        record = supervisor.record(name, "service")
        record.kind = "service"
        status = _StartedOnce(task_status)
        takes_status = _takes_task_status(async_fn)
        while True:  # bounded by the nursery's life; at most one run per backoff delay
            record.starts += 1
            record.running = 1
            began = time.monotonic()
            try:
                if takes_status:
                    await async_fn(*args, task_status=status)
                else:
                    status.started()
                    await async_fn(*args)
            except Exception as exc:
                record.running = 0
                if time.monotonic() - began >= supervisor.backoff.healthy_after:
                    record.failures_in_a_row = 0
                record.failures_in_a_row += 1
                delay = supervisor.restart_delay(record)
                supervisor.report(name, exc, action=f"restarting in {delay:.1f} s")
                supervisor.stats.incr(f"services.{name}.restarts")
                status.started()  # a first run that failed early must not hold the mount's start
                await trio.sleep(delay)
                continue
            finally:
                record.running = 0
            status.started()
            log.debug("service %s ended", name)
            return


class TaskGuard:
    """What the block cache and `VideoFS` take for a nursery: `start_soon` with the same signature, but an
    exception of the task is logged and counted (under the guard's name) instead of reaching the nursery."""

    def __init__(self, supervisor: Supervisor, nursery: trio.Nursery, name: str) -> None:
        self._supervisor = supervisor
        self._nursery = nursery
        self.name = name

    def start_soon(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> None:
        self._nursery.start_soon(self._guarded, async_fn, args, name=name if name is not None else async_fn)

    async def _guarded(self, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        record = self._supervisor.record(self.name, "tasks")
        record.starts += 1
        record.running += 1
        try:
            await async_fn(*args)
        except Exception as exc:
            self._supervisor.report(self.name, exc)
        finally:
            record.running -= 1


def _takes_task_status(async_fn: Callable[..., Any]) -> bool:
    try:
        return "task_status" in inspect.signature(async_fn).parameters
    except (TypeError, ValueError):  # a callable inspect cannot read: treat it as a plain function
        return False
