"""benchmarks/bench_ab.py compares two builds by ratios against each run's own peers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_ab import ratios


def test_cold_is_against_direct_warm_against_the_local_file_and_peers_are_left_out() -> None:
    timing: dict[str, list[dict[str, Any]]] = {
        "local file": [{"seconds": 0.2}, {"seconds": 0.3}, {"seconds": 0.25}],
        "uproot direct root://": [{"seconds": 0.4}],
        "XCache warm": [{"seconds": 0.5}],
        "nfsemu 1 ms open cold": [{"seconds": 0.42, "tier_s": 0.05}],
        "nfsemu 1 ms open warm": [{"seconds": 0.275, "tier_s": 0.02},
                                  {"seconds": 0.3, "tier_s": 0.03}],
        "local disk open warm": [{"error": "exit 1"}],
    }
    got = ratios(timing)
    assert set(got) == {"nfsemu 1 ms open cold", "nfsemu 1 ms open warm"}
    assert got["nfsemu 1 ms open cold"] == pytest.approx((1.05, 50.0))
    assert got["nfsemu 1 ms open warm"] == pytest.approx((0.2875 / 0.25, 25.0))
