"""Which columns a conversion takes: wildcard patterns against a tree's names (pure)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

from ..errors import ColumnNotFoundError, ConversionError

# The two errors live in htpdata.errors; they are re-exported here, where they were first.
__all__ = ["ColumnNotFoundError", "ConversionError", "select_columns"]


def select_columns(available: Sequence[str], patterns: Sequence[str] | None,
                   source: str = "") -> list[str]:
    """The names matching each pattern (``Muon_*``, ``Jet_pt``), in the tree's order.

    Every pattern must match something; a miss names the closest names. ``None`` or ``[]``
    means every column. Internal names (leading ``_``) are never taken.
    """
    names = [n for n in available if not n.startswith("_")]
    if not patterns:
        return names
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            stem = pattern.replace("*", "").replace("?", "")
            near = difflib.get_close_matches(stem, names, n=5, cutoff=0.6)
            raise ColumnNotFoundError(source, pattern, near)
        chosen.update(hits)
    return [n for n in names if n in chosen]


def parse_patterns(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    if isinstance(text, str):
        return [p.strip() for p in text.split(",") if p.strip()]
    return [p for p in text if p]
