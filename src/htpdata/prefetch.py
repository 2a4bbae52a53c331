"""The next file's bytes already here: prefetch of a dataset's next files.

While an analysis reads file *i* of a catalog dataset, :class:`Prefetcher` fetches in the
background what it will read of the next ``cache.prefetch_files`` files: the baskets of the
branches it has read of file *i* so far, located through each next file's own metadata (its
header, keys and TTree, read through the cache like any bytes). Everything goes through a
:class:`~htpdata.cache.CachedReader` of the next file, with that file's own identity, so
prefetched bytes are verified, stored and shared exactly like read ones and can never be
served for another content. Its upstream requests use the background budget
(:mod:`htpdata.cache.budget`): sent only while no foreground request is in flight, at most
``cache.prefetch_concurrency`` at once, at most ``cache.prefetch_bytes`` per file. It stops
when the client closes, at the interpreter's exit, and when the analysis made no read for
``cache.prefetch_idle`` seconds; a process killed mid-prefetch leaves the cache as consistent
as any killed reader does (packs are published whole or not at all).

Which branches were read is told by the byte ranges the reader served: a branch was read if
one of its baskets was (:func:`touched`, pure). uproot is used only through its public API
(``uproot.open``, ``TBranch.member("fBasketSeek")``, ``num_baskets``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cache.budget import Cancelled
from .cache.plan import intersect
from .cache.ranges import Range, merge, split, subtract

if TYPE_CHECKING:
    from .cache import CachedReader
    from .client import Client
    from .config import CacheSettings

__all__ = ["Prefetcher", "baskets_of", "chunks", "touched"]

log = logging.getLogger("htpdata.prefetch")
_START_AFTER = 4
"""Reads of a file before its next file is prefetched (open: head, keys, tree; then data)."""
_prefetchers: weakref.WeakSet[Prefetcher] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for p in list(_prefetchers):
        p.stop()


# -- pure ----------------------------------------------------------------------------------------
def touched(baskets: Mapping[str, Sequence[Range]], read: Sequence[Range]) -> list[str]:
    """The branches (names, in ``baskets``' order) one of whose baskets overlaps ``read``."""
    got = merge(read)
    return [name for name, rs in baskets.items() if rs and intersect(merge(rs), got)]


def chunks(ranges: Iterable[Range], max_bytes: int, per_request: int) -> list[list[Range]]:
    """``ranges`` in file order, cut to ``max_bytes`` in all, in requests of at most
    ``per_request`` bytes each."""
    out: list[list[Range]] = []
    size = 0
    left = max_bytes
    pieces = [p for r in merge(ranges) for p in split(r, max(1, per_request))]
    for s, e in pieces:
        if left <= 0:
            break
        e = min(e, s + left)
        left -= e - s
        if not out or size + (e - s) > per_request:
            out.append([])
            size = 0
        out[-1].append((s, e))
        size += e - s
    return out


# -- uproot --------------------------------------------------------------------------------------
class ReaderFile:
    """A read-only, seekable file over a :class:`~htpdata.io.FileReader` that reads exactly
    what is asked (no read-ahead): what uproot opens for the prefetch."""

    def __init__(self, reader: CachedReader) -> None:
        self.reader = reader
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        size = self.reader.size()
        end = size if n is None or n < 0 else min(size, self.pos + n)
        data = self.reader.read(self.pos, end) if end > self.pos else b""
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.reader.size()}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


def baskets_of(reader: CachedReader, only: Mapping[str, Sequence[str]] | None = None
               ) -> dict[str, dict[str, list[Range]]]:
    """``{tree: {branch: basket ranges}}`` of the file's top-level TTrees (only the trees and
    branches in ``only``, when given), located through its metadata."""
    import uproot

    out: dict[str, dict[str, list[Range]]] = {}
    with uproot.open(ReaderFile(reader)) as f:
        for key, cls in f.classnames(recursive=False).items():
            tree_name = key.split(";")[0]
            if cls != "TTree" or tree_name in out or (only is not None and tree_name not in only):
                continue
            tree = f[tree_name]
            wanted = set(only[tree_name]) if only is not None else None
            branches: dict[str, list[Range]] = {}
            for b in tree.itervalues(recursive=True):
                if wanted is not None and b.name not in wanted:
                    continue
                n = b.num_baskets
                seeks, sizes = b.member("fBasketSeek"), b.member("fBasketBytes")
                branches[b.name] = [(int(seeks[k]), int(seeks[k]) + int(sizes[k]))
                                    for k in range(n) if int(seeks[k]) > 0 and int(sizes[k]) > 0]
            out[tree_name] = branches
    return out


# -- the prefetcher ------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the analysis read of one file."""

    dataset: str
    ranges: list[Range] = field(default_factory=list)
    reads: int = 0
    started: bool = False


