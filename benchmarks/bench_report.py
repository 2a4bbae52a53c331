"""How report time grows with the number of cache entries (issue 6: seconds at 10^6 entries).

    .venv/bin/python benchmarks/bench_report.py [--max 1e6] [--dir /var/tmp]

For each size it builds a shared tier of N entries (raw files following
``htpdata.cache.layout``: ``meta.json`` with owner, group and dataset, ``access``, one extent),
then times (1) the scan that writes the tier's usage summary (what every eviction pass and
``htpdata report --refresh`` do) and (2) ``htpdata report --json`` as a user runs it (reads the
summary), in a new process. Prints a table with growth ratios and writes results/report.json.
File creation is slow right after mass deletion on this disk; build in /var/tmp.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

USERS = [f"user{i:02d}" for i in range(40)]


def build(root: Path, n: int) -> float:
    t0 = time.perf_counter()
    (root / "entries").mkdir(parents=True)
    (root / "htpdata-cache.json").write_text('{"format": 1}')
    for i in range(n):
        key = hashlib.sha256(str(i).encode()).hexdigest()[:40]
        x = root / "entries" / key[:2] / key[2:4] / key / "x"
        os.makedirs(x, exist_ok=True)
        size = 1_000_000 + i
        meta = {"name": f"bench:/store/f{i}.root", "size": size, "adler32": None, "key": key,
                "user": USERS[i % len(USERS)], "group": f"g{i % 7}",
                "dataset": f"bench:/DS{i % 300}", "created": 0}
        (x.parent / "meta.json").write_text(json.dumps(meta))
        fd = os.open(x.parent / "access", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"." * (i % 5 + 1))
        os.close(fd)
        os.close(os.open(x / f"{0:016x}-{size:016x}.00000001", os.O_WRONLY | os.O_CREAT, 0o644))
    return time.perf_counter() - t0


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """(seconds, stdout, peak RSS in MB) of one command."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(err.read()[-2000:].decode(errors="replace"))
        out.seek(0)
        return seconds, out.read().decode(), usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max", type=float, default=1e6)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args(argv)
    sizes = [n for n in (10_000, 100_000, 1_000_000, 10_000_000) if n <= args.max]
    h.compile_htpdata()
    rows = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="htpdata-bench-report-", dir=args.dir))
        try:
            tier = work / "shared"
            b = build(tier, n)
            env = h.isolated_env(work, HTPDATA_CACHE_LOCAL_DIR="off",
                                 HTPDATA_CACHE_SHARED_DIR=str(tier))
            htp = [sys.executable, "-m", "htpdata"]
            scan_s, _, scan_mb = timed([*htp, "report", "--json", "--refresh"], env)
            report_s, out, report_mb = timed([*htp, "report", "--json", "--by", "user"], env)
            data = json.loads(out)
            files = data["tiers"][0]["files"]
            assert files == n, (files, n)
            rows.append({"entries": n, "build_s": b, "refresh_scan_s": scan_s,
                         "refresh_scan_peak_rss_mb": scan_mb, "report_s": report_s,
                         "report_peak_rss_mb": report_mb, "records": len(data["records"])})
            print(f"{n:>9} entries: build {b:7.1f} s; report --refresh (scan) {scan_s:7.2f} s, "
                  f"peak RSS {scan_mb:.0f} MB; report (summary) {report_s:5.2f} s, "
                  f"{report_mb:.0f} MB; {len(data['records'])} user rows", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["scan_growth"] = r["refresh_scan_s"] / base["refresh_scan_s"]
        r["report_growth"] = r["report_s"] / base["report_s"]
    print("\nentries    scan (s)  x    scan MB   report (s)  x")
    for r in rows:
        print(f"{r['entries']:>9} {r['refresh_scan_s']:9.2f} {r['scan_growth']:5.1f} "
              f"{r['refresh_scan_peak_rss_mb']:9.0f} {r['report_s']:10.2f} "
              f"{r['report_growth']:5.2f}")
    print("Target (issue 6): a report over 10^6 entries in seconds, without walking the tree: "
          "the summary road; the scan grows linearly and runs in eviction passes / --refresh.")
    h.write_results(h.RESULTS / "report.json", {**h.run_meta(), "sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
