"""Read benchmark: uproot reads 20 NanoAOD branches, cold and warm, through every road.

Sets up, on loopback and free ports: an XRootD origin serving a NanoAOD-like file at
``/store/bench/nano.root``, the WAN emulator (``wan.py``) in front of it, an XCache whose origin
is the emulator (client -> XCache -> WAN -> origin), and a catalog with namespace ``bench`` whose
one site is the emulator. Every measurement is a new Python process (``read_case.py``) timing
open + ``tree.arrays(branches)`` + close, so "warm" means warm in a new process. Prints seconds,
ratios to "uproot direct root://" and "local file", and bytes that crossed the WAN; checks the
targets of issue 3; writes ``benchmarks/results/read.json``.

    .venv/bin/python benchmarks/bench_read.py [--quick] [--size-mb 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from htpdata.testing import XRootDServer  # noqa: E402
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

RESULTS = HERE / "results"
LFN = "/store/bench/nano.root"
NAME = f"bench:{LFN}"
FSSPEC_URL = f"htpdata://bench{LFN}"
BRANCHES = [
    "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_tightId", "Muon_pfRelIso04_all",
    "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepFlavB", "Jet_jetId",
    "Electron_pt", "Electron_eta", "Electron_phi", "Electron_cutBased",
    "MET_pt", "MET_phi", "PV_npvsGood", "HLT_IsoMu22",
]
LOCAL = "local file"
DIRECT = "uproot direct root://"
COLD_TARGET = 1.10  # cold htpdata <= 1.1 x direct root://
WARM_TARGET = 1.15  # warm htpdata, new process, <= 1.15 x local file
XCACHE_CONFIG = """\
ofs.osslib libXrdPss.so
pss.cachelib libXrdPfc.so
pss.origin localhost:{port}
pfc.ram 2g
pfc.blocksize 1M
pfc.prefetch 10
pfc.diskusage 0.90 0.95"""


class OutOfTime(Exception):
    """The global wall-clock bound was reached."""


@dataclass
class Run:
    seconds: float | None
    wan_down: int
    wan_up: int
    wan_connections: int
    wan_sends_up: int
    entries: int | None = None
    digest: float | None = None
    error: str | None = None


@dataclass
class Case:
    label: str
    road: str
    runs: list[Run] = field(default_factory=list)

    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.error is None and r.seconds is not None]

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.ok() if r.seconds is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def wan_median(self) -> int | None:
        good = self.ok()
        return int(statistics.median(r.wan_down + r.wan_up for r in good)) if good else None


@dataclass
class Bench:
    """Servers, environment and the clock shared by every case of one run."""

    wan: WanProxy
    env: dict[str, str]
    tmp: Path
    deadline: float
    run_timeout: float
    cases: dict[str, Case] = field(default_factory=dict)

    def case(self, label: str, road: str) -> Case:
        return self.cases.setdefault(label, Case(label, road))

    def measure(self, label: str, road: str, spec: dict[str, Any],
                env: dict[str, str] | None = None) -> Run:
        """Run ``read_case.py`` once in a new process and record time and WAN bytes."""
        remaining = self.deadline - time.monotonic()
        if remaining < 5:
            raise OutOfTime(label)
        before = self.wan.counters
        cmd = [sys.executable, str(HERE / "read_case.py"),
               json.dumps({**spec, "branches": BRANCHES})]
        try:
            proc = subprocess.run(cmd, env=env or self.env, capture_output=True, text=True,
                                  timeout=min(self.run_timeout, remaining))
            out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 \
                else None
            err = None if out else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired:
            out, err = None, f"timed out after {min(self.run_timeout, remaining):.0f} s"
        # Charge to this run what its servers go on fetching after it (XCache prefetch).
        self.wan.wait_idle(quiet=0.5, timeout=max(1.0, min(60.0, remaining)))
        used = self.wan.counters - before
        run = Run(out["seconds"] if out else None, used.down, used.up, used.connections,
                  used.sends_up,
                  out["entries"] if out else None, out["digest"] if out else None, err)
        self.case(label, road).runs.append(run)
        shown = f"{run.seconds:7.3f} s" if run.seconds is not None else f"FAILED: {err}"
        print(f"  {label:<28} {shown}   WAN {used.total / 1e6:7.2f} MB, "
              f"{used.connections} conn, {used.sends_up} client sends", flush=True)
        return run


# -- servers -----------------------------------------------------------------------------
def _server(name: str, **kwargs: Any) -> XRootDServer:
    return XRootDServer(name=f"bench-{name}-{os.getpid()}", tls=False, **kwargs)


def _cleanup(server: XRootDServer) -> None:
    server.cleanup()
    # xrootd leaves /tmp/xrootd.<instance>.env behind; the instance name is this run's own.
    Path(tempfile.gettempdir(), f"xrootd.{server.name}.env").unlink(missing_ok=True)


def start_origin(stack: ExitStack, input_file: Path) -> XRootDServer:
    origin = _server("origin", writable=False)
    stack.callback(_cleanup, origin)
    target = origin.data / LFN.lstrip("/")
    target.parent.mkdir(parents=True)
    try:
        os.link(input_file, target)
    except OSError:  # another filesystem
        shutil.copyfile(input_file, target)
    return origin.start()


@contextmanager
def xcache(wan_port: int) -> Iterator[XRootDServer]:
    """A fresh XCache (own, empty cache folder, writable by its user) in front of the WAN."""
    server = _server("xcache", writable=True, extra_config=XCACHE_CONFIG.format(port=wan_port))
    try:
        yield server.start()
    finally:
        _cleanup(server)


def catalog_text(wan_port: int, size: int, adler32: str) -> str:
    return (
        'format = 1\n[namespaces.bench]\ndescription = "read benchmark"\n\n'
        "[sites.T2_BENCH_WAN]\npreference = 1\nprotocols = [\n"
        f'  {{ scheme = "root", namespace = "bench", prefix = "root://localhost:{wan_port}/" }},'
        "\n]\n\n"
        '[datasets."/Bench/Nano"]\nnamespace = "bench"\nfiles = [\n'
        f'  {{ name = "{LFN}", size = {size}, adler32 = "{adler32}" }},\n]\n')


def child_env(tmp: Path, catalogs: Path) -> dict[str, str]:
    """The environment of every read: no user config, no htpdata settings but the catalog,
    and an XDG cache home inside the run's temp folder so nothing lands in ``~/.cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTPDATA_", "XRD_"))}
    env.update(XDG_CONFIG_HOME=str(tmp / "config"), XDG_CACHE_HOME=str(tmp / "xdg-cache"),
               HTPDATA_CATALOGS_PATH=str(catalogs), PYTHONDONTWRITEBYTECODE="1")
    return env


