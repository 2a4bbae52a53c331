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
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

RESULTS = h.RESULTS
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
def catalog_text(wan_port: int, size: int, adler32: str) -> str:
    return (
        'format = 1\n[namespaces.bench]\ndescription = "read benchmark"\n\n'
        "[sites.T2_BENCH_WAN]\npreference = 1\nprotocols = [\n"
        f'  {{ scheme = "root", namespace = "bench", prefix = "root://localhost:{wan_port}/" }},'
        "\n]\n\n"
        '[datasets."/Bench/Nano"]\nnamespace = "bench"\nfiles = [\n'
        f'  {{ name = "{LFN}", size = {size}, adler32 = "{adler32}" }},\n]\n')


def child_env(tmp: Path, catalogs: Path) -> dict[str, str]:
    """The environment of every read: isolated (:func:`_harness.isolated_env`), with no
    htpdata setting but the catalog."""
    return h.isolated_env(tmp, HTPDATA_CATALOGS_PATH=str(catalogs))


def start_origin(stack: ExitStack, input_file: Path) -> Any:
    """The XRootD origin serving the input at :data:`LFN`."""
    return h.xrootd_origin(stack, {LFN: input_file})


def read(b: h.Bench, label: str, road: str, spec: dict[str, Any],
         env: dict[str, str] | None = None) -> dict[str, Any]:
    """One read by ``read_case.py`` in a new process: time, entries, digest, WAN bytes."""
    def show(r: dict[str, Any]) -> str:
        return (f"{r['seconds']:7.3f} s   WAN {(r['wan_down'] + r['wan_up']) / 1e6:7.2f} MB, "
                f"{r['wan_connections']} conn, {r['wan_sends_up']} client sends")

    return b.measure(label, road, h.child("read_case.py", {**spec, "branches": BRANCHES}),
                     env, show=show)


def wan_median(case: h.Case) -> int | None:
    good = case.ok()
    return int(statistics.median(r["wan_down"] + r["wan_up"] for r in good)) if good else None


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
def plan(b: h.Bench, input_file: Path, quick: bool,
         cache: set[str] | None) -> list[tuple[Callable[[], object], bool]]:
    """``(run one repetition, repeat it?)`` per case, in the order they are run."""
    wan = b.wan
    assert wan is not None
    wan_root = f"root://localhost:{wan.port}/{LFN}"
    steps: list[tuple[Callable[[], object], bool]] = [
        (lambda: read(b, LOCAL, "uproot.open(path)",
                           {"how": "uproot", "target": str(input_file)}), True),
        (lambda: read(b, DIRECT, "uproot.open(root://)",
                           {"how": "uproot", "target": wan_root}), True),
    ]

    def xcache_pair() -> None:
        with h.xcache(wan.port) as xc:
            spec = {"how": "uproot", "target": f"root://localhost:{xc.port}/{LFN}"}
            read(b, "XCache cold", "uproot.open(root://xcache)", spec)
            read(b, "XCache warm", "uproot.open(root://xcache)", spec)

    steps.append((xcache_pair, True))

    def fsspec_cache(kind: str) -> Callable[[], object]:
        def one() -> None:
            store = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=b.work))
            read(b, f"fsspec {kind}:: (cold)", f"uproot.open({kind}::root://)",
                      {"how": "uproot", "target": f"{kind}::{wan_root}",
                       "options": {kind: {"cache_storage": str(store)}}})
        return one

    if not quick:  # about 14 s each: run once
        steps += [(fsspec_cache("simplecache"), False), (fsspec_cache("blockcache"), False)]

    roads = {"A": ("uproot.open(htpdata.open(name))", {"how": "htpdata-open", "target": NAME}),
             "B": ('uproot.open("htpdata://...")', {"how": "uproot", "target": FSSPEC_URL})}
    for key, (road, spec) in roads.items():
        if cache is None:
            steps.append((partial(read, b, f"htpdata {key} (no cache yet)", road, spec), True))
            continue

        def pair(k: str = key, r: str = road, s: dict[str, Any] = spec) -> None:
            dirs = Path(tempfile.mkdtemp(prefix=f"htpdata-{k}-", dir=b.work))
            env = {**b.env, "HTPDATA_CACHE_LOCAL_DIR": str(dirs / "local"),
                   "HTPDATA_CACHE_SHARED_DIR": str(dirs / "shared")}
            read(b, f"htpdata {k} cold", r, s, env)
            read(b, f"htpdata {k} warm", r, s, env)

        steps.append((pair, True))
        if "enabled" in cache:
            steps.append((partial(read, b, f"htpdata {key} cache off", road, spec,
                                  {**b.env, "HTPDATA_CACHE_ENABLED": "false"}), True))
    return steps


