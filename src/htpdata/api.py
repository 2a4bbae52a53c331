"""The top-level functions (``htpdata.open``, ``htpdata.resolve``, ...), on the default client.

Each is a line over a :class:`~htpdata.client.Client` method or a subpackage; ``client=`` picks
another client than the default one (:mod:`htpdata.default`). :func:`open` is the fsspec-facing
entry: the file it returns is an ``htpdata://`` file (:mod:`htpdata.fs`), so uproot handed it
takes the vector-read road. Heavy subpackages (fsspec, staging, conversion, reports) are
imported on first use, so ``import htpdata`` and the CLI start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from .default import default_client
from .names import Name

if TYPE_CHECKING:
    from .catalogs import FileEntry
    from .client import Client
    from .replicas import ResolvedFile

__all__ = ["arrays", "cache_info", "cat", "converted", "files", "fileset", "gateway_url", "ls",
           "open", "report", "resolve", "stage"]


def open(name: str | Name, mode: str = "rb", *, client: Client | None = None,
         cache: bool | None = None, **kwargs: Any) -> BinaryIO:
    """A seekable binary file for reading a logical name, DID or URL (through the cache unless
    ``cache=False``, with replica failover), or a writable one (``"wb"``, straight to the first
    replica's storage). ``kwargs`` go to fsspec's ``open`` (``block_size``, ``cache_type``)."""
    from .fs import open_name

    return open_name(client or default_client(), name, mode, cache,  # type: ignore[no-any-return]
                     **kwargs)


def resolve(name: str | Name, *, client: Client | None = None
            ) -> ResolvedFile | list[ResolvedFile]:
    """The ordered replicas (URL, site, protocol) of a file; for a dataset or container, of
    every file in it (a list, resolved in bulk)."""
    c = client or default_client()
    if c.resolver.is_collection(name):
        return c.resolve_all(name)
    return c.resolve(name)


def stage(names: Any, **kwargs: Any) -> Any:
    """Prefetch files or datasets into the cache (see :func:`htpdata.staging.stage`)."""
    from .staging import stage as _stage

    return _stage(names, **kwargs)


def report(by: str = "user", since: float | str | None = None, refresh: bool = False, *,
           client: Client | None = None) -> Any:
    """A usage and traffic report (``.records()`` rows, ``.to_pandas()``, ``.as_dict()``).
    ``since`` is a duration such as ``"7d"`` or a Unix time."""
    import time

    from .reporting import build_report
    from .staging import parse_duration

    if isinstance(since, str):
        since = time.time() - parse_duration(since)
    return build_report(client or default_client(), by=by, since=since, refresh=refresh)


def cache_info(name: str | Name, *, client: Client | None = None) -> Any:
    """What each cache tier holds of a file (a :class:`~htpdata.reporting.held.CacheInfo`:
    ``.tiers``, ``.as_dict()``, an HTML table in a notebook). No storage I/O."""
    from .reporting.held import cache_info as _cache_info

    return _cache_info(client or default_client(), name)


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


def fileset(*datasets: str | Name, tree: str | None = None,
            client: Client | None = None) -> dict[str, Any]:
    """The coffea / ``uproot.dask`` fileset of datasets, with ``htpdata://`` URLs and the tree
    the files have (``tree=`` to choose when they have several): ``{dataset: {"files": {url:
    tree}, "metadata": {...}}}``. See :mod:`htpdata.filesets`."""
    from .filesets import make_fileset

    return make_fileset(client or default_client(), datasets, tree)


def files(name: str | Name, *, client: Client | None = None) -> list[FileEntry]:
    """The files of a dataset (or the one file a name stands for), with size and adler32."""
    return (client or default_client()).files(name)


def ls(name: str | Name, *, client: Client | None = None) -> list[dict[str, Any]]:
    """Datasets under a prefix, a dataset's files, or a storage folder."""
    return (client or default_client()).ls(name)


def cat(name: str | Name, start: int | None = None, end: int | None = None, *,
        client: Client | None = None) -> bytes:
    """The bytes of a file (or of ``[start, end)``)."""
    return (client or default_client()).cat(name, start, end)


def gateway_url(name: str | Name) -> str:
    """The URL of ``name`` through your running gateway (``htpdata serve``, or
    ``htpdata.gateway()`` in this process), for ROOT's ``RDataFrame``, ``TChain`` or curl."""
    from .gateway import gateway_url as _gateway_url

    return _gateway_url(name)
