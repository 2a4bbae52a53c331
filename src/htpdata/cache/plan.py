"""What to fetch and what to wait for: the single-flight fetch plan (pure, no I/O).

:func:`plan_fetch` turns the ranges a read still misses into the requests this process sends
upstream and the ranges it waits for because another process is fetching them. It adds what is
worth fetching along: a ROOT file's exact metadata extents once its header was read (keys list,
streamer info: every opener reads them next; see :mod:`.rootfile`), or fixed head and tail
blocks if configured, and fills gaps only where the cost model of :class:`Limits` says a gap
costs less than the range or round trip it saves (:func:`fill_gaps`; no merged range longer
than ``max_request`` unless one asked range is). :func:`yield_to_earlier`
settles overlapping claims published at the same moment: every byte is fetched by the
earliest live claim covering it, so exactly one process fetches it whatever order the
claims were seen in. "Earliest" is the order in which the claims reached the folder: their
files' modification times as the storage stamped them (seen once, at first sight; one clock for
every node), then their names. A claim that reached the folder before another is in the other's
listing made after publishing, so the later one always yields (see :func:`yield_to_earlier`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .ranges import Range, merge, subtract, total

__all__ = ["ClaimView", "FetchPlan", "Limits", "backoff", "fill_gaps", "intersect",
           "plan_fetch", "yield_to_earlier"]


@dataclass(frozen=True)
class Limits:
    """The cost model of an upstream request, and the bounds derived from it.

    A request costs one round trip plus its bytes; a vector read carries at most
    ``max_ranges`` ranges (more go in further requests, one round trip each), and each range
    costs about as much as ``merge_gap`` bytes (the server's seek, the chunk's framing). So a
    gap between two missing ranges is worth fetching (filled) only when it is cheaper than
    the range it saves: at most ``merge_gap`` bytes, and all filled gaps of a request together
    at most ``fill_ratio`` of the bytes asked (a cold read never moves much more than a
    direct one). When a request has more than ``max_ranges`` ranges, the smallest further
    gaps are filled if what they add is less than the round trips they save
    (``round_trip_bytes`` each: the bytes the link moves in one round trip)."""

    merge_gap: int = 4 * 1024
    """The largest gap worth filling (the per-range cost, in bytes)."""
    max_request: int = 4 * 1024**2
    """No merged range longer than this (unless one asked range is)."""
    head: int = 0
    """Fixed bytes at the start added on a file's first read (0: the exact ROOT extents)."""
    tail: int = 0
    """Fixed bytes at the end added on a file's first read (0: the exact ROOT extents)."""
    fill_ratio: float = 0.02
    """Filled gaps add at most this fraction of the bytes asked."""
    max_ranges: int = 1024
    """Ranges one vector read carries (XRootD's kXR_readv default)."""
    round_trip_bytes: int = 1024**2
    """What one round trip is worth in bytes (about 50 ms at 20 MB/s)."""
    unclaimed: int = 16 * 1024
    """A reader's first fetch batch of a file, if at most this many bytes, takes no claim (a
    ROOT file's first read is a few hundred bytes): fetching it twice costs less than the
    claim's metadata operations (create, list, remove: each a round trip to the metadata
    server), and its bytes are stored with the next batch's pack instead of in one of their
    own (0: every batch claims)."""


@dataclass(frozen=True)
class ClaimView:
    """Another process's claim as seen in a listing: its name, ranges, and when it reached the
    folder (``born``: its file's mtime in ns as first seen; 0 unknown, then names decide)."""

    name: str
    ranges: tuple[Range, ...]
    born: int = 0

    def before(self, name: str, born: int = 0) -> bool:
        """Did this claim reach the folder before claim ``name`` (that reached it at
        ``born``)? By the storage's time stamps when both are known, then by name."""
        if self.born and born and self.born != born:
            return self.born < born
        return self.name < name


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
               limits: Limits = Limits(), along: Sequence[Range] = ()) -> FetchPlan:
    """What to fetch and what to wait for, given the ranges still ``missing`` (within a file
    of ``size`` bytes), whether this is the file's first read anywhere (add the fixed head
    and tail, if any), the ranges held already, the other processes' live ``claims``, and
    ranges worth fetching ``along`` with this request (a ROOT file's metadata extents, which
    every opener reads next: see :mod:`.rootfile`)."""
    want = merge((max(0, s), min(e, size)) for s, e in missing)
    want = subtract(want, held)
    extra: list[Range] = [(max(0, s), min(e, size)) for s, e in along]
    if first_touch and size > 0:
        extra += [(0, min(limits.head, size)), (max(0, size - limits.tail), size)]
    extra = subtract(extra, held) if want else []
    busy = merge(r for c in claims for r in c.ranges)
    wait = intersect(want, busy)
    todo = subtract(want + extra, busy)
    # Gap filling may bridge bytes already held (harmless) but never bytes another process
    # is fetching (that would fetch them twice).
    fetch = subtract(fill_gaps(todo, limits), busy)
    return FetchPlan(fetch, wait)


