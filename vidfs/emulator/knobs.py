"""Settings of an emulated vendor: a table of `Knob`s (see `vidfs.emulator.vendor`), and the parsers that
check a posted value and turn it into the attribute's value (raising ValueError with the setting's name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Parse = Callable[[str, Any], Any]


def as_str(name: str, value: Any) -> str:
    return str(value)


def as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer") from None


def as_bool(name: str, value: Any) -> bool:
    return bool(value)


def positive(name: str, value: Any) -> int:
    number = as_int(name, value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1")
    return number


def non_negative(name: str, value: Any) -> int:
    number = as_int(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0")
    return number


def at_least(low: int) -> Parse:
    """An integer, raised to `low` if below (the vendors that clamp rather than refuse)."""
    return lambda name, value: max(low, as_int(name, value))


def optional(parse: Parse) -> Parse:
    """None stays None (e.g. "no cap"); anything else is parsed."""
    return lambda name, value: None if value is None else parse(name, value)


def one_of(*choices: str) -> Parse:
    def parse(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}")
        return str(value)

    return parse


@dataclass(frozen=True)
class Knob:
    """One setting: parsed by `parse`, then stored in `attr`, or handed to method `apply`."""

    attr: str | None
    parse: Parse = as_str
    apply: str | None = None  # method called with the parsed value (instead of setting `attr`)
    one_shot: bool = False  # a trigger: `apply()` is called, without arguments, when the value is true
    shown: bool = True  # False: accepted (an alias) but not listed by GET /settings


def knob(attr: str, parse: Parse = as_str, *, shown: bool = True) -> Knob:
    return Knob(attr, parse, shown=shown)


def trigger(method: str) -> Knob:
    """A one-shot setting: posting it true calls ``self.<method>()``; it always reads false."""
    return Knob(None, as_bool, apply=method, one_shot=True)
