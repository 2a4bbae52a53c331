"""adler32 of a whole file from the adler32s of its consecutive pieces (pure).

Extents carry their own adler32; combining them gives the file's without reading it again,
which is what lets a resumed stage verify a file whose first half came from an earlier run.
Same algorithm as zlib's ``adler32_combine`` (not exposed by Python's zlib).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["adler32_combine", "combine_all"]

_BASE = 65521


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """adler32 of A+B from adler32(A), adler32(B) and len(B)."""
    rem = len2 % _BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _BASE
    sum1 += (adler2 & 0xFFFF) + _BASE - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + _BASE - rem
    if sum1 >= _BASE:
        sum1 -= _BASE
    if sum1 >= _BASE:
        sum1 -= _BASE
    if sum2 >= (_BASE << 1):
        sum2 -= _BASE << 1
    if sum2 >= _BASE:
        sum2 -= _BASE
    return sum1 | (sum2 << 16)


def combine_all(pieces: Iterable[tuple[int, int]]) -> int:
    """adler32 of the concatenation of pieces given as (adler32, length), in order."""
    total = 1  # adler32 of b""
    for adler, length in pieces:
        total = adler32_combine(total, adler, length)
    return total
