"""Real ROOT (the PyPI wheel) through the gateway: RDataFrame and TChain give the histograms
they give on local files, ROOT's multi-range requests are served (and counted), a read goes on
when its origin dies, and on Dask every worker reads through its node's one gateway."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import htpdata
from htpdata.gateway import gateway
from htpdata.gateway.server import Gateway
from htpdata.testing import XRootDServer

from .conftest import REPO, TESTDATA, Sections

pytestmark = [pytest.mark.xrootd, pytest.mark.slow]

pytest.importorskip("ROOT", reason="ROOT from PyPI (htpdata[root-cpp]) is not installed")
np = pytest.importorskip("numpy")
uproot = pytest.importorskip("uproot")

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NANO_BRANCHES = ["Muon_pt", "Muon_eta", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass",
                 "Electron_pt", "MET_pt", "MET_phi", "PV_npvsGood"]
TREES = {NANO: ("Events", NANO_BRANCHES),
         "uproot-HZZ.root": ("events", ["Muon_Px", "Jet_E", "MET_px", "NJet"]),
         "uproot-Zmumu.root": ("events", ["px1", "E2", "M", "Q1"])}
MULTI_BRANCHES = [f"b{i}" for i in range(1, 30, 3)]


def _root(spec: dict[str, Any], stdin: str | None = None, timeout: float = 240) -> Any:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "root_reader.py"),
                           json.dumps(spec)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _adler(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def _multi_basket_file(path: Path) -> None:
    """30 float branches in 10 baskets each, interleaved: reading a few branches asks for many
    scattered ranges, which ROOT's TTreeCache sends as one multi-range request."""
    rng = np.random.default_rng(16)
    with uproot.recreate(path, compression=None) as f:
        f.mktree("Events", {f"b{i}": "float32" for i in range(30)})
        for _ in range(10):
            f["Events"].extend({f"b{i}": rng.normal(i, 1, 4000).astype("float32")
                                for i in range(30)})


class Site:
    """What ``root_site`` made: the origin, the local copies, the catalog folder."""

    def __init__(self, server: XRootDServer, local: Path, catalogs: Path) -> None:
        self.server, self.local, self.catalogs = server, local, catalogs


@pytest.fixture(scope="session")
def root_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An origin with the test files, three copies of the NanoAOD file (a dataset for TChain)
    and a multi-basket file, and a catalog folder for namespace ``gw``."""
    if shutil.which("xrootd") is None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("xrootd is not installed but HTPDATA_REQUIRE_SERVERS is set")
        pytest.skip("xrootd is not installed")
    local = tmp_path_factory.mktemp("root-site")
    for name in TREES:
        shutil.copyfile(TESTDATA / name, local / name)
    for i in range(3):
        shutil.copyfile(TESTDATA / NANO, local / f"nano_{i}.root")
    _multi_basket_file(local / "multi.root")
    server = XRootDServer(name="gwroot", tls=False, writable=False)
    (server.data / "store" / "gw").mkdir(parents=True)
    for p in local.iterdir():
        shutil.copyfile(p, server.data / "store" / "gw" / p.name)
    with server:
        cats = tmp_path_factory.mktemp("root-catalogs")
        entries = {p.name: f'  {{ name = "/store/gw/{p.name}", size = {p.stat().st_size}, '
                           f'adler32 = "{_adler(p)}" }}' for p in sorted(local.iterdir())}
        nano = ",\n".join(entries[f"nano_{i}.root"] for i in range(3))
        (cats / "gw.toml").write_text(
            'format = 1\n[namespaces.gw]\ndescription = "gateway tests"\n\n'
            "[sites.T2_GW]\npreference = 1\nprotocols = [\n"
            f'  {{ scheme = "root", namespace = "gw", prefix = "{server.root_url}" }},\n]\n\n'
            f'[datasets."/GW/Nano"]\nnamespace = "gw"\nfiles = [\n{nano}\n]\n\n'
            '[datasets."/GW/All"]\nnamespace = "gw"\nfiles = [\n'
            + ",\n".join(entries.values()) + "\n]\n")
        yield Site(server, local, cats)


@pytest.fixture
def gw(root_site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway in this process over the ``gw`` catalog, with its own empty cache."""
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(root_site.catalogs))
    htpdata.reset_default_client()
    with htpdata.Client() as client, gateway(client) as g:
        yield g


