"""The site's XCache as the first upstream tier (issue 20).

The health state machine is pure and tested on its own. Then a real XCache (XRootD's proxy
file cache, libXrdPfc) in front of a real origin: reads go through it first; killed (SIGKILL) or
frozen (SIGSTOP) in the middle of a read, the read completes from the direct replica with the
right bytes, within the proxy's own timeout; it is bypassed, then tried again later.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.config import ReplicaSettings, load_settings
from htpdata.errors import ConfigError, StorageNotFoundError, StorageTimeoutError
from htpdata.reader import ReplicaReader
from htpdata.testing import XRootDServer
from htpdata.transports.proxy import (
    ProxyHealth,
    after_failure,
    after_success,
    counts_against_proxy,
    proxied_url,
    use_proxy,
)

from .conftest import TESTDATA, _need_xrootd, catalog_text, lay_out

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
WANT = (TESTDATA / NANO).read_bytes()
SETTINGS = ReplicaSettings(proxy="root://xcache:1094//", proxy_failures=2, proxy_retry=60)


# -- pure -------------------------------------------------------------------------------------
def test_healthy_suspect_bypassed_and_back() -> None:
    h = ProxyHealth()
    assert use_proxy(h, 0)
    h = after_failure(h, 10, False, SETTINGS)
    assert (h.mode, h.failures) == ("suspect", 1)
    assert use_proxy(h, 10)
    h = after_failure(h, 11, False, SETTINGS)
    assert (h.mode, h.until) == ("bypassed", 71)
    assert not use_proxy(h, 70.9)
    assert use_proxy(h, 71)                       # tried again once its time has come
    h = after_failure(h, 71, False, SETTINGS)     # ... and it failed again: twice as long
    assert (h.mode, h.until, h.backoff) == ("bypassed", 191, 2)
    h = after_success(h, 0.5)
    assert h == ProxyHealth("healthy", 0, 0.0, 1, 0.5)


def test_a_stall_bypasses_at_once() -> None:
    h = after_failure(ProxyHealth(), 5, True, SETTINGS)
    assert (h.mode, h.until) == ("bypassed", 65)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_backoff_is_bounded_and_success_always_heals(events: list[tuple[bool, bool]]) -> None:
    h, now = ProxyHealth(), 0.0
    for ok, stalled in events:
        now += 1000.0  # past any bypass
        h = after_success(h, 0.1) if ok else after_failure(h, now, stalled, SETTINGS)
        assert 1 <= h.backoff <= 16
        assert h.until <= now + 16 * SETTINGS.proxy_retry
        if ok:
            assert (h.mode, h.failures) == ("healthy", 0)


def test_what_counts_against_the_proxy() -> None:
    assert counts_against_proxy(StorageTimeoutError("read failed"))
    assert not counts_against_proxy(StorageNotFoundError("read failed"))


def test_proxied_urls() -> None:
    reps = ["https://site/store/x.root", "root://site:1094//store/x.root"]
    assert proxied_url("root://xc:1094//", False, reps) == "root://xc:1094//store/x.root"
    assert proxied_url("root://xc:1094", True, reps) == \
        "root://xc:1094//root://site:1094//store/x.root"
    assert proxied_url("https://xc:8443/", False, reps) == "https://xc:8443/store/x.root"
    assert proxied_url("root://xc//", False, ["file:///x"]) is None


@pytest.mark.parametrize("bad", ["root://xc:1094//store", "xcache:1094", "ftp://xc"])
def test_a_bad_proxy_setting_is_one_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"replicas\.proxy"):
        load_settings({}, replicas={"proxy": bad})
    with pytest.raises(ConfigError, match=r"replicas\.proxy_mode"):
        load_settings({}, replicas={"proxy_mode": "sideways"})


# -- a real XCache ------------------------------------------------------------------------------
XCACHE_CONFIG = """\
ofs.osslib libXrdPss.so
pss.cachelib libXrdPfc.so
pss.origin localhost:{port}
pfc.ram 1g
pfc.blocksize 64k
pfc.prefetch 0"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[XRootDServer, XRootDServer, Path]]:
    """An origin, an XCache in front of it, and a catalog naming only the origin."""
    _need_xrootd()
    origin = XRootDServer(name="px-origin", tls=False, writable=False)
    lay_out(origin.data)
    with origin:
        xcache = XRootDServer(name="px-xcache", tls=False, writable=True,
                              extra_config=XCACHE_CONFIG.format(port=origin.port))
        try:
            xcache.start()
            cat = tmp_path / "px.toml"
            cat.write_text(catalog_text([("SITE_A", origin, 1)], namespace="px"))
            yield origin, xcache, cat
        finally:
            if xcache.proc is not None and xcache.proc.poll() is None:
                os.kill(xcache.proc.pid, signal.SIGCONT)
            xcache.cleanup()


