"""The command line, run as a real process: output, one-line errors and distinct exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htpdata.testing import XRootDServer, free_port

from .conftest import TEST_FILES, TESTDATA


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("htpdata: error: ")
    assert "Traceback" not in err
    return err


def test_console_script_version_and_help() -> None:
    # The console script of the environment running the tests (the venv's own), never
    # whatever `htpdata` happens to be on PATH: CI's PATH does not include .venv/bin.
    exe = str(Path(sys.executable).parent / "htpdata")
    assert os.access(exe, os.X_OK), f"pip install -e . installs the htpdata command at {exe}"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("htpdata ")
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("resolve", "ls", "cat", "config", "demo"):
        assert cmd in helptext
    assert run().returncode == 2


@pytest.mark.parametrize(("args", "code", "words"), [
    (["resolve", "cms:/store/../etc/passwd"], 2, "'..' path segments are not allowed"),
    (["resolve", "atlas:/x"], 2, "unknown namespace 'atlas'"),
    (["resolve", ""], 2, "the name is empty"),
    (["resolve", "cms:/a\x01b"], 2, "control characters"),
    (["ls", "gsiftp://h/x"], 2, "unsupported URL scheme 'gsiftp'"),
    (["cat", "demo:/Demo/DiLepton/SIM"], 2, "this is a dataset"),
])
def test_bad_names(args: list[str], code: int, words: str) -> None:
    proc = run(*args)
    assert proc.returncode == code
    assert words in one_line_error(proc)


def test_malformed_catalog_exit_7_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [{ scheme = "ftp", '
                   'namespace = "x", prefix = "ftp://h/" }]\n')
    proc = run("resolve", "x:/a", env={"HTPDATA_CATALOGS_PATH": str(bad)})
    assert proc.returncode == 7
    assert f"{bad}:4" in one_line_error(proc)


def test_bad_config_exit_7(tmp_path: Path) -> None:
    proc = run("config", env={"HTPDATA_TIMEOUTS_READ": "forever"})
    assert proc.returncode == 7
    assert "HTPDATA_TIMEOUTS_READ" in one_line_error(proc)


def test_unreachable_server_exit_6(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cat = tmp_path / "c.toml"
    cat.write_text(f'format = 1\n[namespaces.x]\n[sites.DOWN]\nprotocols = [{{ scheme = "root", '
                   f'namespace = "x", prefix = "root://localhost:{port}/" }}]\n')
    proc = run("cat", "x:/store/f.root", env={"HTPDATA_CATALOGS_PATH": str(cat),
                                              "HTPDATA_TIMEOUTS_CONNECT": "1"})
    assert proc.returncode == 6
    err = one_line_error(proc)
    assert "all 1 replica(s) failed" in err
    assert f"localhost:{port}" in err


def test_unconfigured_shared_tier_is_one_line(tmp_path: Path) -> None:
    proc = run("stage", "demo:/Demo/DiLepton/SIM", "--tier", "shared",
               env={"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "c")})
    assert proc.returncode == 7
    assert "set cache.shared_dir" in one_line_error(proc)


def test_debug_shows_traceback() -> None:
    proc = run("--debug", "resolve", "atlas:/x")
    assert proc.returncode != 0
    assert b"Traceback" in proc.stderr


def test_config_prints_sources(tmp_path: Path) -> None:
    proc = run("config", "--json", env={"HTPDATA_TIMEOUTS_READ": "12",
                                        "BEARER_TOKEN": "secret-token-1234567"})
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["settings"]["timeouts.read"] == {"value": 12.0,
                                                 "source": "env HTPDATA_TIMEOUTS_READ"}
    assert data["credentials"]["token"] == "$BEARER_TOKEN"
    assert b"secret-token" not in proc.stdout + proc.stderr
    assert any(c.endswith("cms.toml") for c in data["catalogs"])


@pytest.mark.xrootd
def test_resolve_ls_cat_against_real_origin(catalog_dir: Path, origin: XRootDServer,
                                            tmp_path: Path) -> None:
    name = f"test:/store/test/{TEST_FILES[0]}"
    proc = run("resolve", name, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["replicas"][0]["url"] == f"root://localhost:{origin.port}//store/test/{TEST_FILES[0]}"
    assert data["replicas"][0]["site"] == "SITE_A"
    plain = run("resolve", name).stdout.decode()
    assert f"localhost:{origin.port}" in plain

    listing = json.loads(run("ls", "test:/Test/All", "--json").stdout)
    assert [e["name"] for e in listing] == [f"test:/store/test/{n}" for n in TEST_FILES]
    assert f"test:/store/test/{TEST_FILES[-1]}" in run("ls", "test:/store/test").stdout.decode()

    out = run("cat", name)
    assert out.returncode == 0
    assert out.stdout == (TESTDATA / TEST_FILES[0]).read_bytes()
    part = run("cat", name, "--start", "10", "--end", "30")
    assert part.stdout == (TESTDATA / TEST_FILES[0]).read_bytes()[10:30]

    missing = run("cat", "test:/store/test/missing.root")
    assert missing.returncode == 3
    assert "missing.root" in one_line_error(missing)
