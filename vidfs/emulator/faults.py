"""Fault switchboard: rules that make an emulated site misbehave on purpose.

A site holds one `Faults` object. Rules are plain JSON-able dicts (``POST /_emulator/faults`` with
``{"rules": [...], "seed": 0}`` replaces them all, ``{"rules": []}`` clears them; from Python use
``site.faults.set_rules([...])``). Common keys of every rule:

``kind``     one of the kinds below (required).
``path``     a regular expression *searched* in the request path including its query string; default
             ``""`` matches every request. Control requests (``/_emulator/...``) are never faulted.
``methods``  optional list of HTTP methods the rule applies to (default: all).
``count``    how many times the rule fires, then it is spent; default unlimited.
``rate``     probability (0..1) that a matching request fires the rule; drawn from a seeded
             ``random.Random`` (``seed`` in the POST body, default 0) so runs are reproducible. Default 1.

For each request the first matching rule of a given stage fires (rules are tried in order); a rule that is
not applicable to a request (e.g. ``ignore_range`` on a request without ``Range``) does not fire and keeps
its count. A request fires only rules set before it arrived (not ones set while it was stalled). Kinds:

``status``               answer ``status`` (default 503) with a short text body (``body`` overrides it),
                         instead of calling the route. Any route.
``retry_after``          answer 429 (``status`` overrides) with ``Retry-After: <seconds>`` (default 1).
                         Any route.
``latency``              sleep ``seconds`` (default 0.5) before handling the request. Any route; it combines
                         with the other kinds (it is checked first).
``stall``                with ``before_headers: true``: wait ``seconds`` (default 5) before anything is sent,
                         then answer normally (any route). Without it: send the status line and headers of a
                         file response, wait ``seconds``, then send the body (file routes, GET only).
``reset_after``          file routes, GET only: send the headers and the first ``bytes`` (default 0) bytes of
                         the body, then abort the connection with a TCP RST (``SO_LINGER`` 0).
``short_body``           file routes, GET only: declare the right ``Content-Length`` but send ``bytes``
                         (default 1) fewer body bytes, then close the connection (FIN).
``ignore_range``         file routes: answer 200 with the whole body although a satisfiable ``Range`` was
                         asked (fires only when a 206 would have been sent).
``wrong_content_range``  file routes: answer 206 with the bytes of the requested range but a
                         ``Content-Range`` whose start and end are shifted by ``shift`` (default 1) bytes
                         (fires only when a 206 would have been sent).

Waits end early when the site closes. ``GET /_emulator/faults`` returns the rules, each with a ``fired``
counter.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS = "status"
RETRY_AFTER = "retry_after"
LATENCY = "latency"
STALL = "stall"
RESET_AFTER = "reset_after"
SHORT_BODY = "short_body"
IGNORE_RANGE = "ignore_range"
WRONG_CONTENT_RANGE = "wrong_content_range"

#: kind → default parameters (also the list of known kinds).
KINDS: dict[str, dict[str, Any]] = {
    STATUS: {"status": 503, "body": None},
    RETRY_AFTER: {"seconds": 1, "status": 429},
    LATENCY: {"seconds": 0.5},
    STALL: {"seconds": 5.0, "before_headers": False},
    RESET_AFTER: {"bytes": 0},
    SHORT_BODY: {"bytes": 1},
    IGNORE_RANGE: {},
    WRONG_CONTENT_RANGE: {"shift": 1},
}

#: kinds checked before the route runs (any route).
PRE_RESPONSE_KINDS = frozenset({STATUS, RETRY_AFTER})
#: kinds checked by `serve_file` once the normal answer is known.
BODY_KINDS = frozenset({STALL, RESET_AFTER, SHORT_BODY, IGNORE_RANGE, WRONG_CONTENT_RANGE})

_COMMON_KEYS = frozenset({"kind", "path", "methods", "count", "rate", "fired"})


@dataclass
class FaultRule:
    """One rule. `params` holds the kind-specific parameters, defaults filled in."""

    kind: str
    path: str = ""
    methods: frozenset[str] | None = None
    count: int | None = None
    rate: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0
    pattern: re.Pattern[str] = field(default=re.compile(""), repr=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FaultRule:
        if not isinstance(raw, Mapping):
            raise ValueError(f"a fault rule must be an object, not {type(raw).__name__}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        path = str(raw.get("path") or "")
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise ValueError(f"bad path regex {path!r}: {exc}") from None
        methods_raw = raw.get("methods")
        methods: frozenset[str] | None = None
        if methods_raw is not None:
            if isinstance(methods_raw, str):
                methods_raw = [methods_raw]
            methods = frozenset(str(m).upper() for m in methods_raw)
        count = raw.get("count")
        if count is not None:
            count = int(count)
            if count < 0:
                raise ValueError("count must be >= 0")
        rate = float(raw.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        params = dict(KINDS[kind])
        for key, value in raw.items():
            if key in _COMMON_KEYS:
                continue
            if key not in params:
                raise ValueError(f"unknown parameter {key!r} for fault kind {kind!r}")
            params[key] = value
        return cls(
            kind=kind, path=path, methods=methods, count=count, rate=rate, params=params, pattern=pattern
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.methods is not None:
            out["methods"] = sorted(self.methods)
        out["count"] = self.count
        out["rate"] = self.rate
        out.update(self.params)
        out["fired"] = self.fired
        return out

    def matches(self, method: str, target: str) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.pattern.search(target) is not None

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


class Faults:
    """Thread-safe list of fault rules with counters and a seeded RNG.

    Every change of the rules starts a new *generation*. A request notes the generation it arrived in and
    fires only rules of that generation: a request still stalled when a test sets its next rules (its
    client gone long ago) must not wake up and take them from the request they were meant for.
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._generation = 0
        self._seed = seed
        self._rng = random.Random(seed)

    def set_rules(self, rules: Iterable[Mapping[str, Any]], seed: int | None = None) -> None:
        """Replace every rule (validated first: on error nothing changes) and reseed the RNG."""
        parsed = [FaultRule.from_dict(raw) for raw in rules]
        with self._lock:
            self._rules = parsed
            self._generation += 1
            if seed is not None:
                self._seed = int(seed)
            self._rng = random.Random(self._seed)

    def add_rule(self, rule: Mapping[str, Any]) -> None:
        parsed = FaultRule.from_dict(rule)
        with self._lock:
            self._rules.append(parsed)
            self._generation += 1

    @property
    def generation(self) -> int:
        """The current generation of the rules (see the class). Read without the lock, as `__bool__`: one
        attribute read is atomic, and every request asks both (with 64 requests at once, taking the lock
        was a queue of threads)."""
        return self._generation

    def clear(self) -> None:
        self.set_rules([])

    def snapshot(self) -> dict[str, Any]:
        """``{"seed": n, "rules": [rule + "fired"]}`` — what ``GET /_emulator/faults`` returns."""
        with self._lock:
            return {"seed": self._seed, "rules": [rule.to_dict() for rule in self._rules]}

    def __bool__(self) -> bool:
        return bool(self._rules)  # the list is replaced or appended to under the lock, read whole here

    def take(
        self,
        kinds: Collection[str],
        method: str,
        target: str,
        applicable: Callable[[FaultRule], bool] | None = None,
        arrived: int | None = None,
    ) -> FaultRule | None:
        """Fire the first rule of one of `kinds` matching this request, or return None.

        `target` is the request path with its query. `applicable` can veto rules that would have no effect
        on this particular request; vetoed rules neither fire nor draw from the RNG. `arrived` is the
        generation the request arrived in: rules set after it never fire for it.
        """
        with self._lock:
            if not self._rules or (arrived is not None and arrived != self._generation):
                return None
            for rule in self._rules:
                if rule.kind not in kinds or not rule.matches(method, target):
                    continue
                if applicable is not None and not applicable(rule):
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                rule.fired += 1
                return rule
        return None
