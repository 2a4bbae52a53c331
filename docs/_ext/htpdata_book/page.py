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

__all__ = ["ExampleFailed", "Users", "screenshot", "setup"]


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


class Users:
    """Real Unix users for a page about several of them (the operators page): the test tenants
    of :mod:`htpdata.testing.users` (``htpcache``, the shared tier's owner; ``htpalice``,
    ``htpbob``, ``htpmallory`` in group ``htpcms``; ``htpeve`` outside it). Creating them needs
    root, as CI runs the build; ``docs/conf.py`` leaves such pages unexecuted otherwise.

    ``users.run("htpalice", "htpdata stage ...")`` runs one command as that user, with an
    exact environment (the demo site's settings and ``env``, nothing else of the page's), prints
    what it wrote to standard output and standard error, and fails the cell when it exits
    non-zero unless ``check=False`` (then the exit code is printed too).
    """

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        from htpdata.testing.users import Tenants

        self.tenants = Tenants.start(folder / "tenants").fresh(folder / "homes")
        keep = ("HTPDATA_DEMO_ROOT_PORT", "HTPDATA_DEMO_HTTPS_PORT", "HTPDATA_AUTH_CA_FILE",
                "PYTHONPATH")  # PYTHONPATH: a build of another checkout than the venv's
        self.env = {k: os.environ[k] for k in keep if k in os.environ} | (env or {})

    def uid(self, name: str) -> int:
        return self.tenants.users[name].uid

    def home(self, name: str) -> Path:
        """The user's home for this page (0700, the user's)."""
        return self.tenants.users[name].home

    def _run(self, name: str, command: str, env: dict[str, str] | None) -> Any:
        import shlex

        args = shlex.split(command)  # one command, no shell: no pipes or redirections
        user, run_env = self.tenants.users[name], {**self.env, **(env or {})}
        if args and args[0] == "htpdata":  # the venv's, as the users see it
            return self.tenants.htpdata(user, *args[1:], env=run_env)
        return self.tenants.run(user, args, env=run_env)

    def output(self, name: str, command: str, env: dict[str, str] | None = None) -> str:
        """What ``command`` run as ``name`` wrote to standard output (it must succeed)."""
        res = self._run(name, command, env)
        if res.returncode:
            raise ExampleFailed(f"`{command}` as {name} exited with {res.returncode}: "
                                f"{res.err[-2000:]}")
        return str(res.out)

    def run(self, name: str, command: str, *, check: bool = True,
            env: dict[str, str] | None = None) -> None:
        res = self._run(name, command, env)
        text = (res.out + res.err).rstrip("\n")
        if text:
            print(text)
        if res.returncode and check:
            raise ExampleFailed(f"`{command}` as {name} exited with {res.returncode}")
        if not check:
            print(f"exit code {res.returncode}")
