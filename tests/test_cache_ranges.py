"""The cache's pure decisions: range arithmetic, the O(log n) cover, the fetch plan, the pack
format, the trust model, the eviction policies and the settings' checks."""

from __future__ import annotations

import functools
import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htpdata.cache.evict import area_need, choose_victims, needed_bytes, parse_quotas
from htpdata.cache.fsops import write_chunks
from htpdata.cache.pack import (
    BLOCK,
    COMPLETE,
    BlockSummer,
    PackError,
    block_sums,
    encode,
    parse_head,
    span,
    verify_blocks,
)
from htpdata.cache.plan import ClaimView, Limits, backoff, plan_fetch, yield_to_earlier
from htpdata.cache.ranges import Spans, coalesce, merge, split, subtract
from htpdata.cache.scan import EntryStat
from htpdata.cache.trust import (
    GROUP,
    TRUSTED,
    USER,
    AreaSpec,
    Me,
    TierOwner,
    accepted,
    area_problem,
    is_private,
    read_areas,
    write_area,
)
from htpdata.config import load_settings
from htpdata.errors import ConfigError

ranges = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=12)


def as_set(rs: list[tuple[int, int]]) -> set[int]:
    return {i for s, e in rs for i in range(s, e)}


# -- ranges --------------------------------------------------------------------------------------
def test_merge_examples() -> None:
    assert merge([(5, 10), (0, 3), (3, 4), (20, 30)]) == [(0, 4), (5, 10), (20, 30)]
    assert merge([(0, 3), (5, 10)], gap=2) == [(0, 10)]
    assert merge([(4, 4), (1, 0)]) == []


def test_subtract_examples() -> None:
    assert subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]


def test_spans_cover_prefers_long_pieces_and_detects_holes() -> None:
    spans = Spans([(0, 10, "a"), (0, 20, "b"), (15, 30, "c")])
    assert spans.cover((5, 25)) == [(5, 20, "b"), (20, 25, "c")]
    assert Spans([(0, 10, "a"), (12, 30, "b")]).cover((5, 25)) is None
    assert Spans([]).cover((3, 3)) == []
    assert Spans([(0, 10, "a"), (12, 30, "b")]).parts((5, 25)) == [(5, 10, "a"), (12, 25, "b")]


def test_split_and_coalesce() -> None:
    assert split((0, 10), 4) == [(0, 4), (4, 8), (8, 10)]
    assert coalesce([(0, 10), (12, 20), (25, 30)], gap=2, max_size=100) == [(0, 20), (25, 30)]
    assert coalesce([(0, 10), (12, 20)], gap=2, max_size=15) == [(0, 10), (12, 20)]
    assert coalesce([(0, 50)], gap=2, max_size=15) == [(0, 50)]


@given(ranges, ranges)
def test_subtract_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    out = subtract(a, b)
    assert as_set(out) == as_set(a) - as_set(b)
    assert out == merge(out)


@given(ranges, st.integers(0, 40), st.integers(1, 200))
def test_coalesce_covers_everything_and_respects_the_cap(rs: list[tuple[int, int]], gap: int,
                                                         cap: int) -> None:
    out = coalesce(rs, gap, cap)
    assert as_set(rs) <= as_set(out)
    assert out == sorted(out)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(out))
    longest = max((e - s for s, e in rs), default=0)
    assert all(e - s <= max(cap, longest) for s, e in out)


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 80)), max_size=40), ranges)
def test_spans_parts_agree_with_a_brute_force_walk(pieces: list[tuple[int, int]],
                                                   asks: list[tuple[int, int]]) -> None:
    items = [(s, s + n, i) for i, (s, n) in enumerate(pieces)]
    spans = Spans(items)
    for r in asks:
        parts = spans.parts(r)
        got = as_set([(lo, hi) for lo, hi, _ in parts])
        want = as_set([r]) & as_set([(s, e) for s, e, _ in items])
        assert got == want
        for lo, hi, ref in parts:  # each part lies inside the piece named for it
            s, e, _ = items[ref]
            assert s <= lo < hi <= e
        held = spans.cover(r)
        assert (held is not None) == (want == as_set([r]))


