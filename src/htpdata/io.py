"""The reader contract: what every byte-range reader of one file provides.

:class:`~htpdata.reader.ReplicaReader` (storage, with replica failover) and
:class:`~htpdata.cache.CachedReader` (the tiers, then storage) both satisfy :class:`FileReader`;
the fsspec filesystem, the CLI, staging, conversion and the HTTP gateway talk to this Protocol
only, never to a concrete class. Counters follow uproot's performance counters: a small
dataclass a caller can read at any time (updated under the reader's own lock).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, SupportsIndex, runtime_checkable

if TYPE_CHECKING:
    from .replicas import ResolvedFile

__all__ = ["FileReader", "ReadCounters", "byte_range"]


@dataclass
class ReadCounters:
    """What one reader did so far. Bytes are the bytes handed to the caller, by where they
    came from; ``upstream`` counts bytes fetched from storage (may exceed what was asked:
    head, tail and gap filling)."""

    requests: int = 0
    """``read_ranges`` calls."""
    ranges: int = 0
    """Ranges asked for in those calls."""
    bytes_read: int = 0
    """Bytes returned to the caller."""
    memory: int = 0
    local: int = 0
    shared: int = 0
    upstream: int = 0
    """Bytes fetched from storage."""
    upstream_requests: int = 0
    """Requests sent to storage (one vector read counts once)."""
    inserted: int = 0
    """Bytes written into disk tiers."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@runtime_checkable
class FileReader(Protocol):
    """Byte-range reads of one file. Thread-safe: uproot and Dask read from threads."""

    name: str
    """The logical name (or URL) as the user gave it, canonical form."""
    resolved: ResolvedFile
    """The replicas and what the catalogs know of the file."""
    counters: ReadCounters

    def size(self) -> int:
        """The file's size in bytes (from the catalog, the cache, or a stat upstream)."""
        ...

    def stat(self) -> dict[str, object]:
        """``{"name", "size", "type"}`` of the file (fsspec's ``info`` shape)."""
        ...

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; an end past the file is clipped, as a file read is."""
        ...

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each range, in order, in as few upstream requests as possible."""
        ...

    def hold(self) -> None:
        """Mark the file as open (eviction leaves its cache entries alone); counted: each
        ``hold`` needs its own ``release``. A no-op where nothing is cached."""
        ...

    def release(self) -> None:
        """Undo one :meth:`hold`."""
        ...


def byte_range(start: SupportsIndex | None, end: SupportsIndex | None, size: int
               ) -> tuple[int, int]:
    """``[start, end)`` in fsspec's terms made concrete for a file of ``size`` bytes.

    ``None`` is the file's start or end, a negative offset counts from the end, and both are
    clipped to the file (so ``end >= start``). Offsets may be of any integer type (uproot
    passes numpy's); anything that is not an integer (a float, a string) is a ``TypeError``:
    a caller's bad argument, never a storage failure.
    """
    s = 0 if start is None else operator.index(start)
    e = size if end is None else operator.index(end)
    if s < 0:
        s = max(0, size + s)
    if e < 0:
        e = max(0, size + e)
    s = min(s, size)
    return s, max(s, min(e, size))
