"""One timed step of ``bench_convert.py``, in a new process (imports before the clock).

    python benchmarks/children/convert_case.py '{"how": ..., "path": ..., "columns": [...]}'

``how``: ``root`` (uproot reads the columns from the ROOT file), ``parquet`` (awkward reads them
from a Parquet file), ``htpdata-read`` (uproot over ``htpdata://file://PATH``), ``plain-convert``
(uproot + ``ak.to_parquet`` into ``out``: the peer of htpdata's conversion) or ``htpdata``
(``htpdata.converted``). Prints one JSON line: seconds, entries read (None for conversions) and,
for ``htpdata``, the path of the converted copy.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    import awkward as ak
    import pyarrow.parquet  # noqa: F401  (imported before the clock)
    import uproot

    import htpdata

    how, path, columns = spec["how"], spec["path"], spec["columns"]
    out: dict[str, Any] = {}
    a: Any = None
    t0 = time.perf_counter()
    if how == "root":
        with uproot.open(path) as f:
            a = f["Events"].arrays(columns)
    elif how == "parquet":
        a = ak.from_parquet(path, columns=columns)
    elif how == "htpdata-read":
        with uproot.open("htpdata://file://" + path) as f:
            a = f["Events"].arrays(columns)
    elif how == "plain-convert":
        with uproot.open(path) as f:
            ak.to_parquet(f["Events"].arrays(columns), spec["out"], compression="zstd")
    elif how == "htpdata":
        out["path"] = str(htpdata.converted(path, "parquet", columns))
    else:
        raise SystemExit(f"unknown how {how!r}")
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "entries": len(a) if a is not None else None, **out}))


if __name__ == "__main__":
    main(sys.argv[1:])
