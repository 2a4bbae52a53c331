"""Eviction: the pure policy decisions, then real passes over a real cache tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import htpdata
from htpdata.cache.disk import DiskTier, EntryInfo
from htpdata.cache.evict import choose_victims, needed_bytes

from .conftest import TEST_FILES, TESTDATA


def entry(key: str, size: int, last: float, user: str = "u", opens: int = 1,
          readers: int = 0) -> EntryInfo:
    return EntryInfo(key, size, last, {"user": user, "opens": opens}, False, readers)


def test_watermarks() -> None:
    assert needed_bytes(total=90, size=100, high=0.95, low=0.9) == 0
    assert needed_bytes(total=96, size=100, high=0.95, low=0.9) == 6
    assert needed_bytes(total=500, size=0, high=0.95, low=0.9) == 0


def test_lru_lfu_size_policies() -> None:
    es = [entry("a", 10, 3, opens=9), entry("b", 50, 1, opens=5), entry("c", 20, 2, opens=1)]
    assert [e.key for e in choose_victims(es, 15, "lru", 10, {})] == ["b"]
    assert [e.key for e in choose_victims(es, 15, "lfu", 10, {})] == ["c"]
    assert [e.key for e in choose_victims(es, 15, "size", 10, {})] == ["b"]
    assert [e.key for e in choose_victims(es, 65, "lru", 10, {})] == ["b", "c"]
    assert choose_victims(es, 0, "lru", 10, {}) == []


def test_pins_and_readers_are_respected() -> None:
    es = [entry("old", 10, 1, readers=1), entry("pinned", 10, 2), entry("free", 10, 3),
          entry("expired", 10, 4)]
    pins = {"pinned": 100.0, "expired": 5.0}
    got = [e.key for e in choose_victims(es, 1000, "lru", now=50, pins=pins)]
    assert got == ["free", "expired"]


def test_owners_over_quota_go_first() -> None:
    es = [entry("x1", 10, 1, user="x"), entry("y1", 10, 2, user="y"),
          entry("y2", 10, 3, user="y")]
    got = [e.key for e in choose_victims(es, 10, "lru", 10, {}, {"user:y": 15})]
    assert got == ["y1", "y2"]


@pytest.mark.xrootd
def test_eviction_pass_keeps_pins_and_open_entries(catalog_dir: Path, tmp_path: Path) -> None:
    settings = {"cache": {"local_dir": str(tmp_path / "local")}}
    names = [f"test:/store/test/{n}" for n in TEST_FILES]
    with htpdata.Client(**settings) as client:
        for n in names:
            assert client.cat(n) == (TESTDATA / n.rsplit("/", 1)[1]).read_bytes()
        client.cache.flush()
        tier = client.cache.tier("local")
        meta = {n: client.resolver.metadata(n) for n in names}
        client.cache.pin(names[0], meta[names[0]].size or 0, meta[names[0]].adler32,
                         until=time.time() + 3600)
        open_key = client.reader(names[1]).identity().key
        with tier.reading(open_key):
            report = client.cache.evict("local", need=10**12)  # take all it may
        assert report is not None
        held = {e["tier"]: e for e in client.cache.info(names[0])}["local"]
        assert held["held"], "the pinned file stays"
        assert {e["tier"]: e for e in client.cache.info(names[1])}["local"]["held"]
        assert report.removed == len(names) - 2
        for n in names[2:]:
            assert not {e["tier"]: e for e in client.cache.info(n)}["local"]["held"]


@pytest.mark.xrootd
def test_eviction_runs_by_itself_past_the_high_watermark(catalog_dir: Path,
                                                         tmp_path: Path) -> None:
    size = 300_000
    settings = {"cache": {"local_dir": str(tmp_path / "local"), "local_size": size}}
    with htpdata.Client(**settings) as client:
        for n in TEST_FILES:
            client.cat(f"test:/store/test/{n}")
        client.cache.flush()
        client.cache.wait_for_eviction()
        assert client.cache.tier("local").usage() <= 0.95 * size


@pytest.mark.xrootd
def test_hard_quota_evicts_that_owner_first(catalog_dir: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    a, b = TEST_FILES[0], TEST_FILES[1]
    for user, name in (("alice", a), ("bob", b)):
        with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared),
                                   "user": user}) as c:
            c.cat(f"test:/store/test/{name}")
    (shared / "quota.json").write_text(json.dumps({"users": {"bob": {"soft": 1, "hard": 2}}}))
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
        report = c.cache.evict("shared")
        assert report is not None
        assert report.removed == 1
        assert {e["tier"]: e for e in c.cache.info(f"test:/store/test/{a}")}["shared"]["held"]
        assert not {e["tier"]: e for e in c.cache.info(f"test:/store/test/{b}")}["shared"]["held"]


@pytest.mark.xrootd
def test_past_hard_quota_reads_go_on_uncached(catalog_dir: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "quota.json").write_text(json.dumps({"groups": {"physics": {"hard": 1000}}}))
    (shared / "usage.json").write_text(json.dumps({"by_group": {"physics": 5000}}))
    name = f"test:/store/test/{TEST_FILES[0]}"
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared),
                               "user": "carol", "group": "physics"}) as c:
        assert c.cat(name) == (TESTDATA / TEST_FILES[0]).read_bytes()
        c.cache.flush()
        assert not {e["tier"]: e for e in c.cache.info(name)}["shared"]["held"]
    assert "hard quota" in caplog.text


@pytest.mark.xrootd
def test_cache_cli_info_clear_evict(catalog_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "local")}
    name = f"test:/store/test/{TEST_FILES[0]}"

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                              env=env, timeout=120)

    assert run("cat", name, "--start", "0", "--end", "100").returncode == 0
    info = json.loads(run("cache", "info", name, "--json").stdout)
    local = {t["tier"]: t for t in info["tiers"]}["local"]
    assert local["held"]
    assert local["bytes"] >= 100
    assert local["extents"] >= 1
    dry = json.loads(run("cache", "evict", "--tier", "local", "--dry-run", "--json").stdout)
    assert dry["entries"] == 1
    assert run("cache", "clear", name).returncode == 0
    info = json.loads(run("cache", "info", name, "--json").stdout)
    assert not {t["tier"]: t for t in info["tiers"]}["local"]["held"]
    bad = run("cache", "evict", "--tier", "shared")
    assert bad.returncode != 0


def test_disk_tier_modes_on_the_shared_volume(tmp_path: Path) -> None:
    tier = DiskTier("shared", tmp_path / "s", 0, shared=True)
    tier.ensure()
    from htpdata.cache.identity import Identity

    tier.write_extent(Identity("x:/f", 10), 0, b"0123456789", {})
    for p in (tmp_path / "s").rglob("*"):
        mode = p.stat().st_mode
        assert not mode & 0o002, f"{p} is world-writable"
        if p.is_dir():
            assert mode & 0o1000, f"{p} lacks the sticky bit"


@pytest.mark.xrootd
def test_tier_walk_agrees_with_lookups_and_never_follows_symlinks(catalog_dir: Path,
                                                                  tmp_path: Path) -> None:
    """The one-walk scan (eviction, ``report --refresh``) sees what per-key lookups see, and a
    symlink planted as a fan-out folder, an entry or its extent folder is skipped."""
    names = [f"test:/store/test/{n}" for n in TEST_FILES]
    with htpdata.Client(cache={"local_dir": str(tmp_path / "local")}) as client:
        for n in names:
            client.cat(n, 0, 1000)
        client.cache.flush()
        tier = client.cache.tier("local")
        walked = {e.key: e for e in tier.infos()}
        keys = list(tier.keys())
        assert sorted(walked) == sorted(keys)
        assert len(keys) == len(names)
        for key in keys:
            one, w = tier.entry_info(key), walked[key]
            assert one is not None
            assert (w.bytes, w.complete, w.readers, w.last_access) == \
                (one.bytes, one.complete, one.readers, one.last_access)
            assert {k: one.meta.get(k) for k in ("name", "user", "group", "dataset", "opens")} \
                == {k: w.meta.get(k) for k in ("name", "user", "group", "dataset", "opens")}
        outside = tmp_path / "outside"
        (outside / "x").mkdir(parents=True)
        (outside / "x" / f"{0:016x}-{2**40:016x}.00000001").touch()
        entries = tier.layout.entries
        os.symlink(outside, entries / "ff")  # a fan-out folder
        os.symlink(outside, entries / keys[0][:2] / keys[0][2:4] / ("e" * 40))  # an entry
        x = tier.layout.extents(keys[1])
        os.rename(x, x.with_name("x-moved"))
        os.symlink(outside / "x", x)  # an extent folder
        again = {e.key: e for e in tier.infos()}
        assert set(again) == set(walked)
        assert again[keys[1]].bytes == 0, "extents behind a symlink are not counted"
        assert sum(e.bytes for e in again.values()) < 2**40


def test_tier_walk_counts_a_range_once_and_survives_a_bad_meta(tmp_path: Path) -> None:
    """Two extents of one range (an identity without adler32 fetched twice) are one range of
    bytes; a meta.json with a nonsense 'created' does not stop the pass."""
    tier = DiskTier("shared", tmp_path / "tier", 0)
    tier.ensure()
    key = "ab" * 20
    x = tier.layout.extents(key)
    x.mkdir(parents=True)
    for adler in ("00000001", "00000002"):
        (x / f"{0:016x}-{1000:016x}.{adler}").touch()
    tier.layout.meta(key).write_text(json.dumps({"name": "t:/f", "created": "yesterday"}))
    (info,) = list(tier.infos())
    assert (info.key, info.bytes, info.last_access) == (key, 1000, 0.0)
