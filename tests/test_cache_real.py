"""The tiered cache against a real XRootD origin: tiers, promotion, range awareness, packs,
staleness, damage, kill -9 at random moments (landing mid-write, checked), concurrent processes,
compaction, a full disk, older tiers."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

import htpdata
from htpdata.cache import reader as cached
from htpdata.cache.pack import parse_head
from htpdata.cache.plan import backoff as real
from htpdata.cache.tier import DiskTier
from htpdata.testing import XRootDServer
from htpdata.testing.cachecheck import packs_under, verify_tier

from .conftest import TESTDATA, Sections, catalog_text

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NAME = f"test:/store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()
SMALL = {"head": 4096, "tail": 4096, "merge_gap": 0}
RANGES = [(100_000, 100_500), (200_000, 230_000), (300_000, 300_010)]
WORKER = str(Path(__file__).with_name("cache_worker.py"))


@pytest.fixture
def dirs(tmp_path: Path, catalog_dir: Path) -> Sections:
    """Settings for a client with its own local and shared tiers."""
    return {"cache": {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared"),
                      **SMALL}}


def held_bytes(root: Path) -> int:
    """Distinct bytes of the file the packs under ``root`` hold."""
    from htpdata.cache.ranges import total

    spans = []
    for p in packs_under(root):
        data = p.read_bytes()
        spans += [(r.start, r.end) for r in parse_head(data, len(data)).ranges()]
    return total(spans)


def test_reads_through_every_tier_and_promotes(dirs: Sections, tmp_path: Path) -> None:
    with htpdata.Client(**dirs) as cold:
        r = cold.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.counters.upstream >= sum(e - s for s, e in RANGES)
        assert r.counters.upstream_requests == 1  # one vector read, head and tail included
        again = r.read_ranges(RANGES)
        assert again == [WANT[s:e] for s, e in RANGES]
        assert r.counters.memory == sum(e - s for s, e in RANGES)  # second time: memory
    with htpdata.Client(**dirs) as warm:  # a new client: memory is empty
        r = warm.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.counters.upstream == 0
        assert r.counters.local == sum(e - s for s, e in RANGES)
    shutil.rmtree(tmp_path / "local")  # another node: only the shared tier has it
    with htpdata.Client(**dirs) as other_node:
        r = other_node.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.counters.upstream == 0
        assert r.counters.shared == sum(e - s for s, e in RANGES)
    assert held_bytes(tmp_path / "local") >= sum(e - s for s, e in RANGES)  # promoted


def test_a_cold_read_stores_one_pack_per_batch(dirs: Sections, tmp_path: Path) -> None:
    """Ranges plus head and tail only, in one pack per fetch batch, not one file per range."""
    with htpdata.Client(**dirs) as client:
        client.reader(NAME).read_ranges(RANGES)
    assert held_bytes(tmp_path / "shared") == sum(e - s for s, e in RANGES) + 4096 + 4096
    assert len(list(packs_under(tmp_path / "shared"))) == 1
    assert held_bytes(tmp_path / "shared") < len(WANT) / 8
    check = verify_tier(tmp_path / "shared", {NAME: WANT})
    assert (check.wrong_bytes, check.torn) == (0, 0)


def test_cache_false_and_disabled_bypass(dirs: Sections, tmp_path: Path) -> None:
    with htpdata.Client(**dirs) as client:
        assert client.cat(NAME, cache=False) == WANT
        with htpdata.open(NAME, cache=False, client=client) as f:
            assert f.read() == WANT
    assert not list(packs_under(tmp_path))
    off: Sections = {"cache": {**dirs["cache"], "enabled": False}}
    with htpdata.Client(**off) as client:
        assert client.cat(NAME) == WANT
    assert not list(packs_under(tmp_path))


def test_warm_reads_need_no_origin(dirs: Sections, origin: XRootDServer) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    branches = ["Muon_pt", "Jet_pt", "MET_pt", "nElectron"]
    expected = uproot.open(TESTDATA / NANO)["Events"].arrays(branches)
    bare = f"{origin.root_url}store/test/{NANO}"
    with htpdata.Client(**dirs) as client:
        htpdata.reset_default_client(client)
        with htpdata.open(NAME, client=client) as f:  # road A
            assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
        with uproot.open(f"htpdata://test/store/test/{NANO}:Events") as t:  # road B
            assert ak.array_equal(t.arrays(branches), expected)
        with htpdata.open(bare, client=client) as f:  # a bare URL: no catalog knows its size
            assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
    origin.stop()
    try:
        with htpdata.Client(**dirs) as client:  # the catalog knows size and adler32
            htpdata.reset_default_client(client)
            with htpdata.open(NAME, client=client) as f:
                assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
            with htpdata.open(bare, client=client) as f:  # the tier recorded what the origin said
                assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
    finally:
        origin.start()


def test_a_bare_url_is_revalidated_after_its_age(tmp_path: Path, origin: XRootDServer) -> None:
    (origin.data / "store" / "scratch").mkdir(exist_ok=True)
    owner = os.stat(origin.data)
    os.chown(origin.data / "store" / "scratch", owner.st_uid, owner.st_gid)
    data = origin.data / "store" / "scratch" / "grows.root"
    data.write_bytes(b"A" * 40_000)
    os.chown(data, owner.st_uid, owner.st_gid)
    url = f"{origin.root_url}store/scratch/grows.root"
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local"), **SMALL}}
    with htpdata.Client(**settings) as c:
        assert c.cat(url) == b"A" * 40_000
    data.write_bytes(b"B" * 50_000)  # the file changes at the origin (it should not, on WLCG)
    with htpdata.Client(**settings) as c:  # within revalidate_after: the cache's answer
        assert c.reader(url).size() == 40_000
    later: Sections = {"cache": {**settings["cache"], "revalidate_after": 0}}
    with htpdata.Client(**later) as c:  # past it: asked again, and the new bytes are read
        assert c.cat(url) == b"B" * 50_000


def test_stale_entry_is_never_served(tmp_path: Path, origin: XRootDServer) -> None:
    (origin.data / "store" / "scratch").mkdir(exist_ok=True)
    os.chown(origin.data / "store" / "scratch", os.stat(origin.data).st_uid,
             os.stat(origin.data).st_gid)
    data = origin.data / "store" / "scratch" / "changing.root"
    data.write_bytes(b"A" * 50_000)
    os.chown(data, os.stat(origin.data).st_uid, os.stat(origin.data).st_gid)
    cat = tmp_path / "c.toml"

    def publish(content: bytes) -> None:
        data.write_bytes(content)
        cat.write_text(catalog_text([("SITE_A", origin, 1)]) + (
            '\n[datasets."/Test/Changing"]\nnamespace = "test"\nfiles = [{ name = '
            f'"/store/scratch/changing.root", size = {len(content)}, adler32 = '
            f'"{zlib.adler32(content) & 0xFFFFFFFF:08x}" }}]\n'))

    settings: Sections = {"catalogs": {"path": [str(cat)]}, "auth": {"ca_file": str(origin.cert)},
                "cache": {"local_dir": str(tmp_path / "local"), **SMALL}}
    publish(b"A" * 50_000)
    with htpdata.Client(**settings) as c:
        assert c.cat("test:/store/scratch/changing.root") == b"A" * 50_000
    publish(b"B" * 50_000)  # same size, new content: the catalog's adler32 changes
    with htpdata.Client(**settings) as c:
        assert c.cat("test:/store/scratch/changing.root") == b"B" * 50_000
    # after close (queued cache writes have landed): only the new content is left
    keys = {parse_head(p.read_bytes(), p.stat().st_size).key for p in packs_under(tmp_path)}
    assert len(keys) == 1


def test_damaged_pack_is_detected_dropped_and_refetched(dirs: Sections,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with htpdata.Client(**dirs) as client:
        client.reader(NAME).read_ranges(RANGES)
    for p in packs_under(tmp_path):
        raw = bytearray(p.read_bytes())
        rec = next(r for r in parse_head(bytes(raw), len(raw)).ranges()
                   if (r.start, r.end) == (200_000, 230_000))
        raw[rec.offset + 100] ^= 0xFF  # a bad disk: one byte of one block
        p.write_bytes(bytes(raw))
    with htpdata.Client(**dirs) as client:
        r = client.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.counters.upstream == 30_000
    assert "damaged pack" in caplog.text
    assert verify_tier(tmp_path, {NAME: WANT}).wrong_bytes == 0


def _kill_while(proc: subprocess.Popen[bytes], root: Path, marker: str, seconds: float) -> bool:
    """SIGKILL ``proc`` when a file whose name contains ``marker`` appears under ``root``
    (a write in progress), or at the end of ``seconds``; True if it died mid-write."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        for folder, _, files in os.walk(root):
            if any(marker in f for f in files):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                left = [f for _, _, fs in os.walk(root) for f in fs if marker in f]
                return bool(left)  # still there: the rename never happened
            del folder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return False


