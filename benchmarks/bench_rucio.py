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
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from htpdata.testing import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_stage import compile_htpdata, source_state  # noqa: E402  (one definition each)

DATA = HERE / "data"
RESULTS = HERE / "results"
SCOPE = "bench"
DATASET = "bench.rucio.dataset"
RSES = ("T2_IT_BENCH", "T2_DE_BENCH")
COLD_TARGET = 1.2  # htpdata cold <= 1.2 x the bare bulk call
WARM_TARGET = 50.0  # htpdata warm >= 50 x faster than cold
HTPDATA_COLD = "htpdata cold"
HTPDATA_WARM = "htpdata warm"
BARE = "rucio bulk, sort=random"

# Each child prints one JSON line: seconds (after imports), files, replicas, a check value.
CHILD_HTPDATA = """\
import json, sys, time
import rucio.client  # noqa: imported before the clock, as in every case
import htpdata
t0 = time.perf_counter()
files = htpdata.Client().resolve_all(sys.argv[1])
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "files": len(files),
                  "replicas": sum(len(f.replicas) for f in files),
                  "bytes": sum(f.size or 0 for f in files)}))
"""

CHILD_BARE = """\
import json, sys, time
from rucio.client import Client
scope, name, sort = sys.argv[1], sys.argv[2], sys.argv[3] or None
t0 = time.perf_counter()
kwargs = {"schemes": ["root"]}
if sort:
    kwargs["sort"] = sort
rows = list(Client().list_replicas([{"scope": scope, "name": name}], **kwargs))
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "files": len(rows),
                  "replicas": sum(len(r["pfns"]) for r in rows),
                  "bytes": sum(r["bytes"] or 0 for r in rows)}))
"""

# What htpdata asks Rucio (src/htpdata/rucio/service.py), without htpdata around it.
CHILD_HTPDATA_CALLS = """\
import json, sys, time
from rucio.client import Client
scope, name = sys.argv[1], sys.argv[2]
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
"""

# htpdata cold then warm (same metadata cache) under cProfile, in one new process each.
CHILD_PROFILE = """\
import cProfile, json, pstats, sys, time
import rucio.client
import htpdata
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
files = htpdata.Client().resolve_all(sys.argv[1])
prof.disable()
t1 = time.perf_counter()
rows = []
for (fname, line, func), (_, calls, own, cum, _) in pstats.Stats(prof).stats.items():
    where = fname.split("site-packages/")[-1].split("/src/")[-1]
    rows.append([f"{where}:{line}({func})", calls, own, cum])
print(json.dumps({"seconds": t1 - t0, "files": len(files),
                  "replicas": sum(len(f.replicas) for f in files), "bytes": None,
                  "top_own": sorted(rows, key=lambda r: -r[2])[:12],
                  "top_cumulative": sorted(rows, key=lambda r: -r[3])[:25]}))
"""

CHILD_COFFEA = """\
import importlib.util, json, os, sys, time
from rucio.client import Client
spec = importlib.util.spec_from_file_location("rucio_utils", sys.argv[1])
ru = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ru)
scope, name = sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
files, sites, counts = ru.get_dataset_files_replicas(name, client=Client(), scope=scope,
                                                     mode="full")
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "files": len(files),
                  "replicas": sum(len(f) for f in files), "bytes": None}))
"""


class OutOfTime(Exception):
    """The global wall-clock bound was reached."""


