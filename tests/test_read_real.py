"""uproot reads every real test file through htpdata, on every road, byte- and array-exact."""

from __future__ import annotations

import time
from typing import Any

import pytest

import htpdata
from htpdata.fs import HtpdataFileSystem
from htpdata.replicas import ResolvedFile
from htpdata.testing import XRootDServer
from htpdata.transports.xrootd import XRootDTransport

from .conftest import TEST_FILES, TESTDATA

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")

pytestmark = pytest.mark.xrootd


def _objects(f: Any) -> dict[str, Any]:
    """Every TTree and RNTuple at the top of an uproot file (uproot is untyped: its objects are
    ``Any``)."""
    out = {}
    for key, cls in f.classnames(recursive=False).items():
        if cls in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple"):
            out[key.split(";")[0]] = f[key]
    return out


def _assert_same_arrays(got_file: Any, name: str) -> None:
    expected = uproot.open(TESTDATA / name)
    exp_objs, got_objs = _objects(expected), _objects(got_file)
    assert exp_objs, f"{name} holds no tree"
    assert exp_objs.keys() == got_objs.keys()
    for key, exp in exp_objs.items():
        got = got_objs[key]
        assert got.num_entries == exp.num_entries
        a = exp.arrays()
        b = got.arrays()
        assert a.fields == b.fields
        assert ak.array_equal(a, b, equal_nan=True), f"{name}:{key} differs"


@pytest.mark.parametrize("name", TEST_FILES)
def test_open_logical_name_root(client: htpdata.Client, name: str) -> None:
    with htpdata.open(f"test:/store/test/{name}") as f:
        _assert_same_arrays(uproot.open(f), name)


@pytest.mark.parametrize("name", TEST_FILES)
def test_fsspec_protocol_logical(client: htpdata.Client, name: str) -> None:
    with uproot.open(f"htpdata://test/store/test/{name}") as f:
        _assert_same_arrays(f, name)


@pytest.mark.parametrize("name", TEST_FILES)
def test_fsspec_protocol_webdav(client: htpdata.Client, origin: XRootDServer,
                                name: str) -> None:
    with uproot.open(f"htpdata://{origin.http_url}store/test/{name}") as f:
        _assert_same_arrays(f, name)


@pytest.mark.parametrize("name", TEST_FILES)
def test_logical_name_over_webdav_only(catalog_dir: object, monkeypatch: pytest.MonkeyPatch,
                                       name: str) -> None:
    monkeypatch.setenv("HTPDATA_REPLICAS_PROTOCOLS", "davs")
    htpdata.reset_default_client()
    resolved = htpdata.resolve(f"test:/store/test/{name}")
    assert isinstance(resolved, ResolvedFile)
    assert resolved.replicas[0].protocol == "davs"
    with htpdata.open(f"test:/store/test/{name}") as f:
        _assert_same_arrays(uproot.open(f), name)


@pytest.mark.parametrize("name", TEST_FILES)
def test_local_path_and_file_url(name: str) -> None:
    with htpdata.open(str(TESTDATA / name)) as f:
        _assert_same_arrays(uproot.open(f), name)
    with uproot.open(f"htpdata://file://{TESTDATA / name}") as f:
        _assert_same_arrays(f, name)


def test_bytes_equal_on_every_protocol(client: htpdata.Client, origin: XRootDServer) -> None:
    for name in TEST_FILES:
        want = (TESTDATA / name).read_bytes()
        for url in (f"test:/store/test/{name}", f"{origin.root_url}/store/test/{name}",
                    f"{origin.http_url}store/test/{name}", str(TESTDATA / name)):
            assert htpdata.cat(url) == want, url
            assert htpdata.cat(url, 100, 5000) == want[100:5000]


def test_cat_ranges_is_one_vector_read(client: htpdata.Client) -> None:
    """Four ranges of one file: one XRootD vector read, not four reads (counted by the
    transport, as the requests it sent). The server's vector-read limits were asked while the
    file opened for its first (single-range) read, so the vector read waits for no query."""
    fs = HtpdataFileSystem(client=client, cache=False, skip_instance_cache=True)
    name = TEST_FILES[0]
    url = f"htpdata://test/store/test/{name}"
    want = (TESTDATA / name).read_bytes()
    assert fs.cat_file(url, 0, 4) == want[:4]  # opens the file
    transport = client.transports.for_url(client.resolve(f"test:/store/test/{name}")
                                          .replicas[0].url)
    assert isinstance(transport, XRootDTransport)
    deadline = time.monotonic() + 10
    while transport.sent["query"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert transport.sent["query"] == 1  # sent alongside the open, before any vector read
    before = dict(transport.sent)
    starts = [0, 1000, 50_000, len(want) - 10]
    ends = [10, 1500, 50_400, len(want) + 100]
    got = fs.cat_ranges([url] * 4, starts, ends)
    assert got == [want[s:e] for s, e in zip(starts, ends, strict=True)]
    sent = {k: v - before.get(k, 0) for k, v in transport.sent.items()}
    assert sent.get("vector_read") == 1, sent
    assert not sent.get("read"), sent
    assert not sent.get("open"), sent  # the handle of the first read was kept
    assert not sent.get("query"), sent


def test_a_url_without_a_port_and_its_data_server_are_one_host() -> None:
    """The limits asked as a file opens are kept under the URL's host; they are used for the
    data server the file opened on (``DataServer``: always with a port) when they are one."""
    from htpdata.transports.xrootd import _host

    assert _host("root://eos.example.org//eos/x") == _host("eos.example.org:1094")
    assert _host("root://eos.example.org:1094//x") == _host("root://eos.example.org:1094/")
    assert _host("root://h:1095//f") == "h:1095" != _host("root://h//f")
    assert _host("root://[::1]//f") == "[::1]:1094"
    assert _host("root://[::1]:2000//f") == "[::1]:2000"


def test_resolve_and_files(client: htpdata.Client) -> None:
    files = htpdata.files("test:/Test/All")
    assert [f.name for f in files] == [f"test:/store/test/{n}" for n in TEST_FILES]
    assert all(f.size and f.adler32 for f in files)
    r = htpdata.resolve(files[0].name)
    assert isinstance(r, ResolvedFile)
    assert [rep.protocol for rep in r.replicas] == ["root", "davs"]
    assert r.replicas[0].name == files[0].name
    assert r.size == files[0].size


def test_ls_dataset_and_storage_folder(client: htpdata.Client) -> None:
    names = {e["name"] for e in htpdata.ls("test:/Test/All")}
    assert names == {f"test:/store/test/{n}" for n in TEST_FILES}
    listed = {e["name"]: e for e in htpdata.ls("test:/store/test")}
    assert set(listed) == {f"test:/store/test/{n}" for n in TEST_FILES}
    assert all(e["type"] == "file" for e in listed.values())
    assert [e["name"] for e in htpdata.ls("test:")] == ["test:/Test/All"]
