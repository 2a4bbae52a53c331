"""Stage benchmark: copy whole datasets over the emulated WAN with htpdata and its peers.

Sets up, on loopback and free ports: an XRootD origin serving two generated datasets, the WAN
emulator (``wan.py``, 10 ms each way) in front of it, a catalog (namespace ``bench``) listing both
datasets with sizes and adler32, and a real Rucio server (``htpdata.testing.rucio``) holding the
same files as replicas on an RSE whose root:// protocol points at the emulator. Datasets:

- (a) ``bench:/Bench/Large`` = ``bench:bench.large``: 40 files of 13 MB (520 MB), random bytes;
- (b) ``bench:/Bench/Small`` = ``bench:bench.small``: 400 files of 1 MiB (per-file round trips).

Cases, each into a new empty target, each timed as a command from spawn to exit: ``htpdata
stage`` (CLI, ``--tier shared`` into a new shared tier, no local tier) with the default
``--jobs``/``--streams`` and other settings, and once more on the staged dataset (the re-run);
``htpdata stage rucio:...``; ``xrdcp`` one file after another; ``xrdcp --parallel 4``; Rucio's
``DownloadClient().download_dids`` with its defaults; the link capacity (parallel xrdcp streams
into tmpfs). Prints a table per dataset with ratios to the best peer and to the link capacity,
checks the targets of issue 5, and writes ``benchmarks/results/stage.json``. ``--profile`` adds
an instrumented htpdata run per dataset that shows where its time goes.

    .venv/bin/python benchmarks/bench_stage.py [--quick] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zlib
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from _harness import OutOfTime, run, tail  # noqa: E402
from htpdata.staging import stage as _stage  # noqa: E402
from wan import WanProxy  # noqa: E402

DATA = h.DATA / "stage"
RESULTS = h.RESULTS
BIN = Path(sys.executable).parent
SCOPE = "bench"
RSE = "T2_BENCH_WAN"
PEER_TARGET = 1.0  # htpdata >= 1.0 x the best peer, both datasets
LINK_TARGET = 0.9  # htpdata >= 0.9 x the link capacity on (a)
RERUN_TARGET = 2.0  # seconds: stage again on the staged (b)


def stage_defaults() -> tuple[int, int]:
    """``jobs`` and ``streams`` defaults of ``htpdata.staging.stage`` (the CLI's are the same)."""
    params = inspect.signature(_stage).parameters
    return int(params["jobs"].default), int(params["streams"].default)


DEFAULT_SETTINGS = stage_defaults()


def settings_label(jobs: int, streams: int) -> str:
    label = f"--jobs {jobs} --streams {streams}"
    return f"defaults ({label})" if (jobs, streams) == DEFAULT_SETTINGS else label


DEFAULT_LABEL = settings_label(*DEFAULT_SETTINGS)
PEERS = ("xrdcp serial", "xrdcp --parallel 4", "Rucio DownloadClient")
CAPACITY = "link capacity"

# Functions whose calls the profile times (summed over threads), as (module, class or "", name).
PROFILED = [
    ("htpdata.staging.run", "", "plan_stage"),
    ("htpdata.staging.transfer", "_File", "start"),
    ("htpdata.staging.transfer", "_File", "fetch"),
    ("htpdata.staging.transfer", "_File", "finish"),
    ("htpdata.resolve", "Resolver", "resolve"),
    ("htpdata.resolve", "Resolver", "files"),
    ("htpdata.rucio.service", "RucioService", "_list_replicas"),
    ("htpdata.rucio.service", "RucioService", "did_type"),
    ("htpdata.reader", "ReplicaReader", "_check"),
    ("htpdata.reader", "ReplicaReader", "read_ranges"),
    ("htpdata.transports.xrootd", "_Handles", "get"),
    ("htpdata.transports.xrootd", "", "_close_quietly"),
    ("htpdata.transports.xrootd", "XRootDTransport", "cat_ranges"),
    ("htpdata.transports.xrootd", "XRootDTransport", "_readv_limits"),
    ("htpdata.cache.whole", "StagedFile", "open"),
    ("htpdata.cache.whole", "StagedFile", "write"),
    ("htpdata.cache.whole", "StagedFile", "finish"),
    ("htpdata.cache.pack", "", "block_sums"),
]

@dataclass(frozen=True)
class Dataset:
    key: str  # "a" or "b"
    stem: str  # "large" or "small"
    folder: str  # under DATA and under /store/bench/
    count: int
    size: int  # bytes per file

    @property
    def name(self) -> str:
        return f"bench:/Bench/{self.stem.capitalize()}"

    @property
    def did(self) -> str:
        return f"{SCOPE}:bench.{self.stem}"

    def lfn(self, fname: str) -> str:
        return f"/store/bench/{self.folder}/{fname}"


Files = list[dict[str, Any]]
Sets = dict[str, tuple[Dataset, Files]]


@dataclass
class Result:
    dataset: str
    case: str
    settings: str
    seconds: float | None
    bytes: int = 0
    files: int = 0
    error: str | None = None
    cpu_s: float | None = None
    emulator_cpu_s: float | None = None
    wan_mb: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# -- inputs ------------------------------------------------------------------------------------
def build(ds: Dataset) -> Files:
    """The first ``ds.count`` files of ``data/stage/<folder>/`` (random bytes), made if missing.

    A sidecar ``<folder>.json`` holds each file's size and adler32; a file whose size does not
    match is made again. Bytes are drawn from a seed per file, so a rebuild gives the same file.
    """
    folder = DATA / ds.folder
    folder.mkdir(parents=True, exist_ok=True)
    sidecar = DATA / f"{ds.folder}.json"
    known: dict[str, dict[str, Any]] = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    made = 0
    out = []
    for i in range(ds.count):
        fname = f"f{i:04d}.bin"
        path = folder / fname
        entry = known.get(fname)
        if entry is None or entry["bytes"] != ds.size or not path.exists() \
                or path.stat().st_size != ds.size:
            data = random.Random(f"{ds.folder}/{fname}").randbytes(ds.size)
            path.write_bytes(data)
            path.chmod(0o644)
            entry = known[fname] = {"bytes": ds.size,
                                    "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"}
            made += 1
        out.append({"fname": fname, "path": path, "name": ds.lfn(fname), **entry})
    if made:
        sidecar.write_text(json.dumps(known, indent=0, sort_keys=True) + "\n")
        print(f"  made {made} file(s) in {folder}", flush=True)
    return out


def catalog_text(wan_port: int, sets: Sets) -> str:
    lines = ["format = 1", "[namespaces.bench]", 'description = "stage benchmark"', "",
             "[sites.T2_BENCH_WAN]", "preference = 1", "protocols = [",
             '  { scheme = "root", namespace = "bench", '
             f'prefix = "root://localhost:{wan_port}/" }},', "]", ""]
    for ds, files in sets.values():
        lines += [f'[datasets."{ds.name.split(":", 1)[1]}"]', 'namespace = "bench"', "files = ["]
        lines += [f'  {{ name = "{f["name"]}", size = {f["bytes"]}, '
                  f'adler32 = "{f["adler32"]}" }},' for f in files]
        lines += ["]", ""]
    return "\n".join(lines)


def base_env(work: Path) -> dict[str, str]:
    """Isolated (:func:`_harness.isolated_env`), with the benchmark's catalog."""
    return h.isolated_env(work, HTPDATA_CATALOGS_PATH=str(work / "catalogs"))


# -- running things ----------------------------------------------------------------------------
def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu() -> float:
    """This process's CPU: almost all of it is the WAN emulator's thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Bench:
    """The servers' addresses, the environment, the clock and the results of one run."""

    def __init__(self, wan: WanProxy, env: dict[str, str], work: Path, rucio_config: Path,
                 deadline: h.Deadline, run_timeout: float, sink: Path | None = None) -> None:
        self.wan = wan
        self.env = env
        self.work = work
        self.sink = sink or work
        """Where every case writes (htpdata's tier, the peers' targets): --sink."""
        self.rucio_config = rucio_config
        self.deadline = deadline
        self.run_timeout = run_timeout
        self.results: list[Result] = []
        self._n = 0
        self._cpu0 = self._own0 = 0.0
        self._wan0 = 0

    def url(self, f: dict[str, Any]) -> str:
        return f"root://localhost:{self.wan.port}/{f['name']}"

    def timeout(self) -> float:
        return self.deadline.timeout(self.run_timeout)

    def fresh(self, what: str, base: Path | None = None) -> Path:
        self._n += 1
        path = (base or self.sink) / f"{self._n:02d}-{what}"
        path.mkdir()
        return path

    def begin(self) -> None:
        """Start a case's counters (CPU of the processes it runs, bytes over the WAN)."""
        self._cpu0, self._own0 = children_cpu(), own_cpu()
        self._wan0 = self.wan.bytes_down + self.wan.bytes_up

    def settle(self, *paths: Path) -> None:
        """Drop a case's output and flush the disk, so every case starts from the same state."""
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
        os.sync()
        self.wan.wait_idle(quiet=0.3, timeout=10)

    def record(self, r: Result) -> Result:
        r.cpu_s = children_cpu() - self._cpu0
        r.emulator_cpu_s = own_cpu() - self._own0
        r.wan_mb = (self.wan.bytes_down + self.wan.bytes_up - self._wan0) / 1e6
        self.results.append(r)
        if r.seconds is not None and r.error is None:
            shown = f"{r.seconds:8.2f} s {r.bytes / r.seconds / 1e6:7.1f} MB/s " \
                    f"(CPU client {r.cpu_s:.2f} s, emulator {r.emulator_cpu_s:.2f} s; " \
                    f"WAN {r.wan_mb:.0f} MB)"
        else:
            shown = f"FAILED: {r.error}"
        print(f"  ({r.dataset}) {r.case:<26} {r.settings:<26} {shown}", flush=True)
        return r


def check_tree(r: Result, target: Path, files: Files) -> Result:
    """A peer's output must be every file with its full size."""
    found = [p for p in target.rglob("*") if p.is_file()]
    n, size = len(found), sum(p.stat().st_size for p in found)
    r.files, r.bytes = len(files), sum(f["bytes"] for f in files)
    if r.error is None and (n, size) != (r.files, r.bytes):
        r.error = f"target holds {n} files, {size} bytes; expected {r.files}, {r.bytes}"
    return r


# -- the cases ---------------------------------------------------------------------------------
def htpdata_stage(b: Bench, ds: Dataset, files: Files, jobs: int, streams: int,
                  name: str | None = None, label: str = "htpdata stage",
                  rerun: bool = False) -> None:
    """``htpdata stage NAME --json --tier shared`` into a new shared tier (and again)."""
    shared = b.fresh(f"{ds.key}-htpdata-shared")
    xdg = b.fresh(f"{ds.key}-xdg")  # Rucio's metadata cache lands here (local tier off)
    env = {**b.env, "HTPDATA_CACHE_SHARED_DIR": str(shared), "HTPDATA_CACHE_LOCAL_DIR": "off",
           "XDG_CACHE_HOME": str(xdg), "RUCIO_CONFIG": str(b.rucio_config),
           "PYTHONUNBUFFERED": "1"}
    cmd = [str(BIN / "htpdata"), "stage", name or ds.name, "--json", "--tier", "shared"]
    if (jobs, streams) != DEFAULT_SETTINGS:  # the defaults run as a user runs them: no flags
        cmd += ["--jobs", str(jobs), "--streams", str(streams)]
    settings = settings_label(jobs, streams)

    def once(case: str) -> Result:
        b.begin()
        try:
            ran = run(cmd, env, b.timeout())
        except subprocess.TimeoutExpired:
            return b.record(Result(ds.key, case, settings, None, error="timed out"))
        try:
            d = json.loads(ran.out)
        except ValueError:
            return b.record(Result(ds.key, case, settings, None,
                                   error=f"exit {ran.rc}: {tail(ran.err or ran.out)}"))
        done = d["staged"] + d["already_cached"]
        error = None
        if ran.rc != 0 or d["failed"] or done != len(files):
            first = (d["failures"] or [{}])[0].get("error")
            error = f"exit {ran.rc}, {d['failed']} failed, {done}/{len(files)} there: {first}"
        detail = {"stage_seconds": d["seconds"], "staged": d["staged"],
                  "already_cached": d["already_cached"], "bytes_fetched": d["bytes_fetched"],
                  "verified": sum(1 for f in d["files"] if f.get("verified")),
                  "exit_after_summary_s": ran.seconds - ran.first_out
                  if ran.first_out is not None else None,
                  "file_seconds_median": statistics.median([f["seconds"] for f in d["files"]])
                  if d["files"] else None}
        return b.record(Result(ds.key, case, settings, ran.seconds,
                               sum(f["bytes"] for f in files), len(files), error,
                               detail=detail))

    first = once(label)
    if rerun and first.error is None:
        once(f"{label} (re-run)")
    b.settle(shared, xdg)


def xrdcp_serial(b: Bench, ds: Dataset, files: Files) -> None:
    target = b.fresh(f"{ds.key}-xrdcp-serial")
    b.begin()
    t0 = time.perf_counter()
    seconds: float | None = None
    error = None
    try:
        for f in files:
            ran = run(["xrdcp", "-f", "-s", b.url(f), str(target / f["fname"])], b.env,
                      b.timeout())
            if ran.rc != 0:
                error = f"xrdcp exit {ran.rc}: {tail(ran.err)}"
                break
        seconds = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        error = "timed out"
    b.record(check_tree(Result(ds.key, "xrdcp serial", "xrdcp -f -s, one by one", seconds,
                               error=error), target, files))
    b.settle(target)


def xrdcp_parallel(b: Bench, ds: Dataset, files: Files, n: int = 4) -> None:
    target = b.fresh(f"{ds.key}-xrdcp-parallel")
    cmd = ["xrdcp", "-f", "-s", "--parallel", str(n), *(b.url(f) for f in files), f"{target}/"]
    b.begin()
    seconds: float | None = None
    try:
        ran = run(cmd, b.env, b.timeout())
        seconds = ran.seconds
        error = None if ran.rc == 0 else f"xrdcp exit {ran.rc}: {tail(ran.err)}"
    except subprocess.TimeoutExpired:
        error = "timed out"
    b.record(check_tree(Result(ds.key, f"xrdcp --parallel {n}", f"xrdcp -f -s --parallel {n}",
                               seconds, error=error), target, files))
    b.settle(target)


def rucio_download(b: Bench, ds: Dataset, files: Files) -> None:
    target = b.fresh(f"{ds.key}-rucio")
    env = {**b.env, "RUCIO_CONFIG": str(b.rucio_config)}
    b.begin()
    detail: dict[str, Any] = {}
    seconds: float | None = None
    try:
        ran = run(h.child("rucio_download.py", ds.did, target), env, b.timeout())
        seconds = ran.seconds
        error = None if ran.rc == 0 else f"exit {ran.rc}: {tail(ran.err)}"
        if ran.rc == 0:
            detail = json.loads(ran.out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        error = "timed out"
    b.record(check_tree(Result(ds.key, "Rucio DownloadClient", "defaults (2 threads)",
                               seconds, error=error, detail=detail), target, files))
    b.settle(target)


def tmpfs(b: Bench, need: int) -> Path:
    """Where raw streams write: tmpfs (/dev/shm) when it has room, else the work folder."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 1.5 * need:
            return shm
    except OSError:
        pass
    return b.work


def link_capacity(b: Bench, ds: Dataset, files: Files, kind: str) -> None:
    """Raw parallel streams of distinct files through the emulator into tmpfs.

    ``pN``: one ``xrdcp --parallel N`` over the whole list. ``nN``: N ``xrdcp`` processes at
    once, process i copying files i, i+N, ... (wrapping round) until each has the same count.
    ``rN``: one process keeping N raw 4 MiB XRootD reads in flight over all files (the XRootD
    Python bindings, each piece written at its offset; no cache, no checksum).
    Writing to tmpfs keeps the client's disk out of the figure. Also samples the emulator's
    byte counter every 0.1 s for the best 1-second window.
    """
    n = int(kind[1:])
    size = files[0]["bytes"]
    base = b.fresh(f"{ds.key}-capacity", tmpfs(b, sum(f["bytes"] for f in files)))
    cmds: list[list[str]] = []
    if kind.startswith("p"):
        cmds.append(["xrdcp", "-f", "-s", "--parallel", str(n), *(b.url(f) for f in files),
                     f"{base}/"])
        total, nfiles, label = len(files) * size, len(files), f"xrdcp --parallel {n} -> tmpfs"
    elif kind.startswith("r"):
        cmds.append(h.child("raw_reads.py", n, base, *(b.url(f) for f in files)))
        total, nfiles = len(files) * size, len(files)
        label = f"{n} raw 4 MiB reads in flight -> tmpfs"
    else:
        per = -(-len(files) // n)
        for i in range(n):
            (base / str(i)).mkdir()
            cmds.append(["xrdcp", "-f", "-s",
                         *(b.url(files[(i + k * n) % len(files)]) for k in range(per)),
                         f"{base / str(i)}/"])
        total, nfiles, label = n * per * size, n * per, f"{n} xrdcp processes -> tmpfs"
    b.begin()
    samples: list[tuple[float, int]] = []
    timeout = b.timeout()
    error = None
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=b.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True) for c in cmds]
    try:
        while any(p.poll() is None for p in procs):
            samples.append((time.perf_counter(), b.wan.bytes_down))
            if time.perf_counter() - t0 > timeout:
                error = "timed out"
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        samples.append((time.perf_counter(), b.wan.bytes_down))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            if p.returncode != 0 and error is None:
                error = f"exit {p.returncode}: {tail(err.decode(errors='replace'))}"
    peak = 0.0
    for i, (t, x) in enumerate(samples):
        for t2, x2 in samples[i + 1:]:
            if t2 - t >= 1.0:
                peak = max(peak, (x2 - x) / (t2 - t))
                break
    r = Result(ds.key, f"{CAPACITY}: {kind}", label, None if error else seconds, total, nfiles,
               error, detail={"best_1s_window_mb_s": peak / 1e6 if peak else None,
                              "target": str(base)})
    b.record(r)
    b.settle(base)


# -- profile -----------------------------------------------------------------------------------
def profile_stage(b: Bench, ds: Dataset, name: str) -> dict[str, Any]:
    """htpdata stage (defaults) in a child with timers around its main functions
    (``children/stage_profile.py``)."""
    shared = b.fresh(f"{ds.key}-profile-shared")
    xdg = b.fresh(f"{ds.key}-profile-xdg")
    env = {**b.env, "HTPDATA_CACHE_SHARED_DIR": str(shared), "HTPDATA_CACHE_LOCAL_DIR": "off",
           "XDG_CACHE_HOME": str(xdg), "RUCIO_CONFIG": str(b.rucio_config),
           "PYTHONUNBUFFERED": "1"}
    cmd = h.child("stage_profile.py", *DEFAULT_SETTINGS, name, PROFILED)
    try:
        ran = run(cmd, env, b.timeout())
    except subprocess.TimeoutExpired:
        return {"name": name, "error": "timed out"}
    finally:
        b.settle(shared, xdg)
    info = ran.last_json() if ran.rc == 0 else None
    if info is None:
        return {"name": name, "error": f"exit {ran.rc}: {tail(ran.err)}"}
    info.update(name=name, wall_s=ran.seconds,
                exit_after_summary_s=ran.seconds - ran.first_out if ran.first_out else None)
    info["stats"] = [{"function": k, "calls": v[0], "seconds_summed": v[1]}
                     for k, v in sorted(info["stats"].items(), key=lambda kv: -kv[1][1])]
    return info


def print_profiles(profiles: list[dict[str, Any]]) -> None:
    print("\nWhere htpdata stage's time goes (defaults; timers summed over all worker threads, "
          f"{DEFAULT_SETTINGS[0]} jobs run at once, so a sum can exceed the wall time):")
    for p in profiles:
        what = ""
        if "error" in p:
            print(f"  {p['name']}{what}: {p['error']}")
            continue
        exit_s = p["exit_after_summary_s"]
        print(f"  {p['name']}{what}: wall {p['wall_s']:.2f} s = imports {p['import_s']:.2f} + "
              f"stage() {p['stage_s']:.2f} (transfer {p['transfer_s']:.2f}) + exit after the "
              f"summary {exit_s:.2f} s + rest; {p['staged']} staged, {p['failed']} failed")
        for row in p["stats"][:12]:
            avg = row["seconds_summed"] / row["calls"] * 1e3 if row["calls"] else 0
            print(f"      {row['seconds_summed']:8.2f} s {row['calls']:6d} calls "
                  f"{avg:8.1f} ms/call  {row['function']}")
        if p.get("missing"):
            print(f"      (not found, not timed: {', '.join(p['missing'])})")


# -- report ------------------------------------------------------------------------------------
def summarise(results: list[Result], key: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Median seconds per (case, settings) of one dataset, over repetitions."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r.dataset != key:
            continue
        row = rows.setdefault((r.case, r.settings), {"case": r.case, "settings": r.settings,
                                                     "bytes": r.bytes, "runs": []})
        row["runs"].append(asdict(r))
    for row in rows.values():
        good = [x for x in row["runs"] if x["error"] is None and x["seconds"]]
        row["seconds"] = statistics.median(x["seconds"] for x in good) if good else None
        row["cpu_s"] = statistics.median(x["cpu_s"] for x in good) if good else None
        row["emulator_cpu_s"] = statistics.median(x["emulator_cpu_s"] for x in good) \
            if good else None
        times = [x["seconds"] for x in good]
        row["min_max"] = (min(times), max(times)) if len(times) > 1 else None
        row["errors"] = [x["error"] for x in row["runs"] if x["error"]]
    return rows


def note_of(row: dict[str, Any]) -> str:
    last = row["runs"][-1]
    d = last["detail"] or {}
    if row["errors"]:
        from rich.markup import escape

        return f"[red]{escape(row['errors'][0][:70])}[/red]"
    if row["case"].startswith("htpdata") and d:
        exit_s = d.get("exit_after_summary_s")
        tail_s = f", exit {exit_s:.2f} s" if exit_s is not None else ""
        if "re-run" in row["case"]:
            return f"{d['already_cached']} already cached; stage() {d['stage_seconds']:.2f} s"
        return f"transfer {d['stage_seconds']:.2f} s{tail_s}; {d['verified']} verified"
    if row["case"].startswith(CAPACITY) and d.get("best_1s_window_mb_s"):
        return f"best 1 s window {d['best_1s_window_mb_s']:.0f} MB/s"
    if row["case"] == "Rucio DownloadClient" and d:
        return f"download_dids {d['download_s']:.2f} s"
    return ""


def report(b: Bench, sets: Sets, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    out: dict[str, Any] = {**meta, "datasets": {}, "targets": []}
    tables = {key: summarise(b.results, key) for key in sets}
    rates = [r["bytes"] / r["seconds"] for rows in tables.values() for r in rows.values()
             if r["case"].startswith(CAPACITY) and r["seconds"]]
    link_rate = max(rates) if rates else None
    for key, (ds, files) in sets.items():
        rows = tables[key]
        size = sum(f["bytes"] for f in files)
        peers = {r["case"]: r["seconds"] for r in rows.values()
                 if r["case"] in PEERS and r["seconds"]}
        best_peer = min(peers.values()) if peers else None
        best_peer_case = min(peers, key=lambda c: peers[c]) if peers else None
        link_s = size / link_rate if link_rate else None
        title = (f"({key}) {ds.name} = {ds.did}: {len(files)} files, {size / 1e6:.0f} MB, "
                 f"{2 * meta['delay_ms']:.0f} ms RTT; median of {meta['repeat']} run(s); "
                 "ratios are speed ratios, > 1 is faster")
        table = Table(title=title)
        for col in ("case", "settings", "s", "min-max", "MB/s", "x best peer", "x link",
                    "CPU s", "emu CPU", "note"):
            table.add_column(col, justify="left" if col in ("case", "settings", "note")
                             else "right")
        listed = []
        for r in rows.values():
            s = r["seconds"]
            capacity_row = r["case"].startswith(CAPACITY)
            vs_peer = best_peer / s if s and best_peer and not capacity_row else None
            vs_link = link_s / s if s and link_s else None
            note = note_of(r)
            if r["case"] == best_peer_case:
                note = f"best peer; {note}".rstrip("; ")
            mm = f"{r['min_max'][0]:.2f}-{r['min_max'][1]:.2f}" if r["min_max"] else ""
            table.add_row(r["case"], r["settings"], f"{s:.2f}" if s else "-", mm,
                          f"{r['bytes'] / s / 1e6:.0f}" if s else "-",
                          f"{vs_peer:.2f}" if vs_peer else "",
                          f"{vs_link:.2f}" if vs_link else "",
                          f"{r['cpu_s']:.1f}" if r["cpu_s"] is not None else "",
                          f"{r['emulator_cpu_s']:.1f}" if r["emulator_cpu_s"] is not None
                          else "", note)
            listed.append({**r, "x_best_peer": vs_peer, "x_link_capacity": vs_link})
        if link_s and link_rate:
            table.add_row("(link capacity)", "best rate measured on (a)", f"{link_s:.2f}", "",
                          f"{link_rate / 1e6:.0f}", "", "1.00", "", "",
                          "this dataset's bytes at that rate")
        console.print(table)
        out["datasets"][key] = {"name": ds.name, "did": ds.did, "files": len(files),
                                "bytes": size, "best_peer": best_peer_case,
                                "best_peer_seconds": best_peer, "link_capacity_seconds": link_s,
                                "link_capacity_mb_s": link_rate / 1e6 if link_rate else None,
                                "cases": listed}
    checks = targets(tables, sets, link_rate)
    out["targets"] = checks
    h.print_targets("Targets of issue 5 (speed ratios; the re-run in seconds):", checks, console,
                    width=66)
    console.print("Times are whole commands, spawn to exit. CPU s: user + system time of the "
                  "client processes; emu CPU: of this process, i.e. the WAN emulator's thread "
                  "(the origin's is in neither). Absolute times are noisy (2 cores): compare "
                  "ratios within a run.")
    h.write_results(path, out)
    return out


def targets(tables: dict[str, dict[tuple[str, str], dict[str, Any]]], sets: Sets,
            link_rate: float | None) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bound: float, higher: bool = True) -> None:
        checks.append(h.target(name, value, bound, higher))

    for key, (_, files) in sets.items():
        rows = tables[key]
        peers = [r["seconds"] for r in rows.values() if r["case"] in PEERS and r["seconds"]]
        best_peer = min(peers) if peers else None
        ours = {r["settings"]: r["seconds"] for r in rows.values()
                if r["case"] == "htpdata stage" and r["seconds"]}
        mine = ours.get(DEFAULT_LABEL)
        best_set = min(ours, key=lambda s: ours[s]) if ours else None
        add(f"({key}) htpdata stage (defaults) >= {PEER_TARGET} x best peer",
            best_peer / mine if mine and best_peer else None, PEER_TARGET)
        if best_set and best_set != DEFAULT_LABEL and best_peer:
            add(f"({key}) htpdata stage ({best_set}) >= {PEER_TARGET} x best peer",
                best_peer / ours[best_set], PEER_TARGET)
        if key == "a":
            link_s = sum(f["bytes"] for f in files) / link_rate if link_rate else None
            add(f"(a) htpdata stage (defaults) >= {LINK_TARGET} x link capacity",
                link_s / mine if mine and link_s else None, LINK_TARGET)
            if best_set and best_set != DEFAULT_LABEL and link_s:
                add(f"(a) htpdata stage ({best_set}) >= {LINK_TARGET} x link capacity",
                    link_s / ours[best_set], LINK_TARGET)
        if key == "b":
            rerun = rows.get(("htpdata stage (re-run)", DEFAULT_LABEL), {}).get("seconds")
            add(f"(b) htpdata stage re-run on the staged dataset < {RERUN_TARGET} s", rerun,
                RERUN_TARGET, higher=False)
    return checks


# -- set-up and main -----------------------------------------------------------------------------
def parse_settings(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        jobs, _, streams = part.partition("x")
        out.append((int(jobs), int(streams or DEFAULT_SETTINGS[1])))
    return out


def start_origin(stack: ExitStack, sets: Sets) -> Any:
    """An XRootD origin (no TLS) serving the datasets under ``/store/bench/<folder>/``."""
    return h.xrootd_origin(stack, {ds.lfn(f["fname"]): f["path"]
                                   for ds, files in sets.values() for f in files}, "stage")


def start_rucio(stack: ExitStack, wan_port: int, sets: Sets) -> Path:
    """A Rucio server with RSE T2_BENCH_WAN (root:// at the emulator) and one dataset per set;
    returns the client configuration."""
    from htpdata.testing.rucio import RucioServer, add_dataset, add_rse, register_files

    server = RucioServer(name="rucio-bench-stage")
    stack.callback(server.cleanup)
    server.start()
    c = server.client()
    add_rse(c, RSE, root_url=f"root://localhost:{wan_port}")
    for ds, files in sets.values():
        entries = [{"name": f["name"], "bytes": f["bytes"], "adler32": f["adler32"]}
                   for f in files]
        register_files(c, SCOPE, RSE, entries, f"root://localhost:{wan_port}/")
        add_dataset(c, SCOPE, ds.did.split(":", 1)[1], [f["name"] for f in files])
    print(f"Rucio {server.url}: RSE {RSE} -> root://localhost:{wan_port}, datasets "
          + ", ".join(ds.did for ds, _ in sets.values()), flush=True)
    return server.client_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small datasets (8 x 13 MB, 60 x 1 MiB), default settings only")
    ap.add_argument("--large", type=int, default=None, help="files in (a) (default 40)")
    ap.add_argument("--small", type=int, default=None, help="files in (b) (default 400)")
    ap.add_argument("--settings", default="8x4,16x4,32x4",
                    help="htpdata JOBSxSTREAMS to try after the defaults (those of "
                    "htpdata.staging.stage) unless equal to them; '' for none")
    ap.add_argument("--capacity", default="p8,p16,n8,r64",
                    help="raw stream sets for the link capacity: pN = xrdcp --parallel N, "
                    "nN = N xrdcp processes, rN = N raw 4 MiB reads in flight in one process "
                    "(default p8,p16,n8,r64)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions of every case (1)")
    ap.add_argument("--sink", type=Path, default=None,
                    help="folder every case writes into (htpdata's tier and the peers' targets; "
                         "default: the work folder on disk). --sink /dev/shm takes this "
                         "machine's disk out of the figures, as the link capacity does")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay (10)")
    ap.add_argument("--only", choices=["a", "b"], help="one dataset only")
    ap.add_argument("--no-rucio-stage", action="store_true",
                    help="skip the 'htpdata stage rucio:...' case")
    ap.add_argument("--profile", action="store_true",
                    help="also run an instrumented htpdata stage per dataset (and a what-if)")
    ap.add_argument("--max-seconds", type=float, default=2400.0,
                    help="wall-clock bound for the whole run (default 2400)")
    ap.add_argument("--run-timeout", type=float, default=600.0, help="bound for one command")
    ap.add_argument("--json", type=Path, default=RESULTS / "stage.json")
    args = ap.parse_args(argv)
    source_at_start = h.source_state()
    h.compile_htpdata()
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    if shutil.which("xrdcp") is None or shutil.which("xrootd") is None:
        raise SystemExit("needs xrootd and xrdcp (Debian: xrootd-server xrootd-client)")
    large = args.large or (8 if args.quick else 40)
    small = args.small or (60 if args.quick else 400)
    extra = [] if args.quick else parse_settings(args.settings)
    settings = [DEFAULT_SETTINGS, *[s for s in extra if s != DEFAULT_SETTINGS]]
    capacity = [k.strip() for k in args.capacity.split(",") if k.strip()]
    wanted = {"a": Dataset("a", "large", "large_13MB", large, 13_000_000),
              "b": Dataset("b", "small", "small_1MiB", small, 1 << 20)}
    if args.only:
        wanted = {args.only: wanted[args.only]}
    print(f"inputs in {DATA}", flush=True)
    sets = {k: (ds, build(ds)) for k, ds in wanted.items()}
    for ds, files in sets.values():
        print(f"  ({ds.key}) {ds.name} = {ds.did}: {len(files)} files, "
              f"{sum(f['bytes'] for f in files) / 1e6:.0f} MB", flush=True)
    with ExitStack() as stack:
        work = h.workdir(stack, "stage")
        origin = start_origin(stack, sets)
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms))
        (work / "catalogs").mkdir()
        (work / "catalogs" / "bench.toml").write_text(catalog_text(wan.port, sets))
        rucio_cfg = start_rucio(stack, wan.port, sets)
        sink = None
        if args.sink is not None:
            sink = h.workdir(stack, "stage-sink", args.sink)
        b = Bench(wan, base_env(work), work, rucio_cfg, deadline, args.run_timeout, sink)
        print(f"origin root://localhost:{origin.port}  WAN proxy 127.0.0.1:{wan.port} "
              f"({args.delay_ms} ms each way)  work {work}", flush=True)
        stopped = None
        profiles: list[dict[str, Any]] = []
        try:
            for rep in range(args.repeat):
                print(f"repetition {rep + 1} of {args.repeat}", flush=True)
                for key, (ds, files) in sets.items():
                    if key == "a":
                        for kind in capacity:
                            link_capacity(b, ds, files, kind)
                    for i, (jobs, streams) in enumerate(settings):
                        htpdata_stage(b, ds, files, jobs, streams, rerun=(i == 0))
                    if not args.no_rucio_stage:
                        htpdata_stage(b, ds, files, *DEFAULT_SETTINGS, name=f"rucio:{ds.did}",
                                      label="htpdata stage rucio:")
                    xrdcp_serial(b, ds, files)
                    xrdcp_parallel(b, ds, files, 4)
                    rucio_download(b, ds, files)
            if args.profile:
                for ds, _ in sets.values():
                    print(f"profiling htpdata stage {ds.name}", flush=True)
                    profiles.append(profile_stage(b, ds, ds.name))
                    if not args.no_rucio_stage:
                        profiles.append(profile_stage(b, ds, f"rucio:{ds.did}"))
        except OutOfTime:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound"
            print(stopped)
        xrdcp = subprocess.run(["xrdcp", "--version"], capture_output=True, text=True)
        meta = h.run_meta(source_at_start, {"xrdcp": xrdcp.stderr.strip()})
        meta |= {"delay_ms": args.delay_ms, "sink": str(args.sink or "work folder (disk)"),
                "repeat": args.repeat, "statistic": "median",
                "quick": args.quick, "settings": [f"{j}x{s}" for j, s in settings],
                "timing": "wall clock of the whole command, spawn to exit",
                "link_capacity_method": "best of: one 'xrdcp --parallel N' over all files of (a) "
                "(pN), N concurrent xrdcp processes with equal file counts (nN), one process "
                "keeping N raw 4 MiB XRootD reads in flight (rN); into tmpfs; "
                "bytes / wall time", "stopped": stopped}
        data = report(b, sets, meta, args.json)
        if profiles:
            print_profiles(profiles)
            data["profiles"] = profiles
            h.write_results(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
