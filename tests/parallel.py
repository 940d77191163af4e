"""The suite in worker processes (`pytest -n N`, pytest-xdist): which tests run together, and in what order.

A worker takes a whole *group* at a time and runs it alone, in order. A test module is one group, so its
module-scoped emulators and mounts start once; a module whose module-scoped fixture is parametrised (one
emulator per vendor: the contract, fault and security suites) is one group per parameter.

The modules of `SERIAL_MODULES` make one group, "serial": none of them runs alongside another, because each
either loads the machine heavily or decides on timing that a loaded machine stretches (the reason stands
beside each). The serial group is handed out first; then the groups that start real parts (emulators,
mounts, Redis), most such tests first; the in-process groups last, to fill the gaps.

How: each worker sorts its collection into that order and writes a map test id → group beside the
controller's (`groups.json`, in a directory the controller made and named in `workerinput`); the controller's
scheduler (xdist's scope scheduling with these groups as the scopes) reads it once every worker has
collected, and hands the groups out in collection order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

SERIAL = "serial"
SERIAL_MODULES = {
    "test_fleet_shared.py": "Redis calls time out after 250 ms: a busy machine makes Redis look dead",
    "test_fleet_listings.py": "the same, and an API rate measured over a 3 s window",
    "test_fleet_failures.py": "the same, and a CLIENT PAUSE that must outlast two reads",
    "test_players.py": "VLC plays 1.5 s of wall time and must decode frames meanwhile",
    "test_chaos_daemon.py": "1,000 connections, 100 at once, and signals during reads",
    "test_soak.py": "64 readers: the heaviest load of the suite",
    "test_chaos.py": "drops the kernel's dentry cache (for every mount) and reads the daemon's RSS",
}
REAL_PARTS = {"media_dir", "mounts", "redis_cluster", "origin"}  # fixtures that start processes or servers
GROUPS_KEY = "vidfs_groups"  # the map's path, in each worker's `workerinput`


def group_of(item: pytest.Item) -> str:
    """The group `item` runs in (see the module docstring)."""
    module = item.nodeid.split("::", 1)[0]
    if Path(module).name in SERIAL_MODULES:
        return SERIAL
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return module
    definitions = item._fixtureinfo.name2fixturedefs
    wide = [
        f"{name}={callspec.params[name]}"
        for name in sorted(callspec.params)
        if name in definitions and definitions[name][-1].scope in ("module", "package", "session")
    ]
    return ":".join([module, *wide])


def order_in_groups(items: list[pytest.Item]) -> dict[str, str]:
    """Sort `items` group by group in the order they are to be handed out (a group keeps its own order);
    returns the map test id → group."""
    groups = {item.nodeid: group_of(item) for item in items}
    weight: dict[str, int] = {}
    for item in items:
        real = bool(REAL_PARTS & set(getattr(item, "fixturenames", ())))
        weight[groups[item.nodeid]] = weight.get(groups[item.nodeid], 0) + real
    first_seen = {group: index for index, group in reversed(list(enumerate(groups.values())))}
    rank = {group: (group != SERIAL, -count, first_seen[group]) for group, count in weight.items()}
    items.sort(key=lambda item: rank[groups[item.nodeid]])
    return groups


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling, with our groups as the scopes, handed out in collection order."""

    def __init__(self, config: pytest.Config, log: Any, groups_file: Path) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the workers ordered the collection already
        self.groups_file = groups_file
        self.groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self.groups is None:  # asked once every worker has collected: the map is written
            self.groups = json.loads(self.groups_file.read_text())
        return self.groups.get(nodeid, nodeid)


class Parallel:
    """The plugin: the scheduler and the map's directory in the controller, the order in each worker."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.directory: Path | None = None

    # ------------------------------------------------------------------------------------ controller
    def groups_file(self) -> Path:
        if self.directory is None:  # made on first use: only the controller asks
            self.directory = Path(tempfile.mkdtemp(prefix="vidfs-xdist-"))
        return self.directory / "groups.json"

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[GROUPS_KEY] = str(self.groups_file())

    @pytest.hookimpl(tryfirst=True)  # before xdist's own choice
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> GroupScheduling:
        return GroupScheduling(config, log, self.groups_file())

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --------------------------------------------------------------------------------------- workers
    @pytest.hookimpl(trylast=True)  # after pytest ordered the tests by their fixtures
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        target = getattr(config, "workerinput", {}).get(GROUPS_KEY)
        if target is None:
            return
        groups = order_in_groups(items)
        temporary = Path(f"{target}.{os.getpid()}")
        temporary.write_text(json.dumps(groups))
        os.replace(temporary, target)  # every worker writes the same map: any complete one will do
