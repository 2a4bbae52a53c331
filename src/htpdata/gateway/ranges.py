"""HTTP range requests, as pure decisions: parse ``Range``, judge ``If-Range``, frame a
``multipart/byteranges`` body. No I/O; the server (:mod:`.app`) only carries these out.

What ROOT's own HTTP client (``TWebFile``, the one in the PyPI wheels) needs shapes the choices:

- it asks for many ranges in one request and copies each part's bytes, in order, into one
  buffer: every range asked for gets its own part, in the order asked, never merged or
  reordered (RFC 9110 lets a server coalesce; ROOT would then read the wrong bytes);
- it finds the parts by the boundary taken verbatim from ``Content-Type`` up to the end of the
  line: no quotes, no parameter after it, and digits only (as XrdHttp's), which it was seen to
  parse where an alphabetic one hung it;
- it matches header names case-sensitively (``Content-Range:``, ``Content-Type: multipart``),
  so the parts' headers are written exactly so.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_RANGES",
    "ByteRanges",
    "RangeNotSatisfiable",
    "content_range",
    "etag_for",
    "if_range_allows",
    "multipart_boundary",
    "multipart_layout",
    "parse_range",
]

MAX_RANGES = 4096
"""More ranges than this in one request are refused (416): a request line ROOT builds stays
under about 8000 characters, some 500 ranges; this bounds the work one request can ask for."""

_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class RangeNotSatisfiable(ValueError):
    """The ``Range`` header asks for nothing the file has (answered with 416)."""


@dataclass(frozen=True)
class ByteRanges:
    """What a request asked for, resolved against the file's size: half-open ``[start, end)``
    ranges, in the order asked, each non-empty and inside the file."""

    ranges: tuple[tuple[int, int], ...]
    size: int

    @property
    def total(self) -> int:
        return sum(e - s for s, e in self.ranges)

    @property
    def multipart(self) -> bool:
        return len(self.ranges) > 1


def parse_range(header: str | None, size: int) -> ByteRanges | None:
    """The ranges of a ``Range`` header for a file of ``size`` bytes (RFC 9110, 14.1.2).

    ``None`` means "send the whole file" (no header, another unit, or a header that does not
    parse: a server ignores those). Raises :class:`RangeNotSatisfiable` when the ranges are
    well formed but none overlaps the file, or when there are more than :data:`MAX_RANGES`.
    Suffix ranges (``-500``: the last 500 bytes) and open ends (``100-``) are resolved here;
    ranges reaching past the end are clipped, as a file read is.
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        raise RangeNotSatisfiable(f"{len(parts)} ranges in one request; at most {MAX_RANGES}")
    out: list[tuple[int, int]] = []
    for part in parts:
        m = _SPEC.fullmatch(part)
        if m is None or (not m.group(1) and not m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if not first:  # suffix: the last N bytes
            n = int(last)
            if n == 0:
                continue
            out.append((max(0, size - n), size))
            continue
        start = int(first)
        end = size if not last else int(last) + 1
        if last and end <= start:
            return None  # last < first: invalid syntax, ignored as a whole
        if start >= size:
            continue  # unsatisfiable on its own; the others may still be served
        out.append((start, min(end, size)))
    if not out:
        raise RangeNotSatisfiable(f"no range overlaps the file's {size} bytes")
    return ByteRanges(tuple(out), size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value of ``[start, end)``."""
    return f"bytes {start}-{end - 1}/{size}"


def etag_for(name: str, size: int, adler32: str | None) -> str:
    """An entity tag from the content identity (name, size, adler32), the cache's own key.

    Strong when the adler32 is known (the bytes are pinned by a checksum), weak otherwise:
    ``If-Range`` compares strongly, so a weak tag never lets a client stitch ranges of two
    different versions of a file together.
    """
    digest = hashlib.blake2b(f"{name}\0{size}\0{adler32 or ''}".encode(),
                             digest_size=12).hexdigest()
    return f'"{digest}"' if adler32 else f'W/"{digest}"'


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a request's ``Range`` applies given its ``If-Range`` (RFC 9110, 13.1.5).

    No header: yes. An entity tag: only when it equals ours and ours is strong. A date (we
    keep no modification time): no, so the client gets the whole, current file.
    """
    if header is None:
        return True
    value = header.strip()
    return not etag.startswith("W/") and value == etag


def multipart_boundary() -> str:
    """A boundary of 20 random digits (see the module docstring for why digits)."""
    return "".join(secrets.choice("0123456789") for _ in range(20))


def multipart_layout(ranges: Sequence[tuple[int, int]], size: int, boundary: str,
                     content_type: str = "application/octet-stream"
                     ) -> tuple[list[bytes], bytes, int]:
    """The framing of a ``multipart/byteranges`` body: the header block before each part's
    bytes, the closing delimiter, and the body's total length (for ``Content-Length``).

    The body is ``heads[0] + bytes0 + heads[1] + bytes1 + ... + tail``; each head but the
    first starts with the CRLF that ends the previous part's bytes.
    """
    heads = []
    for i, (start, end) in enumerate(ranges):
        lead = "" if i == 0 else "\r\n"
        heads.append(f"{lead}--{boundary}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Range: {content_range(start, end, size)}\r\n\r\n".encode())
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len(h) for h in heads) + sum(e - s for s, e in ranges) + len(tail)
    return heads, tail, length
