"""A report as CSV, Prometheus text, or a self-contained HTML page with SVG charts."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from typing import Any

from .collect import Report

__all__ = ["to_csv", "to_html", "to_prometheus"]


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
        served = sum(acc.get(k, 0) for k in ("memory", "local", "shared"))
        if served + acc.get("upstream", 0):
            lines.append(f'htpdata_cache_hit_ratio{{tier="{tier}"}} '
                         f"{served / (served + acc.get('upstream', 0)):.6f}")
    lines += ["# HELP htpdata_cache_read_bytes_total Bytes read, by where they came from.",
              "# TYPE htpdata_cache_read_bytes_total counter"]
    for tier, acc in totals.items():
        for src in ("memory", "local", "shared", "upstream"):
            lines.append(f'htpdata_cache_read_bytes_total{{tier="{tier}",source="{src}"}} '
                         f"{acc.get(src, 0)}")
    return "\n".join(lines) + "\n"


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _bars(title: str, items: Sequence[tuple[str, float]], fmt: Any = _human) -> str:
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


def to_html(report: Report) -> str:
    """One self-contained page: no scripts, no external assets, charts as inline SVG."""
    when = dt.datetime.fromtimestamp(report.generated).strftime("%Y-%m-%d %H:%M")
    sections = []
    for t in report.tiers:
        used = int(t.usage.get("total", 0))
        size = f" of {_human(t.size)} ({used / t.size:.0%})" if t.size else ""
        by_user = sorted(t.usage.get("by_user", {}).items(), key=lambda x: -x[1])
        by_ds = sorted(t.usage.get("by_dataset", {}).items(), key=lambda x: -x[1])
        days = [(d, _ratio(agg.get("totals", {}))) for d, agg in t.days.items()]
        coldest = "".join(
            f"<tr><td>{html.escape(str(c.get('name')))}</td><td>{_human(c.get('bytes', 0))}</td>"
            f"<td>{html.escape(str(c.get('user')))}</td><td>"
            f"{dt.datetime.fromtimestamp(c.get('last_access') or 0):%Y-%m-%d %H:%M}</td></tr>"
            for c in t.usage.get("coldest", [])[:10])
        sections.append(
            f"<section><h2>{html.escape(t.name)} tier <small>{html.escape(t.root)}</small></h2>"
            f"<p>{_human(used)}{size} in {t.usage.get('entries', 0)} files; "
            f"{_human(t.usage.get('pinned', 0))} pinned.</p>"
            f"{_bars('Usage by user', by_user)}{_bars('Usage by dataset', by_ds)}"
            f"{_columns('Hit ratio per day (bytes served from cache / bytes read)', days)}"
            f"<h3>Next to be evicted (coldest unpinned)</h3><table><tr><th>file</th>"
            f"<th>size</th><th>owner</th><th>last access</th></tr>{coldest}</table></section>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:900px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
             "font-size:12px}small{color:#666;font-weight:normal}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>htpdata cache report</title><style>{style}</style></head><body>"
            f"<h1>htpdata cache report</h1><p>Generated {when}.</p>{''.join(sections)}"
            f"</body></html>")


def _ratio(tot: dict[str, Any]) -> float | None:
    served = sum(int(tot.get(k, 0)) for k in ("memory", "local", "shared"))
    allb = served + int(tot.get("upstream", 0))
    return served / allb if allb else None
