"""Plain-text tables for the commands that print them (check, ls, stats)."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def megabytes(value: float) -> str:
    return f"{value / 1e6:.1f} MB"
