"""Where a ROOT file keeps its metadata (``htpdata.cache.rootfile``), and the fetch plan's
cost model (``fill_gaps``, extents taken along): pure, on every real test file, in the small
and the large header format; then a cold read through a real XRootD origin moving no more than
1.05 x the bytes a direct read moves."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import fsspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import htpdata
from htpdata.cache.plan import Limits, fill_gaps, plan_fetch
from htpdata.cache.ranges import subtract, total
from htpdata.cache.rootfile import HEAD_GUESS, NotRoot, RootLayout, parse_keys, parse_layout

from .conftest import TESTDATA

FILES = sorted(p.name for p in TESTDATA.glob("*.root"))


def to_large(data: bytes) -> bytes:
    """The same file with its header and top directory record in the large (64-bit) format
    ROOT writes for files over 2 GB: same positions of everything else (the record keeps its
    size, as ROOT reserves room for this), so any reader opens it as before."""
    small = struct.unpack_from(">iiiiiiiBiii", data, 4)
    (version, begin, end, seek_free, nbytes_free, nfree, nbytes_name, units, compress,
     seek_info, nbytes_info) = small
    uuid = data[45:63]
    head = b"root" + struct.pack(">iiqqiiiBiqi", version + 1000000, begin, end, seek_free,
                                 nbytes_free, nfree, nbytes_name, units, compress, seek_info,
                                 nbytes_info) + uuid
    assert len(head) <= begin
    at = begin + nbytes_name
    v, ctime, mtime, nkeys, nname, seekdir, parent, seekkeys = struct.unpack_from(
        ">hIIiiiii", data, at)
    duuid = data[at + 30:at + 48]
    record = struct.pack(">hIIiiqqq", v + 1000, ctime, mtime, nkeys, nname, seekdir, parent,
                         seekkeys) + duuid
    assert len(record) <= 60  # the small record plus its reserved 12 bytes
    out = bytearray(data)
    out[:len(head)] = head
    out[at:at + len(record)] = record
    return bytes(out)


def oracle(path: Path) -> dict[str, int]:
    """What uproot itself reads from the header and the top directory."""
    uproot = pytest.importorskip("uproot")
    with uproot.open(path) as f:
        return {"version": f.file.fVersion, "begin": f.file.fBEGIN, "end": f.file.fEND,
                "seek_info": f.file.fSeekInfo, "nbytes_info": f.file.fNbytesInfo,
                "nbytes_name": f.file.fNbytesName, "seek_free": f.file.fSeekFree,
                "seek_keys": f.fSeekKeys, "nbytes_keys": f.fNbytesKeys}


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
@pytest.mark.parametrize("name", FILES)
def test_layout_of_every_test_file_matches_uproot(name: str, large: bool,
                                                  tmp_path: Path) -> None:
    uproot = pytest.importorskip("uproot")
    data = (TESTDATA / name).read_bytes()
    path = TESTDATA / name
    if large:
        data = to_large(data)
        path = tmp_path / name
        path.write_bytes(data)
    want = oracle(path)
    got = parse_layout(data[:HEAD_GUESS], len(data))
    assert isinstance(got, RootLayout)
    assert got.large is large
    assert {k: getattr(got, k) for k in want} == want
    # The extents are what an opener reads: header and directory, keys list, streamer info.
    ext = got.extents(len(data))
    assert ext[0] == (0, got.head_end)
    assert got.head_end <= HEAD_GUESS
    assert subtract([(want["seek_keys"], want["seek_keys"] + want["nbytes_keys"]),
                     (want["seek_info"], want["seek_info"] + want["nbytes_info"])], ext) == []
    # The keys list names the top-level objects where uproot finds them.
    keys = parse_keys(data[got.seek_keys:got.seek_keys + got.nbytes_keys], got)
    with uproot.open(path) as f:
        assert {k.name for k in keys} == {k.split(";")[0] for k in f.keys(recursive=False)}
        for k in keys:
            assert f.classname_of(k.name) == k.classname
    # Any prefix either suffices or says how much it needs, never a wrong answer.
    for n in (0, 3, 20, 50, 60, 100, got.head_end - 1):
        short = parse_layout(data[:n], len(data))
        assert isinstance(short, int)
        assert n < short <= HEAD_GUESS


def test_garbage_is_not_root() -> None:
    data = (TESTDATA / FILES[0]).read_bytes()
    for bad in (b"PK\x03\x04" + data[4:512], b"rooX" + data[4:512]):
        with pytest.raises(NotRoot):
            parse_layout(bad, len(data))
    with pytest.raises(NotRoot, match="fEND"):
        parse_layout(data[:HEAD_GUESS], 1000)  # header points past the file
    lay = parse_layout(data[:HEAD_GUESS], len(data))
    assert isinstance(lay, RootLayout)
    with pytest.raises(NotRoot):
        parse_keys(b"\x00" * 20, lay)


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_any_bytes_give_a_layout_a_length_or_not_root(data: bytes) -> None:
    try:
        got = parse_layout(b"root" + data, 10_000)
    except NotRoot:
        return
    assert isinstance(got, int | RootLayout)
    if isinstance(got, RootLayout):
        assert all(0 <= s < e <= 10_000 for s, e in got.extents(10_000))


# -- the cost model ---------------------------------------------------------------------------
ranges = st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 300)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=40)


@given(ranges, st.integers(0, 400), st.floats(0, 1), st.integers(1, 6),
       st.integers(0, 2000), st.integers(50, 3000))
@settings(max_examples=400)
def test_gap_filling_is_bounded_by_what_it_saves(rs: list[tuple[int, int]], gap: int,
                                                 ratio: float, max_ranges: int, rtt: int,
                                                 max_request: int) -> None:
    lim = Limits(merge_gap=gap, fill_ratio=ratio, max_ranges=max_ranges,
                 round_trip_bytes=rtt, max_request=max_request)
    want = subtract(rs, [])
    got = fill_gaps(rs, lim)
    assert subtract(want, got) == []  # every asked byte
    assert got == sorted(got)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(got))
    extra = total(got) - total(want)
    requests = -(-len(want) // max_ranges)
    saved = requests - -(-len(got) // max_ranges)
    # what the fill adds: within the per-range budget, plus what the round trips saved
    assert extra <= ratio * total(want) + saved * rtt
    for s, e in got:  # merged ranges stay bounded unless one asked range was larger
        assert e - s <= max_request or (s, e) in want


def test_gap_filling_examples() -> None:
    lim = Limits(merge_gap=10, fill_ratio=0.05, max_ranges=1024)
    assert fill_gaps([(0, 100), (105, 205)], lim) == [(0, 205)]  # 5 bytes for 200: filled
    assert fill_gaps([(0, 100), (120, 220)], lim) == [(0, 100), (120, 220)]  # gap too large
    assert fill_gaps([(0, 10), (15, 25)], lim) == [(0, 10), (15, 25)]  # over 5 % of 20
    many = [(i * 20, i * 20 + 10) for i in range(6)]  # 6 ranges, 10-byte gaps
    lim = Limits(merge_gap=0, fill_ratio=0, max_ranges=4, round_trip_bytes=1000)
    assert len(fill_gaps(many, lim)) == 4  # two gaps filled: one request, not two
    lim = Limits(merge_gap=0, fill_ratio=0, max_ranges=4, round_trip_bytes=15)
    assert len(fill_gaps(many, lim)) == 6  # 20 bytes cost more than the round trip


def test_the_plan_takes_extents_along_once_and_no_fixed_blocks() -> None:
    plan = plan_fetch([(500, 600)], size=10_000, first_touch=True,
                      along=[(0, 230), (9000, 9100), (9500, 9990)],
                      limits=Limits(merge_gap=0))
    assert plan.fetch == [(0, 230), (500, 600), (9000, 9100), (9500, 9990)]
    plan = plan_fetch([(500, 600)], size=10_000, first_touch=True, held=[(0, 230)],
                      along=[(0, 230)], limits=Limits(merge_gap=0))
    assert plan.fetch == [(500, 600)]
    plan = plan_fetch([], size=10_000, first_touch=True, along=[(0, 230)])
    assert plan.fetch == []  # nothing asked: nothing taken along


# -- against a real origin --------------------------------------------------------------------
NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
URL = f"htpdata://test/store/test/{NANO}"
BRANCHES = ["Muon_pt", "Muon_eta", "Jet_pt", "MET_pt", "nElectron"]


@pytest.mark.xrootd
def test_a_cold_read_moves_at_most_1_05_x_a_direct_read(catalog_dir: Path,
                                                        tmp_path: Path) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    moved = {}
    arrays = {}
    for cache in (False, True):
        fs = fsspec.filesystem("htpdata", cache=cache, skip_instance_cache=True,
                               client=htpdata.Client(cache={
                                   "local_dir": str(tmp_path / "local"), "memory_size": 0}))
        with uproot.open(fs.open(URL)) as f:
            arrays[cache] = f["Events"].arrays(BRANCHES)
        c = fs._reader(URL).counters
        moved[cache] = (c.upstream if cache else c.bytes_read, c.upstream_requests)
    assert ak.array_equal(arrays[False], arrays[True])
    direct, cold = moved[False][0], moved[True][0]
    assert cold <= 1.05 * direct, moved