def htpdata_cache_fields() -> set[str] | None:
    """The fields of htpdata's cache settings, or None while htpdata has no cache."""
    try:
        import htpdata.config as cfg
    except Exception as exc:  # the package is being edited; report, do not crash
        print(f"htpdata does not import ({type(exc).__name__}: {exc}); its cases are skipped")
        return None
    sections = {f.name: f for f in dataclasses.fields(cfg.Settings)}
    if "cache" not in sections:
        return None
    return {f.name for f in dataclasses.fields(cfg.CacheSettings)}


# -- the cases ---------------------------------------------------------------------------
def plan(b: Bench, input_file: Path, quick: bool,
         cache: set[str] | None) -> list[tuple[Callable[[], None], bool]]:
    """``(run one repetition, repeat it?)`` per case, in the order they are run."""
    wan_root = f"root://localhost:{b.wan.port}/{LFN}"
    steps: list[tuple[Callable[[], None], bool]] = [
        (lambda: b.measure(LOCAL, "uproot.open(path)",
                           {"how": "uproot", "target": str(input_file)}), True),
        (lambda: b.measure(DIRECT, "uproot.open(root://)",
                           {"how": "uproot", "target": wan_root}), True),
    ]

    def xcache_pair() -> None:
        with xcache(b.wan.port) as xc:
            spec = {"how": "uproot", "target": f"root://localhost:{xc.port}/{LFN}"}
            b.measure("XCache cold", "uproot.open(root://xcache)", spec)
            b.measure("XCache warm", "uproot.open(root://xcache)", spec)

    steps.append((xcache_pair, True))

    def fsspec_cache(kind: str) -> Callable[[], None]:
        def one() -> None:
            store = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=b.tmp))
            b.measure(f"fsspec {kind}:: (cold)", f"uproot.open({kind}::root://)",
                      {"how": "uproot", "target": f"{kind}::{wan_root}",
                       "options": {kind: {"cache_storage": str(store)}}})
        return one

    if not quick:  # about 14 s each: run once
        steps += [(fsspec_cache("simplecache"), False), (fsspec_cache("blockcache"), False)]

    roads = {"A": ("uproot.open(htpdata.open(name))", {"how": "htpdata-open", "target": NAME}),
             "B": ('uproot.open("htpdata://...")', {"how": "uproot", "target": FSSPEC_URL})}
    for key, (road, spec) in roads.items():
        if cache is None:
            steps.append((lambda k=key, r=road, s=spec:
                          b.measure(f"htpdata {k} (no cache yet)", r, s), True))
            continue

        def pair(k: str = key, r: str = road, s: dict[str, Any] = spec) -> None:
            dirs = Path(tempfile.mkdtemp(prefix=f"htpdata-{k}-", dir=b.tmp))
            env = {**b.env, "HTPDATA_CACHE_LOCAL_DIR": str(dirs / "local"),
                   "HTPDATA_CACHE_SHARED_DIR": str(dirs / "shared")}
            b.measure(f"htpdata {k} cold", r, s, env)
            b.measure(f"htpdata {k} warm", r, s, env)

        steps.append((pair, True))
        if "enabled" in cache:
            steps.append((lambda k=key, r=road, s=spec: b.measure(
                f"htpdata {k} cache off", r, s, {**b.env, "HTPDATA_CACHE_ENABLED": "false"}),
                True))
    return steps


