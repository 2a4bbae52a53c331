"""What the hidden first cell of every executed page calls: ``page.setup("NAME")``.

In the build, the demo site is already up (see :mod:`htpdata_book.site`) and its settings are
in the kernel's environment. Run by hand (a page opened in Jupyter), ``setup`` starts a demo
site of its own and stops it when the kernel exits. Either way each page gets its own cache
folders and its own scratch folder as working directory, so pages do not depend on the order
they run in, and ``!command`` cells fail the build when the command fails (IPython by itself
only records the exit code; ``system_raise_on_error`` makes it raise). A command that is meant
to fail is written ``!htpdata ...; echo "exit code $?"``: the cell shows the error and its
code, and succeeds.
"""

from __future__ import annotations

import atexit
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["ExampleFailed", "screenshot", "setup"]


class ExampleFailed(RuntimeError):
    """A shell command of a page exited with a non-zero code."""


def _standalone_site() -> None:
    from .site import BookSite

    site = BookSite().start()
    env = site.environment()
    os.environ.clear()
    os.environ.update(env)
    atexit.register(site.stop)


def setup(page: str) -> Path:
    """Prepare this kernel for the page ``page``; return its scratch folder."""
    if "HTPDATA_BOOK_WORK" not in os.environ:
        _standalone_site()
    work = Path(os.environ["HTPDATA_BOOK_WORK"]) / "pages" / page
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    os.environ["HTPDATA_CACHE_LOCAL_DIR"] = str(work / "cache" / "local")
    os.environ["HTPDATA_CACHE_SHARED_DIR"] = str(work / "cache" / "shared")
    (work / "run").mkdir(mode=0o700, exist_ok=True)  # a gateway's state file (docs/gateway.md)
    os.environ["XDG_RUNTIME_DIR"] = str(work / "run")
    os.chdir(work / "scratch")
    # A terminal that shows the last frame of a progress display, not every frame with its
    # cursor movements (ipykernel sets TERM=xterm-color when the kernel starts).
    os.environ["TERM"] = "dumb"

    import htpdata

    htpdata.reset_default_client()
    _fail_on_exit_code()
    return work / "scratch"


def _fail_on_exit_code() -> None:
    """IPython's own switch: ``!cmd`` raises ``CalledProcessError`` on a non-zero exit."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None:
        ip.system_raise_on_error = True
        ip.run_line_magic("xmode", "minimal")  # an error a page shows: its type and message


def screenshot(html: str | Path, width: int = 1000, height: int = 1200) -> Any:
    """The page ``html`` as headless Chromium shows it, for display in the cell's output;
    a console error on the page fails the cell."""
    from IPython.display import Image

    from htpdata.testing.browser import Browser

    with Browser() as browser:
        view = browser.view(Path(html), width, height)
    if view.errors:
        raise ExampleFailed(f"{html}: console errors: {view.errors}")
    return Image(data=view.png, width=width // 2 * 2)


def run(cmd: str) -> str:
    """Run a shell command for a page's own bookkeeping (not shown); fail on a non-zero exit."""
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise ExampleFailed(f"`{cmd}` exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout
