"""Reports and eviction passes against the size of a format-2 shared tier (issues 6 and 13).

    .venv/bin/python benchmarks/bench_report.py        # 10^3, 10^4 entries (nfsemu 10^3), 3 min
    .venv/bin/python benchmarks/bench_report.py --entries 1e4,1e5 --nfsemu-max 1e4  # ~1 h

For each size it builds a shared tier of N entries holding ``--ranges`` ranges each (default
100: 10^4 entries hold 10^6 ranges, 10^5 hold 10^7), with the cache's own write primitive
(``Area.write_pack``, as a read's background writer stores a fetch batch: one pack per entry,
published by rename, owned by the tier's owner, so every pack passes the tier's trust checks;
one entry is read back through ``DiskTier.read`` and checked). Then, each in a new process
(``python -m htpdata``, as an operator or cron runs it), on each storage:

- ``report --refresh``: folds the reader records and rescans the areas (what a pass does,
  without removing anything), writes the summary;
- ``report``: the summary only (what a user runs);
- ``cache evict --dry-run``: a pass's scan and choice, nothing removed;
- ``cache evict``: a real pass with ``cache.shared_size`` set to the tier's bytes, so it frees
  down to the low watermark (10 % of the entries, each by one rename into the trash, the trash
  then emptied).

For each: wall seconds, peak RSS (``wait4``), metadata system calls under the tier (``strace
-f``, :mod:`htpdata.testing.syscount`; local disk) and the requests the network-filesystem
emulator's server answered (``nfsemu``, 1 ms each; its counters, no strace, so its times are
not inflated). Growth ratios are against the smallest size of the same storage. Counts do not
depend on the machine's load; times do. Writes ``benchmarks/results/report.json``.

File creation is slow right after mass deletion on this disk (``/`` is ext4 without a
journal): build in ``/var/tmp`` (``--dir``), wait a few minutes between big runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from htpdata.testing.nfsemu import NfsEmulator  # noqa: E402
from htpdata.testing.syscount import parse_trace, snapshot, strace_argv  # noqa: E402

RANGE_BYTES = 64
"""Bytes per stored range: passes and reports never read a range, so small ones cost the same."""
FILE_SIZE = 4 * 1024**3
"""The size each cached file claims (ranges spread over it, as baskets over a NanoAOD file)."""


# -- building a tier -------------------------------------------------------------------------
def build(root: Path, n: int, ranges: int, progress: bool = True) -> dict[str, Any]:
    """A format-2 shared tier at ``root`` with ``n`` entries of one pack of ``ranges`` ranges,
    written through the cache's own primitives by the tier's owner (this process)."""
    from htpdata.cache import DiskTier
    from htpdata.cache.identity import Identity

    t0 = time.perf_counter()
    tier = DiskTier("shared", root, 0)
    tier.ensure()
    area = tier.write_area(private=False)
    if area is None:
        raise SystemExit(f"bench_report: no area to write in {root}: {tier.problem}")
    step = FILE_SIZE // ranges
    data = bytes(RANGE_BYTES)
    nbytes = 0
    try:
        for i in range(n):
            ident = Identity(f"bench:/store/bench/f{i:07d}.root", FILE_SIZE, f"{i:08x}")
            pieces = [(j * step + (i * 4096) % (step - RANGE_BYTES), data)
                      for j in range(ranges)]
            info = {"name": ident.name, "adler32": ident.adler32, "learnt": None,
                    "dataset": f"bench:/Bench/DS{i % 300}", "created": time.time()}
            nbytes += area.write_pack(ident, pieces, info)
            area.forget(ident.name_key)  # one entry open at a time, as many processes would
            if progress and n >= 10_000 and (i + 1) % (n // 10) == 0:
                rate = (i + 1) / (time.perf_counter() - t0)
                print(f"    built {i + 1:>8} entries ({rate:,.0f}/s)", flush=True)
        # one entry read back through the tier's own read path: trust checks and checksums
        probe = Identity("bench:/store/bench/f0000000.root", FILE_SIZE, f"{0:08x}")
        got = tier.read(probe, [(0, RANGE_BYTES)])
        if got != [(0, data)]:
            raise SystemExit(f"bench_report: the tier does not serve what was built: {got!r}")
    finally:
        tier.close()
    return {"entries": n, "ranges": n * ranges, "bytes": nbytes,
            "build_s": time.perf_counter() - t0}


# -- one measured command -------------------------------------------------------------------
def run_timed(cmd: Sequence[str], env: Mapping[str, str], timeout: float
              ) -> tuple[float, str, float]:
    """(seconds, stdout, peak RSS in MB) of one command in its own session."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=dict(env), stdout=out, stderr=err,
                                start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)
            raise
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(err.read()[-2000:].decode(errors="replace"))
        out.seek(0)
        return seconds, out.read().decode(), _peak_rss_mb()


