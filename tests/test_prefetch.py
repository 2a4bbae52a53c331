"""Next-file prefetch (``htpdata.prefetch``) against a real XRootD origin with real uproot: the
branches read of file i are fetched of file i+1 in the background, and the read of file i+1
then needs no round trip; prefetched bytes are never served for another content; prefetch
stops when the analysis stops (the client closes, or no read for ``prefetch_idle``); a process
killed with SIGKILL in the middle of a prefetch leaves every stored byte equal to the origin's.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import htpdata
from htpdata.cache import CachedReader
from htpdata.cache.budget import Budget, Cancelled
from htpdata.cache.ranges import merge, subtract, total
from htpdata.default import reset_default_client
from htpdata.fs import HtpdataFileSystem
from htpdata.prefetch import chunks, touched, warm_metadata
from htpdata.testing import XRootDServer
from htpdata.testing.cachecheck import verify_tier

from .conftest import TESTDATA, _need_xrootd, adler32_of

LFNS = [f"/store/pf/f{i}.root" for i in range(3)]
NAMES = [f"pf:{lfn}" for lfn in LFNS]
URLS = [f"htpdata://pf{lfn}" for lfn in LFNS]
READ = ["b0", "b3"]


# -- pure ------------------------------------------------------------------------------------
def test_touched_branches_are_those_whose_baskets_were_read() -> None:
    baskets = {"a": [(0, 10), (100, 110)], "b": [(10, 20)], "c": [(50, 60)], "d": []}
    assert touched(baskets, [(105, 106)]) == ["a"]
    assert touched(baskets, [(5, 15), (59, 70)]) == ["a", "b", "c"]
    assert touched(baskets, [(20, 50)]) == []


def test_baskets_located_late_for_three_files_in_a_row_leave_metadata_only() -> None:
    from htpdata.config import CacheSettings
    from htpdata.prefetch import _LATE, Prefetcher, _Seen

    p = Prefetcher(None, CacheSettings())  # type: ignore[arg-type]
    opened = [f"f{i}" for i in range(2 * _LATE)]

    def late(i: int) -> bool:
        p._seen[opened[i]] = _Seen("d")  # the analysis opened it first
        return p._late(opened[i], located=True)

    assert not p._late("early", located=True)
    assert all(late(i) for i in range(_LATE - 1))
    assert p.baskets
    assert not p._late("on time", located=True)  # a file in time: the count starts again
    assert all(late(i) for i in range(_LATE - 1, 2 * _LATE - 1))
    assert vars(p)["baskets"] is False  # late for _LATE files in a row: metadata only
    p.stop()


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=30), st.integers(0, 5000), st.integers(1, 2000))
@settings(max_examples=300)
def test_chunks_are_bounded_in_bytes_and_per_request(rs: list[tuple[int, int]], max_bytes: int,
                                                      per_request: int) -> None:
    got = chunks(rs, max_bytes, per_request)
    flat = [r for c in got for r in c]
    assert total(flat) == min(max_bytes, total(merge(rs)))
    assert subtract(flat, merge(rs)) == []  # nothing that was not asked
    assert flat == sorted(flat)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(flat))
    for c in got:
        assert total(c) <= per_request


def test_the_background_waits_for_the_foreground_and_is_cancelled() -> None:
    import contextlib
    import threading

    budget = Budget(concurrency=1)
    cancel = threading.Event()
    order: list[str] = []
    stack = contextlib.ExitStack()

    def background() -> None:
        stack.enter_context(budget.background(cancel))
        order.append("background")

    with budget.foreground():
        t = threading.Thread(target=background)
        t.start()
        time.sleep(0.2)
        order.append("foreground done")
    t.join(5)
    assert order == ["foreground done", "background"]
    assert budget.in_flight() == (0, 1)
    stack.close()
    assert budget.in_flight() == (0, 0)
    cancel.set()
    with pytest.raises(Cancelled), budget.background(cancel):
        pass


# -- against a real origin ---------------------------------------------------------------------
def write_file(path: Path, seed: int) -> None:
    """A flat tree of 6 branches with baskets far apart (uproot coalesces reads across gaps
    of up to 32 KiB, so smaller baskets would be read together)."""
    np = pytest.importorskip("numpy")
    uproot = pytest.importorskip("uproot")
    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=None) as out:  # same size whatever the values
        out.mktree("Events", {f"b{j}": "float64" for j in range(6)})
        for _ in range(4):
            out["Events"].extend({f"b{j}": rng.normal(size=8000) for j in range(6)})


def write_catalog(folder: Path, server: XRootDServer) -> None:
    entries = ",\n".join(
        f'  {{ name = "{lfn}", size = {(server.data / lfn[1:]).stat().st_size}, '
        f'adler32 = "{adler32_of(server.data / lfn[1:])}" }}' for lfn in LFNS)
    (folder / "pf.toml").write_text(
        'format = 1\n[namespaces.pf]\ndescription = "prefetch"\n\n'
        "[sites.SITE_A]\npreference = 1\nprotocols = [\n"
        f'  {{ scheme = "root", namespace = "pf", prefix = "{server.root_url}" }},\n]\n\n'
        f'[datasets."/PF/A"]\nnamespace = "pf"\nfiles = [\n{entries}\n]\n')


@pytest.fixture
def origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[XRootDServer]:
    _need_xrootd()
    with XRootDServer(name="pf", tls=False) as s:
        for i, lfn in enumerate(LFNS):
            target = s.data / lfn[1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file(target, i)
        folder = tmp_path / "catalogs"
        folder.mkdir()
        write_catalog(folder, s)
        monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(folder))
        yield s


def client(tmp_path: Path, **cache: Any) -> htpdata.Client:
    c = htpdata.Client(cache={"local_dir": str(tmp_path / "local"), "memory_size": 0,
                              **cache})
    reset_default_client(c)
    HtpdataFileSystem.clear_instance_cache()
    return c


def read(i: int, branches: list[str] = READ) -> Any:
    uproot = pytest.importorskip("uproot")
    with uproot.open(URLS[i]) as f:
        return f["Events"].arrays(branches)


def local(server: XRootDServer, i: int, branches: list[str] = READ) -> Any:
    uproot = pytest.importorskip("uproot")
    with uproot.open(server.data / LFNS[i][1:]) as f:
        return f["Events"].arrays(branches)


def reader_of(i: int) -> Any:
    return HtpdataFileSystem()._reader(URLS[i])


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def basket_bytes(server: XRootDServer, i: int, branches: list[str]) -> int:
    uproot = pytest.importorskip("uproot")
    with uproot.open(server.data / LFNS[i][1:]) as f:
        t = f["Events"]
        return sum(int(x) for b in branches
                   for x in t[b].member("fBasketBytes")[:t[b].num_baskets])


class _Bytes:
    """A reader over bytes in memory (what ``warm_metadata`` asks of a reader), recording."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads, self.warmed = data, [], []  # type: ignore[var-annotated]

    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        return self.data[start:end]

    def warm(self, ranges: list[tuple[int, int]]) -> int:
        self.warmed += ranges
        return 0