# -- report ------------------------------------------------------------------------------
def ratio(a: float | None, ref: float | None) -> float | None:
    return a / ref if a is not None and ref else None


def targets(b: Bench, cache: set[str] | None) -> list[dict[str, Any]]:
    local, direct = b.cases.get(LOCAL), b.cases.get(DIRECT)
    out = []
    for road in ("A", "B"):
        for phase, ref, bound in (("cold", direct, COLD_TARGET), ("warm", local, WARM_TARGET)):
            label = f"htpdata {road} {phase}"
            case = b.cases.get(label)
            r = ratio(case.median if case else None, ref.median if ref else None)
            status = ("n/a: htpdata has no cache yet" if cache is None
                      else "not measured" if r is None
                      else "met" if r <= bound else "NOT met")
            out.append({"target": f"{label} <= {bound} x {ref.label if ref else '?'}",
                        "case": label, "ratio": r, "bound": bound, "status": status})
    return out


def consistency(b: Bench) -> list[str]:
    """Every successful read must return the same entries and values as the local file."""
    ref = next(iter(b.cases[LOCAL].ok()), None) if LOCAL in b.cases else None
    problems = []
    for case in b.cases.values():
        for run in case.ok():
            if ref is not None and (run.entries, run.digest) != (ref.entries, ref.digest):
                problems.append(f"{case.label}: read {run.entries} entries, digest "
                                f"{run.digest} (local file: {ref.entries}, {ref.digest})")
    return problems


