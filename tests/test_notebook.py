"""Notebooks: HTML displays of results, and a stage's progress updated live, in a real Jupyter
kernel (ipykernel, driven through jupyter_client as JupyterLab drives it)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import htpdata
from htpdata.display import table
from htpdata.reporting.held import CacheInfo
from htpdata.staging.progress import Progress

from .conftest import TEST_FILES

pytestmark = pytest.mark.xrootd


def test_html_is_escaped() -> None:
    page = table(["a"], [["<b>x</b>"]], caption="c&d")
    assert "&lt;b&gt;" in page
    assert "c&amp;d" in page
    assert "<b>" not in page


def test_progress_outside_a_notebook_is_not_notebook() -> None:
    import io

    with Progress(1, 10, "auto", stream=io.StringIO()) as p:
        assert p.mode == "lines"


@pytest.fixture
def kernel(catalog_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """A real IPython kernel with the test catalog and CA in its environment."""
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if not k.startswith("JPY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _execute(kc: Any, code: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Run ``code``; every iopub message it caused, until the kernel is idle again."""
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    errors = [m["content"] for m in out if m["msg_type"] == "error"]
    assert not errors, errors[0].get("traceback")
    return out


def _html(msgs: list[dict[str, Any]], kinds: tuple[str, ...]) -> list[str]:
    return [m["content"]["data"]["text/html"] for m in msgs
            if m["msg_type"] in kinds and "text/html" in m["content"].get("data", {})]


def test_live_progress_and_html_displays_in_a_kernel(kernel: Any, tmp_path: Path) -> None:
    cache = {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared"),
             "max_extent": 16384}
    setup = textwrap.dedent(f"""
        import htpdata
        client = htpdata.Client(cache={cache!r})
        htpdata.reset_default_client(client)
    """)
    _execute(kernel, setup)
    staged = _execute(kernel, 'summary = htpdata.stage("test:/Test/All", client=client, '
                              'progress="auto")\nsummary')
    shown = _html(staged, ("display_data",))
    updates = _html(staged, ("update_display_data",))
    assert len(shown) == 1, "one progress display, updated in place"
    assert len(updates) > 1, f"the display was updated {len(updates)} time(s)"
    assert f"{len(TEST_FILES)}/{len(TEST_FILES)} files" in updates[-1]
    assert "<progress" in updates[-1]
    (result,) = _html(staged, ("execute_result",))
    assert "staged" in result
    assert "<table" in result

    name = f"test:/store/test/{TEST_FILES[0]}"
    for code, words in ((f"htpdata.resolve({name!r})", ["root://", "adler32", "SITE_A"]),
                        (f"htpdata.cache_info({name!r})", ["shared", "complete"]),
                        ("htpdata.report(refresh=True)", ["hit ratio", "by user"])):
        (page,) = _html(_execute(kernel, code), ("execute_result",))
        for w in words:
            assert w in page, (code, w)


def test_reprs_without_a_kernel(catalog_dir: Path) -> None:
    rf = htpdata.resolve(f"test:/store/test/{TEST_FILES[0]}")
    assert isinstance(rf, htpdata.ResolvedFile)
    assert "<table" in rf._repr_html_()
    info = CacheInfo("x:/y", [{"tier": "local", "held": False}])
    assert "cache: x:/y" in info._repr_html_()
