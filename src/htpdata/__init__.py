"""htpdata: data access and caching for WLCG storage.

::

    import htpdata, uproot
    f = htpdata.open("cms:/store/mc/.../x.root")          # seekable, with replica failover
    events = uproot.open(f)["Events"]
    uproot.open("htpdata://cms/store/mc/.../x.root:Events")
    htpdata.resolve("cms:/store/mc/.../x.root").replicas
"""

from __future__ import annotations

from typing import Any

from . import errors
from ._version import __version__
from .api import (
    arrays,
    cache_info,
    cat,
    converted,
    files,
    fileset,
    gateway_url,
    ls,
    open,
    report,
    resolve,
    stage,
)
from .catalogs import FileEntry
from .client import Client
from .config import Settings, load_settings
from .default import default_client, reset_default_client
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
from .replicas import Replica, ResolvedFile

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