def _peak_rss_mb() -> float:
    """The peak RSS of the child just reaped: ``RUSAGE_CHILDREN`` is the largest child so far,
    so each measured command runs in its own small helper process (:func:`measure`)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(cmd: Sequence[str], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` from a fresh helper process, so its peak RSS is its own (not the largest of
    every child this benchmark ran)."""
    helper = [sys.executable, str(Path(__file__).resolve()), "--measure-one",
              json.dumps({"cmd": list(cmd), "timeout": timeout})]
    out = subprocess.run(helper, env=dict(env), capture_output=True, text=True,
                         timeout=timeout + 30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _measure_one(spec: dict[str, Any]) -> None:
    seconds, out, rss = run_timed(spec["cmd"], os.environ, float(spec["timeout"]))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss, "stdout": out}))


def traced(cmd: Sequence[str], env: Mapping[str, str], folder: Path, work: Path,
           timeout: float) -> dict[str, Any]:
    """Metadata calls of ``cmd`` under ``folder`` (strace -f)."""
    trace = work / "trace"
    existing = snapshot([folder])
    subprocess.run(strace_argv(cmd, trace), env=dict(env), check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(trace, errors="surrogateescape") as f:
        calls = parse_trace(f, [folder], existing)
    trace.unlink()
    return {"metadata": calls.metadata, "kinds": dict(calls.kinds)}


# -- the cases ------------------------------------------------------------------------------
CASES: tuple[tuple[str, list[str]], ...] = (
    ("report --refresh", ["report", "--json", "--tier", "shared", "--refresh"]),
    ("report", ["report", "--json", "--tier", "shared"]),
    ("evict --dry-run", ["cache", "evict", "--tier", "shared", "--dry-run", "--json"]),
    ("evict", ["cache", "evict", "--tier", "shared", "--json"]),
)


@contextlib.contextmanager
def storage(kind: str, backing: Path, meta_latency_ms: float) -> Iterator[
        tuple[Path, NfsEmulator | None]]:
    """The folder the commands see: the backing folder, or its first emulator mount."""
    if kind == "local":
        yield backing, None
        return
    with NfsEmulator(backing, mounts=1, meta_latency_ms=meta_latency_ms) as emu:
        yield emu.mounts[0], emu


def run_size(n: int, args: argparse.Namespace, kinds: list[str], deadline: h.Deadline
             ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="htpdata-bench-report-", dir=args.dir))
        stack.callback(shutil.rmtree, work, True)
        work.chmod(0o755)
        backing = work / "store"
        backing.mkdir()
        tier_name = "tier"
        print(f"{n} entries x {args.ranges} ranges: building ...", flush=True)
        built = build(backing / tier_name, n, args.ranges)
        print(f"  built {built['entries']} entries, {built['ranges']} ranges, "
              f"{built['bytes'] / 1e6:.0f} MB in {built['build_s']:.1f} s "
              f"({n / built['build_s']:,.0f} entries/s)", flush=True)
        for kind in kinds:
            if kind == "nfsemu" and n > args.nfsemu_max:
                print(f"  nfsemu: skipped ({n} entries > --nfsemu-max {args.nfsemu_max:g})")
                continue
            # every storage starts from the same tier: the real pass removes entries
            copy = work / f"copy-{kind}"
            shutil.copytree(backing, copy, symlinks=True)
            with storage(kind, copy, args.meta_latency_ms) as (seen, emu):
                tier = seen / tier_name
                env = h.isolated_env(work, HTPDATA_CACHE_LOCAL_DIR="off",
                                     HTPDATA_CACHE_SHARED_DIR=str(tier),
                                     HTPDATA_CACHE_SHARED_SIZE=str(built["bytes"]))
                label = "local disk" if emu is None else f"nfsemu {args.meta_latency_ms:g} ms"
                for case, argv in CASES:
                    cmd = [sys.executable, "-m", "htpdata", *argv]
                    timeout = deadline.timeout(args.run_timeout, f"{label} {case} at {n}")
                    row: dict[str, Any] = {"entries": n, "ranges": built["ranges"],
                                           "storage": label, "case": case}
                    try:
                        if emu is not None:
                            emu.reset()
                        got = measure(cmd, env, timeout)
                        row.update(seconds=got["seconds"], peak_rss_mb=got["peak_rss_mb"])
                        row["answer"] = _answer(case, got["stdout"])
                        if emu is not None:
                            ops = emu.counters()
                            row["server"] = ops.to_json()
                            row["ops"] = ops.meta
                        elif not args.no_strace and case != "evict":
                            # the real pass changes the tier: its calls are counted on a copy
                            row["syscalls"] = traced(cmd, env, tier, work, timeout)
                            row["ops"] = row["syscalls"]["metadata"]
                        elif not args.no_strace:
                            again = work / "again"
                            shutil.copytree(copy, again, symlinks=True)
                            row["syscalls"] = traced(
                                cmd, {**env, "HTPDATA_CACHE_SHARED_DIR": str(again / tier_name)},
                                again / tier_name, work, timeout)
                            row["ops"] = row["syscalls"]["metadata"]
                            shutil.rmtree(again, ignore_errors=True)
                    except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
                        row["error"] = str(exc).strip().splitlines()[-1][:200] if str(exc) \
                            else type(exc).__name__
                    rows.append(row)
                    print(f"  {label:<12} {case:<17} " + (
                        f"FAILED: {row['error']}" if "error" in row else
                        f"{row['seconds']:7.2f} s, peak RSS {row['peak_rss_mb']:5.0f} MB, "
                        f"{h.fmt(row.get('ops'), '.0f'):>8} metadata ops"
                        + (f" ({_kinds(row['syscalls'])})" if "syscalls" in row else "")
                        + f"; {row['answer']}"), flush=True)
            shutil.rmtree(copy, ignore_errors=True)
        for r in rows:
            r["build_s"] = built["build_s"]
    return rows


