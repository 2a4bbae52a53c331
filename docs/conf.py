"""Sphinx configuration for the htpdata user guide (MyST Markdown, builds offline)."""

from __future__ import annotations

import re
from pathlib import Path

# Read the version without importing htpdata, so the docs build needs only Sphinx and MyST.
_version_file = Path(__file__).resolve().parent.parent / "src" / "htpdata" / "_version.py"
_match = re.search(r'__version__\s*=\s*"([^"]+)"', _version_file.read_text(encoding="utf-8"))

project = "htpdata"
author = "htpdata developers"
copyright = "htpdata developers"
release = _match.group(1) if _match else "unknown"
version = release

extensions = ["myst_parser"]
myst_enable_extensions = ["colon_fence", "deflist"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

html_theme = "alabaster"
html_title = f"htpdata {release}"
html_static_path: list[str] = []

# Let pages link to sections as page.md#heading.
myst_heading_anchors = 3
