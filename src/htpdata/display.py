"""HTML for notebooks: how a result looks in Jupyter.

One function per result kind; the classes carry a thin ``_repr_html_`` that calls it
(:class:`~htpdata.resolve.ResolvedFile`, :class:`~htpdata.staging.StageSummary`,
:class:`~htpdata.reporting.Report`, :class:`~htpdata.reporting.held.CacheInfo`). Plain tables
with inline styles: no scripts, nothing fetched, readable in JupyterLab's light and dark themes.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .replicas import ResolvedFile
    from .reporting.collect import Report
    from .reporting.held import CacheInfo
    from .staging.run import StageSummary

__all__ = ["cache_info_html", "report_html", "resolved_html", "stage_summary_html", "table"]

_TABLE = "border-collapse:collapse;font-size:12px"
_CELL = "border:1px solid #8884;padding:2px 8px;text-align:left"


def _human(n: int | float | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _esc(v: Any) -> str:
    return "" if v is None else html.escape(str(v))


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A small HTML table; cells are escaped."""
    head = "".join(f'<th style="{_CELL}">{_esc(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{_esc(v)}</td>' for v in row)
                   + "</tr>" for row in rows)
    cap = (f'<caption style="text-align:left;font-weight:bold">{_esc(caption)}</caption>'
           if caption else "")
    return f'<table style="{_TABLE}">{cap}<tr>{head}</tr>{body}</table>'


def resolved_html(rf: ResolvedFile) -> str:
    caption = (f"{rf.name} - {_human(rf.size)} ({rf.size if rf.size is not None else '?'} "
               f"bytes), adler32 {rf.adler32 or 'unknown'}")
    return table(["#", "site", "protocol", "url", "role"],
                 [[i, r.site, r.protocol, r.url, r.role] for i, r in enumerate(rf.replicas, 1)],
                 caption)


def stage_summary_html(s: StageSummary) -> str:
    d = s.as_dict()
    p = s.plan
    if s.dry_run:
        verdict = "fits" if p.fits else f"would not fit: {p.problem}"
        return table(["tier", "to fetch", "bytes to fetch", "already cached", "headroom",
                      "verdict"],
                     [[p.tier, len(p.to_fetch), _human(p.fetch_bytes), len(p.cached),
                       _human(p.headroom) if p.headroom is not None else "unbounded",
                       verdict]], "stage plan (dry run)")
    rate = f"{d['rate_mb_s']:.1f} MB/s" if d["rate_mb_s"] else ""
    head = table(["tier", "staged", "already cached", "failed", "fetched", "seconds", "rate",
                  "pinned until"],
                 [[p.tier, d["staged"], d["already_cached"], d["failed"],
                   _human(d["bytes_fetched"]), f"{s.seconds:.1f}", rate,
                   _when(s.pinned_until)]], "stage")
    rows = [[r.name, r.status, _human(r.size), r.adler32 or "",
             "yes" if r.verified else "no", r.error or ""] for r in s.results]
    if not rows:
        return head
    return head + table(["file", "status", "size", "adler32", "verified", "error"], rows)


def cache_info_html(info: CacheInfo) -> str:
    rows = []
    for t in info.tiers:
        if not t["held"]:
            rows.append([t["tier"], "no", "", "", "", "", "", ""])
            continue
        rows.append([t["tier"], "yes", _human(t.get("bytes")), _human(t.get("size")),
                     _pct(t.get("fraction")), t.get("extents"),
                     "yes" if t.get("complete") else "no", _when(t.get("pinned_until"))])
    return table(["tier", "held", "bytes", "size", "fraction", "extents", "complete",
                  "pinned until"], rows, f"cache: {info.name}")


def report_html(report: Report) -> str:
    """The tier totals and the rows of the report (``to_html`` makes the operator's page)."""
    tiers = table(["tier", "held", "size", "share", "files", "pinned", "read from cache",
                   "fetched upstream", "staged", "hit ratio"],
                  [[t["tier"], _human(t["bytes"]), _human(t["size"]) if t["size"] else "",
                    _pct(t["share"]), t["files"], _human(t["pinned"]), _human(t["served"]),
                    _human(t["upstream"]), _human(t["staged"]), _pct(t["hit_ratio"])]
                   for t in report.tier_totals()], "cache tiers")
    by = report.by
    rows = table(["tier", by, "held", "files", "share of tier", "quota", "read from cache",
                  "fetched upstream", "hit ratio"],
                 [[r["tier"], r[by], _human(r["bytes"]), r["files"], _pct(r["share_of_tier"]),
                   _human(r["quota_hard"]) if r["quota_hard"] else "",
                   _human(r["served_memory"] + r["served_local"] + r["served_shared"]),
                   _human(r["upstream"]), _pct(r["hit_ratio"])] for r in report.records()],
                 f"by {by}")
    return tiers + "<br>" + rows