def _status(gw: Gateway) -> dict[str, Any]:
    return dict(httpx.get(gw.base_url + "_gateway/status").json())


def test_rdataframe_gives_the_local_histograms(gw: Gateway, root_site: Site) -> None:
    jobs_gw, jobs_local = [], []
    for name, (tree, branches) in TREES.items():
        jobs_gw.append({"op": "rdf", "tree": tree, "branches": branches,
                        "urls": [gw.url(f"gw:/store/gw/{name}")]})
        jobs_local.append({**jobs_gw[-1], "urls": [str(root_site.local / name)]})
    local = _root({"op": "jobs", "jobs": jobs_local})["results"]
    cold = _root({"op": "jobs", "jobs": jobs_gw})["results"]
    warm = _root({"op": "jobs", "jobs": jobs_gw})["results"]  # now from the cache
    assert cold == local
    assert warm == local
    for result, (_tree, branches) in zip(local, TREES.values(), strict=True):
        assert set(result["hists"]) == set(branches)
        assert all(h["entries"] > 0 for h in result["hists"].values())
    assert _status(gw)["counters"]["failed"] == {}


def test_tchain_over_a_dataset(gw: Gateway, root_site: Site) -> None:
    client = htpdata.default_client()
    urls = [gw.url(f.name) for f in client.files("gw:/GW/Nano")]
    assert len(urls) == 3
    spec = {"op": "chain", "tree": "Events", "branches": NANO_BRANCHES[:5], "urls": urls}
    got = _root(spec)
    want = _root({**spec, "urls": [str(root_site.local / f"nano_{i}.root") for i in range(3)]})
    assert got == want
    assert got["entries"] == 600


def test_multi_range_requests_are_used(gw: Gateway, root_site: Site) -> None:
    url = gw.url("gw:/store/gw/multi.root")
    spec = {"op": "rdf", "tree": "Events", "branches": MULTI_BRANCHES, "urls": [url]}
    before = _status(gw)["counters"]
    got = _root(spec)
    after = _status(gw)["counters"]
    assert got == _root({**spec, "urls": [str(root_site.local / "multi.root")]})
    multi = after["multi_range"] - before["multi_range"]
    assert multi >= 1, after
    # Every basket of 10 branches in 10 clusters was asked for, in far fewer requests.
    assert after["ranges"] - before["ranges"] >= 100
    assert after["get"] - before["get"] < 40
    # TFile::ReadBuffers, ROOT's own multi-range call, parses the gateway's answer.
    data = (root_site.local / "multi.root").read_bytes()
    ranges = [(0, 4), (1000, 100), (len(data) - 600, 600), (200_000, 65_536), (1000, 2)]
    out = _root({"op": "buffers", "urls": [url], "ranges": ranges})
    assert not out["failed"]
    assert bytes.fromhex(out["hex"]) == b"".join(data[p:p + n] for p, n in ranges)


def test_a_read_goes_on_when_its_origin_dies(root_site: Site, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """ROOT has the file open and half read when the preferred origin is killed; the rest
    comes from the other replica, and ROOT computes what it computes on the local file."""
    caplog.set_level(logging.INFO, logger="htpdata.reader")
    multi = root_site.local / "multi.root"
    a, b = (XRootDServer(name=f"gwfo{x}", tls=False, writable=False) for x in "AB")
    for s in (a, b):
        (s.data / "store" / "fo").mkdir(parents=True)
        shutil.copyfile(multi, s.data / "store" / "fo" / "multi.root")
    with a, b:
        (tmp_path / "fo.toml").write_text(
            'format = 1\n[namespaces.fo]\ndescription = "failover"\n\n' + "".join(
                f"[sites.{site}]\npreference = {pref}\nprotocols = [\n"
                f'  {{ scheme = "root", namespace = "fo", prefix = "{s.root_url}" }},\n]\n\n'
                for site, s, pref in (("SITE_A", a, 1), ("SITE_B", b, 2))))
        settings: Sections = {
            "catalogs": {"path": [str(tmp_path / "fo.toml")]},
            "replicas": {"protocols": ["root"]}, "timeouts": {"connect": 2, "read": 5},
            # Small head and tail: the first reads do not take the whole file along.
            "cache": {"head": 4096, "tail": 4096, "merge_gap": 0,
                      "local_dir": str(tmp_path / "local")}}
        first, then = MULTI_BRANCHES[:2], MULTI_BRANCHES[2:6]
        with htpdata.Client(**settings) as client, gateway(client) as g:
            spec = {"op": "pause", "tree": "Events", "first": first, "then": then,
                    "urls": [g.url("fo:/store/fo/multi.root")]}
            proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "root_reader.py"),
                                     json.dumps(spec)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None
                while "paused" not in (line := proc.stdout.readline()):
                    assert line, proc.stderr.read() if proc.stderr else ""
                sent = dict(httpx.get(g.base_url + "_gateway/status").json())["counters"]
                a.kill()  # SITE_A dies with the file open and half read
                out, err = proc.communicate("go\n", timeout=240)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            got = json.loads(out.strip().splitlines()[-1])["hists"]
            status = dict(httpx.get(g.base_url + "_gateway/status").json())["counters"]
    want = _root({**spec, "op": "rdf", "branches": first + then, "urls": [str(multi)]})
    assert got == want["hists"]
    assert status["failed"] == {}
    assert status["bytes_sent"] > sent["bytes_sent"]  # the second half was read after the kill
    moved = [r.getMessage() for r in caplog.records if "continuing from" in r.getMessage()]
    assert moved, "the gateway's reader never failed over"
    assert f"localhost:{a.port}" in moved[0]
    assert f"localhost:{b.port}" in moved[0]


