"""One read of ``bench_tier.py`` in a new process: uproot reads some branches through htpdata.

    python benchmarks/children/tier_reader.py '{"how": "uproot", "target": "htpdata://...",
                                                "branches": [...], "wait": false}'

``how`` is ``uproot`` (``uproot.open(target)``, e.g. ``htpdata://bench/store/...``) or
``htpdata-open`` (``uproot.open(htpdata.open(target))``). Imports happen first; with ``wait``
the reader then prints ``{"ready": PID}`` and starts when a line arrives on stdin (so a waiter
can be released while another process is fetching). Prints one JSON line: seconds, the wall
clock at start and end (epoch seconds, to window a trace), entries and a checksum of the values.
With ``"tier_clock": true`` it also prints ``tier_s``: the seconds its threads spent in the
disk tiers' own calls (lookups and reads, claims, listings: see :func:`clock_the_tier`), summed
over threads, so what a filesystem's round trips cost a read shows without the decoding's
noise around it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def digest(arrays: Any) -> float:
    import awkward as ak
    import numpy as np

    total = 0.0
    for field in arrays.fields:
        total += float(np.sum(ak.flatten(arrays[field], axis=None).to_numpy(), dtype=np.float64))
    return total


_TIERED = {"DiskTier": ("read", "known", "holds_any"),
           "Flight": ("publish", "refresh", "look", "changed", "release", "read")}


def clock_the_tier() -> list[float]:
    """Wrap the disk tier's entry points (outermost calls only) to add up their time."""
    import threading

    from htpdata.cache import tier

    spent = [0.0]
    depth = threading.local()

    def timed(fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            d = getattr(depth, "n", 0)
            depth.n = d + 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth.n = d
                if d == 0:
                    spent[0] += time.perf_counter() - t
        return inner

    for cls, names in _TIERED.items():
        for name in names:
            setattr(getattr(tier, cls), name, timed(getattr(getattr(tier, cls), name)))
    return spent


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import awkward  # noqa: F401  (imported before the clock)
    import uproot

    import htpdata

    how, target, branches = spec["how"], spec["target"], spec["branches"]
    spent = clock_the_tier() if spec.get("tier_clock") else None
    if spec.get("wait"):
        print(json.dumps({"ready": os.getpid()}), flush=True)
        sys.stdin.readline()
    start, t0 = time.time(), time.perf_counter()
    if how == "htpdata-open":
        with htpdata.open(target) as fobj, uproot.open(fobj) as f:
            arrays = f["Events"].arrays(branches)
    elif how == "uproot":
        with uproot.open(target) as f:
            arrays = f["Events"].arrays(branches)
    else:
        raise ValueError(f"unknown how {how!r}")
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "start": start, "end": time.time(), "entries": len(arrays),
           "digest": digest(arrays)}
    if spent is not None:
        out["tier_s"] = spent[0]
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
