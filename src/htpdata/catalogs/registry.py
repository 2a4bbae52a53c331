"""Find catalog files and merge them: bundled, then the user's folder, then configured paths.

Search order (later wins for same-named sites and datasets):

1. the catalogs shipped with htpdata (``catalogs/`` in the source tree), unless
   ``catalogs.bundled = false``;
2. ``*.toml`` in the user folder ``$XDG_CONFIG_HOME/htpdata/catalogs/``;
3. each file or folder in ``catalogs.path`` (``HTPDATA_CATALOGS_PATH``, ``:``-separated).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..config import Settings, user_dir
from ..errors import CatalogError
from .loader import check_references, load_catalog
from .model import CatalogSet

__all__ = ["bundled_dir", "catalog_files", "load_catalogs"]


def bundled_dir() -> Path:
    """Where the shipped catalogs are: inside the wheel, or ``catalogs/`` of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    wheel = here / "_bundled_catalogs"
    if wheel.is_dir():
        return wheel
    return here.parent.parent / "catalogs"


def catalog_files(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    found: list[Path] = []
    if settings.catalogs.bundled:
        found += sorted(bundled_dir().glob("*.toml"))
    found += sorted((user_dir(env) / "catalogs").glob("*.toml"))
    for entry in settings.catalogs.path:
        p = Path(entry).expanduser()
        if p.is_dir():
            found += sorted(p.glob("*.toml"))
        elif p.is_file():
            found.append(p)
        else:
            raise CatalogError(str(p), "no such catalog file or folder "
                               "(from catalogs.path / HTPDATA_CATALOGS_PATH)")
    return found


def load_catalogs(settings: Settings, environ: Mapping[str, str] | None = None) -> CatalogSet:
    merged = CatalogSet()
    for path in catalog_files(settings, environ):
        merged.merge(load_catalog(path))
    check_references(merged, lambda src, key, msg: CatalogError(src, msg, key=key))
    return merged
