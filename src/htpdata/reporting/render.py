"""A report as CSV, Prometheus text, or a self-contained HTML page with SVG charts."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from typing import Any

from ..units import human_bytes
from .collect import Report, hit_ratio

__all__ = ["quota_rows", "to_csv", "to_html", "to_prometheus"]


def to_csv(report: Report) -> str:
    rows = report.records()
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def to_prometheus(report: Report) -> str:
    """Prometheus text exposition format (for a textfile collector or a scrape endpoint)."""
    lines = [
        "# HELP htpdata_cache_bytes Bytes held in a cache tier.",
        "# TYPE htpdata_cache_bytes gauge",
    ]
    for t in report.tiers:
        lines.append(f'htpdata_cache_bytes{{tier="{t.name}"}} {int(t.usage.get("total", 0))}')
    lines += ["# HELP htpdata_cache_files Cache entries (files) in a tier.",
              "# TYPE htpdata_cache_files gauge"]
    for t in report.tiers:
        lines.append(f'htpdata_cache_files{{tier="{t.name}"}} {int(t.usage.get("entries", 0))}')
    lines += ["# HELP htpdata_cache_size_bytes Configured size of a tier (0: its filesystem).",
              "# TYPE htpdata_cache_size_bytes gauge"]
    for t in report.tiers:
        lines.append(f'htpdata_cache_size_bytes{{tier="{t.name}"}} {t.size}')
    lines += ["# HELP htpdata_cache_owner_bytes Bytes held per owner.",
              "# TYPE htpdata_cache_owner_bytes gauge"]
    for t in report.tiers:
        for who, b in sorted(t.usage.get(f"by_{report.by}", {}).items()):
            lines.append(f'htpdata_cache_owner_bytes{{tier="{t.name}",{report.by}='
                         f'"{_label(who)}"}} {int(b)}')
    totals: dict[str, dict[str, int]] = {}
    for t in report.tiers:
        acc = totals.setdefault(t.name, {})
        for day in t.days.values():
            for k, v in day.get("totals", {}).items():
                acc[k] = acc.get(k, 0) + int(v)
    # Each metric family's samples stay together, as the exposition format requires.
    lines += ["# HELP htpdata_cache_hit_ratio Bytes served from cache over all bytes read.",
              "# TYPE htpdata_cache_hit_ratio gauge"]
    for tier, acc in totals.items():
        ratio = hit_ratio(acc)
        if ratio is not None:
            lines.append(f'htpdata_cache_hit_ratio{{tier="{tier}"}} {ratio:.6f}')
    lines += ["# HELP htpdata_cache_read_bytes_total Bytes read, by where they came from.",
              "# TYPE htpdata_cache_read_bytes_total counter"]
    for tier, acc in totals.items():
        for src in ("memory", "local", "shared", "upstream"):
            lines.append(f'htpdata_cache_read_bytes_total{{tier="{tier}",source="{src}"}} '
                         f"{acc.get(src, 0)}")
    lines += ["# HELP htpdata_cache_staged_bytes_total Bytes htpdata stage fetched into a tier.",
              "# TYPE htpdata_cache_staged_bytes_total counter"]
    for tier, acc in totals.items():
        lines.append(f'htpdata_cache_staged_bytes_total{{tier="{tier}"}} {acc.get("staged", 0)}')
    return "\n".join(lines) + "\n"


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _bars(title: str, items: Sequence[tuple[str, float]], fmt: Any = human_bytes) -> str:
    """A horizontal bar chart as inline SVG (no script, no network)."""
    items = list(items)[:15]
    width, bar_h, left = 760, 22, 260
    height = 40 + bar_h * max(1, len(items))
    top = max((v for _, v in items), default=0) or 1
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="4" y="18" font-size="15" font-weight="bold">{html.escape(title)}</text>']
    if not items:
        parts.append('<text x="4" y="44" font-size="13" fill="#666">no data yet</text>')
    for i, (label, value) in enumerate(items):
        y = 30 + i * bar_h
        w = max(1, int((width - left - 110) * value / top))
        parts.append(f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
                     f"{html.escape(label[-38:])}</text>")
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w}" height="{bar_h - 6}" '
                     f'fill="{_COLORS[i % len(_COLORS)]}"/>')
        parts.append(f'<text x="{left + w + 6}" y="{y + 15}" font-size="12">'
                     f"{html.escape(fmt(value))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _columns(title: str, days: Sequence[tuple[str, float | None]]) -> str:
    """Hit ratio per day as vertical bars (inline SVG)."""
    width, height, base = 760, 220, 190
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="4" y="18" font-size="15" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="40" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#333"/>',
             f'<text x="4" y="{base - 150}" font-size="11">100%</text>',
             f'<text x="4" y="{base}" font-size="11">0%</text>']
    if not days:
        parts.append('<text x="50" y="100" font-size="13" fill="#666">no reads yet</text>')
    step = (width - 60) / max(1, len(days))
    for i, (day, ratio) in enumerate(days):
        x = 45 + i * step
        h = int(150 * (ratio or 0))
        parts.append(f'<rect x="{x:.0f}" y="{base - h}" width="{max(2, step * 0.7):.0f}" '
                     f'height="{h}" fill="#2ca02c"><title>{day}: '
                     f"{'-' if ratio is None else f'{ratio:.0%}'}</title></rect>")
        if len(days) <= 14 or i % max(1, len(days) // 10) == 0:
            parts.append(f'<text x="{x:.0f}" y="{base + 14}" font-size="10">{day[5:]}</text>')
    parts.append("</svg>")
    return "".join(parts)


NEAR = 0.8  # a quota is "near" from this share of its hard limit


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="none">none</td></tr>'
    return f"<table><tr>{head}</tr>{body}</table>"


def quota_rows(report: Report) -> list[dict[str, Any]]:
    """Every quota of every tier with its use, sorted by how close it is to its hard limit
    (pure): ``state`` is ``OVER HARD``, ``over soft``, ``near`` (past 80% of hard) or ``ok``."""
    rows = []
    for t in report.tiers:
        for kind in ("users", "groups"):
            used_by = t.usage.get(f"by_{kind[:-1]}", {})
            for who, q in t.quotas.get(kind, {}).items():
                used = int(used_by.get(who, 0))
                hard, soft = int(q.get("hard", 0)), int(q.get("soft", 0))
                share = used / hard if hard else None
                state = ("OVER HARD" if hard and used > hard else
                         "over soft" if soft and used > soft else
                         "near" if share is not None and share >= NEAR else "ok")
                rows.append({"tier": t.name, "kind": kind[:-1], "name": who, "bytes": used,
                             "soft": soft, "hard": hard, "share": share, "state": state})
    return sorted(rows, key=lambda r: -(r["share"] or 0))


def _hot(t: Any, key: str, n: int = 10) -> list[tuple[str, int, float | None]]:
    """(name, bytes read, hit ratio) of the most read datasets or users of a tier's days."""
    acc: dict[str, dict[str, int]] = {}
    for day in t.days.values():
        for who, c in day.get(f"by_{key}", {}).items():
            row = acc.setdefault(who, {})
            for k, v in c.items():
                row[k] = row.get(k, 0) + int(v)
    out = [(who, sum(c.get(k, 0) for k in ("memory", "local", "shared", "upstream")),
            hit_ratio(c)) for who, c in acc.items()]
    return sorted((x for x in out if x[1]), key=lambda x: -x[1])[:n]


