"""The provider contract suite's table: one `Case` per emulator found in `vidfs.emulator`.

What a case knows (the files a mount must show, how to make tokens expire, where the bytes are served, the
mutations) is the emulator's own ``CONTRACT`` (`vidfs.emulator.contract`); this module only names them and
turns an action the emulator cannot do into a skip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Emulator, running_emulator
from vidfs.emulator import emulators
from vidfs.emulator.contract import Contract, Expect

__all__ = ["CASES", "Case", "Expect", "case_emulator", "expected_in_mount"]


@dataclass(frozen=True)
class Case:
    name: str
    contract: Contract

    def __getattr__(self, attribute: str) -> Any:  # expected, login_path, storage_path, renewal, ...
        if attribute == "contract":  # not set yet (copying): no recursion
            raise AttributeError(attribute)
        return getattr(self.contract, attribute)

    @property
    def mutate(self) -> Callable[[Any, str, str], None] | None:
        """mutate(emulator, action, remote_id) through the control API; None: no mutations."""
        mutation = self.contract.mutation
        if mutation is None:
            return None

        def mutate(emulator: Any, action: str, remote_id: str) -> None:
            if action in self.contract.unsupported:
                pytest.skip(self.contract.unsupported[action])
            emulator.post(self.name, "mutate", mutation(action, remote_id))

        return mutate


CASES: dict[str, Case] = {name: Case(name, module.CONTRACT) for name, module in emulators().items()}


def expected_in_mount(emulator: Any, name: str, instance: str) -> dict[str, Expect]:
    """The files a mount of emulator `name` as provider `instance` must show now, by path from the mount
    root (`instance/...`)."""
    return {f"{instance}/{path}": e for path, e in CASES[name].expected(emulator.catalog(name)).items()}


@contextlib.contextmanager
def case_emulator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, media_dir: Path, prefix: str
) -> Iterator[tuple[Case, Emulator, Path]]:
    """For a fixture parametrised over `sorted(CASES)`: the case, its emulator running for the block's
    duration, and a directory of its own ("prefix-name")."""
    case = CASES[request.param]
    workdir = tmp_path_factory.mktemp(f"{prefix}-{case.name}")
    with running_emulator(workdir / "emulator", [case.name], media_dir) as emulator:
        yield case, emulator, workdir
