"""Slow sources left behind, and hedged first bytes (issue 20).

The decisions are pure and tested on their own. Then two real origins, each behind its own WAN
emulator (:mod:`htpdata.testing.wan`): one throttled in the middle of a read is left for the
other at the same offset; one far away (a long delay) loses the file's first bytes to a hedge
sent to the other, once per file however many threads read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.config import ByteSize, ReplicaSettings
from htpdata.errors import StorageTooSlowError
from htpdata.hedging import LatencyEstimate, hedge_delay, slow_deadline, update_estimate
from htpdata.reader import ReplicaReader
from htpdata.testing import XRootDServer
from htpdata.testing.wan import WanProxy

from .conftest import TESTDATA, _need_xrootd, catalog_text, lay_out

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
WANT = (TESTDATA / NANO).read_bytes()
NAME = f"slow:/store/test/{NANO}"


# -- pure -------------------------------------------------------------------------------------
def test_slow_deadline() -> None:
    s = ReplicaSettings(slow_floor=ByteSize(1000), slow_window=2, slow_ramp_up=3)
    assert slow_deadline(100, s, first=False) == 2           # small: the window
    assert slow_deadline(10_000, s, first=False) == 10       # large: bytes / floor
    assert slow_deadline(10_000, s, first=True) == 13        # first: plus the ramp-up
    assert slow_deadline(10_000, ReplicaSettings(slow_floor=ByteSize(0)), first=True) is None


@given(st.lists(st.floats(0.001, 10), min_size=1, max_size=50))
def test_hedge_delay_stays_in_bounds_and_follows_latency(samples: list[float]) -> None:
    s = ReplicaSettings(hedge_min=0.05, hedge_max=1.0)
    e = LatencyEstimate()
    assert hedge_delay(e, s) == 1.0                           # nothing seen yet: the longest
    for x in samples:
        e = update_estimate(e, x)
        assert 0.05 <= hedge_delay(e, s) <= 1.0
    assert e.samples == len(samples)
    steady = LatencyEstimate()
    for _ in range(30):
        steady = update_estimate(steady, 0.1)
    assert hedge_delay(steady, s) == pytest.approx(0.1, abs=0.01)


# -- two origins behind two emulated WANs -----------------------------------------------------
@pytest.fixture
def two_wans(tmp_path: Path) -> Iterator[tuple[WanProxy, WanProxy, Path]]:
    _need_xrootd()
    a, b = XRootDServer(name="slowA", tls=False), XRootDServer(name="slowB", tls=False)
    for s in (a, b):
        lay_out(s.data)
    with a, b, WanProxy("localhost", a.port, delay_ms=2) as wa, \
            WanProxy("localhost", b.port, delay_ms=2) as wb:
        text = catalog_text([("SITE_A", a, 1), ("SITE_B", b, 2)], namespace="slow")
        cat = tmp_path / "slow.toml"
        cat.write_text(text.replace(f":{a.port}/", f":{wa.port}/")
                       .replace(f":{b.port}/", f":{wb.port}/"))
        yield wa, wb, cat


def _client(cat: Path, **replicas: object) -> htpdata.Client:
    return htpdata.Client(catalogs={"path": [str(cat)]}, timeouts={"read": 30},
                          replicas={"protocols": ["root"], **replicas}, cache={"enabled": False})


def _reader(c: htpdata.Client) -> ReplicaReader:
    r = c.reader(NAME, cache=False)
    assert isinstance(r, ReplicaReader)
    return r


@pytest.mark.xrootd
def test_a_replica_slowed_mid_read_is_left_at_the_same_offset(
        two_wans: tuple[WanProxy, WanProxy, Path]) -> None:
    wa, wb, cat = two_wans
    with _client(cat, slow_floor="200kB", slow_window=1, slow_ramp_up=1, hedge=False) as c:
        r = _reader(c)
        assert r.read(0, 65536) == WANT[:65536]
        assert r.replica is not None
        assert r.replica.site == "SITE_A"
        wa.throttle(20_000)                        # 20 kB/s from now on: alive, but slow
        t0 = time.monotonic()
        assert r.read(65536, len(WANT)) == WANT[65536:]   # 300 kB: 15 s at that rate
        waited = time.monotonic() - t0
        assert r.replica is not None
        assert r.replica.site == "SITE_B"
        assert isinstance(r.attempts[0].error, StorageTooSlowError)
        assert waited < 12
        down = wb.bytes_down
        assert down >= len(WANT) - 65536           # the rest came from B


@pytest.mark.xrootd
def test_a_slow_replica_with_nothing_behind_it_is_waited_for(
        two_wans: tuple[WanProxy, WanProxy, Path], tmp_path: Path) -> None:
    wa, _, cat = two_wans
    only_a = tmp_path / "only-a.toml"
    text = cat.read_text()
    only_a.write_text(text[:text.index("[sites.SITE_B]")] + text[text.index("[datasets."):])
    with _client(only_a, slow_floor="1MB", slow_window=0.2, slow_ramp_up=0) as c:
        r = _reader(c)
        wa.throttle(200_000)
        assert r.read(0, len(WANT)) == WANT        # ~2 s: slower than the floor, no other
        assert r.attempts == []


@pytest.mark.xrootd
def test_a_far_replica_loses_the_first_bytes_to_one_hedge(
        two_wans: tuple[WanProxy, WanProxy, Path]) -> None:
    wa, _, cat = two_wans
    wa.set_delay(500)                              # SITE_A is far: a 1 s round trip
    with _client(cat, hedge_max=0.2, slow_floor=0) as c:
        r = _reader(c)
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(r.read(0, 4096)))
                   for _ in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [WANT[:4096]] * 4
        assert time.monotonic() - t0 < 2.5        # not the 3 round trips (3 s) of SITE_A
        assert r.replica is not None
        assert r.replica.site == "SITE_B"
        latency = c.transports.latency
        assert (latency.hedges, latency.hedges_won) == (1, 1)   # one per file
        assert r.read(4096, 8192) == WANT[4096:8192]
        assert latency.hedges == 1                             # first bytes only
        assert _reader(c).read(0, 10) == WANT[:10]             # the next file: its own hedge
        assert latency.hedges == 2