def fill_gaps(ranges: Sequence[Range], limits: Limits = Limits()) -> list[Range]:
    """``ranges`` merged across the gaps worth filling under ``limits``' cost model (see
    :class:`Limits`): smallest gaps first, each at most ``merge_gap``, together at most
    ``fill_ratio`` of the bytes asked; beyond ``max_ranges`` ranges, further smallest gaps
    while they cost less than the round trips they save. No merged range grows past
    ``max_request``. Sorted, disjoint, covering every input byte."""
    rs = merge(ranges)
    if len(rs) < 2:
        return rs
    gap = [rs[i + 1][0] - rs[i][1] for i in range(len(rs) - 1)]
    order = sorted(range(len(gap)), key=lambda i: (gap[i], i))
    groups = _Groups(rs, limits.max_request)
    budget, spent, k = limits.fill_ratio * total(rs), 0, 0
    for k, i in enumerate(order):  # noqa: B007 (k is where the second pass starts)
        if gap[i] > limits.merge_gap or spent + gap[i] > budget:
            break
        if groups.join(i):
            spent += gap[i]
    else:
        k = len(order)
    per = max(1, limits.max_ranges)
    rest = order[k:]
    while groups.count > per and rest:
        drop = groups.count - per * ((groups.count - 1) // per)  # ranges fewer: one request
        saved = groups.copy()
        cost, joined = 0, 0
        while rest and joined < drop and cost <= limits.round_trip_bytes:
            i = rest.pop(0)
            if saved.join(i):
                cost, joined = cost + gap[i], joined + 1
        if joined < drop or cost > limits.round_trip_bytes:
            break  # not worth a round trip: keep the ranges as they are
        groups = saved
    return groups.ranges()


class _Groups:
    """Runs of consecutive ranges merged across filled gaps, none longer than ``cap``."""

    def __init__(self, rs: list[Range], cap: int) -> None:
        self.rs, self.cap = rs, cap
        self.first = list(range(len(rs)))  # for the last range of a run: its first
        self.last = list(range(len(rs)))  # for the first range of a run: its last
        self.count = len(rs)

    def copy(self) -> _Groups:
        g = _Groups.__new__(_Groups)
        g.rs, g.cap, g.count = self.rs, self.cap, self.count
        g.first, g.last = list(self.first), list(self.last)
        return g

    def join(self, i: int) -> bool:
        """Fill the gap after range ``i`` if the run stays within the cap."""
        a, b = self.first[i], self.last[i + 1]
        if self.rs[b][1] - self.rs[a][0] > self.cap:
            return False
        self.last[a], self.first[b] = b, a
        self.count -= 1
        return True

    def ranges(self) -> list[Range]:
        out, i = [], 0
        while i < len(self.rs):
            j = self.last[i]
            out.append((self.rs[i][0], self.rs[j][1]))
            i = j + 1
        return out


def yield_to_earlier(mine: str, ranges: Sequence[Range], claims: Sequence[ClaimView],
                     needed: Sequence[Range] | None = None, born: int = 0) -> FetchPlan:
    """After publishing claim ``mine`` for ``ranges`` (it reached the folder at ``born``, its
    mtime in ns; 0: unknown) and listing again: the parts to fetch (no earlier claim covers
    them, see :meth:`ClaimView.before`) and the parts to wait for (an earlier one does and the
    caller ``needed`` them; default: all of ``ranges``). What was only fetched along (a ROOT
    file's metadata extents, filled gaps) is left to the earlier claim, never waited for: a
    reader that waited for bytes it did not ask for would wait on a pack it never reads.

    Why the storage's time stamps and not the names' clock: a claim named earlier (its
    writer's clock read first) can reach the folder after another process published and
    listed, on another node or behind a slow round trip; by names both would fetch (the later
    one never saw it, the earlier one wins by name). By arrival, the one that arrived later saw
    the other in its listing and yields; the one that arrived first fetches, whether it saw
    the other or not. Equal stamps (a coarse clock) fall back to names."""
    earlier = merge(r for c in claims if c.before(mine, born) for r in c.ranges)
    covered = intersect(ranges, earlier)
    wait = covered if needed is None else intersect(covered, merge(needed))
    return FetchPlan(subtract(ranges, earlier), wait)


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds a waiter sleeps before its ``attempt``-th look: 5 ms doubling, then between
    100 and 250 ms with jitter (waiters on many nodes do not poll in step)."""
    r = rng or random
    step = 0.005 * 2 ** min(attempt, 10)
    cap = r.uniform(0.1, 0.25)
    return min(step, cap) * r.uniform(0.8, 1.2) if step < cap else cap
