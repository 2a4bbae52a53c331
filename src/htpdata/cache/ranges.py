"""Byte-range arithmetic for the cache: pure functions, no I/O.

Ranges are half-open ``(start, end)`` pairs of ints. What a tier holds of a file is a set of
*pieces* (ranges with a reference to where their bytes are); a read asks for ranges; the planner
says which bytes come from which piece and which must be fetched, merged into few requests.
:class:`Spans` finds the pieces covering a range in logarithmic time however many are held.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Range", "Spans", "clip", "coalesce", "merge", "split", "subtract", "total"]

Range = tuple[int, int]
T = TypeVar("T")


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
    unless a single input range is already larger (it is then kept whole). The result is
    sorted and disjoint and covers every input byte."""
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
    """The parts of ``ranges`` not covered by ``holes`` (both need not be sorted); sorted,
    disjoint."""
    cut = merge(holes)
    out: list[Range] = []
    i = 0
    for start, end in merge(ranges):
        pos = start
        while i < len(cut) and cut[i][1] <= pos:
            i += 1
        j = i
        while j < len(cut) and cut[j][0] < end:
            hs, he = cut[j]
            if hs > pos:
                out.append((pos, hs))
            pos = max(pos, he)
            if pos >= end:
                break
            j += 1
        if pos < end:
            out.append((pos, end))
    return out


def split(r: Range, max_size: int) -> list[Range]:
    """``r`` cut into consecutive pieces of at most ``max_size`` bytes."""
    start, end = r
    return [(s, min(s + max_size, end)) for s in range(start, end, max_size)]


def clip(ranges: Iterable[Range], size: int) -> list[Range]:
    """Each range clipped to ``[0, size]`` (an end past the file reads to its end)."""
    return [(max(0, min(s, size)), max(0, min(e, size))) for s, e in ranges]


def total(ranges: Iterable[Range]) -> int:
    """Bytes in the union of ``ranges``."""
    return sum(e - s for s, e in merge(ranges))


class Spans(Generic[T]):
    """Pieces ``(start, end, ref)`` sorted by start, with the furthest-reaching piece among
    each prefix precomputed, so the pieces covering any range are found in O(log n) per piece
    returned (a greedy walk that always takes the piece reaching furthest: fewest pieces)."""

    __slots__ = ("_best", "_items", "_starts")

    def __init__(self, items: Iterable[tuple[int, int, T]]) -> None:
        self._items = sorted((i for i in items if i[1] > i[0]), key=lambda i: (i[0], -i[1]))
        self._starts = [i[0] for i in self._items]
        best: list[int] = []
        for k, item in enumerate(self._items):
            if best and self._items[best[-1]][1] >= item[1]:
                best.append(best[-1])
            else:
                best.append(k)
        self._best = best

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[int, int, T]]:
        return iter(self._items)

    def parts(self, r: Range) -> list[tuple[int, int, T]]:
        """The held sub-ranges of ``r``, each with the piece that holds it, in order; the
        gaps are what is missing."""
        start, end = r
        out: list[tuple[int, int, T]] = []
        pos = start
        items, starts, best = self._items, self._starts, self._best
        while pos < end:
            k = bisect_right(starts, pos) - 1
            if k >= 0:
                piece = items[best[k]]
                if piece[1] > pos:
                    stop = min(piece[1], end)
                    out.append((pos, stop, piece[2]))
                    pos = stop
                    continue
            nxt = k + 1  # nothing holds pos: jump to the next piece's start
            if nxt >= len(items) or starts[nxt] >= end:
                break
            pos = starts[nxt]
        return out

    def cover(self, r: Range) -> list[tuple[int, int, T]] | None:
        """Pieces covering ``r`` exactly, or None if any byte is missing."""
        if r[1] <= r[0]:
            return []
        got = self.parts(r)
        pos = r[0]
        for s, e, _ in got:
            if s != pos:
                return None
            pos = e
        return got if pos == r[1] else None

    def held(self) -> list[Range]:
        """The union of the pieces."""
        return merge((s, e) for s, e, _ in self._items)