def _tier_section(report: Report, t: Any, tot: dict[str, Any]) -> str:
    used = int(t.usage.get("total", 0))
    size = f" of {human_bytes(t.size)}" if t.size else ""
    share = _pct(tot["share"]) if t.size else "no size set"
    figures = [("held", f"{human_bytes(used)}{size}"), ("share of the tier used", share),
               ("files", str(tot["files"])), ("pinned", human_bytes(tot["pinned"])),
               ("hit ratio", _pct(tot["hit_ratio"])),
               ("read from the cache", human_bytes(tot["served"])),
               ("fetched upstream by reads", human_bytes(tot["upstream"])),
               ("fetched by stages", human_bytes(tot["staged"]))]
    cards = "".join(f'<div class="card"><div class="num">{html.escape(v)}</div>'
                    f'<div class="lbl">{html.escape(k)}</div></div>' for k, v in figures)
    by_user = sorted(t.usage.get("by_user", {}).items(), key=lambda x: -x[1])
    base = t.size or used or 1
    shares = [(f"{who} ({b / base:.0%})", float(b)) for who, b in by_user]
    by_ds = sorted(t.usage.get("by_dataset", {}).items(), key=lambda x: -x[1])
    days = [(d, hit_ratio(agg.get("totals", {}))) for d, agg in t.days.items()]
    hot_ds = _hot(t, "dataset")
    hot_users = _hot(t, "user")
    coldest = [[c.get("name"), human_bytes(c.get("bytes", 0)), c.get("user"),
                dt.datetime.fromtimestamp(c.get("last_access") or 0).strftime("%Y-%m-%d %H:%M")]
               for c in t.usage.get("coldest", [])[:10]]
    quotas = [[q["kind"], q["name"], human_bytes(q["bytes"]), human_bytes(q["soft"]),
               human_bytes(q["hard"]), _pct(q["share"]), q["state"]]
              for q in quota_rows(report) if q["tier"] == t.name]
    per_day = [[d, _pct(r)] for d, r in days[-14:]]
    users = [[who, human_bytes(b), _pct(b / base), t.usage.get("files_by_user", {}).get(who, 0)]
             for who, b in by_user[:15]]
    parts = [
        f'<section id="tier-{html.escape(t.name)}"><h2>{html.escape(t.name)} tier '
        f'<small>{html.escape(t.root)}</small></h2><div class="cards">{cards}</div>',
        "<h3>Who uses the volume</h3>", _bars("Share of the tier by user", shares),
        _table(["user", "held", "share of the tier", "files"], users),
        "<h3>Quotas, nearest to their limit first</h3>",
        _table(["kind", "who", "using", "soft", "hard", "of hard", "state"], quotas),
        "<h3>What is hot (bytes read)</h3>",
        _table(["dataset", "bytes read", "hit ratio"],
               [[d, human_bytes(b), _pct(r)] for d, b, r in hot_ds]),
        _table(["user", "bytes read", "hit ratio"],
               [[u, human_bytes(b), _pct(r)] for u, b, r in hot_users]),
        _bars("Held by dataset", by_ds),
        "<h3>Hit ratio per day</h3>",
        _columns("Hit ratio per day (bytes served from cache / bytes read)", days),
        _table(["day", "hit ratio"], per_day),
        "<h3>What goes next (coldest unpinned, evicted first)</h3>",
        _table(["file", "size", "owner", "last access"], coldest), "</section>"]
    return "".join(parts)


