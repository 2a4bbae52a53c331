"""Shared-tier operations per read (issue 13): files and metadata operations, counted, and
times against peers of the same run.

uproot reads 20 branches of the NanoAOD-like file (``make_inputs.py``) through htpdata with only
the shared tier configured (``HTPDATA_CACHE_SHARED_DIR``, ``HTPDATA_CACHE_LOCAL_DIR=off``), over
the WAN emulator (10 ms each way), on two storages: a folder on local disk, and the
network-filesystem emulator (``htpdata.testing.nfsemu``: 1 ms per metadata request, two nodes
over one folder). Roads: ``htpdata://`` through fsspec and ``htpdata.open``, each by catalog
name and by a bare root:// URL (``fsspec-url``, ``open-url``: no catalog in the reader's
environment). For each storage and road:

- a cold read (new process, empty tier) and a warm read in a new process (on the emulator: on
  the *other* node, whose kernel has cached nothing of the tier), each under ``strace -f``
  (``htpdata.testing.syscount``): metadata calls under the tier by kind, files created that last
  and files created then removed, the bytes and connections through the WAN; on the emulator
  also the requests its server saw;
- with a node-local tier in front (on local disk): a cold read filling both, then a warm read
  in a new process served by the local tier, whose calls on the *shared* tier are counted;
- a waiter: a process reading the file while another fetches it (the fetch slowed by a WAN rate
  cap so the wait lasts seconds): its metadata calls per second, from a time-windowed trace, and
  on the emulator the requests per second its node's server saw;
- ``--procs`` (16) cold readers at once, each under strace (``bench_concurrent.run_group``; on
  the emulator half on each node), against one reader alone: calls in all and WAN bytes;
- (``--timing-repeat N``, default 1) cold and warm reads without strace, timed, with a plain
  local-file read, uproot straight over root:// and XCache (cold, warm) in front of the same
  WAN as peers, XCache's cache on local disk and on each emulator's first node ("XCache on
  nfsemu 1 ms": the same metadata latency as htpdata's tier there) (ratios only; times are
  noise on a shared 2-core machine). Each htpdata read also reports the time its threads
  spent in the disk tier's own calls ("in the tier ms", ``tier_reader.py``'s ``tier_clock``),
  a figure much less noisy than the whole read's, which is mostly decoding; on the emulator
  also the CPU time its server processes used meanwhile ("server CPU ms": the emulator's own
  cost, which on two cores competes with the reader).

Counts do not depend on the machine's load; times do. Prints the tables and issue 13's targets
(not asserted), writes ``benchmarks/results/tier.json``.

    .venv/bin/python benchmarks/bench_tier.py                  # both storages, all roads, times
    .venv/bin/python benchmarks/bench_tier.py --quick          # fsspec roads only, no timing

The functions here (``traced_read``, ``waiter``, ``many_readers``, ``Storage``) are meant to be
reused as the benchmark grows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
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
# Issue 13's figures (printed, not asserted)
COLD_OPS, COLD_LASTING, COLD_TRANSIENT, WARM_OPS, WAITER_OPS_PER_S = 60, 8, 8, 12, 20
LOCAL_HIT_OPS = 2  # a warm read served by the local tier: operations on the shared tier
MANY_OPS, MANY_WAN = 3000, 1.05  # N cold readers at once: operations in all, x one's WAN bytes
WARM_LOCAL, COLD_DIRECT = 1.05, 1.0  # warm <= x local file, cold <= x direct root:// (disk)
WARM_LOCAL_EMU, COLD_DIRECT_EMU = 1.1, 1.05  # the same on the 1 ms emulator
LOCAL_FILE, DIRECT = "local file", "uproot direct root://"


@dataclass(frozen=True)
class Road:
    """How a reader names the file: through fsspec (``htpdata://``) or ``htpdata.open``, by
    its catalog name or by a bare root:// URL (no catalog in the reader's environment)."""

    key: str
    what: str
    spec: dict[str, Any]
    catalog: bool = True


def roads_for(wan_root: str) -> dict[str, Road]:
    return {r.key: r for r in (
        Road("fsspec", 'uproot.open("htpdata://bench/...")',
             {"how": "uproot", "target": FSSPEC_URL}),
        Road("open", "uproot.open(htpdata.open(name))", {"how": "htpdata-open", "target": NAME}),
        Road("fsspec-url", 'uproot.open("htpdata://root://...")',
             {"how": "uproot", "target": f"htpdata://{wan_root}"}, catalog=False),
        Road("open-url", "uproot.open(htpdata.open(root://...))",
             {"how": "htpdata-open", "target": wan_root}, catalog=False),
    )}


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


def round_trip_ms(storage: Storage, n: int = 50) -> dict[str, float]:
    """What one metadata request costs a client of the emulator, as the client sees it: the
    median time of a ``stat`` of a name that is not there (a new name each time, so each is
    one lookup request), at the configured latency and at none. The difference from the
    latency is the emulator's own cost per request (FUSE and its Python server)."""
    assert storage.emu is not None
    mount = storage.emu.mounts[0]

    def median_stat() -> float:
        times = []
        for _ in range(n):
            name = mount / f"absent-{os.urandom(6).hex()}"
            t0 = time.perf_counter()
            with contextlib.suppress(FileNotFoundError):
                os.stat(name)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    at = median_stat()
    latency = storage.emu.meta_latency_ms
    storage.emu.set_latency(meta_ms=0)
    try:
        bare = median_stat()
    finally:
        storage.emu.set_latency(meta_ms=latency)
    storage.reset()
    return {"latency_ms": latency, "round_trip_ms": round(at, 3),
            "round_trip_at_0_ms": round(bare, 3)}


@contextlib.contextmanager
def storages(work: Path, which: list[str], meta_latency_ms: float) -> Iterator[list[Storage]]:
    out = []
    with ExitStack() as stack:
        for name in which:
            backing = work / name
            backing.mkdir()
            if name in ("nfsemu", "nfsemu-nfs"):
                nfs = name == "nfsemu-nfs"  # no sleep where an NFS client sends nothing
                emu = stack.enter_context(NfsEmulator(backing, mounts=2,
                                                      meta_latency_ms=meta_latency_ms,
                                                      nfs_round_trips=nfs))
                out.append(Storage(f"nfsemu {meta_latency_ms:g} ms" + (" nfs-trips" if nfs
                                                                       else ""), backing, emu))
            else:
                out.append(Storage("local disk", backing))
        yield out


def tier_env(base: dict[str, str], tier: Path, road: Road | None = None,
             local: Path | None = None) -> dict[str, str]:
    """Only the shared tier (and ``local`` as the local tier, if given; the memory tier is per
    process anyway); no catalog for a road of bare URLs."""
    env = {**base, "HTPDATA_CACHE_SHARED_DIR": str(tier),
           "HTPDATA_CACHE_LOCAL_DIR": str(local) if local is not None else "off"}
    if road is not None and not road.catalog:
        env.pop("HTPDATA_CATALOGS_PATH", None)
    return env


# -- one traced read -----------------------------------------------------------------------
def traced_read(b: h.Bench, storage: Storage, tier: str, node: int, road: Road,
                label: str, local: Path | None = None) -> dict[str, Any]:
    """One read in a new process under strace on ``node``: syscalls (under the shared tier
    only), server requests, files."""
    folder = storage.path(tier, node)
    trace = b.work / f"trace-{label.replace(' ', '_').replace('/', '_')}"
    cmd = h.child("tier_reader.py", {**road.spec, "branches": BRANCHES})
    existing = snapshot([folder])
    storage.reset()
    timeout = b.deadline.timeout(b.run_timeout, label)
    before = b.wan.counters if b.wan is not None else None
    try:
        ran = h.run(strace_argv(cmd, trace), tier_env(b.env, folder, road, local), timeout)
    except subprocess.TimeoutExpired:
        return {"label": label, "error": f"timed out after {timeout:.0f} s"}
    ops = storage.counters()
    wan: dict[str, int] = {}
    if b.wan is not None and before is not None:
        b.wan.wait_idle(quiet=0.5, timeout=30)
        used = b.wan.counters - before
        wan = {"wan_down": used.down, "wan_up": used.up, "wan_connections": used.connections}
    with open(trace, errors="surrogateescape") as f:
        calls = parse_trace(f, [folder], existing)
    trace.unlink()
    answer = ran.last_json() if ran.rc == 0 else None
    row: dict[str, Any] = {"label": label, "storage": storage.name, "node": node,
                           "syscalls": calls.to_json(), "server": ops.to_json(),
                           "tier_files": storage.files(tier), **wan, **(answer or {})}
    if answer is None:
        row["error"] = f"exit {ran.rc}: {h.tail(ran.err or ran.out)}"
    print(f"  {label:<40} " + (f"FAILED: {row['error']}" if answer is None else
          f"strace {calls.summary()}" + (f"; server {ops.summary()}" if storage.emu else "")
          + (f"; WAN {wan['wan_connections']} conn, {wan['wan_down'] / 1e6:.2f} MB down"
             if wan else "")),
          flush=True)
    return row


def cold_and_warm(b: h.Bench, storage: Storage, road: Road) -> list[dict[str, Any]]:
    """A cold read on node 0, then a warm read in a new process on the other node."""
    tier = storage.tier(f"tier-{road.key}")
    cold = traced_read(b, storage, tier, 0, road, f"{storage.name} {road.key} cold")
    warm_node = 1 if storage.emu is not None else 0
    warm = traced_read(b, storage, tier, warm_node, road, f"{storage.name} {road.key} warm"
                       + (" (other node)" if warm_node else ""))
    cold["phase"], warm["phase"], cold["road"], warm["road"] = "cold", "warm", road.key, road.key
    return [cold, warm]


def local_hit(b: h.Bench, storage: Storage, road: Road) -> list[dict[str, Any]]:
    """A node-local tier in front of the shared one: a cold read fills both, then a warm read
    in a new process on the same node is served by the local tier; what each does on the
    shared tier is counted (the local tier is on local disk, as on a worker node)."""
    tier = storage.tier(f"tier-local-{road.key}")
    local = b.work / f"local-{storage.name.replace(' ', '_')}-{road.key}"
    rows = [traced_read(b, storage, tier, 0, road, f"{storage.name} {road.key} cold, +local",
                        local),
            traced_read(b, storage, tier, 0, road,
                        f"{storage.name} {road.key} warm, local hit", local)]
    for r, phase in zip(rows, ("cold +local", "local hit"), strict=True):
        r["phase"], r["road"] = phase, road.key
    return rows


def many_readers(b: h.Bench, storage: Storage, wan: WanProxy, n: int) -> dict[str, Any]:
    """``n`` cold readers of one file at once (on the emulator: half on each node), each under
    strace, against one reader alone: metadata operations in all and WAN bytes."""
    from bench_concurrent import run_group

    out: dict[str, Any] = {"storage": storage.name, "procs": n}
    for label, count in (("one", 1), ("many", n)):
        tier = storage.tier(f"tier-many-{label}")
        nodes = 2 if storage.emu is not None else 1
        traces = [b.work / f"trace-many-{label}-{i}" for i in range(count)]
        existing = [snapshot([storage.path(tier, i % nodes)]) for i in range(count)]
        storage.reset()
        def seen_as(i: int, tier: str = tier, nodes: int = nodes) -> Path:
            return storage.path(tier, i % nodes)

        def wrap(cmd: list[str], i: int, traces: list[Path] = traces) -> list[str]:
            return strace_argv(cmd, traces[i])

        g = run_group(f"{storage.name}: {count} cold reader{'s' if count > 1 else ''}", count,
                      wan, b.env, b.work / f"many-{storage.name.replace(' ', '_')}-{label}",
                      "off", b.deadline.timeout(b.run_timeout, f"{count} readers"),
                      shared=storage.backing / tier, seen_as=seen_as, wrap=wrap)
        ops = storage.counters()
        calls = 0
        kinds: dict[str, int] = {}
        for i, trace in enumerate(traces):
            with contextlib.suppress(OSError), open(trace, errors="surrogateescape") as f:
                c = parse_trace(f, [storage.path(tier, i % nodes)], existing[i])
                calls += c.metadata
                for k, v in c.kinds.items():
                    kinds[k] = kinds.get(k, 0) + v
            with contextlib.suppress(OSError):
                trace.unlink()
        out[label] = {"wan_down": g.wan_down, "wan_up": g.wan_up, "syscalls": calls,
                      "kinds": kinds, "server": ops.to_json(), "wall_s": g.wall_s,
                      "reads": len(g.reads), "errors": g.errors,
                      "fetchers": sum(1 for v in g.upstream_by_pid.values() if v),
                      "digests": sorted({r["digest"] for r in g.reads})}
    one, many = out["one"], out["many"]
    out["wan_ratio"] = h.ratio(many["wan_down"], one["wan_down"])
    out["same_data"] = len(set(one["digests"]) | set(many["digests"])) == 1 and \
        many["reads"] == n and not many["errors"]
    print(f"  {storage.name} {n} cold readers: {many['syscalls']} metadata calls in all "
          f"(one reader {one['syscalls']}), WAN down x{h.fmt(out['wan_ratio'], '.3f')} one "
          f"reader's, {many['fetchers']} fetched"
          + (f"; server {ops.summary()}" if storage.emu else ""), flush=True)
    return out


# -- a waiter ------------------------------------------------------------------------------
def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def waiter(b: h.Bench, storage: Storage, capped_env: dict[str, str], wan: WanProxy,
           road: Road, settle: float = 0.5, after_bytes: int = 3_000_000
           ) -> dict[str, Any]:
    """A reader waiting for another's fetch: its metadata calls and server requests per second.

    The fetcher reads on node 0 through a rate-capped WAN; once ``after_bytes`` have come down
    (it has claimed what it fetches), the waiter (already imported, under ``strace -ttt``)
    starts on node 1 (the same folder on local disk). The window runs from ``settle`` seconds
    after the waiter started to the fetcher's end. A waiter that finds ranges nobody claimed
    fetches them itself: ``waiter_created`` (files it made) shows it.
    """
    spec = road.spec
    tier = storage.tier(f"tier-waiter-{road.key}")
    label = f"{storage.name} waiter ({road.key})"
    trace = b.work / f"trace-waiter-{storage.name.replace(' ', '_')}"
    node = 1 if storage.emu is not None else 0
    wfolder, ffolder = storage.path(tier, node), storage.path(tier, 0)
    child = h.child("tier_reader.py", {**spec, "branches": BRANCHES, "wait": True})
    timeout = b.deadline.timeout(b.run_timeout, label)
    deadline = time.monotonic() + timeout
    procs: list[subprocess.Popen[str]] = []
    row: dict[str, Any] = {"label": label, "storage": storage.name, "road": road.key}
    try:
        w = subprocess.Popen(strace_argv(child, trace, timestamps=True),
                             env=tier_env(capped_env, wfolder, road), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        procs.append(w)
        if "ready" not in _line(w, timeout):
            return {**row, "error": "the waiter did not get ready"}
        existing = snapshot([wfolder])
        before = wan.bytes_down
        f = subprocess.Popen(h.child("tier_reader.py", {**spec, "branches": BRANCHES}),
                             env=tier_env(capped_env, ffolder, road), stdout=subprocess.PIPE,
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
def measured_on(storage: Storage | None, b: h.Bench, label: str, what: str,
                cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``b.measure`` one run; on an emulator also the requests its servers answered and the
    CPU time they used meanwhile (``server``, ``server_cpu_s``)."""
    emu = storage.emu if storage is not None else None
    if emu is None:
        return b.measure(label, what, cmd, env)
    emu.reset()
    cpu = emu.cpu_seconds()
    r = b.measure(label, what, cmd, env)
    r["server"] = emu.counters().to_json()
    r["server_cpu_s"] = emu.cpu_seconds() - cpu
    return r


def timed(b: h.Bench, storage: Storage, road: Road, rep: int) -> None:
    """Cold then warm (new process, same node) without strace; emulator requests recorded."""
    tier = storage.tier(f"tier-timed-{road.key}-{rep}")
    env = tier_env(b.env, storage.path(tier), road)
    for phase in ("cold", "warm"):
        measured_on(storage, b, f"{storage.name} {road.key} {phase}", road.what,
                    h.child("tier_reader.py", {**road.spec, "branches": BRANCHES,
                                               "tier_clock": True}), env)


def peers(b: h.Bench, input_file: Path, wan: WanProxy, stores: Sequence[Storage] = (),
          rep: int = 0) -> None:
    """The floors and peers of the times: a local-file read, uproot straight over root://,
    XCache (in front of the same WAN) cold and warm, its cache on local disk and, for each
    emulator in ``stores``, on the emulator's first node (the same metadata latency as
    htpdata's tier there; its server's requests recorded)."""
    wan_root = f"root://localhost:{wan.port}/{LFN}"
    for label, target in ((LOCAL_FILE, str(input_file)), (DIRECT, wan_root)):
        b.measure(label, "uproot.open(...)", h.child(
            "tier_reader.py", {"how": "uproot", "target": target, "branches": BRANCHES}))
    places: list[tuple[str, Storage | None]] = [("XCache", None)]
    places += [(f"XCache on {s.name}", s) for s in stores if s.emu is not None]
    for label, storage in places:
        data = storage.path(f"xcache-{rep}") if storage is not None else None
        with h.xcache(wan.port, data=data) as xc:
            spec = {"how": "uproot", "target": f"root://localhost:{xc.port}/{LFN}",
                    "branches": BRANCHES}
            for phase in ("cold", "warm"):
                measured_on(storage, b, f"{label} {phase}", "uproot.open(root://xcache)",
                            h.child("tier_reader.py", spec))


# -- report --------------------------------------------------------------------------------
def _kinds(c: dict[str, Any]) -> str:
    k = c["kinds"]
    return " ".join(f"{short}{k.get(kind, 0)}" for short, kind in (
        ("c", "open_create"), ("o", "open"), ("s", "stat"), ("l", "listdir"), ("r", "rename"),
        ("u", "unlink"), ("m", "mkdir")))


def report(rows: list[dict[str, Any]], waiters: list[dict[str, Any]],
           many: list[dict[str, Any]], b: h.Bench, meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    t = Table(title=f"Shared tier only: uproot reads {len(BRANCHES)} branches of a "
              f"{meta['input']['size'] / 1e6:.0f} MB file, each read a new process under "
              "strace -f (counts, not times)")
    for col in ("storage", "road", "phase", "metadata calls", "c o s l r u m", "lasting",
                "transient", "files in tier", "server requests", "lookup/getattr/open",
                "WAN conn / MB"):
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
                  if srv["ops"] else "-",
                  f"{r['wan_connections']} / {r['wan_down'] / 1e6:.2f}" if "wan_down" in r
                  else "-")
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
                  "itself (claims, packs); a pure waiter makes about 1 (its reader record)")
    if many:
        m = Table(title=f"{many[0]['procs']} cold readers of one file at once, each under "
                  "strace (on the emulator: half on each node), against one reader alone")
        for col in ("storage", "metadata calls, all", "one reader", "server requests, all",
                    "WAN down MB, all", "one reader", "ratio", "fetchers", "wall s",
                    "same data"):
            m.add_column(col, justify="left" if col == "storage" else "right")
        for r in many:
            one, n = r["one"], r["many"]
            m.add_row(r["storage"], str(n["syscalls"]), str(one["syscalls"]),
                      str(n["server"]["meta"]) if n["server"]["ops"] else "-",
                      f"{n['wan_down'] / 1e6:.3f}", f"{one['wan_down'] / 1e6:.3f}",
                      h.fmt(r["wan_ratio"], ".3f"), f"{n['fetchers']}/{r['procs']}",
                      h.fmt(n["wall_s"]), str(r["same_data"]))
        console.print(m)
    checks = []
    if b.cases:
        local, direct = b.cases.get(LOCAL_FILE), b.cases.get(DIRECT)
        lm, dm = (local.median if local else None), (direct.median if direct else None)
        tt = Table(title="Times without strace, one run (noise on a shared machine: ratios "
                   "against the peers of the same run)")
        for col in ("case", "s", "min-max s", "/ local", "/ direct", "WAN MB",
                    "server requests", "server CPU ms", "in the tier ms"):
            tt.add_column(col, justify="left" if col == "case" else "right")
        for case in b.cases.values():
            srv = [r["server"]["meta"] for r in case.ok() if "server" in r]
            wan_mb = [(r.get("wan_down", 0) + r.get("wan_up", 0)) / 1e6 for r in case.ok()]
            in_tier = [r["tier_s"] * 1e3 for r in case.ok() if "tier_s" in r]
            srv_cpu = [r["server_cpu_s"] * 1e3 for r in case.ok() if "server_cpu_s" in r]
            times = case.times
            tt.add_row(case.label, h.fmt(case.median, ".3f"),
                       f"{min(times):.3f}-{max(times):.3f}" if times else "-",
                       h.fmt(h.ratio(case.median, lm)),
                       h.fmt(h.ratio(case.median, dm)), h.fmt(wan_mb[0] if wan_mb else None),
                       str(srv[0]) if srv else "-",
                       h.fmt(statistics.median(srv_cpu), ".0f") if srv_cpu else "-",
                       h.fmt(statistics.median(in_tier), ".1f") if in_tier else "-")
            emu = case.label.startswith("nfsemu")
            if case.label.endswith(" warm") and not case.label.startswith("XCache"):
                bound = WARM_LOCAL_EMU if emu else WARM_LOCAL
                checks.append(h.target(f"{case.label}: x local file <= {bound}",
                                       h.ratio(case.median, lm), bound))
            elif case.label.endswith(" cold") and not case.label.startswith("XCache"):
                bound = COLD_DIRECT_EMU if emu else COLD_DIRECT
                checks.append(h.target(f"{case.label}: x direct root:// <= {bound}",
                                       h.ratio(case.median, dm), bound))
        console.print(tt)
        emulated = sorted({c.label[len("XCache on "):-len(" warm")] for c in b.cases.values()
                           if c.label.startswith("XCache on ") and c.label.endswith(" warm")})
        for where in ["", *emulated]:
            label = f"XCache on {where}" if where else "XCache"
            xw, xc = b.cases.get(f"{label} warm"), b.cases.get(f"{label} cold")
            if xw is None or xc is None:
                continue
            line = (f"  peer: {label} warm {h.fmt(h.ratio(xw.median, lm))} x local file, "
                    f"cold {h.fmt(h.ratio(xc.median, dm))} x direct root://")
            ours_w, ours_c = (b.cases.get(f"{where} {road} {ph}") for road, ph in
                              (("open", "warm"), ("open", "cold")))
            if where and ours_w is not None and ours_c is not None:
                line += (f"; htpdata (open) on the same storage: warm "
                         f"{h.fmt(h.ratio(ours_w.median, xw.median))} x XCache's, cold "
                         f"{h.fmt(h.ratio(ours_c.median, xc.median))} x")
            console.print(line)
        if local is not None and len(local.times) > 1 and lm:
            spread = (max(local.times) - min(local.times)) / lm
            console.print(f"  noise: the local file's {len(local.times)} reads span "
                          f"{spread:.0%} of their median: a time target met or missed by "
                          "less than that is not decided by this run")
    for name, trip in meta.get("round_trips", {}).items():
        console.print(f"  {name}: a metadata request takes its client {trip['round_trip_ms']:.2f}"
                      f" ms (median of 50 lookups; {trip['round_trip_at_0_ms']:.2f} ms at no "
                      "latency: the emulator's own cost per request)")
    for r in rows:
        if r.get("error"):
            continue
        s, name = r["syscalls"], f"{r['storage']} {r['road']} {r['phase']}"
        if r["phase"] == "local hit":
            checks.append(h.target(f"{name}: metadata calls on the shared tier <= "
                                   f"{LOCAL_HIT_OPS}", s["metadata"], LOCAL_HIT_OPS))
        elif r["phase"] == "cold +local":
            continue
        elif r["phase"] == "cold":
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
    for r in many:
        checks += [h.target(f"{r['storage']} {r['procs']} cold readers: metadata calls in all "
                            f"<= {MANY_OPS}", r["many"]["syscalls"], MANY_OPS),
                   h.target(f"{r['storage']} {r['procs']} cold readers: WAN bytes <= {MANY_WAN}"
                            " x one reader's", r["wan_ratio"], MANY_WAN)]
    h.print_targets("Issue 13's targets (printed, not asserted; counts from strace, times "
                    "from this run, noisy under load):", checks,
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
    wrong += [f"{r['storage']}: {r['procs']} readers: not all read the same data"
              for r in many if not r["same_data"]]
    h.write_results(path, {**meta, "reads": rows, "waiters": waiters, "many": many,
                           "targets": checks,
                           "timing": {c.label: c.runs for c in b.cases.values()},
                           "different_data": wrong})


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="the fsspec roads only (catalog name, bare URL), no timing")
    ap.add_argument("--storage", default="local,nfsemu",
                    help="comma-separated: local, nfsemu, nfsemu-nfs (the emulator sleeping "
                         "only where an NFS client sends a request: no opendir, no readdir "
                         "for the end of a listing); default local,nfsemu")
    ap.add_argument("--roads", default=None,
                    help="comma-separated: fsspec, open, fsspec-url, open-url (default all)")
    ap.add_argument("--size-mb", type=int, default=128, help="input size (default 128 MB)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way WAN delay")
    ap.add_argument("--meta-latency-ms", type=float, default=1.0,
                    help="the emulator's latency per metadata request (default 1)")
    ap.add_argument("--waiter-rate-mbps", type=float, default=16.0,
                    help="WAN rate cap while the waiter waits (default 16 Mb/s); 0: no waiter")
    ap.add_argument("--waiter-after-mb", type=float, default=3.0,
                    help="start the waiter once this much of the fetch has come down (3)")
    ap.add_argument("--procs", type=int, default=16,
                    help="concurrent cold readers (default 16; 0: none)")
    ap.add_argument("--no-local-hit", action="store_true",
                    help="skip the reads with a local tier in front")
    ap.add_argument("--no-counts", action="store_true",
                    help="skip the traced cold and warm reads (with --timing-repeat: times only)")
    ap.add_argument("--timing-repeat", type=int, default=None,
                    help="time cold and warm reads without strace, with the peers, N times "
                         "(default 1; 0 with --quick)")
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("--run-timeout", type=float, default=300.0, help="bound for one read")
    ap.add_argument("--json", type=Path, default=RESULTS / "tier.json")
    args = ap.parse_args(argv)
    keys = (args.roads or ("fsspec,fsspec-url" if args.quick else
                           "fsspec,open,fsspec-url,open-url")).split(",")
    timing_repeat = args.timing_repeat if args.timing_repeat is not None else \
        0 if args.quick else 1
    which = args.storage.split(",")
    if unknown := [r for r in keys if r not in roads_for("")] + [
            s for s in which if s not in ("local", "nfsemu", "nfsemu-nfs")]:
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
    many: list[dict[str, Any]] = []
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
        all_roads = roads_for(f"root://localhost:{wan.port}/{LFN}")
        roads = [all_roads[k] for k in keys]
        by_name = [r for r in roads if r.catalog] or [all_roads["fsspec"]]
        stopped = None
        trips: dict[str, dict[str, float]] = {}
        try:
            with storages(work, which, args.meta_latency_ms) as stores:
                trips = {st.name: round_trip_ms(st) for st in stores if st.emu is not None}
                for storage in stores:
                    for road in roads if not args.no_counts else []:
                        rows += cold_and_warm(b, storage, road)
                    if not args.no_local_hit:
                        for road in roads[:2]:  # a catalog name and (in --quick) a bare URL
                            rows += local_hit(b, storage, road)
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
                        waiters.append(waiter(b, storage, env, capped, by_name[0],
                                              after_bytes=int(args.waiter_after_mb * 1e6)))
                if args.procs > 0:
                    for storage in stores:
                        many.append(many_readers(b, storage, wan, args.procs))
                for rep in range(timing_repeat):
                    peers(b, input_file, wan, stores, rep)
                    for storage in stores:
                        for road in roads:
                            timed(b, storage, road, rep)
        except h.OutOfTime as exc:
            stopped = f"stopped at the {args.max_seconds:.0f} s bound before {exc}"
            print(stopped)
        meta = h.run_meta(source_at_start, input=info, branches=BRANCHES, round_trips=trips,
                          delay_ms=args.delay_ms, meta_latency_ms=args.meta_latency_ms,
                          waiter_rate_mbps=args.waiter_rate_mbps, roads=keys, storages=which,
                          procs=args.procs, timing_repeat=timing_repeat, stopped=stopped)
        report(rows, waiters, many, b, meta, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
