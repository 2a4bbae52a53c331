"""Eviction passes over real tiers: pins, marks in use (both roads, counted per reader), the
high watermark, quotas, leases with heartbeats and safe takeover, trash, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import htpdata
from htpdata.cache.fsops import Folder
from htpdata.cache.lease import Lease
from htpdata.testing.cachecheck import packs_under

from .conftest import TEST_FILES, TESTDATA, Sections

NAMES = [f"test:/store/test/{n}" for n in TEST_FILES]


def held(client: htpdata.Client, name: str, tier: str = "local") -> bool:
    return bool({e["tier"]: e for e in client.cache.info(name)}[tier]["held"])


def removed_by_a_pass(client: htpdata.Client, tier: str = "local") -> int:
    """Entries one eviction pass that takes all it may removes (the pass must run)."""
    report = client.cache.evict(tier, need=10**12)
    assert report is not None
    return report.removed


@pytest.mark.xrootd
def test_eviction_pass_keeps_pins_and_entries_in_use(catalog_dir: Path, tmp_path: Path) -> None:
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local")}}
    with htpdata.Client(**settings) as client:
        for n in NAMES:
            assert client.cat(n) == (TESTDATA / n.rsplit("/", 1)[1]).read_bytes()
        client.cache.flush()
        meta = {n: client.resolver.metadata(n) for n in NAMES}
        assert client.cache.pin(NAMES[0], meta[NAMES[0]].size or 0, meta[NAMES[0]].adler32,
                                until=time.time() + 3600) == 1
        with htpdata.open(NAMES[1], client=client) as f:  # road A: an open file marks its entry
            f.read(10)
            report = client.cache.evict("local", need=10**12)  # take all it may
        assert report is not None
        assert held(client, NAMES[0]), "the pinned file stays"
        assert held(client, NAMES[1]), "the open file stays"
        assert report.removed == len(NAMES) - 2
        for n in NAMES[2:]:
            assert not held(client, n)


@pytest.mark.xrootd
def test_two_readers_of_one_file_closing_one_keeps_the_mark(catalog_dir: Path,
                                                            tmp_path: Path) -> None:
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local")}}
    with htpdata.Client(**settings) as client:
        a, b = (htpdata.open(NAMES[0], client=client), htpdata.open(NAMES[0], client=client))
        a.read(100)
        b.read(100)
        client.cache.flush()
        a.close()
        assert removed_by_a_pass(client) == 0
        assert held(client, NAMES[0])
        b.close()
        assert removed_by_a_pass(client) == 1


@pytest.mark.xrootd
def test_reads_through_fsspec_cat_ranges_mark_the_entry(catalog_dir: Path, tmp_path: Path) -> None:
    """Road B (``htpdata://`` with uproot's cat_ranges, no open file) marks too, for a while."""
    import fsspec

    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local")}}
    with htpdata.Client(**settings) as client:
        htpdata.reset_default_client(client)
        fs = fsspec.filesystem("htpdata")
        path = f"htpdata://test/store/test/{TEST_FILES[0]}"
        want = (TESTDATA / TEST_FILES[0]).read_bytes()[:1000]
        assert fs.cat_ranges([path], [0], [1000]) == [want]
        client.cache.flush()
        assert removed_by_a_pass(client) == 0
        assert held(client, NAMES[0])


@pytest.mark.xrootd
def test_a_mark_of_another_live_process_is_honoured(catalog_dir: Path, tmp_path: Path) -> None:
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local")}}
    code = ("import htpdata, sys, time\n"
            f"c = htpdata.Client(cache={{'local_dir': {str(tmp_path / 'local')!r}}})\n"
            f"f = htpdata.open({NAMES[0]!r}, client=c); f.read(10)\n"
            "print('open', flush=True); time.sleep(60)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          env=os.environ.copy()) as proc:
        _with_reader_open(proc, settings)


def _with_reader_open(proc: subprocess.Popen[bytes], settings: Sections) -> None:
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"open"
        with htpdata.Client(**settings) as client:
            client.cat(NAMES[1], 0, 100)
            client.cache.flush()
            report = client.cache.evict("local", need=10**12)
            assert report is not None
            assert report.removed == 1
            assert held(client, NAMES[0])
        proc.kill()
        proc.wait()
        with htpdata.Client(**settings) as client:  # its process is gone: the mark too
            assert removed_by_a_pass(client) == 1
    finally:
        proc.kill()


@pytest.mark.xrootd
def test_eviction_runs_by_itself_past_the_high_watermark(catalog_dir: Path,
                                                         tmp_path: Path) -> None:
    size = 300_000
    settings: Sections = {"cache": {"local_dir": str(tmp_path / "local"), "local_size": size}}
    with htpdata.Client(**settings) as client:
        for n in TEST_FILES:
            client.cat(f"test:/store/test/{n}")
        client.cache.flush()
        client.cache.wait_for_eviction()
        assert sum(p.stat().st_size for p in packs_under(tmp_path / "local")) <= 0.95 * size


def fds_under(folder: Path) -> list[str]:
    """This process's descriptors open on something under ``folder``."""
    inside = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(folder) or target.startswith(f"{folder}/"):
            inside.append(target)
    return inside


@pytest.mark.xrootd
def test_closing_a_client_stops_its_background_pass_and_leaves_nothing_open(
        catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass its own writes started is stopped at its next entry and waited for before the
    client's tiers close: left running it opened them again behind the close (a descriptor
    left in the tier keeps its filesystem busy: it could not be unmounted), and on a big tier
    it runs for minutes. The next pass does the rest."""
    from htpdata.cache.evict import EvictionReport
    from htpdata.cache.evict import evict_area as real

    reports: list[EvictionReport | None] = []
    held_up = [True]

    def pass_into_the_close(area: object, **kwargs: object) -> EvictionReport | None:
        stop = kwargs["stop"]
        assert callable(stop)
        deadline = time.monotonic() + 10
        while held_up[0] and not stop() and time.monotonic() < deadline:
            time.sleep(0.01)  # the first pass is still at work when the client closes
        got = real(area, **kwargs)  # type: ignore[arg-type]
        reports.append(got)
        return got

    monkeypatch.setattr("htpdata.cache.evict_area", pass_into_the_close)
    local = tmp_path / "local"
    settings: Sections = {"cache": {"local_dir": str(local), "local_size": 300_000}}
    with htpdata.Client(**settings) as client:
        for n in TEST_FILES:
            client.cat(f"test:/store/test/{n}")
    assert reports  # the pass ended before the close did
    assert any(r is not None and r.stopped for r in reports)
    assert fds_under(local) == []
    held_up[0] = False
    with htpdata.Client(**settings) as client:
        report = client.cache.evict("local")
    assert report is not None
    assert not report.stopped
    assert sum(p.stat().st_size for p in packs_under(local)) <= 0.95 * 300_000


@pytest.mark.xrootd
def test_past_hard_quota_reads_go_on_uncached_and_warn_twice(
        catalog_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Soft then hard: two different lines (the soft one does not say caching stopped)."""
    shared = tmp_path / "shared"
    name, other = NAMES[0], NAMES[1]
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
        me = c.cache.user
        assert c.cat(name, 0, 1000)
        c.cache.flush()
        from htpdata.reporting import set_quota

        used = c.cache.usage(c.cache.tier("shared"))
        assert used > 0
        set_quota(c.cache.tier("shared"), "users", me, used + 200_000, used // 2)
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared),
                               "memory_size": 0}) as c:
        assert c.cat(other, 0, 1000)  # over soft, under hard: cached, with a warning
        c.cache.flush()
        assert held(c, other, "shared")
        soft = [r.getMessage() for r in caplog.records if "soft quota" in r.getMessage()]
        assert soft
        assert "still caching" in soft[0]
        set_quota(c.cache.tier("shared"), "users", me, 10, 5)
        c.cache._admit.clear()
        third = NAMES[2]
        assert c.cat(third) == (TESTDATA / TEST_FILES[2]).read_bytes()
        c.cache.flush()
        assert not held(c, third, "shared")
    assert "over the hard quota" in caplog.text


