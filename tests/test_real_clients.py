"""Real clients over ``htpdata://``, unchanged: uproot, pandas, pyarrow, Dask and coffea.

Each test runs the library's own entry point (``uproot.iterate``, ``pandas.read_parquet``,
``coffea.processor.Runner``, ...) against a real XRootD origin through htpdata, with the
options those libraries pass, and compares with the same read of the local file. Also the
fsspec-boundary contracts those clients rely on: numpy offsets, a caller's bad argument being
its own error, a failed reader never reused, ``cat_ranges`` raising unless asked to return.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import htpdata
from htpdata.default import reset_default_client
from htpdata.errors import StorageError
from htpdata.fs import HtpdataFileSystem, settings_from_storage_options
from htpdata.testing import XRootDServer

from .conftest import TESTDATA, _need_xrootd, adler32_of

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
LFN = f"/store/clients/{NANO}"
URL = f"htpdata://clients{LFN}"
BRANCHES = ["Muon_pt", "Muon_eta", "Jet_pt", "MET_pt"]


def _catalog(server: XRootDServer, files: dict[str, Path]) -> str:
    entries = ",\n".join(f'  {{ name = "{lfn}", size = {p.stat().st_size}, '
                         f'adler32 = "{adler32_of(p)}" }}' for lfn, p in files.items())
    return ('format = 1\n[namespaces.clients]\ndescription = "real clients"\n\n'
            "[sites.SITE_A]\npreference = 1\nprotocols = [\n"
            f'  {{ scheme = "root", namespace = "clients", prefix = "{server.root_url}" }},\n]\n\n'
            f'[datasets."/Clients/Nano"]\nnamespace = "clients"\nfiles = [\n{entries}\n]\n')


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    out = tmp_path_factory.mktemp("parquet") / "nano.parquet"
    with uproot.open(TESTDATA / NANO) as f:
        ak.to_parquet(f["Events"].arrays(["MET_pt", "MET_phi", "PV_npvs"]), out)
    return out


@pytest.fixture(scope="module")
def server(parquet_file: Path) -> Iterator[XRootDServer]:
    _need_xrootd()
    with XRootDServer(name="clients", tls=False) as s:
        for lfn, src in ((LFN, TESTDATA / NANO), ("/store/clients/nano.parquet", parquet_file)):
            target = s.data / lfn.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            target.chmod(0o644)
            target.parent.chmod(0o755)
        yield s


@pytest.fixture
def catalogs(server: XRootDServer, parquet_file: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    (folder / "clients.toml").write_text(_catalog(server, {LFN: TESTDATA / NANO}))
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(folder))
    monkeypatch.setenv("HTPDATA_CACHE_LOCAL_DIR", str(tmp_path / "local"))
    reset_default_client()
    return folder


def _local_arrays(branches: list[str] = BRANCHES) -> Any:
    uproot = pytest.importorskip("uproot")
    with uproot.open(TESTDATA / NANO) as f:
        return f["Events"].arrays(branches)


# -- the fsspec boundary ----------------------------------------------------------------------
def test_uproot_iterate_cold_cache_passes_numpy_offsets(catalogs: Path) -> None:
    """uproot hands numpy integers to cat_file/cat_ranges: a cold read must just work."""
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    got = ak.concatenate(list(uproot.iterate(f"{URL}:Events", BRANCHES, step_size=50)))
    assert ak.array_equal(got, _local_arrays())


def test_numpy_offsets_work_and_bad_ones_are_the_callers_error(catalogs: Path) -> None:
    np = pytest.importorskip("numpy")
    want = (TESTDATA / NANO).read_bytes()
    fs = HtpdataFileSystem(skip_instance_cache=True)
    assert fs.cat_file(URL, np.int64(10), np.int32(110)) == want[10:110]
    got = fs.cat_ranges([URL, URL], [np.int64(0), np.int64(-10)], [np.int64(4), None])
    assert got == [want[:4], want[-10:]]
    with pytest.raises(TypeError):
        fs.cat_file(URL, 1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fs.cat_ranges([URL], ["0"], [10])
    assert fs.cat_file(URL, 0, 4) == want[:4]  # the reader was not failed by the bad call
    reader = fs._reader(URL)
    assert reader.resolved.replicas[0].site == "SITE_A"


def test_cat_ranges_raises_unless_asked_to_return_errors(catalogs: Path) -> None:
    fs = HtpdataFileSystem(skip_instance_cache=True)
    missing = "htpdata://clients/store/clients/nothere.root"
    with pytest.raises(FileNotFoundError) as info:
        fs.cat_ranges([missing, URL], [0, 0], [4, 4])
    assert isinstance(info.value, StorageError)
    got = fs.cat_ranges([missing, URL], [0, 0], [4, 4], on_error="return")
    assert isinstance(got[0], FileNotFoundError)
    assert got[1] == (TESTDATA / NANO).read_bytes()[:4]
    with pytest.raises(ValueError, match="on_error"):
        fs.cat_ranges([URL], [0], [4], on_error="omit")


def test_a_failed_reader_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """Every replica fails (the server is down); once it is back, the same filesystem reads."""
    _need_xrootd()
    with XRootDServer(name="clients-dies", tls=False) as s:
        target = s.data / LFN.lstrip("/")
        target.parent.mkdir(parents=True)
        shutil.copyfile(TESTDATA / NANO, target)
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "clients.toml").write_text(_catalog(s, {LFN: TESTDATA / NANO}))
        monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(tmp_path / "c"))
        monkeypatch.setenv("HTPDATA_CACHE_ENABLED", "false")
        monkeypatch.setenv("HTPDATA_TIMEOUTS_CONNECT", "2")
        reset_default_client()
        want = (TESTDATA / NANO).read_bytes()
        fs = HtpdataFileSystem(skip_instance_cache=True)
        assert fs.cat_file(URL, 0, 100) == want[:100]
        s.kill()
        with pytest.raises(StorageError):
            fs.cat_file(URL, 100, 200)
        with pytest.raises(StorageError):
            fs.cat_ranges([URL], [100], [200])
        s.restart()
        assert fs.cat_file(URL, 100, 200) == want[100:200]
        assert fs.cat_ranges([URL], [200], [300]) == [want[200:300]]


def test_readers_follow_the_default_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A cached filesystem instance never answers with a reader of a replaced client."""
    _need_xrootd()
    a, b = XRootDServer(name="clients-a", tls=False), XRootDServer(name="clients-b", tls=False)
    with a, b:
        for s, content in ((a, b"A" * 1000), (b, b"B" * 1000)):
            target = s.data / "store" / "clients" / "f.bin"
            target.parent.mkdir(parents=True)
            target.write_bytes(content)
        monkeypatch.setenv("HTPDATA_CACHE_ENABLED", "false")
        url = "htpdata://clients/store/clients/f.bin"
        for s, letter in ((a, b"A"), (b, b"B")):
            folder = tmp_path / letter.decode()
            folder.mkdir()
            (folder / "c.toml").write_text(
                'format = 1\n[namespaces.clients]\ndescription = "x"\n[sites.S]\n'
                f'protocols = [ {{ scheme = "root", namespace = "clients", '
                f'prefix = "{s.root_url}" }} ]\n')
            reset_default_client(htpdata.Client(catalogs={"path": [str(folder)]}))
            fs = fsspec.filesystem("htpdata")  # the same cached instance both times
            assert fs.cat_file(url, 0, 10) == letter * 10


