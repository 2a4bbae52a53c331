"""Failover against real servers: a replica killed mid-read, all replicas down, a silent server."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Unpack

import pytest

import htpdata
from htpdata.cache import CachedReader
from htpdata.errors import NoReplicaFoundError, ReplicasExhaustedError, StorageError
from htpdata.fs import HtpdataFile
from htpdata.io import FileReader
from htpdata.reader import ReplicaReader
from htpdata.testing import XRootDServer

from .conftest import TESTDATA, Sections

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
Origins = tuple[XRootDServer, XRootDServer, Path]
FAST: Sections = {"timeouts": {"connect": 2, "read": 5}, "cache": {"enabled": False}}
# Through the cache, with head and tail small enough that the first read does not take it all.
CACHED: Sections = {"cache": {"enabled": True, "head": 4096, "tail": 4096, "merge_gap": 0}}


def _client(cat: Path, **extra: Unpack[Sections]) -> htpdata.Client:
    sections: Sections = {**FAST, **extra}
    return htpdata.Client(catalogs={"path": [str(cat)]}, replicas={"protocols": ["root"]},
                          **sections)


def _uncached(reader: FileReader) -> ReplicaReader:
    """The storage reader (``FAST`` switches the cache off), whose replica and attempts the
    tests look at."""
    assert isinstance(reader, ReplicaReader)
    return reader


def test_killed_mid_read_continues_on_next_replica(two_origins: Origins) -> None:
    a, _b, cat = two_origins
    want = (TESTDATA / NANO).read_bytes()
    with _client(cat) as client:
        f = htpdata.open(f"test:/store/test/{NANO}", block_size=8192, cache_type="none",
                         client=client)
        assert isinstance(f, HtpdataFile)
        reader = _uncached(f.reader)
        first = f.read(100_000)
        assert reader.replica is not None
        assert reader.replica.site == "SITE_A"
        a.kill()
        rest = f.read()
        assert first + rest == want
        assert reader.replica is not None
        assert reader.replica.site == "SITE_B"
        assert [att.site for att in reader.attempts] == ["SITE_A"]


@pytest.mark.parametrize("extra", [{}, CACHED], ids=["uncached", "cached"])
def test_uproot_survives_a_dying_origin(two_origins: Origins, extra: Sections) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    a, _b, cat = two_origins
    expected = uproot.open(TESTDATA / NANO)["Events"].arrays(["Muon_pt", "Jet_eta", "MET_pt"])
    with _client(cat, **extra) as client, htpdata.open(
            f"test:/store/test/{NANO}", block_size=4096, cache_type="none", client=client) as f:
        tree = uproot.open(f)["Events"]  # header, streamers and keys come from SITE_A
        a.kill()
        got = tree.arrays(["Muon_pt", "Jet_eta", "MET_pt"])
        assert ak.array_equal(got, expected)


def test_all_replicas_down_one_error_listing_attempts(two_origins: Origins) -> None:
    a, b, cat = two_origins
    a.kill()
    b.kill()
    with _client(cat) as client, pytest.raises(ReplicasExhaustedError) as info:
        client.cat(f"test:/store/test/{NANO}")
    err = info.value
    assert [x.site for x in err.attempts] == ["SITE_A", "SITE_B"]
    assert "all 2 replica(s) failed" in str(err)
    assert f"localhost:{a.port}" in str(err)
    assert f"localhost:{b.port}" in str(err)
    assert isinstance(err, OSError)
    assert not isinstance(err, FileNotFoundError)


def test_missing_everywhere_is_file_not_found(two_origins: Origins) -> None:
    _, _, cat = two_origins
    with _client(cat) as client, pytest.raises(NoReplicaFoundError) as info:
        client.cat("test:/store/test/no-such-file.root")
    assert isinstance(info.value, FileNotFoundError)
    assert len(info.value.attempts) == 2


def test_replica_with_wrong_size_is_skipped(two_origins: Origins) -> None:
    a, _b, cat = two_origins
    # SITE_A holds a different (stale) file under the same name; the catalog knows the size.
    stale = a.data / "store" / "test" / NANO
    stale.write_bytes(b"x" * 1000)
    want = (TESTDATA / NANO).read_bytes()
    with _client(cat) as client:
        reader = _uncached(client.reader(f"test:/store/test/{NANO}"))
        assert reader.read(0, len(want)) == want
        assert reader.replica is not None
        assert reader.replica.site == "SITE_B"
        assert "differs" in str(reader.attempts[0].error)


class SilentServer:
    """Accepts TCP connections and never says a word: a hung storage node."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_silent_server_times_out_and_fails_over(two_origins: Origins, tmp_path: Path,
                                                scheme: str) -> None:
    _, b, _ = two_origins
    silent = SilentServer()
    try:
        cat = tmp_path / "silent.toml"
        prefix = (f"root://localhost:{silent.port}/" if scheme == "root"
                  else f"http://localhost:{silent.port}/")
        good = b.root_url if scheme == "root" else b.https_url
        cat.write_text(
            'format = 1\n[namespaces.test]\n'
            f'[sites.HUNG]\npreference = 1\nprotocols = [{{ scheme = "{scheme}", '
            f'namespace = "test", prefix = "{prefix}" }}]\n'
            f'[sites.GOOD]\npreference = 2\nprotocols = [{{ scheme = "{scheme}", '
            f'namespace = "test", prefix = "{good}" }}]\n')
        with htpdata.Client(catalogs={"path": [str(cat)]}, replicas={"protocols": [scheme]},
                            timeouts={"connect": 1, "read": 2}) as client:
            reader = client.reader(f"test:/store/test/{NANO}")
            assert reader.read(0, 4) == b"root"
            assert isinstance(reader, CachedReader)  # the cache is on here
            assert reader.replica is not None
            assert reader.replica.site == "GOOD"
            assert isinstance(reader.attempts[0].error, StorageError)
    finally:
        silent.close()
