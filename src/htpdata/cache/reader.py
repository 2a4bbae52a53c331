"""Reads through the tiers: memory, then node-local disk, then the shared volume, then upstream.

For a batch of ranges (uproot's vector reads) the :class:`CachedReader` serves what each tier
holds, promotes hits upward, and sends only the missing pieces upstream, merged into one
request (an XRootD vector read). Before fetching, it claims the missing ranges in the tier every
node shares, so when many processes miss the same bytes at once one of them fetches and the
others wait for its extent files (single flight). Anything the cache cannot do (a full disk, a
read-only tier, a vanished folder) degrades to an uncached read with one warning: an analysis
never fails because the cache did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ..config import CacheSettings
from ..errors import CacheWriteError
from ..reader import ReplicaReader
from .accounting import Journal
from .disk import Claim, DiskTier
from .identity import Identity
from .memory import MemoryTier
from .ranges import Range, cover, merge, split, subtract

__all__ = ["CachedReader"]

log = logging.getLogger("htpdata.cache")
_WAIT_STEP = (0.002, 0.05)


class CachedReader:
    """Same interface as :class:`~htpdata.reader.ReplicaReader`, served through the cache."""

    def __init__(self, upstream: ReplicaReader, tiers: Sequence[DiskTier],
                 memory: MemoryTier | None, settings: CacheSettings, journal: Journal,
                 dataset: str | None = None, warn: Any = None) -> None:
        self.upstream = upstream
        self.tiers = list(tiers)
        self.memory = memory
        self.settings = settings
        self.journal = journal
        self.dataset = dataset
        self.name = upstream.name
        self.resolved = upstream.resolved
        self._identity: Identity | None = None
        self._warn = warn or (lambda tier, exc: log.warning("%s", exc))
        self.on_insert: Any = None
        self.admits: Any = lambda tier: True
        self._submit: Any = lambda fn: fn()  # the Cache hands in its writer thread
        self.stats: dict[str, int] = {"memory": 0, "local": 0, "shared": 0, "upstream": 0,
                                      "inserted": 0, "requests": 0}

    # -- identity -------------------------------------------------------------------------------
    @property
    def attempts(self) -> list[Any]:
        return self.upstream.attempts

    @property
    def replica(self) -> Any:
        return self.upstream.replica

    def identity(self) -> Identity:
        """Name, size and adler32; from the catalog when it knows both (no upstream contact)."""
        if self._identity is None:
            size = self.resolved.size
            if size is None:
                size = self.upstream.size()
            self._identity = Identity(self.name, size, self.resolved.adler32)
            for tier in self.tiers:
                tier.touch(self._identity.key)
        return self._identity

    def size(self) -> int:
        return self.identity().size

    def stat(self) -> dict[str, object]:
        if self.resolved.size is not None:
            return {"name": self.name, "size": self.resolved.size, "type": "file"}
        return self.upstream.stat()

    # -- reads ----------------------------------------------------------------------------------
    def read(self, start: int, end: int) -> bytes:
        return self.read_ranges([(start, end)])[0]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        ident = self.identity()
        size = ident.size
        want = [(max(0, min(s, size)), max(0, min(e, size))) for s, e in ranges]
        avail: dict[Range, bytes] = {}
        served = {"memory": 0, "local": 0, "shared": 0, "upstream": 0}
        pending = [r for r in set(want) if r[1] > r[0]]

        if self.memory is not None and pending:
            pending = self._from_memory(ident.key, pending, avail, served)
        for i, tier in enumerate(self.tiers):
            if not pending:
                break
            pending = self._from_tier(ident, tier, self.tiers[:i], pending, avail, served)
        if pending:
            self._fetch(ident, pending, avail, served)

        out = []
        for r in want:
            pieces = cover(r, list(avail)) if r[1] > r[0] else []
            assert pieces is not None, f"cache: {r} not assembled"  # _fetch guarantees it
            out.append(b"".join(avail[p.extent][p.start - p.extent[0]:p.end - p.extent[0]]
                                for p in pieces))
        rep = self.upstream.replica if served["upstream"] else None
        self.journal.add(ident.key, self.name, self.dataset, rep.site if rep else None,
                         requests=1, **served)
        for k, v in served.items():
            self.stats[k] += v
        self.stats["requests"] += 1
        return out

    def _from_memory(self, key: str, pending: list[Range], avail: dict[Range, bytes],
                     served: dict[str, int]) -> list[Range]:
        assert self.memory is not None
        ext = self.memory.extents(key)
        left = []
        for r in pending:
            pieces = cover(r, ext)
            datas = [self.memory.get(key, p.extent) for p in pieces] if pieces is not None else []
            if pieces is None or any(d is None for d in datas):
                for e in ext:  # partly here: keep the overlapping pieces
                    if e[0] < r[1] and r[0] < e[1] and (d := self.memory.get(key, e)):
                        avail[e] = d
                left.append(r)
                continue
            for p, d in zip(pieces, datas, strict=True):
                assert d is not None
                avail[p.extent] = d
            served["memory"] += r[1] - r[0]
        return left

    def _from_tier(self, ident: Identity, tier: DiskTier, above: list[DiskTier],
                   pending: list[Range], avail: dict[Range, bytes],
                   served: dict[str, int]) -> list[Range]:
        extents = tier.extents(ident.key)
        if not extents:
            return pending
        left = []
        for r in pending:
            pieces = cover(r, list(extents))
            if pieces is None:
                # Partly here: load the overlapping extents, so only the gaps go upstream.
                for ext, adler in list(extents.items()):
                    if ext[0] < r[1] and r[0] < ext[1] and ext not in avail:
                        data = tier.read_extent(ident.key, ext, adler)
                        if data is not None:
                            avail[ext] = data
                left.append(r)
                continue
            ok = True
            for p in pieces:
                if p.extent in avail:
                    continue
                data = tier.read_extent(ident.key, p.extent, extents[p.extent])
                if data is None:  # evicted meanwhile, or corrupt (and now removed)
                    extents.pop(p.extent, None)
                    ok = False
                    break
                avail[p.extent] = data
                self._promote(ident, p.extent, data, above)
            if ok:
                served[tier.name] += r[1] - r[0]
            else:
                left.append(r)
        return left

    def _promote(self, ident: Identity, r: Range, data: bytes, above: list[DiskTier]) -> None:
        if self.memory is not None:
            self.memory.put(ident.key, r, data)
        for tier in above:
            self._store(tier, ident, r[0], data)

    def _store(self, tier: DiskTier, ident: Identity, start: int, data: bytes) -> int:
        """Write into a tier; a failing tier is reported once and skipped from then on."""
        if tier.broken or not self.admits(tier):
            return 0
        stored = 0
        for s, e in split((start, start + len(data)), self.settings.max_extent):
            try:
                tier.write_extent(ident, s, data[s - start:e - start], self._meta())
                stored += e - s
            except CacheWriteError as exc:
                tier.broken = True
                self._warn(tier, exc)
                break
        if stored and self.on_insert is not None:
            self.on_insert(tier, stored)
        return stored

    def _meta(self) -> dict[str, Any]:
        return {"user": self.journal.user, "group": self.journal.group, "dataset": self.dataset}

    # -- misses ---------------------------------------------------------------------------------
    def _authority(self) -> DiskTier | None:
        """The tier whose claims every process sees: the shared one, else the local one."""
        for tier in reversed(self.tiers):
            if not tier.broken:
                return tier
        return None

    def _fetch(self, ident: Identity, pending: list[Range], avail: dict[Range, bytes],
               served: dict[str, int]) -> None:
        missing = subtract(pending, list(avail))
        first_touch = not any(t.extents(ident.key) for t in self.tiers)
        if first_touch and ident.size > 0:
            # The header and the tail (keys, streamers) of a ROOT file ride along with the
            # first request: same round trip, and every later open finds them cached.
            missing += [(0, min(self.settings.head, ident.size)),
                        (max(0, ident.size - self.settings.tail), ident.size)]
        want = merge(missing, gap=self.settings.merge_gap)
        authority = self._authority()
        claimed: list[tuple[Range, Claim | None]] = []
        waiting: list[Range] = []
        others = authority.live_claims(ident.key) if authority is not None else []
        for r in want:
            busy = [c for c in others if c[0] < r[1] and r[0] < c[1]]
            todo = subtract([r], busy) if busy else [r]
            if busy:
                waiting += [(max(r[0], c[0]), min(r[1], c[1])) for c in busy]
            for t in todo:
                if authority is None:
                    claimed.append((t, None))
                    continue
                claim = authority.claim(ident.key, t)
                if claim is not None:
                    claimed.append((t, claim))
                elif authority.claimable:
                    waiting.append(t)  # someone claimed exactly this a moment ago
                else:
                    claimed.append((t, None))  # the tier takes no claims: fetch alone
        if claimed and authority is not None:
            # Re-check after claiming: a fetcher publishes its extents before it releases its
            # claim, so bytes that landed between our listing and our claim are found here.
            landed = list(authority.extents(ident.key))
            done = [(t, c) for t, c in claimed if cover(t, landed) is not None]
            for t, c in done:
                if c is not None:
                    authority.release(c)
                waiting.append(t)
            claimed = [(t, c) for t, c in claimed if (t, c) not in done]
        handed_over = False
        try:
            if claimed:
                datas = self.upstream.read_ranges([t for t, _ in claimed])
                for (t, _), data in zip(claimed, datas, strict=True):
                    avail[t] = data
                    served["upstream"] += len(data)
                    if self.memory is not None:
                        self.memory.put(ident.key, t, data)
                # The caller has its bytes now; the disk writes (and then the claims' release,
                # which other processes wait on) happen on the cache's writer thread.
                batch = [(t, c, data) for (t, c), data in zip(claimed, datas, strict=True)]
                self._submit(lambda: self._store_and_release(ident, batch, authority))
                handed_over = True
        finally:
            if not handed_over:
                for _, claim in claimed:
                    if claim is not None and authority is not None:
                        authority.release(claim)
        if waiting:
            self._wait_for(ident, merge(waiting), avail, served)

    def _store_and_release(self, ident: Identity,
                           batch: list[tuple[Range, Claim | None, bytes]],
                           authority: DiskTier | None) -> None:
        try:
            for t, _, data in batch:
                inserted = 0
                for tier in reversed(self.tiers):  # shared first: others wait on it
                    inserted = max(inserted, self._store(tier, ident, t[0], data))
                self.journal.add(ident.key, self.name, self.dataset, None, inserted=inserted)
                self.stats["inserted"] += inserted
        finally:
            for _, claim, _ in batch:
                if claim is not None and authority is not None:
                    authority.release(claim)

    def _wait_for(self, ident: Identity, ranges: list[Range], avail: dict[Range, bytes],
                  served: dict[str, int]) -> None:
        """Wait for other processes' fetches to land; fetch ourselves if they do not."""
        authority = self._authority()
        deadline = time.monotonic() + max(5.0, self.upstream.transports.settings.timeouts.read)
        delay = _WAIT_STEP[0]
        left = subtract(ranges, list(avail))
        while left and authority is not None and time.monotonic() < deadline:
            left = self._from_tier(ident, authority, [t for t in self.tiers if t is not authority],
                                   left, avail, served)
            if not left:
                return
            claims = authority.live_claims(ident.key)
            if not any(c[0] < r[1] and r[0] < c[1] for c in claims for r in left):
                # No claim left: the fetcher published (look once more) or gave up.
                left = self._from_tier(ident, authority,
                                       [t for t in self.tiers if t is not authority],
                                       left, avail, served)
                break
            time.sleep(delay)
            delay = min(delay * 2, _WAIT_STEP[1])
        if left:
            datas = self.upstream.read_ranges(left)
            for r, data in zip(left, datas, strict=True):
                avail[r] = data
                served["upstream"] += len(data)
                for tier in reversed(self.tiers):
                    self._store(tier, ident, r[0], data)

    # -- open files -----------------------------------------------------------------------------
    def hold(self) -> None:
        """Mark the entry open in every tier until :meth:`release` (eviction skips it)."""
        key = self.identity().key
        self._held = [tier.reading(key) for tier in self.tiers]
        for ctx in self._held:
            ctx.__enter__()

    def release(self) -> None:
        for ctx in getattr(self, "_held", []):
            ctx.__exit__(None, None, None)
        self._held = []

    # -- whole files ----------------------------------------------------------------------------
    def is_complete(self) -> bool:
        key = self.identity().key
        return any(t.is_complete(key) for t in self.tiers)
