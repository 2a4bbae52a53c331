"""Tables and plots of the benchmark and reliability results, drawn when the book is built.

The results are the JSON files the benchmarks write (``benchmarks/results/NAME.json``, see
``benchmarks/_harness.py``) and the one the reliability suite writes
(``HTPDATA_FIGURES_JSON``, see tests/conftest.py), copied into ``docs/_data/results/`` with
the commands that produced them (``docs/_data/results/README.md``). Each function returns
something a notebook cell displays: Markdown for the tables, a matplotlib figure for a plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load", "plot_cases", "plot_reliability", "plot_stage", "plot_tier", "provenance",
           "table_cases", "table_reliability", "table_stage", "table_targets", "table_tier"]

RESULTS = Path(__file__).resolve().parent.parent.parent / "_data" / "results"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _md(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


def _png(fig: Any) -> Any:
    """The figure as a PNG image for the cell's output. (A Figure itself shows only as its
    text repr in a kernel whose backend is Agg, as the build's is: ``MPLBACKEND=agg``.)"""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image(data=buf.getvalue())


def _command(data: dict[str, Any]) -> str:
    cmd = data.get("command") or []
    if not isinstance(cmd, list):
        return str(cmd)
    import shlex

    return shlex.join(str(w) for w in cmd)  # as typed: "reliability or tenants" quoted


def provenance(name: str) -> Any:
    """When, where and with what command the results of ``name`` were measured."""
    d = load(name)
    host = d.get("host", {})
    load_avg = host.get("load_average")
    busy = (f", load average {load_avg[0]:.1f} (the machine was shared: compare ratios, not "
            "seconds)" if load_avg else "")
    src = d.get("htpdata_source", {})
    commit = src.get("end") or src.get("start") or src.get("commit") or "?"
    return _md(f"Measured {d.get('when', '?')} on {host.get('cpus', '?')} cores{busy}, "
               f"htpdata at commit `{commit}`, by\n\n```console\n$ .venv/bin/python "
               f"{_command(d)}\n```")


def _cell(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|")


def table_cases(name: str) -> Any:
    """The cases of a benchmark: median seconds, ratios to the peers, bytes over the WAN."""
    cases = load(name)["cases"]
    cols = [("case", "case", 0), ("road", "how", 0), ("how", "how", 0),
            ("median_s", "median s", 3), ("ratio_direct", "/ direct", 2),
            ("ratio_local", "/ local", 2)]
    present = [c for c in cols if any(c[0] in row for row in cases)]
    wan = any("wan_bytes_median" in r or "wan_mb_median" in r for r in cases)
    head = [label for _, label, _ in present] + (["WAN MB"] if wan else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in cases:
        cells = [_cell(row.get(key), digits) for key, _, digits in present]
        if wan:
            mb = row.get("wan_mb_median")
            if mb is None and row.get("wan_bytes_median") is not None:
                mb = row["wan_bytes_median"] / 1e6
            cells.append(_cell(mb, 1))
        lines.append("| " + " | ".join(cells) + " |")
    return _md("\n".join(lines))


def table_targets(name: str) -> Any:
    """The targets the benchmark checks, with the measured ratio and whether each was met."""
    targets = load(name).get("targets") or []
    lines = ["| target | measured | status |", "| --- | --- | --- |"]
    for t in targets:
        measured = t.get("ratio", t.get("value"))
        lines.append(f"| {_cell(t.get('target'))} | {_cell(measured)} "
                     f"| {_cell(t.get('status'))} |")
    return _md("\n".join(lines))


def plot_cases(name: str, title: str, ratio: str = "ratio_direct", peer: str = "direct") -> Any:
    """One bar per case: the median time as a multiple of the peer's, shortest at the top."""
    import matplotlib.pyplot as plt

    cases = [c for c in load(name)["cases"] if c.get(ratio) is not None]
    cases.sort(key=lambda c: c[ratio], reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(cases) + 1.2), dpi=110)
    colours = ["#1f77b4" if c["case"].startswith("htpdata") else "#9a9a9a" for c in cases]
    ax.barh([c["case"] for c in cases], [c[ratio] for c in cases], color=colours)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, c in enumerate(cases):
        ax.text(c[ratio], i, f" {c[ratio]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"median time / {peer} (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.12)
    fig.tight_layout()
    return _png(fig)


def table_tier(name: str = "tier") -> Any:
    """bench_tier's reads and waiters: metadata system calls (strace), files left, and the
    metadata operations the network-filesystem emulator's server saw."""
    d = load(name)
    lines = ["| read | metadata calls | files left | server metadata ops | seconds |",
             "| --- | --- | --- | --- | --- |"]
    for r in d.get("reads", []):
        sc, server = r.get("syscalls", {}), r.get("server", {})
        lines.append(f"| {_cell(r.get('label'))} | {_cell(sc.get('metadata'))} "
                     f"| {_cell(sc.get('files_lasting'))} | {_cell(server.get('meta'))} "
                     f"| {_cell(r.get('seconds'))} |")
    lines += ["", "| waiting for another process's fetch | metadata calls per second "
              "| server metadata ops per second |", "| --- | --- | --- |"]
    for w in d.get("waiters", []):
        lines.append(f"| {_cell(w.get('label'))} | {_cell(w.get('syscalls_per_s'), 1)} "
                     f"| {_cell(w.get('server_per_s'), 1)} |")
    return _md("\n".join(lines))


def plot_tier(name: str = "tier") -> Any:
    """Metadata system calls of each read of bench_tier, cold and warm."""
    import matplotlib.pyplot as plt

    reads = load(name).get("reads", [])
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(reads) + 1.2), dpi=110)
    labels = [r["label"] for r in reads]
    values = [r["syscalls"]["metadata"] for r in reads]
    colours = ["#1f77b4" if r.get("phase") == "cold" else "#2ca02c" for r in reads]
    ax.barh(labels, values, color=colours)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("metadata system calls of one read (strace; lower is better)")
    ax.set_title("uproot reads 20 branches of a 129 MB file through the shared tier",
                 fontsize=10)
    ax.margins(x=0.12)
    fig.tight_layout()
    return _png(fig)


