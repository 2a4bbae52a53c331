"""Rucio's answers to htpdata's types: pure functions, tested without a server.

A ``list_replicas`` answer is kept (in memory and in the metadata cache) as a compact row: one
string per file, its fields joined by tabs, ``scope, name, bytes, adler32`` then ``pfn, rse,
tape`` for each replica (:func:`compact_row`, :func:`unpack`). Only what htpdata uses, and one
string rather than nested lists or dicts, for speed: a 5000-file dataset's cached answer loads
as 5000 strings, which Python's cyclic garbage collector does not track, instead of 20 000
lists it would walk again and again while they are built (that walk cost more than the load
itself). Rucio's DID names and PFNs never hold a tab (its DID schemas allow no whitespace, and a
URL would carry it percent-encoded), so the tab is a safe separator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..catalogs import FileEntry
from ..replicas import Replica

__all__ = ["CompactRow", "adler32_text", "compact_row", "did_name", "file_entry", "replicas_of",
           "unpack"]

CompactRow = str
"""``scope, name, bytes, adler32, pfn1, rse1, tape1, pfn2, ...`` joined by tabs; an unknown
size or checksum is empty, ``tape`` is ``1`` or empty."""

Unpacked = tuple[str, str, int | None, str | None, Iterator[tuple[str, str, str]]]
"""A compact row's fields: scope, name, bytes, adler32, and an iterator of its replicas as
``(pfn, rse, tape)`` with ``tape`` ``"1"`` or ``""``."""


def did_name(scope: str, name: str) -> str:
    return f"rucio:{scope}:{name}"


def compact_row(row: Mapping[str, Any]) -> CompactRow:
    """One ``list_replicas`` row as a :data:`CompactRow`.

    Rucio's per-PFN ``priority`` is dropped: with ``sort=random`` it is only the position after
    the shuffle. Older servers without ``pfns`` give ``rses: {rse: [pfn, ...]}``.
    """
    pfns: Mapping[str, Mapping[str, Any]] = row.get("pfns") or {}
    fields = [str(row["scope"]), str(row["name"]),
              "" if row.get("bytes") is None else str(int(row["bytes"])),
              str(row.get("adler32") or "")]
    for pfn, info in pfns.items():
        fields += [pfn, str(info.get("rse", "?")),
                   "1" if str(info.get("type", "DISK")).upper() == "TAPE" else ""]
    if not pfns:
        for rse, urls in (row.get("rses") or {}).items():
            for pfn in urls:
                fields += [pfn, rse, ""]
    return "\t".join(fields)


def unpack(row: CompactRow) -> Unpacked:
    """The fields of a compact row (the inverse of :func:`compact_row`); the replicas come
    as an iterator, so a caller that keeps only some builds nothing for the others."""
    parts = row.split("\t")
    size, adler = parts[2], parts[3]
    pfns = zip(parts[4::3], parts[5::3], parts[6::3])  # noqa: B905  (triples by format)
    return parts[0], parts[1], int(size) if size else None, adler or None, pfns


def scope_name(row: CompactRow) -> tuple[str, str]:
    """(scope, name) of a compact row, without unpacking the rest."""
    scope, name, _ = row.split("\t", 2)
    return scope, name


def adler32_text(value: object) -> str | None:
    """Rucio's adler32 as catalogs write it: eight lower-case hex digits (Rucio may drop
    leading zeros)."""
    return str(value).lower().rjust(8, "0") if value else None


def file_entry(row: CompactRow | Sequence[Any] | Mapping[str, Any]) -> FileEntry:
    """A :data:`CompactRow`, a ``list_files`` row (``[scope, name, bytes, adler32]``) or a row
    as Rucio gives it, as a :class:`FileEntry`."""
    if isinstance(row, Mapping):
        row = compact_row(row)
    if isinstance(row, str):
        scope, name, size, adler, _ = unpack(row)
        return FileEntry(did_name(scope, name), size, adler32_text(adler))
    return FileEntry(did_name(row[0], row[1]), int(row[2]) if row[2] is not None else None,
                     adler32_text(row[3]))


def replicas_of(row: CompactRow | Mapping[str, Any], logical: str | None = None
                ) -> list[Replica]:
    """The replicas in a :data:`CompactRow` (or a row as Rucio gives it), tape marked, each
    keeping its logical name.

    htpdata's own ordering (:func:`htpdata.replicas.order_replicas`) applies site preferences
    and protocol order, and drops tape.
    """
    scope, fname, _, _, pfns = unpack(compact_row(row) if isinstance(row, Mapping) else row)
    name = logical or did_name(scope, fname)
    return [Replica(pfn, rse, pfn.split("://", 1)[0] if "://" in pfn else "file", name,
                    tape=bool(tape)) for pfn, rse, tape in pfns]