def _client(xcache: XRootDServer, cat: Path, **replicas: object) -> htpdata.Client:
    return htpdata.Client(catalogs={"path": [str(cat)]}, timeouts={"read": 30},
                          replicas={"protocols": ["root"], "proxy": xcache.root_url + "/",
                                    "proxy_timeout": 2, **replicas},
                          cache={"enabled": False})


NAME = f"px:/store/test/{NANO}"


def _reader(c: htpdata.Client) -> ReplicaReader:
    r = c.reader(NAME, cache=False)
    assert isinstance(r, ReplicaReader)
    return r


@pytest.mark.xrootd
def test_reads_go_through_the_proxy_and_a_killed_one_is_left_then_retried(
        site: tuple[XRootDServer, XRootDServer, Path]) -> None:
    _, xcache, cat = site
    with _client(xcache, cat, proxy_retry=1) as c:
        proxy = c.transports.proxy
        assert proxy is not None
        r = _reader(c)
        assert r.read(0, 65536) == WANT[:65536]
        assert r.replica is not None
        assert r.replica.role == "proxy"
        xcache.kill()                                      # crashed mid-read
        assert r.read(65536, len(WANT)) == WANT[65536:]    # the rest, from the origin
        assert r.replica is not None
        assert r.replica.role == "site"
        assert _reader(c).read(0, 100) == WANT[:100]      # a second failure: bypassed
        assert proxy.health.mode == "bypassed"
        assert proxy.transitions == ["suspect", "bypassed"]
        assert _reader(c).replicas[0].role == "site"       # not even tried now
        xcache.restart()
        time.sleep(1.1)                                    # proxy_retry
        again = _reader(c)
        assert again.replicas[0].role == "proxy"
        assert again.read(1000, 2000) == WANT[1000:2000]
        assert proxy.transitions == ["suspect", "bypassed", "healthy"]


@pytest.mark.xrootd
def test_a_frozen_proxy_is_left_after_its_own_timeout(
        site: tuple[XRootDServer, XRootDServer, Path]) -> None:
    _, xcache, cat = site
    with _client(xcache, cat) as c:
        proxy = c.transports.proxy
        assert proxy is not None
        r = _reader(c)
        assert r.read(0, 65536) == WANT[:65536]
        assert xcache.proc is not None
        os.kill(xcache.proc.pid, signal.SIGSTOP)           # deadlocked, connections open
        t0 = time.monotonic()
        assert r.read(65536, len(WANT)) == WANT[65536:]
        waited = time.monotonic() - t0
        assert waited < 20        # the proxy's 2 s timeout, not the 30 s read timeout
        assert proxy.health.mode == "bypassed"             # a stall bypasses at once
        assert r.attempts[0].url.startswith(xcache.root_url)
        assert isinstance(r.attempts[0].error, StorageTimeoutError)
        assert _reader(c).read(0, 10) == WANT[:10]        # no second wait: bypassed
        os.kill(xcache.proc.pid, signal.SIGCONT)