def table_reliability(name: str = "reliability") -> Any:
    figures = load(name)["figures"]
    head = list(figures)
    return _md("| " + " | ".join(head) + " |\n|" + " --- |" * len(head) + "\n| "
               + " | ".join(f"{figures[k]:,}" for k in head) + " |")


def plot_reliability(name: str = "reliability") -> Any:
    """Faults tried and processes killed, next to what must stay at zero."""
    import matplotlib.pyplot as plt

    figures = load(name)["figures"]
    keys = [k for k in figures if k != "bytes compared"]
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=110)
    bad = {"wrong bytes", "hangs", "tenant checks unsafe"}
    ax.bar(keys, [figures[k] for k in keys],
           color=["#d62728" if k in bad else "#1f77b4" for k in keys])
    for i, k in enumerate(keys):
        ax.text(i, figures[k], f"{figures[k]:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("count")
    ax.set_title(f"one run of the reliability suite; {figures.get('bytes compared', 0):,} "
                 "bytes compared with the origin", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    return _png(fig)


def table_stage(name: str = "stage") -> Any:
    """Each dataset of the staging benchmark: every case's time and its speed against the
    best peer of the run and against the link's capacity (higher is better)."""
    lines = []
    for ds in load(name)["datasets"].values():
        lines += [f"**{ds['name']}**: {ds['files']} files, {ds['bytes'] / 1e6:.0f} MB; best "
                  f"peer {ds['best_peer']}", "",
                  "| case | settings | s | x best peer | x link capacity |",
                  "| --- | --- | --- | --- | --- |"]
        for c in ds["cases"]:
            lines.append(f"| {_cell(c['case'])} | {_cell(c['settings'])} | "
                         f"{_cell(c.get('seconds'))} | {_cell(c.get('x_best_peer'))} | "
                         f"{_cell(c.get('x_link_capacity'))} |")
        lines.append("")
    return _md("\n".join(lines))


def plot_stage(name: str = "stage") -> Any:
    """Speed of each way of copying a dataset, as a multiple of the best peer's."""
    import matplotlib.pyplot as plt

    sets = list(load(name)["datasets"].values())
    fig, axes = plt.subplots(1, len(sets), figsize=(9, 2.8), dpi=110, squeeze=False)
    for ax, ds in zip(axes[0], sets, strict=True):
        cases = [c for c in ds["cases"] if c.get("x_best_peer") is not None]
        ax.barh([c["case"] for c in cases], [c["x_best_peer"] for c in cases],
                color=["#1f77b4" if c["case"].startswith("htpdata") else "#9a9a9a"
                       for c in cases])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{ds['name']} ({ds['files']} files)", fontsize=9)
        ax.set_xlabel("speed / best peer (higher is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)
