"""``bench_rucio.py``: the Rucio calls htpdata makes (src/htpdata/rucio/service.py), bare.

    python benchmarks/children/resolve_calls.py SCOPE NAME

``get_did``, ``list_files``, then ``list_replicas`` of 500 file DIDs at a time; the gap between
this and htpdata's cold case is htpdata's own work. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time

from rucio.client import Client


def main(argv: list[str]) -> None:
    scope, name = argv[0], argv[1]
    gc.collect()  # the imports' first full collection, not inside the clock (README)
    t0 = time.perf_counter()
    c = Client()
    c.get_did(scope, name)
    files = [(f["scope"], f["name"]) for f in c.list_files(scope, name)]
    rows = []
    for i in range(0, len(files), 500):
        rows += list(c.list_replicas([{"scope": s, "name": n} for s, n in files[i:i + 500]],
                                     schemes=["root", "davs", "https", "http"], sort="random"))
    t1 = time.perf_counter()
    print(json.dumps({"seconds": t1 - t0, "files": len(rows),
                      "replicas": sum(len(r["pfns"]) for r in rows),
                      "bytes": sum(r["bytes"] or 0 for r in rows)}))


if __name__ == "__main__":
    main(sys.argv[1:])
