"""The fault, load and abuse suite: real servers, real processes, every byte compared.

Figures (faults tried, processes killed, bytes compared, wrong bytes, hangs) are printed at the
end of the run and reported in docs/reliability.md. ``HTPDATA_SOAK_SECONDS`` lengthens the soak.
"""

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
from pathlib import Path

import pytest

import htpdata
from htpdata.cache import CachedReader
from htpdata.errors import ReplicasExhaustedError
from htpdata.testing import XRootDServer, sigint_as_in_a_terminal
from htpdata.testing.cachecheck import packs_under
from htpdata.testing.cachecheck import verify_tier as check_tier

from .conftest import TEST_FILES, TESTDATA, Sections, catalog_text, lay_out
from .figures import count

pytestmark = [pytest.mark.reliability, pytest.mark.xrootd]

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NAME = f"test:/store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()
WORKER = str(Path(__file__).with_name("cache_worker.py"))


def verify_tier(root: Path) -> int:
    """Every byte stored under ``root`` that a reader would accept is the origin's; returns
    bytes checked (and counts them for the figures)."""
    originals = {f"test:/store/test/{n}": (TESTDATA / n).read_bytes() for n in TEST_FILES}
    check = check_tier(root, originals)
    count(bytes_compared=check.bytes_checked, wrong_bytes=check.wrong_bytes)
    assert check.wrong_bytes == 0, check.wrong
    return check.bytes_checked


