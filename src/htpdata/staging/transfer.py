"""Stage one file: fetch what the tier lacks, in parallel pieces, verify, mark complete.

The file is stored as the cache stores everything, as extents of ``cache.max_extent`` bytes
(4 MiB) each published by rename with its own adler32. Pieces an earlier run already stored are
not fetched again (resume after Ctrl-C or kill -9). When every byte is there, the whole file's
adler32 is computed from the pieces' checksums (no second read) and compared with the catalog's
or Rucio's; only then is ``complete.ADLER32`` written. A mismatch drops the entry and fetches
the file again once; then the file fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..adler32 import adler32
from ..cache.disk import CacheWriteError, DiskTier
from ..cache.identity import Identity
from ..cache.ranges import cover, split
from ..catalogs import FileEntry
from ..client import Client
from ..errors import ChecksumMismatchError, HtpdataError, StorageError
from ..reader import ReplicaReader
from .checksum import combine_all

__all__ = ["FileResult", "stage_file"]

log = logging.getLogger("htpdata.stage")
BATCH = 1  # pieces per upstream request: files of a few pieces move in parallel streams


@dataclass
class FileResult:
    name: str
    status: str  # "staged" | "cached" | "failed"
    size: int = 0
    fetched: int = 0
    resumed: int = 0
    seconds: float = 0.0
    adler32: str | None = None
    verified: bool = False
    replica: str | None = None
    error: str | None = None
    attempts: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def stage_file(client: Client, entry: FileEntry, tier: DiskTier, *, streams: int = 4,
               retries: int = 3, backoff: float = 1.0,
               on_bytes: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None) -> FileResult:
    """Stage ``entry`` into ``tier``; never raises for a storage problem (see ``.error``)."""
    t0 = time.monotonic()
    result = FileResult(entry.name, "failed")
    resolved = None
    try:
        resolved = client.resolve(entry.name)
        size = entry.size if entry.size is not None else resolved.size
        adler = entry.adler32 or resolved.adler32
        if size is None:
            size = ReplicaReader(resolved, client.transports).size()
        result.size = size
        ident = Identity(str(resolved.name), size, adler)
        if tier.is_complete(ident.key):
            result.status, result.verified, result.adler32 = "cached", True, adler
            return result
        for attempt in range(2):  # a checksum mismatch refetches the whole file once
            result.attempts = attempt + 1
            _fetch_missing(client, resolved, ident, tier, streams, retries, backoff,
                           on_bytes, cancel, result)
            got = _whole_adler32(tier, ident)
            result.adler32 = got
            if adler is None or got == adler:
                break
            log.warning("%s: adler32 %s after staging, catalog says %s; fetching again",
                        entry.name, got, adler)
            tier.remove_entry(ident.key)
        else:
            raise ChecksumMismatchError(entry.name, adler or "?", got, "after staging twice")
        tier.mark_complete(ident.key, result.adler32 or "")
        result.verified = adler is not None
        result.status = "staged"
    except HtpdataError as exc:
        result.error = str(exc)
    except CacheWriteError as exc:
        result.error = f"cannot write to the {tier.name} tier: {exc}"
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.monotonic() - t0
        if resolved is not None:
            _release(client, resolved)
    return result


def _release(client: Client, resolved: object) -> None:
    """Let the transports close what they hold open for a file that is done (XRootD: its
    handles, closed in the background), so open-ahead finds room for the next files."""
    for rep in getattr(resolved, "replicas", ()):
        client.transports.release(rep.url)


def _fetch_missing(client: Client, resolved: object, ident: Identity, tier: DiskTier,
                   streams: int, retries: int, backoff: float,
                   on_bytes: Callable[[int], None] | None, cancel: threading.Event | None,
                   result: FileResult) -> None:
    from ..resolve import ResolvedFile

    assert isinstance(resolved, ResolvedFile)
    max_extent = client.settings.cache.max_extent
    have = list(tier.extents(ident.key))
    pieces = split((0, ident.size), max_extent)
    todo = [p for p in pieces if cover(p, have) is None]
    result.resumed = ident.size - sum(e - s for s, e in todo)
    batches = [todo[i:i + BATCH] for i in range(0, len(todo), BATCH)]
    meta = {"user": client.cache.user, "group": client.cache.group,
            "dataset": client.resolver.dataset_of(resolved.name), "staged": True}

    # The pieces share one reader: one stat of the replica per file, and a failover moves them
    # all on. Once every replica has failed for some piece, the next pieces start afresh
    # (a transient error must not doom the rest of the file to wait out retries).
    shared = [ReplicaReader(resolved, client.transports)]
    shared_lock = threading.Lock()

    def current() -> ReplicaReader:
        with shared_lock:
            if shared[0].replica is None:
                shared[0] = ReplicaReader(resolved, client.transports)
            return shared[0]

    def run(batch: list[tuple[int, int]]) -> None:
        reader = current()
        for attempt in range(retries + 1):
            if cancel is not None and cancel.is_set():
                raise StorageError("interrupted", name=str(resolved.name))
            try:
                datas = reader.read_ranges(batch)
                break
            except StorageError as exc:
                if attempt == retries:
                    raise
                delay = backoff * 2 ** attempt
                log.info("%s: %s; retrying in %.1f s", resolved.name, exc, delay)
                time.sleep(delay)
                reader = ReplicaReader(resolved, client.transports)  # every replica again
        for (s, _), data in zip(batch, datas, strict=True):
            tier.write_extent(ident, s, data, meta)
            result.fetched += len(data)
            if on_bytes is not None:
                on_bytes(len(data))
        if reader.replica is not None:
            result.replica = reader.replica.url

    if not batches:
        return
    if len(batches) == 1:  # small files: no thread pool per file
        run(batches[0])
        return
    with ThreadPoolExecutor(max(1, min(streams, len(batches))),
                            thread_name_prefix="htpdata-stage") as pool:
        for fut in [pool.submit(run, b) for b in batches]:
            fut.result()


def _whole_adler32(tier: DiskTier, ident: Identity) -> str:
    """The file's adler32 from its extents' names (reading only extents used in part)."""
    extents = tier.extents(ident.key)
    pieces = cover((0, ident.size), list(extents))
    if pieces is None:
        raise StorageError("the staged file has holes (extents vanished while staging)",
                           name=ident.name)
    parts: list[tuple[int, int]] = []
    for p in pieces:
        if (p.start, p.end) == p.extent:
            parts.append((int(extents[p.extent], 16), p.end - p.start))
            continue
        data = tier.read_extent(ident.key, p.extent, extents[p.extent])
        if data is None:
            raise StorageError("a staged extent is corrupt", name=ident.name)
        chunk = data[p.start - p.extent[0]:p.end - p.extent[0]]
        parts.append((adler32(chunk), len(chunk)))
    return f"{combine_all(parts):08x}"
