"""Staging: the pure pieces, then real stages against real XRootD origins (and Dask)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.cache import CachedReader
from htpdata.catalogs import FileEntry
from htpdata.staging import StageRefusedError, make_plan, parse_duration, stage, stage_file
from htpdata.staging.checksum import adler32_combine, combine_all
from htpdata.testing import XRootDServer

from .conftest import TEST_FILES, TESTDATA, Sections, catalog_text


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_adler32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@given(st.binary(max_size=3000), st.integers(0, 65520), st.integers(0, 65520))
def test_fast_adler32_is_zlibs(data: bytes, low: int, high: int) -> None:
    """Same values as zlib from any running state (both halves of a state are < 65521)."""
    from htpdata.adler32 import adler32, adler32_hex

    start = high << 16 | low

    assert adler32(data, start) == zlib.adler32(data, start) & 0xFFFFFFFF
    assert adler32_hex(memoryview(data)) == f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@given(st.lists(st.binary(max_size=500), max_size=8))
def test_combine_all(parts: list[bytes]) -> None:
    assert combine_all((zlib.adler32(p), len(p)) for p in parts) == zlib.adler32(b"".join(parts))


def test_parse_duration() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 43200
    assert parse_duration("90") == 90
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


def test_plan() -> None:
    files = [FileEntry("a", 100, "x"), FileEntry("b", 200, "y"), FileEntry("c", None, None)]
    p = make_plan(files, {"a": True}, {"b": 50}, "shared", tier_free=1000, quota_free=None)
    assert [f.name for f in p.cached] == ["a"]
    assert p.fetch_bytes == 150
    assert p.partial_bytes == 50
    assert p.unknown_size == 1
    assert p.fits
    p = make_plan(files, {}, {}, "shared", tier_free=1000, quota_free=120)
    assert not p.fits
    assert "quota" in (p.problem or "")




def _dirs(tmp_path: Path) -> Sections:
    return {"cache": {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared")}}


@pytest.mark.xrootd
def test_stage_dataset_verified_pinned_and_served_without_origin(
        catalog_dir: Path, tmp_path: Path, origin: XRootDServer) -> None:
    with htpdata.Client(**_dirs(tmp_path)) as client:
        s = stage("test:/Test/All", client=client, pin="1d")
        assert s.ok
        assert len(s.staged) == len(TEST_FILES)
        assert all(r.verified for r in s.staged)
        assert s.pinned_until is not None
        again = stage("test:/Test/All", client=client)
        assert not again.plan.to_fetch
        assert len(again.plan.cached) == len(TEST_FILES)
        info = {t["tier"]: t for t in client.cache.info(f"test:/store/test/{TEST_FILES[0]}")}
        assert info["shared"]["complete"]
        assert info["shared"]["pinned_until"]
    origin.stop()
    try:
        with htpdata.Client(cache={"local_dir": "off",
                                   "shared_dir": str(tmp_path / "shared")}) as c:
            for n in TEST_FILES:
                assert c.cat(f"test:/store/test/{n}") == (TESTDATA / n).read_bytes()
    finally:
        origin.start()


@pytest.mark.xrootd
def test_interrupted_stage_resumes_without_refetching(catalog_dir: Path,
                                                     tmp_path: Path) -> None:
    name = "test:/store/test/nanoAOD_2015_CMS_Open_Data_ttbar.root"
    settings: Sections = {"cache": {**_dirs(tmp_path)["cache"], "max_extent": 16384}}
    with htpdata.Client(**settings) as client:
        tier = client.cache.tier("shared")
        entry = client.files(name)[0]
        assert entry.size is not None
        stop = threading.Event()
        first = stage_file(client, entry, tier, streams=1, on_bytes=lambda n: stop.set(),
                           cancel=stop)  # Ctrl-C after the first piece
        assert first.status == "failed"
        assert "interrupted" in (first.error or "")
        assert 0 < first.fetched < entry.size
        second = stage_file(client, entry, tier)
        assert second.status == "staged"
        assert second.verified
        assert second.resumed == first.fetched
        assert second.fetched == entry.size - first.fetched


@pytest.mark.xrootd
def test_one_transient_error_costs_one_retry_not_one_per_piece(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pieces of a file share a reader; when a blip exhausts its only replica, the pieces
    after it start afresh instead of each failing at once and waiting out a retry. (A server
    that drops exactly one request is a fault a real one cannot be made to produce: the
    transport raises once.)"""
    from htpdata.errors import StorageUnavailableError
    from htpdata.transports.xrootd import XRootDTransport

    real = XRootDTransport.cat_ranges
    calls = {"n": 0}

    def flaky(self: XRootDTransport, url: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageUnavailableError("connection reset", url=url)
        return real(self, url, ranges)

    sleeps: list[float] = []
    monkeypatch.setattr(XRootDTransport, "cat_ranges", flaky)
    monkeypatch.setattr("htpdata.staging.transfer.time.sleep", sleeps.append)  # the back-off
    name = "test:/store/test/nanoAOD_2015_CMS_Open_Data_ttbar.root"
    settings: Sections = {"cache": {**_dirs(tmp_path)["cache"], "max_extent": 16384},
                "replicas": {"protocols": ["root"]}}  # one replica: the blip exhausts it
    with htpdata.Client(**settings) as client:
        entry = client.files(name)[0]
        assert entry.size is not None
        result = stage_file(client, entry, client.cache.tier("shared"), streams=1)
    assert result.status == "staged", result.error
    assert result.verified
    assert len(sleeps) == 1
    assert calls["n"] == -(-entry.size // 16384) + 1


@pytest.mark.xrootd
def test_wrong_checksum_fails_and_nothing_is_complete(tmp_path: Path,
                                                      origin: XRootDServer) -> None:
    cat = tmp_path / "bad.toml"
    good = catalog_text([("SITE_A", origin, 1)])
    real = f"{zlib.adler32((TESTDATA / TEST_FILES[0]).read_bytes()) & 0xFFFFFFFF:08x}"
    cat.write_text(good.replace(f'adler32 = "{real}"', 'adler32 = "00000001"'))
    settings: Sections = {"catalogs": {"path": [str(cat)]}, "auth": {"ca_file": str(origin.cert)},
                **_dirs(tmp_path)}
    with htpdata.Client(**settings) as client:
        s = stage(f"test:/store/test/{TEST_FILES[0]}", client=client)
        assert not s.ok
        assert "adler32 mismatch" in (s.failed[0].error or "")
        reader = client.reader(f"test:/store/test/{TEST_FILES[0]}")
        assert isinstance(reader, CachedReader)
        assert not client.cache.tier("shared").complete(reader.identity())


@pytest.mark.xrootd
def test_refuses_when_it_would_not_fit(catalog_dir: Path, tmp_path: Path) -> None:
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local"), "local_size": 1000}}
    with htpdata.Client(**settings) as client, pytest.raises(StageRefusedError,
                                                             match=r"needs \d+ bytes"):
        stage("test:/Test/All", client=client, tier="local")


@pytest.mark.xrootd
def test_refuses_past_the_groups_hard_quota(catalog_dir: Path, tmp_path: Path) -> None:
    """A user under their own limit is still refused when their group's is the tighter one."""
    from htpdata.reporting.quota import set_quota

    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared")}}
    with htpdata.Client(**settings) as client:
        tier = client.cache.tier("shared")
        me, group = client.cache.user, client.cache.group  # usage is the OS identity's
        set_quota(tier, "users", me, 10**12, None)
        set_quota(tier, "groups", group, 1000, None)
        with pytest.raises(StageRefusedError,
                           match=f"hard quota of group {group} has room for 1000"):
            stage("test:/Test/All", client=client, tier="shared")
        set_quota(tier, "groups", group, 10**12, None)
        assert stage("test:/Test/All", client=client, tier="shared", dry_run=True).plan.fits


@pytest.mark.xrootd
def test_stage_cli_dry_run_json_and_refusal(catalog_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "local")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                              env={**env, **extra}, timeout=120)

    dry = run("stage", "test:/Test/All", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["plan"]
    assert plan["to_fetch"] == len(TEST_FILES)
    assert plan["fits"]
    done = run("stage", "test:/Test/All", "--json", "--pin", "2h")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["staged"] == len(TEST_FILES)
    assert summary["failed"] == 0
    assert done.stderr == b""  # --json: nothing but the summary
    refused = run("stage", "test:/Test/All", "--tier", "local",
                  HTPDATA_CACHE_LOCAL_DIR=str(tmp_path / "tiny"), HTPDATA_CACHE_LOCAL_SIZE="10")
    assert refused.returncode == 9
    assert b"stage refused" in refused.stderr
    bad = run("stage", "test:/Test/All", "--pin", "forever")
    assert bad.returncode == 2
    for flag in ("--jobs", "--streams", "--site-limit"):
        zero = run("stage", "test:/Test/All", flag, "0")
        assert zero.returncode == 2
        assert f"argument {flag}: must be at least 1".encode() in zero.stderr


@pytest.mark.xrootd
def test_stage_fails_over_when_an_origin_dies(
        tmp_path: Path, two_origins: tuple[XRootDServer, XRootDServer, Path]) -> None:
    a, b, cat = two_origins
    a.kill()
    with htpdata.Client(catalogs={"path": [str(cat)]}, replicas={"protocols": ["root"]},
                        timeouts={"connect": 2, "read": 5}, **_dirs(tmp_path)) as client:
        s = stage("test:/Test/All", client=client, retries=0)
        assert s.ok, [r.error for r in s.failed]
        assert all(f"localhost:{b.port}" in (r.replica or "") for r in s.staged)


@pytest.mark.xrootd
@pytest.mark.slow
def test_stage_on_a_dask_cluster(catalog_dir: Path, tmp_path: Path,
                                 dask_client: object) -> None:
    with htpdata.Client(**_dirs(tmp_path)) as client:
        s = stage("test:/Test/All", client=client, dask=dask_client)
        assert s.ok
        assert len(s.staged) == len(TEST_FILES)
        assert all(r.verified for r in s.staged)


def test_an_empty_file_is_staged_and_served(tmp_path: Path) -> None:
    """An empty file has no pieces, so no piece creates its cache entry: marking it complete
    must (found by review: it failed with FileNotFoundError)."""
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(tmp_path / "shared")}) as c:
        entry = FileEntry(f"file://{empty}", 0, "00000001")  # adler32 of no bytes
        result = stage_file(c, entry, c.cache.tier("shared"))
        assert result.status == "staged", result.error
        assert result.verified
        from htpdata.cache.identity import Identity
        from htpdata.names import parse_name

        ident = Identity(str(parse_name(entry.name)), 0, "00000001")
        assert c.cache.tier("shared").complete(ident)
        assert c.cat(entry.name) == b""


def test_a_bug_in_a_piece_is_raised_not_reported(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage problems fail their file; an exception that is a bug reaches the caller."""
    from htpdata.cache.whole import StagedFile

    files = []
    for i in range(3):
        p = tmp_path / f"f{i}.root"
        p.write_bytes(os.urandom(50_000))
        files.append(FileEntry(f"file://{p}", 50_000,
                               f"{zlib.adler32(p.read_bytes()) & 0xFFFFFFFF:08x}"))

    def bug(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(StagedFile, "write", bug)
    from htpdata.staging.transfer import transfer

    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(tmp_path / "shared"),
                               "max_extent": 16384}) as c:
        with pytest.raises(ValueError, match="a bug"):
            transfer(c, files, c.cache.tier("shared"))
        with pytest.raises(ValueError, match="site_limit"):
            transfer(c, files, c.cache.tier("shared"), site_limit=0)
