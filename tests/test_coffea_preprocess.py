"""``htpdata.coffea.preprocess``: coffea's own preprocess, once per file content. Against a real
XRootD origin with real coffea: the result equals coffea's (DataGroupSpec and dict, sync and on
a Dask LocalCluster), coffea runs again only for files not seen, and a file rewritten under the
same name (new adler32) is never served its old result."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coffea.dataset_tools import DataGroupSpec, preprocess

import htpdata
import htpdata.coffea
from htpdata.default import reset_default_client
from htpdata.fs import HtpdataFileSystem
from htpdata.testing import XRootDServer

from .conftest import TESTDATA, _need_xrootd, adler32_of

pytestmark = [pytest.mark.xrootd,
              pytest.mark.filterwarnings("ignore::RuntimeWarning:coffea"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# Small flat trees: coffea's preprocess of a NanoAOD (its form of ~1,000 branches) takes
# seconds per file, which the suite's budget cannot pay; the logic is the same.
NANO = TESTDATA / "uproot-Zmumu.root"
HZZ = TESTDATA / "uproot-HZZ.root"
FILES = {"/store/mf/nano1.root": NANO, "/store/mf/nano2.root": NANO,
         "/store/mf/nano3.root": NANO, "/store/mf/hzz.root": HZZ}
DATASETS = {"/MF/Nano": ["/store/mf/nano1.root", "/store/mf/nano2.root",
                         "/store/mf/nano3.root"],
            "/MF/HZZ": ["/store/mf/hzz.root"],
            "/MF/Mixed": ["/store/mf/nano3.root", "/store/mf/hzz.root"]}


def write_catalog(folder: Path, server: XRootDServer) -> None:
    blocks = []
    for ds, lfns in DATASETS.items():
        entries = ",\n".join(
            f'  {{ name = "{lfn}", size = {(server.data / lfn[1:]).stat().st_size}, '
            f'adler32 = "{adler32_of(server.data / lfn[1:])}" }}' for lfn in lfns)
        blocks.append(f'[datasets."{ds}"]\nnamespace = "mf"\nfiles = [\n{entries}\n]\n')
    (folder / "mf.toml").write_text(
        'format = 1\n[namespaces.mf]\ndescription = "multi-file"\n\n'
        "[sites.SITE_A]\npreference = 1\nprotocols = [\n"
        f'  {{ scheme = "root", namespace = "mf", prefix = "{server.root_url}" }},\n]\n\n'
        + "\n".join(blocks))


@pytest.fixture
def server() -> Iterator[XRootDServer]:
    _need_xrootd()
    with XRootDServer(name="mf", tls=False) as s:
        for lfn, src in FILES.items():
            target = s.data / lfn.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        yield s


@pytest.fixture
def setup(server: XRootDServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[XRootDServer, Path]:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, server)
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(folder))
    monkeypatch.setenv("HTPDATA_CACHE_LOCAL_DIR", str(tmp_path / "local"))
    reset_default_client()
    return server, folder


class Calls:
    """coffea's preprocess, counting the files it was asked to preprocess."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from coffea import dataset_tools

        self.files: list[str] = []
        real = dataset_tools.preprocess

        def counted(fileset: Any, *args: Any, **kwargs: Any) -> Any:
            self.files += [u for ds in fileset.values() for u in ds.files]
            return real(fileset, *args, **kwargs)

        monkeypatch.setattr(dataset_tools, "preprocess", counted)
        self.real = real


def coffea_fileset() -> Any:

    return DataGroupSpec.model_validate(htpdata.fileset("mf:/MF/Nano", "mf:/MF/HZZ"))


def new_process() -> None:
    """What a new process starts with: no client, no htpdata:// filesystem (uproot's storage
    options give coffea's reads a filesystem, and a client, of their own)."""
    reset_default_client()
    HtpdataFileSystem.clear_instance_cache()


