"""One timed ROOT read for ``bench_gateway.py``: a TChain of URLs, RDataFrame sums branches.

    python benchmarks/children/rdf_case.py '{"urls": [...], "tree": "Events", "branches": [...]}'

ROOT is imported and its HTTP handler registered before the clock starts; the clock covers the
chain, the RDataFrame and one event loop computing the sum of every branch (each basket of the
branches is read and decompressed once). A TChain, not ``RDataFrame(tree, [urls])``: the wheel's
RDataFrame was seen to fail to open a list of root:// URLs that a TChain opens. Prints one JSON
line: seconds, entries and a digest of the sums, so every road is seen to read the same data.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    warnings.simplefilter("ignore")  # the wheel's "alpha stage" notice
    import ROOT

    from htpdata.gateway.root import enable_http

    ROOT.gROOT.SetBatch(True)
    enable_http()
    start = time.perf_counter()
    chain = ROOT.TChain(spec["tree"])
    for url in spec["urls"]:
        chain.Add(url)
    df = ROOT.RDataFrame(chain)
    count = df.Count()
    sums = [df.Sum(b) for b in spec["branches"]]
    entries = int(count.GetValue())
    digest = float(sum(float(s.GetValue()) for s in sums))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "entries": entries, "digest": round(digest, 3)}


if __name__ == "__main__":
    print("\n" + json.dumps(run(json.loads(sys.argv[1]))), flush=True)
