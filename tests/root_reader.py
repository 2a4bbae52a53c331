"""Real ROOT (the PyPI wheel) reading files, run by the gateway tests in a new process.

    python tests/root_reader.py '{"op": "rdf", "tree": "Events", "urls": [...], ...}'

ROOT is imported here, never in the pytest process (its import warns, and pytest turns warnings
into errors). Prints one JSON line: per branch, a histogram's bin contents and entries, so the
test compares what ROOT computed through the gateway with what it computed on local files.

ops: ``rdf`` (RDataFrame over the URLs), ``chain`` (a TChain, then RDataFrame over it),
``jobs`` (several of these in one process: ROOT takes seconds to start),
``distributed`` (ROOT's distributed RDataFrame on the Dask scheduler ``scheduler``),
``buffers`` (TFile::ReadBuffers of given ranges: ROOT's multi-range request, bytes as hex),
``pause`` (open, histogram ``first`` branches, print a line, wait for a line on stdin, then
histogram ``then`` branches from the same open file: a read that an origin dies in the middle of).
"""

from __future__ import annotations

import array
import ctypes
import json
import sys
import warnings
from typing import Any


def _root() -> Any:
    warnings.simplefilter("ignore")
    import ROOT

    from htpdata.gateway.root import enable_http

    ROOT.gROOT.SetBatch(True)
    enable_http()
    return ROOT


def _hists(root: Any, df: Any, branches: list[str], bins: int = 40) -> dict[str, Any]:
    lo_hi = {b: (df.Min(b), df.Max(b)) for b in branches}
    out = {}
    for b in branches:
        lo, hi = float(lo_hi[b][0].GetValue()), float(lo_hi[b][1].GetValue())
        h = df.Histo1D((b, b, bins, lo, hi + 1e-6 * (abs(hi) + 1)), b)
        out[b] = {"entries": h.GetEntries(),
                  "bins": [h.GetBinContent(i) for i in range(bins + 2)]}
    return out


def run(spec: dict[str, Any]) -> dict[str, Any]:
    root = _root()
    op = spec["op"]
    if op == "rdf":
        df = root.RDataFrame(spec["tree"], root.std.vector["string"](spec["urls"]))
        return {"hists": _hists(root, df, spec["branches"])}
    if op == "chain":
        chain = root.TChain(spec["tree"])
        for u in spec["urls"]:
            chain.Add(u)
        df = root.RDataFrame(chain)
        return {"hists": _hists(root, df, spec["branches"]), "entries": chain.GetEntries()}
    if op == "jobs":
        return {"results": [run(job) for job in spec["jobs"]]}
    if op == "distributed":
        import distributed

        # The workers registered ROOT's HTTP handler: htpdata.gateway.install(..., root=True).
        with distributed.Client(spec["scheduler"]) as dc:
            df = root.RDataFrame(spec["tree"], spec["urls"], executor=dc,
                                 npartitions=spec.get("npartitions", 2))
            return {"hists": _hists(root, df, spec["branches"])}
    if op == "buffers":
        f = root.TFile.Open(spec["urls"][0])
        pos = array.array("q", [p for p, _ in spec["ranges"]])
        lens = array.array("i", [n for _, n in spec["ranges"]])
        buf = ctypes.create_string_buffer(sum(lens))
        failed = f.ReadBuffers(buf, pos, lens, len(lens))
        return {"failed": bool(failed), "hex": bytes(buf)[: sum(lens)].hex()}
    if op == "pause":
        f = root.TFile.Open(spec["urls"][0])
        tree = f.Get(spec["tree"])
        tree.SetCacheSize(0)  # baskets are fetched when read, not all up front
        first = _hists(root, root.RDataFrame(tree), spec["first"])
        print(json.dumps({"paused": True}), flush=True)
        sys.stdin.readline()
        then = _hists(root, root.RDataFrame(tree), spec["then"])
        return {"hists": {**first, **then}}
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    # On a line of its own: a progress bar (distributed RDataFrame) may leave one open.
    print("\n" + json.dumps(run(json.loads(sys.argv[1]))), flush=True)