def bounded(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        count(hangs=1)
        proc.kill()
        raise
    return out


@pytest.fixture
def tiers(tmp_path: Path, catalog_dir: Path) -> Sections:
    return {"cache": {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared")}}


# -- servers dying, restarting, hanging ---------------------------------------------------------
def test_only_replica_killed_mid_read_then_restarted(tmp_path: Path) -> None:
    from .conftest import _need_xrootd

    _need_xrootd()
    server = XRootDServer(name="lonely", tls=False)
    lay_out(server.data)
    with server:
        cat = tmp_path / "c.toml"
        cat.write_text(catalog_text([("ONLY", server, 1)]))
        settings: Sections = {"catalogs": {"path": [str(cat)]}, "replicas": {"protocols": ["root"]},
                    "timeouts": {"connect": 2, "read": 4}, "cache": {"enabled": False}}
        with htpdata.Client(**settings) as c:
            reader = c.reader(NAME)
            assert reader.read(0, 1000) == WANT[:1000]
            server.kill()
            count(faults_tried=1)
            t0 = time.monotonic()
            with pytest.raises(ReplicasExhaustedError):
                reader.read(1000, 200_000)
            assert time.monotonic() - t0 < 30, "a dead server must fail fast, not hang"
        server.restart()
        count(faults_tried=1)
        with htpdata.Client(**settings) as c:
            got = c.cat(NAME)
            count(bytes_compared=len(got), wrong_bytes=int(got != WANT))
            assert got == WANT


def test_origin_restarted_under_a_running_client(tiers: Sections,
                                                 origin: XRootDServer) -> None:
    with htpdata.Client(**tiers, timeouts={"connect": 2, "read": 5}) as c:
        r = c.reader(NAME, cache=False)
        assert r.read(0, 100) == WANT[:100]
        origin.restart()
        count(faults_tried=1)
        fresh = c.reader(NAME, cache=False)
        got = fresh.read(1000, 300_000)
        count(bytes_compared=len(got))
        assert got == WANT[1000:300_000]


# -- processes killed -----------------------------------------------------------------------------
def _kill_loop(cmd: list[str], env: dict[str, str], times: int, seed: int) -> int:
    rng = random.Random(seed)
    killed = 0
    for _ in range(times):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(30)
    count(processes_killed=killed, faults_tried=times)
    return killed


def test_kill_9_stagers_then_resume(tiers: Sections, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_CACHE_SHARED_DIR": str(tmp_path / "shared"),
           "HTPDATA_CACHE_MAX_EXTENT": "4096"}
    cmd = [sys.executable, "-m", "htpdata", "stage", "test:/Test/All", "--json", "--jobs", "2",
           "--streams", "1"]
    _kill_loop(cmd, env, 5, seed=11)
    verify_tier(tmp_path / "shared")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
    summary = json.loads(bounded(proc, 120))
    assert summary["failed"] == 0
    assert summary["staged"] + summary["already_cached"] == len(TEST_FILES)
    verify_tier(tmp_path / "shared")


def test_ctrl_c_stops_a_stage_at_once_and_the_next_run_resumes(
        tiers: Sections, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_CACHE_SHARED_DIR": str(tmp_path / "shared"),
           "HTPDATA_CACHE_MAX_EXTENT": "4096"}  # thousands of pieces: Ctrl-C lands mid-stage
    cmd = [sys.executable, "-m", "htpdata", "stage", "test:/Test/All", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_as_in_a_terminal)
    shared = tmp_path / "shared"
    deadline = time.monotonic() + 60
    def moving() -> bool:  # a piece is in (its staging log has a line past the first)
        return any(p.read_bytes().count(b"\n") > 1 for p in shared.rglob(".s.*.log"))

    while not moving() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    if proc.returncode == 0:  # it finished first: nothing to test on this machine
        pytest.skip("the stage ended before Ctrl-C arrived")
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "htpdata: interrupted"
    assert out == b""  # no half summary on stdout
    count(faults_tried=1)
    verify_tier(shared)
    again = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
    summary = json.loads(bounded(again, 120))
    assert summary["failed"] == 0
    assert summary["staged"] + summary["already_cached"] == len(TEST_FILES)
    assert sum(f["resumed"] for f in summary["files"]) + summary["already_cached"] > 0
    verify_tier(shared)


def test_kill_9_converters_leave_no_partial_output(catalog_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "htpdata", "convert", f"test:/store/test/{NANO}", "--to",
           "parquet", "--json"]
    _kill_loop(cmd, env, 4, seed=5)
    import pyarrow.parquet as pq

    for whole in (tmp_path / "cache").rglob("w.*"):  # a derived file is published whole
        assert pq.read_table(whole).num_rows == 200, whole
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
    rows = json.loads(bounded(proc, 120))
    import pyarrow.parquet as pq

    assert pq.read_table(rows[0]["path"]).num_rows == 200


def test_kill_9_readers_then_verify(tiers: Sections, tmp_path: Path) -> None:
    settings = json.dumps({"cache": {**tiers["cache"], "max_extent": 8192, "memory_size": 0}})
    ranges = json.dumps([[s, s + 40_000] for s in range(0, 300_000, 50_000)])
    killed = _kill_loop([sys.executable, WORKER, settings, NAME, ranges, "--loop"],
                        os.environ.copy(), 6, seed=3)
    assert killed > 0, "no reader was killed while it ran"
    stored_by_killed = verify_tier(tmp_path)
    # One more reader, not killed: it reads every range through what the killed ones left.
    done = subprocess.run([sys.executable, WORKER, settings, NAME, ranges], timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    want = [zlib.adler32(WANT[s:s + 40_000]) & 0xFFFFFFFF for s in range(0, 300_000, 50_000)]
    assert json.loads(done.stdout.strip().splitlines()[-1])["adler32"] == want
    stored = verify_tier(tmp_path)
    assert stored >= stored_by_killed
    assert stored >= 6 * 40_000  # every range is in a tier, and every stored byte checked


# -- damaged cache files --------------------------------------------------------------------------
def test_garbage_sidecars_and_truncated_packs(tiers: Sections,
                                             tmp_path: Path) -> None:
    with htpdata.Client(**tiers) as c:
        assert c.cat(NAME) == WANT
        c.cache.pin(NAME, len(WANT), None, time.time() + 60)
    with htpdata.Client(**tiers) as c:
        from htpdata.reporting import build_report

        build_report(c, refresh=True)  # summaries, traffic, stamps: every sidecar there is
    for p in tmp_path.rglob("*"):
        if p.is_symlink() or not p.is_file() or p.suffix == ".toml":
            continue
        if p.name.startswith("p."):
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncated
        else:
            p.write_bytes(b"\x00garbage{")
        count(faults_tried=1)
    with htpdata.Client(**tiers) as c:
        got = c.cat(NAME)
        count(bytes_compared=len(got), wrong_bytes=sum(a != b for a, b in zip(got, WANT,
                                                                              strict=True)))
        assert got == WANT
        from htpdata.reporting import build_report

        build_report(c, refresh=True)  # reports survive garbage too
        assert c.cache.evict("shared", need=10**12) is not None


def test_cache_folder_deleted_under_a_running_process(tiers: Sections,
                                                      tmp_path: Path) -> None:
    with htpdata.Client(**tiers) as c:
        r = c.reader(NAME)
        assert isinstance(r, CachedReader)
        assert r.read(0, 50_000) == WANT[:50_000]
        c.cache.flush()
        shutil.rmtree(tmp_path / "local")
        shutil.rmtree(tmp_path / "shared")
        count(faults_tried=1)
        if c.cache.memory is not None:
            c.cache.memory.drop(r.identity().key)
        assert r.read(0, 200_000) == WANT[:200_000]
        count(bytes_compared=200_000)


def test_read_only_shared_tier(catalog_dir: Path, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(folder)}}
        with htpdata.Client(**settings) as c:
            c.cat(NAME, 0, 1000)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        count(faults_tried=1)
        other = TEST_FILES[-1]  # not cached yet: its bytes would have to be written
        with htpdata.Client(**settings) as c:
            got = c.cat(NAME)
            count(bytes_compared=len(got))
            assert got == WANT
            assert c.cat(f"test:/store/test/{other}") == (TESTDATA / other).read_bytes()
        assert "not usable" in caplog.text
    finally:
        subprocess.run(["umount", str(folder)], check=False)


# -- load -----------------------------------------------------------------------------------------
def test_32_processes_overlapping_reads_while_eviction_runs(catalog_dir: Path,
                                                            tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    size = 3_000_000
    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(shared),
                                    "shared_size": size, "head": 4096, "tail": 4096,
                                    "merge_gap": 0}}
    # Older, unrelated entries fill the tier, so eviction has work while the readers run.
    from htpdata.cache.identity import Identity

    with htpdata.Client(**settings) as c:
        tier = c.cache.tier("shared")
        for i in range(40):
            tier.store(Identity(f"test:/junk/{i}", 60_000), [(0, os.urandom(60_000))],
                       {"name": f"test:/junk/{i}"}, private=False)
    ranges = [[i * 20_000, i * 20_000 + 15_000] for i in range(15)]
    stop = threading.Event()
    passes = 0

    def evictor() -> None:
        nonlocal passes
        with htpdata.Client(**settings) as c:
            while not stop.is_set():
                if c.cache.evict("shared") is not None:
                    passes += 1
                time.sleep(0.05)

    thread = threading.Thread(target=evictor, daemon=True)
    thread.start()
    start_at = time.time() + 8.0
    procs = [subprocess.Popen([sys.executable, WORKER, json.dumps(settings), NAME,
                               json.dumps(ranges), "--start-at", str(start_at)],
                              stdout=subprocess.PIPE, env=os.environ.copy()) for _ in range(32)]
    try:
        results = [json.loads(bounded(p, 180)) for p in procs]
    finally:
        stop.set()
        thread.join(30)
    want = [zlib.adler32(WANT[s:e]) & 0xFFFFFFFF for s, e in ranges]
    wrong = sum(r["adler32"] != want for r in results)
    count(bytes_compared=32 * sum(e - s for s, e in ranges), wrong_bytes=wrong)
    assert wrong == 0
    one = sum(e - s for s, e in ranges) + 4096 + 4096
    upstream = sum(r["stats"]["upstream"] for r in results)
    assert upstream <= 1.05 * one, (upstream, one)
    assert passes >= 1
    verify_tier(shared)


def test_soak_memory_and_descriptors_stay_flat(tiers: Sections,
                                               tmp_path: Path) -> None:
    seconds = float(os.environ.get("HTPDATA_SOAK_SECONDS", "15"))

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    from htpdata.staging import stage

    def one_round(rounds: int) -> None:
        for n in TEST_FILES:
            with htpdata.open(f"test:/store/test/{n}", client=c) as f:
                f.seek(rounds * 997 % 10_000)
                f.read(5000)
        stage("test:/Test/All", client=c)
        c.cache.evict("shared", need=10**12)
        c.cache.evict("local", need=10**12)

    with htpdata.Client(**tiers) as c:
        # A third of the time before the baseline: the tiers keep a bounded set of entries'
        # folder and pack descriptors open by design (area.MAX_OPEN_ENTRIES), the prefetcher
        # imports uproot on its first use (on a thread of its own, whenever it gets there), and
        # the allocator's per-thread arenas fill up; a leak goes on growing with rounds.
        warm_until = time.monotonic() + seconds / 3
        rounds = 0
        while rounds < 3 or time.monotonic() < warm_until:
            one_round(rounds)
            rounds += 1
        c.cache.flush()
        rss0, fd0 = rss(), fds()
        deadline = time.monotonic() + seconds * 2 / 3
        rounds = 0
        while time.monotonic() < deadline:
            one_round(rounds)
            rounds += 1
        c.cache.flush()
        grew_rss, grew_fd = rss() - rss0, fds() - fd0
    assert rounds >= 3
    assert grew_fd <= 10, f"file descriptors grew by {grew_fd} over {rounds} rounds"
    assert grew_rss < 64 * 1024**2, f"memory grew by {grew_rss / 1e6:.0f} MB over {rounds} rounds"


# -- abuse ----------------------------------------------------------------------------------------
def test_symlinks_planted_in_the_shared_tier_are_not_followed(tiers: Sections,
                                                              tmp_path: Path) -> None:
    with htpdata.Client(**tiers) as c:
        c.cat(NAME, 0, 1000)
    secret = tmp_path / "outside"
    secret.mkdir()
    for tier in ("local", "shared"):
        for p in list(packs_under(tmp_path / tier)):  # same name, a link to other bytes
            fake = secret / f"{tier}-{p.name}"
            fake.write_bytes(b"\xff" * p.stat().st_size)
            p.unlink()
            p.symlink_to(fake)
            count(faults_tried=1)
    with htpdata.Client(**tiers) as c:
        assert c.cat(NAME, 0, 1000) == WANT[:1000]
    # a whole entry folder replaced by a symlink out of the tier
    for tier in ("local", "shared"):
        for entry in [p for p in (tmp_path / tier).glob("*/e/*/*") if p.is_dir()]:
            shutil.rmtree(entry)
            target = secret / f"e-{tier}-{entry.name}"
            target.mkdir()
            (target / "keep").write_text("not the cache's")
            entry.symlink_to(target)
            count(faults_tried=1)
    with htpdata.Client(**tiers) as c:
        assert c.cat(NAME, 0, 1000) == WANT[:1000]
        c.cache.evict("shared", need=10**12)
        c.cache.clear()
    kept = [p for p in secret.rglob("keep")]
    assert len(kept) >= 2, "nothing outside the tier is removed"
    assert all(p.read_text() == "not the cache's" for p in kept)


def test_secrets_never_reach_logs_errors_reports_or_keys(tiers: Sections,
                                                         tmp_path: Path,
                                                         origin: XRootDServer) -> None:
    token = "eyJsecret-token-9f8e7d6c5b4a"
    tok = tmp_path / "bt"
    tok.write_text(token)
    env = {**os.environ, "BEARER_TOKEN_FILE": str(tok), "HTPDATA_CACHE_LOCAL_DIR":
           str(tmp_path / "local"), "HTPDATA_CACHE_SHARED_DIR": str(tmp_path / "shared")}
    outs = []
    for args in (["cat", f"{origin.https_url}store/test/{NANO}", "--end", "100"],
                 ["cat", f"{origin.https_url}store/test/missing.root?authz={token}"],
                 ["cat", "https://localhost:1/x.root"], ["config", "--json"],
                 ["report", "--json"], ["--debug", "cat", "https://localhost:1/y.root"]):
        p = subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                           env={**env, "HTPDATA_AUTH_CA_FILE": str(origin.cert),
                                "HTPDATA_TIMEOUTS_CONNECT": "1"}, timeout=120)
        outs.append(p.stdout + p.stderr)
        count(faults_tried=1)
    for out in outs:
        assert token.encode() not in out
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != tok:
            assert token.encode() not in path.read_bytes(), path
            assert token not in path.name
