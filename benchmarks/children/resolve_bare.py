"""``bench_rucio.py``'s reference: Rucio's own bulk call for a dataset's replicas.

    python benchmarks/children/resolve_bare.py SCOPE NAME SORT      # SORT '' = Rucio's default

``list(Client().list_replicas([{"scope", "name"}], schemes=["root"], sort=SORT))``; prints one
JSON line (seconds after the imports, files, replicas, bytes).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

from rucio.client import Client


def main(argv: list[str]) -> None:
    scope, name, sort = argv[0], argv[1], argv[2] or None
    gc.collect()  # the imports' first full collection, not inside the clock (README)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"schemes": ["root"]}
    if sort:
        kwargs["sort"] = sort
    rows = list(Client().list_replicas([{"scope": scope, "name": name}], **kwargs))
    t1 = time.perf_counter()
    print(json.dumps({"seconds": t1 - t0, "files": len(rows),
                      "replicas": sum(len(r["pfns"]) for r in rows),
                      "bytes": sum(r["bytes"] or 0 for r in rows)}))


if __name__ == "__main__":
    main(sys.argv[1:])