def test_kill_9_during_pack_writes_and_compaction_leaves_nothing_wrong(
        dirs: Sections, tmp_path: Path) -> None:
    """Readers killed at random moments, and at least 3 times while a pack (or a compaction)
    was being written: every byte any reader can be served is the origin's."""
    settings = json.dumps({**dirs, "cache": {**dirs["cache"], "memory_size": 0,
                                             "compact_after": 2}})
    rng = random.Random(7)
    mid_write = 0
    attempts = 0
    while (mid_write < 3 or attempts < 6) and attempts < 40:
        attempts += 1
        ranges = json.dumps([[s, s + rng.randint(100_000, 300_000)] for s in
                             sorted(rng.sample(range(0, len(WANT) - 300_000), 3))])
        proc = subprocess.Popen([sys.executable, WORKER, settings, NAME, ranges, "--loop",
                                 "--forget"], stdout=subprocess.DEVNULL, env=os.environ.copy())
        if attempts % 2:
            mid_write += _kill_while(proc, tmp_path / "shared", ".t.", 20.0)
        else:
            time.sleep(rng.uniform(0.3, 0.9))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        check = verify_tier(tmp_path, {NAME: WANT})
        assert check.wrong_bytes == 0, check.wrong
    assert mid_write >= 3, f"only {mid_write} of {attempts} kills landed mid-write"
    with htpdata.Client(**dirs) as client:  # a later reader gets correct data
        assert client.cat(NAME) == WANT


