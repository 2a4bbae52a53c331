"""Rucio's answers to htpdata's types: pure functions, tested without a server.

A ``list_replicas`` answer is kept (in memory and in the metadata cache) as a compact row, a
list ``[scope, name, bytes, adler32, [[pfn, rse, tape], ...]]``: only what htpdata uses, and
lists rather than dicts so that a 5000-file dataset's cached answer loads in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..catalogs import FileEntry
from ..replicas import Replica

__all__ = ["CompactRow", "adler32_text", "compact_row", "did_name", "file_entry", "replicas_of"]

CompactRow = list[Any]
"""``[scope, name, bytes | None, adler32 | None, [[pfn, rse, tape], ...]]``."""


def did_name(scope: str, name: str) -> str:
    return f"rucio:{scope}:{name}"


def compact_row(row: Mapping[str, Any]) -> CompactRow:
    """One ``list_replicas`` row as a :data:`CompactRow`.

    Rucio's per-PFN ``priority`` is dropped: with ``sort=random`` it is only the position after
    the shuffle. Older servers without ``pfns`` give ``rses: {rse: [pfn, ...]}``.
    """
    pfns: Mapping[str, Mapping[str, Any]] = row.get("pfns") or {}
    reps = [[pfn, str(info.get("rse", "?")), str(info.get("type", "DISK")).upper() == "TAPE"]
            for pfn, info in pfns.items()]
    if not pfns:
        reps = [[pfn, rse, False] for rse, urls in (row.get("rses") or {}).items()
                for pfn in urls]
    return [row["scope"], row["name"], row.get("bytes"), row.get("adler32"), reps]


def adler32_text(value: object) -> str | None:
    """Rucio's adler32 as catalogs write it: eight lower-case hex digits (Rucio may drop
    leading zeros)."""
    return str(value).lower().rjust(8, "0") if value else None


def file_entry(row: Sequence[Any] | Mapping[str, Any]) -> FileEntry:
    """A :data:`CompactRow` (or ``list_files`` row turned into one; or a row as Rucio gives
    it) as a :class:`FileEntry`."""
    if isinstance(row, Mapping):
        row = compact_row(row)
    scope, name, size, adler = row[0], row[1], row[2], row[3]
    return FileEntry(did_name(scope, name), int(size) if size is not None else None,
                     adler32_text(adler))


def replicas_of(row: Sequence[Any] | Mapping[str, Any], logical: str | None = None
                ) -> list[Replica]:
    """The replicas in a :data:`CompactRow` (or a row as Rucio gives it), tape marked, each
    keeping its logical name.

    htpdata's own ordering (:func:`htpdata.replicas.order_replicas`) applies site preferences
    and protocol order, and drops tape.
    """
    if isinstance(row, Mapping):
        row = compact_row(row)
    name = logical or did_name(row[0], row[1])
    return [Replica(pfn, rse, pfn.split("://", 1)[0] if "://" in pfn else "file", name,
                    tape=bool(tape)) for pfn, rse, tape in row[4]]
