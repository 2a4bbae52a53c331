"""The tiered cache against a real XRootD origin: tiers, promotion, range awareness,
staleness, corruption, kill -9, concurrent processes, a full disk."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

import htpdata
from htpdata.cache.layout import parse_extent_name
from htpdata.testing import XRootDServer

from .conftest import TESTDATA, catalog_text

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NAME = f"test:/store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()
SMALL = {"head": 4096, "tail": 4096, "merge_gap": 0}
RANGES = [(100_000, 100_500), (200_000, 230_000), (300_000, 300_010)]


@pytest.fixture
def dirs(tmp_path: Path, catalog_dir: Path) -> dict[str, object]:
    """Settings for a client with its own local and shared tiers."""
    return {"cache": {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared"),
                      **SMALL}}


def cached_bytes(root: Path) -> int:
    return sum(e - s for p in root.rglob("*") if (x := parse_extent_name(p.name))
               for s, e in [x[0]])


def test_reads_through_every_tier_and_promotes(dirs: dict[str, object], tmp_path: Path) -> None:
    with htpdata.Client(**dirs) as cold:
        r = cold.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.stats["upstream"] >= sum(e - s for s, e in RANGES)
        again = r.read_ranges(RANGES)
        assert again == [WANT[s:e] for s, e in RANGES]
        assert r.stats["memory"] == sum(e - s for s, e in RANGES)  # second time: memory
    with htpdata.Client(**dirs) as warm:  # a new process: memory is empty
        r = warm.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.stats["upstream"] == 0
        assert r.stats["local"] == sum(e - s for s, e in RANGES)
    shutil.rmtree(tmp_path / "local")  # another node: only the shared tier has it
    with htpdata.Client(**dirs) as other_node:
        r = other_node.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.stats["upstream"] == 0
        assert r.stats["shared"] == sum(e - s for s, e in RANGES)
    assert cached_bytes(tmp_path / "local") >= sum(e - s for s, e in RANGES)  # promoted


def test_keeps_only_the_ranges_read_plus_head_and_tail(dirs: dict[str, object],
                                                      tmp_path: Path) -> None:
    with htpdata.Client(**dirs) as client:
        client.reader(NAME).read_ranges(RANGES)
    held = cached_bytes(tmp_path / "shared")
    assert held == sum(e - s for s, e in RANGES) + 4096 + 4096
    assert held < len(WANT) / 8


def test_cache_false_and_disabled_bypass(dirs: dict[str, object], tmp_path: Path) -> None:
    with htpdata.Client(**dirs) as client:
        assert client.cat(NAME, cache=False) == WANT
        with htpdata.open(NAME, cache=False, client=client) as f:
            assert f.read() == WANT
    assert not (tmp_path / "shared" / "entries").exists()
    off = {"cache": {**dirs["cache"], "enabled": False}}  # type: ignore[dict-item]
    with htpdata.Client(**off) as client:
        assert client.cat(NAME) == WANT
    assert not (tmp_path / "shared" / "entries").exists()


def test_warm_reads_need_no_origin(dirs: dict[str, object], origin: XRootDServer) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    branches = ["Muon_pt", "Jet_pt", "MET_pt", "nElectron"]
    expected = uproot.open(TESTDATA / NANO)["Events"].arrays(branches)
    with htpdata.Client(**dirs) as client:
        htpdata.reset_default_client(client)
        with htpdata.open(NAME, client=client) as f:  # road A
            assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
        with uproot.open(f"htpdata://test/store/test/{NANO}:Events") as t:  # road B
            assert ak.array_equal(t.arrays(branches), expected)
    origin.stop()
    try:
        with htpdata.Client(**dirs) as client:  # the catalog knows size and adler32
            htpdata.reset_default_client(client)
            with htpdata.open(NAME, client=client) as f:
                assert ak.array_equal(uproot.open(f)["Events"].arrays(branches), expected)
    finally:
        origin.start()


def test_stale_entry_is_never_served(tmp_path: Path, origin: XRootDServer,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
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

    settings = {"catalogs": {"path": [str(cat)]}, "auth": {"ca_file": str(origin.cert)},
                "cache": {"local_dir": str(tmp_path / "local"), **SMALL}}
    publish(b"A" * 50_000)
    with htpdata.Client(**settings) as c:
        assert c.cat("test:/store/scratch/changing.root") == b"A" * 50_000
    publish(b"B" * 50_000)  # same size, new content: the catalog's adler32 changes
    with htpdata.Client(**settings) as c:
        assert c.cat("test:/store/scratch/changing.root") == b"B" * 50_000
    # after close (queued cache writes have landed): only the new entry is left
    assert len(list((tmp_path / "local" / "entries").rglob("meta.json"))) == 1


def test_corrupt_extent_is_detected_dropped_and_refetched(dirs: dict[str, object],
                                                         tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with htpdata.Client(**dirs) as client:
        client.reader(NAME).read_ranges(RANGES)
    for tier in ("local", "shared"):
        for p in (tmp_path / tier).rglob("*"):
            if (x := parse_extent_name(p.name)) and x[0] == (200_000, 230_000):
                raw = bytearray(p.read_bytes())
                raw[100] ^= 0xFF
                p.write_bytes(bytes(raw))
    with htpdata.Client(**dirs) as client:
        r = client.reader(NAME)
        assert r.read_ranges(RANGES) == [WANT[s:e] for s, e in RANGES]
        assert r.stats["upstream"] == 30_000
    assert "corrupt extent" in caplog.text


def test_kill_9_during_cache_writes_leaves_nothing_wrong(dirs: dict[str, object],
                                                        tmp_path: Path) -> None:
    settings = json.dumps({**dirs, "cache": {**dirs["cache"], "max_extent": 8192,  # type: ignore[dict-item]
                                             "memory_size": 0}})
    rng = random.Random(7)
    killed = 0
    for _ in range(6):
        ranges = json.dumps([[s, s + rng.randint(1, 60_000)] for s in
                             sorted(rng.sample(range(0, len(WANT) - 60_000), 4))])
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cache_worker.py")),
                                 settings, NAME, ranges, "--loop"],
                                stdout=subprocess.DEVNULL, env=os.environ.copy())
        time.sleep(rng.uniform(0.3, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += 1
        for tier in ("local", "shared"):  # verification pass: absent or correct
            for p in (tmp_path / tier).rglob("*"):
                x = parse_extent_name(p.name)
                if x is not None:
                    (s, e), adler = x
                    assert p.read_bytes() == WANT[s:e]
                    assert f"{zlib.adler32(WANT[s:e]) & 0xFFFFFFFF:08x}" == adler
    assert killed == 6
    with htpdata.Client(**dirs) as client:  # a later reader gets correct data
        assert client.cat(NAME) == WANT


def test_concurrent_processes_fetch_each_range_once(dirs: dict[str, object]) -> None:
    n = 8
    settings = json.dumps(dirs)
    ranges = json.dumps([[i * 30_000, i * 30_000 + 20_000] for i in range(12)])
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("cache_worker.py")),
                               settings, NAME, ranges, "--start-at", str(start_at)],
                              stdout=subprocess.PIPE, env=os.environ.copy()) for _ in range(n)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    want = [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in json.loads(ranges)]
    assert all(r["adler32"] == want for r in results)
    one = 12 * 20_000 + 4096 + 4096
    upstream = sum(r["stats"]["upstream"] for r in results)
    assert upstream <= 1.05 * one, (upstream, one)


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
        for p in small.rglob("*"):  # what landed is whole and correct
            if (x := parse_extent_name(p.name)):
                assert p.read_bytes() == WANT[x[0][0]:x[0][1]]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_injected_write_failure_reads_go_on(dirs: dict[str, object],
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from htpdata.cache import disk

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk, "_write_all", full)
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