# -- report ------------------------------------------------------------------------------
ratio = h.ratio


def targets(b: h.Bench, cache: set[str] | None) -> list[dict[str, Any]]:
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


def consistency(b: h.Bench) -> list[str]:
    """Every successful read must return the same entries and values as the local file."""
    ref = next(iter(b.cases[LOCAL].ok()), None) if LOCAL in b.cases else None
    problems = []
    for case in b.cases.values():
        for run in case.ok():
            if ref is None:
                continue
            got, want = (run.get("entries"), run.get("digest")), (ref["entries"], ref["digest"])
            if got != want:
                problems.append(f"{case.label}: read {got[0]} entries, digest {got[1]} "
                                f"(local file: {want[0]}, {want[1]})")
    return problems


def report(b: h.Bench, meta: dict[str, Any], cache: set[str] | None, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    local = b.cases[LOCAL].median if LOCAL in b.cases else None
    direct = b.cases[DIRECT].median if DIRECT in b.cases else None
    direct_wan = wan_median(b.cases[DIRECT]) if DIRECT in b.cases else None
    reps = meta["repeat"]
    size_mb = meta["input"]["size"] / 1e6
    table = Table(title=f"uproot reads {len(BRANCHES)} branches of a {size_mb:.0f} MB file over "
                  f"a {2 * meta['delay_ms']:.0f} ms RTT WAN (median of up to {reps} runs, "
                  "each a new process)")
    for col in ("case", "road", "s", "min-max s", "/ direct", "/ local", "WAN MB",
                "WAN / direct"):
        table.add_column(col, justify="left" if col in ("case", "road") else "right")

    fmt = h.fmt
    rows = []
    for case in b.cases.values():
        times, med, wan = case.times, case.median, wan_median(case)
        span = f"{min(times):.2f}-{max(times):.2f}" if len(times) > 1 else ""
        errors = case.errors
        failed = f"[red]failed: {errors[0][:60] if errors else '?'}[/red]"
        table.add_row(case.label, case.what, fmt(med, ".3f") if times else failed,
                      span, fmt(ratio(med, direct)), fmt(ratio(med, local)),
                      fmt(wan / 1e6 if wan is not None else None, ".1f"),
                      fmt(ratio(wan, direct_wan)))
        rows.append({"case": case.label, "road": case.what, "median_s": med,
                     "ratio_direct": ratio(med, direct), "ratio_local": ratio(med, local),
                     "wan_bytes_median": wan, "runs": case.runs})
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
    h.write_results(path, {**meta, "cases": rows, "targets": checks, "wrong_data": problems})


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
    source_at_start = h.source_state()
    h.compile_htpdata()
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()

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
        tmp = h.workdir(stack, "read", Path(tempfile.gettempdir()))
        origin = start_origin(stack, input_file)
        rate = args.rate_mbps * 1e6 / 8 if args.rate_mbps else None
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms,
                                           rate=rate))
        catalogs = tmp / "catalogs"
        catalogs.mkdir()
        (catalogs / "bench.toml").write_text(catalog_text(wan.port, info["size"],
                                                          info["adler32"]))
        b = h.Bench(child_env(tmp, catalogs), tmp, deadline, args.run_timeout, wan)
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
        except h.OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        meta = h.run_meta(source_at_start, {"uproot": uproot.__version__},
                          input=info, branches=BRANCHES, delay_ms=args.delay_ms,
                          rate_bytes_per_s=rate, repeat=repeat, statistic="median",
                          quick=args.quick, htpdata_cache=sorted(cache) if cache else None,
                          stopped=stopped)
        report(b, meta, cache, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
