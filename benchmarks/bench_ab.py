"""Two builds of htpdata taking turns through ``bench_tier.py``'s timed reads: is a change faster?

On a shared 2-core machine one whole read moves by 10 to 20 ms from one run to the next, more
than most changes to the tier save, and the machine's load drifts within minutes. Run alone,
two builds measured an hour apart cannot be compared. Here the checkout as it is (uncommitted
changes included) and an earlier commit run ``bench_tier.py --no-counts`` in turns, ``--rounds``
times each, with the same arguments; each run's ratios are against its own peers (the local
file, direct root://). The table gives, per case and build, each round's ratio, their median,
and the median of "in the tier ms" (the time the tier's own calls took: far less noisy).

    .venv/bin/python benchmarks/bench_ab.py --against HEAD~1          # nfsemu, ~10 min
    .venv/bin/python benchmarks/bench_ab.py --against 71c4624 --rounds 6 --storage local,nfsemu

The earlier build runs from a ``git worktree`` of that commit (its own ``benchmarks/`` and
``src/``, through ``PYTHONPATH``; this checkout's virtualenv and input file), removed at the
end. Writes ``benchmarks/results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

RESULTS = h.RESULTS
LOCAL_FILE, DIRECT = "local file", "uproot direct root://"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE.parent, check=True, text=True,
                          capture_output=True, timeout=60).stdout.strip()


def ratios(timing: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[float, float | None]]:
    """Per htpdata case of one ``bench_tier.py`` run: its median's ratio (cold against direct
    root://, warm against the local file) and its median "in the tier ms"."""
    def median(rows: list[dict[str, Any]], key: str) -> float | None:
        got = [r[key] for r in rows if key in r]
        return statistics.median(got) if got else None

    local, direct = median(timing.get(LOCAL_FILE, []), "seconds"), \
        median(timing.get(DIRECT, []), "seconds")
    out = {}
    for case, rows in timing.items():
        if case.startswith(("XCache", LOCAL_FILE, DIRECT)):
            continue
        ref = direct if case.endswith(" cold") else local
        s, tier = median(rows, "seconds"), median(rows, "tier_s")
        if s is not None and ref:
            out[case] = (s / ref, tier * 1e3 if tier is not None else None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", required=True, help="the earlier build: a commit or ref")
    ap.add_argument("--rounds", type=int, default=4, help="runs of each build (default 4)")
    ap.add_argument("--storage", default="nfsemu", help="bench_tier.py --storage (nfsemu)")
    ap.add_argument("--roads", default="open,fsspec-url", help="bench_tier.py --roads")
    ap.add_argument("--timing-repeat", type=int, default=3,
                    help="bench_tier.py --timing-repeat: reads of each case per run (3)")
    ap.add_argument("--json", type=Path, default=RESULTS / "ab.json")
    args = ap.parse_args(argv)
    earlier = _git("rev-parse", "--short", args.against)
    here = h.source_state()
    tier_args = ["--no-counts", "--procs", "0", "--waiter-rate-mbps", "0", "--no-local-hit",
                 "--storage", args.storage, "--roads", args.roads,
                 "--timing-repeat", str(args.timing_repeat)]
    tree = Path(tempfile.mkdtemp(prefix="htpdata-ab-")) / earlier
    _git("worktree", "add", "--detach", "--force", str(tree), earlier)
    runs: dict[str, list[dict[str, tuple[float, float | None]]]] = {here: [], earlier: []}
    try:
        data = HERE / "data"
        if data.exists() and not (tree / "benchmarks" / "data").exists():
            (tree / "benchmarks" / "data").symlink_to(data)  # the same input, not a rebuild
        builds = [(here, HERE.parent), (earlier, tree)]
        for rnd in range(args.rounds):
            for label, root in builds if rnd % 2 == 0 else builds[::-1]:
                out = Path(tempfile.gettempdir()) / f"htpdata-ab-{label[:7]}-{rnd}.json"
                print(f"round {rnd + 1}/{args.rounds}: {label}", flush=True)
                env = {**os.environ, "PYTHONPATH": str(root / "src")}  # it isolates its reads
                ran = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_tier.py"),
                                      *tier_args, "--json", str(out)], env=env, text=True,
                                     capture_output=True, timeout=3600, check=False)
                if ran.returncode != 0:
                    print(f"  failed: {h.tail(ran.stderr or ran.stdout)}", flush=True)
                    continue
                runs[label].append(ratios(json.loads(out.read_text())["timing"]))
                out.unlink()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=HERE.parent,
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=HERE.parent, capture_output=True,
                       timeout=60, check=False)
    report(runs, here, earlier)
    h.write_results(args.json, {**h.run_meta(here, against=earlier, args=vars(args)),
                                "runs": runs})
    return 0


def report(runs: dict[str, list[dict[str, tuple[float, float | None]]]], here: str,
           earlier: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{here} against {earlier}, taking turns: ratio of each run's median "
              "(cold x direct root://, warm x local file)")
    for col in ("case", "build", "runs", "median", "in the tier ms (median)"):
        t.add_column(col, justify="left" if col in ("case", "build", "runs") else "right")
    cases = sorted({c for label in runs for run in runs[label] for c in run})
    for case in cases:
        for label in (here, earlier):
            got = [run[case] for run in runs[label] if case in run]
            if not got:
                continue
            tiers = [x[1] for x in got if x[1] is not None]
            t.add_row(case, label, " ".join(f"{x[0]:.3f}" for x in got),
                      f"{statistics.median(x[0] for x in got):.3f}",
                      f"{statistics.median(tiers):.1f}" if tiers else "-")
    Console(width=160).print(t)


if __name__ == "__main__":
    sys.exit(main())
