"""Lifecycles: nothing starts at import, a client's threads go with it, the CLI exits normally."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import htpdata
from htpdata.testing import XRootDServer
from htpdata.transports.xrootd import XRootDTransport

from .conftest import TESTDATA, _need_xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def _threads(prefix: str, besides: frozenset[threading.Thread] = frozenset()) -> list[str]:
    """Names of the live threads named ``prefix...``, other than ``besides`` (threads an
    earlier test's clients left, which are not this test's business)."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith(prefix) and t not in besides]


def test_importing_starts_no_thread() -> None:
    code = ("import threading, htpdata, htpdata.fs, htpdata.transports.xrootd, "
            "htpdata.transports.http, htpdata.staging, htpdata.reporting; "
            "print(threading.active_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "1"


@pytest.fixture(scope="module")
def server() -> Iterator[XRootDServer]:
    _need_xrootd()
    s = XRootDServer(name="lifecycle", tls=False)
    (s.data / NANO).write_bytes((TESTDATA / NANO).read_bytes())
    with s:
        yield s


@pytest.mark.xrootd
def test_a_clients_threads_and_handles_go_with_it(server: XRootDServer) -> None:
    url = f"{server.root_url}/{NANO}"
    want = (TESTDATA / NANO).read_bytes()
    before = frozenset(threading.enumerate())
    with htpdata.Client(cache={"enabled": False}) as client:
        reader = client.reader(url)
        assert reader.read_ranges([(0, 10), (1000, 1100)]) == [want[:10], want[1000:1100]]
        assert _threads("htpdata-xrootd", before), \
            "the limits query runs on the transport's threads"
        transport = client.transports.for_url(url)
        assert isinstance(transport, XRootDTransport)
    deadline = time.monotonic() + 10
    while _threads("htpdata-xrootd", before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads("htpdata-xrootd", before) == []
    assert transport._handles.size() == 0
    with htpdata.Client(cache={"enabled": False}) as client:  # a closed client's kind works on
        assert client.cat(url, 0, 10) == want[:10]
        assert client.close() is True  # every handle closed
        assert client.cat(url, 10, 20) == want[10:20]  # and reconnects when used again


@pytest.mark.xrootd
def test_the_cli_exits_normally_and_promptly(server: XRootDServer, tmp_path: Path) -> None:
    """No os._exit: exit handlers run (the user's too), and the exit is still prompt with
    XRootD handles open at the end of the command."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('exit handlers ran\\n'))\n"
            "from htpdata.cli.main import entry\n"
            f"sys.argv = ['htpdata', 'cat', {server.root_url + '/' + NANO!r}]\n"
            "entry()\n")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "XDG_CACHE_HOME": str(tmp_path / "c"),
                              "HTPDATA_CACHE_ENABLED": "false"})
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert out.stdout == (TESTDATA / NANO).read_bytes()
    assert b"exit handlers ran" in out.stderr
    assert took < 20, f"the CLI took {took:.1f} s to read and exit"
