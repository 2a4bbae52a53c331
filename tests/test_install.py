"""The quickstart's install from a git URL works: pip builds htpdata from the repository and the
installed package (not the source tree) runs, with its bundled catalogs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_pip_install_from_a_git_url(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"  # what is committed, as a remote would serve it
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), f"htpdata @ git+file://{clone}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = ("import htpdata, sys; print(htpdata.__file__); "
            "print(' '.join(sorted(htpdata.default_client().resolver.catalogs.namespaces)))")
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy comes first
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where, spaces = out.stdout.splitlines()
    assert where.startswith(str(target))
    assert {"cms", "demo"} <= set(spaces.split())  # the catalogs ship inside the wheel
    assert (target / "htpdata" / "_bundled_catalogs" / "demo.toml").is_file()
    assert (target / "bin" / "htpdata").is_file()
