"""Multi-file analyses at WAN latency (issue 17): coffea's dataset_tools and one process reading
the files in turn, through every road, at several one-way delays.

Sets up, on loopback and free ports: an XRootD origin serving ``--files`` NanoAOD-like files
(``make_inputs.py``; the same content under ``--files`` names, each its own identity), and per
delay the WAN emulator (``wan.py``) in front of it, an XCache behind the emulator, and a catalog
dataset whose one site is the emulator. Every measurement is a new process
(``children/multifile_case.py``):

- coffea ``preprocess`` + ``apply_to_fileset`` (Dask LocalCluster, 2 workers) through local
  files (the floor), direct root://, XCache cold, htpdata cold (``htpdata.coffea.preprocess``,
  next-file prefetch on; and the same with prefetch off), htpdata warm, and "second reader": a
  new node-local tier over the shared tier the cold run filled (same Unix user: the shared
  tier's user area; real second users read it when the first filled it as the tier's owner or
  by ``htpdata stage``);
- at the last delay given, one process reading the files in turn: local, direct, htpdata cold
  (next files' metadata and baskets prefetched; their metadata only; no prefetch).

Prints times, ratios to direct root:// and to local files, preprocess times and bytes that
crossed the WAN; asserts the histograms are identical across readers; checks the targets of
issue 17; writes ``benchmarks/results/multifile.json``.

    .venv/bin/python benchmarks/bench_multifile.py --files 24 --size-mb 90 --delays 10,50
    .venv/bin/python benchmarks/bench_multifile.py --quick     # 3 small files, 10 ms
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_read import BRANCHES  # noqa: E402  (the 20 branches every read benchmark reads)
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

LOCAL, DIRECT, XCACHE = "local files", "direct root://", "XCache cold"
COLD, WARM, SECOND = "htpdata cold", "htpdata warm", "htpdata second reader"
SERIAL = "serial"


def lfns(n: int) -> list[str]:
    return [f"/store/bench/multi/nano_{i:03d}.root" for i in range(n)]


def catalog_text(wan_port: int, names: list[str], size: int, adler32: str) -> str:
    files = ",\n".join(f'  {{ name = "{lfn}", size = {size}, adler32 = "{adler32}" }}'
                       for lfn in names)
    return ('format = 1\n[namespaces.bench]\ndescription = "multi-file benchmark"\n\n'
            "[sites.T2_BENCH_WAN]\npreference = 1\nprotocols = [\n"
            f'  {{ scheme = "root", namespace = "bench", '
            f'prefix = "root://localhost:{wan_port}/" }},\n]\n\n'
            f'[datasets."/Bench/Multi"]\nnamespace = "bench"\nfiles = [\n{files}\n]\n')


def analysis(b: h.Bench, label: str, urls: list[str], mode: str, env: dict[str, str],
             htpdata_pre: bool = False) -> dict[str, Any]:
    def show(r: dict[str, Any]) -> str:
        pre = f"preprocess {r['preprocess_s']:6.2f} s  " if r.get("preprocess_s") else ""
        return (f"{r['seconds']:7.2f} s  {pre}WAN {(r['wan_down'] + r['wan_up']) / 1e6:8.2f} MB"
                f" ({r['wan_sends_up']} sends)")

    spec = {"mode": mode, "urls": urls, "branches": BRANCHES, "workers": 2,
            "htpdata_preprocess": htpdata_pre}
    return b.measure(f"{mode} {label}", mode, h.child("multifile_case.py", spec), env,
                     show=show)


def run_delay(stack: ExitStack, b: h.Bench, origin: Any, delay: float, names: list[str],
              local_paths: list[str], info: dict[str, Any], serial: bool,
              base_env: dict[str, str], only: str = "all", repeat: int = 1) -> None:
    wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=delay))
    b.wan = wan
    work = Path(tempfile.mkdtemp(prefix=f"d{delay:g}-", dir=b.work))
    catalogs = work / "catalogs"
    catalogs.mkdir()
    (catalogs / "bench.toml").write_text(catalog_text(wan.port, names, info["size"],
                                                      info["adler32"]))
    print(f"-- {delay:g} ms each way: WAN proxy 127.0.0.1:{wan.port}", flush=True)

    def env(local: str, shared: str | None = None) -> dict[str, str]:
        e = dict(base_env, HTPDATA_CATALOGS_PATH=str(catalogs),
                 HTPDATA_CACHE_LOCAL_DIR=str(work / local))
        if shared:
            e["HTPDATA_CACHE_SHARED_DIR"] = str(work / shared)
        return e

    direct = [f"root://localhost:{wan.port}/{lfn}" for lfn in names]
    via = [f"htpdata://bench{lfn}" for lfn in names]
    tag = f"@{delay:g}ms"
    for n in range(repeat):  # cold runs start from empty tiers each time
        cold = f"-{n}" if n else ""
        if only in ("all", "coffea"):
            analysis(b, f"{LOCAL}{tag}", local_paths, "coffea", env("l0"))
            analysis(b, f"{DIRECT}{tag}", direct, "coffea", env("l0"))
            with h.xcache(wan.port) as xc:
                analysis(b, f"{XCACHE}{tag}",
                         [f"root://localhost:{xc.port}/{lfn}" for lfn in names],
                         "coffea", env("l0"))
            analysis(b, f"{COLD}{tag}", via, "coffea", env(f"l1{cold}", f"shared{cold}"),
                     htpdata_pre=True)
            analysis(b, f"{WARM}{tag}", via, "coffea", env(f"l1{cold}", f"shared{cold}"),
                     htpdata_pre=True)
            analysis(b, f"{SECOND}{tag}", via, "coffea", env(f"l2{cold}", f"shared{cold}"),
                     htpdata_pre=True)
            analysis(b, f"{COLD} no prefetch{tag}", via, "coffea",
                     dict(env(f"l5{cold}", f"shared5{cold}"), HTPDATA_CACHE_PREFETCH="false"),
                     htpdata_pre=True)
            shutil.rmtree(work / f"l1{cold}", ignore_errors=True)
        if serial and only in ("all", "serial"):
            analysis(b, f"{LOCAL}{tag}", local_paths, SERIAL, env("l0"))
            analysis(b, f"{DIRECT}{tag}", direct, SERIAL, env("l0"))
            analysis(b, f"{COLD}{tag}", via, SERIAL, env(f"l3{cold}"))
            analysis(b, f"{COLD} metadata prefetch{tag}", via, SERIAL,
                     dict(env(f"l6{cold}"), HTPDATA_CACHE_PREFETCH_BASKETS="false"))
            analysis(b, f"{COLD} no prefetch{tag}", via, SERIAL,
                     dict(env(f"l4{cold}"), HTPDATA_CACHE_PREFETCH="false"))


def report(b: h.Bench, delays: list[float], meta: dict[str, Any], out: Path) -> int:
    def med(label: str, key: str = "seconds") -> float | None:
        c = b.cases.get(label)
        if c is None:
            return None
        if key == "wan":
            vals = [r["wan_down"] + r["wan_up"] for r in c.ok()]
            return sorted(vals)[len(vals) // 2] if vals else None
        return c.median if key == "seconds" else c.median_of(key)

    checks = []
    bad = []
    for mode in ("coffea", SERIAL):  # the histograms of every reader are the same
        hists = {label: c.ok()[0]["hists"] for label, c in b.cases.items()
                 if label.startswith(mode + " ") and c.ok()}
        first = next(iter(hists.values()), None)
        bad += [label for label, v in hists.items() if v != first]
    print(f"histograms identical across readers: {'yes' if not bad else 'NO: ' + str(bad)}")
    print(f"{'case':<44} {'seconds':>8} {'x direct':>9} {'x local':>8} {'preproc':>8} "
          f"{'WAN MB':>9} {'runs':>5}")
    for label, c in b.cases.items():
        tag = label.split("@")[-1]
        mode = label.split(" ")[0]
        d = med(f"{mode} {DIRECT}@{tag}")
        loc = med(f"{mode} {LOCAL}@{tag}")
        wan = med(label, "wan")
        print(f"{label:<44} {h.fmt(c.median):>8} {h.fmt(h.ratio(c.median, d)):>9} "
              f"{h.fmt(h.ratio(c.median, loc)):>8} {h.fmt(c.median_of('preprocess_s')):>8} "
              f"{h.fmt(wan / 1e6 if wan is not None else None):>9} {len(c.ok()):>5}")
    for delay in delays:
        tag = f"@{delay:g}ms"
        direct = med(f"coffea {DIRECT}{tag}")
        cold = med(f"coffea {COLD}{tag}")
        checks.append(h.target(f"coffea htpdata cold / direct at {delay:g} ms",
                               h.ratio(cold, direct), 0.9 if delay >= 50 else 1.0))
        checks.append(h.target(f"coffea htpdata warm / local at {delay:g} ms",
                               h.ratio(med(f"coffea {WARM}{tag}"),
                                       med(f"coffea {LOCAL}{tag}")), 1.05))
        checks.append(h.target(f"preprocess seen / first at {delay:g} ms",
                               h.ratio(med(f"coffea {WARM}{tag}", "preprocess_s"),
                                       med(f"coffea {COLD}{tag}", "preprocess_s")), 0.05))
        checks.append(h.target(f"cold WAN bytes / direct at {delay:g} ms",
                               h.ratio(med(f"coffea {COLD}{tag}", "wan"),
                                       med(f"coffea {DIRECT}{tag}", "wan")), 1.05))
    tag = f"@{delays[-1]:g}ms"
    checks.append(h.target(f"serial htpdata cold / direct at {delays[-1]:g} ms",
                           h.ratio(med(f"{SERIAL} {COLD}{tag}"), med(f"{SERIAL} {DIRECT}{tag}")),
                           0.8))
    checks.append(h.target(f"serial cold WAN bytes / direct at {delays[-1]:g} ms",
                           h.ratio(med(f"{SERIAL} {COLD}{tag}", "wan"),
                                   med(f"{SERIAL} {DIRECT}{tag}", "wan")), 1.05))
    h.print_targets("targets (issue 17)", checks)
    h.write_results(out, {**meta, "cases": {k: c.runs for k, c in b.cases.items()},
                          "targets": checks, "histograms_identical": not bad})
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 files of 8 MB at 10 ms")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--size-mb", type=int, default=90, help="size of each file")
    ap.add_argument("--delays", default="10,50", help="one-way delays in ms, comma-separated")
    ap.add_argument("--max-seconds", type=float, default=5400.0)
    ap.add_argument("--run-timeout", type=float, default=1200.0)
    ap.add_argument("--json", type=Path, default=h.RESULTS / "multifile.json")
    ap.add_argument("--only", choices=("all", "coffea", "serial"), default="all",
                    help="run only the coffea cases or only the serial ones (at the last delay)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each case (cold ones from empty tiers); medians reported")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.size_mb, args.delays = 3, 8, "10"
    delays = [float(x) for x in args.delays.split(",") if x.strip()]
    source_at_start = h.source_state()
    h.compile_htpdata()
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    info = build(args.size_mb)
    path = Path(info["path"])
    names = lfns(args.files)
    with ExitStack() as stack:
        work = h.workdir(stack, "multifile", Path(tempfile.gettempdir()))
        origin = h.xrootd_origin(stack, {lfn: path for lfn in names})
        local = work / "local"
        for lfn in names:
            h._link(path, local / lfn.lstrip("/"))
        with path.open("rb") as fh:  # "local files" means in the page cache
            while fh.read(16 << 20):
                pass
        b = h.Bench(h.isolated_env(work), work, deadline, args.run_timeout)
        print(f"{args.files} files of {info['size'] / 1e6:.1f} MB ({info['entries']} entries), "
              f"{len(BRANCHES)} branches, origin root://localhost:{origin.port}", flush=True)
        stopped = None
        try:
            for i, delay in enumerate(delays):
                run_delay(stack, b, origin, delay, names,
                          [str(local / lfn.lstrip("/")) for lfn in names], info,
                          i == len(delays) - 1, h.isolated_env(work), args.only,
                          max(1, args.repeat))
        except h.OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        meta = h.run_meta(source_at_start, input=info, files=args.files, delays_ms=delays,
                          branches=BRANCHES, statistic="median", stopped=stopped)
        return report(b, delays, meta, args.json)


if __name__ == "__main__":
    sys.exit(main())
