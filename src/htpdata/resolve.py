"""From a name to ordered replicas, and from a dataset name to its files.

The :class:`Resolver` joins the local catalogs and Rucio with the replica policy. It does no
storage I/O: catalog lookups, Rucio calls (cached), and the pure ordering in
:mod:`htpdata.replicas`.

- ``rucio:SCOPE:NAME`` goes to Rucio.
- ``cms:/store/...`` goes to Rucio first when ``rucio.cms_via_rucio`` is set (scope
  ``rucio.cms_scope``), and to the local catalogs when Rucio does not know the name or cannot be
  reached (said once).
- Other logical names go to the local catalogs; physical URLs are their own single replica.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .catalogs import CatalogSet, Dataset, FileEntry, load_catalogs
from .config import Settings, default_local_dir
from .errors import (
    InvalidNameError,
    NameNotFoundError,
    ServiceUnavailableError,
    UnknownNamespaceError,
)
from .names import DID, LogicalName, Name, PhysicalURL, parse_name
from .replicas import Replica, ReplicaPolicy, ResolvedFile

if TYPE_CHECKING:
    from .rucio.convert import CompactRow

# ResolvedFile lives beside the replicas (htpdata.replicas); it is re-exported here, where
# callers have always found it.
__all__ = ["ResolvedFile", "Resolver"]

log = logging.getLogger("htpdata.resolve")


class Resolver:
    def __init__(self, settings: Settings, catalogs: CatalogSet | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.catalogs = catalogs if catalogs is not None else load_catalogs(settings, self.environ)
        self._rucio: object | None = None
        self._fallback_said = False
        self.policy = ReplicaPolicy(settings.replicas)

    # -- Rucio ----------------------------------------------------------------------------------
    @property
    def rucio(self):  # type: ignore[no-untyped-def]  # RucioService, imported lazily
        if self._rucio is None:
            from .rucio import RucioService

            base = Path(self.settings.cache.local_dir).expanduser() if \
                self.settings.cache.local_dir not in ("", "off") else default_local_dir()
            self._rucio = RucioService(self.settings.rucio, base / "rucio-metadata",
                                       schemes=self.settings.replicas.protocols)
        return self._rucio

    def _did_for(self, n: Name) -> DID | None:
        """The DID to ask Rucio about for ``n``, if any."""
        if isinstance(n, DID):
            if not self.settings.rucio.enabled:
                raise NameNotFoundError(str(n), "Rucio is switched off (rucio.enabled = false)")
            return n
        r = self.settings.rucio
        if isinstance(n, LogicalName) and n.namespace == "cms" and r.enabled and r.cms_via_rucio:
            return DID(r.cms_scope, n.path)
        return None

    def _fallback(self, n: Name, exc: Exception) -> None:
        if not isinstance(n, LogicalName) or n.namespace not in self.catalogs.namespaces:
            raise exc
        if isinstance(exc, NameNotFoundError):  # not every LFN is in Rucio: not news
            log.debug("%s is not in Rucio; using the local catalogs", n)
            return
        if not self._fallback_said:
            self._fallback_said = True
            log.warning("Rucio could not answer for %s (%s); using the local catalogs", n, exc)

    # -- names -> files -------------------------------------------------------------------
    def dataset(self, name: Name | str) -> Dataset | None:
        """The catalog dataset a logical name refers to, if it is one."""
        n = parse_name(name)
        if isinstance(n, LogicalName):
            self._check_namespace(n)
            return self.catalogs.dataset(n.namespace, n.path)
        return None

    def is_collection(self, name: Name | str) -> bool:
        """True for catalog datasets and Rucio datasets and containers."""
        n = parse_name(name)
        if self.dataset(n) is not None:
            return True
        did = self._did_for(n)
        if did is None:
            return False
        try:
            return bool(self.rucio.did_type(did.scope, did.name) != "FILE")
        except (NameNotFoundError, ServiceUnavailableError) as exc:
            self._fallback(n, exc)  # a cms name Rucio lacks (or cannot answer for)
            return False

    def files(self, name: Name | str) -> list[FileEntry]:
        """The files a name stands for: a dataset's files, or the one file itself."""
        n = parse_name(name)
        did = self._did_for(n)
        if did is not None:
            try:
                entries: list[FileEntry] = self.rucio.files(did.scope, did.name)
                if isinstance(n, LogicalName):  # keep CMS names as the user wrote them
                    entries = [FileEntry(f"cms:{e.name.split(':', 2)[2]}", e.size, e.adler32)
                               for e in entries]
                return entries
            except (NameNotFoundError, ServiceUnavailableError) as exc:
                self._fallback(n, exc)
        ds = self.dataset(n)
        if ds is not None:
            return [FileEntry(f"{ds.namespace}:{f.name}", f.size, f.adler32) for f in ds.files]
        meta = self.metadata(n)
        return [FileEntry(str(n), meta.size, meta.adler32)]

    def metadata(self, name: Name | str) -> FileEntry:
        """Size and adler32 of a file as the catalogs (or Rucio) know them (None: unknown)."""
        n = parse_name(name)
        if isinstance(n, DID):
            return self.resolve(n).entry()
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

    # -- files -> replicas ----------------------------------------------------------------
    def resolve_all(self, name: Name | str) -> list[ResolvedFile]:
        """Every file of a dataset or container (or the one file), with ordered replicas,
        resolved in bulk: one Rucio call per ``rucio.batch`` files."""
        n = parse_name(name)
        did = self._did_for(n)
        if did is not None:
            try:
                if self.rucio.did_type(did.scope, did.name) == "FILE":
                    return [self.resolve(n)]
                rows = self.rucio.dataset_replicas(did.scope, did.name)
                return self._from_rows(rows, cms=isinstance(n, LogicalName))
            except (NameNotFoundError, ServiceUnavailableError) as exc:
                self._fallback(n, exc)
        if self.dataset(n) is not None:
            return [self.resolve(f.name) for f in self.files(n)]
        return [self.resolve(n)]

    def resolve(self, name: Name | str) -> ResolvedFile:
        """Ordered replicas of one file. Raises if the name is unknown or has no usable replica."""
        n = parse_name(name)
        if isinstance(n, PhysicalURL):
            rep = Replica(n.url, site="direct", protocol=_protocol(n.scheme), name=str(n),
                          credential=n.credential)
            return ResolvedFile(n, (rep,))
        did = self._did_for(n)
        if did is not None:
            try:
                if self.rucio.did_type(did.scope, did.name) != "FILE":
                    raise InvalidNameError(str(n), "this is a Rucio dataset or container, not a "
                                           "file; use 'htpdata ls' or htpdata.files()",
                                           part=did.name)
                found = self.rucio.replicas([(did.scope, did.name)],
                                            {(did.scope, did.name): str(n)})
                entry, reps = found[(did.scope, did.name)]
                return self._ordered(n, reps, entry)
            except (NameNotFoundError, ServiceUnavailableError) as exc:
                self._fallback(n, exc)
        assert isinstance(n, LogicalName)
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
                phys = _product(n, site.name, proto.scheme, url)
                candidates.append(Replica(phys.url, site.name, proto.scheme, str(n),
                                          site.preference, site.role, site.tape,
                                          phys.credential))
        meta = self.metadata(n)
        return self._ordered(n, candidates, meta, "no site rule matches this path")

    def _from_rows(self, rows: list[CompactRow], cms: bool) -> list[ResolvedFile]:
        """Resolved files from Rucio's compact rows, sorted by name.

        The warm path of a whole dataset is this loop (thousands of files): names Rucio returned
        for a valid DID are built directly, not re-parsed, and each site's rank is decided once.
        """
        from .rucio.convert import adler32_text, replicas_of, unpack

        out = []
        order = self.policy.order_pfns
        for row in sorted(rows):  # scope, then name: the row starts with them
            scope, fname, size, adler, pfns = unpack(row)
            file: Name = LogicalName("cms", fname) if cms else DID(scope, fname)
            text = str(file)
            ordered = order(pfns, text)
            if not ordered:  # raises, saying why
                self._ordered(file, replicas_of(row, text), FileEntry(text))
            out.append(ResolvedFile(file, ordered, size, adler32_text(adler)))
        return out

    def _ordered(self, n: Name, candidates: list[Replica], meta: FileEntry,
                 none_found: str = "Rucio lists no replica for it") -> ResolvedFile:
        ordered = self.policy.order(candidates)
        if not ordered:
            why = (none_found if not candidates else
                   f"no usable replica: all {len(candidates)} excluded by the replica settings "
                   "(protocols, allow/block lists, tape)")
            raise NameNotFoundError(str(n), why)
        return ResolvedFile(n, tuple(ordered), meta.size, meta.adler32)

    def _check_namespace(self, n: LogicalName) -> None:
        if n.namespace not in self.catalogs.namespaces:
            raise UnknownNamespaceError(str(n), n.namespace, list(self.catalogs.namespaces))


def _product(n: LogicalName, site: str, scheme: str, url: str) -> PhysicalURL:
    """The URL a site's prefix or rule made of ``n``, parsed again like any name: no ``..`` or
    ``.`` segment (also for file://, also from two groups joined), no encoded separator, a
    valid host. A rule must not map a valid name outside its site's tree."""
    try:
        phys = parse_name(url)
    except InvalidNameError as exc:
        raise InvalidNameError(str(n), f"site {site}'s {scheme} rule maps it to an invalid URL "
                               f"({exc.reason})", part=exc.part) from None
    if not isinstance(phys, PhysicalURL) or phys.scheme != _protocol(scheme):
        raise InvalidNameError(str(n), f"site {site}'s {scheme} rule maps it to something that "
                               f"is not a {scheme}:// URL", part=url[:80])
    return phys


def _did_of(name: str, cms_scope: str) -> tuple[str, str]:
    n = parse_name(name)
    if isinstance(n, DID):
        return n.scope, n.name
    assert isinstance(n, LogicalName)
    return cms_scope, n.path


def _protocol(scheme: str) -> str:
    return {"xroot": "root", "dav": "http"}.get(scheme, scheme)