def test_storage_options_clients_pass_are_accepted(catalogs: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    assert settings_from_storage_options({"timeout": 7}) == {"timeouts": {"read": 7.0}}
    assert settings_from_storage_options(
        {"timeout": 7, "timeouts": {"read": 3, "connect": 1}}) == {
            "timeouts": {"read": 3, "connect": 1}}
    assert settings_from_storage_options({"timeout": None, "handle": 1}) == {}
    options = {"timeout": 7, "handle": object(), "num_workers": 2, "use_threads": True,
               "block_size": 1 << 20, "cache_type": "bytes", "default_fill_cache": False,
               "listings_expiry_time": 5, "asynchronous": False, "loop": None,
               "use_listings_cache": False}
    fs = fsspec.filesystem("htpdata", skip_instance_cache=True, **options)
    assert fs.client.settings.timeouts.read == 7
    assert fs.cat_file(URL, 0, 4) == (TESTDATA / NANO).read_bytes()[:4]
    with caplog.at_level(logging.WARNING, logger="htpdata.fs"):
        fsspec.filesystem("htpdata", skip_instance_cache=True, some_new_option=1)
    assert "some_new_option" in caplog.text
    uproot = pytest.importorskip("uproot")
    with uproot.open(f"{URL}:Events", timeout=7, num_workers=2) as tree:
        assert tree.num_entries == 200


# -- the libraries ------------------------------------------------------------------------------
def test_uproot_open_and_arrays(catalogs: Path) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    with uproot.open(URL) as f:
        got = f["Events"].arrays(BRANCHES)
    assert ak.array_equal(got, _local_arrays())


def test_pandas_pyarrow_and_dask_read_parquet(catalogs: Path, parquet_file: Path) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    dd = pytest.importorskip("dask.dataframe")
    url = "htpdata://clients/store/clients/nano.parquet"
    want = pd.read_parquet(parquet_file)
    pd.testing.assert_frame_equal(pd.read_parquet(url, storage_options={"timeout": 7}), want)
    fs = fsspec.filesystem("htpdata")
    table = pq.read_table("clients/store/clients/nano.parquet", filesystem=fs)
    pd.testing.assert_frame_equal(table.to_pandas(), want)
    got = dd.read_parquet(url, storage_options={"timeout": 7}).compute(scheduler="sync")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)


