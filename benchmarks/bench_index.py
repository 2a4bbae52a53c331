"""Index cost against size: cache lookup and insert time at 10^4 to 10^7 cached blocks.

The cache keeps no index: an entry's extents are the file names in its ``x/`` folder. This
benchmark builds one disk tier per size in a temporary folder, holding 10^4, 10^5, 10^6 (and,
with ``--max 1e7``, 10^7) extent files, and at each size times, with ``--samples`` random keys
each (taken in ``--rounds`` rounds that alternate between the sizes, so a slow spell of the
machine does not land on one size):

- lookup: ``DiskTier.extents(key)`` + ``ranges.cover`` of a random range, for keys held (a
  key's first lookup in a process, and again) and keys absent;
- insert: ``DiskTier.write_extent`` of a 64 KiB block into a new entry, and into an existing
  entry (as the first write of a process into it, and again);
- the RSS a new process gains when it builds a ``Cache`` on the tier and does 10^4 lookups;
- ``htpdata.cache.evict.scan(tier)``, the full walk of an eviction pass (up to ``--scan-max``).

The bulk of the tree is made directly (``os.mkdir`` and ``os.open``/``os.close``) following
``layout.py``: fan-out folders ``entries/ab/cd/KEY/``, a ``meta.json``, an ``access`` file, a
name pointer and ``--extents-per-entry`` empty extent files named ``x/START-END.ADLER32`` (4 MiB
slots, each extent 1 to 4 MiB long). Lookups and scans only read names and small files, so empty
extents cost them the same as full ones. A check at the start compares such an entry with one
written by ``DiskTier.write_extent``. Prints tables with ratios to the smallest size and writes
``benchmarks/results/index.json``. The trees are deleted at the end, also on error.

    .venv/bin/python benchmarks/bench_index.py [--dir /var/tmp] [--max 1e6] [--samples 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from _harness import OutOfTime  # noqa: E402
from htpdata.adler32 import adler32_hex  # noqa: E402
from htpdata.cache.disk import DiskTier  # noqa: E402
from htpdata.cache.identity import Identity  # noqa: E402
from htpdata.cache.layout import extent_name  # noqa: E402
from htpdata.cache.ranges import cover  # noqa: E402

RESULTS = HERE / "results"
SLOT = 4 * 1024**2  # one extent slot per 4 MiB of the file (max_extent's default)
BLOCK = 64 * 1024  # the block an insert writes
INSERT_BASE = 1 << 40  # inserted extents start beyond any built one
META = {"user": "bench", "group": "bench", "dataset": "bench:/Index"}
SCAN_VOLUME = 50e12  # the 50 TB shared volume of issue 3
WARMUP = 20  # unrecorded calls before each timed series
SLOW_CREATE = 10_000  # files/s; below this, warn (see build_trees)
LOOKUP_FIRST = "lookup, present key, first in a process"
LOOKUP_AGAIN = "lookup, present key, again"
INSERT_FIRST = "insert, existing entry, first write of a process"
INSERT_AGAIN = "insert, existing entry, again"
INSERT_NEW = "insert, new entry"


def ident_of(i: int, per: int) -> Identity:
    """The identity of built entry ``i`` (reproducible, so no key list is kept)."""
    return Identity(f"/store/bench/index/f{i:09d}.root", per * SLOT,
                    f"{(i * 2654435761) & 0xFFFFFFFF:08x}")


# -- building the tree -----------------------------------------------------------------------
def _put(path: str, data: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def grow(tier: DiskTier, start: int, stop: int, per: int, rng: random.Random,
         made: set[str], deadline: float = math.inf) -> int:
    """Create entries ``start``..``stop - 1`` with ``per`` empty extents each; returns the number
    of files and folders made. Raises OutOfTime past ``deadline`` (``time.monotonic``)."""
    entries = str(tier.layout.entries)
    names = str(tier.root / "names")
    count = 0
    for i in range(start, stop):
        if i % 64 == 0 and time.monotonic() > deadline:
            raise OutOfTime(f"building stopped at {i} of {stop} entries")
        ident = ident_of(i, per)
        key, name_key = ident.key, ident.name_key
        for d in (f"{entries}/{key[:2]}", f"{entries}/{key[:2]}/{key[2:4]}",
                  f"{names}/{name_key[:2]}"):
            if d not in made:
                os.makedirs(d, exist_ok=True)
                made.add(d)
                count += 1
        entry = f"{entries}/{key[:2]}/{key[2:4]}/{key}"
        os.mkdir(entry)
        os.mkdir(f"{entry}/x")
        _put(f"{entry}/meta.json", json.dumps({**ident.as_dict(), **META,
                                               "created": time.time()}).encode())
        _put(f"{entry}/access")
        _put(f"{names}/{name_key[:2]}/{name_key}", key.encode())
        for j in range(per):
            length = rng.randrange(16, 65) * BLOCK  # 1 to 4 MiB
            _put(f"{entry}/x/" + extent_name((j * SLOT, j * SLOT + length),
                                             f"{rng.getrandbits(32):08x}"))
        count += 5 + per
    return count


def check_layout(root: Path, per: int) -> None:
    """Fail unless a raw-built entry has the shape of one ``DiskTier.write_extent`` makes."""
    def shape(tier: DiskTier, key: str) -> set[str]:
        base = tier.layout.entry(key)
        return {("d " if p.is_dir() else "f ") + str(p.relative_to(base).parent / (
            "EXTENT" if p.parent.name == "x" else p.name)) for p in base.rglob("*")}

    real = DiskTier("real", root / "real", 0)
    real.ensure()
    ident = ident_of(0, per)
    real.write_extent(ident, 0, b"x" * BLOCK, META)
    real.touch(ident.key)
    raw = DiskTier("raw", root / "raw", 0)
    raw.ensure()
    grow(raw, 0, 1, per, random.Random(0), set())
    if shape(real, ident.key) != shape(raw, ident.key) or \
            raw.current_key(ident.name_key) != ident.key or \
            len(raw.extents(ident.key)) != per or raw.entry_info(ident.key) is None:
        raise SystemExit(f"raw entry differs from a real one: {shape(raw, ident.key)} vs "
                         f"{shape(real, ident.key)}")
    shutil.rmtree(root / "real")
    shutil.rmtree(root / "raw")


# -- measuring -----------------------------------------------------------------------------
def timed(fn: Callable[[int], None], samples: int, warmup: int = 20) -> list[float]:
    """Microseconds of ``fn(k)`` for k in 0..samples-1, after ``warmup`` unrecorded calls with
    k = -warmup..-1 (so inputs of ``samples + warmup`` items serve both, indexed from the end)."""
    out = []
    for k in range(-warmup, samples):
        t0 = time.perf_counter_ns()
        fn(k)
        dt = time.perf_counter_ns() - t0
        if k >= 0:
            out.append(dt / 1e3)
    return out


def summary(us: list[float]) -> dict[str, float]:
    s = sorted(us)
    return {"median_us": statistics.median(s), "p99_us": s[min(len(s) - 1, int(0.99 * len(s)))],
            "mean_us": statistics.fmean(s), "n": len(s)}


def random_range(rng: random.Random, per: int) -> tuple[int, int]:
    start = rng.randrange(per * SLOT - 1024**2)
    return start, start + rng.randrange(1024, 1024**2)


def measure(tier: DiskTier, n_entries: int, per: int, samples: int, rng: random.Random,
            tag: str) -> dict[str, list[float]]:
    """One round of lookup and insert timings (microseconds) on ``tier``; the tree is left
    as it was. ``tag`` keeps this round's new names apart from other rounds'."""
    n = samples + WARMUP
    present = [ident_of(rng.randrange(n_entries), per).key for _ in range(n)]
    absent = [Identity(f"/store/bench/absent/{tag}/{k}.root", per * SLOT).key for k in range(n)]
    ranges = [random_range(rng, per) for _ in range(n)]
    hits: list[float] = []
    # A new tier object per sample stands for a new process: per-process memos in DiskTier
    # (such as the check that an entry's folder is inside the tier) start empty, so "first"
    # is a key's first lookup in a process and "again" its next one.
    procs = [DiskTier(tier.name, tier.root, 0) for _ in range(n)]

    def lookup(keys: list[str], count: bool = False) -> Callable[[int], None]:
        def one(k: int) -> None:
            if cover(ranges[k], list(procs[k].extents(keys[k]))) is not None and count \
                    and k >= 0:
                hits.append(1.0)
        return one

    out = {LOOKUP_FIRST: timed(lookup(present, count=True), samples)}
    out[LOOKUP_AGAIN] = timed(lookup(present), samples)
    out["hits"] = hits
    out["lookup, absent key"] = timed(lookup(absent), samples)

    data = os.urandom(BLOCK)
    written: list[tuple[Identity, tuple[int, int]]] = []
    new_keys: list[Identity] = []
    seq = iter(range(10**9))
    targets = [ident_of(rng.randrange(n_entries), per) for _ in range(n)]
    fresh = [DiskTier(tier.name, tier.root, 0) for _ in range(n)]

    def insert_existing(k: int) -> None:
        # fresh[k] is a new tier object the first time (as a new process: the entry's folders,
        # meta and name pointer are checked), and knows the entry the second time.
        ident = targets[k]
        written.append((ident, fresh[k].write_extent(ident, INSERT_BASE + next(seq) * BLOCK,
                                                     data, META)))

    def insert_new(k: int) -> None:
        ident = Identity(f"/store/bench/new/{tag}/{k}.root", per * SLOT, "00000000")
        new_keys.append(ident)
        tier.write_extent(ident, 0, data, META)

    try:
        out[INSERT_FIRST] = timed(insert_existing, samples)
        out[INSERT_AGAIN] = timed(insert_existing, samples)
        out[INSERT_NEW] = timed(insert_new, samples)
    finally:
        # Put the tree back to its nominal size by renaming what was written into a trash
        # folder, deleted only at the end: on ext4 without a journal, inodes freed in the last
        # minutes slow down every later allocation, which would skew the next round.
        trash = tier.root.parent / f"trash-{tier.root.name}"
        trash.mkdir(exist_ok=True)
        adler = adler32_hex(data)
        moved = [tier.layout.extents(ident.key) / extent_name(r, adler) for ident, r in written]
        for ident in new_keys:
            moved += [tier.layout.entry(ident.key), tier.layout.name_pointer(ident.name_key)]
        for n, path in enumerate(moved):
            os.rename(path, trash / f"{tag}-{n}")
    return out


def rss_of_cache(root: Path, n_entries: int, per: int, lookups: int, timeout: float
                 ) -> dict[str, Any]:
    """In a new process: VmRSS before and after ``Cache(...)`` and ``lookups`` lookups."""
    spec = json.dumps({"root": str(root), "entries": n_entries, "per": per, "lookups": lookups})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-worker", spec],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_worker(spec: dict[str, Any]) -> None:
    """Child side of :func:`rss_of_cache` (keys and ranges are made before the baseline)."""
    import gc

    from htpdata.cache import Cache
    from htpdata.config import CacheSettings

    rng = random.Random(7)
    per, n = spec["per"], spec["entries"]
    picks = [rng.randrange(n) for _ in range(spec["lookups"])]
    ranges = [random_range(rng, per) for _ in range(spec["lookups"])]
    distinct = len(set(picks))
    gc.collect()
    base = _status_kib("VmRSS")
    cache = Cache(CacheSettings(local_dir="off", shared_dir=spec["root"]))
    built = _status_kib("VmRSS")
    tier = cache.tiers[0]
    # Each key is made just before its lookup and dropped after it, as in a reader: a list of
    # 10^4 live keys would be charged here (pathlib interns path parts while they live).
    hits = sum(cover(r, list(tier.extents(ident_of(i, per).key))) is not None
               for i, r in zip(picks, ranges, strict=True))
    after = _status_kib("VmRSS")
    print(json.dumps({"base_kib": base, "cache_kib": built - base, "gain_kib": after - base,
                      "hwm_kib": _status_kib("VmHWM"), "hits": hits, "distinct_keys": distinct}))


def scan_time(tier: DiskTier) -> dict[str, Any]:
    from htpdata.cache.evict import scan

    t0 = time.perf_counter()
    entries, _ = scan(tier)
    seconds = time.perf_counter() - t0
    extents = sum(len(tier.extents(e.key)) for e in entries)
    return {"seconds": seconds, "entries": len(entries), "extents": extents,
            "entries_per_s": len(entries) / seconds, "extents_per_s": extents / seconds}


def remove_tree(path: Path) -> float:
    """Delete the tree (``rm -rf`` is several times faster than shutil.rmtree); seconds."""
    t0 = time.perf_counter()
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)
    return time.perf_counter() - t0


# -- report ----------------------------------------------------------------------------------
def report(levels: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if not levels:
        console.print("nothing measured")
        return
    first = levels[0]
    ops = list(first["ops"])
    sizes = [f"{lv['extents']:.0e}".replace("+0", "") for lv in levels]
    t = Table(title=f"Cache lookup and insert, microseconds: median / p99 ({meta['samples']} "
              f"samples in {meta['rounds']} rounds; x = median / median at {sizes[0]})")
    t.add_column("operation")
    for s in sizes:
        t.add_column(f"{s} extents", justify="right")
    for op in ops:
        cells = []
        for lv in levels:
            m, p = lv["ops"][op]["median_us"], lv["ops"][op]["p99_us"]
            x = m / first["ops"][op]["median_us"]
            cells.append(f"{m:7.1f} / {p:7.1f}  (x{x:4.2f})")
        t.add_row(op, *cells)
    rss = [lv.get("rss", {}) for lv in levels]
    t.add_row("RSS gained: Cache() + 10^4 lookups, KiB",
              *[str(r.get("gain_kib", r.get("error", "-"))) for r in rss])
    t.add_row("  distinct keys in those lookups", *[str(r.get("distinct_keys", "-")) for r in rss])
    t.add_row("entries / fan-out folders", *[f"{lv['entries']} / {lv['fanout_dirs']}"
                                             for lv in levels])
    t.add_row("build s", *[f"{lv['build_s']:.1f}" for lv in levels])
    console.print(t)
    hits = [lv.get("hit_fraction", 0) for lv in levels]
    console.print(f"lookup, present key: the random range was fully held in "
                  f"{min(hits):.0%}-{max(hits):.0%} of samples (a miss costs the same listing). "
                  f"Process RSS before Cache(): {rss[0].get('base_kib', '-')} KiB "
                  f"(htpdata.cache imported).")
    scans = [(lv, lv["scan"]) for lv in levels if lv.get("scan")]
    if scans:
        st = Table(title="evict.scan(tier): the full walk of an eviction pass")
        for col in ("extents", "entries", "seconds (best)", "entries/s", "extent files/s"):
            st.add_column(col, justify="right")
        for lv, sc in scans:
            st.add_row(f"{lv['extents']:.0e}", str(sc["entries"]), f"{sc['seconds']:.2f}",
                      f"{sc['entries_per_s']:,.0f}", f"{sc['extents_per_s']:,.0f}")
        console.print(st)
        rate = scans[-1][1]["extents_per_s"]
        per = meta["extents_per_entry"]
        for mib in (4, 1):
            n = SCAN_VOLUME / (mib * 1024**2)
            console.print(f"50 TB in {mib} MiB extents = {n / 1e6:.1f}M extents "
                          f"({n / per / 1e3:.0f}k entries at {per} extents each): one scan "
                          f"about {n / rate:.0f} s at {rate:,.0f} extent files/s "
                          "(warm local disk; a network filesystem is slower)")
    console.print("Warm dentry and page caches (the tree was just built); "
                  "absolute times are noisy on this shared 2-core machine.")
    h.write_results(path, {**meta, "levels": levels})


# -- main --------------------------------------------------------------------------------------
def build_trees(work: Path, sizes: list[int], per: int, rng: random.Random, deadline: float,
                levels: list[dict[str, Any]]) -> str | None:
    """One tier per size (so rounds can alternate between sizes); returns why it stopped."""
    rate = None
    for size in sizes:
        want = size // per
        if rate is not None:
            est = want * (per + 5) / rate
            left = deadline - time.monotonic()
            print(f"building {size:.0e} extents: about {est:.0f} s at {rate:,.0f} files/s, "
                  f"and a similar time to delete", flush=True)
            if 2.5 * est > left:  # build, measure, delete
                return f"{size:.0e} skipped: build estimate {est:.0f} s, {left:.0f} s left"
        tier = DiskTier("shared", work / f"t{size}", 0, shared=True)
        tier.ensure()
        made: set[str] = set()
        t0 = time.perf_counter()
        try:
            files = grow(tier, 0, want, per, rng, made, deadline)
        except OutOfTime as exc:
            return f"{size:.0e}: {exc}"
        dt = time.perf_counter() - t0
        rate = files / dt
        print(f"{size:.0e} extents: {want} entries, {files:,} files and folders in {dt:.1f} s "
              f"({rate:,.0f}/s)", flush=True)
        if rate < SLOW_CREATE:
            print(f"  slow: creating files runs at {rate:,.0f}/s here. On ext4 without a "
                  "journal, inodes freed in the last minutes are skipped one by one when new "
                  "ones are allocated (a big tree deleted recently, e.g. by the last run); "
                  "waiting about 6 minutes restores the rate. Insert timings suffer too.",
                  flush=True)
        levels.append({"extents": size, "entries": want, "files_and_dirs": files,
                       "fanout_dirs": len(made), "build_s": dt, "build_per_s": rate,
                       "tier": tier})
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max", type=float, default=1e6,
                    help="largest number of extent files (default 1e6; 1e7 needs ~11M inodes)")
    ap.add_argument("--samples", type=int, default=2000, help="samples per operation and size")
    ap.add_argument("--rounds", type=int, default=5,
                    help="the samples are taken in this many rounds over all sizes (default 5)")
    ap.add_argument("--extents-per-entry", type=int, default=100)
    ap.add_argument("--scan-max", type=float, default=1e6,
                    help="time evict.scan up to this size (default 1e6)")
    ap.add_argument("--rss-lookups", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the temporary tiers go (default the temp folder)")
    ap.add_argument("--max-seconds", type=float, default=2400.0,
                    help="wall-clock bound; a size whose estimate does not fit is skipped")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", type=Path, default=RESULTS / "index.json")
    ap.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_worker:
        rss_worker(json.loads(args.rss_worker))
        return 0
    h.exit_on_sigterm()
    t_start = time.monotonic()
    deadline = t_start + args.max_seconds
    per = args.extents_per_entry
    sizes = [10**k for k in range(4, round(math.log10(args.max)) + 1)]
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="htpdata-bench-index-", dir=args.dir))
    levels: list[dict[str, Any]] = []
    stopped = None
    removal_s = None
    print(f"tiers under {work}; {per} extents per entry; sizes "
          f"{', '.join(f'{s:.0e}' for s in sizes)}; {args.samples} samples per operation and "
          f"size in {args.rounds} rounds", flush=True)
    try:
        check_layout(work, per)
        stopped = build_trees(work, sizes, per, rng, deadline, levels)
        if stopped:
            print(stopped, flush=True)
        raw: list[dict[str, list[float]]] = [{} for _ in levels]
        scans: list[list[dict[str, Any]]] = [[] for _ in levels]
        per_round = max(1, args.samples // args.rounds)
        for rnd in range(args.rounds):  # alternate sizes, so a slow spell hits all of them
            order = list(range(len(levels)))
            rng.shuffle(order)  # and no size always comes first
            for i in order:
                lv = levels[i]
                got = measure(lv["tier"], lv["entries"], per, per_round, rng, f"{rnd}-{i}")
                for op, us in got.items():
                    raw[i].setdefault(op, []).extend(us)
                if lv["extents"] <= args.scan_max and rnd < 3:
                    scans[i].append(scan_time(lv["tier"]))
            print(f"round {rnd + 1} of {args.rounds}: first lookup median "
                  + ", ".join(f"{statistics.median(r[LOOKUP_FIRST]):.0f}" for r in raw)
                  + " us", flush=True)
        for i, lv in enumerate(levels):
            lv["hit_fraction"] = len(raw[i].pop("hits", [])) / (per_round * args.rounds)
            lv["ops"] = {op: summary(us) for op, us in raw[i].items()}
            lv["rss"] = rss_of_cache(lv["tier"].root, lv["entries"], per, args.rss_lookups,
                                     timeout=300)
            if scans[i]:
                lv["scan"] = min(scans[i], key=lambda sc: sc["seconds"])
                lv["scan"]["runs_s"] = [sc["seconds"] for sc in scans[i]]
            print(f"{lv['extents']:.0e}: " + "; ".join(
                f"{op} {v['median_us']:.1f}/{v['p99_us']:.1f} us" for op, v in lv["ops"].items())
                + f"; RSS +{lv['rss'].get('gain_kib', '?')} KiB"
                + (f"; scan {lv['scan']['seconds']:.2f} s" if "scan" in lv else ""), flush=True)
        if levels and sizes[-1] < 10**7:
            rate = levels[-1]["build_per_s"]
            est = 10**7 // per * (per + 5) / rate
            print(f"for scale: a 1e7 tree would take about {est / 60:.0f} min to build at "
                  f"{rate:,.0f} files/s, and a similar time to delete (--max 1e7)")
    finally:
        removal_s = remove_tree(work)
        print(f"removed {work} in {removal_s:.1f} s", flush=True)
    for lv in levels:
        lv.pop("tier", None)
    meta = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "fs": _fs_type(args.dir)},
            "samples": args.samples, "rounds": args.rounds, "extents_per_entry": per,
            "slot_bytes": SLOT, "insert_bytes": BLOCK,
            "built": "raw os.mkdir/os.open following layout.py, empty extent files; checked "
                     "against an entry written by DiskTier.write_extent",
            "removal_s": removal_s, "stopped": stopped, "total_s": time.monotonic() - t_start}
    report([lv for lv in levels if "ops" in lv], meta, args.json)
    return 0


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