@dataclass
class Case:
    label: str
    what: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [r["seconds"] for r in self.runs if r.get("error") is None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


class Bench:
    def __init__(self, env: dict[str, str], work: Path, deadline: float,
                 run_timeout: float) -> None:
        self.env = env
        self.work = work
        self.deadline = deadline
        self.run_timeout = run_timeout
        self.cases: dict[str, Case] = {}

    def measure(self, label: str, what: str, args: list[str],
                env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
        """Run one child (``python -c CODE ARGS...``) and record its JSON answer."""
        remaining = self.deadline - time.monotonic()
        if remaining < 5:
            raise OutOfTime(label)
        timeout = min(self.run_timeout, remaining)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", *args], env=env or self.env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            wall = time.perf_counter() - t0
            lines = out.strip().splitlines()
            run = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "error": f"exit {proc.returncode}: "
                         f"{(err.strip().splitlines() or ['no output'])[-1][:200]}"}
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group is still its own
            proc.communicate()
            wall, run = time.perf_counter() - t0, {"error": f"timed out after {timeout:.0f} s"}
        run["process_s"] = wall
        self.cases.setdefault(label, Case(label, what)).runs.append(run)
        shown = f"{run['seconds']:7.3f} s (process {wall:5.2f} s), {run['files']} files, " \
                f"{run['replicas']} replicas" if "error" not in run else f"FAILED: {run['error']}"
        print(f"  {label:<34} {shown}", flush=True)
        return run


# -- set-up ------------------------------------------------------------------------------------
def fill(server: Any, n: int) -> dict[str, Any]:
    """Two RSEs, ``n`` files with a replica on each, one dataset; returns timings."""
    from htpdata.testing.rucio import add_dataset, add_rse, register_files

    c = server.client()
    hosts = ("localhost", "127.0.0.1")  # Rucio keys replicas by PFN: two spellings, two ports
    t0 = time.perf_counter()
    files = [{"name": f"/store/bench/rucio/f{i:05d}.root", "bytes": 1_000_000 + i,
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
    out = []
    for phase in ("cold", "warm"):
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD_PROFILE, did], env=env,
                                  capture_output=True, text=True,
                                  timeout=min(b.run_timeout,
                                              max(5.0, b.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            out.append({"phase": phase, "error": "timed out"})
            break
        if proc.returncode != 0:
            out.append({"phase": phase, "error": proc.stderr.strip()[-300:]})
            break
        out.append({"phase": phase, **json.loads(proc.stdout.strip().splitlines()[-1])})
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
        {"target": f"htpdata cold <= {COLD_TARGET} x bare bulk call (sort=random)",
         "value": cold / bare if cold and bare else None, "bound": COLD_TARGET},
        {"target": f"htpdata warm >= {WARM_TARGET:.0f} x faster than cold",
         "value": cold / warm if cold and warm else None, "bound": WARM_TARGET},
    ]
    for t, ok in zip(checks, [lambda v: v <= COLD_TARGET, lambda v: v >= WARM_TARGET],
                     strict=True):
        t["status"] = "not measured" if t["value"] is None else "met" if ok(t["value"]) \
            else "NOT met"
    console.print("Targets of issue 4:")
    for t in checks:
        colour = {"met": "green", "NOT met": "red"}.get(t["status"], "yellow")
        shown = "-" if t["value"] is None else f"{t['value']:.2f}"
        console.print(f"  {t['target']:<52} {shown:>7}  [{colour}]{t['status']}[/{colour}]")
    files = {r.get("files") for c in b.cases.values() for r in c.runs if "error" not in r}
    reps = {r.get("replicas") for c in b.cases.values() for r in c.runs if "error" not in r}
    if len(files) > 1 or len(reps) > 1:
        console.print(f"[red]cases disagree on the answer: files {files}, replicas {reps}[/red]")
    if meta.get("coffea"):
        console.print(f"coffea: {meta['coffea']}")
    console.print("Absolute times are noisy (2 cores, one gunicorn worker on SQLite); compare "
                  "ratios within one run.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "cases": rows, "targets": checks}, indent=1,
                               default=str) + "\n")
    console.print(f"written {path}")


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
    source_at_start = source_state()
    compile_htpdata()
    deadline = time.monotonic() + args.max_seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    from htpdata.testing.rucio import RucioServer

    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix=f"work-rucio-{os.getpid()}-", dir=DATA
                                     if DATA.is_dir() else None))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        server = RucioServer(name="rucio-bench")
        stack.callback(server.cleanup)
        server.start()
        print(f"Rucio {server.url} ready in {server.start_seconds:.1f} s "
              f"(database built in {server.build_seconds:.1f} s)", flush=True)
        filled = fill(server, n)
        print(f"registered {n} files x {len(RSES)} RSEs in {filled['add_replicas_s']:.1f} s, "
              f"attached to {SCOPE}:{DATASET} in {filled['attach_s']:.1f} s", flush=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HTPDATA_", "RUCIO_", "X509_", "BEARER_TOKEN"))}
        env.update(RUCIO_CONFIG=str(server.client_config), XDG_CONFIG_HOME=str(work / "config"),
                   XDG_CACHE_HOME=str(work / "xdg-cache"), PYTHONDONTWRITEBYTECODE="1")
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
                          [CHILD_BARE, SCOPE, DATASET, "random"])
                b.measure(HTPDATA_COLD, "Client().resolve_all(DID), empty metadata cache",
                          [CHILD_HTPDATA, did], henv)
                b.measure(HTPDATA_WARM, "the same again, new process, same cache",
                          [CHILD_HTPDATA, did], henv)
                b.measure("rucio, htpdata's calls", "get_did, list_files, list_replicas x "
                          "500 DIDs", [CHILD_HTPDATA_CALLS, SCOPE, DATASET])
                if not args.no_default_sort:
                    b.measure("rucio bulk, default sort", "the bulk call, default sort (GeoIP)",
                              [CHILD_BARE, SCOPE, DATASET, ""])
                if coffea[0] is not None:
                    coffea_sites_map(coffea_cwd, json.loads(
                        (coffea_cwd / ".sites_map.json").read_text()))  # keep it fresh
                    b.measure("coffea rucio_utils", "get_dataset_files_replicas(mode=full)",
                              [CHILD_COFFEA, str(coffea[0]), SCOPE, DATASET], cwd=coffea_cwd)
        except OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        profiles = None
        if args.profile and stopped is None:
            meta_dir = Path(tempfile.mkdtemp(prefix="htpdata-profile-", dir=work))
            profiles = profile_htpdata(b, did, {**env, "HTPDATA_CACHE_LOCAL_DIR": str(meta_dir)})
        import rucio

        meta = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
                "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "rucio": getattr(rucio, "__version__", None) or _version("rucio")},
                "htpdata_source": {"start": source_at_start, "end": source_state()},
                "fill": filled, "repeat": repeat, "statistic": "median", "quick": args.quick,
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
