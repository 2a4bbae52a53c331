"""The cache's pure decisions: range merging, subtraction and covering."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from htpdata.cache.ranges import coalesce, cover, merge, split, subtract

ranges = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=12)


def as_set(rs: list[tuple[int, int]]) -> set[int]:
    return {i for s, e in rs for i in range(s, e)}


def test_merge_examples() -> None:
    assert merge([(5, 10), (0, 3), (3, 4), (20, 30)]) == [(0, 4), (5, 10), (20, 30)]
    assert merge([(0, 3), (5, 10)], gap=2) == [(0, 10)]
    assert merge([(4, 4), (1, 0)]) == []


def test_subtract_examples() -> None:
    assert subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], []) == [(0, 10)]


def test_cover_prefers_long_extents_and_detects_holes() -> None:
    pieces = cover((5, 25), [(0, 10), (0, 20), (15, 30)])
    assert pieces is not None
    assert [(p.extent, p.start, p.end) for p in pieces] == [((0, 20), 5, 20), ((15, 30), 20, 25)]
    assert cover((5, 25), [(0, 10), (12, 30)]) is None
    assert cover((3, 3), []) == []


def test_split_and_coalesce() -> None:
    assert split((0, 10), 4) == [(0, 4), (4, 8), (8, 10)]
    assert coalesce([(0, 4), (5, 9), (10, 30)], gap=1, max_size=10) == [(0, 9), (10, 30)]


@given(ranges, st.integers(0, 20))
def test_merge_preserves_bytes(rs: list[tuple[int, int]], gap: int) -> None:
    out = merge(rs, gap)
    assert as_set(rs) <= as_set(out)
    if gap == 0:
        assert as_set(out) == as_set(rs)
    assert all(a[1] + gap < b[0] for a, b in itertools.pairwise(out))


@given(ranges, ranges)
def test_subtract_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    assert as_set(subtract(a, b)) == as_set(a) - as_set(b)


@given(ranges, st.tuples(st.integers(0, 500), st.integers(0, 80)))
def test_cover_is_exact_when_covered(extents: list[tuple[int, int]], r: tuple[int, int]) -> None:
    want = (r[0], r[0] + r[1])
    pieces = cover(want, extents)
    covered = set(range(*want)) <= as_set(extents)
    assert (pieces is not None) == covered
    if pieces:
        assert pieces[0].start == want[0]
        assert pieces[-1].end == want[1]
        assert all(p.end == q.start for p, q in itertools.pairwise(pieces))
        assert all(p.extent[0] <= p.start < p.end <= p.extent[1] for p in pieces)


@given(ranges, st.integers(0, 16), st.integers(1, 64))
def test_coalesce_bounds_size(rs: list[tuple[int, int]], gap: int, size: int) -> None:
    out = coalesce(rs, gap, size)
    assert as_set(rs) <= as_set(out)
    longest_input = max((e - s for s, e in rs), default=0)
    assert all(e - s <= max(size, longest_input) for s, e in out)
