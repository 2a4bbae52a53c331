"""Byte-range arithmetic for the cache: pure functions, no I/O.

Ranges are half-open ``(start, end)`` pairs of ints. What the cache holds of a file is a set of
*extents* (ranges stored as files); a read asks for ranges; the planner says which bytes come
from which extent and which must be fetched, merged into few upstream requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Range", "coalesce", "cover", "merge", "split", "subtract"]

Range = tuple[int, int]


def merge(ranges: Iterable[Range], gap: int = 0) -> list[Range]:
    """Sorted union of ``ranges``; ranges at most ``gap`` bytes apart become one."""
    out: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def coalesce(ranges: Iterable[Range], gap: int, max_size: int) -> list[Range]:
    """Like :func:`merge` with ``gap``, but never letting a merged range exceed ``max_size``
    unless a single input range is already larger (it is then kept whole)."""
    out: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1] + gap and max(end, out[-1][1]) - out[-1][0] <= max_size:
            out[-1][1] = max(out[-1][1], end)
        elif out and start < out[-1][1]:  # overlapping but too big to join: trim the overlap
            if end > out[-1][1]:
                out.append([out[-1][1], end])
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """The parts of ``ranges`` not covered by ``holes`` (both need not be sorted)."""
    cut = merge(holes)
    out: list[Range] = []
    for start, end in merge(ranges):
        pos = start
        for hs, he in cut:
            if he <= pos:
                continue
            if hs >= end:
                break
            if hs > pos:
                out.append((pos, hs))
            pos = max(pos, he)
            if pos >= end:
                break
        if pos < end:
            out.append((pos, end))
    return out


def split(r: Range, max_size: int) -> list[Range]:
    """``r`` cut into consecutive pieces of at most ``max_size`` bytes."""
    start, end = r
    return [(s, min(s + max_size, end)) for s in range(start, end, max_size)] or []


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of the file, found in ``extent``."""

    extent: Range
    start: int
    end: int


def cover(r: Range, extents: Sequence[Range]) -> list[Piece] | None:
    """Pieces of ``extents`` that together cover ``r`` exactly, or None if any byte is missing.

    Prefers the extent reaching furthest at each step, so few extent files are read.
    """
    start, end = r
    if end <= start:
        return []
    pieces: list[Piece] = []
    pos = start
    while pos < end:
        best: Range | None = None
        for ext in extents:
            if ext[0] <= pos < ext[1] and (best is None or ext[1] > best[1]):
                best = ext
        if best is None:
            return None
        stop = min(best[1], end)
        pieces.append(Piece(best, pos, stop))
        pos = stop
    return pieces
