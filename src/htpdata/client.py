"""The :class:`Client`: settings, catalogs, transports, the cache, and the operations on names.

``htpdata.open``, ``htpdata.resolve`` and friends use a default client built from the
configuration on first use (:mod:`htpdata.default`); make your own
``Client(timeouts={"read": 10})`` for other settings and pass it on
(``htpdata.open(name, client=client)``). Byte-level reads go through :meth:`Client.reader`,
whatever reader it returns is a :class:`~htpdata.io.FileReader`; file objects and ``htpdata://``
are the fsspec layer above (:mod:`htpdata.fs`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, cast

from .cache import Cache, DiskTier
from .catalogs import FileEntry
from .config import Settings, load_settings
from .errors import Attempt as _Attempt
from .errors import (
    InvalidNameError,
    NameNotFoundError,
    StorageError,
    UnknownNamespaceError,
    exhausted,
)
from .io import FileReader, byte_range
from .names import DID, LogicalName, Name, PhysicalURL, parse_name
from .prefetch import Prefetcher
from .reader import ReplicaReader
from .replicas import ResolvedFile
from .resolve import Resolver
from .transports import Transports

__all__ = ["Client"]


class Client:
    def __init__(self, settings: Settings | None = None, *,
                 environ: Mapping[str, str] | None = None,
                 **overrides: Mapping[str, Any]) -> None:
        if settings is None:
            settings = load_settings(environ, **cast(dict[str, Any], overrides))
        self.settings = settings
        self.resolver = Resolver(self.settings, environ=environ)
        self.transports = Transports(self.settings, environ)
        self._cache: Cache | None = None
        self._cache_lock = threading.Lock()
        self._prefetcher: Prefetcher | None = None

    @property
    def cache(self) -> Cache:
        """The tiered cache, built on first use from ``settings.cache``."""
        with self._cache_lock:
            if self._cache is None:
                self._cache = Cache(self.settings.cache)
            return self._cache

    def tier(self, name: str | None = None) -> DiskTier:
        """A cache tier by name; by default the one whole files go to (``htpdata stage``,
        converted copies): the shared tier when one is configured (every node sees it), else
        the node-local one."""
        if name is None:
            name = "shared" if any(t.name == "shared" for t in self.cache.tiers) else "local"
        return self.cache.tier(name)

    def worker_settings(self) -> Settings:
        """The settings other processes (Dask workers, gateways) are given: the bearer token
        as the path of its file, never its value
        (:func:`htpdata.transports.auth.settings_for_workers`)."""
        from .transports.auth import settings_for_workers

        return settings_for_workers(self.settings, self.transports.creds)

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from settings on the other side (Dask workers); connections are not shipped,
        # and the token goes as its file's path.
        return (Client, (self.worker_settings(),))

    def close(self) -> bool:
        """Let queued cache writes land, then close connections, open handles and their
        threads. The client can be used again (it reconnects). Returns False when some
        storage handle could not be closed in time (a dead server) and may still be open."""
        if self._prefetcher is not None:
            self._prefetcher.stop()
        if self._cache is not None:
            self._cache.close()
        return self.transports.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names ---------------------------------------------------------------------------
    def resolve(self, name: str | Name) -> ResolvedFile:
        """The replicas of a file, in the order they will be tried."""
        return self.resolver.resolve(name)

    def resolve_all(self, name: str | Name) -> list[ResolvedFile]:
        """Every file of a dataset or container (or the one file) with its replicas, in bulk."""
        return self.resolver.resolve_all(name)

    def files(self, name: str | Name) -> list[FileEntry]:
        """The files a name stands for (a dataset's files, or the file itself)."""
        return self.resolver.files(name)

    def reader(self, name: str | Name, cache: bool | None = None, *,
               prefetch: bool = True) -> FileReader:
        """A byte-range reader for one file: through the cache unless ``cache=False`` or the
        cache is switched off in the settings. Reading a file of a catalog dataset prefetches
        the next files' (``cache.prefetch``; ``prefetch=False`` not for this reader)."""
        upstream = ReplicaReader(self.resolve(name), self.transports)
        use_cache = self.settings.cache.enabled if cache is None else cache
        if not use_cache:
            return upstream
        dataset = self.resolver.dataset_of(name)
        reader = self.cache.wrap(upstream, dataset)
        c = self.settings.cache
        if prefetch and dataset is not None and c.prefetch and c.prefetch_files > 0:
            self.prefetcher.attach(reader, dataset)
        return reader

    @property
    def prefetcher(self) -> Prefetcher:
        """The next-file prefetch of this client's readers (see :mod:`htpdata.prefetch`)."""
        with self._cache_lock:
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(self, self.settings.cache)
            return self._prefetcher

    def forget(self, name: str | Name) -> None:
        """Drop what the cache holds for ``name`` (after it was written through htpdata)."""
        if self._cache is not None or self.settings.cache.enabled:
            self.cache.forget(str(parse_name(name)))

    # -- reading -------------------------------------------------------------------------
    def cat(self, name: str | Name, start: int | None = None, end: int | None = None,
            cache: bool | None = None) -> bytes:
        reader = self.reader(name, cache=cache)
        s, e = byte_range(start, end, reader.size())
        return reader.read(s, e) if e > s else b""

    def info(self, name: str | Name) -> dict[str, Any]:
        n = parse_name(name)
        if self.resolver.is_collection(n):
            files = self.files(n)
            return {"name": str(n), "size": sum(f.size or 0 for f in files),
                    "type": "directory", "files": len(files)}
        reader = self.reader(n)
        info = reader.stat()
        return {"name": str(n), "size": info["size"], "type": info.get("type", "file"),
                "adler32": reader.resolved.adler32}

    # -- listing -------------------------------------------------------------------------
    def ls(self, name: str | Name) -> list[dict[str, Any]]:
        """Datasets under a prefix, a dataset's files, or a folder on storage."""
        if isinstance(name, str) and name.endswith(":") and ":" not in name[:-1]:
            name = name + "/"  # "demo:" lists the namespace's datasets
        if isinstance(name, str) and name.count(":") == 1 and name.endswith(":/"):
            return self._ls_namespace(name[:-2], "/")
        n = parse_name(name)
        if isinstance(n, LogicalName):
            ds = self.resolver.dataset(n)
            if ds is not None:
                return [{"name": f"{ds.namespace}:{f.name}", "size": f.size, "type": "file",
                         "adler32": f.adler32} for f in ds.files]
            under = self._ls_namespace(n.namespace, n.path.rstrip("/") + "/")
            if under:
                return under
        if isinstance(n, PhysicalURL):
            return self._ls_storage(n)
        if isinstance(n, DID):
            return [{"name": f.name, "size": f.size, "type": "file", "adler32": f.adler32}
                    for f in self.files(n)]
        return self._ls_storage(n)

    def _ls_namespace(self, namespace: str, prefix: str) -> list[dict[str, Any]]:
        known = self.resolver.catalogs.namespaces
        if namespace not in known:
            raise UnknownNamespaceError(f"{namespace}:", namespace, list(known))
        return [{"name": f"{d.namespace}:{d.name}", "size": d.size, "type": "dataset",
                 "files": len(d.files)} for d in self.resolver.catalogs.datasets_under(
                     namespace, prefix)]

    def _ls_storage(self, n: Name) -> list[dict[str, Any]]:
        if not isinstance(n, LogicalName | PhysicalURL):
            raise InvalidNameError(str(n), "cannot list this kind of name")
        resolved = self.resolve(n)
        attempts: list[_Attempt] = []
        for rep in resolved.replicas:
            try:
                entries = self.transports.for_replica(rep).ls(rep.url)
            except StorageError as err:
                if isinstance(n, PhysicalURL):  # its one replica: its own error, as before
                    raise
                attempts.append(_Attempt(rep.url, rep.site, err))
                continue
            if isinstance(n, PhysicalURL):
                return entries
            return [{**e, "name": _logical_child(n, rep.url, e["name"]), "url": e["name"]}
                    for e in entries]
        if not attempts:
            raise NameNotFoundError(str(n), "no replica to list")
        raise exhausted(str(n), attempts, "list")


def _logical_child(parent: LogicalName, parent_url: str, child_url: str) -> str:
    """The logical name of a listed entry: the parent's name plus the entry's relative path.

    Falls back to the physical URL when the entry is not below the parent's URL.
    """
    base = str(parse_name(parent_url)).rstrip("/")
    child = str(parse_name(child_url))
    if child == base:  # listing a file returns the file itself
        return str(parent)
    if child.startswith(base + "/"):
        return f"{parent.namespace}:{parent.path.rstrip('/')}/{child[len(base) + 1:]}"
    return child_url