def test_concurrent_processes_fetch_each_range_once(dirs: Sections) -> None:
    n = 8
    settings = json.dumps(dirs)
    ranges = json.dumps([[i * 30_000, i * 30_000 + 20_000] for i in range(12)])
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, WORKER, settings, NAME, ranges, "--start-at",
                               str(start_at)], stdout=subprocess.PIPE, env=os.environ.copy())
             for _ in range(n)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    want = [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in json.loads(ranges)]
    assert all(r["adler32"] == want for r in results)
    one = 12 * 20_000 + 4096 + 4096
    upstream = sum(r["stats"]["upstream"] for r in results)
    assert upstream <= 1.05 * one, (upstream, one)


def test_compaction_merges_an_entrys_packs(dirs: Sections, tmp_path: Path) -> None:
    cache = {**dirs["cache"], "compact_after": 3, "memory_size": 0, "local_dir": "off",
             "prefetch": False}  # only this entry's packs (no next file's metadata)
    with htpdata.Client(cache=cache) as client:
        r = client.reader(NAME)
        for i in range(5):  # five batches: five packs, merged on the way
            r.read_ranges([(i * 50_000, i * 50_000 + 10_000), (i * 50_000 + 5_000,
                                                                i * 50_000 + 20_000)])
    packs = list(packs_under(tmp_path / "shared"))
    assert len(packs) < 3, packs
    assert verify_tier(tmp_path, {NAME: WANT}).wrong_bytes == 0
    with htpdata.Client(cache=cache) as client:
        r = client.reader(NAME)
        got = r.read_ranges([(i * 50_000, i * 50_000 + 20_000) for i in range(5)])
        assert got == [WANT[i * 50_000:i * 50_000 + 20_000] for i in range(5)]
        assert r.counters.upstream == 0


