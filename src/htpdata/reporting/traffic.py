"""Fold the per-process accounting journals into daily traffic (hits, misses, bytes).

Journals (``ROOT/journal/HOST-PID-T.jsonl``, see :mod:`htpdata.cache.accounting`) are read from
the offset the last fold reached; their counters are added into ``ROOT/traffic/DAY.json`` per
user, group, dataset and namespace; the offsets are stored in ``ROOT/traffic/offsets.json``.
A fold runs under a lease, so two reports at once do not count twice. Journals of processes
that are gone and fully folded are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from ..atomic import write_atomically
from ..cache.accounting import COUNTERS
from ..cache.disk import DiskTier, _pid_alive
from ..cache.evict import lease
from ..names import namespace_of

__all__ = ["fold", "read_days"]


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fold(tier: DiskTier) -> int:
    """Add new journal lines into the daily files; returns how many lines were folded."""
    folder = tier.layout.journal
    out = tier.root / "traffic"
    with lease(tier, "fold", stale_after=300) as got:
        if not got:
            return 0
        out.mkdir(exist_ok=True)
        offsets: dict[str, int] = _load(out / "offsets.json")
        days: dict[str, dict[str, Any]] = {}
        lines = 0
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        for name in names:
            path = folder / name
            start = int(offsets.get(name, 0))
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    chunk = fh.read()
            except OSError:
                continue
            end = start + chunk.rfind(b"\n") + 1  # a half-written last line waits
            for raw in chunk[: end - start].splitlines():
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue
                day = _day(float(row.get("t", 0)))
                agg = days.get(day)
                if agg is None:
                    agg = days[day] = _empty(_load(out / f"{day}.json"))
                _add(agg, row)
                lines += 1
            offsets[name] = end
            if _finished(name) and end >= path.stat().st_size:
                with contextlib.suppress(OSError):
                    path.unlink()
                offsets.pop(name, None)
        for day, agg in days.items():
            write_atomically(out / f"{day}.json", json.dumps(agg))
        write_atomically(out / "offsets.json", json.dumps(offsets))
        return lines


def _finished(journal: str) -> bool:
    """A journal whose process (on this host) is gone will not grow again."""
    host, _, _rest = journal.rpartition("-")  # HOST-PID-T.jsonl
    host, _, pid = host.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not _pid_alive(int(pid))


def _empty(existing: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"totals": dict.fromkeys(COUNTERS, 0)}
    for k in ("user", "group", "dataset", "namespace", "site"):
        base[f"by_{k}"] = {}
    for k, v in existing.items():
        base[k] = v
    return base


def _add(agg: dict[str, Any], row: dict[str, Any]) -> None:
    for c in COUNTERS:
        agg["totals"][c] = agg["totals"].get(c, 0) + int(row.get(c, 0) or 0)
    for k, v in (("user", row.get("user")), ("group", row.get("group")),
                 ("dataset", row.get("dataset")), ("namespace", namespace_of(
                     str(row.get("name", "")))), ("site", row.get("site"))):
        bucket = agg[f"by_{k}"].setdefault(str(v or "-"), dict.fromkeys(COUNTERS, 0))
        for c in COUNTERS:
            bucket[c] = bucket.get(c, 0) + int(row.get(c, 0) or 0)


def read_days(tier: DiskTier, since: float | None = None) -> dict[str, dict[str, Any]]:
    """Daily traffic aggregates (after folding), oldest first."""
    folder = tier.root / "traffic"
    cutoff = _day(since) if since is not None else ""
    out = {}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and name[:4].isdigit() and name[:-5] >= cutoff:
                out[name[:-5]] = _empty(_load(folder / name))
    return dict(sorted(out.items()))

