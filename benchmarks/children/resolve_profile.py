"""``bench_rucio.py --profile``: htpdata's dataset resolution under cProfile.

    python benchmarks/children/resolve_profile.py rucio:SCOPE:NAME

One thread, so cProfile sees everything. Prints one JSON line with the seconds under the
profiler and the top functions by own and by cumulative time.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import sys
import time

import rucio.client  # noqa: F401  (imported before the clock, as in every case)

import htpdata


def main(argv: list[str]) -> None:
    prof = cProfile.Profile()
    gc.collect()  # the imports' first full collection, not inside the clock (README)
    t0 = time.perf_counter()
    prof.enable()
    with htpdata.Client() as client:
        files = client.resolve_all(argv[0])
    prof.disable()
    t1 = time.perf_counter()
    rows = []
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    for (fname, line, func), (_, calls, own, cum, _) in stats.items():
        where = fname.split("site-packages/")[-1].split("/src/")[-1]
        rows.append([f"{where}:{line}({func})", calls, own, cum])
    print(json.dumps({"seconds": t1 - t0, "files": len(files),
                      "replicas": sum(len(f.replicas) for f in files), "bytes": None,
                      "top_own": sorted(rows, key=lambda r: -r[2])[:12],
                      "top_cumulative": sorted(rows, key=lambda r: -r[3])[:25]}))


if __name__ == "__main__":
    main(sys.argv[1:])