def test_full_disk_reads_go_on_uncached(tmp_path: Path, catalog_dir: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    small = tmp_path / "tiny"
    small.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    try:
        with htpdata.Client(cache={"local_dir": str(small), **SMALL}) as client:
            assert client.cat(NAME) == WANT  # 377 kB through a 64 kB cache
            assert client.cat(NAME) == WANT
        assert "not usable" in caplog.text
        assert "No space left" in caplog.text
        check = verify_tier(small, {NAME: WANT})  # what landed is whole and correct
        assert check.wrong_bytes == 0
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_injected_write_failure_reads_go_on(dirs: Sections,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from htpdata.cache import fsops

    def full(fd: int, data: bytes, offset: int | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsops, "write_all", full)
    with htpdata.Client(**dirs) as client:
        assert client.reader(NAME).read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
    assert "No space left" in caplog.text


def test_unwritable_tier_location(catalog_dir: Path, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with htpdata.Client(cache={"shared_dir": str(blocker / "cache")}) as client:
        assert client.cat(NAME) == WANT
    assert "not usable" in caplog.text


def test_a_tier_folder_others_may_write_is_refused_with_one_warning(
        catalog_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A tier root writable by other users and not ours (anyone could plant bytes in it) is not
    used, and says so once; reads go on from storage."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chown(loose, 65534, 65534)
    loose.chmod(0o777)
    with htpdata.Client(cache={"shared_dir": str(loose)}) as client:
        assert client.cat(NAME) == WANT
        assert client.cat(NAME) == WANT
    warned = [r.getMessage() for r in caplog.records if "writable by other users" in
              r.getMessage()]
    assert len(warned) == 1, warned
    assert "0777" in warned[0]
    assert "not usable" in warned[0]
    assert list(loose.iterdir()) == []


def test_a_format_1_tier_is_refused_then_cleared(catalog_dir: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Today's format is never misread: refused with one line saying how to clear it."""
    old = tmp_path / "old"
    x = old / "entries" / "ab" / "cd" / ("ab" * 20) / "x"
    x.mkdir(parents=True)
    (x / f"{0:016x}-{1000:016x}.00000001").write_bytes(b"\0" * 1000)
    (old / "htpdata-cache.json").write_text('{"format": 1}')
    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(old), **SMALL}}
    with htpdata.Client(**settings) as client:
        assert client.cat(NAME, 0, 1000) == WANT[:1000]
        lines = [r.getMessage() for r in caplog.records if "format 1" in r.getMessage()]
        assert len(lines) == 1
        assert "htpdata cache clear --tier shared --yes" in lines[0]
        assert not list(packs_under(old))
        entries, _, skipped = client.cache.clear("shared")
        assert (entries, skipped) == (1, 0)
    with htpdata.Client(**settings) as client:
        assert client.cat(NAME, 0, 1000) == WANT[:1000]
    assert list(packs_under(old))
    assert not (old / "entries").exists()



def _claiming_client(tmp_path: Path) -> htpdata.Client:
    """A client with a local tier only, no memory tier, whose every fetch claims (a 403-byte
    first read too: these tests use one to get a claim)."""
    client = htpdata.Client(cache={"local_dir": str(tmp_path / "local"), "memory_size": 0})
    client.cache.limits = replace(client.cache.limits, unclaimed=0)
    return client

def _hold_writer(client: htpdata.Client, gate: threading.Event) -> None:
    """Hold ``client``'s cache writer thread until ``gate`` is set: every pack, and the
    release of every claim handed to it, waits."""
    def blocked() -> None:
        gate.wait(60)

    client.cache.writer.submit(blocked)


def test_a_read_never_waits_for_bytes_it_only_takes_along(catalog_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """uproot's second read of a file takes the ROOT metadata extents along, and the first of
    them lies under the first read's claim, still live while that read's pack is being
    written. The second read fetches what it asked and waits for nothing: it used to wait for
    its own writer thread (about 2 s per file: the pack landed before the waiter's first
    look, so it went unseen until the 2 s listing)."""
    polls: list[int] = []

    def counted(attempt: int) -> float:
        polls.append(attempt)
        return real(attempt)

    monkeypatch.setattr(cached, "backoff", counted)
    gate = threading.Event()
    with htpdata.Client(cache={"local_dir": str(tmp_path / "local")}) as client:
        r = client.reader(NAME)
        assert isinstance(r, cached.CachedReader)
        r.wait_limit = 5.0  # a wait that should not happen ends soon
        _hold_writer(client, gate)
        try:
            assert r.read(0, 403) == WANT[:403]  # uproot's first read; claim (0, 403) stays
            layout = r.layout()
            assert layout is not None
            extents = layout.extents(len(WANT))
            assert extents[0][0] < 403 < extents[1][0]  # taken along, under the first claim
            second = (extents[1][0], extents[1][1])
            assert r.read(*second) == WANT[second[0]:second[1]]
        finally:
            gate.set()
    assert polls == []  # no wait at all
    assert r.counters.upstream_requests == 2  # and nothing fetched twice after a wait


class _Unlisted(cached.InFlight):
    """This process's fetches, never listed: its claims look like another process's."""

    def overlapping(self, key: str, ranges: object) -> list[cached.Pending]:
        return []

    def busy(self, key: str) -> list[tuple[int, int]]:
        return []


def _as_if_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk wait for another process's claim, played in one process: the first read's
    fetch is not handed in memory (what :data:`htpdata.cache.reader.FLIGHTS` does for
    threads of one process), so the second read waits for its pack on disk."""
    monkeypatch.setattr(cached, "FLIGHTS", _Unlisted())


def test_a_waiter_sees_a_pack_that_landed_before_its_first_look(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read waiting for another claim's bytes, whose pack lands between the listing made
    before the wait and the first poll, finds it at the first poll (it used to go unseen
    until the listing made every 2 s)."""
    gate = threading.Event()
    polls: list[int] = []

    def look(attempt: int) -> float:
        polls.append(attempt)
        if attempt == 0:  # let the first read's pack land now, and wait until it has
            gate.set()
            landed = threading.Event()
            client.cache.writer.submit(landed.set)
            assert landed.wait(30)
        return real(attempt)

    monkeypatch.setattr(cached, "backoff", look)
    _as_if_another_process(monkeypatch)
    with _claiming_client(tmp_path) as client:
        r = client.reader(NAME)
        _hold_writer(client, gate)
        try:
            assert r.read(0, 403) == WANT[:403]  # its claim stays until the writer runs
            assert r.read(0, 403) == WANT[:403]  # waits for that claim's pack
        finally:
            gate.set()
    assert polls == [0]  # found at the first look
    assert r.counters.upstream_requests == 2  # the first read, then the layout taken along
    assert r.counters.local == 403


def test_a_waiter_sees_a_pack_another_thread_listed_first(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads of one process waiting on the same entry share its listing and baseline:
    when the other one listed the landed pack first, this one sees no change in the folder,
    and finds the pack in the listing the other made (it used to wait for the 2 s listing)."""
    gate = threading.Event()
    polls: list[int] = []

    def look(attempt: int) -> float:
        polls.append(attempt)
        if attempt == 1:  # after this waiter's first look: the pack lands, another thread lists
            gate.set()
            landed = threading.Event()
            client.cache.writer.submit(landed.set)
            assert landed.wait(30)
            assert isinstance(r, cached.CachedReader)
            with client.cache.tiers[0].flight(r.identity(), r.private) as other:
                assert other is not None
                other.look()
        return real(attempt)

    monkeypatch.setattr(cached, "backoff", look)
    _as_if_another_process(monkeypatch)
    with _claiming_client(tmp_path) as client:
        r = client.reader(NAME)
        assert isinstance(r, cached.CachedReader)
        _hold_writer(client, gate)
        try:
            assert r.read(0, 403) == WANT[:403]  # its claim stays until the writer runs
            assert r.read(0, 403) == WANT[:403]  # waits for that claim's pack
        finally:
            gate.set()
    assert polls == [0, 1]  # found at the poll after the other thread's listing
    assert r.counters.upstream_requests == 2
    assert r.counters.local == 403


def test_a_claim_is_stamped_only_when_another_processs_claim_overlaps(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim's stamp (a ``stat`` of it: when it reached the folder) orders it against another
    process's overlapping claim; a reader alone never takes one (a round trip fewer per fetch
    batch on a network filesystem). With a live claim of another node overlapping, which
    reached the folder later (its mtime ahead), the reader stamps its own, is first, and
    fetches."""
    from htpdata.cache.area import ClaimHandle
    from htpdata.cache.entry import claim_name
    from htpdata.cache.fsops import ProcessId

    stamped: list[str] = []
    stamp = ClaimHandle.stamp

    def counting(self: ClaimHandle) -> int:
        if threading.current_thread().name != "htpdata-heartbeat":
            stamped.append(self.name)
        return stamp(self)

    monkeypatch.setattr(ClaimHandle, "stamp", counting)
    with _claiming_client(tmp_path) as client:
        r = client.reader(NAME)
        assert r.read(1000, 5000) == WANT[1000:5000]
        client.cache.flush()
        assert stamped == []
        entry = next((tmp_path / "local").glob("*/e/*/*"))
        other = claim_name(time.time_ns(), [(20_000, 30_000)], ProcessId("other-node", 4242, 1))
        (entry / other).write_text(json.dumps({"ranges": [[20_000, 30_000]]}))
        later = time.time_ns() + 10 * 10**9
        os.utime(entry / other, ns=(later, later))
        assert r.read(20_000, 30_000) == WANT[20_000:30_000]
        assert len(stamped) == 1
        assert stamped[0].startswith("c.")
        assert r.counters.upstream_requests == 2  # fetched, not waited for


def test_a_few_kb_take_no_claim_and_ride_in_the_files_next_pack(
        tmp_path: Path, catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ROOT file's first read (a few hundred bytes) is fetched without a claim and stored
    with the file's next pack, not in one of its own; with no next fetch, it is written at the
    client's end. Either way a later process reads it from the tier."""
    from htpdata.cache.area import Area

    claimed: list[list[tuple[int, int]]] = []
    publish = Area.publish_claim

    def counting(self: Area, entry: object, ranges: list[tuple[int, int]]) -> object:
        claimed.append(list(ranges))
        return publish(self, entry, ranges)  # type: ignore[arg-type]

    monkeypatch.setattr(Area, "publish_claim", counting)
    for case in ("next pack", "at the end"):
        shared = tmp_path / case.replace(" ", "-")
        settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(shared),
                                        "memory_size": 0, "head": 0, "tail": 0}}
        claimed.clear()
        with htpdata.Client(**settings) as c:
            r = c.reader(NAME)
            assert r.read(0, 400) == WANT[:400]
            c.cache.writer.flush()  # the writes queued (Cache.flush writes the 400 B too)
            assert claimed == []
            assert list(packs_under(shared)) == []
            if case == "next pack":
                assert r.read(200_000, 300_000) == WANT[200_000:300_000]
                c.cache.flush()
                assert claimed
                assert len(list(packs_under(shared))) == 1  # the 400 bytes rode along
            else:
                c.cache.flush()  # no next fetch: written now, or at the client's end
        assert len(list(packs_under(shared))) == 1
        assert verify_tier(shared, {NAME: WANT}).wrong_bytes == 0
        with htpdata.Client(**settings) as c:
            r = c.reader(NAME)
            assert r.read(0, 400) == WANT[:400]
            assert r.counters.upstream == 0, case


def test_a_process_ending_merges_only_the_packs_it_wrote(tmp_path: Path,
                                                         catalog_dir: Path) -> None:
    """At its end a process merges its own packs of a file, never those other processes of
    the same user wrote beside them (two readers ending at once each merged every pack they
    knew, and two whole copies stayed)."""
    from htpdata.cache.identity import Identity

    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared"),
                                    "memory_size": 0}}
    ident = Identity(NAME, len(WANT))
    with htpdata.Client(**settings) as c:
        tier = c.cache.tier("shared")
        for s in (0, 100_000, 200_000):
            tier.store(ident, [(s, WANT[s:s + 50_000])], {"name": NAME}, private=False)
        c.cache.writer.flush()
        tier._written.clear()  # the end-of-process merge is called below, by another process
    packs = sorted(packs_under(tmp_path / "shared"))
    assert len(packs) == 3
    for p in packs[1:]:  # as if two other processes (same user, other pids) wrote them
        head, _, rand = p.name.rpartition(".")
        p.rename(p.with_name(f"{head.split('.')[0]}.{head.split('.')[1]}.othernode.1.1.{rand}"))
    with htpdata.Client(**settings) as c:
        tier = c.cache.tier("shared")
        area = tier.write_area(False)
        assert area is not None
        assert area.compact(ident, known=True) == 0  # one pack of its own: nothing to merge
        assert len(list(packs_under(tmp_path / "shared"))) == 3
        assert area.compact(ident) > 0  # the tidying merge (not at an end) takes all
        assert len(list(packs_under(tmp_path / "shared"))) == 1
    assert verify_tier(tmp_path / "shared", {NAME: WANT}).wrong_bytes == 0


def test_bytes_kept_back_for_a_files_next_pack_are_bounded(tmp_path: Path,
                                                           catalog_dir: Path) -> None:
    """Many readers' unclaimed first reads of one file (each a new open) are kept back up to
    64 kB, then stored together in one pack, not held in memory without end."""
    from htpdata.cache.identity import Identity
    from htpdata.cache.tier import DEFER_BYTES

    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared"),
                                    "memory_size": 0}}
    ident = Identity(NAME, len(WANT))
    step = 16 * 1024
    with htpdata.Client(**settings) as c:
        tier = c.cache.tier("shared")
        n = DEFER_BYTES // step
        for i in range(n):
            s = i * 20_000
            assert tier.defer(ident, [(s, WANT[s:s + step])], {"name": NAME}, False) == step
        assert list(packs_under(tmp_path / "shared")) == []
        s = n * 20_000
        tier.defer(ident, [(s, WANT[s:s + step])], {"name": NAME}, False)  # one too many
        packs = list(packs_under(tmp_path / "shared"))
        assert len(packs) == 1
        assert held_bytes(tmp_path / "shared") == (n + 1) * step
    assert verify_tier(tmp_path / "shared", {NAME: WANT}).wrong_bytes == 0