def to_html(report: Report) -> str:
    """One self-contained page (no scripts, no external assets, charts as inline SVG) that
    answers an operator's questions at a glance: how full each tier is and its hit ratio, who
    uses it, which quotas are near or over, what is hot, what goes next."""
    when = dt.datetime.fromtimestamp(report.generated).strftime("%Y-%m-%d %H:%M")
    totals = {t["tier"]: t for t in report.tier_totals()}
    alerts = [q for q in quota_rows(report) if q["state"] != "ok"]
    alert = (f'<p class="alert">{len(alerts)} quota(s) near or over their limit: '
             + ", ".join(html.escape(f"{q['kind']} {q['name']} ({q['tier']}): {q['state']}, "
                                     f"{_pct(q['share'])} of hard") for q in alerts[:5])
             + "</p>") if alerts else ""
    sections = "".join(_tier_section(report, t, totals[t.name]) for t in report.tiers)
    style = ("body{font-family:sans-serif;margin:2em;max-width:960px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1em}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}"
             "small{color:#666;font-weight:normal}.none{color:#888}"
             ".cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #ccc;"
             "border-radius:4px;padding:6px 10px;min-width:120px}.num{font-size:20px;"
             "font-weight:bold}.lbl{font-size:11px;color:#555}"
             ".alert{background:#fde8e8;border:1px solid #c00;padding:6px 10px}")
    since = (f"; traffic since {dt.datetime.fromtimestamp(report.since):%Y-%m-%d}"
             if report.since else "")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>htpdata cache report</title><style>{style}</style></head><body>"
            f"<h1>htpdata cache report</h1><p>Generated {when}{since}.</p>{alert}{sections}"
            f"</body></html>")