def test_warm_metadata_reads_the_header_keys_and_the_named_tree_only() -> None:
    uproot = pytest.importorskip("uproot")
    path = TESTDATA / "uproot-Zmumu.root"
    r = _Bytes(path.read_bytes())
    assert warm_metadata(r, ["events"])  # type: ignore[arg-type]
    assert len(r.reads) == 2  # the header; the keys list (the streamers come along)
    with uproot.open(path) as f:  # the one record warmed is the tree's key
        key = f.key("events")
        assert r.warmed == [(key.data_cursor.index - key.fKeylen,
                             key.data_cursor.index - key.fKeylen + key.fNbytes)]
    other = _Bytes(b"not a ROOT file, " * 100)
    assert not warm_metadata(other, ["events"])  # type: ignore[arg-type]
    assert len(other.reads) == 1
    assert not other.warmed
    tiny = _Bytes(b"root")  # shorter than any header
    assert not warm_metadata(tiny, ["events"])  # type: ignore[arg-type]


@pytest.mark.xrootd
def test_the_next_file_is_prefetched_and_read_without_a_round_trip(
        origin: XRootDServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ak = pytest.importorskip("awkward")

    def here(*_: Any) -> None:
        raise AssertionError("a TTree parsed for the prefetch in the analysis's process")

    monkeypatch.setattr("htpdata.locator.baskets_in", here)  # parsed in the helper only
    monkeypatch.setattr("htpdata.prefetch.baskets_in", here)
    c = client(tmp_path)
    assert ak.array_equal(read(0), local(origin, 0))
    wait_for(lambda: NAMES[1] in c.prefetcher.prefetched)
    c.cache.sync()
    wanted = basket_bytes(origin, 1, READ)
    assert c.prefetcher.prefetched[NAMES[1]] == wanted  # exactly the baskets of b0 and b3
    assert wanted < (origin.data / LFNS[1][1:]).stat().st_size / 2
    assert ak.array_equal(read(1), local(origin, 1))
    r1 = reader_of(1)
    assert r1.counters.upstream_requests == 0  # metadata and baskets: all here already
    assert r1.counters.upstream == 0
    c.close()


@pytest.mark.xrootd
def test_prefetched_bytes_are_never_served_for_another_content(
        origin: XRootDServer, tmp_path: Path) -> None:
    ak = pytest.importorskip("awkward")
    c = client(tmp_path)
    read(0)
    wait_for(lambda: NAMES[1] in c.prefetcher.prefetched)
    c.close()
    # File 1 rewritten at the origin, same name and size, other values (so another adler32).
    path = origin.data / LFNS[1][1:]
    size = path.stat().st_size
    write_file(path, 99)
    assert path.stat().st_size == size
    write_catalog(Path(os.environ["HTPDATA_CATALOGS_PATH"]), origin)
    c = client(tmp_path, prefetch=False)
    assert ak.array_equal(read(1), local(origin, 1))  # the new values
    assert reader_of(1).counters.upstream > 0
    c.close()


@pytest.mark.xrootd
def test_prefetch_stops_when_the_analysis_stops(origin: XRootDServer, tmp_path: Path) -> None:
    c = client(tmp_path)
    read(0)
    c.close()  # before its first basket request (it waits for the first data read to end)
    time.sleep(0.5)
    assert c.prefetcher.prefetched == {}
    ident = reader_of(1).identity()
    held = sum(len(d) for _, d in c.cache.tiers[0].read(ident, [(0, 10**9)]))
    assert held < basket_bytes(origin, 1, ["b0"])  # at most its metadata, fetched ahead
    time.sleep(0.5)
    assert sum(len(d) for _, d in c.cache.tiers[0].read(ident, [(0, 10**9)])) == held
    c = client(tmp_path / "idle", prefetch_idle="0s")  # no read for 0 s: the analysis stopped
    read(0)
    time.sleep(1.0)
    assert c.prefetcher.prefetched == {}
    c.close()


KILLED = """
import os, signal, sys, threading, time, htpdata, uproot
sys.setswitchinterval(1e-5)  # the watcher below runs between any two prefetch requests
c = htpdata.Client(cache={"local_dir": sys.argv[1], "memory_size": 0, "max_extent": "16KiB",
                          "prefetch_concurrency": 1})
htpdata.reset_default_client(c)
threshold = int(sys.argv[4])

def watch():  # SIGKILL this process once the prefetch is under way
    while (n := c.prefetcher.prefetched.get(sys.argv[3], 0)) < threshold:
        pass
    print(n, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Thread(target=watch, daemon=True).start()
with uproot.open(sys.argv[2]) as f:
    f["Events"].arrays(["b0", "b1", "b2", "b3", "b4", "b5"])
time.sleep(60)
"""


@pytest.mark.xrootd
def test_killed_mid_prefetch_leaves_every_stored_byte_equal_to_the_origin(
        origin: XRootDServer, tmp_path: Path) -> None:
    originals = {n: (origin.data / lfn[1:]).read_bytes() for n, lfn in zip(NAMES, LFNS,
                                                                          strict=True)}
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    landed = False
    for attempt in range(4):  # until the kill lands while the prefetch is under way
        cache = tmp_path / f"local{attempt}"
        shutil.rmtree(cache, ignore_errors=True)
        run = subprocess.run([sys.executable, str(script), str(cache / "local"), URLS[0],
                              NAMES[1], str(200_000 * (attempt + 1))], env=os.environ.copy(),
                             timeout=120, check=False, capture_output=True)
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        check = verify_tier(cache, originals)
        assert check.wrong_bytes == 0, check.wrong
        assert check.torn == 0, check.wrong
        # killed while the prefetch was under way (not all of it asked yet)
        landed = int(run.stdout.split()[-1]) < basket_bytes(origin, 1, [f"b{j}" for j in
                                                                         range(6)])
        if landed:
            break
    assert landed, "the kill never landed mid-prefetch"


def test_read_baskets_counts_only_baskets_read_whole() -> None:
    from htpdata.prefetch import read_baskets, to_fetch

    src = {"a": [(0, 10), (100, 110)], "b": [(10, 20), (200, 210)], "c": [(50, 60)]}
    # a read whole; b's first basket inside a coalesced read, its second not; c cut
    read = [(0, 20), (55, 60), (100, 110)]
    got = read_baskets(src, read)
    assert got == {"a": [0, 1], "b": [0]}
    target = {"a": [(0, 5), (50, 55), (90, 95)], "b": [(5, 8), (300, 310)], "c": [(60, 70)]}
    # a: every basket of the next file; b: only the basket of the same index
    assert to_fetch(got, src, target) == [(0, 5), (50, 55), (90, 95), (5, 8)]


@pytest.mark.xrootd
def test_a_thread_is_handed_the_bytes_another_thread_of_its_process_is_fetching(
        origin: XRootDServer, tmp_path: Path) -> None:
    import threading

    from htpdata.cache.reader import FLIGHTS

    c = client(tmp_path)
    r = reader_of(1)
    data = (origin.data / LFNS[1][1:]).read_bytes()
    ident = r.identity()
    pending = FLIGHTS.begin(ident.key, [(1000, 3000)])  # "another thread's" fetch in flight
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.extend(r.read_ranges([(1500, 2500)])))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting on the fetch in flight, not fetching itself
    FLIGHTS.land(pending, [(1000, data[1000:3000])])
    t.join(10)
    FLIGHTS.end(pending)
    assert got == [data[1500:2500]]
    assert r.counters.upstream_requests == 0
    assert r.counters.memory == 1000
    # warm: nothing in flight or held is fetched again; the rest is, without waiting
    pending = FLIGHTS.begin(ident.key, [(5000, 6000)])
    assert r.warm([(1000, 3000), (5000, 6000)]) == 1000 + 1000  # 1000-1500 and 2500-3000
    FLIGHTS.end(pending)
    assert r.read_ranges([(1000, 3000)]) == [data[1000:3000]]
    c.close()


