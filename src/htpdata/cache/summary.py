"""An area's usage summary: what reports and quota decisions need, small enough to read at once
(pure).

Built from one scan (every eviction pass, ``htpdata report --refresh``) and stored as the area's
``usage.json`` by the area's steward (its user, or the tier's owner), so reports over an area of
millions of entries read one small file. Usage is counted by the files' owners (``st_uid``,
``st_gid``), never by what a writer declares. Names and datasets appear only in summaries of
areas whose readers may see them (a user's own; the trusted area's, whose names are the
facility's own); a summary others can read never names another user's files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from ..names import namespace_of
from .scan import EntryStat

__all__ = ["COLDEST", "summarize"]

COLDEST = 20


def summarize(entries: Iterable[EntryStat], now: float, *, names: bool,
              in_use: frozenset[str] = frozenset(),
              records: Mapping[str, tuple[int, int]] | None = None,
              coldest: int = COLDEST) -> dict[str, Any]:
    """Totals, pinned bytes, bytes and entries by owner uid and gid (and by dataset and
    namespace when ``names``), and the coldest few entries eviction would take next.
    ``records`` are the byte counters of the reader records this summary includes."""
    total = files = pinned = complete = 0
    groups: dict[str, dict[str, list[int]]] = {
        k: defaultdict(lambda: [0, 0]) for k in (("uid", "gid", "dataset", "namespace")
                                                 if names else ("uid", "gid"))}
    candidates: list[EntryStat] = []
    for e in entries:
        total += e.bytes
        files += 1
        is_pinned = e.pinned_until > now
        pinned += e.bytes if is_pinned else 0
        complete += e.complete
        rows: list[tuple[str, object]] = [("uid", e.uid), ("gid", e.gid)]
        if names:
            rows += [("dataset", e.dataset), ("namespace", namespace_of(e.name or "?"))]
        for k, v in rows:
            row = groups[k][str(v if v is not None else "-")]
            row[0] += e.bytes
            row[1] += 1
        if not is_pinned and e.key not in in_use:
            candidates.append(e)
            if len(candidates) > 4 * coldest:  # keep memory flat on huge areas
                candidates.sort(key=lambda x: x.last_access)
                del candidates[coldest:]
    candidates.sort(key=lambda x: x.last_access)
    out: dict[str, Any] = {"schema": 2, "t": now, "total": total, "entries": files,
                           "pinned": pinned, "complete": complete,
                           "records": {k: list(v) for k, v in (records or {}).items()}}
    for k, by in groups.items():
        out[f"by_{k}"] = {who: b for who, (b, _) in by.items()}
        out[f"files_by_{k}"] = {who: n for who, (_, n) in by.items()}
    out["coldest"] = [{"key": e.key, "bytes": e.bytes, "last_access": e.last_access,
                       "uid": e.uid, **({"name": e.name} if names else {})}
                      for e in candidates[:coldest]]
    return out
