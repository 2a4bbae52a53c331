"""Printing for the CLI: rich tables on a terminal; piped, a header line and tab-separated rows
with exact values; JSON with ``--json``.

Byte counts are wrapped in :class:`Bytes` by the commands: a terminal shows ``217.9 kB``, a
pipe (or ``--bytes``) shows ``217945``, so ``awk`` and ``sort -n`` work on the output.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..atomic import write_atomically
from ..units import human_bytes

if TYPE_CHECKING:
    from rich.console import Console

# human_bytes and write_atomically live in htpdata.units and htpdata.atomic (the reports use
# them too); they are re-exported here, where the commands have always found them.
__all__ = ["Bytes", "configure", "console", "error", "human_bytes", "note", "print_json",
           "print_table", "write_atomically"]


class _Options:
    quiet = False
    exact_bytes = False


OPTIONS = _Options()


def configure(*, quiet: bool = False, exact_bytes: bool = False) -> None:
    """Set by the entry point from ``-q`` and ``--bytes``."""
    OPTIONS.quiet = quiet
    OPTIONS.exact_bytes = exact_bytes


class Bytes(int):
    """A byte count in a table row: human-readable on a terminal, exact when piped."""


@functools.cache
def console() -> Console:
    """The terminal console, made (and rich imported) only when a table is printed."""
    from rich.console import Console

    return Console(soft_wrap=True)


def error(text: str) -> None:
    """``htpdata: error: TEXT`` on standard error, always one line (a message from a library
    underneath may hold newlines)."""
    print(f"htpdata: error: {' '.join(text.split())}", file=sys.stderr)


def note(text: str) -> None:
    """A summary line for people, on standard error (silenced by ``-q``)."""
    if not OPTIONS.quiet:
        print(text, file=sys.stderr)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _cell(value: Any, exact: bool) -> str:
    if value is None:
        return "" if not exact else "-"
    if isinstance(value, Bytes):
        return str(int(value)) if exact else human_bytes(value)
    if isinstance(value, float):
        return f"{value:.4g}" if exact else f"{value:.3g}"
    return str(value).replace("\t", " ").replace("\n", " ")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table: on a terminal with a title; piped, a header line (the column names) and one
    tab-separated line per row, exact numbers, no title (``grep``, ``cut``, ``awk``).

    Piped means standard output is not a terminal, whatever rich makes of the environment:
    a Jupyter kernel sets ``FORCE_COLOR=1``, which rich takes for a terminal, and
    ``!htpdata ls X | awk ...`` in a notebook must still get the tab-separated rows."""
    if not sys.stdout.isatty():
        sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join(_cell(v, True) for v in row) + "\n")
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        numeric = any(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                      for r in rows if i < len(r))
        table.add_column(col, overflow="fold", justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(v, OPTIONS.exact_bytes) for v in row))
    console().print(table)
