"""Gather a report: usage from the summaries of the areas this user may see, traffic from the
reader records of the areas it stewards (folded first, so its own reads count at once)."""

from __future__ import annotations

import datetime as dt
import grp
import pwd
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cache import area_usage
from ..cache.evict import fold_now, tally_area
from ..cache.fold import read_days
from ..cache.tier import DiskTier
from ..cache.trust import TRUSTED
from ..client import Client
from ..quotas import limits_for

__all__ = ["BY", "Report", "build_report"]

BY = ("user", "group", "dataset", "namespace", "site")
SERVED = ("memory", "local", "shared")
COUNTERS = ("memory", "local", "shared", "upstream", "inserted", "requests", "staged")


def hit_ratio(row: Mapping[str, Any]) -> float | None:
    """Bytes served from the cache over all bytes read (None when nothing was read)."""
    served = sum(int(row.get(k, 0)) for k in SERVED)
    total = served + int(row.get("upstream", 0))
    return served / total if total else None


@dataclass
class TierReport:
    name: str
    root: str
    size: int
    usage: dict[str, Any]
    quotas: dict[str, dict[str, dict[str, int]]]
    days: dict[str, dict[str, Any]]


@dataclass
class Report:
    by: str
    since: float | None
    generated: float
    tiers: list[TierReport] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """One plain row per (tier, owner / dataset / ...): usage, quota and traffic."""
        rows = []
        for t in self.tiers:
            traffic: dict[str, dict[str, int]] = {}
            for day in t.days.values():
                for who, counts in day.get(f"by_{self.by}", {}).items():
                    acc = traffic.setdefault(who, dict.fromkeys(COUNTERS, 0))
                    for c in COUNTERS:
                        acc[c] += int(counts.get(c, 0))
            usage = t.usage.get(f"by_{self.by}", {}) if self.by != "site" else {}
            files = t.usage.get(f"files_by_{self.by}", {}) if self.by != "site" else {}
            kind = {"user": "users", "group": "groups"}.get(self.by)
            for who in sorted(set(usage) | set(traffic)):
                q = limits_for(t.quotas, kind, who) if kind else None
                used = int(usage.get(who, 0))
                tr = traffic.get(who, dict.fromkeys(COUNTERS, 0))
                rows.append({
                    "tier": t.name, self.by: who, "bytes": used, "files": int(files.get(who, 0)),
                    "share_of_tier": used / t.size if t.size else None,
                    "quota_soft": q["soft"] if q else None, "quota_hard": q["hard"] if q else None,
                    "share_of_quota": used / q["hard"] if q and q["hard"] else None,
                    **{f"served_{k}": tr.get(k, 0) for k in SERVED},
                    "upstream": tr.get("upstream", 0), "staged": tr.get("staged", 0),
                    "requests": tr.get("requests", 0), "hit_ratio": hit_ratio(tr)})
        return rows

    def tier_totals(self) -> list[dict[str, Any]]:
        """One row per tier: what it holds, and its traffic over the report's days (bytes
        served from the cache, fetched upstream by reads, fetched by stages; hit ratio)."""
        out = []
        for t in self.tiers:
            tot = dict.fromkeys(COUNTERS, 0)
            for day in t.days.values():
                for c in COUNTERS:
                    tot[c] += int(day.get("totals", {}).get(c, 0))
            held = int(t.usage.get("total", 0))
            out.append({"tier": t.name, "root": t.root, "bytes": held, "size": t.size,
                        "share": held / t.size if t.size else None,
                        "files": int(t.usage.get("entries", 0)),
                        "pinned": int(t.usage.get("pinned", 0)),
                        "served": sum(tot[k] for k in SERVED), "upstream": tot["upstream"],
                        "staged": tot["staged"], "hit_ratio": hit_ratio(tot)})
        return out

    def daily(self) -> list[dict[str, Any]]:
        rows = []
        for t in self.tiers:
            for day, agg in t.days.items():
                tot = agg.get("totals", {})
                rows.append({"tier": t.name, "day": day, **{k: int(tot.get(k, 0)) for k in
                                                            COUNTERS},
                             "hit_ratio": hit_ratio(tot)})
        return rows

    def top_datasets(self, n: int = 10) -> list[dict[str, Any]]:
        traffic: dict[str, int] = {}
        for t in self.tiers:
            for day in t.days.values():
                for ds, c in day.get("by_dataset", {}).items():
                    traffic[ds] = traffic.get(ds, 0) + sum(int(c.get(k, 0)) for k in
                                                           (*SERVED, "upstream"))
        return [{"dataset": d, "bytes_read": b} for d, b in
                sorted(traffic.items(), key=lambda x: -x[1])[:n]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "htpdata.report/1", "generated": self.generated, "by": self.by,
            "since": self.since,
            "tiers": [{"tier": t.name, "root": t.root, "size": t.size,
                       "bytes": t.usage.get("total", 0), "files": t.usage.get("entries", 0),
                       "pinned": t.usage.get("pinned", 0), "scanned": t.usage.get("t"),
                       "coldest": t.usage.get("coldest", []), "quotas": t.quotas}
                      for t in self.tiers],
            "totals": self.tier_totals(), "records": self.records(), "daily": self.daily(),
            "top_datasets": self.top_datasets()}

    def to_pandas(self) -> Any:
        """:meth:`records` as a pandas DataFrame (``pip install "htpdata[pandas]"``)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError('Report.to_pandas() needs pandas: pip install "htpdata[pandas]"'
                              ) from exc
        return pd.DataFrame.from_records(self.records())

    def _repr_html_(self) -> str:
        from ..display import report_html

        return report_html(self)


def _name(kind: str, key: str) -> str:
    """A uid or gid as the name people read (the number if the system does not know it)."""
    try:
        n = int(key)
        return pwd.getpwuid(n).pw_name if kind == "uid" else grp.getgrgid(n).gr_name
    except (ValueError, KeyError):
        return key


def _merge(into: dict[str, Any], summary: dict[str, Any]) -> None:
    for k in ("total", "entries", "pinned", "complete"):
        v = summary.get(k)
        into[k] = into.get(k, 0) + (v if isinstance(v, int) else 0)
    if isinstance(summary.get("t"), int | float):
        into["t"] = max(into.get("t") or 0, summary["t"])
    for src, dst, kind in (("uid", "user", "uid"), ("gid", "group", "gid"),
                           ("dataset", "dataset", ""), ("namespace", "namespace", "")):
        for prefix in ("by_", "files_by_"):
            rows = summary.get(f"{prefix}{src}")
            if not isinstance(rows, dict):
                continue
            target = into.setdefault(f"{prefix}{dst}", {})
            for who, n in rows.items():
                label = _name(kind, who) if kind else who
                if isinstance(n, int):
                    target[label] = target.get(label, 0) + n
    for c in summary.get("coldest") or []:
        if isinstance(c, dict):
            into.setdefault("coldest", []).append(
                {**c, "user": _name("uid", str(c.get("uid")))})


def _usage(tier: DiskTier, refresh: bool) -> dict[str, Any]:
    """What this user may see of ``tier``: its own area's summary (recounted if asked, or if
    there is none yet), the trusted area's (its owner's), the group area's."""
    out: dict[str, Any] = {"total": 0, "entries": 0, "pinned": 0, "complete": 0}
    for area in tier.read_areas():
        mine = area.writable and area.me.uid in (area.steward, 0)
        drop = tier.drop_box() if area.spec.kind == TRUSTED else None
        summary: dict[str, Any] | None = area.read_usage()
        if mine and (refresh or not summary):
            summary = tally_area(area, drop, tier_column=tier.name) or area.read_usage()
        elif mine:
            fold_now(area, drop, tier_column=tier.name)  # traffic and stamps now
            summary = dict(area.read_usage())
            # what this user stored and removed since the last pass counts at once
            delta = area_usage(area) - int(summary.get("total", 0) or 0)
            if delta:
                uid = str(area.me.uid)
                by_uid = dict(summary.get("by_uid") or {})
                by_uid[uid] = max(0, int(by_uid.get(uid, 0)) + delta)
                summary.update(total=max(0, int(summary.get("total", 0) or 0) + delta),
                               by_uid=by_uid)
        _merge(out, summary or {})
    out["coldest"] = sorted(out.get("coldest", []), key=lambda c: c.get("last_access") or 0)[:20]
    return out


