"""Counters the reliability suite keeps, printed at the end of the run (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIGURES = {"faults tried": 0, "processes killed": 0, "bytes compared": 0, "wrong bytes": 0,
           "hangs": 0, "tenant checks": 0, "tenant checks unsafe": 0}
"""``tenant checks``: attacks by one real Unix user on another (tests/test_tenants_*.py);
``unsafe``: those whose outcome was not the safe one (expected failures until fixed)."""


def count(**kw: int) -> None:
    for k, v in kw.items():
        FIGURES[k.replace("_", " ")] += v


def check(safe: bool, what: str = "") -> None:
    """Count one hostile-tenant check and whether it came out safe; fail the test if not."""
    count(tenant_checks=1, tenant_checks_unsafe=0 if safe else 1)
    assert safe, what


def write_figures(path: Path) -> None:
    """The counters as a results file (as the benchmarks write theirs): when, the command,
    the machine, the figures; written beside ``path`` and renamed into place."""
    data = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": ["-m", "pytest", *sys.argv[1:]],
            "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                     "load_average": list(os.getloadavg())},
            "htpdata_source": {"commit": _commit()},
            "figures": dict(FIGURES)}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _commit() -> str:
    """The checkout's commit, and whether src/ or tests/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "src", "tests")
                     else "")
