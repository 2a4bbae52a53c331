"""Gather a report: usage from each tier's summary, traffic from the folded journals."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cache.accounting import COUNTERS
from ..cache.disk import DiskTier
from ..cache.evict import read_quotas
from ..cache.summary import summarize
from ..client import Client
from .traffic import fold, read_days

__all__ = ["BY", "Report", "build_report"]

BY = ("user", "group", "dataset", "namespace", "site")
SERVED = ("memory", "local", "shared")


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
                q = t.quotas.get(kind, {}).get(who) if kind else None
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


def _usage(tier: DiskTier, refresh: bool) -> dict[str, Any]:
    usage = tier.read_usage()
    if refresh or "by_dataset" not in usage:
        usage = summarize(tier.infos(), tier.pins(), time.time())  # streamed: flat memory
        tier.write_usage(usage)
    return usage


def build_report(client: Client, by: str = "user", since: float | None = None,
                 refresh: bool = False, tiers: list[str] | None = None) -> Report:
    """``since`` is a Unix time; ``refresh`` rescans the tiers instead of using the summary the
    last eviction pass left (a scan walks every entry: minutes on a 10^6-entry tier)."""
    if by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}")
    client.cache.flush()
    client.cache.journal.flush()
    report = Report(by, since, time.time())
    for tier in client.cache.tiers:
        if tiers and tier.name not in tiers:
            continue
        fold(tier)
        quotas = {kind: {who: {"soft": q.soft, "hard": q.hard} for who, q in rows.items()}
                  for kind, rows in read_quotas(tier).items()}
        report.tiers.append(TierReport(tier.name, str(tier.root), tier.size,
                                       _usage(tier, refresh), quotas, read_days(tier, since)))
    return report
