"""What the provider contract suite needs to know about an emulator, declared by the emulator itself.

Every vendor module of `vidfs.emulator` exports ``CONTRACT = Contract(...)`` next to ``create_site``; that
pair is what makes it an emulator (`vidfs.emulator.emulators` finds it; nothing else is registered). The
contract suite (``tests/providers.py``) turns each into a test case:

``expected``          catalog → {path in the mount: `Expect`}: the files a mount of the emulator must show,
                      computed from the control API's catalog with vidfs's own naming rules
                      (`name_entries`), so the layout is declared once, next to the emulator.
``login_path``        regex of the request that obtains a token or a URL (counted by the renewal test).
``storage_path``      regex of the byte-serving requests (where faults and latency are injected).
``short_lived_args``  emulator arguments making tokens or URLs expire within seconds.
``secret_key``        the config key whose wrong value must fail a mount with one clear line.
``mutation``          (action, remote id) → the ``POST /_emulator/mutate`` body, for the fault suite's
                      actions ``change_content`` (new bytes, new ETag), ``delete`` (the video vanishes) and
                      ``expire_tokens`` (every token or URL issued so far stops working). None: no mutations.
``unsupported``       action → why this vendor cannot do it (those tests are skipped with the reason).
``renewal``           False when nothing of the provider expires (the renewal test is skipped).
``provider``          the provider type emulated, when it is not the module's name (``http``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vidfs.catalog.naming import name_entries, split_ext

JSON = dict[str, Any]

__all__ = ["Contract", "Expect", "expect", "name_entries", "split_ext"]


@dataclass(frozen=True)
class Expect:
    size: int
    mtime: float | None
    sha256: str
    source: str  # path of the served bytes on disk ("" for synthetic videos)
    remote_id: str = ""  # the vendor's id (for the fault suite's mutations)


def expect(entry: JSON, mtime: float | None, remote_id: str = "") -> Expect:
    """The `Expect` of a catalog entry that has ``size``, ``sha256`` and ``path_on_disk`` (a compact
    catalog has no ``sha256``: the `Expect` then has ``""``, and the layout still every path and size)."""
    return Expect(
        size=entry["size"],
        mtime=mtime,
        sha256=entry.get("sha256", ""),
        source=entry.get("path_on_disk") or "",
        remote_id=remote_id,
    )


@dataclass(frozen=True)
class Contract:
    expected: Callable[[JSON], dict[str, Expect]]
    login_path: str
    storage_path: str
    short_lived_args: tuple[str, ...] = ()
    secret_key: str = "password"
    mutation: Callable[[str, str], JSON] | None = None
    unsupported: Mapping[str, str] = field(default_factory=dict)
    renewal: bool = True
    provider: str = ""

    def wrong_password(self, table: JSON) -> JSON:
        """The provider's config table with a wrong secret."""
        return {**table, self.secret_key: "not-the-password"}
