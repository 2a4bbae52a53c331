"""What to fetch and what to wait for: the single-flight fetch plan (pure, no I/O).

:func:`plan_fetch` turns the ranges a read still misses into the requests this process sends
upstream and the ranges it waits for because another process is fetching them. It adds the head
and tail of a file on its first read (ROOT's header, keys and streamers: every later open needs
them) and merges what it sends with bounded coalescing (gaps filled up to ``merge_gap``, no
merged range longer than ``max_request`` unless one asked range is). :func:`yield_to_earlier`
settles overlapping claims published at the same moment: every byte is fetched by the
earliest-named live claim covering it, so exactly one process fetches it whatever order the
claims were seen in (names sort by their writer's clock; skew between nodes can only make two
processes fetch the same bytes, never none). Later streams (next-file prefetch, exact ROOT head
and tail) extend these functions, not the I/O around them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .ranges import Range, coalesce, merge, subtract

__all__ = ["ClaimView", "FetchPlan", "Limits", "backoff", "intersect", "plan_fetch",
           "yield_to_earlier"]


@dataclass(frozen=True)
class Limits:
    merge_gap: int = 64 * 1024
    """Missing ranges at most this far apart are fetched as one (the gap comes along)."""
    max_request: int = 4 * 1024**2
    """No merged range longer than this (unless one asked range is)."""
    head: int = 64 * 1024
    tail: int = 1024**2


@dataclass(frozen=True)
class ClaimView:
    """Another process's claim as seen in a listing: its name (sorts by time) and ranges."""

    name: str
    ranges: tuple[Range, ...]


@dataclass(frozen=True)
class FetchPlan:
    fetch: list[Range] = field(default_factory=list)
    """Ranges to request upstream (sorted, disjoint, coalesced)."""
    wait: list[Range] = field(default_factory=list)
    """Ranges another process is fetching (sorted, disjoint)."""


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """The bytes of ``a`` that are also in ``b`` (sorted, disjoint)."""
    return subtract(a, subtract(a, b))


def plan_fetch(missing: Sequence[Range], *, size: int, first_touch: bool,
               held: Sequence[Range] = (), claims: Sequence[ClaimView] = (),
               limits: Limits = Limits()) -> FetchPlan:
    """What to fetch and what to wait for, given the ranges still ``missing`` (within a file
    of ``size`` bytes), whether this is the file's first read anywhere (add head and tail),
    the ranges held already, and the other processes' live ``claims``."""
    want = merge((max(0, s), min(e, size)) for s, e in missing)
    want = subtract(want, held)
    extra: list[Range] = []
    if first_touch and size > 0:
        extra = subtract([(0, min(limits.head, size)), (max(0, size - limits.tail), size)],
                         held)
    busy = merge(r for c in claims for r in c.ranges)
    wait = intersect(want, busy)
    todo = subtract(want + extra, busy)
    # Gap filling may bridge bytes already held (harmless) but never bytes another process
    # is fetching (that would fetch them twice).
    fetch = subtract(coalesce(todo, limits.merge_gap, limits.max_request), busy)
    return FetchPlan(fetch, wait)


def yield_to_earlier(mine: str, ranges: Sequence[Range], claims: Sequence[ClaimView]
                     ) -> FetchPlan:
    """After publishing claim ``mine`` for ``ranges`` and listing again: the parts to fetch
    (no earlier-named claim covers them) and the parts to wait for (an earlier one does)."""
    earlier = merge(r for c in claims if c.name < mine for r in c.ranges)
    return FetchPlan(subtract(ranges, earlier), intersect(ranges, earlier))


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds a waiter sleeps before its ``attempt``-th look: 5 ms doubling, then between
    100 and 250 ms with jitter (waiters on many nodes do not poll in step)."""
    r = rng or random
    step = 0.005 * 2 ** min(attempt, 10)
    cap = r.uniform(0.1, 0.25)
    return min(step, cap) * r.uniform(0.8, 1.2) if step < cap else cap