def diff(a: Any, b: Any, at: str = "") -> list[str]:
    """Where two results differ (for the assertion message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (diff(a.get(k), b.get(k), f"{at}/{k}") if k in a and k in b
                          else [f"{at}/{k}: only in {'first' if k in a else 'second'}"])]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in diff(x, y, f"{at}[{i}]")]
    return [] if a == b else [f"{at}: {str(a)[:80]} != {str(b)[:80]}"]


def plain(result: Any) -> Any:
    """A preprocess result with its forms decompressed: coffea gzips them with the time of
    the call in the gzip header, so its own two calls differ there."""
    from coffea.util import decompress_form

    out = result if isinstance(result, dict) else result.model_dump()
    return {name: {**ds, "compressed_form": decompress_form(ds["compressed_form"])
                   if ds.get("compressed_form") else None} for name, ds in out.items()}


def dumps(result: tuple[Any, Any]) -> tuple[Any, Any]:
    return plain(result[0]), plain(result[1])


OPTS: dict[str, Any] = {"step_size": 70, "uproot_options": {"timeout": 10}}


def test_equal_to_coffeas_and_coffea_runs_only_for_unseen_files(
        setup: tuple[XRootDServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    spec = coffea_fileset()
    one = DataGroupSpec.model_validate({"one": {"files": {"htpdata://mf/store/mf/nano1.root":
                                                          "events"}}})
    htpdata.coffea.preprocess(one, scheduler="sync", **OPTS)  # its form gzipped a second
    time.sleep(1.1)  # before the others' (the gzip header has the time in seconds)
    calls.files.clear()
    want = dumps(calls.real(spec, scheduler="sync", **OPTS))
    assert want[0]["mf:/MF/Nano"]["compressed_form"]  # forms were saved
    got = dumps(htpdata.coffea.preprocess(spec, scheduler="sync", **OPTS))
    assert got == want, diff(got, want)
    assert sorted(set(calls.files)) == sorted(
        f"htpdata://mf{lfn}" for lfn in FILES if "nano1" not in lfn)  # every file not seen
    calls.files.clear()
    new_process()  # only the tiers remember
    again = dumps(htpdata.coffea.preprocess(spec, scheduler="sync", **OPTS))
    assert again == want
    assert calls.files == []  # no file is preprocessed again

    only = dumps(htpdata.coffea.preprocess(
        spec.filter_datasets(filter_callable=lambda ds: "nano2.root" in str(ds.files)),
        scheduler="sync", **OPTS))
    assert only[0]["mf:/MF/Nano"] == want[0]["mf:/MF/Nano"]
    assert calls.files == []
    # Other options are another result: a new preprocess, equal to coffea's again.
    other = dumps(htpdata.coffea.preprocess(spec, scheduler="sync", step_size=100,
                                            uproot_options={"timeout": 10}))
    assert other == dumps(calls.real(spec, scheduler="sync", step_size=100,
                                     uproot_options={"timeout": 10}))
    # A dict in, dicts out, as coffea's.
    as_dict = spec.model_dump()
    from_dict = htpdata.coffea.preprocess(as_dict, scheduler="sync", **OPTS)
    assert all(isinstance(d, dict) for d in from_dict)
    assert dumps(from_dict) == want


def test_files_of_several_forms_are_coffeas_to_merge(setup: tuple[XRootDServer, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """coffea computes a dataset's form union (and refuses these two forms): htpdata hands
    such a dataset to coffea whole, after keeping each file's own result."""

    calls = Calls(monkeypatch)
    fs = htpdata.fileset("mf:/MF/Mixed")
    fs["mf:/MF/Mixed"]["files"]["htpdata://mf/store/mf/hzz.root"] = "events"
    spec = DataGroupSpec.model_validate(fs)
    with pytest.raises(ValueError, match="IndexedOptionArrays") as want:
        calls.real(spec, scheduler="sync", **OPTS)
    with pytest.raises(ValueError, match="IndexedOptionArrays") as got:
        htpdata.coffea.preprocess(spec, scheduler="sync", **OPTS)
    assert str(got.value) == str(want.value)


def test_a_changed_file_is_never_served_its_old_result(
        setup: tuple[XRootDServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    server, folder = setup
    calls = Calls(monkeypatch)

    url = "htpdata://mf/store/mf/nano1.root"
    nano = DataGroupSpec.model_validate({"one": {"files": {url: "events"}}})
    first = dumps(htpdata.coffea.preprocess(nano, scheduler="sync", **OPTS))
    assert first[0]["one"]["files"][url]["num_entries"] == 2304
    path = server.data / "store/mf/nano1.root"

    def rewrite(data: bytes) -> None:  # at the origin, then the catalog says so
        path.write_bytes(data)
        write_catalog(folder, server)
        new_process()
        calls.files.clear()

    # The same size, one byte changed (so another adler32): preprocessed again.
    data = bytearray(NANO.read_bytes())
    data[50] ^= 0xFF  # inside the header's UUID
    rewrite(bytes(data))
    again = dumps(htpdata.coffea.preprocess(nano, scheduler="sync", **OPTS))
    assert url in calls.files
    assert again == dumps(calls.real(nano, scheduler="sync", **OPTS))
    # Another content under the same name: its own result, never the old one.
    rewrite(HZZ.read_bytes())
    got = dumps(htpdata.coffea.preprocess(nano, scheduler="sync", **OPTS))
    assert url in calls.files
    assert got == dumps(calls.real(nano, scheduler="sync", **OPTS))
    assert got[0]["one"]["files"][url]["num_entries"] == 2421


def test_on_a_dask_cluster_equal_to_coffeas(setup: tuple[XRootDServer, Path],
                                            dask_client: Any) -> None:

    spec = coffea_fileset()
    nano = spec.filter_datasets(filter_callable=lambda ds: len(ds.files) == 3)
    want = dumps(preprocess(nano, scheduler=dask_client, **OPTS))
    assert dumps(htpdata.coffea.preprocess(nano, scheduler=dask_client, **OPTS)) == want
    assert dumps(htpdata.coffea.preprocess(nano, scheduler=dask_client, **OPTS)) == want


class _Cluster:
    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {f"tcp://{h}:4{i:04d}": {} for i, h in enumerate(self.hosts)}}


def test_the_metadata_is_fetched_ahead_only_where_the_workers_read_it(tmp_path: Path) -> None:
    from htpdata.coffea import _workers_see

    local = htpdata.Client(cache={"local_dir": str(tmp_path / "l")})
    shared = htpdata.Client(cache={"local_dir": str(tmp_path / "l2"),
                                   "shared_dir": str(tmp_path / "s")})
    elsewhere = _Cluster("127.0.0.1", "10.1.2.3")
    assert not _workers_see(local, elsewhere)  # they would fetch it again: nothing ahead
    assert _workers_see(shared, elsewhere)  # they read the shared tier
    assert _workers_see(local, _Cluster("127.0.0.1", "localhost"))  # a LocalCluster
    assert _workers_see(local, "sync")
    local.close()
    shared.close()
