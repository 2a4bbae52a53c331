"""``htpdata cp``: where files go (pure), then real copies from a real origin: verified, never
half visible, xrdcp's habits (refuse to overwrite, -f, -p, '-')."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import htpdata
from htpdata.catalogs import FileEntry
from htpdata.copy import CopyError, copy, targets
from htpdata.testing import XRootDServer

from .conftest import TEST_FILES, TESTDATA, Sections


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_targets() -> None:
    a, b = "test:/store/a/x.root", "test:/store/b/y.root"
    assert targets([a], "out.root", dest_is_dir=False) == [(a, "out.root")]
    assert targets([a, b], "d", dest_is_dir=True) == [(a, "d/x.root"), (b, "d/y.root")]
    assert targets([a], "d", True, keep_paths=True) == [(a, "d/store/a/x.root")]
    assert targets(["root://h//eos/z.root"], "d", True) == [("root://h//eos/z.root", "d/z.root")]
    with pytest.raises(CopyError, match="several files need a destination folder"):
        targets([a, b], "out.root", dest_is_dir=False)
    with pytest.raises(CopyError, match=r"both be written to d/x\.root"):
        targets([a, "test:/store/c/x.root"], "d", True)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".part")]


@pytest.mark.xrootd
def test_cp_dataset_file_and_stdout(catalog_dir: Path, tmp_path: Path) -> None:
    env = {"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    dest = tmp_path / "data"
    proc = run("cp", "test:/Test/All", f"{dest}/", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert {r["status"] for r in records} == {"copied"}
    assert all(r["verified"] and r["adler32"] == r["expected"] for r in records)
    for n in TEST_FILES:
        assert (dest / n).read_bytes() == (TESTDATA / n).read_bytes()
    assert _leftovers(dest) == []

    name = f"test:/store/test/{TEST_FILES[0]}"
    one = tmp_path / "one.root"
    assert run("cp", name, str(one), env=env).returncode == 0
    assert one.read_bytes() == (TESTDATA / TEST_FILES[0]).read_bytes()
    refused = run("cp", name, str(one), env=env)
    assert refused.returncode == 50
    one.write_bytes(b"old")
    assert run("cp", name, str(one), "-f", env=env).returncode == 0
    assert one.read_bytes() == (TESTDATA / TEST_FILES[0]).read_bytes()
    piped = run("cp", name, "-", env=env)
    assert piped.returncode == 0
    assert piped.stdout == (TESTDATA / TEST_FILES[0]).read_bytes()

    missing_dir = tmp_path / "no" / "such"
    assert run("cp", name, str(missing_dir) + "/x.root", env=env).returncode == 50
    assert run("cp", "test:/Test/All", str(missing_dir), "-p", env=env).returncode == 0
    assert sorted(p.name for p in missing_dir.iterdir()) == sorted(TEST_FILES)


@pytest.mark.xrootd
def test_interrupted_copy_leaves_nothing(catalog_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import htpdata.copy

    monkeypatch.setattr(htpdata.copy, "PIECE", 16384)
    dest = tmp_path / "d"
    dest.mkdir()
    seen = {"n": 0}

    def ctrl_c(n: int) -> None:
        seen["n"] += 1
        if seen["n"] == 3:
            raise KeyboardInterrupt

    with htpdata.Client(cache={"local_dir": str(tmp_path / "c")}) as c:
        entries = c.files("test:/Test/All")
        with pytest.raises(KeyboardInterrupt):
            copy(c, entries, str(dest), parallel=2, on_bytes=ctrl_c)
    assert list(dest.iterdir()) == [] or all(
        (dest / p.name).read_bytes() == (TESTDATA / p.name).read_bytes() for p in dest.iterdir())
    assert _leftovers(dest) == []


@pytest.mark.xrootd
def test_cp_of_a_staged_dataset_needs_no_origin(catalog_dir: Path, tmp_path: Path,
                                                origin: XRootDServer) -> None:
    """Reads go through the cache: what was staged copies with the origin down."""
    settings: Sections = {"cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared")}}
    with htpdata.Client(**settings) as c:
        assert htpdata.stage("test:/Test/All", client=c).ok
    origin.stop()
    try:
        with htpdata.Client(**settings) as c:
            results = copy(c, [FileEntry(f.name, f.size, f.adler32)
                               for f in c.files("test:/Test/All")], f"{tmp_path}/out/")
        assert all(r.status == "copied" and r.verified for r in results), results
    finally:
        origin.start()