def test_spans_lookup_stays_fast_with_many_pieces() -> None:
    """16,000 pieces: a lookup is a few bisections, not a scan (13.2)."""
    import time

    spans = Spans([(i * 100, i * 100 + 60, i) for i in range(16_000)])
    t0 = time.perf_counter()
    for i in range(2000):
        spans.parts((i * 733 % 1_600_000, i * 733 % 1_600_000 + 50))
    per = (time.perf_counter() - t0) / 2000
    assert per < 1e-3, f"{per * 1e3:.3f} ms per lookup"


# -- the fetch plan ------------------------------------------------------------------------------
limits = Limits(merge_gap=16, max_request=120, head=20, tail=30)


def test_plan_adds_head_and_tail_once_and_waits_for_others() -> None:
    plan = plan_fetch([(100, 150)], size=1000, first_touch=True, limits=limits)
    assert plan.fetch == [(0, 20), (100, 150), (970, 1000)]
    assert plan.wait == []
    plan = plan_fetch([(100, 150)], size=1000, first_touch=True, limits=limits,
                      claims=[ClaimView("c.1", ((120, 200),))])
    assert plan.wait == [(120, 150)]
    assert (120, 150) not in plan.fetch
    assert all(e <= 120 or s >= 200 for s, e in plan.fetch)


@given(ranges, st.lists(ranges, max_size=3), ranges, st.booleans())
@settings(max_examples=300)
def test_plan_fetches_or_waits_for_every_missing_byte_once(
        missing: list[tuple[int, int]], claims: list[list[tuple[int, int]]],
        held: list[tuple[int, int]], first: bool) -> None:
    size = 600
    views = [ClaimView(f"c.{i}", tuple(c)) for i, c in enumerate(claims)]
    plan = plan_fetch(missing, size=size, first_touch=first, held=held, claims=views,
                      limits=limits)
    need = as_set(missing) - as_set(held)
    busy = as_set([r for c in claims for r in c])
    fetch, wait = as_set(plan.fetch), as_set(plan.wait)
    assert need <= fetch | wait  # nothing missing is forgotten
    assert not fetch & busy  # nothing another process fetches is fetched again
    assert wait <= busy
    assert all(0 <= s < e <= size for s, e in plan.fetch)
    assert plan.fetch == sorted(plan.fetch)


@given(st.lists(st.tuples(st.integers(0, 9), ranges), min_size=1, max_size=5))
def test_overlapping_claims_settle_on_exactly_one_fetcher(
        claims: list[tuple[int, list[tuple[int, int]]]]) -> None:
    """Whatever each claimant saw, every byte someone claimed is fetched by exactly one of
    them: the earliest-named claim covering it."""
    views = [ClaimView(f"c.{t:02d}.{i}", tuple(merge(rs))) for i, (t, rs) in enumerate(claims)]
    fetchers: dict[int, int] = {}
    for v in views:
        others = [o for o in views if o is not v]
        plan = yield_to_earlier(v.name, list(v.ranges), others)
        for b in as_set(plan.fetch):
            fetchers[b] = fetchers.get(b, 0) + 1
        assert as_set(plan.fetch) | as_set(plan.wait) == as_set(list(v.ranges))
    claimed = as_set([r for v in views for r in v.ranges])
    assert set(fetchers) == claimed
    assert all(n == 1 for n in fetchers.values())


@given(ranges, st.lists(ranges, max_size=3), ranges)
def test_a_claimant_waits_only_for_bytes_it_needs(
        mine: list[tuple[int, int]], claims: list[list[tuple[int, int]]],
        needed: list[tuple[int, int]]) -> None:
    """Bytes taken along (not needed) that an earlier claim covers are neither fetched nor
    waited for; needed ones are fetched or waited for, as without ``needed``."""
    views = [ClaimView(f"c.0{i}", tuple(merge(c))) for i, c in enumerate(claims)]
    plain = yield_to_earlier("c.1", merge(mine), views)
    plan = yield_to_earlier("c.1", merge(mine), views, needed=needed)
    assert plan.fetch == plain.fetch
    assert as_set(plan.wait) == as_set(plain.wait) & as_set(needed)
    assert as_set(merge(mine)) & as_set(needed) <= as_set(plan.fetch) | as_set(plan.wait)


