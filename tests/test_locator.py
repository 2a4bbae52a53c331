"""The prefetch's TTree parse in a helper process (``htpdata.locator``): the same baskets as an
open in this process, from the metadata bytes it is handed (asking back for what it lacks), and
a helper that dies is a :class:`LocateFailed`, never a hang or a wrong answer."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

from htpdata.locator import ROUNDS, ChunkFile, LocateFailed, Locator, Missing, answer, baskets_in

from .conftest import TESTDATA

NANO = TESTDATA / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
ONLY = {"Events": ["nMuon", "Muon_pt", "Jet_eta"]}


def test_a_chunk_file_serves_what_it_was_given_and_names_what_it_was_not() -> None:
    f = ChunkFile(100, [(10, b"abcdef"), (16, b"ghij"), (50, b"xyz")])
    assert len(f.chunks) == 2  # adjoining chunks joined
    f.seek(12)
    assert f.read(6) == b"cdefgh"  # across the joint
    assert f.seek(-1, 2) == 99
    f.seek(48)
    with pytest.raises(Missing) as exc:
        f.read(4)
    assert exc.value.range == (48, 52)
    assert f.missing == (48, 52)
    f.seek(200)
    assert f.read(4) == b""  # past the end: nothing, as a file


def test_a_parse_of_bytes_it_lacks_asks_for_them() -> None:
    data = NANO.read_bytes()
    status, value = answer(len(data), [(0, data[:512])], ONLY)
    assert status == "missing"
    start, end = value
    assert 0 <= start < end <= len(data)
    status, value = answer(len(data), [(0, b"not a ROOT file, " * 64)], ONLY)
    assert status == "error"


def test_the_helper_locates_what_an_open_here_locates() -> None:
    pytest.importorskip("uproot")
    data = NANO.read_bytes()
    asked: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        asked.append((start, end))
        return data[start:end]

    with NANO.open("rb") as fh:
        here = baskets_in(fh, ONLY)
    assert set(here["Events"]) == set(ONLY["Events"])
    loc = Locator()
    try:
        chunks = {0: data[:512]}  # the header only: the rest is asked for, range by range
        assert loc.locate(len(data), chunks, read, ONLY) == here
        assert 0 < len(asked) <= ROUNDS  # keys list, streamers, the tree's record
        n = len(asked)
        assert loc.locate(len(data), chunks, read, ONLY) == here  # all given: no asking
        assert len(asked) == n
    finally:
        loc.close()


class _Dies:
    """Unpickled in the helper, it ends it (a helper dying in the middle of a request)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))


def test_a_helper_that_dies_is_a_locate_failed_and_the_next_one_starts() -> None:
    pytest.importorskip("uproot")
    data = NANO.read_bytes()

    def read(start: int, end: int) -> bytes:
        return data[start:end]

    loc = Locator()
    try:
        here = loc.locate(len(data), {0: data[:512]}, read, ONLY)
        assert here
        proc = loc._proc
        assert proc is not None
        proc.kill()  # between requests: a new helper answers the next one
        proc.wait()
        assert loc.locate(len(data), {0: data[:512]}, read, ONLY) == here
        with pytest.raises(LocateFailed, match="helper stopped"):
            loc.locate(len(data), {0: data[:512]}, read, _Dies())  # type: ignore[arg-type]
        assert loc._proc is None
        assert loc.locate(len(data), {0: data[:512]}, read, ONLY) == here
    finally:
        loc.close()
    assert loc._proc is None


def test_a_locator_dropped_unclosed_stops_its_helper() -> None:
    pytest.importorskip("uproot")
    data = NANO.read_bytes()
    loc = Locator()
    assert loc.locate(len(data), {0: data[:512]}, lambda s, e: data[s:e], ONLY)
    proc = loc._proc
    assert proc is not None
    del loc  # a client never closed: its prefetcher's helper must not outlive it
    gc.collect()
    assert proc.returncode is not None
    assert proc.stdin is not None
    assert proc.stdin.closed