def _days(tier: DiskTier, since: float | None) -> dict[str, dict[str, Any]]:
    cutoff = dt.datetime.fromtimestamp(since, dt.timezone.utc).strftime("%Y-%m-%d") \
        if since is not None else ""
    days: dict[str, dict[str, Any]] = {}
    for area in tier.my_areas():
        for day, agg in read_days(area, cutoff).items():
            into = days.setdefault(day, {"totals": {}})
            for c, n in agg.get("totals", {}).items():
                into["totals"][c] = into["totals"].get(c, 0) + n
            for k in BY:
                target = into.setdefault(f"by_{k}", {})
                for who, row in agg.get(f"by_{k}", {}).items():
                    t = target.setdefault(who, {})
                    for c, n in row.items():
                        t[c] = t.get(c, 0) + n
    return dict(sorted(days.items()))


def build_report(client: Client, by: str = "user", since: float | None = None,
                 refresh: bool = False, tiers: list[str] | None = None) -> Report:
    """``since`` is a Unix time; ``refresh`` rescans this user's areas instead of using the
    summary their last pass left (a scan walks every entry of the area). Traffic is folded
    from the reader records every time (cheap), so a user's own reads count at once."""
    if by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}")
    client.cache.sync()
    report = Report(by, since, time.time())
    for tier in client.cache.tiers:
        if tiers and tier.name not in tiers:
            continue
        if not tier.usable:
            continue
        usage = _usage(tier, refresh)
        quotas = {kind: {who: {"soft": q.soft, "hard": q.hard} for who, q in rows.items()}
                  for kind, rows in client.cache.quotas(tier).items()}
        report.tiers.append(TierReport(tier.name, str(tier.root), tier.size, usage, quotas,
                                       _days(tier, since)))
    return report