def test_backoff_grows_to_between_100_and_250_ms() -> None:
    rng = random.Random(1)
    steps = [backoff(i, rng) for i in range(20)]
    assert steps[0] < 0.01
    assert all(0.1 <= s <= 0.25 for s in steps[8:])
    assert len({round(s, 4) for s in steps[8:]}) > 5  # jitter


# -- packs ---------------------------------------------------------------------------------------
KEY = "ab" * 20


@given(st.lists(st.tuples(st.integers(0, 5000), st.binary(min_size=1, max_size=3000)),
                max_size=6), st.sampled_from([64, 4096, BLOCK]))
@settings(max_examples=100)
def test_pack_round_trip_and_every_byte_verified(pieces: list[tuple[int, bytes]],
                                                 block: int) -> None:
    size = 10_000
    chunks = encode(KEY, size, {"name": "t:/f", "learnt": 1.0}, pieces,
                    blobs=[("meta", b"{}")], block=block)
    data = b"".join(bytes(c) for c in chunks)
    head = parse_head(data, len(data))
    assert head.key == KEY
    assert head.size == size
    assert head.info["name"] == "t:/f"
    assert [(r.start, r.length) for r in head.ranges()] == [(s, len(d)) for s, d in pieces]
    assert head.blob("meta") is not None
    for rec, (_, want) in zip(head.ranges(), pieces, strict=True):
        lo, hi = 0, rec.length
        first, off, n = span(rec, lo, hi, block)
        assert verify_blocks(rec, first, data[off:off + n], block)
        assert data[off:off + n] == want


@given(st.lists(st.binary(max_size=300), max_size=12), st.sampled_from([7, 64, 256]))
@settings(max_examples=100)
def test_block_sums_fed_in_pieces_are_those_of_the_whole(pieces: list[bytes],
                                                         block: int) -> None:
    summer = BlockSummer(block)
    for piece in pieces:
        summer.feed(piece)
    assert summer.sums() == block_sums(b"".join(pieces), block)


@given(st.lists(st.binary(max_size=300), max_size=12), st.sampled_from([1, 100, 1000]),
       st.sampled_from([None, 0, 17]))
@settings(max_examples=60)
def test_chunks_written_in_batches_land_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                 pieces: list[bytes], batch: int,
                                                 offset: int | None) -> None:
    path = tmp_path_factory.mktemp("w") / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert write_chunks(fd, iter(pieces), offset, batch=batch) == sum(map(len, pieces))
    finally:
        os.close(fd)
    got = path.read_bytes()
    assert got[offset or 0:] == b"".join(pieces)


def test_torn_and_damaged_packs_are_refused() -> None:
    chunks = encode(KEY, 1000, {"name": "t:/f"}, [(0, b"x" * 300), (500, b"y" * 200)])
    data = b"".join(bytes(c) for c in chunks)
    head = parse_head(data, len(data))
    with pytest.raises(PackError, match="torn"):
        parse_head(data[:-10], len(data) - 10)  # truncated: a crash, a full disk
    bad = bytearray(data)
    bad[100] ^= 1  # the head itself damaged
    with pytest.raises(PackError):
        parse_head(bytes(bad), len(bad))
    rec = head.ranges()[1]
    flipped = bytearray(data)
    flipped[rec.offset + 5] ^= 0xFF  # a data block damaged: its checksum says so
    first, off, n = span(rec, 0, rec.length, head.block)
    assert not verify_blocks(rec, first, bytes(flipped[off:off + n]), head.block)
    with pytest.raises(PackError, match="magic"):
        parse_head(b"\0" * 200, 200)
    with pytest.raises(ValueError, match="outside"):
        encode(KEY, 100, {}, [(90, b"z" * 20)])
    empty = b"".join(bytes(c) for c in encode(KEY, 0, {}, [], flags=COMPLETE))
    assert parse_head(empty, len(empty)).complete


