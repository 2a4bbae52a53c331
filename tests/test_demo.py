"""The README's demo command runs end to end on a real local XRootD site."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xrootd


def test_demo_runs() -> None:
    from .conftest import _need_xrootd

    _need_xrootd()
    proc = subprocess.run([sys.executable, "-m", "htpdata", "demo"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "MISMATCH" not in out
    assert out.count(" ok ") == 4  # every sample's adler32 matched the catalog
    assert "warm:" in out
    assert "bytes from upstream 0," in out
    assert "staged 2, already cached 0, failed 0" in out
    assert "complete pinned" in out
