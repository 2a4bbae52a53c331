"""Filesets for coffea and ``uproot.dask``: ``{dataset: {"files": {url: tree}, "metadata"}}``.

The URLs are ``htpdata://`` ones, so the analysis reads through the cache. The tree is the one
the files have: the first file of each dataset is opened (through the cache) and its TTrees and
RNTuples listed; one of them is taken, ``tree=`` must name one of them, and several without a
``tree=`` is an error that lists them (never a guess such as ``Events`` for files that have
``events``). Every dataset name must exist (:func:`htpdata.known.lookup`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .known import did_you_mean, lookup, suggest
from .names import Name, parse_name, to_fsspec_url

if TYPE_CHECKING:
    from .client import Client

__all__ = ["choose_tree", "make_fileset", "trees_in"]


def choose_tree(trees: Sequence[str], asked: str | None, label: str) -> str:
    """The tree to use from the ``trees`` a file has (pure)."""
    listed = ", ".join(trees) or "none"
    if asked is not None:
        if asked in trees:
            return asked
        raise UsageError(f"{label} has no tree {asked!r}{did_you_mean(suggest(asked, trees))} "
                         f"(trees there: {listed})")
    if len(trees) == 1:
        return trees[0]
    if not trees:
        raise UsageError(f"{label} has no TTree or RNTuple at its top level")
    raise UsageError(f"cannot tell which tree to use: {label} has {listed}; pass --tree "
                     "(tree= in Python)")


def trees_in(client: Client, name: str | Name) -> list[str]:
    """The TTrees and RNTuples at the top level of a ROOT file (read through the cache)."""
    try:
        import uproot
    except ImportError:
        raise UsageError("cannot tell the tree without uproot: pass --tree, or pip install "
                         "'htpdata[root]'") from None
    from .fs import open_name

    with open_name(client, name) as fh, uproot.open(fh) as f:
        kinds = {k.split(";")[0]: v for k, v in f.classnames(recursive=False).items()}
    return [k for k, v in kinds.items() if v == "TTree" or "RNTuple" in v]


def make_fileset(client: Client, datasets: Sequence[str | Name],
                 tree: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ds in datasets:
        known = lookup(client, ds)
        if known.kind in ("prefix", "folder"):
            what = "dataset prefix" if known.kind == "prefix" else "storage folder"
            raise UsageError(f"{known.name} is a {what}, not a dataset: htpdata ls "
                             f"{known.name} lists what is there")
        files = client.files(known.name)
        if not files:
            raise UsageError(f"{known.name} has no files")
        first = files[0].name
        chosen = choose_tree(trees_in(client, first), tree, first)
        out[str(parse_name(ds))] = {
            "files": {to_fsspec_url(parse_name(f.name)): chosen for f in files},
            "metadata": {"nfiles": len(files), "bytes": sum(f.size or 0 for f in files),
                         "tree": chosen},
        }
    return out