# -- trust ----------------------------------------------------------------------------------------
OWNER = TierOwner(500, 600)
ALICE = Me(1001, 600, frozenset({600}))
EVE = Me(1009, 1009, frozenset({1009}))


def test_where_writes_go_and_what_is_read() -> None:
    assert write_area(ALICE, OWNER, "owner", private=False) == AreaSpec(USER, 1001)
    assert write_area(ALICE, OWNER, "group", private=False) == AreaSpec(GROUP)
    assert write_area(ALICE, OWNER, "group", private=True) == AreaSpec(USER, 1001)
    assert write_area(EVE, OWNER, "group", private=False) == AreaSpec(USER, 1009)
    owner = Me(500, 600, frozenset({600}))
    assert write_area(owner, OWNER, "owner", private=False) == AreaSpec(TRUSTED)
    assert write_area(owner, OWNER, "owner", private=True) == AreaSpec(USER, 500)
    assert read_areas(ALICE, OWNER, "owner") == [AreaSpec(USER, 1001), AreaSpec(TRUSTED)]
    assert AreaSpec(GROUP) in read_areas(ALICE, OWNER, "group")
    assert AreaSpec(GROUP) not in read_areas(EVE, OWNER, "group")


def test_who_is_accepted_where() -> None:
    assert accepted(AreaSpec(USER, 1001), 1001, OWNER)
    assert not accepted(AreaSpec(USER, 1001), 1002, OWNER)  # a co-tenant's planted file
    assert accepted(AreaSpec(TRUSTED), 500, OWNER)
    assert not accepted(AreaSpec(TRUSTED), 1001, OWNER)
    assert all(accepted(AreaSpec(k, 1001), 0, OWNER) for k in (USER, TRUSTED, GROUP))


def test_planted_or_loose_area_folders_are_refused() -> None:
    def st(uid: int, mode: int, gid: int = 600) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 2, uid, gid, 4096, 0, 0, 0))

    assert area_problem(AreaSpec(USER, 1001), st(1001, 0o40700), OWNER) is None
    assert "planted" in (area_problem(AreaSpec(USER, 1001), st(1002, 0o40700), OWNER) or "")
    assert "writable" in (area_problem(AreaSpec(USER, 1001), st(1001, 0o40777), OWNER) or "")
    assert area_problem(AreaSpec(TRUSTED), st(500, 0o40755), OWNER) is None
    assert area_problem(AreaSpec(TRUSTED), st(1001, 0o40755), OWNER) is not None
    assert area_problem(AreaSpec(GROUP), st(500, 0o43770), OWNER) is None
    assert area_problem(AreaSpec(GROUP), st(500, 0o40775), OWNER) is not None


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 300])
def test_a_listing_from_the_descriptor_names_everything_and_leaves_it_rewound(
        tmp_path: Path, count: int) -> None:
    """``list_names`` (``getdents64`` on the descriptor, no ``fstat``, no call for the end after
    a short reply) names what ``os.listdir`` does, around :data:`SHORT_REPLY` and over many
    replies, again from the start, and leaves the descriptor where ``os.scandir`` expects it."""
    from htpdata.cache.fsops import Folder, list_names

    names = sorted(f"p.{i:04d}." + "x" * (i % 240) for i in range(count))
    for n in names:
        (tmp_path / n).write_bytes(b"")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sorted(list_names(fd)) == names
        assert sorted(list_names(fd)) == names
        with os.scandir(fd) as it:
            assert sorted(e.name for e in it) == names
    finally:
        os.close(fd)
    with Folder.open_root(str(tmp_path)) as root:
        assert sorted(root.list()) == names


