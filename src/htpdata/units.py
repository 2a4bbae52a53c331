"""Byte counts as people read them (decimal units, as storage systems and Rucio show them)."""

from __future__ import annotations

__all__ = ["human_bytes"]

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(n: float | None) -> str:
    """``1.2 GB``, ``512 B``; ``-`` for an unknown size (None)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in _UNITS:
        if abs(size) < 1000 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
