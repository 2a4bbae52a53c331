"""Gateway benchmark: ROOT's RDataFrame reads 20 branches of a multi-file NanoAOD-like dataset
over an emulated WAN, directly, through XCache and through the htpdata gateway (issue 16).

Sets up, on loopback and free ports: an XRootD origin serving ``--files`` copies of a
NanoAOD-like file (``make_inputs.py``) under ``/store/bench/gw/``, the WAN emulator in front of
it, a fresh XCache per repetition whose origin is the emulator, and ``htpdata serve`` (its own
process, a new empty local tier per repetition) reading through a catalog whose one site is the
emulator. Every read is a new ROOT process (``children/rdf_case.py``: a TChain of the URLs,
RDataFrame summing the branches). Cases: local files, direct root:// over the WAN, XCache cold
and warm, the gateway cold and warm (the same gateway, as a long-running service serves a
second analysis) and warm after a restart (memory empty, bytes from the disk tier). Then a warm
multi-range load (``children/gateway_load.py``, on files first read whole through the gateway,
as many as fit its memory tier) measures the gateway's throughput per core and CPU per GB from
its own CPU time (``/proc/PID/stat``). Prints seconds, ratios to direct
root:// and to local files, WAN bytes per case; checks the targets; writes
``results/gateway.json``.

    .venv/bin/python benchmarks/bench_gateway.py --quick             # 4 x 16 MB, ~2 min
    .venv/bin/python benchmarks/bench_gateway.py --files 24 --size-mb 84 --repeat 3   # ~2 GB
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

BRANCHES = [
    "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_tightId", "Muon_pfRelIso04_all",
    "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepFlavB", "Jet_jetId",
    "Electron_pt", "Electron_eta", "Electron_phi", "Electron_cutBased",
    "MET_pt", "MET_phi", "PV_npvsGood", "HLT_IsoMu22",
]
LOCAL, DIRECT = "local files", "direct root://"
XC_COLD, XC_WARM = "XCache cold", "XCache warm"
GW_COLD, GW_WARM, GW_RESTART = "gateway cold", "gateway warm", "gateway warm, restarted"
COLD_TARGET = 1.05  # gateway cold <= 1.05 x direct root://
WARM_TARGET = 1.05  # gateway warm <= 1.05 x local files


def lfn(i: int) -> str:
    return f"/store/bench/gw/nano_{i:02d}.root"


def catalog_text(wan_port: int, n: int, size: int, adler32: str) -> str:
    files = ",\n".join(f'  {{ name = "{lfn(i)}", size = {size}, adler32 = "{adler32}" }}'
                       for i in range(n))
    return ('format = 1\n[namespaces.bench]\ndescription = "gateway benchmark"\n\n'
            "[sites.T2_BENCH_WAN]\npreference = 1\nprotocols = [\n"
            f'  {{ scheme = "root", namespace = "bench", prefix = "root://localhost:{wan_port}/" '
            "},\n]\n\n"
            f'[datasets."/Bench/GW"]\nnamespace = "bench"\nfiles = [\n{files}\n]\n')


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def gateway(env: dict[str, str], work: Path, local_dir: Path, tag: str
            ) -> Iterator[tuple[Any, int]]:
    """``htpdata serve`` as its own process over ``local_dir``: (GatewayInfo, pid)."""
    from htpdata.gateway.state import discover

    run_dir = work / f"run-{tag}"
    run_dir.mkdir(mode=0o700)
    genv = {**env, "XDG_RUNTIME_DIR": str(run_dir), "HTPDATA_CACHE_LOCAL_DIR": str(local_dir)}
    log = (work / f"gateway-{tag}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "htpdata", "serve"], env=genv,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        info = None
        while info is None or info.pid != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"htpdata serve did not start: see {log.name}")
            time.sleep(0.05)
            info = discover(genv)
        yield info, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def read(b: h.Bench, label: str, what: str, urls: list[str]) -> dict[str, Any]:
    def show(r: dict[str, Any]) -> str:
        return (f"{r['seconds']:7.3f} s   WAN {(r['wan_down'] + r['wan_up']) / 1e6:8.2f} MB, "
                f"{r['wan_connections']} conn")

    spec = {"urls": urls, "tree": "Events", "branches": BRANCHES}
    return b.measure(label, what, h.child("rdf_case.py", spec), show=show)


MEMORY_SET = 160e6
"""Bytes of files the load reads: within the gateway's memory tier (256 MB by default)."""