def test_a_listing_while_this_process_publishes_a_pack_leaves_it_to_the_publisher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing that sees this process's pack between its rename and :meth:`Entry.add_own`
    does not open it (an open, an ``fstat`` and a head read on the reading thread, on a
    network filesystem); once added, later listings keep it."""
    from htpdata.cache.entry import Entry
    from htpdata.cache.fsops import Folder
    from htpdata.cache.pack import encode, parse_head

    opened: list[str] = []
    real_open = Entry._open_pack

    def counting(self: Entry, name: str) -> object:
        opened.append(name)
        return real_open(self, name)

    monkeypatch.setattr(Entry, "_open_pack", counting)
    key = "ab" * 20
    chunks = encode(key, 10, {}, [(0, b"0123456789")])
    data = b"".join(bytes(c) for c in chunks)
    folder = Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), str(tmp_path), None)
    entry = Entry("trusted", "k" * 40, folder, lambda uid: True, lambda uid: True)
    try:
        with entry.publishing("p.1"):
            (tmp_path / "p.1").write_bytes(data)  # the rename has landed
            entry.load()
            assert opened == []
            assert "p.1" not in entry.packs
            entry.add_own("p.1", parse_head(bytes(chunks[0]), len(data)), os.geteuid())
        entry.load()
        assert opened == []
        assert "p.1" in entry.packs
        assert entry.read(key, [(2, 5)]) == [(2, b"234")]
        (tmp_path / "p.2").write_bytes(data)  # someone else's, or another process's
        entry.load()
        assert opened == ["p.2"]
    finally:
        entry.close()


def test_claims_compared_at_once_are_all_ordered_by_their_stamps(tmp_path: Path) -> None:
    """Two claims of this process (O named first, A arrived first) and another node's F that
    arrived between them: each sees the other two, this process's own with their stamps
    (``Entry.with_stamps``), so exactly one, A, fetches. Ordering this process's own by name
    and the others by stamp made each of the three find an earlier one: nobody fetched."""
    from htpdata.cache.entry import Entry
    from htpdata.cache.fsops import Folder
    from htpdata.cache.plan import ClaimView, yield_to_earlier

    ranges = [(0, 100)]
    arrived = {"c.01.o": 300, "c.02.a": 100, "c.03.f": 200}
    folder = Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), str(tmp_path), None)
    entry = Entry("trusted", "k" * 40, folder, lambda uid: True, lambda uid: True)
    try:
        for own in ("c.01.o", "c.02.a"):
            entry.own_claim(own, ranges, functools.partial(arrived.__getitem__, own))
        fetching = []
        for me in arrived:
            if me == "c.03.f":  # the other node sees ours by their files' mtimes
                others = [ClaimView(n, tuple(ranges), arrived[n]) for n in arrived if n != me]
            else:  # this process: its own listed without a stamp, then stamped
                others = entry.with_stamps([ClaimView(n, tuple(ranges), arrived[n] if
                                                      n == "c.03.f" else 0)
                                            for n in arrived if n != me])
            if yield_to_earlier(me, ranges, others, born=arrived[me]).fetch:
                fetching.append(me)
        assert fetching == ["c.02.a"]
    finally:
        for own in ("c.01.o", "c.02.a"):
            entry.own_claim_gone(own)
        entry.close()


def test_a_listing_during_a_merge_keeps_the_old_packs_until_they_are_replaced(
        tmp_path: Path) -> None:
    """While this process merges its packs into one, a listing that finds the old ones gone
    and the new one there changes nothing: the old ones serve until ``replace_own``."""
    from htpdata.cache.entry import Entry
    from htpdata.cache.fsops import Folder
    from htpdata.cache.pack import encode, parse_head

    key = "ab" * 20
    folder = Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), str(tmp_path), None)
    entry = Entry("trusted", "k" * 40, folder, lambda uid: True, lambda uid: True)
    try:
        for name, start in (("p.1", 0), ("p.2", 10)):
            (tmp_path / name).write_bytes(b"".join(bytes(c) for c in encode(
                key, 20, {}, [(start, bytes(range(start, start + 10)))])))
        entry.load()
        assert entry.held(key) == [(0, 20)]
        merged = encode(key, 20, {}, [(0, bytes(range(20)))])
        with entry.publishing("p.3", "p.1", "p.2"):
            (tmp_path / "p.3").write_bytes(b"".join(bytes(c) for c in merged))
            (tmp_path / "p.1").unlink()
            (tmp_path / "p.2").unlink()
            entry.load()  # another thread's listing, in the window
            assert entry.held(key) == [(0, 20)]
            assert set(entry.packs) == {"p.1", "p.2"}
            data = (tmp_path / "p.3").read_bytes()
            fd = os.open(tmp_path / "p.3", os.O_RDONLY)
            entry.replace_own(["p.1", "p.2"], "p.3", parse_head(data, len(data)), os.geteuid(),
                              fd)
        entry.load()
        assert set(entry.packs) == {"p.3"}
        assert entry.read(key, [(5, 15)]) == [(5, bytes(range(5, 15)))]
    finally:
        entry.close()


def test_walked_folders_are_held_o_path_and_closed_ones_opened_readable(tmp_path: Path) -> None:
    """``Folder.open(listable=False)``: a folder this user may list is held ``O_PATH`` (one
    round trip less on a network filesystem) and still lists and changes mode; one whose bits
    close it to this user is opened readable, so the kernel answers (root included)."""
    from htpdata.cache.fsops import Folder, may_list

    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open" / "x").write_bytes(b"")
    with Folder.open_root(str(tmp_path)) as root:
        with root.open("open", listable=False) as f:
            assert f.path_only
            assert [e.name for e in f.names()] == ["x"]
            f.chmod(0o750)
            assert f.st.st_mode & 0o777 == 0o750
        with root.open("open") as f:
            assert not f.path_only
        if os.geteuid() == 0:  # another user's closed folder: opened readable, root may
            (tmp_path / "closed").mkdir(mode=0o700)
            os.chown(tmp_path / "closed", 65534, 65534)
            with root.open("closed", listable=False) as f:
                assert not f.path_only
                assert f.names() == []
    other = os.stat_result((0o40700, 0, 0, 2, os.geteuid() + 1, os.getegid() + 1, 0, 0, 0, 0))
    assert not may_list(other)  # another user's 0700 folder: judged by its bits, root too
    mine = os.stat_result((0o40700, 0, 0, 2, os.geteuid(), 0, 0, 0, 0, 0))
    assert may_list(mine)
    assert not may_list(os.stat_result((0o40711, 0, 0, 2, os.geteuid() + 1,
                                        os.getegid() + 1, 0, 0, 0, 0)))  # enter, not list


def test_private_bytes() -> None:
    assert is_private("cms:/store/x.root", credentialed=True)
    assert not is_private("cms:/store/x.root", credentialed=False)
    assert is_private("rucio:user.jdoe:f.root", credentialed=False)
    assert is_private("rucio:group.higgs:f.root", credentialed=False)
    assert not is_private("rucio:cms:/store/f.root", credentialed=False)


# -- eviction decisions --------------------------------------------------------------------------
def entry(key: str, size: int, last: float, uid: int = 1, opens: int = 1,
          pinned: float = 0.0) -> EntryStat:
    return EntryStat(key, size, last, opens, pinned, uid, 1, 1, 0)


def test_watermarks_and_the_filesystem_share() -> None:
    assert needed_bytes(total=90, size=100, high=0.95, low=0.9) == 0
    assert needed_bytes(total=96, size=100, high=0.95, low=0.9) == 6
    assert needed_bytes(total=500, size=0, high=0.95, low=0.9) == 0
    # the filesystem is 98 % full: each area frees its share down to 90 %
    assert area_need(total=1000, cap=0, fs_used=98, fs_total=100, high=0.95, low=0.9) == 81
    assert area_need(total=1000, cap=0, fs_used=50, fs_total=100, high=0.95, low=0.9) == 0


def test_lru_lfu_size_policies_pins_and_marks() -> None:
    es = [entry("a", 10, 3, opens=9), entry("b", 50, 1, opens=5), entry("c", 20, 2, opens=1)]
    assert [e.key for e in choose_victims(es, 15, "lru", 10)] == ["b"]
    assert [e.key for e in choose_victims(es, 15, "LFU", 10)] == ["c"]
    assert [e.key for e in choose_victims(es, 15, "size", 10)] == ["b"]
    assert [e.key for e in choose_victims(es, 65, "lru", 10)] == ["b", "c"]
    assert choose_victims(es, 0, "lru", 10) == []
    es = [entry("used", 10, 1), entry("pinned", 10, 2, pinned=100.0), entry("free", 10, 3),
          entry("expired", 10, 4, pinned=5.0)]
    got = [e.key for e in choose_victims(es, 1000, "lru", 50, in_use={"used"})]
    assert got == ["free", "expired"]


def test_owners_over_quota_go_first() -> None:
    es = [entry("x1", 10, 1, uid=7), entry("y1", 10, 2, uid=8), entry("y2", 10, 3, uid=8)]
    assert [e.key for e in choose_victims(es, 10, "lru", 10, over={8: 15})] == ["y1", "y2"]


def test_quota_file_content_is_checked() -> None:
    q = parse_quotas({"users": {"alice": {"hard": 100, "soft": 90}, "bob": {"hard": "x"},
                                "*": {"hard": 5}}, "groups": ["not a table"]})
    assert q["users"]["alice"].hard == 100
    assert "bob" not in q["users"]
    assert q["users"]["*"].hard == 5
    assert q["groups"] == {}


# -- settings ------------------------------------------------------------------------------------
def test_cache_settings_are_checked_when_loaded() -> None:
    env = {"HTPDATA_CACHE_POLICY": "LRU"}
    assert load_settings(env, file="/nonexistent").cache.policy == "lru"
    for var, value, key in [("HTPDATA_CACHE_POLICY", "fifo", "cache.policy"),
                            ("HTPDATA_CACHE_HIGH_WATERMARK", "95", "cache.high_watermark"),
                            ("HTPDATA_CACHE_LOW_WATERMARK", "0", "cache.low_watermark"),
                            ("HTPDATA_CACHE_LOW_WATERMARK", "0.99", "cache.low_watermark"),
                            ("HTPDATA_CACHE_TRUST", "everyone", "cache.trust"),
                            ("HTPDATA_CACHE_REVALIDATE_AFTER", "soon", "cache.revalidate_after"),
                            ("HTPDATA_CACHE_SHARED_SIZE", "lots", "cache.shared_size")]:
        with pytest.raises(ConfigError) as info:
            load_settings({var: value}, file="/nonexistent")
        assert key in str(info.value), str(info.value)
        assert var in str(info.value), str(info.value)
        assert "\n" not in str(info.value)
    assert load_settings({"HTPDATA_CACHE_REVALIDATE_AFTER": "2h"},
                         file="/nonexistent").cache.revalidate_after == 7200.0


def test_claims_are_ordered_by_arrival_not_by_their_writers_clocks() -> None:
    """A claim named earlier (its writer's clock read first) that reached the folder later
    yields to the one that arrived first: the later one saw the earlier in its listing, the
    earlier one may not have seen the later. Equal stamps fall back to names."""
    late_named_first = ClaimView("c.02", ((0, 100),), born=1_000)
    early_named_late = ClaimView("c.01", ((0, 100),), born=2_000)
    # c.01 arrived second: it yields to c.02 whatever the names say
    plan = yield_to_earlier("c.01", [(0, 100)], [late_named_first], born=2_000)
    assert plan.fetch == []
    assert plan.wait == [(0, 100)]
    # c.02 arrived first: it fetches, seeing c.01 or not
    assert yield_to_earlier("c.02", [(0, 100)], [early_named_late], born=1_000).fetch == \
        [(0, 100)]
    assert yield_to_earlier("c.02", [(0, 100)], [], born=1_000).fetch == [(0, 100)]
    tie = ClaimView("c.01", ((0, 100),), born=1_000)
    assert yield_to_earlier("c.02", [(0, 100)], [tie], born=1_000).fetch == []
    unknown = ClaimView("c.01", ((0, 100),))  # no stamp: names decide, as before
    assert yield_to_earlier("c.02", [(0, 100)], [unknown], born=1_000).fetch == []
