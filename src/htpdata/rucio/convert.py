"""Rucio's answers to htpdata's types: pure functions, tested without a server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..catalogs import FileEntry
from ..replicas import Replica

__all__ = ["did_name", "file_entry", "replicas_of"]


def did_name(scope: str, name: str) -> str:
    return f"rucio:{scope}:{name}"


def file_entry(row: Mapping[str, Any]) -> FileEntry:
    """A ``list_files`` or ``list_replicas`` row as a :class:`FileEntry`."""
    adler = row.get("adler32")
    size = row.get("bytes")
    return FileEntry(did_name(row["scope"], row["name"]),
                     int(size) if size is not None else None,
                     str(adler).lower().rjust(8, "0") if adler else None)


def replicas_of(row: Mapping[str, Any], logical: str | None = None) -> list[Replica]:
    """The replicas in one ``list_replicas`` row, tape marked, each keeping its logical name.

    Rucio's per-PFN ``priority`` is ignored: with ``sort=random`` it is only the position after
    the shuffle. htpdata's own ordering (:func:`htpdata.replicas.order_replicas`) applies site
    preferences and protocol order, and drops tape.
    """
    name = logical or did_name(row["scope"], row["name"])
    out = []
    pfns: Mapping[str, Mapping[str, Any]] = row.get("pfns") or {}
    for pfn, info in pfns.items():
        scheme = pfn.split("://", 1)[0] if "://" in pfn else "file"
        out.append(Replica(
            url=pfn, site=str(info.get("rse", "?")), protocol=scheme, name=name,
            tape=str(info.get("type", "DISK")).upper() == "TAPE"))
    if not pfns:  # older servers: only rses -> [pfn]
        for rse, urls in (row.get("rses") or {}).items():
            for pfn in urls:
                out.append(Replica(pfn, rse, pfn.split("://", 1)[0], name))
    return out


def group_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(r["scope"], r["name"]): r for r in rows}
