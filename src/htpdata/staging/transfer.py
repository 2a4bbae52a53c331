"""Move whole files into a tier: pieces from many files in flight at once, each verified.

A file is fetched in pieces of ``cache.max_extent`` bytes (4 MiB) and written, as they arrive,
into one pack in the cache (:class:`~htpdata.cache.whole.StagedFile`); pieces an earlier run
already wrote are not fetched again (resume after Ctrl-C or kill -9). When every byte is there,
the whole file's adler32 is combined from the pieces' block checksums (no second read) and
compared with the catalog's or Rucio's; only then is the pack published, marked complete. A
mismatch throws the bytes away and fetches the file again once; then the file fails.

:func:`transfer` keeps ``jobs x streams`` piece reads in flight over all files, at most
``streams`` of them from one file, taking pieces in file order. Files are opened ahead (up to
``2 x jobs`` started and unfinished): when the last piece of a file is on its way, the next
file's are already waiting, so no read slot idles for an open or for a file's short tail.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..cache.identity import Identity
from ..cache.ranges import Range
from ..cache.tier import DiskTier
from ..cache.whole import StagedFile
from ..catalogs import FileEntry
from ..client import Client
from ..errors import (
    CacheWriteError,
    ChecksumMismatchError,
    HtpdataError,
    ReplicasExhaustedError,
    StorageError,
)
from ..reader import ReplicaReader
from ..replicas import ResolvedFile

__all__ = ["FileResult", "stage_file", "transfer"]

log = logging.getLogger("htpdata.stage")
_GRACE = 2.0  # seconds reads in flight may take to land after Ctrl-C
# What a retry cannot mend: the file is not there, we may not read it, it is a folder.
_FINAL = (FileNotFoundError, PermissionError, IsADirectoryError)


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


def _problem(exc: Exception, tier: DiskTier) -> str | None:
    """The one-line reason a file failed (the caller names the file), or None for an exception
    that is a bug."""
    if isinstance(exc, ReplicasExhaustedError):
        what = ("not found" if isinstance(exc, FileNotFoundError) else
                "permission denied" if isinstance(exc, PermissionError) else
                f"all {len(exc.attempts)} replica(s) failed")
        return f"{what} [{'; '.join(a.describe() for a in exc.attempts)}]"
    if isinstance(exc, HtpdataError):
        return str(exc)
    if isinstance(exc, CacheWriteError):
        return f"cannot write to the {tier.name} tier: {exc}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    return None


class _File:
    """One file on its way into the tier. ``start`` and ``finish`` run on helper threads,
    ``fetch`` on read threads; only the dispatcher touches ``pending`` and ``inflight``."""

    def __init__(self, index: int, client: Client, entry: FileEntry, tier: DiskTier,
                 retries: int, backoff: float, cancel: threading.Event,
                 dataset: str | None = None) -> None:
        self.index = index
        self.dataset = dataset
        self.dataset_name: str | None = dataset
        self.client = client
        self.entry = entry
        self.tier = tier
        self.retries = retries
        self.backoff = backoff
        self.cancel = cancel
        self.result = FileResult(entry.name, "failed")
        self.t0 = 0.0
        self.resolved: ResolvedFile | None = None
        self.ident: Identity | None = None
        self.adler: str | None = None
        self.staged: StagedFile | None = None
        self.pending: deque[Range] = deque()
        self.inflight = 0
        self.ready = False  # started; its pieces may be dispatched
        self.done = False  # nothing more to do (cached, failed before fetching, or finished)
        self.site = self._site()
        self._reader: ReplicaReader | None = None
        self._reader_lock = threading.Lock()

    # -- helper threads ----------------------------------------------------------------------
    def start(self) -> None:
        """Resolve, skip if complete, list what an earlier run left, open the first replica.
        Raises what fails the file (the dispatcher reports it)."""
        self.t0 = time.monotonic()
        r = self.result
        self.resolved = resolved = self.client.resolve(self.entry.name)
        size = self.entry.size if self.entry.size is not None else resolved.size
        self.adler = self.entry.adler32 or resolved.adler32
        if size is None:
            size = ReplicaReader(resolved, self.client.transports).size()
        r.size = size
        self.ident = ident = Identity(str(resolved.name), size, self.adler)
        if self.tier.complete(ident):
            r.status, r.verified, r.adler32 = "cached", True, self.adler
            self.done = True
            return
        # The dataset the user staged by name; a file's catalog dataset only when staged alone.
        self.dataset_name = self.dataset or self.client.resolver.dataset_of(resolved.name)
        info = {"dataset": self.dataset_name, "created": time.time()}
        private = self.client.cache.private(resolved, self.client.transports)
        self.staged = StagedFile(self.tier, ident, info, private=private,
                                 piece=self.client.settings.cache.max_extent)
        todo = self.staged.open()
        self.result.attempts += 1
        if not todo and self.tier.complete(ident):  # another process staged it meanwhile
            r.status, r.verified, r.adler32 = "cached", True, self.adler
            self.done = True
            return
        self.result.resumed = self.staged.resumed
        self.pending = deque(todo)
        if self.pending:
            # Open now (XRootD keeps the handle), so the first piece costs no open; a replica
            # that cannot be opened is failed over here.
            self._current().prepare()

    def finish(self) -> None:
        """Every byte is there: check the whole file's adler32, then mark it complete (or
        plan a second fetch of the whole file after a first mismatch). Raises what fails it."""
        assert self.ident is not None
        assert self.staged is not None
        r = self.result
        if self.staged.missing():
            raise StorageError("the staged file has holes (pieces missing)", name=self.entry.name)
        got = self.staged.adler32()
        r.adler32 = got
        if self.adler is not None and got != self.adler:
            self.staged.drop()
            if r.attempts >= 2:
                raise ChecksumMismatchError(self.entry.name, self.adler, got,
                                            "after staging twice")
            log.warning("%s: adler32 %s after staging, catalog says %s; fetching again",
                        self.entry.name, got, self.adler)
            r.attempts += 1
            self.pending = deque(self.staged.restart())
            return
        self.staged.finish()
        r.verified = self.adler is not None
        r.status = "staged"
        self.done = True

    # -- read threads --------------------------------------------------------------------------
    def _current(self) -> ReplicaReader:
        """The file's pieces share one reader: one stat of the replica per file, and a
        failover moves them all on. Once every replica has failed for some piece, the next
        pieces start afresh (a transient error must not doom the rest of the file)."""
        assert self.resolved is not None
        with self._reader_lock:
            if self._reader is None or self._reader.replica is None:
                self._reader = ReplicaReader(self.resolved, self.client.transports)
            return self._reader

    def fetch(self, piece: Range, on_bytes: Callable[[int], None] | None) -> int:
        """Read one piece (with retries and failover) and store it; bytes stored. Raises
        HtpdataError or OSError when the file cannot go on."""
        assert self.resolved is not None
        assert self.ident is not None
        reader = self._current()
        for attempt in range(self.retries + 1):
            if self.cancel.is_set():
                raise StorageError("interrupted", name=str(self.resolved.name))
            try:
                (data,) = reader.read_ranges([piece])
                break
            except StorageError as exc:
                if attempt == self.retries or isinstance(exc, _FINAL):
                    raise
                delay = self.backoff * 2 ** attempt
                log.info("%s: %s; retrying in %.1f s", self.resolved.name, exc, delay)
                time.sleep(delay)
                reader = ReplicaReader(self.resolved, self.client.transports)  # all again
        assert self.staged is not None
        self.staged.write(piece[0], data)
        rep = reader.replica
        if rep is not None:
            self.result.replica = rep.url
        # Staged bytes count in the traffic figures (as "staged": fetched, not read).
        journal = self.tier.journal()
        if journal is not None:
            journal.count(self.ident.name_key, {"name": str(self.resolved.name),
                                                "dataset": self.dataset_name,
                                                "site": rep.site if rep else None},
                          staged=len(data), inserted=len(data), requests=1)
        if on_bytes is not None:
            on_bytes(len(data))
        return len(data)

    def release(self) -> None:
        """Let the transports close what they hold open for this file (XRootD: its handles,
        in the background), so opening ahead finds room for the next files."""
        for rep in self.resolved.replicas if self.resolved is not None else ():
            self.client.transports.release(rep)
        if self.staged is not None:
            self.staged.close()

    def _site(self) -> str:
        try:
            return self.client.resolve(self.entry.name).replicas[0].site
        except (HtpdataError, IndexError):
            return "?"


def transfer(client: Client, entries: Sequence[FileEntry], tier: DiskTier, *, jobs: int = 16,
             streams: int = 4, site_limit: int | None = None, retries: int = 3,
             backoff: float = 1.0, on_bytes: Callable[[int], None] | None = None,
             on_file: Callable[[FileResult], None] | None = None,
             cancel: threading.Event | None = None,
             datasets: Mapping[str, str] | None = None) -> list[FileResult]:
    """Stage ``entries`` into ``tier``: results in the order files finish. A storage problem
    fails its file (see ``.error``), never the others; Ctrl-C is raised again at once, and no
    new piece starts (stored pieces stay, for a later run to resume from). ``datasets`` maps
    a file's name to the dataset it was staged as (what reports count it under)."""
    jobs, streams = max(1, jobs), max(1, streams)
    cancel = cancel or threading.Event()
    window = jobs * streams  # piece reads in flight over all files
    open_cap = 2 * jobs if len(entries) > 1 else 1  # files started and unfinished
    if site_limit is not None and site_limit < 1:
        raise ValueError(f"site_limit must be at least 1, got {site_limit}")
    site_cap = site_limit or open_cap
    files = [_File(i, client, e, tier, retries, backoff, cancel,
                   (datasets or {}).get(e.name)) for i, e in enumerate(entries)]
    by_site: dict[str, deque[_File]] = {}
    for f in files:
        by_site.setdefault(f.site, deque()).append(f)
    open_at: dict[str, int] = dict.fromkeys(by_site, 0)
    events: queue.SimpleQueue[tuple[str, _File, Any]] = queue.SimpleQueue()
    live: list[_File] = []  # started and unfinished, in file order
    results: list[FileResult] = []
    inflight = 0

    piece = client.settings.cache.max_extent
    pieces = sum(-(-e.size // piece) if e.size is not None else streams for e in entries)
    readers = ThreadPoolExecutor(max(1, min(window, pieces)), thread_name_prefix="htpdata-stage")
    helpers = ThreadPoolExecutor(min(jobs, len(files)) or 1,
                                 thread_name_prefix="htpdata-stage-open")

    def post(pool: ThreadPoolExecutor, kind: str, f: _File, fn: Callable[..., Any],
             *args: Any) -> None:
        def task() -> None:
            try:
                events.put((kind, f, fn(*args)))
            except BaseException as exc:  # reported to the dispatcher, which decides
                events.put((kind, f, exc))
        pool.submit(task)

    def next_file() -> _File | None:
        """The earliest file not started whose site has room."""
        best: _File | None = None
        for site, waiting in by_site.items():
            if waiting and open_at[site] < site_cap and (best is None
                                                        or waiting[0].index < best.index):
                best = waiting[0]
        return best

    def fill() -> None:
        nonlocal inflight
        for f in live:
            if inflight >= window:
                break
            while f.ready and f.pending and f.inflight < streams and inflight < window:
                piece = f.pending.popleft()
                f.inflight += 1
                inflight += 1
                post(readers, "piece", f, f.fetch, piece, on_bytes)
        while len(live) < open_cap and not cancel.is_set():
            new = next_file()
            if new is None:
                break
            by_site[new.site].popleft()
            open_at[new.site] += 1
            live.append(new)
            post(helpers, "start", new, new.start)

    def close(f: _File) -> None:
        f.result.seconds = time.monotonic() - f.t0 if f.t0 else 0.0
        f.release()
        live.remove(f)
        open_at[f.site] -= 1
        results.append(f.result)
        if on_file is not None:
            on_file(f.result)

    def settle(f: _File) -> None:
        """After an event: close the file, or verify it once its last piece is in."""
        if f.done:
            close(f)
        elif f.ready and not f.pending and f.inflight == 0:
            if f.result.error is not None:
                close(f)
            else:
                f.ready = False  # until finish has decided
                post(helpers, "finish", f, f.finish)

    try:
        while len(results) < len(files):
            fill()
            if not live:  # interrupted before these files started
                for waiting in by_site.values():
                    while waiting:
                        f = waiting.popleft()
                        f.result.error = str(StorageError("interrupted", name=f.entry.name))
                        results.append(f.result)
                        if on_file is not None:
                            on_file(f.result)
                break
            kind, f, out = events.get()
            if kind == "piece":
                f.inflight -= 1
                inflight -= 1
            if isinstance(out, BaseException):
                problem = _problem(out, tier) if isinstance(out, Exception) else None
                if problem is None:
                    raise out  # a bug, not a storage problem
                f.result.error = f.result.error or problem
                f.pending.clear()  # the file has failed: no more of its pieces
                if kind != "piece":  # a failed start or finish ends the file at once
                    f.done = True
            elif kind == "piece":
                f.result.fetched += out
            if kind == "start" or (kind == "finish" and not f.done):
                f.ready = True
            settle(f)
    except BaseException:
        # Ctrl-C: no new piece starts. Reads in flight get a moment to land (each one stored
        # is one a later run does not fetch again), but not the minutes 64 x 4 MiB can take
        # over a slow link; a piece lands whole or not at all.
        cancel.set()  # queued pieces still run, to end at once and report (counted below)
        readers.shutdown(wait=False)
        helpers.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + _GRACE
        while inflight > 0 and (left := deadline - time.monotonic()) > 0:
            try:
                kind, f, out = events.get(timeout=left)
            except queue.Empty:
                break
            inflight -= kind == "piece"
        raise
    readers.shutdown(wait=True)
    helpers.shutdown(wait=True)
    return results


def stage_file(client: Client, entry: FileEntry, tier: DiskTier, *, streams: int = 4,
               retries: int = 3, backoff: float = 1.0,
               on_bytes: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None,
               dataset: str | None = None) -> FileResult:
    """Stage one file into ``tier``; never raises for a storage problem (see ``.error``)."""
    return transfer(client, [entry], tier, jobs=1, streams=streams, retries=retries,
                    backoff=backoff, on_bytes=on_bytes, cancel=cancel,
                    datasets={entry.name: dataset} if dataset else None)[0]
