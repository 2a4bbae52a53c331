"""A tier's usage summary: what a report needs, small enough to read at once (pure).

Built from one scan (by every eviction pass and by ``htpdata report --refresh``) and stored as
``ROOT/usage.json``, so reports over a tier with millions of entries read one small file
instead of walking the tree. Sizes are aggregated; only the ``coldest`` few entries are listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from .disk import EntryInfo

__all__ = ["summarize"]

COLDEST = 20


def _namespace(name: str) -> str:
    if name.startswith("rucio:"):
        return "rucio:" + name.split(":", 2)[1]
    return name.split(":", 1)[0] if ":" in name else "?"


def summarize(entries: Iterable[EntryInfo], pins: Mapping[str, float], now: float,
              coldest: int = COLDEST) -> dict[str, Any]:
    """Totals, pinned bytes, and bytes and files by user, group, dataset and namespace."""
    total = files = pinned = complete = 0
    groups: dict[str, dict[str, list[int]]] = {
        k: defaultdict(lambda: [0, 0]) for k in ("user", "group", "dataset", "namespace")}
    candidates: list[EntryInfo] = []
    for e in entries:
        total += e.bytes
        files += 1
        is_pinned = pins.get(e.key, 0.0) > now
        pinned += e.bytes if is_pinned else 0
        complete += e.complete
        name = str(e.meta.get("name", "?"))
        for k, v in (("user", e.meta.get("user")), ("group", e.meta.get("group")),
                     ("dataset", e.meta.get("dataset")), ("namespace", _namespace(name))):
            row = groups[k][str(v or "-")]
            row[0] += e.bytes
            row[1] += 1
        if not is_pinned and e.readers == 0:
            candidates.append(e)
            if len(candidates) > 4 * coldest:  # keep memory flat on huge tiers
                candidates.sort(key=lambda x: x.last_access)
                del candidates[coldest:]
    candidates.sort(key=lambda x: x.last_access)
    out: dict[str, Any] = {"t": now, "total": total, "entries": files, "pinned": pinned,
                           "complete": complete}
    for k, rows in groups.items():
        out[f"by_{k}"] = {who: b for who, (b, _) in rows.items()}
        out[f"files_by_{k}"] = {who: n for who, (_, n) in rows.items()}
    out["coldest"] = [{"name": e.meta.get("name"), "bytes": e.bytes, "last_access": e.last_access,
                       "user": e.meta.get("user"), "key": e.key} for e in candidates[:coldest]]
    return out