@pytest.mark.xrootd
def test_own_removals_count_at_once(catalog_dir: Path, tmp_path: Path) -> None:
    """After a user evicts their own files, the usage quota decisions see is the new one
    (no report --refresh in between)."""
    shared = tmp_path / "shared"
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
        for n in NAMES:
            c.cat(n)
        c.cache.flush()
        tier = c.cache.tier("shared")
        full = c.cache.usage(tier)
        assert full > sum((TESTDATA / n).stat().st_size for n in TEST_FILES)
        c.cache.forget(NAMES[0])
        assert c.cache.usage(tier) < full - (TESTDATA / TEST_FILES[0]).stat().st_size
        c.cache.clear("shared")
        assert c.cache.usage(tier) == 0


def test_lease_two_takers_never_both_win_and_only_the_holder_releases(tmp_path: Path) -> None:
    area = Folder.open_root(str(tmp_path))
    try:
        a = Lease(area.fd, "evict", 0o700, 0o600, lambda uid: True, stale=0.5)
        assert a.acquire()
        b = Lease(area.fd, "evict", 0o700, 0o600, lambda uid: True, stale=0.5)
        assert not b.acquire()  # a is alive (this process)
        # a stalls: its heartbeat stops and, as if on another node, only its mtime can tell
        holder = tmp_path / "evict.lease" / a.holder
        new = holder.with_name("h.othernode.1.1." + a.holder.rsplit(".", 1)[1])
        os.rename(holder, new)
        a.holder = new.name
        os.utime(new, (time.time() - 10, time.time() - 10))
        takers = [Lease(area.fd, "evict", 0o700, 0o600, lambda uid: True, stale=0.5)
                  for _ in range(3)]
        won = [t.acquire() for t in takers]
        assert won.count(True) == 1
        assert not a.held()  # the stalled holder learns it lost the lease
        a.release()  # and releasing removes nothing of the new holder's
        winner = takers[won.index(True)]
        assert winner.held()
        assert (tmp_path / "evict.lease" / winner.holder).exists()
        winner.release()
        assert not (tmp_path / "evict.lease").exists()
    finally:
        area.close()