def test_uproot_dask_on_a_fileset_from_the_cli(catalogs: Path, tmp_path: Path) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    pytest.importorskip("dask_awkward")
    out = tmp_path / "fileset.json"
    ran = subprocess.run([sys.executable, "-m", "htpdata", "fileset", "clients:/Clients/Nano",
                          "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    fileset = json.loads(out.read_text())
    files = fileset["clients:/Clients/Nano"]["files"]
    assert list(files) == [URL]
    arrays = uproot.dask(files, open_files=False)
    got = arrays[BRANCHES].compute(scheduler="sync")
    assert ak.array_equal(got, _local_arrays())


# The 2015 open-data NanoAOD lacks branches and cross-reference indices NanoAODSchema looks for
# (the same with the local file): coffea says so with RuntimeWarnings.
@pytest.mark.filterwarnings("ignore::RuntimeWarning:coffea")
def test_coffea_runner_and_dataset_tools(catalogs: Path) -> None:
    pytest.importorskip("coffea")
    ak = pytest.importorskip("awkward")
    from coffea import processor
    from coffea.dataset_tools import DataGroupSpec, preprocess
    from coffea.nanoevents import NanoAODSchema

    class Muons(processor.ProcessorABC):  # type: ignore[misc]  # coffea is untyped (Any)
        def process(self, events: Any) -> dict[str, float]:  # coffea's NanoEvents
            muons = events.Muon
            return {"events": len(events), "muons": float(ak.sum(ak.num(muons))),
                    "pt": float(ak.sum(muons.pt))}

        def postprocess(self, accumulator: object) -> object:
            return accumulator

    local = _local_arrays(["Muon_pt"])
    want = {"events": 200, "muons": float(ak.sum(ak.num(local.Muon_pt))),
            "pt": float(ak.sum(local.Muon_pt))}
    run = processor.Runner(executor=processor.IterativeExecutor(), schema=NanoAODSchema,
                           chunksize=70)
    got = run({"nano": {"files": {URL: "Events"}}}, Muons(), treename="Events",
              uproot_options={"timeout": 7})
    assert got["events"] == want["events"]
    assert got["muons"] == want["muons"]
    assert got["pt"] == pytest.approx(want["pt"])
    fileset = DataGroupSpec.model_validate(htpdata.fileset("clients:/Clients/Nano"))
    available, _ = preprocess(fileset, step_size=100, skip_bad_files=False,
                              uproot_options={"timeout": 7}, scheduler="sync")
    spec = available["clients:/Clients/Nano"].files[URL]
    assert spec.num_entries == 200
    assert spec.steps[0][0] == 0
    assert spec.steps[-1][1] == 200
