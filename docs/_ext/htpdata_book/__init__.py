"""Sphinx extension of the htpdata book: the demo site, and pages written from the code.

- ``builder-inited``: start the demo site (:class:`htpdata_book.site.BookSite`) and put its
  environment into this process, so every page's kernel (started by myst-nb, which inherits
  it) reads ``demo:`` names from it; ``build-finished`` stops it by PID, also when the build
  failed (and ``atexit`` once more, should Sphinx die before that event).
- ``source-read``: a fenced ``{htpdata-reference} settings`` (or ``cli``) block is replaced
  by the MyST text :mod:`htpdata_book.reference` writes from the code, before the page is
  parsed; pages with such blocks are read again on every build.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path
from typing import Any

from docutils.nodes import Node
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

__all__ = ["setup"]

_BLOCK = re.compile(r"^```\{htpdata-reference\}[ \t]+([^\n]*)\n```[ \t]*$", re.M)
_state: dict[str, Any] = {"site": None, "env": None}


def _start_site(app: Sphinx) -> None:
    if not app.config.htpdata_book_site or _state["site"] is not None:
        return
    from .site import BookSite

    site = BookSite()
    try:
        site.start()
    except Exception:
        site.stop()
        raise
    _state["site"] = site
    atexit.register(_stop_site)
    if os.environ.get("HTPDATA_BOOK_PIDFILE"):  # for the test that it is stopped
        Path(os.environ["HTPDATA_BOOK_PIDFILE"]).write_text(f"{site.pid}\n")
    _state["env"] = dict(os.environ)
    env = site.environment()
    os.environ.clear()
    os.environ.update(env)


def _stop_site(*_: object) -> None:
    site, _state["site"] = _state["site"], None
    if site is not None:
        site.stop()
    if _state["env"] is not None:
        os.environ.clear()
        os.environ.update(_state["env"])
        _state["env"] = None


def _generate(what: str) -> str:
    kind = what.strip()
    if kind == "settings":
        from .reference import settings_markdown

        return settings_markdown()
    if kind == "cli":
        from .reference import cli_markdown

        return cli_markdown()
    raise ExtensionError(f"htpdata-reference: unknown kind {kind!r} (settings or cli)")


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if "{htpdata-reference}" not in source[0]:
        return
    source[0] = _BLOCK.sub(lambda m: _generate(m.group(1)), source[0])


def _always_read(app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str],
                 removed: set[str]) -> list[str]:
    """Pages written from the code are read again on every build, changed or not."""
    return sorted(d for d in env.found_docs
                  if "{htpdata-reference}" in Path(env.doc2path(d)).read_text(encoding="utf-8"))


class _Unreplaced(SphinxDirective):
    """Reached only when the block was not written as ``source-read`` expects."""

    has_content = True
    optional_arguments = 3

    def run(self) -> list[Node]:
        raise self.error("htpdata-reference blocks must be written as a fenced block with the "
                         "kind on the first line and nothing inside")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("htpdata_book_site", True, "env")
    app.add_directive("htpdata-reference", _Unreplaced)
    app.connect("builder-inited", _start_site)
    app.connect("build-finished", _stop_site)
    app.connect("source-read", _source_read)
    app.connect("env-get-outdated", _always_read)
    app.add_css_file("book.css")
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