class Prefetcher:
    """One client's next-file prefetch (see the module docstring)."""

    def __init__(self, client: Client, settings: CacheSettings) -> None:
        self.client = client
        self.files = settings.prefetch_files
        self.max_bytes = int(settings.prefetch_bytes)
        self.per_request = int(settings.max_extent)
        self.idle = float(settings.prefetch_idle)
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._order: dict[str, list[str]] = {}
        self._done: set[str] = set()
        self._baskets: dict[str, dict[str, dict[str, list[Range]]]] = {}
        """The basket ranges of the last few files located (each TTree is parsed once: a
        prefetched file's are used again when the analysis reads it)."""
        self._pool: ThreadPoolExecutor | None = None
        self.prefetched: dict[str, int] = {}
        """Bytes asked per prefetched file (for tests and benchmarks)."""
        _prefetchers.add(self)

    def attach(self, reader: CachedReader, dataset: str | None) -> None:
        """Watch a foreground reader of a dataset's file."""
        if dataset is None or self.files <= 0:
            return
        with self._lock:
            self._seen.setdefault(reader.name, _Seen(dataset))
            while len(self._seen) > 16:  # a long analysis: only the files being read matter
                self._seen.pop(next(iter(self._seen)))
        reader.observer = self.observe

    def observe(self, reader: CachedReader, ranges: list[Range]) -> None:
        with self._lock:
            seen = self._seen.get(reader.name)
            if seen is None:
                return
            seen.ranges = merge(seen.ranges + ranges)
            seen.reads += 1
            if seen.started or seen.reads < _START_AFTER or self.cancel.is_set():
                return
            seen.started = True
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="htpdata-prefetch")
            pool = self._pool
        pool.submit(self._guarded, reader, seen)

    def stop(self) -> None:
        """Cancel what is queued or running (requests in flight finish; nothing new starts)."""
        self.cancel.set()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.cancel = threading.Event()  # usable again (the client reconnects)

    # -- the work --------------------------------------------------------------------------
    def _next_files(self, dataset: str, name: str) -> list[str]:
        with self._lock:
            order = self._order.get(dataset)
        if order is None:
            order = [f.name for f in self.client.files(dataset)]
            with self._lock:
                self._order[dataset] = order
        if name not in order:
            return []
        i = order.index(name)
        return order[i + 1:i + 1 + self.files]

    def _guarded(self, reader: CachedReader, seen: _Seen) -> None:
        try:
            self._prefetch(reader, seen)
        except Cancelled:
            log.debug("prefetch after %s cancelled", reader.name)
        except Exception as exc:  # prefetch never breaks a read
            log.info("prefetch after %s stopped: %s", reader.name, exc)

    def _alive(self) -> None:
        """Cancel when the client stopped, or the analysis made no read for ``idle`` s."""
        budget = self.client.cache.budget
        if self.cancel.is_set() or time.monotonic() - budget.last_foreground > self.idle:
            raise Cancelled()

    def _prefetch(self, source: CachedReader, seen: _Seen) -> None:
        time.sleep(0.2)  # let the first data read of the file finish: its branches are known
        targets = [t for t in self._next_files(seen.dataset, source.name)
                   if t not in self._done]
        if not targets:
            return
        with self._lock:
            read = list(seen.ranges)
        self._alive()
        mine = self._located(source.name)
        wanted = {tree: touched(br, read) for tree, br in mine.items()}
        wanted = {t: b for t, b in wanted.items() if b}
        if not wanted:
            return
        for target in targets:
            with self._lock:
                if target in self._done:
                    continue
                self._done.add(target)
            self._alive()
            reader = self._background(target)
            located = self._located(target, reader)
            ranges = [r for tree, names in wanted.items() for b in names
                      for r in located.get(tree, {}).get(b, [])]
            todo = chunks(subtract(ranges, []), self.max_bytes, self.per_request)
            log.debug("prefetch %s: %d branches, %d requests", target,
                      sum(len(b) for b in wanted.values()), len(todo))
            for batch in todo:
                self._alive()
                reader.read_ranges(batch)
                with self._lock:
                    self.prefetched[target] = self.prefetched.get(target, 0) + sum(
                        e - s for s, e in batch)

    def _located(self, name: str, reader: CachedReader | None = None
                 ) -> dict[str, dict[str, list[Range]]]:
        with self._lock:
            got = self._baskets.get(name)
        if got is None:
            got = baskets_of(reader or self._background(name))
            with self._lock:
                self._baskets[name] = got
                while len(self._baskets) > 4:
                    self._baskets.pop(next(iter(self._baskets)))
        return got

    def _background(self, name: str) -> CachedReader:
        from .cache import CachedReader

        reader = self.client.reader(name, prefetch=False)
        if not isinstance(reader, CachedReader):
            raise Cancelled()
        reader.background = self.cancel
        return reader
