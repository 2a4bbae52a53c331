"""The ``htpdata://`` fsspec filesystem, so uproot, coffea, pandas, pyarrow and Dask read
through htpdata unchanged::

    uproot.open("htpdata://cms/store/mc/.../x.root:Events")
    fsspec.open("htpdata://rucio/user.jdoe:file.root")
    fsspec.open("htpdata://root://host//store/x.root")      # a physical URL, same machinery

Registered through the ``fsspec.specs`` entry point. Reads go through
:class:`~htpdata.reader.ReplicaReader` (failover); ``cat_ranges`` sends each file's ranges in one
request (an XRootD vector read, or parallel HTTP range requests). Writes (``put``,
``open(..., "wb")``, ``mkdir``, ``rm``) pass straight through to the first replica's storage.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import Client, Reader, default_client
from .names import Name, from_fsspec_path, parse_name, to_fsspec_url
from .transports import translate

__all__ = ["HtpdataFile", "HtpdataFileSystem"]

PROTOCOL = "htpdata"
_MAX_READERS = 256
_READER_TTL = 300.0  # seconds a file's size learnt from a stat is trusted


class HtpdataFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, *args: Any, client: Client | None = None, cache: bool | None = None,
                 **overrides: Any) -> None:
        super().__init__(*args, client=client, cache=cache, **overrides)
        if client is None and overrides:
            client = Client(**overrides)
        self._client = client
        self.use_cache = cache
        # One reader per file and filesystem: uproot calls cat_ranges many times per file, and
        # each new reader would stat the file upstream again (a WAN round trip).
        self._readers: OrderedDict[tuple[str, bool | None], tuple[float, Reader]] = OrderedDict()
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

    def _reader(self, path: str, cache: bool | None = None) -> Reader:
        use = self.use_cache if cache is None else cache
        key = (self._strip_protocol(path), use)
        now = time.monotonic()
        with self._readers_lock:
            hit = self._readers.get(key)
            if hit is not None and now - hit[0] < _READER_TTL:
                self._readers.move_to_end(key)
                return hit[1]
        reader = self.client.reader(self.name_of(path), cache=use)
        with self._readers_lock:
            self._readers[key] = (now, reader)
            while len(self._readers) > _MAX_READERS:
                self._readers.popitem(last=False)
        return reader

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget per-file readers (and the sizes they learnt)."""
        with self._readers_lock:
            self._readers.clear()

    # -- reading -------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name = self.name_of(path)
        if self.client.resolver.dataset(name) is not None:
            info = self.client.info(name)
        else:
            reader = self._reader(path)
            try:
                info = {**reader.stat(), "adler32": reader.resolved.adler32}
            except Exception:
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

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        reader = self._reader(path)
        try:
            size = reader.size()
        except Exception:
            self._drop_reader(path)
            raise
        s = 0 if start is None else (start if start >= 0 else max(0, size + start))
        e = size if end is None else (end if end >= 0 else max(0, size + end))
        return reader.read(s, min(e, size)) if e > s else b""

    def cat_ranges(self, paths: list[str], starts: list[int] | int, ends: list[int] | int,
                   max_gap: int | None = None, on_error: str = "return",
                   **kwargs: Any) -> list[Any]:
        """All ranges of one file in one request (vector read); files one after another."""
        n = len(paths)
        starts = [starts] * n if isinstance(starts, int) else list(starts)
        ends = [ends] * n if isinstance(ends, int) else list(ends)
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
                ranges = [(min(starts[i] if starts[i] >= 0 else size + starts[i], size),
                           min(ends[i] if ends[i] >= 0 else size + ends[i], size)) for i in idx]
                data = reader.read_ranges(ranges)
            except Exception as exc:
                self._drop_reader(p)
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
            reader = self._reader(path, kwargs.pop("cache", None))
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
            for key in [k for k in self._readers if k[0] == stripped]:
                del self._readers[key]

    def _forget(self, path: str) -> None:
        """After a write: no reader or cache entry of the old content may answer for path."""
        self._drop_reader(path)
        self.client.forget(self.name_of(path))
        for rep in self.client.resolve(self.name_of(path)).replicas:
            forget = getattr(self.client.transports.for_replica(rep), "forget", None)
            if forget is not None:
                forget(rep.url)

    def _pass(self, op: str, path: str, *args: Any, **kwargs: Any) -> Any:
        self._forget(path)
        fs, target, url, name = self._write_target(path)
        try:
            return getattr(fs, op)(target, *args, **kwargs)
        except Exception as exc:
            raise translate(exc, url, name, what=op) from exc

    def _open_write(self, path: str, mode: str, **kwargs: Any) -> Any:
        return self._pass("open", path, mode, **kwargs)

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


class HtpdataFile(AbstractBufferedFile):  # type: ignore[misc]
    """A seekable read-only file whose blocks come from :class:`ReplicaReader` (with failover)."""

    def __init__(self, fs: HtpdataFileSystem, path: str, reader: Reader,
                 **kwargs: Any) -> None:
        self.reader = reader
        super().__init__(fs, path, size=reader.size(), **kwargs)
        hold = getattr(reader, "hold", None)
        if hold is not None:
            hold()  # eviction leaves this file's cache entry alone while it is open

    def close(self) -> None:
        release = getattr(self.reader, "release", None)
        if release is not None:
            release()
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
        return self.reader.read(start, end)
