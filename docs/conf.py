"""Sphinx configuration of the htpdata book (Jupyter Book 1's stack: Sphinx, myst-nb and
sphinx-book-theme; why this one: docs/contributing.md).

Pages are MyST Markdown notebooks: their ``{code-cell}`` blocks run at build time in a
Python kernel, against the demo site the ``htpdata_book`` extension (``_ext/``) starts before
the first page and stops by PID after the last. A cell that raises, or a ``!command`` that
exits non-zero, fails the build (``nb_execution_raise_on_error``; see ``_ext/htpdata_book``),
and so does any warning (``-W`` in tests/test_docs.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from htpdata import __version__

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "htpdata"
author = "htpdata developers"
copyright = "htpdata developers"
release = __version__
version = release

extensions = ["myst_nb", "htpdata_book"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
root_doc = "index"
exclude_patterns = ["_build", "_data", "_ext", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- execution (myst-nb) ----------------------------------------------------------------------
# "force": every build runs every page, so a page cannot show output its code no longer gives.
# Locally, `-D nb_execution_mode=cache` keeps outputs between builds (jupyter-cache; a changed
# cell runs again); CI and the test suite always force.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 180
nb_merge_streams = True
nb_execution_allow_errors = False
# The operators page runs its commands as real Unix users it creates (htpdata.testing.users),
# which needs root, as CI and the test suite build the book; others read it unexecuted.
if os.geteuid() != 0:
    nb_execution_excludepatterns = ["operators.md"]
nb_render_text_lexer = "myst-ansi"
nb_render_markdown_format = "myst"  # tables that cells display as Markdown

# -- HTML (sphinx-book-theme) -----------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"htpdata {release}"
html_static_path = ["_static"]
html_context = {"default_mode": "light"}
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
