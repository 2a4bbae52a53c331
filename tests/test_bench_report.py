"""benchmarks/bench_report.py builds the tier it measures with the cache's own write primitive:
the tier must be one the cache accepts (format 2, trusted packs) and scans entry by entry."""

from __future__ import annotations

import sys
from pathlib import Path

from htpdata.cache import DiskTier
from htpdata.cache.scan import scan_area
from htpdata.testing.cachecheck import packs_under

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_report import build


def test_the_built_tier_is_scanned_whole(tmp_path: Path) -> None:
    built = build(tmp_path / "tier", 12, 7, progress=False)
    assert (built["entries"], built["ranges"]) == (12, 84)
    tier = DiskTier("shared", tmp_path / "tier", 0)
    try:
        assert tier.usable
        assert not tier.legacy()
        stats = [e for area in tier.read_areas() for e in scan_area(area)]
    finally:
        tier.close()
    assert len(stats) == 12
    assert all(e.packs == 1 for e in stats)
    assert sum(e.bytes for e in stats) == built["bytes"]
    assert len(list(packs_under(tmp_path / "tier"))) == 12
