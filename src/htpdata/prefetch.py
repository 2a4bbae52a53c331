"""The next file's bytes already here: prefetch of a dataset's next files.

While an analysis reads file *i* of a catalog dataset, :class:`Prefetcher` fetches in the
background what it will read of the next ``cache.prefetch_files`` files: first what opening
them reads (header, keys, streamers, TTree records: :func:`warm_metadata`, no parse), then the
baskets of the branches it has read of file *i* so far, located through each next file's own
metadata. The TTree parse that locates them runs in a helper process
(:class:`~htpdata.locator.Locator`: in a thread it would hold the GIL against the analysis); a
file the analysis opens before its baskets are located is left to its reads, and after
``_LATE`` such files in a row (or with ``cache.prefetch_baskets = false``) only metadata is
prefetched. Everything goes through a
:class:`~htpdata.cache.CachedReader` of the next file, with that file's own identity, so
prefetched bytes are verified, stored and shared exactly like read ones and can never be
served for another content. Its upstream requests use the background budget
(:mod:`htpdata.cache.budget`): sent only while no foreground request is in flight, at most
``cache.prefetch_concurrency`` at once, at most ``cache.prefetch_bytes`` per file; baskets are
only warmed (:meth:`~htpdata.cache.CachedReader.warm`: what no tier holds and nobody is
fetching, never waited for); a next file another reader began (bytes held, or claimed) is left
to it. A foreground read that needs bytes a prefetch request is fetching is handed them from
memory when they land (:data:`htpdata.cache.reader.FLIGHTS`). It stops
when the client closes, at the interpreter's exit, and when the analysis made no read for
``cache.prefetch_idle`` seconds; a process killed mid-prefetch leaves the cache as consistent
as any killed reader does (packs are published whole or not at all).

What was read is told by the byte ranges the reader served: the baskets of file *i* those
ranges cover whole (:func:`read_baskets`, pure). uproot coalesces reads across gaps of up to
32 KiB, so a small basket of a branch the analysis does not read may be covered too; such a
branch is taken only in the baskets it was covered in, never whole (:func:`to_fetch`), so the
next file's prefetch asks what its reads will ask. uproot is used only through its public API
(``uproot.open``, ``TBranch.member("fBasketSeek")``, ``num_baskets``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cache.budget import Cancelled
from .cache.plan import intersect
from .cache.ranges import Range, merge, split, subtract
from .cache.rootfile import HEAD_GUESS, KeyExtent, NotRoot, RootLayout, parse_keys, parse_layout
from .locator import LocateFailed, Locator, baskets_in

if TYPE_CHECKING:
    from .cache import CachedReader
    from .client import Client
    from .config import CacheSettings

__all__ = ["Prefetcher", "baskets_of", "chunks", "metadata_chunks", "read_baskets", "to_fetch",
           "touched", "warm_metadata"]

log = logging.getLogger("htpdata.prefetch")
_START_AFTER = 4
"""Reads of a file before its next file is prefetched (open: head, keys, tree; then data)."""
_SETTLE = 0.1
"""Seconds without a foreground request after which a file's first data read is over."""
_FIRST_DATA = 1.0
"""Seconds the prefetch waits for a read of file *i* that covers one of its baskets."""
_LATE = 3
"""Files in a row whose baskets were located after the analysis opened them, after which only
metadata is prefetched."""
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


def read_baskets(baskets: Mapping[str, Sequence[Range]], read: Sequence[Range]
                 ) -> dict[str, list[int]]:
    """For each branch (in ``baskets``' order) some of whose baskets ``read`` covers whole:
    the indices of those baskets."""
    got = merge(read)
    out: dict[str, list[int]] = {}
    for name, rs in baskets.items():
        ks = [k for k, r in enumerate(rs) if r[1] > r[0] and not subtract([r], got)]
        if ks:
            out[name] = ks
    return out