def test_a_thread_waiting_on_its_own_process_fetch_is_handed_it_without_polling(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same claim, held by this process's own earlier fetch whose pack is not written
    yet: the read is handed the bytes from memory (no disk poll, no wait for the writer)."""
    gate = threading.Event()
    polls: list[int] = []

    def look(attempt: int) -> float:
        polls.append(attempt)
        return 0.01

    monkeypatch.setattr(cached, "backoff", look)
    with _claiming_client(tmp_path) as client:
        r = client.reader(NAME)
        _hold_writer(client, gate)
        try:
            assert r.read(0, 403) == WANT[:403]  # its claim stays until the writer runs
            assert r.read(0, 403) == WANT[:403]  # handed by the fetch still listed
        finally:
            gate.set()
    assert polls == []
    assert isinstance(r, cached.CachedReader)
    assert r.counters.upstream_requests == 1
    assert r.counters.memory == 403


def test_a_fetch_at_interpreter_exit_stores_its_bytes_and_removes_its_claim(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch that lands after the interpreter began to exit (a prefetch finishing its
    request) finds the cache's writer taking no more work: its pack is written and its claim
    removed at once, so no other process waits for a claim of a process that is gone."""
    with _claiming_client(tmp_path) as client:
        r = client.reader(NAME)
        assert isinstance(r, cached.CachedReader)

        def refused(job: object) -> None:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

        monkeypatch.setattr(client.cache.writer, "submit", refused)
        assert r.read(1000, 5000) == WANT[1000:5000]
        tier = client.cache.tiers[-1]
        assert isinstance(tier, DiskTier)
        with tier.flight(r.identity(), r.private) as flight:
            assert flight is not None
            flight.refresh(force=True)
            assert flight.claims() == []
        assert tier.read(r.identity(), [(1000, 5000)]) == [(1000, WANT[1000:5000])]
        assert cached.FLIGHTS.busy(r.identity().key) == []
