"""Single flight and many nodes: one fetch per batch however many readers miss it, waiters that
poll cheaply, dead fetchers taken over (this node: its pid; another node: its heartbeat), and
two mount points of the network-filesystem emulator as two nodes with readers, writers and
eviction at once; kill -9 in the middle of eviction passes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import htpdata
from htpdata.cache.entry import parse_claim_name
from htpdata.testing import XRootDServer
from htpdata.testing.cachecheck import verify_tier

from .conftest import TEST_FILES, TESTDATA, Sections

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NAME = f"test:/store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()
WORKER = str(Path(__file__).with_name("cache_worker.py"))
RANGES = [[i * 25_000, i * 25_000 + 20_000] for i in range(14)]


def _claims(root: Path) -> list[Path]:
    return [p for p in root.rglob("c.*") if parse_claim_name(p.name) is not None]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # closes its pipes


def _worker(settings: Sections, ranges: list[list[int]], *extra: str,
            env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, WORKER, json.dumps(settings), NAME,
                             json.dumps(ranges), *extra], stdout=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


@pytest.fixture
def slow_origin(tmp_path: Path, origin: XRootDServer) -> Iterator[Sections]:
    """A catalog whose only replica sits behind a 64 kB/s link: a fetch of RANGES lasts ~5 s."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from wan import WanProxy

    from .conftest import catalog_text

    proxy = WanProxy("localhost", origin.port, delay_ms=5, rate=64_000)
    proxy.start()
    cat = tmp_path / "slow.toml"
    text = catalog_text([("SLOW", origin, 1)])
    cat.write_text(text.replace(f"localhost:{origin.port}", f"localhost:{proxy.port}"))
    yield {"catalogs": {"path": [str(cat)]}, "replicas": {"protocols": ["root"]},
           "cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared"),
                     "head": 4096, "tail": 4096, "merge_gap": 0, "memory_size": 0}}
    proxy.stop()



def _need_emulator() -> None:
    """Skip (fail where servers are required) when the network-filesystem emulator cannot run."""
    from htpdata.testing.nfsemu import unavailable_reason

    if (why := unavailable_reason()) is not None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail(f"the network-filesystem emulator cannot run: {why}")
        pytest.skip(why)

def test_a_dead_fetcher_on_this_node_is_taken_over(slow_origin: Sections,
                                                  tmp_path: Path) -> None:
    """kill -9 of the fetcher while waiters wait: a waiter sees its pid gone and fetches."""
    fetcher = _worker(slow_origin, RANGES)
    deadline = time.monotonic() + 30
    while not _claims(tmp_path / "shared") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _claims(tmp_path / "shared"), "the fetcher never claimed"
    waiter = _worker(slow_origin, RANGES)
    time.sleep(1.0)
    _kill(fetcher)
    t0 = time.monotonic()
    out, _ = waiter.communicate(timeout=120)
    took = time.monotonic() - t0
    result = json.loads(out)
    assert result["adler32"] == [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in RANGES]
    assert result["stats"]["upstream"] > 0, "nobody fetched after the fetcher died"
    assert took < 60
    assert verify_tier(tmp_path / "shared", {NAME: WANT}).wrong_bytes == 0


def test_a_fetcher_on_another_node_whose_heartbeat_stopped_is_taken_over(
        slow_origin: Sections, tmp_path: Path) -> None:
    """The fetcher plays another node (``HTPDATA_NODE_ID``): its pid means nothing here, only
    its claim's heartbeat does. Killed, its claim ages (mtime set 10 minutes back, as time
    would); a waiter takes over once it sees that."""
    fetcher = _worker(slow_origin, RANGES, env={"HTPDATA_NODE_ID": "node-b"})
    deadline = time.monotonic() + 30
    while not _claims(tmp_path / "shared") and time.monotonic() < deadline:
        time.sleep(0.01)
    claims = _claims(tmp_path / "shared")
    assert claims
    assert ".node-b." in claims[0].name
    waiter = _worker(slow_origin, RANGES)
    time.sleep(1.0)
    _kill(fetcher)
    for c in _claims(tmp_path / "shared"):  # its heartbeat stopped 10 minutes ago
        old = time.time() - 600
        os.utime(c, (old, old))
    result = json.loads(waiter.communicate(timeout=120)[0])
    assert result["adler32"] == [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in RANGES]
    assert result["stats"]["upstream"] > 0


