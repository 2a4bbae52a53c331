"""Conversion benchmark: reading 20 columns from the Parquet copy vs uproot from ROOT, and
conversion throughput (htpdata vs a plain uproot + ak.to_parquet script, and with Dask workers).

    .venv/bin/python benchmarks/bench_convert.py [--input benchmarks/data/nano_128MB.root]

Each read runs in a new process (imports outside the clock). "cold" drops the page cache
first when the machine allows it (root: /proc/sys/vm/drop_caches), else says it could not;
"warm" is a second new process. Target (issue 7): the Parquet read >= 2 x faster than the ROOT
read of the same columns. Absolute times are noisy on a shared 2-core machine: compare ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Jet_pt", "Jet_eta", "Jet_phi",
            "Jet_mass", "Jet_btagDeepB", "Electron_pt", "Electron_eta", "Electron_phi",
            "MET_pt", "MET_phi", "nMuon", "nJet", "nElectron", "PV_npvs", "Photon_pt", "Tau_pt"]

def run(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One step in a new process (``children/convert_case.py``); its JSON answer."""
    ran = h.run(h.child("convert_case.py", spec), env, timeout=900)
    answer = ran.last_json() if ran.rc == 0 else None
    if answer is None:
        raise RuntimeError(f"{spec['how']}: exit {ran.rc}: {h.tail(ran.err)}")
    return answer


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def best(spec: dict[str, Any], env: dict[str, str], n: int, cold: bool) -> float:
    """The median seconds of ``n`` runs (page cache dropped before each when ``cold``)."""
    times = []
    for _ in range(n):
        if cold:
            drop_caches()
        times.append(float(run(spec, env)["seconds"]))
    return sorted(times)[len(times) // 2]


def measure(src: Path, cols: list[str], work: Path, repeat: int, dask: bool) -> dict[str, Any]:
    """Every figure of the run, each step a new process with its cache under ``work``."""
    env = h.isolated_env(work, HTPDATA_CACHE_LOCAL_DIR=str(work / "cache"))
    mb = src.stat().st_size / 1e6
    res: dict[str, Any] = {"input": str(src), "input_mb": mb, "columns": cols,
                           "page_cache_dropped": drop_caches()}
    t = run({"how": "plain-convert", "path": str(src), "columns": cols,
             "out": str(work / "plain.parquet")}, env)
    res["plain_convert_s"] = t["seconds"]
    t = run({"how": "htpdata", "path": str(src), "columns": cols}, env)
    res["htpdata_convert_s"] = t["seconds"]
    pq = str(t["path"])
    res["parquet_mb"] = Path(pq).stat().st_size / 1e6
    for label, how, path in (("root", "root", str(src)), ("parquet", "parquet", pq),
                             ("htpdata-cache root", "htpdata-read", str(src))):
        res[f"{label} cold_s"] = best({"how": how, "path": path, "columns": cols}, env,
                                      repeat, cold=True)
        res[f"{label} warm_s"] = best({"how": how, "path": path, "columns": cols}, env,
                                      repeat, cold=False)
    if dask:
        res["dask"] = _dask(src, cols, work, mb)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(HERE / "data" / "nano_128MB.root"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dask", action="store_true", help="also time conversion on 1 and 2 Dask "
                    "workers (several files)")
    args = ap.parse_args(argv)
    src = Path(args.input)
    if not src.exists():
        print(f"build the input first: python benchmarks/make_inputs.py ({src} missing)")
        return 2
    import uproot

    with uproot.open(src) as f:
        names = set(f["Events"].keys())
        cols = [b for b in BRANCHES if b in names][:20]
    h.compile_htpdata()
    with ExitStack() as stack:
        res = measure(src, cols, h.workdir(stack, "convert", Path(tempfile.gettempdir())),
                      args.repeat, args.dask)
    mb = res["input_mb"]
    print(f"input {src.name}: {mb:.1f} MB, {len(cols)} columns; page cache dropped for cold "
          f"runs: {res['page_cache_dropped']}")
    print(f"conversion (20 columns, one core): htpdata {res['htpdata_convert_s']:.2f} s "
          f"= {mb / float(res['htpdata_convert_s']):.1f} MB/s of input; plain uproot + "
          f"ak.to_parquet {res['plain_convert_s']:.2f} s = "
          f"{mb / float(res['plain_convert_s']):.1f} MB/s; Parquet copy {res['parquet_mb']:.1f} MB")
    for temp in ("cold", "warm"):
        r, p = float(res[f"root {temp}_s"]), float(res[f"parquet {temp}_s"])
        via = float(res[f"htpdata-cache root {temp}_s"])
        print(f"read 20 columns ({temp}): ROOT {r:.3f} s, ROOT via htpdata:// {via:.3f} s, "
              f"Parquet {p:.3f} s -> Parquet {r / p:.1f} x faster than ROOT "
              f"({'met' if r / p >= 2 else 'NOT met'}: target >= 2 x)")
    h.write_results(h.RESULTS / "convert.json", {**h.run_meta(), **res})
    return 0


def _dask(src: Path, cols: list[str], work: Path, mb: float) -> dict[str, float]:
    """Convert 4 copies of the input with 1 and with 2 worker processes."""
    import shutil

    import distributed

    import htpdata
    from htpdata.convert import convert_many

    copies = []
    for i in range(4):
        p = work / f"copy{i}.root"
        shutil.copyfile(src, p)
        copies.append(str(p))
    out = {}
    for workers in (1, 2):
        shared = work / f"shared-{workers}"
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as dc, \
                htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
            t0 = time.perf_counter()
            rows = convert_many(copies, "parquet", cols, client=c, dask=dc)
            dt = time.perf_counter() - t0
            assert all("path" in r for r in rows), rows
        out[f"workers_{workers}_s"] = dt
        out[f"workers_{workers}_mb_s"] = 4 * mb / dt
        print(f"dask: {workers} worker(s): 4 files in {dt:.1f} s = {4 * mb / dt:.1f} MB/s")
    return out


if __name__ == "__main__":
    sys.exit(main())
