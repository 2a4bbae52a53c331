"""Reads through the tiers: one loop over memory, node-local disk and the shared volume, then
storage, with single flight.

For a batch of ranges (uproot's vector reads) :class:`CachedReader` takes what each tier holds,
copies what a lower tier had into the higher ones, and sends only the missing pieces upstream,
in one request planned by :func:`.plan.plan_fetch`. Before fetching it publishes one claim for
the batch in the tier every node shares, so when many processes miss the same bytes at once
one of them fetches and the others wait (one ``fstat`` per poll, backing off to 100-250 ms)
for its pack. Within one process the same holds without the disk: a fetch in flight is listed
in :data:`FLIGHTS` (from before its claim is published until after it is released), and
another thread of the process that needs its bytes waits on it and is handed them from memory
the moment they arrive. The caller gets its bytes as soon as they arrive; the pack is written
on the cache's writer thread, which then removes the claim. Anything the cache cannot do (a
full disk, a read-only tier, a vanished folder) degrades to an uncached read with one warning.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import Attempt, CacheWriteError, StorageError
from ..io import ReadCounters
from .budget import Budget
from .identity import Identity
from .memory import MemoryTier
from .plan import Limits, backoff, intersect, plan_fetch, yield_to_earlier
from .ranges import Range, Spans, clip, merge, subtract, total
from .rootfile import NotRoot, RootLayout, parse_layout
from .tier import DiskTier, Flight, Tier

if TYPE_CHECKING:
    from ..reader import ReplicaReader
    from ..replicas import Replica

__all__ = ["FLIGHTS", "Bounds", "CachedReader", "InFlight", "Known", "Pending", "Writer"]

log = logging.getLogger("htpdata.cache")


class Writer(Protocol):
    """Runs cache writes off the read path (the Cache's writer thread)."""

    def submit(self, job: Callable[[], None]) -> None: ...


class Bounds(Protocol):
    """The Cache's quota and eviction bookkeeping, asked before and told after each write."""

    def admits(self, tier: DiskTier) -> bool: ...

    def inserted(self, tier: DiskTier, nbytes: int) -> None: ...

    def write_failed(self, tier: DiskTier, exc: CacheWriteError) -> None: ...


@dataclass
class Known:
    """What this process learnt of bare URLs' identities (shared by its readers)."""

    max_age: float = 86400.0
    by_name: dict[str, tuple[int, str | None, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Tally:
    """Where one fetch's bytes came from: storage, the authority tier (another process's
    fetch that landed while this one planned or waited), or another thread of this process
    (handed from memory)."""

    upstream: int = 0
    landed: int = 0
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    handed: int = 0

    def add_landed(self, got: list[tuple[int, bytes]]) -> None:
        self.landed += sum(len(b) for _, b in got)
        self.pieces += got


def _covered(got: list[tuple[int, bytes]]) -> list[Range]:
    return [(s, s + len(b)) for s, b in got]


@dataclass(eq=False)
class Pending:
    """One fetch of this process in flight: the ranges it fetches, then the bytes it got."""

    key: str
    ranges: list[Range]
    landed: threading.Event = field(default_factory=threading.Event)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)

    def take(self, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        """The parts of ``ranges`` its bytes cover, as (start, bytes)."""
        out: list[tuple[int, bytes]] = []
        for s, b in self.pieces:
            e = s + len(b)
            for lo, hi in ranges:
                a, z = max(lo, s), min(hi, e)
                if a < z:
                    out.append((s, b) if (a, z) == (s, e) else (a, b[a - s:z - s]))
        return out


class InFlight:
    """This process's upstream fetches in flight, by content (identity key).

    A fetch is listed from before its claim is published until after the claim is released
    (its pack written), so a thread that sees one of this process's claims in a listing finds
    the fetch here too. A thread needing bytes a listed fetch covers waits on its event and
    takes the bytes from it: no disk polling, no waiting for the pack to be written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, list[Pending]] = {}

    def begin(self, key: str, ranges: Sequence[Range]) -> Pending:
        p = Pending(key, merge(ranges))
        with self._lock:
            self._by_key.setdefault(key, []).append(p)
        return p

    @staticmethod
    def land(p: Pending, pieces: list[tuple[int, bytes]]) -> None:
        """The fetch's bytes arrived: hand them to its waiters."""
        p.pieces = pieces
        p.landed.set()

    def end(self, p: Pending | None) -> None:
        """No longer listed (its waiters are woken, with whatever it got)."""
        if p is None:
            return
        p.landed.set()
        with self._lock:
            got = self._by_key.get(p.key)
            if got is not None:
                with contextlib.suppress(ValueError):
                    got.remove(p)
                if not got:
                    del self._by_key[p.key]

    def overlapping(self, key: str, ranges: Sequence[Range]) -> list[Pending]:
        with self._lock:
            listed = list(self._by_key.get(key, ()))
        want = merge(ranges)
        return [p for p in listed if intersect(p.ranges, want)]

    def busy(self, key: str) -> list[Range]:
        """The ranges of ``key`` that fetches of this process are fetching now."""
        with self._lock:
            return merge(r for p in self._by_key.get(key, ()) for r in p.ranges)


FLIGHTS = InFlight()
"""The fetches in flight in this process (every reader of every client shares it)."""


def _make_entry_meanwhile(flight: Flight) -> threading.Thread | None:
    """A thread making the folder of an entry that has none, while this reader's first bytes
    come from storage: the next batch's claim needs it, and its three ``mkdir`` and opens
    (round trips on a network filesystem) then cost nothing on the read's path. A failure
    is left to the claim, which meets it again and reads uncached as before."""
    if flight.entry.folder is not None or not flight.area.writable:
        return None

    def make() -> None:
        with contextlib.suppress(OSError, CacheWriteError):
            flight.area.materialize(flight.entry)

    thread = threading.Thread(target=make, name="htpdata-entry", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _no_flight() -> Iterator[None]:
    yield None


class CachedReader:
    """A :class:`~htpdata.io.FileReader` served through the tiers, then storage."""

    def __init__(self, upstream: ReplicaReader, tiers: Sequence[Tier], *, limits: Limits,
                 writer: Writer, bounds: Bounds, known: Known, private: bool,
                 dataset: str | None = None, totals: ReadCounters | None = None,
                 wait_limit: float = 65.0) -> None:
        self.upstream = upstream
        self.tiers = list(tiers)
        self.limits = limits
        self.writer = writer
        self.bounds = bounds
        self.known = known
        self.private = private
        self.dataset = dataset
        self.wait_limit = wait_limit
        self.name = upstream.name
        self.resolved = upstream.resolved
        self.counters = ReadCounters()
        self.totals = totals
        self._lock = threading.Lock()
        self._identity: Identity | None = None
        self._learnt = 0.0
        self._from_cache = False
        self._holds = 0
        self.budget: Budget | None = None
        """Upstream requests are counted in the cache's foreground budget, or wait for the
        background one when ``background`` is set (next-file prefetch)."""
        self.background: threading.Event | None = None
        """Set for a prefetch reader: the event that cancels it."""
        self.observer: Callable[[CachedReader, list[Range]], None] | None = None
        """Told of every batch of ranges this reader served (the next-file prefetch)."""
        self._first_fetch = True
        """No fetch through single flight yet (the first may go without a claim)."""
        self._layout: RootLayout | None = None
        self._layout_state = "unknown"  # "unknown", "known" (extents not yet asked), "done"

    @property
    def replica(self) -> Replica | None:
        """The replica storage reads go to (the upstream reader's)."""
        return self.upstream.replica

    @property
    def attempts(self) -> list[Attempt]:
        """The replicas that failed so far (the upstream reader's)."""
        return self.upstream.attempts

    @property
    def disks(self) -> list[DiskTier]:
        return [t for t in self.tiers if isinstance(t, DiskTier)]

    @property
    def stats(self) -> dict[str, int]:
        """The counters as a dict (older name)."""
        return self.counters.as_dict()

    # -- identity -------------------------------------------------------------------------------
    def identity(self) -> Identity:
        """Name, size and adler32: from the catalog when it knows the size; for a bare URL
        from what a tier recorded when it was fetched (no contact with storage until that is
        older than ``cache.revalidate_after``, or a read fails); else from a stat upstream."""
        with self._lock:
            if self._identity is not None:
                return self._identity
        r = self.resolved
        if r.size is not None:
            ident, learnt, cached = Identity(self.name, r.size, r.adler32), time.time(), False
        else:
            got = self._recalled()
            if got is not None:
                ident = Identity(self.name, got[0], got[1])
                learnt, cached = got[2], True
            else:
                ident = Identity(self.name, self.upstream.size(), None)
                learnt, cached = time.time(), False
                with self.known.lock:
                    self.known.by_name[self.name] = (ident.size, None, learnt)
        with self._lock:
            first = self._identity is None
            if first:
                self._identity, self._learnt, self._from_cache = ident, learnt, cached
            holds = self._holds if first else 0
        for _ in range(holds):  # holds taken before the identity was known
            for tier in self.disks:
                tier.hold(ident)
        return ident

    def _recalled(self) -> tuple[int, str | None, float] | None:
        now = time.time()
        with self.known.lock:
            got = self.known.by_name.get(self.name)
        if got is not None and now - got[2] <= self.known.max_age:
            return got
        ident = Identity(self.name, 0)
        for tier in self.disks:
            found = tier.known(self.name, ident.name_key)
            if found is not None and 0 <= now - found[2] <= self.known.max_age:
                with self.known.lock:
                    self.known.by_name[self.name] = found
                return found
        return None

    def _revalidate(self) -> bool:
        """After a failed or short read upstream for an identity recalled from the cache:
        ask storage again. True if the identity changed (the file changed at the origin)."""
        with self._lock:
            if not self._from_cache or self._identity is None:
                return False
            old = self._identity
        size = self.upstream.size()
        with self._lock:
            self._from_cache = False
            self._learnt = time.time()
            if size == old.size:
                return False
            log.info("%s changed at the origin (%d bytes, the cache knew %d); reading the new "
                     "content", self.name, size, old.size)
            self._identity = Identity(self.name, size, None)
        with self.known.lock:
            self.known.by_name[self.name] = (size, None, self._learnt)
        return True

    def size(self) -> int:
        return self.identity().size

    def stat(self) -> dict[str, object]:
        """From the catalog or what a tier recorded, else from storage (which may say it is a
        folder: ``htpdata://`` listings stat their entries)."""
        with self._lock:
            known = self._identity
        if known is None and self.resolved.size is None and self._recalled() is None:
            info = self.upstream.stat()
            if info.get("type") != "file" or not isinstance(info.get("size"), int):
                return info
        return {"name": self.name, "size": self.identity().size, "type": "file"}

    # -- reads ----------------------------------------------------------------------------------
    def read(self, start: int, end: int) -> bytes:
        return self.read_ranges([(start, end)])[0]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            return self._read_ranges(ranges)
        except StorageError:
            if self._revalidate():
                return self._read_ranges(ranges)
            raise

    def touched(self) -> bool:
        """Does a tier hold bytes of this file, or is this process or (as its claims show)
        another fetching some? (A next file another reader began is left to it.)"""
        ident = self.identity()
        if FLIGHTS.busy(ident.key) or any(t.holds_any(ident) for t in self.tiers):
            return True
        auth = self._authority()
        if auth is None:
            return False
        with auth.flight(ident, self.private) as flight:
            if flight is None:
                return False
            flight.refresh()
            return bool(flight.claims())

    def warm(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Fetch into the tiers the parts of ``ranges`` that no tier holds and nobody is
        fetching (this process or, as its claims show, another), without waiting for
        anything and without reading what is held (next-file prefetch: the bytes are not
        wanted now). Returns the bytes fetched from storage."""
        ident = self.identity()
        need = merge(clip(ranges, ident.size))
        for tier in self.tiers:
            if not need:
                return 0
            held = getattr(tier, "held", None)
            if held is not None:
                need = subtract(need, held(ident))
        need = subtract(need, FLIGHTS.busy(ident.key))
        if not need:
            return 0
        tally = _Tally()
        self._fetch(ident, need, False, tally, wait=False)
        with self._lock:
            for c in (self.counters, self.totals):
                if c is not None:
                    c.upstream += tally.upstream
        return tally.upstream

    def _read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        ident = self.identity()
        want = clip(ranges, ident.size)
        need = merge(want)
        found: list[tuple[int, bytes]] = []
        served: dict[str, int] = {}
        consulted: list[DiskTier] = []
        untouched = True
        for i, tier in enumerate(self.tiers):
            if not need:
                break
            got = tier.read(ident, need)
            if isinstance(tier, DiskTier):
                consulted.append(tier)
            if not got:
                untouched = untouched and not tier.holds_any(ident)
                continue
            untouched = False
            found += got
            served[tier.name] = sum(len(b) for _, b in got)
            need = subtract(need, [(s, s + len(b)) for s, b in got])
            self._promote(ident, got, self.tiers[:i])
        fetched = 0
        if need:  # another thread of this process is fetching them: handed from memory
            handed = self._handed(ident, need, time.monotonic() + self.wait_limit)
            if handed:
                found += handed
                served["memory"] = served.get("memory", 0) + sum(len(b) for _, b in handed)
                need = subtract(need, _covered(handed))
        if need:
            tally = _Tally()
            got = self._fetch(ident, need, untouched, tally)
            fetched = tally.upstream
            if tally.handed:
                served["memory"] = served.get("memory", 0) + tally.handed
            if tally.landed and self.disks:  # landed in the authority meanwhile: its hits
                name = self._authority_name()
                served[name] = served.get(name, 0) + tally.landed
                above = self.tiers[:next((i for i, t in enumerate(self.tiers)
                                          if t.name == name), len(self.tiers))]
                self._promote(ident, tally.pieces, above)
            found += got
        spans = Spans((s, s + len(b), (s, b)) for s, b in found)
        if self._layout_state == "unknown":
            self._learn_layout(ident, found)
        out = []
        for r in want:
            if r[1] <= r[0]:
                out.append(b"")
                continue
            parts = spans.cover(r)
            if parts is None:  # a fetch always covers what it was asked; this is a bug
                raise AssertionError(f"cache: {self.name} {r} not assembled")
            if len(parts) == 1 and (parts[0][0], parts[0][1]) == (parts[0][2][0],
                                                                  parts[0][2][0]
                                                                  + len(parts[0][2][1])):
                out.append(parts[0][2][1])
                continue
            out.append(b"".join(b[lo - s:hi - s] for lo, hi, (s, b) in parts))
        self._count(ident, ranges, out, served, fetched, consulted)
        if self.observer is not None:
            self.observer(self, want)
        return out

    def _learn_layout(self, ident: Identity, found: list[tuple[int, bytes]]) -> None:
        """Where the file's keys and streamers are, from its first bytes once a read had them
        (no request of its own): the next fetch takes those extents along."""
        first = max((b for s, b in found if s == 0), key=len, default=None)
        if first is None:
            return
        try:
            got = parse_layout(first, ident.size)
        except NotRoot:
            self._layout_state = "done"
            return
        if isinstance(got, RootLayout):
            self._layout, self._layout_state = got, "known"

    def layout(self) -> RootLayout | None:
        """The ROOT layout learnt from the file's first bytes, if read yet (else None)."""
        return self._layout

    def _along(self, ident: Identity) -> list[Range]:
        """The metadata extents to fetch with the next request (once per reader)."""
        with self._lock:
            if self._layout_state != "known" or self._layout is None:
                return []
            self._layout_state = "done"
            return self._layout.extents(ident.size)

    def _count(self, ident: Identity, ranges: Sequence[Range], out: list[bytes],
               served: dict[str, int], fetched: int, consulted: list[DiskTier]) -> None:
        with self._lock:
            for c in (self.counters, self.totals):
                if c is None:
                    continue
                c.requests += 1
                c.ranges += len(ranges)
                c.bytes_read += sum(len(b) for b in out)
                c.memory += served.get("memory", 0)
                c.local += served.get("local", 0)
                c.shared += served.get("shared", 0)
                c.upstream += fetched
        labels = {"name": self.name, "dataset": self.dataset,
                  "site": self._site() if fetched else None}
        for tier in consulted:  # each tier accounts what it saw: its hits, and the misses
            rec = tier.journal()
            if rec is not None:
                rec.count(ident.name_key, labels, served=served.get(tier.name, 0),
                          upstream=fetched, requests=1)

    def _site(self) -> str | None:
        rep = self.upstream.replica
        return rep.site if rep is not None else None

    def _promote(self, ident: Identity, got: list[tuple[int, bytes]],
                 above: Sequence[Tier]) -> None:
        for tier in above:
            if isinstance(tier, MemoryTier):
                tier.store(ident, got)
        disks = [t for t in above if isinstance(t, DiskTier)]
        if disks:
            def job() -> None:
                self._store(ident, got, disks)
                for tier in disks:
                    if tier.writable:
                        tier.tidy(ident, self.private)
            self.writer.submit(job)

    def _info(self) -> dict[str, Any]:
        ident = self._identity
        return {"name": self.name, "adler32": ident.adler32 if ident else None,
                "learnt": self._learnt, "dataset": self.dataset, "created": time.time()}

    def _store(self, ident: Identity, pieces: list[tuple[int, bytes]],
               tiers: Sequence[DiskTier], defer: bool = False) -> None:
        """Write ``pieces`` into ``tiers`` (the shared one first: other nodes wait on it);
        with ``defer``, into the tiers' next pack of the file (see :meth:`DiskTier.defer`)."""
        info = self._info()
        counted = False
        for tier in reversed(tiers):
            if not tier.writable or not self.bounds.admits(tier):
                continue
            try:
                n = (tier.defer(ident, pieces, info, self.private) if defer
                     else tier.store(ident, pieces, info, self.private))
            except CacheWriteError as exc:
                self.bounds.write_failed(tier, exc)
                continue
            if n:
                if not counted:  # bytes put into the cache, however many tiers keep them
                    counted = True
                    with self._lock:
                        self.counters.inserted += sum(len(b) for _, b in pieces)
                rec = tier.journal()
                if rec is not None:
                    rec.count(ident.name_key, None, inserted=sum(len(b) for _, b in pieces))
                self.bounds.inserted(tier, n)

    # -- misses ---------------------------------------------------------------------------------
    def _authority(self) -> DiskTier | None:
        """The tier whose claims every process sees: the shared one, else the local one."""
        for tier in reversed(self.disks):
            if tier.writable:
                return tier
        return None

    def _authority_name(self) -> str:
        auth = self._authority()
        return auth.name if auth is not None else "shared"

    def _slot(self) -> contextlib.AbstractContextManager[None]:
        """For a prefetch reader, a background request slot (taken before its fetch is
        planned and claimed: a claim of the background is always a request in flight, never
        one queued behind the foreground, which would make a foreground reader wait for it);
        nothing for a foreground reader."""
        if self.budget is None or self.background is None:
            return contextlib.nullcontext()
        return self.budget.background(self.background)

    def _upstream(self, ranges: list[Range], tally: _Tally, slotted: bool = False
                  ) -> list[tuple[int, bytes]]:
        if not ranges:
            return []
        budget = self.budget
        if budget is None or (slotted and self.background is not None):
            datas = self.upstream.read_ranges(ranges)
        elif self.background is not None:
            with budget.background(self.background):
                datas = self.upstream.read_ranges(ranges)
        else:
            with budget.foreground():
                datas = self.upstream.read_ranges(ranges)
        with self._lock:
            self.counters.upstream_requests += 1
        tally.upstream += sum(len(d) for d in datas)
        return [(r[0], d) for r, d in zip(ranges, datas, strict=True)]

    def _fetch(self, ident: Identity, need: list[Range], first_touch: bool, tally: _Tally,
               wait: bool = True) -> list[tuple[int, bytes]]:
        """Fetch ``need`` (claimed), and unless ``wait`` is False wait for what others are
        fetching of it."""
        auth = self._authority()
        with (auth.flight(ident, self.private) if auth is not None
              else _no_flight()) as flight:
            if flight is None:
                with self._slot():
                    plan = plan_fetch(need, size=ident.size, first_touch=first_touch,
                                      limits=self.limits, along=self._along(ident))
                    if not plan.fetch:
                        return []
                    pending = FLIGHTS.begin(ident.key, plan.fetch)
                    try:
                        got = self._upstream(plan.fetch, tally, slotted=True)
                        FLIGHTS.land(pending, got)
                    except BaseException:
                        FLIGHTS.end(pending)
                        raise
                self._keep(ident, got, None, None, pending)
                return got
            return self._fetch_in(flight, ident, need, first_touch, tally, wait)

    def _fetch_in(self, flight: Flight, ident: Identity, need: list[Range],
                  first_touch: bool, tally: _Tally, wait: bool = True
                  ) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        with self._slot():
            # No listing before claiming: the claim is published first and the folder listed
            # once after it (which shows both what landed meanwhile and the claims of others).
            plan = plan_fetch(need, size=ident.size, first_touch=first_touch,
                              held=flight.held(), claims=flight.claims(need),
                              limits=self.limits, along=self._along(ident))
            fetch, waits = plan.fetch, plan.wait
            with self._lock:
                first, self._first_fetch = self._first_fetch, False
            # Listed before the claim is published: whoever sees the claim finds it.
            pending = FLIGHTS.begin(ident.key, fetch) if fetch else None
            kept = False
            try:
                if fetch and first and total(fetch) <= self.limits.unclaimed:
                    # This reader's first fetch, a few KB (a ROOT file's header): no claim
                    # (its create, listing and removal cost more than fetching them twice),
                    # no pack of its own (stored with this file's next pack). Later small
                    # batches claim as usual, so N readers fetch at most one small batch each
                    # twice, not every small read. The entry's folder, which the next batch
                    # claims in, is made meanwhile (its mkdirs and opens off the read's path).
                    maker = _make_entry_meanwhile(flight)
                    try:
                        got = self._upstream(fetch, tally, slotted=True)
                    finally:
                        if maker is not None:
                            maker.join()
                    self._check_size()
                    out += got
                    if pending is not None:
                        FLIGHTS.land(pending, got)
                    kept = True  # no claim to release; pending ends once the tier has them
                    self._keep(ident, got, None, None, pending, defer=True)
                    fetch = []
                elif fetch and (name := flight.publish(fetch)) is not None:
                    flight.refresh(force=True)  # claims published at the same moment
                    landed = flight.read(fetch)
                    tally.add_landed(landed)
                    out += landed
                    fetch = subtract(fetch, _covered(landed))
                    # The claims that share bytes with ours are ordered by their arrival
                    # stamps, every one of them (ours and this process's others a stat each,
                    # once); alone, a reader takes none.
                    others = [c for c in flight.claims(fetch) if intersect(c.ranges, fetch)]
                    born = 0
                    if others and flight.claim is not None:
                        born = flight.claim.stamp()
                        others = flight.with_stamps(others)
                    settled = yield_to_earlier(name, fetch, others, needed=need, born=born)
                    fetch, waits = settled.fetch, merge(waits + settled.wait)
                    if pending is not None:
                        pending.ranges = merge(fetch)  # left to others: not fetched here
                if fetch and pending is not None:
                    got = self._upstream(fetch, tally, slotted=True)
                    self._check_size()
                    out += got
                    FLIGHTS.land(pending, got)
                    claim, flight.claim = flight.claim, None
                    try:
                        self._keep(ident, got, flight, claim, pending)
                    except BaseException:
                        flight.claim = claim  # released below
                        raise
                    kept = True
            finally:
                if not kept:
                    flight.release()
                    FLIGHTS.end(pending)
        if waits and wait:
            out += self._wait(flight, ident, waits, tally)
        return out

    def _handed(self, ident: Identity, ranges: Sequence[Range], deadline: float
                ) -> list[tuple[int, bytes]]:
        """The parts of ``ranges`` that fetches of other threads of this process are
        fetching, waited for and taken from memory as soon as each lands."""
        out: list[tuple[int, bytes]] = []
        left = merge(ranges)
        while left:
            listed = FLIGHTS.overlapping(ident.key, left)
            if not listed:
                break
            progressed = False
            for p in listed:
                if not p.landed.wait(max(0.0, deadline - time.monotonic())):
                    return out
                got = p.take(left)
                if got:
                    out += got
                    left = subtract(left, _covered(got))
                    progressed = True
            if not progressed:  # they ended without these bytes (failed, or yielded them)
                break
        return out

    def _check_size(self) -> None:
        """A recalled identity whose file changed at the origin is caught by the first read."""
        ident = self._identity
        if self._from_cache and ident is not None and self.upstream.size() != ident.size:
            raise StorageError("the file changed at the origin since it was cached",
                               name=self.name)

    def _keep(self, ident: Identity, got: list[tuple[int, bytes]], flight: Flight | None,
              claim: Any, pending: Pending | None = None, defer: bool = False) -> None:
        """Memory now; the disk tiers (then the claim's release, then ``pending``'s end) on
        the writer thread. With ``defer`` (a few KB fetched without a claim) the disk tiers
        keep the bytes for this file's next pack (written at the process's end if none
        comes)."""
        for tier in self.tiers:
            if isinstance(tier, MemoryTier):
                tier.store(ident, got)
        disks = self.disks
        if defer and got and disks:
            # Until the tier has them (kept back for the next pack), this process's other
            # threads are handed them by ``pending``, and prefetch sees the file begun.
            def later() -> None:
                try:
                    self._store(ident, got, disks, defer=True)
                finally:
                    FLIGHTS.end(pending)
            try:
                self.writer.submit(later)  # the writer's order: before the next batch's pack
            except RuntimeError:  # the interpreter is exiting: no next pack will come
                try:
                    self._store(ident, got, disks)
                finally:
                    FLIGHTS.end(pending)
            return
        if not got or not disks:
            if flight is not None and claim is not None:
                flight.claim = claim
                flight.release()
            FLIGHTS.end(pending)
            return
        entry = flight.entry if flight is not None else None
        if entry is not None:
            entry.enter()  # keep its folder open until the claim is removed

        def job() -> None:
            try:
                self._store(ident, got, disks)
            finally:
                if flight is not None and claim is not None:
                    flight.claim = claim
                    flight.release()
                FLIGHTS.end(pending)
                if entry is not None:
                    entry.leave()
            for tier in disks:  # with the claim gone: merge packs, drop older contents
                if tier.writable:
                    tier.tidy(ident, self.private)
        try:
            self.writer.submit(job)
        except RuntimeError:  # the interpreter is exiting: its writer takes no more work
            job()  # now, here: the claim must not outlive this process

    def _wait(self, flight: Flight, ident: Identity, ranges: list[Range], tally: _Tally
              ) -> list[tuple[int, bytes]]:
        """Wait for other processes' fetches to land; fetch ourselves what they do not
        deliver. One ``fstat`` per poll; listing again only when the entry changed."""
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + self.wait_limit
        attempt = 0
        last_look = time.monotonic()
        seen = flight.listed_at()
        while ranges and time.monotonic() < deadline:
            handed = self._handed(ident, ranges, deadline)  # this process's own fetches
            if handed:
                tally.handed += sum(len(b) for _, b in handed)
                out += handed
                ranges = subtract(ranges, _covered(handed))
                continue
            time.sleep(backoff(attempt))
            attempt += 1
            # One fstat per poll; a listing when the folder changed, at the first poll (the
            # listing before the wait took no baseline: a pack landing since, such as this
            # process's own writer thread's, would go unseen), and every 2 s anyway. When
            # another thread of this process listed the entry meanwhile (its baseline is this
            # one's too: the change it saw shows here as none), what it found is looked at.
            due = attempt == 1 or time.monotonic() - last_look > 2.0
            if flight.changed() or due:
                last_look = time.monotonic()
                flight.look()
            elif flight.listed_at() == seen:
                continue
            seen = flight.listed_at()
            landed = flight.read(ranges)
            tally.add_landed(landed)
            out += landed
            ranges = subtract(ranges, [(s, s + len(b)) for s, b in landed])
            if ranges and not flight.claims(ranges):
                break  # no live claim covers them: the fetcher gave up, or is gone
        if ranges:
            got = self._upstream(ranges, tally)
            out += got
            self._keep(ident, got, None, None)
        return out

    # -- open files -----------------------------------------------------------------------------
    def hold(self) -> None:
        """Mark the file in use until :meth:`release` (eviction leaves it alone); counted.
        Never contacts storage: before the file's identity is known, the mark waits for it."""
        with self._lock:
            self._holds += 1
            ident = self._identity
        if ident is not None:
            for tier in self.disks:
                tier.hold(ident)

    def release(self) -> None:
        with self._lock:
            if self._holds <= 0:
                return
            self._holds -= 1
            ident = self._identity
        if ident is not None:
            for tier in self.disks:
                tier.release(ident)

    # -- whole files ----------------------------------------------------------------------------
    def is_complete(self) -> bool:
        ident = self.identity()
        return any(t.complete(ident) for t in self.disks)

