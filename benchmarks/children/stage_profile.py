"""``htpdata.staging.stage`` with timers around its main functions (``bench_stage --profile``).

    python benchmarks/children/stage_profile.py JOBS STREAMS NAME '[[module, class, attr], ...]'

Each listed function (a module-level function when ``class`` is empty) is wrapped by a timer
that sums calls and seconds over all threads; names that do not exist (the code moved) are
listed under ``missing`` rather than failing the run. Stages NAME into the shared tier (the
environment says where) and prints one JSON line: import, stage() and transfer seconds, the
summary's counts and the timers. Then exits the normal way: the parent times that exit too.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import functools  # noqa: E402  (the clock covers the imports)
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import htpdata  # noqa: E402
from htpdata.staging import stage  # noqa: E402

T1 = time.monotonic()
stats: dict[str, list[float]] = {}
lock = threading.Lock()
missing: list[str] = []


def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            d = time.perf_counter() - t
            with lock:
                s = stats.setdefault(label, [0, 0.0])
                s[0] += 1
                s[1] += d

    return call


def instrument(module: str, cls: str, attr: str) -> None:
    try:
        owner: Any = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        fn = getattr(owner, attr)
    except (ImportError, AttributeError):
        missing.append(f"{module}:{cls}.{attr}")
        return
    label = f"{module.removeprefix('htpdata.')}:{cls + '.' if cls else ''}{attr}"
    setattr(owner, attr, timed(fn, label))


def main(argv: list[str]) -> None:
    for spec in json.loads(argv[3]):
        instrument(*spec)
    jobs, streams, name = int(argv[0]), int(argv[1]), argv[2]
    with htpdata.Client() as client:
        t2 = time.monotonic()
        summary = stage([name], client=client, tier="shared", jobs=jobs, streams=streams)
        t3 = time.monotonic()
        d = summary.as_dict()
        print(json.dumps({"import_s": T1 - T0, "stage_s": t3 - t2, "transfer_s": d["seconds"],
                          "staged": d["staged"], "failed": d["failed"], "missing": missing,
                          "stats": stats}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
