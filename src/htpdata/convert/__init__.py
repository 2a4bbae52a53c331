"""Conversion of ROOT to Parquet or RNTuple, kept in the cache as derived entries.

A derived entry is named by its source's content identity (name, size, adler32), the columns,
the output format and the converter version; it lives in a cache tier like any entry (the
whole output file kept as a plain file, in the converting user's own area), so it is
accounted, quota-limited and evictable, and a changed source simply names another entry. A
blob beside it records the provenance (:func:`provenance`).

- :mod:`.columns`: column selection with wildcards and near-miss hints (pure);
- :mod:`.writer`: ROOT in, Parquet or RNTuple out, in bounded-memory steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..adler32 import adler32_file
from ..cache.identity import Identity
from ..cache.tier import DiskTier
from ..cache.whole import adopt, scratch, whole_file
from ..client import Client
from ..names import Name, parse_name
from .columns import ColumnNotFoundError, ConversionError, parse_patterns
from .writer import CONVERTER_VERSION, choose, open_tree, write_parquet, write_rntuple

__all__ = ["ColumnNotFoundError", "ConversionError", "arrays", "convert_many", "convert_one",
           "converted", "find_derived", "provenance"]

log = logging.getLogger("htpdata.convert")
FORMATS = ("parquet", "rntuple")
_verified: dict[str, float] = {}
_lock = threading.Lock()


def _derived_name(source: Identity, columns: Sequence[str] | None, fmt: str,
                  tree: str | None) -> str:
    spec = "\0".join([source.key, fmt, tree or "", CONVERTER_VERSION,
                      ",".join(sorted(columns)) if columns else "*"])
    return f"derived:{fmt}:{hashlib.sha256(spec.encode()).hexdigest()[:32]}"


def _lookup(tier: DiskTier, derived: str) -> tuple[Path, dict[str, Any]] | None:
    found = whole_file(tier, derived)
    if found is None:
        return None
    path, ident, meta = found
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    with _lock:
        if _verified.get(str(path)) == mtime:
            return path, meta
    if adler32_file(path) != ident.adler32:  # checked once per process, like every cache read
        log.warning("derived file %s is corrupt; converting again", path)
        tier.forget_name(derived)
        return None
    with _lock:
        _verified[str(path)] = mtime
    return path, meta


def converted(name: str | Name, format: str = "parquet",
              columns: str | Sequence[str] | None = None, *, client: Client | None = None,
              tree: str | None = None, tier: str | None = None) -> Path:
    """The path of ``name`` converted to ``format`` (``parquet`` or ``rntuple``) with
    ``columns`` (wildcards allowed); converts on first use, then serves the cached copy.

    ``name`` may also be a derived name (``derived:parquet:...``, what ``htpdata convert``
    prints), to find a copy someone converted: no source, columns or format needed."""
    return convert_one(name, format, columns, client=client, tree=tree, tier=tier)[0]


def find_derived(derived: str, *, client: Client | None = None,
                 tier: str | None = None) -> Path:
    """The file of a derived name (``derived:FORMAT:HASH``) in the tiers, or ConversionError
    when none holds it (evicted: convert its source again)."""
    from ..default import default_client

    client = client or default_client()
    parts = derived.split(":")
    if len(parts) != 3 or parts[1] not in FORMATS or not parts[2].isalnum():
        raise ConversionError(f"{derived!r} is not a derived name (derived:FORMAT:HASH, as "
                              "htpdata convert prints)")
    tiers = [client.tier(tier)] if tier else client.cache.tiers
    for t in tiers:
        found = _lookup(t, derived)
        if found is not None:
            return found[0]
    raise ConversionError(f"{derived}: no tier holds it (evicted, or converted on another "
                          "cache); convert its source again")


def convert_one(name: str | Name, format: str = "parquet",
                columns: str | Sequence[str] | None = None, *, client: Client | None = None,
                tree: str | None = None, tier: str | None = None) -> tuple[Path, str]:
    """:func:`converted`, and the derived name of the copy (one users can pass on)."""
    from ..default import default_client
    from ..fs import open_name

    if isinstance(name, str) and name.startswith("derived:"):
        return find_derived(name, client=client, tier=tier), name
    if format not in FORMATS:
        raise ConversionError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    client = client or default_client()
    n = parse_name(name)
    patterns = parse_patterns(columns)
    reader = client.reader(n)
    source = Identity(str(n), reader.size(), reader.resolved.adler32)
    derived = _derived_name(source, patterns, format, tree)
    target = client.tier(tier)
    found = _lookup(target, derived)
    if found is not None:
        return found[0], derived
    tmp = scratch(target) / f".convert-{os.getpid()}-{secrets.token_hex(4)}.{format}"
    t0 = time.monotonic()
    try:
        with open_name(client, n) as f:
            obj = open_tree(f, tree, str(n))
            cols = choose(obj, patterns, str(n))
            if format == "parquet":
                entries = write_parquet(obj, cols, tmp, str(n))
            else:
                entries = write_rntuple(obj, cols, tmp, str(n), name=tree or "Events")
        ident = Identity(derived, tmp.stat().st_size, adler32_file(tmp))
        meta = _provenance(n, source, cols, patterns, format, tree, entries,
                           time.monotonic() - t0, client)
        path = adopt(target, ident, tmp, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # never leave a partial output behind
    with _lock:
        _verified[str(path)] = path.stat().st_mtime
    return path, derived


def _provenance(n: Name, source: Identity, cols: Sequence[str], patterns: Any, fmt: str,
                tree: str | None, entries: int, seconds: float, client: Client) -> dict[str, Any]:
    import awkward
    import pyarrow
    import uproot

    return {"derived_from": {"name": str(n), "size": source.size, "adler32": source.adler32},
            "format": fmt, "columns": list(cols), "patterns": patterns, "tree": tree,
            "entries": entries, "seconds": seconds, "converter": CONVERTER_VERSION,
            "versions": {"htpdata": __version__, "uproot": uproot.__version__,
                         "awkward": awkward.__version__, "pyarrow": pyarrow.__version__},
            "user": client.cache.user, "group": client.cache.group,
            "dataset": client.resolver.dataset_of(n)}


def provenance(path: str | os.PathLike[str], *, client: Client | None = None,
               tier: str | None = None) -> dict[str, Any]:
    """Where a converted copy (a path :func:`converted` returned) came from: the source's name,
    size and adler32, the columns, format, converter and library versions."""
    from ..default import default_client

    client = client or default_client()
    p = Path(path)
    target = client.tier(tier)
    name = p.name
    key = name[2:] if name.startswith("w.") else ""
    for area in target.read_areas():
        with area.using(p.parent.name) as entry:
            for head in entry.heads():
                if head.key == key and head.blob("meta") is not None:
                    found = whole_file(target, str(head.info.get("name")))
                    if found is not None and found[0].name == name:
                        return found[2]
    raise ConversionError(f"{path} is not a converted copy in the {target.name} tier")


def arrays(name: str | Name, columns: str | Sequence[str] | None = None,
           format: str = "parquet", **kwargs: Any) -> Any:
    """An awkward Array of ``columns`` read from the converted copy (converting on demand)."""
    import awkward as ak
    import uproot

    path = converted(name, format, columns, **kwargs)
    if format == "parquet":
        return ak.from_parquet(str(path))
    with uproot.open(str(path)) as f:
        return f[kwargs.get("tree") or "Events"].arrays()


def convert_many(names: Sequence[str | Name], format: str = "parquet",
                 columns: str | Sequence[str] | None = None, *, client: Client | None = None,
                 tree: str | None = None, tier: str | None = None,
                 dask: Any = None) -> list[dict[str, Any]]:
    """Convert every file of the given names (datasets expand); on a Dask cluster if given."""
    from ..default import default_client

    client = client or default_client()
    files = [f.name for n in names for f in client.files(n)]
    if dask is None:
        out = []
        for f in files:
            t0 = time.monotonic()
            try:
                path, derived = convert_one(f, format, columns, client=client, tree=tree,
                                            tier=tier)
                out.append(_row(f, path, derived, time.monotonic() - t0))
            except ConversionError as exc:
                out.append({"name": f, "error": str(exc)})
        return out
    from .._dask import connect

    dc, own = connect(dask)
    try:
        settings = client.worker_settings()  # the token as its file's path, never its value
        futures = [dc.submit(_remote_convert, settings, f, format, columns, tree, tier,
                             pure=False) for f in files]
        return [fut.result() for fut in futures]
    finally:
        if own:
            dc.close()


def _remote_convert(settings: Any, name: str, fmt: str, columns: Any, tree: str | None,
                    tier: str | None) -> dict[str, Any]:
    """Runs on a Dask worker: one htpdata client per worker process and settings."""
    from ..default import worker_client

    client = worker_client(settings)
    t0 = time.monotonic()
    try:
        path, derived = convert_one(name, fmt, columns, client=client, tree=tree, tier=tier)
    except ConversionError as exc:
        return {"name": name, "error": str(exc)}
    client.cache.sync()
    return _row(name, path, derived, time.monotonic() - t0)


def _row(name: str, path: Path, derived: str, seconds: float) -> dict[str, Any]:
    """What ``htpdata convert`` reports of one output: its input, its derived name (for
    ``htpdata.converted``), the file and its URL."""
    return {"name": name, "derived": derived, "path": str(path), "url": path.as_uri(),
            "seconds": seconds}
