"""From a name to ordered replicas, and from a dataset name to its files.

The :class:`Resolver` joins the catalogs (and, later, Rucio) with the replica policy. It does
no storage I/O: only catalog lookups and the pure ordering in :mod:`htpdata.replicas`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .catalogs import CatalogSet, Dataset, FileEntry, load_catalogs
from .config import Settings
from .errors import InvalidNameError, NameNotFoundError, UnknownNamespaceError
from .names import DID, LogicalName, Name, PhysicalURL, parse_name
from .replicas import Replica, order_replicas

__all__ = ["ResolvedFile", "Resolver"]


@dataclass(frozen=True)
class ResolvedFile:
    """A file with what is known of it and its replicas in the order they will be tried."""

    name: Name
    replicas: tuple[Replica, ...]
    size: int | None = None
    adler32: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"name": str(self.name), "size": self.size, "adler32": self.adler32,
                "replicas": [r.as_dict() for r in self.replicas]}


class Resolver:
    def __init__(self, settings: Settings, catalogs: CatalogSet | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.catalogs = catalogs if catalogs is not None else load_catalogs(settings, self.environ)

    # -- names -> files -------------------------------------------------------------------
    def dataset(self, name: Name | str) -> Dataset | None:
        """The catalog dataset a logical name refers to, if it is one."""
        n = parse_name(name)
        if isinstance(n, LogicalName):
            self._check_namespace(n)
            return self.catalogs.dataset(n.namespace, n.path)
        return None

    def files(self, name: Name | str) -> list[FileEntry]:
        """The files a name stands for: a dataset's files, or the one file itself."""
        n = parse_name(name)
        ds = self.dataset(n)
        if ds is not None:
            return [FileEntry(f"{ds.namespace}:{f.name}", f.size, f.adler32) for f in ds.files]
        meta = self.metadata(n)
        return [FileEntry(str(n), meta.size, meta.adler32)]

    def metadata(self, name: Name | str) -> FileEntry:
        """Size and adler32 of a file as the catalogs know them (None where unknown)."""
        n = parse_name(name)
        if isinstance(n, LogicalName):
            entry = self.catalogs.file(n.namespace, n.path)
            if entry is not None:
                return FileEntry(str(n), entry.size, entry.adler32)
        return FileEntry(str(n))

    def dataset_of(self, name: Name | str) -> str | None:
        """The catalog dataset that lists this file (for accounting), if any."""
        n = parse_name(name)
        if isinstance(n, LogicalName):
            return self.catalogs.file_dataset.get((n.namespace, n.path))
        return None

    # -- a file -> replicas ---------------------------------------------------------------
    def resolve(self, name: Name | str) -> ResolvedFile:
        """Ordered replicas of one file. Raises if the name is unknown or has no usable replica."""
        n = parse_name(name)
        if isinstance(n, PhysicalURL):
            rep = Replica(n.url, site="direct", protocol=_protocol(n.scheme), name=str(n))
            return ResolvedFile(n, (rep,))
        if isinstance(n, DID):
            raise NameNotFoundError(str(n), "Rucio DIDs need a Rucio server; none is configured")
        self._check_namespace(n)
        if self.catalogs.dataset(n.namespace, n.path) is not None:
            raise InvalidNameError(str(n), "this is a dataset, not a file; use 'htpdata ls' or "
                                   "htpdata.files() to list its files", part=n.path)
        candidates = []
        for site in self.catalogs.sites_for(n.namespace):
            for proto in site.protocols:
                if proto.namespace != n.namespace:
                    continue
                url = proto.url_for(n.path, self.environ)
                if url is None:
                    continue
                # Rules must not map a valid name outside the site's tree: re-validate the URL.
                phys = parse_name(url)
                candidates.append(Replica(str(phys), site.name, proto.scheme, str(n),
                                          site.preference, site.role, site.tape))
        ordered = order_replicas(candidates, self.settings.replicas)
        if not ordered:
            why = ("no site rule matches this path" if not candidates else
                   f"all {len(candidates)} replica(s) excluded by the replica settings "
                   "(protocols, allow/block lists, tape)")
            raise NameNotFoundError(str(n), why)
        meta = self.metadata(n)
        return ResolvedFile(n, tuple(ordered), meta.size, meta.adler32)

    def _check_namespace(self, n: LogicalName) -> None:
        if n.namespace not in self.catalogs.namespaces:
            raise UnknownNamespaceError(str(n), n.namespace, list(self.catalogs.namespaces))


def _protocol(scheme: str) -> str:
    return {"xroot": "root", "dav": "http"}.get(scheme, scheme)
