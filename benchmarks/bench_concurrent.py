"""Concurrent cold readers: N processes read the same cold file at once through one shared tier.

Same set-up as ``bench_read.py`` (XRootD origin serving the NanoAOD-like file, the WAN emulator
in front of it, a catalog giving the file's size and adler32), no XCache. Each reader is a new
process doing ``uproot.open("htpdata://bench/store/bench/nano.root")["Events"].arrays(<the 20
branches of bench_read.py>)``. All readers of a group import first, report ready, and then start
at one wall-clock instant (a start barrier). Every group gets a new, empty shared tier
(``HTPDATA_CACHE_SHARED_DIR``) and no local tier (or one per process with
``--local per-process``). Per repetition: (a) one reader alone, cold; (b) ``--procs`` readers
together, cold. The ratio of the bytes that crossed the WAN, (b) / (a), checks the target of
issue 3 (<= 1.05: single flight across processes). Every reader's data is checked against a
digest of the local file. Writes ``benchmarks/results/concurrent.json``.

    .venv/bin/python benchmarks/bench_concurrent.py [--procs 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_read import (  # noqa: E402
    BRANCHES,
    FSSPEC_URL,
    RESULTS,
    catalog_text,
    child_env,
    ratio,
    start_origin,
)
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

TARGET = 1.05  # bytes upstream, N cold readers at once <= 1.05 x one cold reader
START_LEAD = 0.3  # seconds between "go" and the common start instant


# -- the reader (runs in each child process) -----------------------------------------------
def digest(arrays: Any) -> str:
    """sha256 over every buffer of the arrays (values and offsets): equal means equal data."""
    import awkward as ak

    form, length, buffers = ak.to_buffers(arrays)
    h = hashlib.sha256(f"{form.to_json()}|{length}".encode())
    for name in sorted(buffers):
        h.update(name.encode())
        h.update(memoryview(buffers[name]).cast("B"))
    return h.hexdigest()


def worker(target: str) -> None:
    """Import, say ready, wait for the start instant, read ``target``, print one JSON line."""
    import awkward  # noqa: F401  (imports before the barrier, not inside the clock)
    import uproot

    import htpdata  # noqa: F401  (registers htpdata:// with fsspec)

    print(json.dumps({"ready": os.getpid()}), flush=True)
    start_at = json.loads(sys.stdin.readline())["start_at"]
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    with uproot.open(target) as f:
        arrays = f["Events"].arrays(BRANCHES)
    t1 = time.time()
    print(json.dumps({"pid": os.getpid(), "late_ms": (t0 - start_at) * 1e3, "start": t0,
                      "end": t1, "seconds": t1 - t0, "entries": len(arrays),
                      "digest": digest(arrays)}), flush=True)


# -- one group of readers ------------------------------------------------------------------
@dataclass
class Group:
    label: str
    procs: int
    wan_down: int = 0
    wan_up: int = 0
    connections: int = 0
    wall_s: float | None = None
    """Common start instant to the end of the last read."""
    exit_s: float | None = None
    """Common start instant to the exit of the last process (cache writes flushed)."""
    reads: list[dict[str, Any]] = field(default_factory=list)
    upstream_by_pid: dict[str, int] = field(default_factory=dict)
    tier_bytes: int | None = None
    tier_extents: int | None = None
    errors: list[str] = field(default_factory=list)
    start_at: float = 0.0


def journal_upstream(shared: Path) -> dict[str, int]:
    """Bytes each process fetched upstream, from the reader records in the shared tier."""
    out: dict[str, int] = {}
    for path in sorted(shared.glob("*/r/*")) + sorted(shared.glob("users/*/r/*")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = str(rec.get("proc", "?")).split(".")[1] if "." in str(rec.get("proc")) else "?"
        for row in (rec.get("traffic") or {}).values():
            out[pid] = out.get(pid, 0) + int(row.get("upstream", 0))
    return out


def tier_contents(shared: Path) -> tuple[int, int]:
    """(bytes, ranges) held by the shared tier, read from its packs."""
    from htpdata.testing.cachecheck import verify_tier

    check = verify_tier(shared, {})
    held = 0
    from htpdata.cache.pack import parse_head
    from htpdata.testing.cachecheck import packs_under

    for p in packs_under(shared):
        data = p.read_bytes()
        held += sum(r.length for r in parse_head(data, len(data)).ranges())
    return held, check.records


def run_group(label: str, n: int, wan: WanProxy, base_env: dict[str, str], dirs: Path,
              local: str, timeout: float, target: str = FSSPEC_URL, *,
              shared: Path | None = None, seen_as: Callable[[int], Path] | None = None,
              wrap: Callable[[list[str], int], list[str]] | None = None) -> Group:
    """Start ``n`` readers on a fresh shared tier, release them at one instant, collect.

    The tier is ``shared`` (default ``dirs/shared``); reader ``i`` sees it at ``seen_as(i)``
    (e.g. on one of the network-filesystem emulator's nodes; default: ``shared`` itself) and
    runs the command ``wrap(cmd, i)`` (e.g. under strace; default: ``cmd``)."""
    shared = dirs / "shared" if shared is None else shared
    logs = dirs / "logs"
    logs.mkdir(parents=True)
    g = Group(label, n)
    procs: list[subprocess.Popen[str]] = []
    deadline = time.monotonic() + timeout
    before = wan.counters
    try:
        for i in range(n):
            tier = seen_as(i) if seen_as is not None else shared
            env = {**base_env, "HTPDATA_CACHE_SHARED_DIR": str(tier),
                   "HTPDATA_CACHE_LOCAL_DIR": "off" if local == "off" else str(dirs / f"l{i}")}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target]
            with open(logs / f"reader-{i}.err", "w") as err:
                procs.append(subprocess.Popen(
                    wrap(cmd, i) if wrap is not None else cmd,
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    text=True))
        if _barrier(procs, deadline, logs, g):
            _collect(procs, deadline, logs, g)
    finally:
        for p in procs:  # only our own readers, by PID
            if p.poll() is None:
                p.kill()
                p.wait(10)
    wan.wait_idle(quiet=0.5, timeout=30)
    used = wan.counters - before
    g.wan_down, g.wan_up, g.connections = used.down, used.up, used.connections
    g.upstream_by_pid = journal_upstream(shared)
    g.tier_bytes, g.tier_extents = tier_contents(shared)
    fetchers = sum(1 for v in g.upstream_by_pid.values() if v)
    secs = [r["seconds"] for r in g.reads]
    nan = float("nan")
    print(f"  {label:<24} WAN down {used.down / 1e6:7.3f} MB, up {used.up / 1e3:5.1f} kB, "
          f"{used.connections:2d} conn; {len(g.reads)}/{n} ok; read s median "
          f"{statistics.median(secs) if secs else nan:.2f} max {max(secs, default=nan):.2f}; "
          f"wall {g.wall_s or nan:.2f} s; {fetchers} fetched upstream; started within "
          f"{max((r['late_ms'] for r in g.reads), default=nan):.1f} ms; tier holds "
          f"{(g.tier_bytes or 0) / 1e6:.3f} MB in {g.tier_extents} extents", flush=True)
    for e in g.errors:
        print(f"    {e}", flush=True)
    return g


def _barrier(procs: list[subprocess.Popen[str]], deadline: float, logs: Path, g: Group
             ) -> bool:
    """Wait until every reader has imported, then give all one start instant."""
    for i, p in enumerate(procs):
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready or "ready" not in p.stdout.readline():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)
            g.errors.append(f"reader {i} did not get ready: {_tail(logs, i)}")
            return False
    g.start_at = time.time() + START_LEAD
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(json.dumps({"start_at": g.start_at}) + "\n")
        p.stdin.flush()  # communicate() closes it
    return True


def _collect(procs: list[subprocess.Popen[str]], deadline: float, logs: Path, g: Group
             ) -> None:
    for i, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            g.errors.append(f"reader {i} timed out")
            continue
        lines = out.strip().splitlines()
        if p.returncode != 0 or not lines:
            g.errors.append(f"reader {i} exit {p.returncode}: {_tail(logs, i)}")
            continue
        g.reads.append(json.loads(lines[-1]))
    g.exit_s = time.time() - g.start_at
    if g.reads:
        g.wall_s = max(r["end"] for r in g.reads) - g.start_at


def _tail(logs: Path, i: int) -> str:
    try:
        lines = (logs / f"reader-{i}.err").read_text().strip().splitlines()
    except OSError:
        return "?"
    return lines[-1] if lines else "no output"


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=16, help="concurrent readers (default 16)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--local", choices=("off", "per-process"), default="off",
                    help="node-local tier: off (default) or one folder per process")
    ap.add_argument("--size-mb", type=int, default=128, help="input size (default 128 MB)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay")
    ap.add_argument("--max-seconds", type=float, default=1200.0,
                    help="wall-clock bound for the whole run (default 1200)")
    ap.add_argument("--run-timeout", type=float, default=300.0,
                    help="bound for one group of readers (default 300)")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the reference run of the readers on the local file")
    ap.add_argument("--json", type=Path, default=RESULTS / "concurrent.json")
    ap.add_argument("--worker", metavar="TARGET", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    source_at_start = h.source_state()
    h.compile_htpdata()

    info = build(args.size_mb)
    input_file = Path(info["path"])
    import uproot

    with uproot.open(input_file) as f:
        ref = f["Events"].arrays(BRANCHES)
    ref_entries, ref_digest = len(ref), digest(ref)
    del ref
    print(f"input {input_file} ({info['size'] / 1e6:.1f} MB); {args.procs} readers, "
          f"{args.repeat} repetitions, local tier {args.local}; local digest "
          f"{ref_digest[:16]}")
    pairs: list[tuple[Group, Group]] = []
    stopped = None
    with ExitStack() as stack:
        tmp = h.workdir(stack, "concurrent", Path(tempfile.gettempdir()))
        origin = start_origin(stack, input_file)
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms))
        catalogs = tmp / "catalogs"
        catalogs.mkdir()
        (catalogs / "bench.toml").write_text(catalog_text(wan.port, info["size"],
                                                          info["adler32"]))
        env = child_env(tmp, catalogs)
        print(f"origin root://localhost:{origin.port}  WAN proxy 127.0.0.1:{wan.port} "
              f"({args.delay_ms} ms each way)")
        for rep in range(args.repeat):
            left = deadline.remaining()
            if left < 30:
                stopped = f"stopped at the {args.max_seconds:.0f} s bound before repetition " \
                          f"{rep + 1}"
                print(stopped)
                break
            print(f"repetition {rep + 1} of {args.repeat}", flush=True)
            one = run_group("(a) 1 reader, cold", 1, wan, env, tmp / f"r{rep}-one",
                            args.local, min(args.run_timeout, left))
            many = run_group(f"(b) {args.procs} readers, cold", args.procs, wan, env,
                             tmp / f"r{rep}-many", args.local,
                             min(args.run_timeout, deadline.remaining()))
            pairs.append((one, many))
            for d in (tmp / f"r{rep}-one", tmp / f"r{rep}-many"):
                shutil.rmtree(d, ignore_errors=True)
        floor = None
        if not args.no_floor and not stopped and deadline.remaining() > 30:
            print("reference: the same readers on the local file (no WAN, no cache)", flush=True)
            floor = run_group(f"{args.procs} readers, local file", args.procs, wan, env,
                              tmp / "floor", "off", min(args.run_timeout,
                                                        deadline.remaining()),
                              target=str(input_file))
        meta = h.run_meta(source_at_start, {"uproot": uproot.__version__})
        meta |= {"input": info, "branches": BRANCHES, "delay_ms": args.delay_ms,
                "procs": args.procs, "local_tier": args.local, "repeat": args.repeat,
                "reference": {"entries": ref_entries, "digest": ref_digest},
                "stopped": stopped}
        return report(pairs, floor, meta, args.json)


def report(pairs: list[tuple[Group, Group]], floor: Group | None, meta: dict[str, Any],
           path: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    ref = meta["reference"]
    n = meta["procs"]
    table = Table(title=f"{n} cold readers at once vs 1, one shared tier, "
                  f"{2 * meta['delay_ms']:.0f} ms RTT WAN (bytes through the WAN emulator)")
    for col in ("rep", "1 reader MB", f"{n} readers MB", "ratio down", "ratio down+up",
                "journal MB", "fetchers", "1 reader s", f"{n} wall s", f"{n} max read s",
                "same data"):
        table.add_column(col, justify="right")
    rows: list[dict[str, Any]] = []
    wrong: list[str] = []
    for i, (one, many) in enumerate(pairs, 1):
        bad = [f"{g.label}: {r['entries']} entries, digest {r['digest'][:16]}"
               for g in (one, many) for r in g.reads
               if (r["entries"], r["digest"]) != (ref["entries"], ref["digest"])]
        bad += [f"{g.label}: {e}" for g in (one, many) for e in g.errors]
        wrong += bad
        r_down = ratio(many.wan_down, one.wan_down)
        r_total = ratio(many.wan_down + many.wan_up, one.wan_down + one.wan_up)
        fetchers = sum(1 for v in many.upstream_by_pid.values() if v)
        same = len(many.reads) == many.procs and len(one.reads) == 1 and not bad
        max_read = max((r["seconds"] for r in many.reads), default=None)
        table.add_row(str(i), f"{one.wan_down / 1e6:.3f}", f"{many.wan_down / 1e6:.3f}",
                      _fmt(r_down, ".3f"), _fmt(r_total, ".3f"),
                      f"{sum(many.upstream_by_pid.values()) / 1e6:.3f}", f"{fetchers}/{n}",
                      _fmt(one.wall_s), _fmt(many.wall_s), _fmt(max_read),
                      "[green]yes[/green]" if same else "[red]NO[/red]")
        rows.append({"rep": i, "ratio_down": r_down, "ratio_total": r_total,
                     "fetchers": fetchers, "same_data": same, "one": asdict(one),
                     "many": asdict(many)})
    ratios = [r["ratio_down"] for r in rows if r["ratio_down"] is not None]
    worst = max(ratios) if ratios else None
    med = statistics.median(ratios) if ratios else None
    status = "not measured" if worst is None else "met" if worst <= TARGET else "NOT met"
    console = Console(width=140)
    console.print(table)
    colour = {"met": "green", "NOT met": "red"}.get(status, "yellow")
    console.print(f"Target of issue 3: bytes upstream, {n} cold readers at once <= {TARGET} x "
                  f"one reader: median ratio {_fmt(med, '.3f')}, worst {_fmt(worst, '.3f')}  "
                  f"[{colour}]{status}[/{colour}]")
    console.print("ratio down: server-to-client bytes through the WAN emulator (the data "
                  "fetched upstream); down+up adds requests and logins. journal MB: upstream "
                  f"bytes the {n} readers' cache journals record. fetchers: readers that "
                  "fetched any byte upstream.")
    if floor is not None and floor.wall_s is not None:
        bad_floor = [r for r in floor.reads if r["digest"] != ref["digest"]] or floor.errors
        console.print(f"Reference: {n} readers of the local file at once (no WAN, no cache; "
                      f"the CPU floor of this {meta['host']['cpus']}-core machine): wall "
                      f"{floor.wall_s:.2f} s" + (" [red]WRONG DATA[/red]" if bad_floor else ""))
    for w in wrong:
        console.print(f"[red]WRONG DATA OR FAILED[/red] {w}")
    h.write_results(path, {**meta, "target": TARGET, "ratio_median": med, "ratio_worst": worst,
                           "status": status, "repetitions": rows,
                           "local_floor": asdict(floor) if floor else None,
                           "wrong_data": wrong})
    return 0 if not wrong else 1


_fmt = h.fmt


if __name__ == "__main__":
    sys.exit(main())