def test_a_live_fetcher_of_another_node_is_waited_for_and_its_claim_beats(
        slow_origin: Sections, tmp_path: Path) -> None:
    """A fetch that lasts longer than a claim's staleness keeps its claim alive by heartbeat:
    the waiter (this node) waits and fetches nothing itself."""
    fetcher = _worker(slow_origin, RANGES, env={"HTPDATA_NODE_ID": "node-b"})
    deadline = time.monotonic() + 30
    while not _claims(tmp_path / "shared") and time.monotonic() < deadline:
        time.sleep(0.01)
    claim = _claims(tmp_path / "shared")[0]
    first = claim.stat().st_mtime
    waiter = _worker(slow_origin, RANGES)
    done = json.loads(fetcher.communicate(timeout=120)[0])
    result = json.loads(waiter.communicate(timeout=120)[0])
    assert result["adler32"] == done["adler32"]
    assert result["stats"]["upstream"] == 0, "the waiter fetched what a live claim covered"
    assert done["stats"]["upstream"] > 0
    assert not claim.exists()
    del first


def _junk(i: int) -> bytes:
    return (f"junk {i} ".encode() * 600)[:4096]


def test_kill_9_during_eviction_passes_leaves_nothing_wrong(tmp_path: Path) -> None:
    """A process filling a tier with 300 entries and evicting them all, again and again,
    killed at random moments, at least 3 times while a pass was moving entries (its lease
    held, its trash not empty): every byte still stored is right, and the next pass takes the
    stale lease over and empties the trash."""
    shared = tmp_path / "shared"
    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(shared),
                                    "memory_size": 0}}
    originals = {f"test:/junk/{i}": _junk(i) for i in range(300)}
    code = ("import htpdata, json, sys\n"
            "from htpdata.cache.identity import Identity\n"
            "from tests.test_cache_flight import _junk\n"
            "c = htpdata.Client(**json.loads(sys.argv[1]))\n"
            "t = c.cache.tier('shared')\n"
            "while True:\n"
            "    for i in range(300):\n"
            "        n = f'test:/junk/{i}'\n"
            "        t.store(Identity(n, 4096), [(0, _junk(i))], {'name': n}, private=False)\n"
            "    c.cache.evict('shared', need=10**12)\n")
    rng = random.Random(13)
    mid = attempts = 0
    lease, trash = shared / "trusted" / "evict.lease", shared / "trusted" / "trash"
    root = str(Path(__file__).resolve().parent.parent)
    while (mid < 3 or attempts < 6) and attempts < 40:
        attempts += 1
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(settings)],
                                env={**os.environ, "PYTHONPATH": root}, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(1.0, 6.0)
        while time.monotonic() < deadline and proc.poll() is None:
            if attempts % 2 and lease.exists() and trash.is_dir() and any(trash.iterdir()):
                break  # odd attempts: kill in the middle of a pass; even ones: at random
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid += lease.exists() and trash.is_dir() and any(trash.iterdir())
        check = verify_tier(shared, originals)
        assert check.wrong_bytes == 0, check.wrong
        assert check.torn == 0
    assert mid >= 3, f"only {mid} of {attempts} kills landed in a pass moving entries"
    with htpdata.Client(**settings) as c:  # the stale lease is taken over, the trash emptied
        report = c.cache.evict("shared", need=10**12)
        assert report is not None
        assert not list(trash.iterdir())
        assert not lease.exists()


# -- two nodes: the emulator's two mount points --------------------------------------------------
@pytest.mark.fuse
def test_two_nodes_read_write_and_evict_one_tier_at_once(catalog_dir: Path,
                                                         tmp_path: Path) -> None:
    """One backing folder at two mount points (two nodes, each its own kernel caches), a tier
    on it: readers on both nodes miss the same ranges at once (fetched once), a stager writes
    on node 0 while eviction passes run on node 1; every byte served is the origin's."""
    from htpdata.testing.nfsemu import NfsEmulator

    _need_emulator()
    backing = tmp_path / "backing"
    backing.mkdir()
    with NfsEmulator(backing, mounts=2, meta_latency_ms=1) as emu:
        tiers = [m / "tier" for m in emu.mounts]
        settings: list[Sections] = [
            {"cache": {"local_dir": "off", "shared_dir": str(t), "head": 4096, "tail": 4096,
                       "merge_gap": 0}} for t in tiers]
        start_at = time.time() + 4.0
        readers = [_worker(settings[i % 2], RANGES, "--start-at", str(start_at),
                           env={"HTPDATA_NODE_ID": f"node-{i % 2}"}) for i in range(6)]
        stager = subprocess.Popen([sys.executable, "-m", "htpdata", "stage", "test:/Test/All",
                                   "--json"], stdout=subprocess.PIPE,
                                  env={**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
                                       "HTPDATA_CACHE_SHARED_DIR": str(tiers[0]),
                                       "HTPDATA_NODE_ID": "node-0"})
        evictions = 0
        evict_env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
                     "HTPDATA_CACHE_SHARED_DIR": str(tiers[1]), "HTPDATA_NODE_ID": "node-1",
                     "HTPDATA_CACHE_SHARED_SIZE": "600kB"}
        while stager.poll() is None or any(r.poll() is None for r in readers):
            p = subprocess.run([sys.executable, "-m", "htpdata", "cache", "evict", "--tier",
                                "shared", "--json"], env=evict_env, capture_output=True,
                               timeout=120)
            assert p.returncode == 0, p.stderr
            evictions += 1
        results = [json.loads(r.communicate(timeout=120)[0]) for r in readers]
        staged = json.loads(stager.communicate(timeout=120)[0])
    want = [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in RANGES]
    assert all(r["adler32"] == want for r in results)
    one = sum(e - s for s, e in RANGES) + 4096 + 4096
    upstream = sum(r["stats"]["upstream"] for r in results)
    assert upstream <= 1.5 * one, (upstream, one)  # evictions may take some away meanwhile
    assert staged["failed"] == 0
    assert evictions >= 1
    originals = {f"test:/store/test/{n}": (TESTDATA / n).read_bytes() for n in TEST_FILES}
    assert verify_tier(backing / "tier", originals).wrong_bytes == 0


