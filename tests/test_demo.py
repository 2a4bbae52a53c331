"""The README's demo command runs end to end on a real local XRootD site, and a second shell
can use the site it leaves running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xrootd


def test_demo_runs() -> None:
    from .conftest import _need_xrootd

    _need_xrootd()
    # Piped, as CI and `make demo | tee` run it: no 80-column wrapping, URLs whole.
    proc = subprocess.run([sys.executable, "-m", "htpdata", "demo"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "MISMATCH" not in out
    assert out.count(" ok ") == 4  # every sample's adler32 matched the catalog
    assert re.search(r"root://localhost:\d+//store/demo/mc/TTJets/NANOAODSIM/"
                     r"nanoAOD_2015_CMS_Open_Data_ttbar\.root\n", out), out
    assert "ok 26672842   50,467 B demo:/store/demo/mc/TTJets/RNTUPLE/cmsopendata2015_ttbar_" \
           "19980_NANOAOD_RNTupleImporter_rntuple_v1-0-0-1.root\n" in out
    cold = next(line for line in out.splitlines() if line.strip().startswith("cold:"))
    warm = next(line for line in out.splitlines() if line.strip().startswith("warm:"))
    got = re.search(r"fetched from the origin ([\d,]+) bytes", cold)
    assert got is not None, cold  # what uproot read (exact ROOT extents), at most the file
    assert 0 < int(got.group(1).replace(",", "")) <= 377_623
    assert "fetched from the origin 0 bytes" in warm  # fetched and served are apart
    assert re.search(r"served from the cache [1-9][\d,]* bytes", warm)
    assert "staged 2, already cached 0, failed 0" in out
    assert "complete pinned" in out


def test_another_shell_uses_the_running_demo() -> None:
    """What `htpdata demo --keep-running` prints is all a second shell needs, HTTPS included;
    SIGTERM stops it and its origin."""
    from .conftest import _need_xrootd

    _need_xrootd()
    with subprocess.Popen([sys.executable, "-m", "htpdata", "demo", "--keep-running", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as demo:
        _use(demo)


def _use(demo: subprocess.Popen[str]) -> None:
    try:
        assert demo.stdout is not None
        text = ""
        for line in demo.stdout:  # the JSON is printed once the site is ready
            text += line
            if line == "}\n":
                break
        info = json.loads(text)
        assert info["ok"]
        env = {**os.environ, **info["env"]}
        assert set(info["env"]) >= {"HTPDATA_DEMO_ROOT_PORT", "HTPDATA_DEMO_HTTPS_PORT",
                                    "HTPDATA_AUTH_CA_FILE"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "htpdata", *args],
                                  capture_output=True, text=True, env=env, timeout=120)

        listing = run("ls", "demo:", "--json")
        assert listing.returncode == 0, listing.stderr
        assert len(json.loads(listing.stdout)) == 3
        # Over WebDAV/HTTPS only, uncached: verified against the CA file the demo printed.
        https_only = {**env, "HTPDATA_REPLICAS_PROTOCOLS": "davs",
                      "HTPDATA_CACHE_ENABLED": "false"}
        got = subprocess.run([sys.executable, "-m", "htpdata", "cat",
                              "demo:/store/demo/mc/HZZ/uproot-HZZ.root"],
                             capture_output=True, env=https_only, timeout=120)
        assert got.returncode == 0, got.stderr
        assert len(got.stdout) == 217945
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            demo.kill()
            demo.wait()