def report(b: Bench, meta: dict[str, Any], cache: set[str] | None, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    local = b.cases[LOCAL].median if LOCAL in b.cases else None
    direct = b.cases[DIRECT].median if DIRECT in b.cases else None
    direct_wan = b.cases[DIRECT].wan_median if DIRECT in b.cases else None
    reps = meta["repeat"]
    size_mb = meta["input"]["size"] / 1e6
    table = Table(title=f"uproot reads {len(BRANCHES)} branches of a {size_mb:.0f} MB file over "
                  f"a {2 * meta['delay_ms']:.0f} ms RTT WAN (median of up to {reps} runs, "
                  "each a new process)")
    for col in ("case", "road", "s", "min-max s", "/ direct", "/ local", "WAN MB",
                "WAN / direct"):
        table.add_column(col, justify="left" if col in ("case", "road") else "right")

    def fmt(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None else format(x, spec)

    rows = []
    for case in b.cases.values():
        times, med, wan = case.times, case.median, case.wan_median
        span = f"{min(times):.2f}-{max(times):.2f}" if len(times) > 1 else ""
        errors = [r.error for r in case.runs if r.error]
        failed = f"[red]failed: {errors[0][:60] if errors else '?'}[/red]"
        table.add_row(case.label, case.road, fmt(med, ".3f") if times else failed,
                      span, fmt(ratio(med, direct)), fmt(ratio(med, local)),
                      fmt(wan / 1e6 if wan is not None else None, ".1f"),
                      fmt(ratio(wan, direct_wan)))
        rows.append({"case": case.label, "road": case.road, "median_s": med,
                     "ratio_direct": ratio(med, direct), "ratio_local": ratio(med, local),
                     "wan_bytes_median": wan, "runs": [dataclasses.asdict(r) for r in case.runs]})
    console = Console(width=140)
    console.print(table)
    checks = targets(b, cache)
    console.print("Targets of issue 3 (on both roads):")
    for t in checks:
        colour = {"met": "green", "NOT met": "red"}.get(t["status"], "yellow")
        console.print(f"  {t['target']:<48} ratio {fmt(t['ratio'])}  "
                      f"[{colour}]{t['status']}[/{colour}]")
    console.print("  16 concurrent cold readers and index cost: not measured by this script.")
    problems = consistency(b)
    for p in problems:
        console.print(f"[red]WRONG DATA[/red] {p}")
    console.print("Absolute times are noisy (2 cores, shared machine); compare ratios within "
                  "one run.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "cases": rows, "targets": checks,
                                "wrong_data": problems}, indent=1) + "\n")
    console.print(f"written {path}")


# -- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="one repetition, no fsspec caches (about 30 s)")
    ap.add_argument("--size-mb", type=int, default=128, help="input size (default 128 MB)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repetitions per case (default 3; 1 with --quick)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay")
    ap.add_argument("--rate-mbps", type=float, default=None, help="WAN rate cap, Mb/s")
    ap.add_argument("--max-seconds", type=float, default=1800.0,
                    help="wall-clock bound for the whole run (default 1800)")
    ap.add_argument("--run-timeout", type=float, default=300.0,
                    help="bound for one read (default 300)")
    ap.add_argument("--json", type=Path, default=RESULTS / "read.json")
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    deadline = time.monotonic() + args.max_seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    info = build(args.size_mb)
    input_file = Path(info["path"])
    import uproot

    with uproot.open(input_file) as f:
        missing = [br for br in BRANCHES if br not in f["Events"]]
    if missing:
        raise SystemExit(f"branches missing from {input_file}: {missing}")
    cache = htpdata_cache_fields()
    print(f"input {input_file} ({info['size'] / 1e6:.1f} MB, {info['entries']} entries, "
          f"{info['branches']} branches); htpdata cache: {'yes' if cache else 'not yet'}")
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="htpdata-bench-read-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        origin = start_origin(stack, input_file)
        rate = args.rate_mbps * 1e6 / 8 if args.rate_mbps else None
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms,
                                           rate=rate))
        catalogs = tmp / "catalogs"
        catalogs.mkdir()
        (catalogs / "bench.toml").write_text(catalog_text(wan.port, info["size"],
                                                          info["adler32"]))
        b = Bench(wan, child_env(tmp, catalogs), tmp, deadline, args.run_timeout)
        print(f"origin root://localhost:{origin.port}  WAN proxy 127.0.0.1:{wan.port} "
              f"({args.delay_ms} ms each way)  catalog {catalogs / 'bench.toml'}")
        with input_file.open("rb") as fh:  # "local file" means in the page cache
            while fh.read(16 << 20):
                pass
        steps = plan(b, input_file, args.quick, cache)
        stopped = None
        try:
            # Repetition-major order spreads slow phases of a shared machine over all cases.
            for rep in range(repeat):
                print(f"repetition {rep + 1} of {repeat}", flush=True)
                for step, repeated in steps:
                    if rep == 0 or repeated:
                        step()
        except OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        meta = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
                "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "uproot": uproot.__version__},
                "input": info, "branches": BRANCHES, "delay_ms": args.delay_ms,
                "rate_bytes_per_s": rate, "repeat": repeat, "statistic": "median",
                "quick": args.quick, "htpdata_cache": sorted(cache) if cache else None,
                "stopped": stopped}
        report(b, meta, cache, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
