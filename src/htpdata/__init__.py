"""htpdata: data access and caching for WLCG storage.

::

    import htpdata, uproot
    f = htpdata.open("cms:/store/mc/.../x.root")          # seekable, with replica failover
    events = uproot.open(f)["Events"]
    uproot.open("htpdata://cms/store/mc/.../x.root:Events")
    htpdata.resolve("cms:/store/mc/.../x.root").replicas
"""

from __future__ import annotations

from typing import Any, BinaryIO

from . import errors
from ._version import __version__
from .catalogs import FileEntry
from .client import Client, default_client, reset_default_client
from .config import Settings, load_settings
from .errors import (
    AuthenticationError,
    CatalogError,
    ChecksumMismatchError,
    ConfigError,
    HtpdataError,
    InvalidNameError,
    NameNotFoundError,
    NoReplicaFoundError,
    ReplicasDeniedError,
    ReplicasExhaustedError,
    ServiceUnavailableError,
    StorageError,
    StorageExistsError,
    StorageNotFoundError,
    StoragePermissionError,
    StorageTimeoutError,
    StorageUnavailableError,
    UnknownNamespaceError,
)
from .names import DID, LogicalName, Name, PhysicalURL, parse_name
from .replicas import Replica
from .resolve import ResolvedFile

__all__ = [
    "DID",
    "AuthenticationError",
    "CatalogError",
    "ChecksumMismatchError",
    "Client",
    "ConfigError",
    "FileEntry",
    "HtpdataError",
    "InvalidNameError",
    "LogicalName",
    "Name",
    "NameNotFoundError",
    "NoReplicaFoundError",
    "PhysicalURL",
    "Replica",
    "ReplicasDeniedError",
    "ReplicasExhaustedError",
    "ResolvedFile",
    "ServiceUnavailableError",
    "Settings",
    "StorageError",
    "StorageExistsError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "StorageTimeoutError",
    "StorageUnavailableError",
    "UnknownNamespaceError",
    "__version__",
    "arrays",
    "cache_info",
    "cat",
    "converted",
    "default_client",
    "errors",
    "files",
    "fileset",
    "gateway",
    "gateway_url",
    "load_settings",
    "ls",
    "open",
    "parse_name",
    "report",
    "reset_default_client",
    "resolve",
    "stage",
]


def open(name: str | Name, mode: str = "rb", **kwargs: Any) -> BinaryIO:
    """Open a logical name, DID or URL as a seekable binary file (see :meth:`Client.open`)."""
    return default_client().open(name, mode, **kwargs)


def resolve(name: str | Name) -> ResolvedFile | list[ResolvedFile]:
    """The ordered replicas (URL, site, protocol) of a file; for a dataset or container, of
    every file in it (a list, resolved in bulk)."""
    client = default_client()
    if client.resolver.is_collection(name):
        return client.resolve_all(name)
    return client.resolve(name)


def stage(names: Any, **kwargs: Any) -> Any:
    """Prefetch files or datasets into the cache (see :func:`htpdata.staging.stage`)."""
    from .staging import stage as _stage

    return _stage(names, **kwargs)


def report(by: str = "user", since: float | str | None = None, refresh: bool = False) -> Any:
    """A usage and traffic report (``.records()`` rows, ``.to_pandas()``, ``.as_dict()``).
    ``since`` is a duration such as ``"7d"`` or a Unix time."""
    import time

    from .reporting import build_report
    from .staging import parse_duration

    if isinstance(since, str):
        since = time.time() - parse_duration(since)
    return build_report(default_client(), by=by, since=since, refresh=refresh)


def cache_info(name: str | Name) -> Any:
    """What each cache tier holds of a file (a :class:`~htpdata.reporting.held.CacheInfo`:
    ``.tiers``, ``.as_dict()``, an HTML table in a notebook). No storage I/O."""
    from .reporting.held import cache_info as _cache_info

    return _cache_info(default_client(), name)


def converted(name: str | Name, format: str = "parquet",
              columns: Any = None, **kwargs: Any) -> Any:
    """Path of the cached Parquet or RNTuple copy of a file (converted on first use)."""
    from .convert import converted as _converted

    return _converted(name, format, columns, **kwargs)


def arrays(name: str | Name, columns: Any = None, format: str = "parquet",
           **kwargs: Any) -> Any:
    """An awkward Array of ``columns`` from the converted copy of a file."""
    from .convert import arrays as _arrays

    return _arrays(name, columns, format, **kwargs)


def fileset(*datasets: str | Name, tree: str | None = None) -> dict[str, Any]:
    """The coffea / ``uproot.dask`` fileset of datasets, with ``htpdata://`` URLs and the tree
    the files have (``tree=`` to choose when they have several)."""
    return default_client().fileset(*datasets, tree=tree)


def files(name: str | Name) -> list[FileEntry]:
    """The files of a dataset (or the one file a name stands for), with size and adler32."""
    return default_client().files(name)


def ls(name: str | Name) -> list[dict[str, Any]]:
    """Datasets under a prefix, a dataset's files, or a storage folder."""
    return default_client().ls(name)


def cat(name: str | Name, start: int | None = None, end: int | None = None) -> bytes:
    """The bytes of a file (or of ``[start, end)``)."""
    return default_client().cat(name, start, end)


def gateway_url(name: str | Name) -> str:
    """The URL of ``name`` through your running gateway (``htpdata serve``, or
    ``htpdata.gateway()`` in this process), for ROOT's ``RDataFrame``, ``TChain`` or curl."""
    from .gateway import gateway_url as _gateway_url

    return _gateway_url(name)


def __getattr__(attr: str) -> Any:
    # ``htpdata.gateway`` (the package, callable: ``with htpdata.gateway() as gw``) is imported
    # on first use, so ``import htpdata`` does not pay for aiohttp.
    if attr == "gateway":
        import importlib

        return importlib.import_module(".gateway", __name__)
    raise AttributeError(f"module 'htpdata' has no attribute {attr!r}")


def _register() -> None:
    # The fsspec.specs entry point registers us when installed (editable installs too); this
    # covers a bare source tree on sys.path when fsspec was imported first. fsspec itself is
    # not imported for it: that would cost ~30 ms at every CLI start.
    import sys

    if "fsspec" not in sys.modules:
        return
    from fsspec.registry import known_implementations, register_implementation

    if "htpdata" not in known_implementations:
        register_implementation("htpdata", "htpdata.fs.HtpdataFileSystem")


_register()