def to_fetch(read: Mapping[str, Sequence[int]], source: Mapping[str, Sequence[Range]],
             target: Mapping[str, Sequence[Range]]) -> list[Range]:
    """What to fetch of the next file (its baskets ``target``) for the baskets ``read`` of a
    file (its baskets ``source``): every basket of a branch read whole, and of a branch read
    in part the baskets of the same indices."""
    out: list[Range] = []
    for name, ks in read.items():
        there = target.get(name)
        if not there:
            continue
        if len(ks) >= len(source.get(name, ())):
            out += there
        else:
            out += [there[k] for k in ks if k < len(there)]
    return out


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
    branches in ``only``, when given), located through its metadata, parsed in this process
    (the prefetcher parses in a helper process: :mod:`htpdata.locator`)."""
    return baskets_in(ReaderFile(reader), only)


def _metadata(reader: CachedReader, cancel: threading.Event | None
              ) -> tuple[dict[int, bytes], RootLayout, list[KeyExtent]] | bool:
    """Read the header and the keys list: ``({start: bytes}, layout, keys)``; False for a
    file that is no ROOT file, True when cancelled."""
    def go_on() -> bool:
        return cancel is None or not cancel.is_set()

    size = reader.size()
    want = HEAD_GUESS
    while True:  # the header, then as much more as it says it needs (once or twice)
        if not go_on():
            return True
        head = reader.read(0, min(want, size))
        try:
            layout = parse_layout(head, size)
        except NotRoot:
            return False
        if isinstance(layout, RootLayout):
            break
        if layout <= len(head) or len(head) >= size or layout > 1 << 20:
            return False
        want = layout
    if not go_on():
        return True
    keys = reader.read(layout.seek_keys, layout.seek_keys + layout.nbytes_keys)
    try:
        parsed = parse_keys(keys, layout)
    except NotRoot:
        return False
    return {0: head, layout.seek_keys: keys}, layout, parsed


def warm_metadata(reader: CachedReader, objects: Iterable[str] = (),
                  cancel: threading.Event | None = None, *, trees: bool = False) -> bool:
    """Fetch into the tiers what every opener of the ROOT file reads before its data: the
    header, the keys list and the streamer info, and the records of the top-level ``objects``
    named (such as the TTree an analysis opens; every top-level TTree with ``trees``), which
    is all coffea's ``preprocess`` reads of it. Three round trips (the header says where the
    keys are, the keys where the objects are); what a tier holds is not fetched again.
    ``cancel`` set: stop before the next one. False for a file that is no ROOT file (nothing
    more is read of it), else True."""
    got = _metadata(reader, cancel)
    if isinstance(got, bool):
        return got
    _, _, keys = got
    wanted = {o.split(";")[0].strip("/") for o in objects}
    records = [k.range for k in keys if k.name in wanted or (trees and k.classname == "TTree")]
    if records and (cancel is None or not cancel.is_set()):
        reader.warm(records)
    return True


def metadata_chunks(reader: CachedReader, cancel: threading.Event | None = None
                    ) -> dict[int, bytes] | None:
    """What uproot reads to open the file's top-level TTrees, read through the tiers as
    ``{start: bytes}``: the header, the keys list, the streamer info and the trees' records.
    None for a file that is no ROOT file; :class:`Cancelled` when ``cancel`` is set."""
    got = _metadata(reader, cancel)
    if got is True:
        raise Cancelled()
    if got is False:
        return None
    chunks, layout, keys = got
    ranges = [(layout.seek_info, layout.seek_info + layout.nbytes_info)]
    ranges += [k.range for k in keys if k.classname == "TTree"]
    ranges = [(s, e) for s, e in ranges if e > s]
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    for (start, _), data in zip(ranges, reader.read_ranges(ranges), strict=True):
        chunks[start] = data
    return chunks


# -- the prefetcher ------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the analysis read of one file."""

    dataset: str
    ranges: list[Range] = field(default_factory=list)
    reads: int = 0
    started: bool = False
    covered: bool = False
    """A read of it covered a basket (what the analysis reads is known from it)."""
    grew: threading.Event = field(default_factory=threading.Event)
    """Set at each read (the prefetch waits for the first that covers a basket)."""


