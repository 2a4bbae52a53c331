"""Counters the reliability suite keeps, printed at the end of the run (docs/reliability.md)."""

from __future__ import annotations

FIGURES = {"faults tried": 0, "processes killed": 0, "bytes compared": 0, "wrong bytes": 0,
           "hangs": 0}


def count(**kw: int) -> None:
    for k, v in kw.items():
        FIGURES[k.replace("_", " ")] += v
