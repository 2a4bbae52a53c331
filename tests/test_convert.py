"""Conversion to Parquet and RNTuple: array-by-array equality on every test file, through the
cache from a real origin; derived entries, staleness, errors, Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import htpdata
from htpdata.convert import ColumnNotFoundError, ConversionError, convert_many, converted
from htpdata.convert.columns import select_columns

from .conftest import TEST_FILES, TESTDATA

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")
pytest.importorskip("pyarrow")


def test_select_columns() -> None:
    names = ["nMuon", "Muon_pt", "Muon_eta", "Jet_pt", "MET_pt", "_collection0"]
    assert select_columns(names, ["Muon_*", "MET_pt"]) == ["Muon_pt", "Muon_eta", "MET_pt"]
    assert select_columns(names, None) == names[:-1]
    with pytest.raises(ColumnNotFoundError, match="did you mean Muon_pt") as info:
        select_columns(names, ["Muon_ptt"], "f.root")
    assert isinstance(info.value, KeyError)
    assert "f.root" in str(info.value)


def _tree(path: Path) -> str:
    name: str = next(k.split(";")[0] for k, v in uproot.open(path).classnames().items()
                     if v == "TTree" or "RNTuple" in v)
    return name


@pytest.mark.xrootd
@pytest.mark.parametrize("name", TEST_FILES)
@pytest.mark.parametrize("fmt", ["parquet", "rntuple"])
def test_every_file_converts_array_by_array(catalog_dir: Path, tmp_path: Path, name: str,
                                            fmt: str) -> None:
    tree = _tree(TESTDATA / name)
    with htpdata.Client(cache={"local_dir": str(tmp_path / "cache")}) as c:
        path = converted(f"test:/store/test/{name}", fmt, client=c, tree=tree)
        got = ak.from_parquet(str(path)) if fmt == "parquet" else uproot.open(path)[tree].arrays()
        expected = uproot.open(TESTDATA / name)[tree].arrays(got.fields)
        assert len(got.fields) > 3
        for field in got.fields:  # array by array, jagged ones included
            assert ak.array_equal(got[field], expected[field], equal_nan=True), field
            assert str(ak.type(got[field]).content) == str(ak.type(expected[field]).content)


@pytest.mark.xrootd
def test_derived_entry_is_cached_with_provenance(catalog_dir: Path, tmp_path: Path) -> None:
    name = "test:/store/test/nanoAOD_2015_CMS_Open_Data_ttbar.root"
    with htpdata.Client(cache={"local_dir": str(tmp_path / "cache")}) as c:
        htpdata.reset_default_client(c)
        first = htpdata.converted(name, "parquet", ["Muon_*", "Jet_pt"])
        assert htpdata.converted(name, "parquet", "Muon_*,Jet_pt") == first  # served, not redone
        other = htpdata.converted(name, "parquet", ["Jet_pt"])
        assert other != first
        from htpdata.convert import provenance

        meta = provenance(first)
        assert meta["derived_from"]["name"] == name
        assert meta["derived_from"]["adler32"]
        assert "Muon_pt" in meta["columns"]
        assert meta["format"] == "parquet"
        assert meta["versions"]["uproot"] == uproot.__version__
        arr = htpdata.arrays(name, ["Muon_pt", "Jet_pt"])
        assert set(arr.fields) == {"Muon_pt", "Jet_pt"}
        report = c.cache.evict("local", need=10**12)  # evictable like any entry
        assert report is not None
        assert report.removed >= 2
        assert not first.exists()


@pytest.mark.xrootd
def test_errors_name_the_file_and_leave_nothing(catalog_dir: Path, tmp_path: Path) -> None:
    with htpdata.Client(cache={"local_dir": str(tmp_path / "cache")}) as c:
        name = "test:/store/test/nanoAOD_2015_CMS_Open_Data_ttbar.root"
        with pytest.raises(ColumnNotFoundError, match=r"Muon_ptt.*did you mean Muon_pt"):
            converted(name, "parquet", "Muon_ptt", client=c)
        text = tmp_path / "notes.txt"
        text.write_text("not a ROOT file\n" * 100)
        with pytest.raises(ConversionError, match="not a ROOT file"):
            converted(str(text), "parquet", client=c)
        hist = tmp_path / "hist.root"
        import numpy as np

        with uproot.recreate(hist) as f:
            f["h"] = np.histogram(np.arange(10), bins=5)
        with pytest.raises(ConversionError, match="'h' is a TH1"):
            converted(str(hist), "parquet", client=c, tree="h")
        with pytest.raises(ConversionError, match="unknown format"):
            converted(name, "csv", client=c)
        leftovers = list((tmp_path / "cache" / "trusted" / "tmp").iterdir())
        assert leftovers == []


@pytest.mark.xrootd
def test_convert_cli(catalog_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "htpdata", "convert", "test:/Test/All",
                           "--to", "parquet", "--columns", "*", "--json"], capture_output=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == len(TEST_FILES)
    assert all(Path(r["path"]).exists() for r in rows)
    bad = subprocess.run([sys.executable, "-m", "htpdata", "convert",
                          f"test:/store/test/{TEST_FILES[0]}", "--columns", "Nope_*"],
                         capture_output=True, env=env, timeout=120)
    assert bad.returncode == 10
    assert bad.stderr.decode().count("\n") == 1
    assert b"no column matches 'Nope_*'" in bad.stderr


@pytest.mark.xrootd
@pytest.mark.slow
def test_convert_on_a_dask_cluster(catalog_dir: Path, tmp_path: Path,
                                   dask_client: object) -> None:
    with htpdata.Client(cache={"local_dir": "off",
                               "shared_dir": str(tmp_path / "shared")}) as c:
        rows = convert_many(["test:/Test/All"], "parquet", "*", client=c, dask=dask_client)
        assert len(rows) == len(TEST_FILES)
        assert all("path" in r and Path(r["path"]).exists() for r in rows), rows


@pytest.mark.xrootd
def test_convert_names_its_inputs_and_a_derived_name_to_pass_on(catalog_dir: Path,
                                                                tmp_path: Path) -> None:
    """Each output says which input it came from, and its derived name finds the copy for
    someone else sharing the tier (no source, columns or format needed)."""
    nano = next(n for n in TEST_FILES if n.startswith("nanoAOD"))
    shared = tmp_path / "shared"
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off", "HTPDATA_CACHE_SHARED_DIR": str(shared)}
    proc = subprocess.run([sys.executable, "-m", "htpdata", "convert", f"test:/store/test/{nano}",
                           "--columns", "Muon_pt"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    assert header.split("\t") == ["input", "derived name", "path"]
    source, derived, path = row.split("\t")
    assert source == f"test:/store/test/{nano}"
    assert derived.startswith("derived:parquet:")
    with htpdata.Client(cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
        assert str(converted(derived, client=c)) == path
        with pytest.raises(ConversionError, match="not a derived name"):
            converted("derived:nope", client=c)
        c.cache.clear()
        with pytest.raises(ConversionError, match="no tier holds it"):
            converted(derived, client=c)