@pytest.mark.xrootd
def test_a_next_file_another_reader_began_is_left_to_it(origin: XRootDServer,
                                                         tmp_path: Path) -> None:
    c = client(tmp_path)  # two files ahead by default
    assert reader_of(1).read(0, 100)  # file 1 begun by "another reader"
    read(0)
    wait_for(lambda: NAMES[2] in c.prefetcher.prefetched)
    assert NAMES[1] not in c.prefetcher.prefetched
    assert c.prefetcher.prefetched[NAMES[2]] == basket_bytes(origin, 2, READ)
    c.close()


@pytest.mark.xrootd
def test_warm_metadata_leaves_an_open_of_the_tree_without_a_round_trip(
        origin: XRootDServer, tmp_path: Path) -> None:
    uproot = pytest.importorskip("uproot")
    c = client(tmp_path, prefetch=False)
    warmer = c.reader(NAMES[1], prefetch=False)
    assert isinstance(warmer, CachedReader)
    assert warm_metadata(warmer, ["Events"])  # what htpdata.coffea.preprocess does ahead
    fetched = warmer.counters.upstream
    assert 0 < fetched < basket_bytes(origin, 1, ["b0"])  # metadata, no basket
    c.cache.sync()
    HtpdataFileSystem.clear_instance_cache()
    with uproot.open(URLS[1]) as f:  # what coffea's preprocess reads of a file
        t = f["Events"]
        assert t.num_entries == 32000
        assert str(f.file.uuid)
        assert sorted(t.keys()) == [f"b{j}" for j in range(6)]
    assert reader_of(1).counters.upstream_requests == 0
    cancel = threading.Event()
    cancel.set()  # cancelled: nothing is read
    fresh = client(tmp_path / "other", prefetch=False).reader(NAMES[2], prefetch=False)
    assert isinstance(fresh, CachedReader)
    warm_metadata(fresh, ["Events"], cancel)
    assert fresh.counters.upstream_requests == 0
    c.close()
