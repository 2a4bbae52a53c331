"""Strict about names: unknown names are errors with near misses, in every command that takes
names, against a real origin; filesets use the tree the files have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import htpdata
from htpdata.errors import NameNotFoundError, UnknownNamespaceError, UsageError
from htpdata.filesets import choose_tree
from htpdata.known import lookup, suggest
from htpdata.testing import XRootDServer

from .conftest import TEST_FILES, TESTDATA, catalog_text


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_suggest_is_pure_and_helpful() -> None:
    datasets = ["/Demo/DiLepton/SIM", "/Demo/TTJets/NANOAODSIM", "/Demo/TTJets/NANOAODSIM-RNTuple"]
    assert suggest("/Demo/DiLepton/SIMx", datasets)[0] == "/Demo/DiLepton/SIM"
    assert suggest("/demo/dilepton/sim", datasets) == ["/Demo/DiLepton/SIM"]  # case
    assert suggest("/Demo/Nope", datasets) == sorted(datasets)  # same folder
    assert suggest("/Other/Thing", datasets) == []
    assert suggest("DiLepton", datasets) == ["/Demo/DiLepton/SIM"]  # a part of it


def test_choose_tree() -> None:
    assert choose_tree(["events"], None, "f") == "events"
    assert choose_tree(["Events", "Runs"], "Runs", "f") == "Runs"
    with pytest.raises(UsageError, match=r"cannot tell which tree.*Events, Runs"):
        choose_tree(["Events", "Runs"], None, "f")
    with pytest.raises(UsageError, match="no tree 'Events'; did you mean events"):
        choose_tree(["events"], "Events", "f")


def test_missing_colon_and_unknown_namespace(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    proc = run("ls", "demo")
    assert proc.returncode == 3
    assert "did you mean demo:?" in proc.stderr.decode()
    (tmp_path / "demo").mkdir()  # a real folder of that name is listed, not second-guessed
    assert run("ls", "demo").returncode == 0
    typo = run("ls", "dmeo:")
    assert typo.returncode == 2
    assert "did you mean 'demo'?" in typo.stderr.decode()
    with pytest.raises(UnknownNamespaceError, match="did you mean 'demo'"):
        htpdata.ls("dmeo:")


@pytest.mark.xrootd
def test_unknown_names_are_errors_everywhere(catalog_dir: Path, tmp_path: Path) -> None:
    env = {"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    ds_typo = "test:/Test/Al"
    file_typo = f"test:/store/test/{TEST_FILES[0][:-6]}x.root"
    for args in (["resolve", ds_typo], ["ls", ds_typo], ["fileset", ds_typo],
                 ["pin", file_typo], ["unpin", file_typo], ["evict", ds_typo],
                 ["cache", "info", file_typo], ["stage", ds_typo], ["cp", file_typo, "x/"],
                 ["convert", ds_typo]):
        proc = run(*args, env=env)
        err = proc.stderr.decode().strip()
        assert proc.returncode == 3, (args, err)
        assert len(err.splitlines()) == 1, err
        assert "did you mean test:" in err, (args, err)
    assert not (tmp_path / "x").exists()
    with htpdata.Client(cache={"local_dir": str(tmp_path / "c")}) as c:
        with pytest.raises(NameNotFoundError, match="did you mean test:/Test/All"):
            htpdata.fileset("test:/Test/Al", client=c)
        known = lookup(c, f"test:/store/test/{TEST_FILES[0]}")
        assert known.kind == "file"
        assert lookup(c, "test:/Test/All").kind == "collection"
        assert lookup(c, "test:/Test").kind == "prefix"
        assert lookup(c, "test:/store/test").kind == "folder"  # storage says so


@pytest.mark.xrootd
def test_uncatalogued_file_that_exists_is_known(catalog_dir: Path, origin: XRootDServer,
                                                tmp_path: Path) -> None:
    """A name no catalog lists but storage has (a CMS LFN, a URL) is fine: one stat says so;
    pin finds its size from storage."""
    url = f"{origin.root_url}store/test/{TEST_FILES[0]}".replace(":" + str(origin.port) + "/",
                                                                 f":{origin.port}//")
    env = {"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    assert run("resolve", url).returncode == 0
    pinned = run("pin", url, "--json", env=env)
    assert pinned.returncode == 0, pinned.stderr
    size = (TESTDATA / TEST_FILES[0]).stat().st_size
    assert json.loads(pinned.stdout)["files"][0]["size"] == size
    gone = url.replace(TEST_FILES[0], "gone.root")
    assert run("pin", gone, env=env).returncode == 3


@pytest.mark.xrootd
def test_fileset_uses_the_files_tree(tmp_path: Path, origin: XRootDServer) -> None:
    """uproot-HZZ.root has `events`, the NanoAOD file `Events`: each dataset gets its own."""
    cat = tmp_path / "t.toml"
    text = catalog_text([("SITE_A", origin, 1)])
    hzz = next(n for n in TEST_FILES if "HZZ" in n)
    nano = next(n for n in TEST_FILES if n.startswith("nanoAOD"))
    text += (f'\n[datasets."/Test/HZZ"]\nnamespace = "test"\nfiles = [{{ name = '
             f'"/store/test/{hzz}", size = {(TESTDATA / hzz).stat().st_size} }}]\n'
             f'\n[datasets."/Test/Nano"]\nnamespace = "test"\nfiles = [{{ name = '
             f'"/store/test/{nano}", size = {(TESTDATA / nano).stat().st_size} }}]\n')
    cat.write_text(text)
    env = {"HTPDATA_CATALOGS_PATH": str(cat), "HTPDATA_AUTH_CA_FILE": str(origin.cert),
           "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    out = run("fileset", "test:/Test/HZZ", "test:/Test/Nano", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["test:/Test/HZZ"]["files"].values()) == {"events"}
    assert set(data["test:/Test/Nano"]["files"].values()) == {"Events"}
    wrong = run("fileset", "test:/Test/HZZ", "--tree", "Events", env=env)
    assert wrong.returncode == 2
    assert "did you mean events?" in wrong.stderr.decode()
    written = tmp_path / "fs.json"
    summary = run("fileset", "test:/Test/Nano", "-o", str(written), "--json", env=env)
    assert json.loads(summary.stdout)["trees"] == ["Events"]
    assert json.loads(written.read_text())["test:/Test/Nano"]["metadata"]["tree"] == "Events"


@pytest.mark.xrootd
def test_stage_fails_a_missing_file_once_in_one_line(tmp_path: Path, origin: XRootDServer) -> None:
    """One file of a dataset is not on storage: it fails at once (not found is not retried),
    named once, and the others are staged."""
    text = catalog_text([("SITE_A", origin, 1)])
    text = text.replace("files = [\n", 'files = [\n  { name = "/store/test/not-there.root", '
                        'size = 1000, adler32 = "00000001" },\n', 1)
    cat = tmp_path / "t.toml"
    cat.write_text(text)
    env = {"HTPDATA_CATALOGS_PATH": str(cat), "HTPDATA_AUTH_CA_FILE": str(origin.cert),
           "HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    proc = run("stage", "test:/Test/All", "--json", env=env)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["staged"] == len(TEST_FILES)
    (failed,) = [f for f in summary["files"] if f["status"] == "failed"]
    assert failed["attempts"] == 1
    assert failed["error"].startswith("not found [")
    plain = run("stage", "test:/Test/All", env=env)
    lines = [x for x in plain.stderr.decode().splitlines() if "not-there" in x]
    assert len(lines) == 1, plain.stderr
    assert lines[0].count("test:/store/test/not-there.root") == 1  # then each replica tried
