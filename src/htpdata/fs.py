"""The ``htpdata://`` fsspec filesystem, so uproot, coffea, pandas, pyarrow and Dask read
through htpdata unchanged::

    uproot.open("htpdata://cms/store/mc/.../x.root:Events")
    fsspec.open("htpdata://rucio/user.jdoe:file.root")
    fsspec.open("htpdata://root://host//store/x.root")      # a physical URL, same machinery

Registered through the ``fsspec.specs`` entry point. Reads go through the client's
:class:`~htpdata.io.FileReader` (the cache, then replicas with failover); ``cat_ranges`` sends
each file's ranges in one request (an XRootD vector read, or parallel HTTP range requests).
Writes (``put``, ``open(..., "wb")``, ``mkdir``, ``rm``) pass straight through to the first
replica's storage.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, SupportsIndex

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import Client
from .config import Settings
from .default import default_client
from .errors import StorageError
from .io import FileReader, byte_range
from .names import Name, from_fsspec_path, parse_name, to_fsspec_url
from .transports import translate

__all__ = ["HtpdataFile", "HtpdataFileSystem", "open_name", "settings_from_storage_options"]

log = logging.getLogger("htpdata.fs")
PROTOCOL = "htpdata"
_MAX_READERS = 256
_READER_TTL = 300.0  # seconds a file's size learnt from a stat is trusted

# Storage options that uproot, coffea, pandas, pyarrow, Dask and fsspec itself pass to every
# filesystem for their own reasons. They mean nothing to htpdata (its reads are vector reads,
# its caching is its own, its listings are not cached) and are accepted and ignored.
FOREIGN_OPTIONS = frozenset({
    # fsspec: instance and listings caches, async
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
    "asynchronous", "loop", "batch_size",
    # fsspec file objects
    "block_size", "cache_type", "cache_options", "default_block_size", "default_cache_type",
    "default_fill_cache", "fill_cache", "compression", "auto_mkdir",
    # uproot and coffea (their readers' threads and handlers)
    "handler", "handle", "num_workers", "num_fallback_workers", "use_threads",
    "begin_chunk_size", "minimal_ttree_metadata", "xrootd_handler", "http_handler",
    "object_handler", "file_handler", "max_num_elements",
    # pandas and pyarrow
    "storage_options", "pre_buffer", "buffer_size",
})
_warned_options: set[str] = set()


def settings_from_storage_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The htpdata settings in an ``htpdata://`` filesystem's storage options.

    Configuration sections (``timeouts``, ``cache``, ``replicas``, ...) are htpdata's own.
    ``timeout`` (seconds; uproot's and coffea's option) is ``timeouts.read`` for this
    filesystem, unless ``timeouts`` says otherwise. What other libraries pass for their own
    use (:data:`FOREIGN_OPTIONS`) is ignored; anything else is ignored with one warning. None
    of them is ever an error: a library passing its usual options must not stop a read.
    """
    sections = {f.name for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    timeout = 0.0
    for key, value in options.items():
        if key in sections:
            out[key] = value
        elif key == "timeout":
            timeout = _seconds(value)
        elif key not in FOREIGN_OPTIONS and key not in _warned_options:
            _warned_options.add(key)
            log.warning("htpdata:// ignores the storage option %r (not an htpdata setting; "
                        "the sections are %s)", key, ", ".join(sorted(sections)))
    explicit = out.get("timeouts")
    if timeout > 0 and (explicit is None or isinstance(explicit, Mapping)):
        out["timeouts"] = {"read": timeout, **(explicit or {})}
    return out


def _seconds(value: Any) -> float:
    """A positive number of seconds, or 0 for anything else (None, a bool, text)."""
    if isinstance(value, bool):
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if seconds > 0 else 0.0


class HtpdataFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, *args: Any, client: Client | None = None, cache: bool | None = None,
                 **storage_options: Any) -> None:
        super().__init__(*args, client=client, cache=cache, **storage_options)
        sections = settings_from_storage_options(storage_options)
        if client is None and sections:
            client = Client(**sections)
        self._client = client
        self.use_cache = cache
        # One reader per file and filesystem: uproot calls cat_ranges many times per file, and
        # each new reader would stat the file upstream again (a WAN round trip). Readers
        # belong to the client that made them: when the default client is replaced
        # (reset_default_client), they are all dropped.
        self._readers: OrderedDict[tuple[str, bool | None], tuple[float, FileReader]] = \
            OrderedDict()
        self._readers_of: Client | None = None
        self._readers_lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The client given, or else the default one (looked up each time, so
        :func:`htpdata.reset_default_client` takes effect on cached filesystem instances)."""
        return self._client if self._client is not None else default_client()

    # -- paths ---------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        elif path.startswith(f"{PROTOCOL}::"):
            path = path[len(PROTOCOL) + 2:]
        return path.rstrip("/") if path.count("/") > 1 and "://" not in path else path

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    @staticmethod
    def name_of(path: str) -> Name:
        """The :data:`~htpdata.names.Name` for a stripped path (``cms/store/x`` or ``cms:/x``)."""
        return from_fsspec_path(HtpdataFileSystem._strip_protocol(path))

    @staticmethod
    def path_for(name: Name) -> str:
        return str(HtpdataFileSystem._strip_protocol(to_fsspec_url(name)))

    def _reader(self, path: str, cache: bool | None = None, keep: bool = True) -> FileReader:
        """The file's reader, shared by this filesystem's calls; ``keep`` keeps it (held:
        marked in use, for uproot's next ``cat_ranges``) for a while, else the caller holds
        it."""
        use = self.use_cache if cache is None else cache
        key = (self._strip_protocol(path), use)
        client = self.client
        now = time.monotonic()
        gone: list[FileReader] = []
        with self._readers_lock:
            if self._readers_of is not client:
                gone += [r for _, r in self._readers.values()]
                self._readers.clear()
                self._readers_of = client
            hit = self._readers.get(key)
            if hit is not None and now - hit[0] < _READER_TTL:
                self._readers.move_to_end(key)
                return hit[1]
        _release_all(gone)
        reader = client.reader(self.name_of(path), cache=use)
        if not keep:
            return reader
        reader.hold()  # kept for uproot's next cat_ranges: its cache entry is in use meanwhile
        with self._readers_lock:
            if self._readers_of is not client:
                gone.append(reader)
            else:
                old = self._readers.pop(key, None)
                if old is not None:
                    gone.append(old[1])
                self._readers[key] = (now, reader)
                while len(self._readers) > _MAX_READERS or (
                        self._readers
                        and now - next(iter(self._readers.values()))[0] > _READER_TTL):
                    gone.append(self._readers.popitem(last=False)[1][1])
        _release_all(gone)
        return reader

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget per-file readers (and the sizes they learnt)."""
        with self._readers_lock:
            gone = [r for _, r in self._readers.values()]
            self._readers.clear()
        _release_all(gone)

    # -- reading -------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name = self.name_of(path)
        if self.client.resolver.dataset(name) is not None:
            info = self.client.info(name)
        else:
            reader = self._reader(path)
            try:
                info = {**reader.stat(), "adler32": reader.resolved.adler32}
            except StorageError:
                self._drop_reader(path)  # never keep a reader whose replicas all failed
                raise
        info["name"] = self._strip_protocol(path)
        return info

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        name = self.name_of(path)
        entries = self.client.ls(name)
        for e in entries:
            e["name"] = self.path_for(parse_name(e["name"]))
            if e["type"] == "dataset":
                e["type"] = "directory"
        return entries if detail else [e["name"] for e in entries]

    def cat_file(self, path: str, start: SupportsIndex | None = None,
                 end: SupportsIndex | None = None, **kwargs: Any) -> bytes:
        reader = self._reader(path)
        try:
            s, e = byte_range(start, end, reader.size())
            return reader.read(s, e) if e > s else b""
        except StorageError:
            self._drop_reader(path)  # never keep a reader whose replicas all failed
            raise

    def cat_ranges(self, paths: list[str], starts: Any, ends: Any, max_gap: int | None = None,
                   on_error: str = "raise", **kwargs: Any) -> list[Any]:
        """All ranges of one file in one request (vector read); files one after another.

        ``starts`` and ``ends`` are lists (or one value for every path), of any integer type;
        ``None`` and negative offsets as in :meth:`cat_file`. A failure raises the typed error:
        fsspec's base class returns it in the list by default (``on_error="return"``), which
        is asked for explicitly by callers that handle it (fsspec's reference filesystem); its
        other callers (uproot's fsspec source, Dask) would take the exception for bytes.
        """
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', not {on_error!r}")
        if not isinstance(paths, list):
            raise TypeError(f"paths must be a list, not {type(paths).__name__}")
        n = len(paths)
        starts = list(starts) if isinstance(starts, list | tuple) else [starts] * n
        ends = list(ends) if isinstance(ends, list | tuple) else [ends] * n
        if not (len(starts) == len(ends) == n):
            raise ValueError("paths, starts and ends must have the same length")
        by_path: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(paths):
            by_path[p].append(i)
        out: list[Any] = [None] * n
        for p, idx in by_path.items():
            data: list[Any]
            try:
                reader = self._reader(p)
                size = reader.size()
                data = reader.read_ranges([byte_range(starts[i], ends[i], size) for i in idx])
            except StorageError as exc:
                self._drop_reader(p)  # never keep a reader whose replicas all failed
                if on_error == "raise":
                    raise
                data = [exc] * len(idx)
            for i, d in zip(idx, data, strict=True):
                out[i] = d
        return out

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> Any:
        if "r" in mode:
            reader = self._reader(path, kwargs.pop("cache", None), keep=False)
            return HtpdataFile(self, path, reader, mode=mode,
                               block_size=block_size or "default",
                               cache_options=cache_options,
                               cache_type=kwargs.get("cache_type", "readahead"))
        return self._open_write(path, mode, block_size=block_size, autocommit=autocommit,
                                **kwargs)

    def ukey(self, path: str) -> str:
        info = self.info(path)
        return f"{info['name']}:{info.get('size')}:{info.get('adler32')}"

    def checksum(self, path: str) -> int:
        adler = self.info(path).get("adler32")
        return int(adler, 16) if adler else hash(self.ukey(path))

    # -- writes, straight through to the storage of the first replica -----------------------
    def _write_target(self, path: str) -> tuple[Any, str, str, str]:
        """(fsspec filesystem, its path, physical URL, logical name) to write ``path`` at."""
        name = str(self.name_of(path))
        rep = self.client.resolve(name).replicas[0]
        fs, target = self.client.transports.for_replica(rep).filesystem(rep.url)
        return fs, target, rep.url, name

    def _drop_reader(self, path: str) -> None:
        stripped = self._strip_protocol(path)
        with self._readers_lock:
            gone = [self._readers.pop(k)[1] for k in [k for k in self._readers
                                                      if k[0] == stripped]]
        _release_all(gone)

    def _forget(self, path: str) -> None:
        """After a write: no reader or cache entry of the old content may answer for path."""
        self._drop_reader(path)
        self.client.forget(self.name_of(path))
        for rep in self.client.resolve(self.name_of(path)).replicas:
            self.client.transports.forget(rep)

    def _pass(self, op: str, path: str, *args: Any, **kwargs: Any) -> Any:
        self._forget(path)
        fs, target, url, name = self._write_target(path)
        try:
            return getattr(fs, op)(target, *args, **kwargs)
        except Exception as exc:
            raise translate(exc, url, name, what=op) from exc

    def _open_write(self, path: str, mode: str, **kwargs: Any) -> Any:
        # Forget before (no reader may serve the old bytes meanwhile) and again once the new
        # bytes are committed: a read between the two would have cached the old content.
        return _ForgetOnClose(self._pass("open", path, mode, **kwargs),
                              lambda: self._forget(path))

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        # Streamed through open("wb"): not every backend implements put_file (fsspec-xrootd).
        with open(lpath, "rb") as src, self.open(rpath, "wb") as dst:
            while block := src.read(8 << 20):
                dst.write(block)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy through this process (read with failover, write to path2's storage).

        Not a third-party copy: the bytes cross the client. Use ``htpdata stage`` or FTS for
        bulk movement between sites.
        """
        if self.isdir(path1):
            self.makedirs(path2, exist_ok=True)
            return
        reader = self._reader(path1)
        size = reader.size()
        with self.open(path2, "wb") as dst:
            for pos in range(0, size, 8 << 20):
                dst.write(reader.read(pos, min(pos + (8 << 20), size)))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self.open(path, "xb" if mode == "create" else "wb") as f:
            f.write(value)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._pass("mkdir", path, create_parents=create_parents, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._pass("makedirs", path, exist_ok=exist_ok)

    def rm_file(self, path: str) -> None:
        self._pass("rm_file", path)

    def _rm(self, path: str) -> None:
        self._pass("rm_file", path)

    def rmdir(self, path: str) -> None:
        self._pass("rmdir", path)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        self._pass("touch", path, truncate=truncate, **kwargs)

    def created(self, path: str) -> Any:
        return self._pass("created", path)

    def modified(self, path: str) -> Any:
        return self._pass("modified", path)


def open_name(client: Client, name: str | Name, mode: str = "rb", cache: bool | None = None,
              **kwargs: Any) -> Any:
    """``name`` opened through ``client`` as an ``htpdata://`` file (what ``htpdata.open``
    returns): reads through the cache unless ``cache=False``, writes straight to storage."""
    fs = HtpdataFileSystem(client=client, cache=cache, skip_instance_cache=True)
    return fs.open(fs.path_for(parse_name(name)), mode, **kwargs)


def _release_all(readers: list[FileReader]) -> None:
    for r in readers:
        r.release()


class _ForgetOnClose:
    """A file being written to storage that drops the cache's entry for its name once the
    bytes are committed (on close)."""

    def __init__(self, f: Any, after: Callable[[], None]) -> None:
        self._f = f
        self._after: Callable[[], None] | None = after

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            after, self._after = self._after, None
            if after is not None:
                after()

    def __enter__(self) -> _ForgetOnClose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class HtpdataFile(AbstractBufferedFile):  # type: ignore[misc]
    """A seekable read-only file whose blocks come from a :class:`~htpdata.io.FileReader`
    (through the cache, with replica failover)."""

    def __init__(self, fs: HtpdataFileSystem, path: str, reader: FileReader,
                 **kwargs: Any) -> None:
        self.reader = reader
        self._held = False
        super().__init__(fs, path, size=reader.size(), **kwargs)
        reader.hold()  # eviction leaves this file's cache entry alone while it is open
        self._held = True

    def close(self) -> None:
        if self._held:  # fsspec may call close twice
            self._held = False
            self.reader.release()
        super().close()

    @property
    def name(self) -> str:  # uproot and people print this
        return str(self.reader.name)

    # uproot hands a file object with ``storage_options`` to fsspec as ``str(obj)``: so
    # ``uproot.open(htpdata.open(name))`` takes the vector-read road (cat_ranges), not one
    # seek+read round trip per basket.
    @property
    def storage_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.fs._client is not None:
            opts["client"] = self.fs._client
        if self.fs.use_cache is not None:
            opts["cache"] = self.fs.use_cache
        return opts

    def __str__(self) -> str:
        return f"{PROTOCOL}://{self.path}"

    def _fetch_range(self, start: int, end: int) -> bytes:
        try:
            return self.reader.read(start, end)
        except StorageError:
            self.fs._drop_reader(self.path)  # the next open starts from fresh replicas
            raise
