"""One timed read, run by ``bench_read.py`` in a fresh process: uproot reads some branches.

    python benchmarks/read_case.py '{"how": "uproot", "target": "root://...", "branches": [...]}'

``how`` is ``uproot`` (``uproot.open(target, **options)``: a local path, a root:// URL, an
fsspec chain such as ``simplecache::root://...`` or ``htpdata://...``) or ``htpdata-open``
(``uproot.open(htpdata.open(target))``, uproot driving a file object). Imports happen before the
clock starts; the clock covers open, ``tree.arrays(branches)`` and close. Prints one JSON line:
seconds, entries and a checksum of the values, so every case is seen to read the same data.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _digest(arrays: Any) -> float:
    import awkward as ak
    import numpy as np

    total = 0.0
    for field in arrays.fields:
        values = ak.flatten(arrays[field], axis=None).to_numpy()
        total += float(np.sum(values, dtype=np.float64))
    return total


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import uproot

    how, target, branches = spec["how"], spec["target"], spec["branches"]
    options = spec.get("options", {})
    if how == "htpdata-open":
        import htpdata

        start = time.perf_counter()
        with htpdata.open(target) as fobj, uproot.open(fobj) as f:
            arrays = f["Events"].arrays(branches)
        seconds = time.perf_counter() - start
    elif how == "uproot":
        if target.startswith("htpdata://"):
            import htpdata  # what fsspec would import inside the clock
        start = time.perf_counter()
        with uproot.open(target, **options) as f:
            arrays = f["Events"].arrays(branches)
        seconds = time.perf_counter() - start
    else:
        raise ValueError(f"unknown how {how!r}")
    return {"seconds": seconds, "entries": len(arrays), "digest": _digest(arrays)}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
