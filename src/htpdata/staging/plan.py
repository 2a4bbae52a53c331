"""What a stage will do, decided before any byte moves (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..catalogs import FileEntry

__all__ = ["Plan", "make_plan"]


@dataclass
class Plan:
    tier: str
    to_fetch: list[FileEntry] = field(default_factory=list)
    cached: list[FileEntry] = field(default_factory=list)
    partial_bytes: int = 0
    """Bytes of files to fetch that earlier runs already verified (they are not fetched again)."""
    unknown_size: int = 0
    fetch_bytes: int = 0
    cached_bytes: int = 0
    headroom: int | None = None
    """Bytes the tier (and the user's quota) can still take; None when unbounded."""
    problem: str | None = None

    @property
    def fits(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, object]:
        return {"tier": self.tier, "files": len(self.to_fetch) + len(self.cached),
                "to_fetch": len(self.to_fetch), "already_cached": len(self.cached),
                "fetch_bytes": self.fetch_bytes, "cached_bytes": self.cached_bytes,
                "resumable_bytes": self.partial_bytes, "unknown_size": self.unknown_size,
                "headroom": self.headroom, "fits": self.fits, "problem": self.problem}


def make_plan(files: Iterable[FileEntry], complete: Mapping[str, bool],
              partial: Mapping[str, int], tier: str, tier_free: int | None,
              quota_free: int | None, quota_name: str = "your hard quota") -> Plan:
    """Split files into cached and to-fetch, count bytes, and check they fit.

    ``complete[name]`` says a verified complete copy is already in the tier; ``partial[name]``
    how many bytes of it are (resumed, not fetched again); ``tier_free`` and ``quota_free``
    the bytes the tier and the tightest hard quota (the user's or their group's, named by
    ``quota_name``) can still take (None: no bound).
    """
    plan = Plan(tier)
    for f in files:
        if complete.get(f.name):
            plan.cached.append(f)
            plan.cached_bytes += f.size or 0
            continue
        plan.to_fetch.append(f)
        if f.size is None:
            plan.unknown_size += 1
        have = min(partial.get(f.name, 0), f.size or 0)
        plan.partial_bytes += have
        plan.fetch_bytes += (f.size or 0) - have
    bounds = [b for b in (tier_free, quota_free) if b is not None]
    plan.headroom = min(bounds) if bounds else None
    if plan.headroom is not None and plan.fetch_bytes > plan.headroom:
        which = quota_name if quota_free is not None and quota_free == plan.headroom \
            else f"the {tier} tier"
        plan.problem = (f"needs {plan.fetch_bytes} bytes but {which} has room for "
                        f"{plan.headroom}")
    return plan