class Prefetcher:
    """One client's next-file prefetch (see the module docstring)."""

    def __init__(self, client: Client, settings: CacheSettings) -> None:
        self.client = client
        self.files = settings.prefetch_files
        self.max_bytes = int(settings.prefetch_bytes)
        self.per_request = int(settings.max_extent)
        self.idle = float(settings.prefetch_idle)
        self.concurrency = int(settings.prefetch_concurrency)
        self.baskets = bool(settings.prefetch_baskets)
        """Baskets prefetched too (off by the setting, or when they come too late)."""
        self._late_run = 0
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._order: dict[str, list[str]] = {}
        self._done: set[str] = set()
        self._baskets: dict[str, dict[str, dict[str, list[Range]]]] = {}
        """The basket ranges of the last few files located (each TTree is parsed once: a
        prefetched file's are used again when the analysis reads it)."""
        self._pool: ThreadPoolExecutor | None = None
        self._locator = Locator()
        self._warmed: set[str] = set()
        """Next files whose metadata was fetched ahead (or is being)."""
        self._elsewhere: dict[str, bool] = {}
        """Next files found begun by another reader (or not) before this one touched them."""
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
            seen.grew.set()
            if seen.started or self.cancel.is_set():
                return
            prev = self._previous(seen.dataset, reader.name)
            if prev is None and seen.reads < _START_AFTER:
                return
            seen.started = True
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1 + max(1, min(self.files, self.concurrency)),
                                                thread_name_prefix="htpdata-prefetch")
            pool = self._pool
        pool.submit(self._guarded, self._schedule, reader, seen, prev)

    def _previous(self, dataset: str, name: str) -> tuple[str, _Seen] | None:
        """The file of ``dataset`` this process read baskets of last, other than ``name`` (what
        the analysis read of it is what it will read of the next files). Under the lock."""
        for other, seen in reversed(self._seen.items()):
            if other != name and seen.dataset == dataset and seen.covered:
                return other, seen
        return None

    def stop(self) -> None:
        """Cancel what is queued or running (requests in flight finish; nothing new starts)."""
        self.cancel.set()
        with self._lock:
            pool, self._pool = self._pool, None
        self._locator.close()  # a parse under way ends now
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

    def _guarded(self, job: Callable[..., None], about: CachedReader | str, *args: Any
                 ) -> None:
        name = about if isinstance(about, str) else about.name
        try:
            job(about, *args)
        except Cancelled:
            log.debug("prefetch of %s cancelled", name)
        except Exception as exc:  # prefetch never breaks a read
            log.info("prefetch of %s stopped: %s", name, exc)

    def _alive(self) -> None:
        """Cancel when the client stopped, or the analysis made no read for ``idle`` s."""
        budget = self.client.cache.budget
        if self.cancel.is_set() or time.monotonic() - budget.last_foreground > self.idle:
            raise Cancelled()

    def _wanted(self, source: CachedReader, seen: _Seen, prev: tuple[str, _Seen] | None
                ) -> tuple[dict[str, dict[str, list[Range]]], dict[str, dict[str, list[int]]]]:
        """The baskets of the file the analysis read and those of them it read: ``prev``'s,
        else ``source``'s (waited for)."""
        if prev is not None:
            self._alive()
            mine = self._located(prev[0])
            with self._lock:
                read = list(prev[1].ranges)
            got = {tree: got for tree, br in mine.items() if (got := read_baskets(br, read))}
            if got:
                return mine, got
        return self._read_of(source, seen)

    def _read_of(self, source: CachedReader, seen: _Seen
                 ) -> tuple[dict[str, dict[str, list[Range]]], dict[str, dict[str, list[int]]]]:
        """File *i*'s baskets and those of them its reads covered, once a read covered one
        and the foreground's requests in flight have landed (so all of its first data read
        is counted); empty if none is read within ``_FIRST_DATA`` s."""
        mine = self._located(source.name)
        deadline = time.monotonic() + _FIRST_DATA
        while True:
            self._alive()
            with self._lock:
                seen.grew.clear()
                read = list(seen.ranges)
            got = {tree: read_baskets(br, read) for tree, br in mine.items()}
            got = {t: b for t, b in got.items() if b}
            budget = self.client.cache.budget
            if got and budget.in_flight()[0] == 0 and (
                    time.monotonic() - budget.last_foreground >= _SETTLE):
                return mine, got
            if time.monotonic() > deadline:
                return mine, got
            seen.grew.wait(0.02 if got else 0.1)

    def _schedule(self, source: CachedReader, seen: _Seen,
                  prev: tuple[str, _Seen] | None) -> None:
        """What the analysis read: of the file it read before (``prev``), else of ``source``
        once a read of it covered a basket; then one job per next file not prefetched yet
        (they run side by side, one pool thread each). Nothing read (a metadata-only open,
        such as coffea's preprocess): a later read of ``source`` starts this again."""
        targets = [t for t in self._next_files(seen.dataset, source.name)
                   if t not in self._done]
        if not targets:
            return
        # A next file another reader began (another worker's, or opened by coffea's
        # preprocess) is left to it: nothing is parsed or fetched for it here.
        targets = [t for t in targets if not self._begun_elsewhere(t)]
        for target in targets:  # first their metadata: three small reads, no parse
            with self._lock:
                if target in self._warmed or self._pool is None:
                    continue
                self._warmed.add(target)
                pool = self._pool
            pool.submit(self._guarded, self._warm, target)
        if not targets or not self.baskets:
            if not targets:
                with self._lock:
                    seen.started = False
            return
        self._locator.start()  # its interpreter starts while file i's first data read runs
        if not targets:
            with self._lock:
                seen.started = False
            return
        mine, wanted = self._wanted(source, seen, prev)
        with self._lock:
            if not wanted:
                seen.started = False
                return
            if prev is None:
                seen.covered = True
        for target in targets:
            with self._lock:
                if target in self._done or self._pool is None:
                    continue
                self._done.add(target)
                pool = self._pool
            pool.submit(self._guarded, self._prefetch, target, mine, wanted)

    def _begun(self, name: str) -> bool:
        """Has the analysis opened ``name``? (Its baskets are then fetched by its reads: a
        prefetch of them would only compete, so a late one is dropped.)"""
        with self._lock:
            return name in self._seen

    def _late(self, name: str, located: bool) -> bool:
        """Has the analysis opened ``name`` before its baskets were located? Then they are
        fetched by its reads and a prefetch would only compete: it is dropped. After
        ``_LATE`` such files in a row (the helper cannot keep up: no core to spare) baskets
        are no longer prefetched, only metadata, and the helper is stopped."""
        with self._lock:
            if name not in self._seen:
                if located:  # in time
                    self._late_run = 0
                return False
            self._late_run += 1
            if self._late_run < _LATE or not self.baskets:
                return True
            self.baskets = False
        log.info("prefetch: baskets located too late for %d files in a row; metadata only "
                 "from now on", _LATE)
        self._locator.close()
        return True

    def _begun_elsewhere(self, name: str) -> bool:
        """Did another reader begin ``name`` before this prefetcher touched it? (Asked once:
        the metadata fetched ahead makes it touched.)"""
        with self._lock:
            known = self._elsewhere.get(name)
        if known is None:
            known = self._background(name).touched()
            with self._lock:
                known = self._elsewhere.setdefault(name, known)
                while len(self._elsewhere) > 64:
                    self._elsewhere.pop(next(iter(self._elsewhere)))
        return known

    def _warm(self, name: str) -> None:
        """Fetch ahead what an open of the next file's trees reads: its header, keys list,
        streamer info and top-level TTrees' records (:func:`warm_metadata`)."""
        self._alive()
        warm_metadata(self._background(name), cancel=self.cancel, trees=True)

    def _prefetch(self, name: str, mine: dict[str, dict[str, list[Range]]],
                  wanted: dict[str, dict[str, list[int]]]) -> None:
        """Prefetch one next file: locate it (its own metadata), then warm the baskets that
        match those ``wanted`` of the file read (whose baskets are ``mine``)."""
        self._alive()
        if self._late(name, located=False):
            return
        reader = self._background(name)
        located = self._located(name, reader)
        if self._late(name, located=True):
            return
        ranges = [r for tree, read in wanted.items()
                  for r in to_fetch(read, mine.get(tree, {}), located.get(tree, {}))]
        todo = chunks(ranges, self.max_bytes, self.per_request)
        log.debug("prefetch %s: %d branches, %d requests", name,
                  sum(len(b) for b in wanted.values()), len(todo))
        for batch in todo:
            self._alive()
            if self._begun(name):
                return
            reader.warm(batch)
            with self._lock:
                self.prefetched[name] = self.prefetched.get(name, 0) + sum(
                    e - s for s, e in batch)

    def _located(self, name: str, reader: CachedReader | None = None
                 ) -> dict[str, dict[str, list[Range]]]:
        with self._lock:
            got = self._baskets.get(name)
        if got is None:
            got = self._locate(reader or self._background(name))
            with self._lock:
                self._baskets[name] = got
                while len(self._baskets) > 4 + 2 * self.files:
                    self._baskets.pop(next(iter(self._baskets)))
        return got

    def _locate(self, reader: CachedReader) -> dict[str, dict[str, list[Range]]]:
        """The file's baskets, parsed in the helper process from its metadata read here."""
        self._alive()
        chunks = metadata_chunks(reader, self.cancel)
        if chunks is None:
            return {}
        self._alive()
        try:
            return self._locator.locate(reader.size(), chunks, reader.read)
        except LocateFailed as exc:
            if self.cancel.is_set():
                raise Cancelled() from None
            log.info("prefetch cannot locate the baskets of %s: %s", reader.name, exc)
            return {}

    def _background(self, name: str) -> CachedReader:
        from .cache import CachedReader

        reader = self.client.reader(name, prefetch=False)
        if not isinstance(reader, CachedReader):
            raise Cancelled()
        reader.background = self.cancel
        return reader
