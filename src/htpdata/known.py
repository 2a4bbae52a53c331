"""Unknown names are errors: what a name stands for, or why it is not known, with near misses.

Commands that take names (``resolve``, ``ls``, ``fileset``, ``pin``, ``unpin``, ``evict``,
``cache info``, ``cp``) ask :func:`lookup` first, so a misspelt dataset is "no dataset ...; did
you mean demo:/Demo/DiLepton/SIM?" (exit 3) instead of an entry for a file that does not exist.

A name is known when it is a catalog dataset (or a prefix of some), a file a catalog lists, a
DID Rucio knows, a file the cache holds, or a file or folder that storage does not deny (one
stat of its replicas, with failover; names the catalogs know cost no storage I/O). Only a
definite "not found" from every replica makes a name unknown: storage that cannot answer (down,
no credential on this machine) is left for the command itself to meet. A bare word that
is no local path but is a namespace (``htpdata ls demo``) is taken for a missing colon.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import NameNotFoundError, StorageError
from .names import DID, LogicalName, Name, PhysicalURL, parse_name

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Known", "check_local", "did_you_mean", "lookup", "lookup_all", "suggest"]

KINDS = ("collection", "prefix", "file", "folder")


@dataclass(frozen=True)
class Known:
    """A name that exists, and what it is: a ``collection`` (dataset or container), a
    ``prefix`` of datasets, a ``file`` or a storage ``folder``."""

    name: Name
    kind: str


def suggest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The closest candidates to ``word`` (pure): near misses ignoring case first, then names
    that contain it, then (for paths) names under the longest folder they share with it, so
    ``/Demo/Nope`` still points at the ``/Demo/...`` datasets."""
    by_lower: dict[str, str] = {}
    for c in sorted(set(candidates)):
        by_lower.setdefault(c.lower(), c)
    low = word.lower()
    near = [by_lower[c] for c in difflib.get_close_matches(low, list(by_lower), n=n,
                                                              cutoff=0.6)]
    if len(near) < n and len(low) >= 3:
        near += [c for lc, c in by_lower.items() if low in lc and c not in near]
    parts = low.strip("/").split("/")
    for depth in range(len(parts) - 1, 0, -1):
        if near:
            break
        folder = "/" + "/".join(parts[:depth]) + "/"
        near = [c for lc, c in by_lower.items() if lc.startswith(folder)]
    return near[:n]


def did_you_mean(options: Sequence[str]) -> str:
    if not options:
        return ""
    return "; did you mean " + " or ".join(options) + "?"


def _namespace_words(client: Client) -> list[str]:
    return list(client.resolver.catalogs.namespaces)


def _missing_local(client: Client, text: str, n: PhysicalURL) -> NameNotFoundError:
    """A local path that does not exist; a bare namespace word is a missing colon."""
    word = text.strip().rstrip("/").split("/", 1)[0]
    spaces = _namespace_words(client)
    if word in spaces:
        rest = text.strip()[len(word):]
        hint = f"; did you mean {word}:{rest or ''}? (a namespace needs its colon)"
        return NameNotFoundError(text, f"no such file or folder here{hint}")
    near = suggest(word, spaces)
    hint = did_you_mean([f"{s}:" for s in near])
    return NameNotFoundError(text, f"no such file or folder ({n.url}){hint}")


def check_local(client: Client, text: str) -> None:
    """A local path that does not exist is an error here, before any read; a bare word that
    is a namespace is taken for a missing colon (``htpdata ls demo``)."""
    n = parse_name(text)
    if isinstance(n, PhysicalURL) and n.scheme == "file" and not os.path.lexists(n.path):
        raise _missing_local(client, text, n)


def _catalog_near(client: Client, n: LogicalName) -> list[str]:
    cats = client.resolver.catalogs
    names = [d for (ns, d) in cats.datasets if ns == n.namespace]
    names += [p for (ns, p) in cats.files if ns == n.namespace]
    return [f"{n.namespace}:{c}" for c in suggest(n.path, names)]


def _held(client: Client, n: Name) -> bool:
    try:
        return any(t["held"] for t in client.cache.info(str(n)))
    except (OSError, ValueError):
        return False


def _on_storage(client: Client, n: Name) -> str:
    """``file`` or ``folder`` after one stat (with failover); raises what storage said."""
    from .reader import ReplicaReader

    info = ReplicaReader(client.resolve(n), client.transports).stat()
    return "folder" if info.get("type") == "directory" else "file"


def lookup(client: Client, text: str | Name, *, cache_ok: bool = True) -> Known:
    """What ``text`` stands for, or :class:`~htpdata.errors.NameNotFoundError` (exit 3) with
    near misses; an unknown namespace is :class:`~htpdata.errors.UnknownNamespaceError`
    (exit 2). ``cache_ok``: a file the cache holds counts as known without asking storage."""
    n = parse_name(text)
    resolver = client.resolver
    if isinstance(text, str):
        check_local(client, text)
    if isinstance(n, LogicalName):
        resolver.dataset(n)  # raises UnknownNamespaceError (with its near misses)
    if resolver.is_collection(n):
        return Known(n, "collection")
    if isinstance(n, DID):
        resolver.metadata(n)  # Rucio says NameNotFound for a DID it does not know
        return Known(n, "file")
    if isinstance(n, LogicalName):
        cats = resolver.catalogs
        if cats.file(n.namespace, n.path) is not None:
            return Known(n, "file")
        if cats.datasets_under(n.namespace, n.path.rstrip("/") + "/"):
            return Known(n, "prefix")
    if cache_ok and _held(client, n):
        return Known(n, "file")
    try:
        return Known(n, _on_storage(client, n))
    except NameNotFoundError as exc:  # no site rule maps it, or every replica excluded
        near = _catalog_near(client, n) if isinstance(n, LogicalName) else []
        raise NameNotFoundError(str(n), f"{_reason(exc)}{did_you_mean(near)}") from None
    except StorageError as exc:
        if not isinstance(exc, FileNotFoundError):
            # Storage could not say (down, no credential here): not "unknown". What the
            # command does next meets the same error and reports it.
            return Known(n, "file")
        near = _catalog_near(client, n) if isinstance(n, LogicalName) else []
        what = ("no dataset or catalog file by this name, and no replica has such a file"
                if isinstance(n, LogicalName) else "no such file or folder")
        raise NameNotFoundError(str(n), f"{what}{did_you_mean(near)}") from None


def _reason(exc: NameNotFoundError) -> str:
    text = str(exc)
    prefix = f"{exc.name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def lookup_all(client: Client, names: Iterable[str | Name], *,
               cache_ok: bool = True) -> list[Known]:
    """:func:`lookup` of each name, up to 16 at once (each may cost a stat); the first
    unknown one, in the order given, raises."""
    todo = list(names)
    if len(todo) <= 1:
        return [lookup(client, n, cache_ok=cache_ok) for n in todo]
    with ThreadPoolExecutor(min(16, len(todo)), thread_name_prefix="htpdata-lookup") as pool:
        futures = [pool.submit(lookup, client, n, cache_ok=cache_ok) for n in todo]
        return [f.result() for f in futures]