def test_dask_one_gateway_per_node_same_url_everywhere(dask_client: Any, root_site: Site,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(root_site.catalogs))
    htpdata.reset_default_client()
    info = htpdata.gateway.install(dask_client, root=True)
    url = info.url(f"gw:/store/gw/{NANO}")
    data = (root_site.local / NANO).read_bytes()

    def fetch(url: str, status_url: str) -> tuple[int, bytes, int]:
        import urllib.request

        req = urllib.request.Request(url, headers={"Range": "bytes=0-99"})
        body = urllib.request.urlopen(req, timeout=60).read()
        pid = json.loads(urllib.request.urlopen(status_url, timeout=60).read())["pid"]
        return os.getpid(), body, pid

    workers = list(dask_client.scheduler_info()["workers"])
    assert len(workers) == 2
    got = [dask_client.submit(fetch, url, info.base_url + "_gateway/status", workers=[w],
                              pure=False).result(timeout=120) for w in workers]
    assert {body for _, body, _ in got} == {data[:100]}
    assert len({wpid for wpid, _, _ in got}) == 2       # two worker processes ...
    gateway_pids = {gpid for _, _, gpid in got}
    assert len(gateway_pids) == 1                        # ... one gateway on the node
    (gpid,) = gateway_pids
    with open(f"/proc/{gpid}/cmdline", "rb") as fh:
        assert info.secret.encode() not in fh.read()

    # RDataFrame inside Dask tasks, through the same URL on each worker.
    def hist(python: str, script: str, url: str, branches: list[str]) -> Any:
        import json
        import subprocess

        spec = {"op": "rdf", "tree": "Events", "branches": branches, "urls": [url]}
        out = subprocess.run([python, script, json.dumps(spec)], capture_output=True,
                             text=True, timeout=240, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["hists"]

    args = (sys.executable, str(REPO / "tests" / "root_reader.py"))
    local = hist(*args, str(root_site.local / NANO), NANO_BRANCHES[:4])
    for w in workers:
        assert dask_client.submit(hist, *args, url, NANO_BRANCHES[:4], workers=[w],
                                  pure=False).result(240) == local
    # ROOT's distributed RDataFrame on the same cluster, over a dataset's gateway URLs.
    urls = [info.url(f"gw:/store/gw/nano_{i}.root") for i in range(3)]
    dist = _root({"op": "distributed", "scheduler": dask_client.scheduler.address,
                  "tree": "Events", "branches": NANO_BRANCHES[:4], "urls": urls})
    chain = _root({"op": "chain", "tree": "Events", "branches": NANO_BRANCHES[:4],
                   "urls": [str(root_site.local / f"nano_{i}.root") for i in range(3)]})
    assert dist["hists"] == chain["hists"]
    # When the workers go, so does the node's gateway.
    dask_client.cluster.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{gpid}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{gpid}").exists()


def test_dask_port_taken_on_a_node_is_a_clear_error(dask_client: object, gw: Gateway) -> None:
    assert gw.info is not None
    with pytest.raises(htpdata.errors.GatewayError, match="taken by another program"):
        htpdata.gateway.install(dask_client, port=gw.info.port)  # our gateway, other secret
