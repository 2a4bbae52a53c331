"""``bench_multifile.py``: one multi-file analysis, in a new process.

    python benchmarks/children/multifile_case.py '{"mode": "coffea", "urls": [...], ...}'

``mode`` ``coffea``: coffea's ``dataset_tools`` (``preprocess``, or ``htpdata.coffea.preprocess``
with ``"htpdata_preprocess": true``, then ``apply_to_fileset``) on a Dask LocalCluster of
``workers`` worker processes, filling one histogram per branch. ``serial``: one process reading
the files in turn with ``uproot.open(url)["Events"].arrays(branches)``. Prints one JSON line:
``seconds`` (to the last result), ``preprocess_s``, the histograms' contents.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from typing import Any

import numpy as np

BINS = np.linspace(0.0, 200.0, 41)


def _hist(values: Any) -> list[float]:
    import awkward as ak

    flat = ak.to_numpy(ak.flatten(values, axis=None)).astype("float64")
    counts: list[float] = np.histogram(flat, BINS)[0].astype(float).tolist()
    return counts


def serial(spec: dict[str, Any]) -> dict[str, Any]:
    import uproot

    hists: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for url in spec["urls"]:
        with uproot.open(url, timeout=spec.get("timeout", 120)) as f:
            arrays = f["Events"].arrays(spec["branches"])
        for b in spec["branches"]:
            h = _hist(arrays[b])
            hists[b] = [x + y for x, y in zip(hists.get(b, [0.0] * len(h)), h, strict=True)]
    return {"seconds": time.perf_counter() - t0, "preprocess_s": None, "hists": hists}


def coffea(spec: dict[str, Any]) -> dict[str, Any]:
    import htpdata.coffea

    # Untyped libraries, used as such.
    dask: Any = importlib.import_module("dask")
    dak: Any = importlib.import_module("dask_awkward")
    distributed: Any = importlib.import_module("distributed")
    hda: Any = importlib.import_module("hist.dask")
    dt: Any = importlib.import_module("coffea.dataset_tools")
    schema: Any = importlib.import_module("coffea.nanoevents").BaseSchema

    branches = spec["branches"]
    options = {"timeout": spec.get("timeout", 120)}

    def analysis(events: Any) -> dict[str, Any]:
        return {b: hda.Hist.new.Reg(len(BINS) - 1, BINS[0], BINS[-1]).Double().fill(
            dak.flatten(events[b], axis=None)) for b in branches}

    with distributed.LocalCluster(n_workers=spec.get("workers", 2), threads_per_worker=1,
                                  processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as dc:
        fileset = dt.DataGroupSpec.model_validate(
            {"dataset": {"files": {u: "Events" for u in spec["urls"]}}})
        t0 = time.perf_counter()
        pre = htpdata.coffea.preprocess if spec.get("htpdata_preprocess") else dt.preprocess
        available, _ = pre(fileset, step_size=spec.get("step_size", 100_000), scheduler=dc,
                           uproot_options=options)
        t1 = time.perf_counter()
        out = dt.apply_to_fileset(analysis, available, schemaclass=schema,
                               uproot_options=options)
        (got,) = dask.compute(out, scheduler=dc)
        t2 = time.perf_counter()
    hists = {b: [float(x) for x in got["dataset"][b].values()] for b in branches}
    return {"seconds": t2 - t0, "preprocess_s": t1 - t0, "hists": hists}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    warnings.simplefilter("ignore")
    result = serial(spec) if spec["mode"] == "serial" else coffea(spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
