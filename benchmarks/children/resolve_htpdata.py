"""``bench_rucio.py``'s htpdata case: resolve a whole dataset through htpdata.

    python benchmarks/children/resolve_htpdata.py rucio:SCOPE:NAME

``rucio.client`` is imported before the clock, as in every case; the clock covers
``htpdata.Client().resolve_all(NAME)`` until the answer is in Python lists. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time

import rucio.client  # noqa: F401  (imported before the clock, as in every case)

import htpdata


def main(argv: list[str]) -> None:
    gc.collect()  # the imports' first full collection, not inside the clock (README)
    t0 = time.perf_counter()
    with htpdata.Client() as client:
        files = client.resolve_all(argv[0])
        t1 = time.perf_counter()
    print(json.dumps({"seconds": t1 - t0, "files": len(files),
                      "replicas": sum(len(f.replicas) for f in files),
                      "bytes": sum(f.size or 0 for f in files)}))


if __name__ == "__main__":
    main(sys.argv[1:])
