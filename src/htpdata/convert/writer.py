"""ROOT (TTree or RNTuple) in, Parquet or RNTuple out, in bounded-memory steps.

Jagged branches become Arrow list columns (not exploded), types are kept, and each step is one
Parquet row group: ``ROW_GROUP_ENTRIES`` entries or ``STEP_BYTES`` of uncompressed input,
whichever comes first, so a reader of a few columns reads few, large, contiguous chunks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .columns import ConversionError, select_columns

__all__ = ["CONVERTER_VERSION", "open_tree", "write_parquet", "write_rntuple"]

CONVERTER_VERSION = "1"
STEP_BYTES = 128 * 1024**2
ROW_GROUP_ENTRIES = 1_000_000


def open_tree(source: Any, tree: str | None, label: str) -> Any:
    """The TTree or RNTuple ``tree`` (default: the only one) of an open uproot source."""
    import uproot

    try:
        f = uproot.open(source)
    except Exception as exc:
        raise ConversionError(f"{label}: not a ROOT file ({type(exc).__name__}: {exc})") \
            from None
    kinds = {k.split(";")[0]: v for k, v in f.classnames(recursive=False).items()}
    trees = [k for k, v in kinds.items() if v == "TTree" or "RNTuple" in v]
    if tree is None:
        if len(trees) != 1:
            raise ConversionError(f"{label}: name the tree to convert (--tree); trees here: "
                                  f"{', '.join(trees) or 'none'}")
        tree = trees[0]
    if tree not in kinds:
        raise ConversionError(f"{label}: no object {tree!r}; trees here: "
                              f"{', '.join(trees) or 'none'}")
    if tree not in trees:
        raise ConversionError(f"{label}: {tree!r} is a {kinds[tree]}, not a TTree or RNTuple")
    return f[tree]


def _steps(obj: Any, columns: Sequence[str], label: str) -> Iterator[Any]:
    n = int(obj.num_entries)
    if n == 0:
        return
    # Entries per step from the columns' compressed sizes (a proxy for memory), bounded.
    per_entry = 1.0
    try:
        per_entry = max(1.0, sum(obj[c].uncompressed_bytes for c in columns) / n)
    except Exception:
        per_entry = 8.0 * max(1, len(columns))
    step = max(1, min(ROW_GROUP_ENTRIES, int(STEP_BYTES / per_entry)))
    for start in range(0, n, step):
        try:
            yield obj.arrays(columns, entry_start=start, entry_stop=min(n, start + step))
        except Exception as exc:
            raise ConversionError(f"{label}: cannot read columns at entries {start}.."
                                  f"{min(n, start + step)}: {type(exc).__name__}: {exc}") \
                from None


def write_parquet(obj: Any, columns: Sequence[str], out: Path, label: str,
                  compression: str = "zstd") -> int:
    """Write ``columns`` of ``obj`` to ``out``; returns the number of entries."""
    import awkward as ak
    import pyarrow.parquet as pq

    writer = None
    entries = 0
    try:
        for chunk in _steps(obj, columns, label):
            try:
                table = ak.to_arrow_table(chunk, extensionarray=False, list_to32=False,
                                          count_nulls=False)
            except Exception as exc:
                raise ConversionError(f"{label}: unsupported type for Parquet "
                                      f"({type(exc).__name__}: {exc})") from None
            if writer is None:
                writer = pq.ParquetWriter(str(out), table.schema, compression=compression)
            writer.write_table(table, row_group_size=len(chunk) or 1)
            entries += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no entries: still a valid (empty) file with the schema
        import pyarrow as pa

        pq.write_table(pa.table({c: [] for c in columns}), str(out))
    return entries


def write_rntuple(obj: Any, columns: Sequence[str], out: Path, label: str,
                  name: str = "Events") -> int:
    import uproot

    entries = 0
    with uproot.recreate(str(out)) as f:
        nt = None
        for chunk in _steps(obj, columns, label):
            try:
                if nt is None:
                    nt = f.mkrntuple(name, chunk)
                else:
                    nt.extend(chunk)
            except Exception as exc:
                raise ConversionError(f"{label}: cannot write as RNTuple "
                                      f"({type(exc).__name__}: {exc})") from None
            entries += len(chunk)
    return entries


def choose(obj: Any, patterns: Sequence[str] | None, label: str) -> list[str]:
    return select_columns(list(obj.keys()), patterns, label)

