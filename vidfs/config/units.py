"""Sizes, durations and values in messages: how the config file writes them and how errors show them.

Sizes are "256MiB", "10GiB", "1MB", "512k" or plain byte counts: KiB/MiB/GiB/TiB and the single letters
k/K, M, G, T are powers of 1024, kB/KB, MB, GB, TB powers of 1000 (units are case-insensitive). Durations are
"250ms", "30s", "5m", "1h", "30d", "1w", combinations like "1h30m", or plain numbers of seconds.

Everything user-supplied is escaped (`escape`, `quote`, `show`) so an error message stays on one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import NoReturn

from vidfs.config.types import GiB, KiB, MiB, TiB
from vidfs.errors import ConfigError


def escape(text: str, quote: str = "") -> str:
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\\" and quote:
            out.append("\\\\")
        elif quote and ch == quote:
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or ch in "\u2028\u2029" or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return '"' + escape(text, '"') + '"'


def show(value: object) -> str:
    """A TOML-ish rendering of a (non-secret) value for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return f"a {type(value).__name__}"


def type_word(value: object) -> str:
    """The type of a value without the value: used for secrets."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return show(value)


def toml_key(name: str) -> str:
    if name and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return quote(name, limit=300)


def format_size(n: int) -> str:
    """A byte count the way the config writes it: "1MiB", "64KiB", "1000"."""
    for unit, mult in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def fail(message: str) -> NoReturn:
    raise ConfigError(message)


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIZE_RE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]*)\s*")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "kb": 1000,
    "m": MiB,
    "mib": MiB,
    "mb": 1000**2,
    "g": GiB,
    "gib": GiB,
    "gb": 1000**3,
    "t": TiB,
    "tib": TiB,
    "tb": 1000**4,
}


def parse_size(text: str | int, *, where: str) -> int:
    """Bytes from "256MiB", "10GiB", "1MB", "512k", "0" or an int; `where` prefixes the error message."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            fail(f'{where}: expected a size like "256MiB", got {text} (negative)')
        return text
    if isinstance(text, str):
        match = _SIZE_RE.fullmatch(text)
        if match:
            mult = _SIZE_UNITS.get(match.group(2).lower())
            if mult is not None:
                number = match.group(1)
                if "." in number:
                    whole, _, frac = number.partition(".")
                    frac = frac or "0"
                    return (int(whole or "0") * 10 ** len(frac) + int(frac)) * mult // 10 ** len(frac)
                return int(number) * mult
    fail(f'{where}: expected a size like "256MiB", got {show(text)}')


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]+)")
_PLAIN_NUMBER = re.compile(rf"\s*({_NUMBER})\s*")


def parse_duration(text: str | int | float, *, where: str) -> float:
    """Seconds from "250ms", "30s", "5m", "1h", "30d", "1w", "1h30m", or a plain number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if math.isfinite(text) and text >= 0:
            return float(text)
    elif isinstance(text, str):
        plain = _PLAIN_NUMBER.fullmatch(text)
        if plain:
            return float(plain.group(1))
        total = 0.0
        pos = 0
        parts = 0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                if text[pos:].strip() == "":
                    pos = len(text)
                    break
                parts = 0
                break
            unit = _DURATION_UNITS.get(match.group(2).lower())
            if unit is None:
                parts = 0
                break
            total += float(match.group(1)) * unit
            parts += 1
            pos = match.end()
        if parts and pos == len(text) and math.isfinite(total):
            return total
    fail(f'{where}: expected a duration like "30s", "5m" or "1h", got {show(text)}')