def prewarm(url: str) -> None:
    """GET a whole file through the gateway (not measured): every byte is then cached."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=600)
    try:
        conn.request("GET", u.path)
        resp = conn.getresponse()
        while resp.read(8 << 20):
            pass
    finally:
        conn.close()


def load(b: h.Bench, info: Any, pid: int, names: list[str], size: int, total: float,
         connections: int) -> dict[str, Any]:
    """The warm multi-range load, with the gateway's CPU time around it. The files it reads
    (as many as fit :data:`MEMORY_SET`) are read whole through the gateway first, so the load
    measures the gateway on cached data, not the WAN."""
    names = names[:max(1, int(MEMORY_SET // size))]
    for n in names:
        prewarm(info.url(n))
    spec = {"urls": [info.url(n) for n in names], "size": size, "ranges": 64,
            "range_bytes": 65536, "total_bytes": total, "connections": connections}
    cpu0 = cpu_seconds(pid)
    r = b.measure("gateway warm load", "64 x 64 KiB ranges per GET",
                  h.child("gateway_load.py", spec),
                  show=lambda r: f"{r['bytes'] / r['seconds'] / 1e9:6.2f} GB/s wall")
    if r.get("error") is None:
        cpu = cpu_seconds(pid) - cpu0
        r["gateway_cpu_s"] = cpu
        r["gb_per_cpu_s"] = r["bytes"] / 1e9 / cpu if cpu else None
        r["cpu_s_per_gb"] = cpu / (r["bytes"] / 1e9)
        print(f"  {'':<34} gateway CPU {cpu:.2f} s: {r['gb_per_cpu_s']:.2f} GB/s per core, "
              f"{r['cpu_s_per_gb']:.2f} CPU-s per GB", flush=True)
    return r


def repetition(b: h.Bench, n: int, local_path: Path, size: int, args: argparse.Namespace,
               rep: int) -> None:
    wan = b.wan
    assert wan is not None
    read(b, LOCAL, "TChain of local paths", [str(local_path)] * n)
    read(b, DIRECT, "TChain of root:// over the WAN",
         [f"root://localhost:{wan.port}/{lfn(i)}" for i in range(n)])
    names = [f"bench:{lfn(i)}" for i in range(n)]
    local_dir = b.work / f"gw-local-{rep}"
    with gateway(b.env, b.work, local_dir, f"{rep}a") as (info, _pid):
        urls = [info.url(x) for x in names]
        read(b, GW_COLD, "TChain of http:// via htpdata serve", urls)
        read(b, GW_WARM, "TChain of http:// via htpdata serve", urls)
    with gateway(b.env, b.work, local_dir, f"{rep}b") as (info, pid):
        read(b, GW_RESTART, "TChain of http:// via htpdata serve", [info.url(x) for x in names])
        load(b, info, pid, names, size, args.load_gb * 1e9, args.connections)
    # XCache last, after the disk has written back: removing its cache folder (every byte of
    # every file) and the writeback would otherwise land on whichever case came next.
    os.sync()
    with h.xcache(wan.port) as xc:
        urls = [f"root://localhost:{xc.port}/{lfn(i)}" for i in range(n)]
        read(b, XC_COLD, "TChain of root:// via XCache", urls)
        read(b, XC_WARM, "TChain of root:// via XCache", urls)
    os.sync()


def wan_mb(case: h.Case | None) -> float | None:
    good = case.ok() if case else []
    return statistics.median((r["wan_down"] + r["wan_up"]) / 1e6 for r in good) if good \
        else None


def report(b: h.Bench, meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    local = b.cases[LOCAL].median if LOCAL in b.cases else None
    direct = b.cases[DIRECT].median if DIRECT in b.cases else None
    table = Table(title=f"RDataFrame sums {len(BRANCHES)} branches of {meta['files']} files of "
                  f"{meta['input']['size'] / 1e6:.0f} MB over a {2 * meta['delay_ms']:.0f} ms "
                  f"RTT WAN (median of up to {meta['repeat']} runs, each a new ROOT process)")
    for col in ("case", "how", "s", "min-max s", "/ direct", "/ local", "WAN MB"):
        table.add_column(col, justify="left" if col in ("case", "how") else "right")
    rows = []
    for case in b.cases.values():
        if case.label == "gateway warm load":
            continue
        t, med = case.times, case.median
        span = f"{min(t):.2f}-{max(t):.2f}" if len(t) > 1 else ""
        shown = h.fmt(med, ".3f") if t else f"[red]failed: {(case.errors or ['?'])[0][:50]}"
        table.add_row(case.label, case.what, shown, span, h.fmt(h.ratio(med, direct)),
                      h.fmt(h.ratio(med, local)), h.fmt(wan_mb(case), ".1f"))
        rows.append({"case": case.label, "how": case.what, "median_s": med,
                     "ratio_direct": h.ratio(med, direct), "ratio_local": h.ratio(med, local),
                     "wan_mb_median": wan_mb(case), "runs": case.runs})
    console = Console(width=150)
    console.print(table)
    loadc = b.cases.get("gateway warm load")
    good = loadc.ok() if loadc else []
    per_core = statistics.median(r["gb_per_cpu_s"] for r in good) if good else None
    cpu_gb = statistics.median(r["cpu_s_per_gb"] for r in good) if good else None
    wall = statistics.median(r["bytes"] / r["seconds"] / 1e9 for r in good) if good else None
    console.print(f"Gateway, warm multi-range load ({meta['connections']} connections, 64 x 64 "
                  f"KiB ranges per GET): {h.fmt(wall)} GB/s wall, {h.fmt(per_core)} GB/s per "
                  f"core of the gateway's CPU, {h.fmt(cpu_gb)} CPU-s per GB")

    def median(label: str) -> float | None:
        return b.cases[label].median if label in b.cases else None

    checks = [h.target(f"{GW_COLD} <= {COLD_TARGET} x {DIRECT}", h.ratio(median(GW_COLD), direct),
                       COLD_TARGET),
              h.target(f"{GW_WARM} <= {WARM_TARGET} x {LOCAL}", h.ratio(median(GW_WARM), local),
                       WARM_TARGET),
              h.target(f"{GW_RESTART} <= {WARM_TARGET} x {LOCAL}",
                       h.ratio(median(GW_RESTART), local), WARM_TARGET),
              h.target(f"{GW_COLD} / {XC_COLD} (far below 1)",
                       h.ratio(median(GW_COLD), median(XC_COLD)), 1.0)]
    h.print_targets("Targets of issue 16:", checks, console)
    problems = consistency(b)
    for p in problems:
        console.print(f"[red]WRONG DATA[/red] {p}")
    console.print("Absolute times are noisy (2 cores, shared machine); compare ratios within "
                  "one run.")
    h.write_results(path, {**meta, "cases": rows, "targets": checks, "wrong_data": problems,
                           "load": {"gb_per_s_wall": wall, "gb_per_cpu_s": per_core,
                                    "cpu_s_per_gb": cpu_gb, "runs": good}})


def consistency(b: h.Bench) -> list[str]:
    """Every read must see the entries and sums the local files give."""
    ref = next(iter(b.cases[LOCAL].ok()), None) if LOCAL in b.cases else None
    out = []
    for case in b.cases.values():
        for r in case.ok():
            if ref is not None and "digest" in r and (r["entries"], r["digest"]) != (
                    ref["entries"], ref["digest"]):
                out.append(f"{case.label}: {r['entries']} entries, digest {r['digest']} "
                           f"(local: {ref['entries']}, {ref['digest']})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 files of 16 MB, 0.3 GB of load")
    ap.add_argument("--files", type=int, default=8, help="files in the dataset (8)")
    ap.add_argument("--size-mb", type=int, default=64, help="size of each file (64 MB)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions (1)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay (10)")
    ap.add_argument("--rate-mbps", type=float, default=None, help="WAN rate cap, Mb/s")
    ap.add_argument("--load-gb", type=float, default=2.0, help="bytes of warm load (2 GB)")
    ap.add_argument("--connections", type=int, default=4, help="load connections (4)")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--run-timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path, default=h.RESULTS / "gateway.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.size_mb, args.load_gb = 4, 16, 0.3
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    h.compile_htpdata()
    start_source = h.source_state()
    info = build(args.size_mb)
    path = Path(info["path"])
    print(f"input {args.files} x {path} ({info['size'] / 1e6:.1f} MB, {info['entries']} "
          f"entries, {info['branches']} branches)", flush=True)
    with ExitStack() as stack:
        work = h.workdir(stack, "gateway")
        origin = h.xrootd_origin(stack, {lfn(i): path for i in range(args.files)})
        rate = args.rate_mbps * 1e6 / 8 if args.rate_mbps else None
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms,
                                           rate=rate))
        catalogs = work / "catalogs"
        catalogs.mkdir()
        (catalogs / "bench.toml").write_text(catalog_text(wan.port, args.files, info["size"],
                                                          info["adler32"]))
        env = h.isolated_env(work, HTPDATA_CATALOGS_PATH=str(catalogs))
        b = h.Bench(env, work, deadline, args.run_timeout, wan)
        with path.open("rb") as fh:  # "local files" means in the page cache
            while fh.read(16 << 20):
                pass
        # One unmeasured ROOT run first: the first ROOT process after a while pays for loading
        # its libraries and modules from disk, which would land on whichever case came first.
        h.run(h.child("rdf_case.py", {"urls": [str(path)], "tree": "Events",
                                      "branches": BRANCHES}), env, timeout=300)
        stopped = None
        try:
            for rep in range(args.repeat):
                print(f"repetition {rep + 1} of {args.repeat}", flush=True)
                repetition(b, args.files, path, info["size"], args, rep)
        except h.OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        from importlib.metadata import version

        meta = h.run_meta(start_source, host={"root (PyPI)": version("root")},
                          input=info, files=args.files, branches=BRANCHES,
                          delay_ms=args.delay_ms, rate_bytes_per_s=rate, repeat=args.repeat,
                          connections=args.connections, load_gb=args.load_gb, stopped=stopped)
        report(b, meta, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
