"""The demo site a book build reads: started before the first page runs, stopped by PID after.

One XRootD origin (``htpdata.testing.XRootDServer``, Debian ``xrootd-server``) on free
loopback ports, serving the bundled samples at the paths the bundled ``demo`` catalog gives
them (``htpdata.demo.lay_out_demo_site``), exactly what ``htpdata demo --keep-running`` serves.
:func:`environment` is what every page's kernel inherits: the two ports the ``demo`` catalog
takes from the environment, the CA of the site's HTTPS certificate, an empty configuration
folder (nothing of the builder's own set-up leaks into the pages) and a work folder under which
each page keeps its own cache and scratch files (see :mod:`htpdata_book.page`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from htpdata.client import Client
from htpdata.demo import lay_out_demo_site
from htpdata.testing import XRootDServer

__all__ = ["BookSite"]

# Variables of the builder's environment that would change what a page shows.
_DROP_PREFIXES = ("HTPDATA_", "XRD_", "RUCIO_", "X509_", "BEARER_TOKEN", "JUPYTER_", "IPYTHON")


class BookSite:
    """The demo origin and the work folder of one build; a context manager."""

    def __init__(self, work: Path | None = None) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix="htpdata-book-"))
        self.work.chmod(0o755)
        self.server: XRootDServer | None = None

    def start(self) -> BookSite:
        server = XRootDServer(name="book")
        self.server = server
        server.start()
        os.environ["HTPDATA_DEMO_ROOT_PORT"] = str(server.port)
        os.environ["HTPDATA_DEMO_HTTPS_PORT"] = str(server.http_port)
        with Client(auth={"ca_file": str(server.cert)}, cache={"enabled": False}) as client:
            lay_out_demo_site(client, server.data)
        server.restart()  # serve the files with their final ownership
        self._kernel_spec()
        return self

    def _kernel_spec(self) -> None:
        """A ``python3`` kernel of this interpreter (the venv's, with htpdata), quiet about its
        own transport; found first through ``JUPYTER_PATH``."""
        spec = self.work / "jupyter" / "kernels" / "python3"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=ERROR"],
            "display_name": "Python 3 (htpdata book)", "language": "python"}))

    def environment(self) -> dict[str, str]:
        """The environment pages run in: the builder's, less its htpdata, grid and Jupyter
        settings, plus the demo site's."""
        assert self.server is not None
        assert self.server.cert is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
        bin_dir = str(Path(sys.executable).parent)  # `!htpdata ...` finds the venv's command
        for sub in ("config", "xdg-cache", "ipython"):
            (self.work / sub).mkdir(exist_ok=True)
        env.update({
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "HTPDATA_DEMO_ROOT_PORT": str(self.server.port),
            "HTPDATA_DEMO_HTTPS_PORT": str(self.server.http_port),
            "HTPDATA_AUTH_CA_FILE": str(self.server.cert),
            "HTPDATA_BOOK_WORK": str(self.work),
            "XDG_CONFIG_HOME": str(self.work / "config"),
            "XDG_CACHE_HOME": str(self.work / "xdg-cache"),
            "JUPYTER_PATH": str(self.work / "jupyter"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": str(self.work / "ipython"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "MPLBACKEND": "agg",
            "COLUMNS": "94",  # what a code block of the book shows without scrolling
        })
        return env

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server and self.server.proc else None

    def stop(self) -> None:
        """Stop the origin (by its PID) and remove the work folder."""
        if self.server is not None:
            self.server.cleanup()
            self.server = None
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> BookSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
