"""Shared-tier operations per read (issue 13): files and metadata operations, counted, not timed.

uproot reads 20 branches of the NanoAOD-like file (``make_inputs.py``) through htpdata with only
the shared tier configured (``HTPDATA_CACHE_SHARED_DIR``, ``HTPDATA_CACHE_LOCAL_DIR=off``), over
the WAN emulator (10 ms each way), on two storages: a folder on local disk, and the
network-filesystem emulator (``htpdata.testing.nfsemu``: 1 ms per metadata request, two nodes
over one folder). For each storage and road (``htpdata://`` through fsspec, ``htpdata.open``):

- a cold read (new process, empty tier) and a warm read in a new process (on the emulator: on
  the *other* node, whose kernel has cached nothing of the tier), each under ``strace -f``
  (``htpdata.testing.syscount``): metadata calls under the tier by kind, files created that last
  and files created then removed; on the emulator also the requests its server saw;
- a waiter: a process reading the file while another fetches it (the fetch slowed by a WAN rate
  cap so the wait lasts seconds): its metadata calls per second, from a time-windowed trace, and
  on the emulator the requests per second its node's server saw;
- optionally (``--timing-repeat N``) cold and warm reads without strace, timed, with a plain
  local-file read and uproot straight over root:// as peers (ratios only; times are noise on a
  shared 2-core machine).

Counts do not depend on the machine's load; times do. Prints the tables and issue 13's targets
(not asserted), writes ``benchmarks/results/tier.json``.

    .venv/bin/python benchmarks/bench_tier.py                  # both storages, both roads
    .venv/bin/python benchmarks/bench_tier.py --quick          # fsspec road only, no timing

The functions here (``traced_read``, ``waiter``, ``Storage``) are meant to be reused as the
benchmark grows (eviction passes, concurrent readers, the local tier in front).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_read import BRANCHES, FSSPEC_URL, LFN, NAME, catalog_text, start_origin  # noqa: E402
from htpdata.testing.nfsemu import NfsEmulator, OpCounts  # noqa: E402
from htpdata.testing.syscount import (  # noqa: E402
    parse_trace,
    snapshot,
    strace_argv,
    strace_available,
)
from make_inputs import build  # noqa: E402
from wan import WanProxy  # noqa: E402

RESULTS = h.RESULTS
ROADS: dict[str, tuple[str, dict[str, Any]]] = {
    "fsspec": ('uproot.open("htpdata://...")', {"how": "uproot", "target": FSSPEC_URL}),
    "open": ("uproot.open(htpdata.open(name))", {"how": "htpdata-open", "target": NAME}),
}
# Issue 13's figures (printed, not asserted)
COLD_OPS, COLD_LASTING, COLD_TRANSIENT, WARM_OPS, WAITER_OPS_PER_S = 60, 8, 8, 12, 20


# -- storages ------------------------------------------------------------------------------
@dataclass
class Storage:
    """Where shared tiers go: a local folder, or the emulator's two nodes over one folder.

    :meth:`tier` gives a new tier's path as node ``node`` sees it; :meth:`files` counts what a
    tier holds, looking at the backing folder (no emulator request); :meth:`counters` and
    :meth:`reset` are the emulator's (empty for local disk).
    """

    name: str
    backing: Path
    emu: NfsEmulator | None = None

    def path(self, tier: str, node: int = 0) -> Path:
        return (self.emu.mounts[node] if self.emu is not None else self.backing) / tier

    def tier(self, tier: str) -> str:
        """A new tier with no entry, set up as its owner sets a tier up once (on the backing
        folder: nothing is counted), so a cold read is a file's first read, not the tier's."""
        from htpdata.cache import DiskTier

        made = DiskTier("shared", self.backing / tier, 0)
        made.ensure()
        made.close()
        return tier

    def files(self, tier: str) -> int:
        return sum(len(files) for _, _, files in os.walk(self.backing / tier))

    def counters(self, node: int | None = None) -> OpCounts:
        return self.emu.counters(node) if self.emu is not None else OpCounts()

    def reset(self) -> None:
        if self.emu is not None:
            self.emu.reset()


@contextlib.contextmanager
def storages(work: Path, which: list[str], meta_latency_ms: float) -> Iterator[list[Storage]]:
    out = []
    with ExitStack() as stack:
        for name in which:
            backing = work / name
            backing.mkdir()
            if name == "nfsemu":
                emu = stack.enter_context(NfsEmulator(backing, mounts=2,
                                                      meta_latency_ms=meta_latency_ms))
                out.append(Storage(f"nfsemu {meta_latency_ms:g} ms", backing, emu))
            else:
                out.append(Storage("local disk", backing))
        yield out


def tier_env(base: dict[str, str], tier: Path) -> dict[str, str]:
    """Only the shared tier: no local tier (the memory tier is per process anyway)."""
    return {**base, "HTPDATA_CACHE_SHARED_DIR": str(tier), "HTPDATA_CACHE_LOCAL_DIR": "off"}


# -- one traced read -----------------------------------------------------------------------
def traced_read(b: h.Bench, storage: Storage, tier: str, node: int, spec: dict[str, Any],
                label: str) -> dict[str, Any]:
    """One read in a new process under strace on ``node``: syscalls, server requests, files."""
    folder = storage.path(tier, node)
    trace = b.work / f"trace-{label.replace(' ', '_').replace('/', '_')}"
    cmd = h.child("tier_reader.py", {**spec, "branches": BRANCHES})
    existing = snapshot([folder])
    storage.reset()
    timeout = b.deadline.timeout(b.run_timeout, label)
    try:
        ran = h.run(strace_argv(cmd, trace), tier_env(b.env, folder), timeout)
    except subprocess.TimeoutExpired:
        return {"label": label, "error": f"timed out after {timeout:.0f} s"}
    ops = storage.counters()
    with open(trace, errors="surrogateescape") as f:
        calls = parse_trace(f, [folder], existing)
    trace.unlink()
    answer = ran.last_json() if ran.rc == 0 else None
    row: dict[str, Any] = {"label": label, "storage": storage.name, "node": node,
                           "syscalls": calls.to_json(), "server": ops.to_json(),
                           "tier_files": storage.files(tier), **(answer or {})}
    if answer is None:
        row["error"] = f"exit {ran.rc}: {h.tail(ran.err or ran.out)}"
    print(f"  {label:<40} " + (f"FAILED: {row['error']}" if answer is None else
          f"strace {calls.summary()}" + (f"; server {ops.summary()}" if storage.emu else "")),
          flush=True)
    return row


def cold_and_warm(b: h.Bench, storage: Storage, road: str) -> list[dict[str, Any]]:
    """A cold read on node 0, then a warm read in a new process on the other node."""
    _, spec = ROADS[road]
    tier = storage.tier(f"tier-{road}")
    cold = traced_read(b, storage, tier, 0, spec, f"{storage.name} {road} cold")
    warm_node = 1 if storage.emu is not None else 0
    warm = traced_read(b, storage, tier, warm_node, spec,
                       f"{storage.name} {road} warm" + (" (other node)" if warm_node else ""))
    cold["phase"], warm["phase"], cold["road"], warm["road"] = "cold", "warm", road, road
    return [cold, warm]


# -- a waiter ------------------------------------------------------------------------------
def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def waiter(b: h.Bench, storage: Storage, capped_env: dict[str, str], wan: WanProxy,
           road: str = "fsspec", settle: float = 0.5, after_bytes: int = 3_000_000
           ) -> dict[str, Any]:
    """A reader waiting for another's fetch: its metadata calls and server requests per second.

    The fetcher reads on node 0 through a rate-capped WAN; once ``after_bytes`` have come down
    (it has claimed what it fetches), the waiter (already imported, under ``strace -ttt``)
    starts on node 1 (the same folder on local disk). The window runs from ``settle`` seconds
    after the waiter started to the fetcher's end. A waiter that finds ranges nobody claimed
    fetches them itself: ``waiter_created`` (files it made) shows it.
    """
    _, spec = ROADS[road]
    tier = storage.tier(f"tier-waiter-{road}")
    label = f"{storage.name} waiter ({road})"
    trace = b.work / f"trace-waiter-{storage.name.replace(' ', '_')}"
    node = 1 if storage.emu is not None else 0
    wfolder, ffolder = storage.path(tier, node), storage.path(tier, 0)
    child = h.child("tier_reader.py", {**spec, "branches": BRANCHES, "wait": True})
    timeout = b.deadline.timeout(b.run_timeout, label)
    deadline = time.monotonic() + timeout
    procs: list[subprocess.Popen[str]] = []
    row: dict[str, Any] = {"label": label, "storage": storage.name, "road": road}
    try:
        w = subprocess.Popen(strace_argv(child, trace, timestamps=True),
                             env=tier_env(capped_env, wfolder), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        procs.append(w)
        if "ready" not in _line(w, timeout):
            return {**row, "error": "the waiter did not get ready"}
        existing = snapshot([wfolder])
        before = wan.bytes_down
        f = subprocess.Popen(h.child("tier_reader.py", {**spec, "branches": BRANCHES}),
                             env=tier_env(capped_env, ffolder), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        procs.append(f)
        while wan.bytes_down - before < after_bytes and f.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
        time.sleep(settle)
        t1, c1 = time.time(), storage.counters(node)
        fetched = json.loads(_line(f, max(1.0, deadline - time.monotonic())) or "{}")
        t2, c2 = time.time(), storage.counters(node)
        waited = json.loads(_line(w, max(1.0, deadline - time.monotonic())) or "{}")
        for p in procs:
            p.wait(max(1.0, deadline - time.monotonic()))
        if not fetched or not waited:
            return {**row, "error": "the fetcher or the waiter did not finish"}
        end = min(float(fetched["end"]), float(waited["end"]))
        window = end - t1
        with open(trace, errors="surrogateescape") as fh:
            calls = parse_trace(fh, [wfolder], existing, since=t1, until=end)
        ops = c2 - c1
        row.update(window_s=window, fetcher_s=fetched["seconds"], waiter_s=waited["seconds"],
                   syscalls=calls.to_json(), server=ops.to_json(),
                   syscalls_per_s=calls.metadata / window if window > 0 else None,
                   server_per_s=ops.meta / (t2 - t1) if storage.emu and t2 > t1 else None,
                   waiter_created=calls.files_lasting + calls.files_transient,
                   same_data=fetched.get("digest") == waited.get("digest"),
                   entries=waited.get("entries"), digest=waited.get("digest"))
        if window < 0.5:
            row["error"] = (f"the fetch ended {window:.2f} s into the window: lower "
                            "--waiter-rate-mbps")
        print(f"  {label:<40} window {window:5.2f} s: {h.fmt(row['syscalls_per_s'], '.0f')} "
              f"metadata calls/s ({calls.summary()})"
              + (f"; server {h.fmt(row['server_per_s'], '.0f')} requests/s" if storage.emu
                 else ""), flush=True)
        return row
    finally:
        for p in procs:  # ours, by PID
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, 9)
                p.wait(10)
            for s in (p.stdin, p.stdout):
                if s is not None:
                    s.close()
        with contextlib.suppress(OSError):
            trace.unlink()


# -- timing (optional) ---------------------------------------------------------------------
def timed(b: h.Bench, storage: Storage, road: str, rep: int) -> None:
    """Cold then warm (new process, same node) without strace; emulator requests recorded."""
    _, spec = ROADS[road]
    tier = storage.tier(f"tier-timed-{road}-{rep}")
    env = tier_env(b.env, storage.path(tier))
    for phase in ("cold", "warm"):
        storage.reset()
        r = b.measure(f"{storage.name} {road} {phase}", ROADS[road][0],
                      h.child("tier_reader.py", {**spec, "branches": BRANCHES}), env)
        if storage.emu is not None:
            r["server"] = storage.counters().to_json()


# -- report --------------------------------------------------------------------------------
def _kinds(c: dict[str, Any]) -> str:
    k = c["kinds"]
    return " ".join(f"{short}{k.get(kind, 0)}" for short, kind in (
        ("c", "open_create"), ("o", "open"), ("s", "stat"), ("l", "listdir"), ("r", "rename"),
        ("u", "unlink"), ("m", "mkdir")))


def report(rows: list[dict[str, Any]], waiters: list[dict[str, Any]], b: h.Bench,
           meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    t = Table(title=f"Shared tier only: uproot reads {len(BRANCHES)} branches of a "
              f"{meta['input']['size'] / 1e6:.0f} MB file, each read a new process under "
              "strace -f (counts, not times)")
    for col in ("storage", "road", "phase", "metadata calls", "c o s l r u m", "lasting",
                "transient", "files in tier", "server requests", "lookup/getattr/open"):
        t.add_column(col, justify="left" if col in ("storage", "road", "phase",
                                                    "c o s l r u m") else "right")
    for r in rows:
        if r.get("error"):
            t.add_row(r.get("storage", ""), r.get("road", ""), r.get("phase", ""),
                      f"[red]{r['error'][:60]}[/red]")
            continue
        s, srv = r["syscalls"], r["server"]
        ops = srv["ops"]
        t.add_row(r["storage"], r["road"], r["phase"] + (" (node 1)" if r["node"] else ""),
                  str(s["metadata"]), _kinds(s), str(s["files_lasting"]),
                  str(s["files_transient"]), str(r["tier_files"]),
                  str(srv["meta"]) if srv["ops"] else "-",
                  f"{ops.get('lookup', 0)}/{ops.get('getattr', 0)}/{ops.get('open', 0)}"
                  if srv["ops"] else "-")
    console.print(t)
    console.print("  c o s l r u m: opens with O_CREAT, other opens, stat family, getdents, "
                  "rename, unlink, mkdir (strace); server requests: what the emulator's "
                  "server answered (after the node's kernel caches)")
    w = Table(title="A waiter (reads while another process fetches the same file)")
    for col in ("storage", "window s", "metadata calls/s", "server requests/s", "calls",
                "files it made", "same data"):
        w.add_column(col, justify="left" if col == "storage" else "right")
    for r in waiters:
        if r.get("error") and "syscalls" not in r:
            w.add_row(r["storage"], f"[red]{r['error'][:70]}[/red]")
            continue
        w.add_row(r["storage"], h.fmt(r["window_s"]), h.fmt(r["syscalls_per_s"], ".0f"),
                  h.fmt(r["server_per_s"], ".0f"), _kinds(r["syscalls"]),
                  str(r["waiter_created"]), str(r["same_data"]))
    console.print(w)
    console.print("  files it made: a waiter that finds ranges nobody has claimed fetches them "
                  "itself (claims, pieces); a pure waiter makes about 2 (its journal)")
    if b.cases:
        local, direct = b.cases.get("local file"), b.cases.get("uproot direct root://")
        tt = Table(title="Times without strace (noise on a shared machine: ratios only)")
        for col in ("case", "s", "/ local", "/ direct", "server requests"):
            tt.add_column(col, justify="left" if col == "case" else "right")
        for case in b.cases.values():
            srv = [r["server"]["meta"] for r in case.ok() if "server" in r]
            tt.add_row(case.label, h.fmt(case.median, ".3f"),
                       h.fmt(h.ratio(case.median, local.median if local else None)),
                       h.fmt(h.ratio(case.median, direct.median if direct else None)),
                       str(srv[0]) if srv else "-")
        console.print(tt)
    checks = []
    for r in rows:
        if r.get("error"):
            continue
        s, name = r["syscalls"], f"{r['storage']} {r['road']} {r['phase']}"
        if r["phase"] == "cold":
            checks += [h.target(f"{name}: metadata calls <= {COLD_OPS}", s["metadata"], COLD_OPS),
                       h.target(f"{name}: lasting files <= {COLD_LASTING}", s["files_lasting"],
                                COLD_LASTING),
                       h.target(f"{name}: transient files <= {COLD_TRANSIENT}",
                                s["files_transient"], COLD_TRANSIENT)]
        else:
            checks.append(h.target(f"{name}: metadata calls <= {WARM_OPS}", s["metadata"],
                                   WARM_OPS))
    for r in waiters:
        checks.append(h.target(f"{r['storage']} waiter: metadata calls/s <= {WAITER_OPS_PER_S}",
                               r.get("syscalls_per_s"), WAITER_OPS_PER_S))
    h.print_targets("Issue 13's targets (strace counts; printed, not asserted):", checks,
                    console, width=64)
    answers = [(r.get("label", case), r) for case, r in
               [("", r) for r in rows + waiters] +
               [(c.label, r) for c in b.cases.values() for r in c.ok()]]
    seen = {(r.get("entries"), r.get("digest")) for _, r in answers if r.get("digest")}
    wrong = [] if len(seen) <= 1 else [f"{label}: {r.get('entries')} entries, digest "
                                       f"{r.get('digest')}" for label, r in answers]
    for line in wrong:
        console.print(f"[red]DIFFERENT DATA[/red] {line}")
    if any(r.get("same_data") is False for r in waiters):
        wrong.append("a waiter read other data than its fetcher")
    h.write_results(path, {**meta, "reads": rows, "waiters": waiters, "targets": checks,
                           "timing": {c.label: c.runs for c in b.cases.values()},
                           "different_data": wrong})


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the fsspec road only, no timing")
    ap.add_argument("--storage", default="local,nfsemu",
                    help="comma-separated: local, nfsemu (default both)")
    ap.add_argument("--roads", default=None, help="comma-separated: fsspec, open (default both)")
    ap.add_argument("--size-mb", type=int, default=128, help="input size (default 128 MB)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay")
    ap.add_argument("--meta-latency-ms", type=float, default=1.0,
                    help="the emulator's latency per metadata request (default 1)")
    ap.add_argument("--waiter-rate-mbps", type=float, default=16.0,
                    help="WAN rate cap while the waiter waits (default 16 Mb/s); 0: no waiter")
    ap.add_argument("--waiter-after-mb", type=float, default=3.0,
                    help="start the waiter once this much of the fetch has come down (3)")
    ap.add_argument("--timing-repeat", type=int, default=0,
                    help="also time cold and warm reads without strace, N times (default 0)")
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("--run-timeout", type=float, default=300.0, help="bound for one read")
    ap.add_argument("--json", type=Path, default=RESULTS / "tier.json")
    args = ap.parse_args(argv)
    roads = (args.roads or ("fsspec" if args.quick else "fsspec,open")).split(",")
    which = args.storage.split(",")
    if unknown := [r for r in roads if r not in ROADS] + [
            s for s in which if s not in ("local", "nfsemu")]:
        ap.error(f"unknown road or storage: {', '.join(unknown)}")
    if (reason := strace_available()) is not None:
        raise SystemExit(f"bench_tier: {reason}")
    source_at_start = h.source_state()
    h.compile_htpdata()
    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()

    info = build(args.size_mb)
    input_file = Path(info["path"])
    rows: list[dict[str, Any]] = []
    waiters: list[dict[str, Any]] = []
    with ExitStack() as stack:
        work = h.workdir(stack, "tier", Path(tempfile.gettempdir()))
        work.chmod(0o755)
        origin = start_origin(stack, input_file)
        wan = stack.enter_context(WanProxy("localhost", origin.port, delay_ms=args.delay_ms))
        catalogs = work / "catalogs"
        catalogs.mkdir()
        (catalogs / "bench.toml").write_text(catalog_text(wan.port, info["size"],
                                                          info["adler32"]))
        b = h.Bench(h.isolated_env(work, HTPDATA_CATALOGS_PATH=str(catalogs)), work, deadline,
                    args.run_timeout, wan)
        print(f"input {input_file} ({info['size'] / 1e6:.1f} MB); origin "
              f"root://localhost:{origin.port}; WAN 127.0.0.1:{wan.port} ({args.delay_ms} ms "
              f"each way)", flush=True)
        stopped = None
        try:
            with storages(work, which, args.meta_latency_ms) as stores:
                for storage in stores:
                    for road in roads:
                        rows += cold_and_warm(b, storage, road)
                if args.waiter_rate_mbps > 0:
                    rate = args.waiter_rate_mbps * 1e6 / 8
                    capped = stack.enter_context(WanProxy("localhost", origin.port,
                                                          delay_ms=args.delay_ms, rate=rate))
                    capped_cat = work / "catalogs-capped"
                    capped_cat.mkdir()
                    (capped_cat / "bench.toml").write_text(
                        catalog_text(capped.port, info["size"], info["adler32"]))
                    env = {**b.env, "HTPDATA_CATALOGS_PATH": str(capped_cat)}
                    for storage in stores:
                        waiters.append(waiter(b, storage, env, capped, roads[0],
                                              after_bytes=int(args.waiter_after_mb * 1e6)))
                if args.timing_repeat and not args.quick:
                    wan_root = f"root://localhost:{wan.port}/{LFN}"
                    for rep in range(args.timing_repeat):
                        b.measure("local file", "uproot.open(path)", h.child(
                            "tier_reader.py", {"how": "uproot", "target": str(input_file),
                                               "branches": BRANCHES}))
                        b.measure("uproot direct root://", "uproot.open(root://)", h.child(
                            "tier_reader.py", {"how": "uproot", "target": wan_root,
                                               "branches": BRANCHES}))
                        for storage in stores:
                            for road in roads:
                                timed(b, storage, road, rep)
        except h.OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        meta = h.run_meta(source_at_start, input=info, branches=BRANCHES,
                          delay_ms=args.delay_ms, meta_latency_ms=args.meta_latency_ms,
                          waiter_rate_mbps=args.waiter_rate_mbps, roads=roads, storages=which,
                          stopped=stopped)
        report(rows, waiters, b, meta, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