@pytest.mark.fuse
def test_two_nodes_racing_for_the_same_ranges_fetch_them_once(slow_origin: Sections,
                                                               tmp_path: Path) -> None:
    """Two readers on the emulator's two mount points (two nodes, 1 ms per metadata request)
    miss the same ranges at once. The one whose claim is named first reaches the folder last
    (its clock reads 1 s behind, its create waits 0.2 s as behind a busy metadata server), after
    the other one published, listed, found nobody, and started fetching (over a slow link, so
    it is still fetching). By names both fetched; by arrival the late one yields and waits.
    Once per direction: node 1 late, then node 0 late."""
    from htpdata.testing.nfsemu import NfsEmulator

    _need_emulator()
    backing = tmp_path / "backing"
    backing.mkdir()
    want = [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in RANGES]
    with NfsEmulator(backing, mounts=2, meta_latency_ms=1) as emu:
        for late in (1, 0):
            tier = f"t{late}"
            start_at = time.time() + 3.0
            readers = []
            for node in (0, 1):
                settings: Sections = {**slow_origin, "cache": {**slow_origin["cache"],
                                                               "shared_dir": str(
                                                                   emu.mounts[node] / tier)}}
                extra = ("--clock-skew", "-1", "--claim-delay", "0.2") if node == late else ()
                readers.append(_worker(settings, RANGES, "--start-at", str(start_at), *extra,
                                       env={"HTPDATA_NODE_ID": f"node-{node}"}))
            results = [json.loads(r.communicate(timeout=120)[0]) for r in readers]
            assert all(r["adler32"] == want for r in results)
            ups = [r["stats"]["upstream"] for r in results]
            assert ups[late] == 0, (late, ups)  # it waited for the other's pack
            assert ups[1 - late] >= sum(e - s for s, e in RANGES), (late, ups)
            assert verify_tier(backing / tier, {NAME: WANT}).wrong_bytes == 0


def test_a_claim_seen_before_its_write_is_stamped_as_its_writer_stamps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim is created, then written once; its writer's own stamp is the mtime after that
    write. Another process that first sees it between the two must not take the create's
    stamp: with an earlier stamp for the other than the other takes for itself, two claimers
    of one batch each yielded to the other, and every waiter then fetched the batch."""
    from htpdata.cache.entry import Entry, claim_name
    from htpdata.cache.fsops import Folder, ProcessId

    folder = Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), str(tmp_path), None)
    other = ProcessId("other-node", 4242, 1)  # on another node: alive by its heartbeat
    ranges = [(1700, 547510)]
    name = claim_name(time.time_ns(), ranges, other)
    fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    created = time.time_ns() - 10**9
    os.utime(fd, ns=(created, created))  # the create's stamp, a second before the write's
    written = time.time_ns()
    real_sleep = time.sleep

    def the_write_lands_meanwhile(seconds: float) -> None:
        nonlocal fd
        if fd >= 0:  # the writer's one write, while the reader waits to look again
            os.write(fd, json.dumps({"ranges": ranges}).encode())
            os.utime(fd, ns=(written, written))  # what its writer's stat after it gives
            os.close(fd)
            fd = -1
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", the_write_lands_meanwhile)  # the module entry uses
    entry = Entry("trusted", "k" * 40, folder, lambda uid: True, lambda uid: True)
    try:
        entry.load()
        seen = entry.live_claims(None, 30.0)
    finally:
        if fd >= 0:
            os.close(fd)
        folder.close()
    assert [(c.name, c.born) for c in seen] == [(name, written)]
    assert [tuple(r) for r in seen[0].ranges] == ranges
