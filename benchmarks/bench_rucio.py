"""Rucio benchmark: resolve a 5000-file dataset through a real Rucio server, cold and warm.

Starts a real Rucio server (``htpdata.testing.rucio``: PyPI ``rucio``, gunicorn, SQLite) on a
free loopback port, creates two RSEs (root:// endpoints on loopback ports nobody listens on: only
names are resolved, no byte is read) and registers a dataset of ``--files`` (5000) files with a
replica of each on both RSEs (``add_replicas`` in batches of 500, ``attach_dids`` by 1000).
Every measurement is a new Python process; the clock starts after the imports (``rucio.client``
is imported before it in every case) and stops when the answer is in Python lists:

- htpdata cold: ``htpdata.Client().resolve_all("rucio:SCOPE:DATASET")`` with an empty metadata
  cache (``HTPDATA_CACHE_LOCAL_DIR`` points at a new folder; the cache is under it);
- htpdata warm: the same in a second process with the same folder;
- the bare bulk call: ``list(Client().list_replicas([{"scope", "name": DATASET}],
  schemes=["root"], sort="random"))``; the same with Rucio's default sort (GeoIP), for reference;
- htpdata's own Rucio calls made bare (get_did, list_files, list_replicas by 500 file DIDs);
- coffea's ``rucio_utils.get_dataset_files_replicas`` when its wheel can be had with ``pip
  download --no-deps coffea``: the module needs only ``rucio``, so it is loaded from the wheel
  without coffea's heavy dependencies (its CMS site map, normally read from /cvmfs, is supplied).

Prints a table with ratios, checks the targets of issue 4 (cold <= 1.2 x the bare bulk call;
warm >= 50 x faster than cold) and writes ``benchmarks/results/rucio.json``.

    .venv/bin/python benchmarks/bench_rucio.py [--quick] [--files 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from _harness import Bench, OutOfTime  # noqa: E402
from htpdata.testing import free_port  # noqa: E402

DATA = h.DATA
RESULTS = h.RESULTS
SCOPE = "bench"
DATASET = "bench.rucio.dataset"
RSES = ("T2_IT_BENCH", "T2_DE_BENCH")
COLD_TARGET = 1.2  # htpdata cold <= 1.2 x the bare bulk call
WARM_TARGET = 50.0  # htpdata warm >= 50 x faster than cold
HTPDATA_COLD = "htpdata cold"
HTPDATA_WARM = "htpdata warm"
BARE = "rucio bulk, sort=random"


def _show(run: dict[str, Any]) -> str:
    return (f"{run['seconds']:7.3f} s (process {run['process_s']:5.2f} s), {run['files']} files, "
            f"{run['replicas']} replicas")


# -- set-up ------------------------------------------------------------------------------------
def fill(server: Any, n: int) -> dict[str, Any]:
    """Two RSEs, ``n`` files with a replica on each, one dataset; returns timings."""
    from htpdata.testing.rucio import add_dataset, add_rse, register_files

    c = server.client()
    hosts = ("localhost", "127.0.0.1")  # Rucio keys replicas by PFN: two spellings, two ports
    t0 = time.perf_counter()
    files: list[dict[str, Any]] = [
        {"name": f"/store/bench/rucio/f{i:05d}.root", "bytes": 1_000_000 + i,
         "adler32": f"{(0x10000001 + i) & 0xFFFFFFFF:08x}"} for i in range(n)]
    for rse, host in zip(RSES, hosts, strict=True):
        port = free_port()
        add_rse(c, rse, root_url=f"root://{host}:{port}",
                attributes={"country": rse.split("_")[1]})
        register_files(c, SCOPE, rse, files, f"root://{host}:{port}/")
    t1 = time.perf_counter()
    add_dataset(c, SCOPE, DATASET, [f["name"] for f in files])
    t2 = time.perf_counter()
    return {"files": n, "rses": list(RSES), "add_replicas_s": t1 - t0, "attach_s": t2 - t1}


def coffea_module(work: Path, allow_download: bool) -> tuple[Path | None, str]:
    """``rucio_utils.py`` from the coffea wheel (downloaded once into data/), or why not."""
    wheels = sorted(DATA.glob("coffea-*.whl"))
    if not wheels and allow_download:
        DATA.mkdir(exist_ok=True)
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                  "--disable-pip-version-check", "-q", "-d", str(DATA),
                                  "coffea"], capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            return None, "pip download --no-deps coffea timed out"
        if out.returncode != 0:
            return None, f"pip download --no-deps coffea failed: {out.stderr.strip()[-200:]}"
        wheels = sorted(DATA.glob("coffea-*.whl"))
    if not wheels:
        return None, "no coffea wheel (run without --no-download to fetch one)"
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as z:
        try:
            text = z.read("coffea/dataset_tools/rucio_utils.py")
        except KeyError:
            return None, f"{wheel.name} has no coffea/dataset_tools/rucio_utils.py"
    path = work / "coffea_rucio_utils.py"
    path.write_bytes(text)
    return path, wheel.name


def coffea_sites_map(cwd: Path, rse_prefixes: dict[str, str]) -> None:
    """rucio_utils reads the CMS site map from /cvmfs unless ./.sites_map.json is fresh."""
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / ".sites_map.json").write_text(json.dumps(rse_prefixes))


def profile_htpdata(b: Bench, did: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """htpdata cold then warm under cProfile (one thread: cProfile sees everything)."""
    out: list[dict[str, Any]] = []
    for phase in ("cold", "warm"):
        try:
            ran = h.run(h.child("resolve_profile.py", did), env,
                        b.deadline.timeout(b.run_timeout, need=0.0))
        except (subprocess.TimeoutExpired, OutOfTime):
            out.append({"phase": phase, "error": "timed out"})
            break
        answer = ran.last_json() if ran.rc == 0 else None
        if answer is None:
            out.append({"phase": phase, "error": ran.err.strip()[-300:]})
            break
        out.append({"phase": phase, **answer})
    print("\nWhere htpdata's resolve_all spends its time (cProfile; seconds cumulative / own, "
          "calls):")
    for p in out:
        if "error" in p:
            print(f"  {p['phase']}: {p['error']}")
            continue
        print(f"  {p['phase']}: {p['seconds']:.3f} s under the profiler, {p['files']} files")
        for name, calls, own, cum in p["top_cumulative"][:18]:
            print(f"    {cum:7.3f} {own:7.3f} {calls:8d}  {name}")
    return out


# -- report ------------------------------------------------------------------------------------
def report(b: Bench, meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def med(label: str) -> float | None:
        return b.cases[label].median if label in b.cases else None

    bare, cold = med(BARE), med(HTPDATA_COLD)
    table = Table(title=f"Resolve a {meta['fill']['files']}-file dataset with a replica on each "
                  f"of {len(RSES)} RSEs (median of {meta['repeat']} new processes; clock after "
                  "imports)")
    for col in ("case", "what runs", "s", "min-max", "process s", "/ bare bulk",
                "htpdata cold / s", "files", "replicas"):
        table.add_column(col, justify="left" if col in ("case", "what runs") else "right")
    rows = []
    for case in b.cases.values():
        m = case.median
        times = case.times
        good = [r for r in case.runs if "error" not in r]
        proc = statistics.median(r["process_s"] for r in good) if good else None
        errors = [r["error"] for r in case.runs if "error" in r]
        last = good[-1] if good else {}
        table.add_row(case.label, escape(case.what),
                      f"{m:.3f}" if m is not None else f"[red]{escape(errors[0][:50])}[/red]",
                      f"{min(times):.3f}-{max(times):.3f}" if len(times) > 1 else "",
                      f"{proc:.2f}" if proc is not None else "",
                      f"{m / bare:.2f}" if m and bare else "",
                      f"{cold / m:.1f}" if m and cold else "",
                      str(last.get("files", "")), str(last.get("replicas", "")))
        rows.append({**asdict(case), "median_s": m, "process_median_s": proc,
                     "ratio_bare": m / bare if m and bare else None,
                     "cold_over_this": cold / m if m and cold else None})
    console = Console(width=170)
    console.print(table)
    warm = med(HTPDATA_WARM)
    checks = [
        h.target(f"htpdata cold <= {COLD_TARGET} x bare bulk call (sort=random)",
                 h.ratio(cold, bare), COLD_TARGET),
        h.target(f"htpdata warm >= {WARM_TARGET:.0f} x faster than cold",
                 h.ratio(cold, warm), WARM_TARGET, higher=True),
    ]
    h.print_targets("Targets of issue 4:", checks, console, width=52)
    files = {r.get("files") for c in b.cases.values() for r in c.runs if "error" not in r}
    reps = {r.get("replicas") for c in b.cases.values() for r in c.runs if "error" not in r}
    if len(files) > 1 or len(reps) > 1:
        console.print(f"[red]cases disagree on the answer: files {files}, replicas {reps}[/red]")
    if meta.get("coffea"):
        console.print(f"coffea: {meta['coffea']}")
    console.print("Absolute times are noisy (2 cores, one gunicorn worker on SQLite); compare "
                  "ratios within one run.")
    h.write_results(path, {**meta, "cases": rows, "targets": checks})


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1000 files, one repetition")
    ap.add_argument("--files", type=int, default=None, help="files in the dataset (5000)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (3; 1 with --quick)")
    ap.add_argument("--no-default-sort", action="store_true",
                    help="skip the (slow) reference with Rucio's default sort")
    ap.add_argument("--no-coffea", action="store_true", help="skip coffea's rucio_utils")
    ap.add_argument("--no-download", action="store_true",
                    help="do not run pip download for coffea; use a wheel in data/ if any")
    ap.add_argument("--profile", action="store_true",
                    help="also run htpdata cold and warm under cProfile and print the top")
    ap.add_argument("--max-seconds", type=float, default=1200.0,
                    help="wall-clock bound for the whole run (default 1200)")
    ap.add_argument("--run-timeout", type=float, default=300.0, help="bound for one process")
    ap.add_argument("--json", type=Path, default=RESULTS / "rucio.json")
    args = ap.parse_args(argv)
    n = args.files or (1000 if args.quick else 5000)
    repeat = args.repeat or (1 if args.quick else 3)
    source_at_start = h.source_state()
    h.compile_htpdata()
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    from htpdata.testing.rucio import RucioServer

    with ExitStack() as stack:
        work = h.workdir(stack, "rucio")
        server = RucioServer(name="rucio-bench")
        stack.callback(server.cleanup)
        server.start()
        print(f"Rucio {server.url} ready in {server.start_seconds:.1f} s "
              f"(database built in {server.build_seconds:.1f} s)", flush=True)
        filled = fill(server, n)
        print(f"registered {n} files x {len(RSES)} RSEs in {filled['add_replicas_s']:.1f} s, "
              f"attached to {SCOPE}:{DATASET} in {filled['attach_s']:.1f} s", flush=True)
        env = h.isolated_env(work, RUCIO_CONFIG=str(server.client_config))
        b = Bench(env, work, deadline, args.run_timeout)
        # Log in once, so no case pays for the token (the client keeps it in a file).
        warmup = subprocess.run([sys.executable, "-c", "from rucio.client import Client; "
                                 "print(Client().whoami()['account'])"], env=env,
                                capture_output=True, text=True, timeout=120)
        if warmup.returncode != 0:
            raise SystemExit(f"rucio client cannot log in: {warmup.stderr[-500:]}")
        coffea: tuple[Path | None, str] = (None, "skipped (--no-coffea)")
        coffea_cwd = work / "coffea-cwd"
        if not args.no_coffea:
            coffea = coffea_module(work, not args.no_download)
            if coffea[0] is not None:
                c = server.client()
                prefixes = {}
                for rse in RSES:
                    proto = c.get_protocols(rse)[0]
                    prefixes[rse] = f"root://{proto['hostname']}:{proto['port']}/"
                coffea_sites_map(coffea_cwd, prefixes)
        did = f"rucio:{SCOPE}:{DATASET}"
        stopped = None
        try:
            for rep in range(repeat):
                print(f"repetition {rep + 1} of {repeat}", flush=True)
                meta_dir = Path(tempfile.mkdtemp(prefix="htpdata-local-", dir=work))
                henv = {**env, "HTPDATA_CACHE_LOCAL_DIR": str(meta_dir)}
                b.measure(BARE, "list_replicas([dataset], schemes=[root], sort=random)",
                          h.child("resolve_bare.py", SCOPE, DATASET, "random"), show=_show)
                b.measure(HTPDATA_COLD, "Client().resolve_all(DID), empty metadata cache",
                          h.child("resolve_htpdata.py", did), henv, show=_show)
                b.measure(HTPDATA_WARM, "the same again, new process, same cache",
                          h.child("resolve_htpdata.py", did), henv, show=_show)
                b.measure("rucio, htpdata's calls", "get_did, list_files, list_replicas x "
                          "500 DIDs", h.child("resolve_calls.py", SCOPE, DATASET), show=_show)
                if not args.no_default_sort:
                    b.measure("rucio bulk, default sort", "the bulk call, default sort (GeoIP)",
                              h.child("resolve_bare.py", SCOPE, DATASET, ""), show=_show)
                if coffea[0] is not None:
                    coffea_sites_map(coffea_cwd, json.loads(
                        (coffea_cwd / ".sites_map.json").read_text()))  # keep it fresh
                    b.measure("coffea rucio_utils", "get_dataset_files_replicas(mode=full)",
                              h.child("resolve_coffea.py", coffea[0], SCOPE, DATASET),
                              cwd=coffea_cwd, show=_show)
        except OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        profiles = None
        if args.profile and stopped is None:
            meta_dir = Path(tempfile.mkdtemp(prefix="htpdata-profile-", dir=work))
            profiles = profile_htpdata(b, did, {**env, "HTPDATA_CACHE_LOCAL_DIR": str(meta_dir)})
        import rucio

        meta = h.run_meta(source_at_start, {"rucio": getattr(rucio, "__version__", None)
                                            or _version("rucio")})
        meta |= {"fill": filled, "repeat": repeat, "statistic": "median", "quick": args.quick,
                "coffea": (f"rucio_utils from {coffea[1]}, loaded alone (its package needs "
                           "numba, pyarrow, matplotlib, dask and more; the module needs only "
                           "rucio)") if coffea[0] is not None else coffea[1],
                "stopped": stopped, "profiles": profiles}
        report(b, meta, args.json)
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