@pytest.mark.xrootd
def test_cache_cli_info_clear_evict(catalog_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "local")}
    name = f"test:/store/test/{TEST_FILES[0]}"

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                              env=env, timeout=120, stdin=subprocess.DEVNULL)

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
    assert run("cat", name, "--start", "0", "--end", "100").returncode == 0
    refused = run("cache", "clear")  # everything, not on a terminal, no --yes
    assert refused.returncode == 2
    assert b"--yes" in refused.stderr
    assert refused.stderr.count(b"\n") == 1
    done = run("cache", "clear", "--yes")
    assert done.returncode == 0, done.stderr
    assert b"removed 1 entries" in done.stderr


def test_policy_names_and_watermarks_are_checked_when_loaded(tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "l")}
    for var, value in (("HTPDATA_CACHE_POLICY", "LRU"), ("HTPDATA_CACHE_POLICY", "fifo"),
                       ("HTPDATA_CACHE_HIGH_WATERMARK", "95")):
        p = subprocess.run([sys.executable, "-m", "htpdata", "cache", "evict", "--tier", "local",
                            "--dry-run"], capture_output=True, env={**env, var: value},
                           timeout=60)
        if value == "LRU":
            assert p.returncode == 0, p.stderr
        else:
            assert p.returncode == 7
            assert p.stderr.decode().count("\n") == 1
            assert var in p.stderr.decode()


def test_a_reader_counting_bytes_does_not_wait_for_the_record_file_being_made(
        tmp_path: Path) -> None:
    """The record's first create (a round trip to a network filesystem's metadata server) runs
    in a short thread; marks and counts made meanwhile neither wait for it nor get lost."""
    import threading

    from htpdata.cache.records import ProcessRecord, parse_record

    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    may_create, creating = threading.Event(), threading.Event()

    def create(name: str, mode: int) -> int:
        creating.set()
        assert may_create.wait(30)
        return os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode, dir_fd=folder)

    rec = ProcessRecord(create, 0o600)
    try:
        rec.hold("k1")  # starts the thread that makes the file
        assert creating.wait(30)
        counted = threading.Event()

        def count() -> None:
            rec.count("k1", served=7)
            counted.set()

        counter = threading.Thread(target=count)
        counter.start()
        assert counted.wait(30), "count() waited for the record file's create"
        assert not may_create.is_set()  # it returned while the create was still under way
        rec.touch("k2")
        may_create.set()
        counter.join(30)
        rec.close()
        view = parse_record(Folder(folder, str(tmp_path), None), rec.name, lambda uid: True)
        assert view is not None
        raw = json.loads((tmp_path / rec.name).read_bytes())
        assert raw["closed"] is True
        assert raw["traffic"]["k1"]["served"] == 7
        assert set(raw["access"]) == {"k1", "k2"}
    finally:
        may_create.set()
        os.close(folder)


def test_a_count_landing_while_a_full_record_is_rotated_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record past MAX_KEYS entry keys is closed and a new one begun: a count another thread
    makes while the old file's last write is under way goes to the new file, not lost."""
    import threading

    from htpdata.cache import records
    from htpdata.cache.records import ProcessRecord

    monkeypatch.setattr(records, "MAX_KEYS", 3)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    made: list[str] = []

    def create(name: str, mode: int) -> int:
        if not made:  # the old file's last write: another reader counts meanwhile
            late = threading.Thread(target=lambda: rec.count("late", served=5))
            late.start()
            late.join(30)
        made.append(name)
        return os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode, dir_fd=folder)

    rec = ProcessRecord(create, 0o600)
    try:
        for k in ("k1", "k2", "k3", "k4"):  # the fourth key rotates the record
            rec.count(k, served=1)
        rec.close()
        assert len(made) == 2
        served: dict[str, int] = {}
        for name in made:
            raw = json.loads((tmp_path / name).read_bytes())
            assert raw["closed"] is True
            for key, row in raw["traffic"].items():
                served[key] = served.get(key, 0) + row["served"]
        assert served == {"k1": 1, "k2": 1, "k3": 1, "k4": 1, "late": 5}
    finally:
        os.close(folder)