def _kinds(s: dict[str, Any]) -> str:
    k = s["kinds"]
    return " ".join(f"{short}{k.get(kind, 0)}" for short, kind in (
        ("o", "open"), ("s", "stat"), ("l", "listdir"), ("c", "open_create"),
        ("r", "rename"), ("u", "unlink"), ("d", "rmdir")) if k.get(kind))


def _answer(case: str, out: str) -> str:
    """What the command said, in a few words (files seen, entries removed)."""
    data = json.loads(out)
    if case.startswith("report"):
        tiers = data.get("tiers") or []
        files = sum(int(t.get("files") or 0) for t in tiers)
        return f"{files} entries reported"
    passes = data if isinstance(data, list) else [data]
    seen = sum(int(p.get("entries") or 0) for p in passes)
    removed = sum(int(p.get("removed") or 0) for p in passes)
    return f"{seen} entries scanned, {removed} {'would go' if 'dry' in case else 'removed'}"


# -- report ---------------------------------------------------------------------------------
def report(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    t = Table(title="Reports and eviction passes against tier size (each a new process; "
              "growth: x the smallest size's figure on the same storage)")
    for col in ("storage", "case", "entries", "ranges", "s", "x", "peak RSS MB", "x",
                "metadata ops", "x", "ops / entry"):
        t.add_column(col, justify="left" if col in ("storage", "case") else "right")
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if "error" in r:
            t.add_row(r["storage"], r["case"], str(r["entries"]), str(r["ranges"]),
                      f"[red]{r['error'][:60]}[/red]")
            continue
        b = base.setdefault((r["storage"], r["case"]), r)
        r["growth"] = {k: h.ratio(r.get(k), b.get(k)) for k in ("seconds", "peak_rss_mb", "ops")}
        t.add_row(r["storage"], r["case"], f"{r['entries']:,}", f"{r['ranges']:,}",
                  h.fmt(r["seconds"]), h.fmt(r["growth"]["seconds"], ".1f"),
                  h.fmt(r["peak_rss_mb"], ".0f"), h.fmt(r["growth"]["peak_rss_mb"], ".2f"),
                  h.fmt(r.get("ops"), ".0f"), h.fmt(r["growth"]["ops"], ".1f"),
                  h.fmt(r["ops"] / r["entries"] if r.get("ops") is not None else None, ".1f"))
    console.print(t)
    console.print("  metadata ops: strace -f calls under the tier (local disk) or the emulator "
                  "server's requests (nfsemu, after its kernel caches). evict frees to the low "
                  "watermark with cache.shared_size = the tier's bytes.")
    h.write_results(path, {**meta, "rows": rows})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default="1e3,1e4",
                    help="comma-separated tier sizes in entries (default 1e3,1e4; the "
                         "issue's: 1e4,1e5)")
    ap.add_argument("--ranges", type=int, default=100,
                    help="ranges per entry (default 100: 10^4 entries hold 10^6 ranges)")
    ap.add_argument("--storage", default="local,nfsemu",
                    help="comma-separated: local, nfsemu (default both)")
    ap.add_argument("--meta-latency-ms", type=float, default=1.0)
    ap.add_argument("--nfsemu-max", type=float, default=1e3,
                    help="largest size run on the emulator (default 1e3; 1e4 takes about 6 "
                         "min at 1 ms, 1e5 about an hour)")
    ap.add_argument("--no-strace", action="store_true", help="no syscall counts on local disk")
    ap.add_argument("--dir", default="/var/tmp", help="where the tiers are built")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--run-timeout", type=float, default=1800.0)
    ap.add_argument("--json", type=Path, default=h.RESULTS / "report.json")
    ap.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_one:
        _measure_one(json.loads(args.measure_one))
        return 0
    sizes = sorted(int(float(x)) for x in args.entries.split(","))
    kinds = args.storage.split(",")
    if bad := [k for k in kinds if k not in ("local", "nfsemu")]:
        ap.error(f"unknown storage: {', '.join(bad)}")
    source_at_start = h.source_state()
    h.compile_htpdata()
    h.exit_on_sigterm()
    deadline = h.Deadline(args.max_seconds)
    rows: list[dict[str, Any]] = []
    stopped = None
    try:
        for n in sizes:
            rows += run_size(n, args, kinds, deadline)
    except h.OutOfTime as exc:
        stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
        print(stopped)
    meta = h.run_meta(source_at_start, sizes=sizes, ranges_per_entry=args.ranges,
                      range_bytes=RANGE_BYTES, storages=kinds,
                      meta_latency_ms=args.meta_latency_ms, stopped=stopped)
    report(rows, meta, args.json)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
