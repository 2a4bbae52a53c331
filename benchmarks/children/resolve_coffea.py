"""``bench_rucio.py``: coffea's ``rucio_utils.get_dataset_files_replicas`` on the dataset.

    python benchmarks/children/resolve_coffea.py PATH/TO/rucio_utils.py SCOPE NAME

The module is loaded alone from coffea's wheel (it needs only ``rucio``; coffea itself pulls in
numba, pyarrow, dask and more). Run in a folder holding ``.sites_map.json`` (the CMS site map
it would otherwise read from /cvmfs). Prints one JSON line.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
import time

from rucio.client import Client


def main(argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("rucio_utils", argv[0])
    assert spec is not None
    assert spec.loader is not None
    ru = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ru)
    scope, name = argv[1], argv[2]
    gc.collect()  # the imports' first full collection, not inside the clock (README)
    t0 = time.perf_counter()
    files, _sites, _counts = ru.get_dataset_files_replicas(name, client=Client(), scope=scope,
                                                           mode="full")
    t1 = time.perf_counter()
    print(json.dumps({"seconds": t1 - t0, "files": len(files),
                      "replicas": sum(len(f) for f in files), "bytes": None}))


if __name__ == "__main__":
    main(sys.argv[1:])
