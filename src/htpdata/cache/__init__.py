"""The tiered cache: memory, node-local disk, shared volume; range-aware, verified, bounded,
safe among users who do not trust each other.

:class:`Cache` is built from :class:`~htpdata.config.CacheSettings`; the client wraps each
file's :class:`~htpdata.reader.ReplicaReader` in a :class:`CachedReader`. Modules, from the
bytes up:

- :mod:`.ranges`, :mod:`.plan`: pure range arithmetic and the fetch plan (what to fetch, what
  to wait for);
- :mod:`.pack`: the write-once pack format (pure);
- :mod:`.trust`: whose bytes a reader accepts, where a writer's go (pure);
- :mod:`.fsops`: I/O on folder descriptors (nothing followed, nothing blocks);
- :mod:`.entry`, :mod:`.area`, :mod:`.tier`: an entry's packs and claims, an area, a disk
  tier; :mod:`.memory`: the memory tier (same interface);
- :mod:`.records`, :mod:`.heartbeat`, :mod:`.lease`: reader records, heartbeats, leases;
- :mod:`.scan`, :mod:`.fold`, :mod:`.evict`, :mod:`.summary`: the passes;
- :mod:`.reader`: the read path with single flight; :mod:`.whole`: whole files (staging,
  conversions) and blobs; :mod:`.legacy`: older tiers.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import grp
import logging
import pwd
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import CacheSettings, default_local_dir
from ..errors import CacheWriteError, ConfigError
from ..io import ReadCounters
from ..quotas import limits_for, room
from .area import Area
from .budget import Budget
from .evict import EvictionReport, Quota, evict_area, fs_usage, read_quotas
from .identity import Identity
from .memory import MemoryTier
from .plan import Limits
from .reader import CachedReader, Known
from .records import ProcessRecord
from .tier import DiskTier, Tier
from .trust import TRUSTED, USER, Me, is_private

if TYPE_CHECKING:
    from ..reader import ReplicaReader
    from ..replicas import ResolvedFile
    from ..transports import Transports

__all__ = ["Cache", "CachedReader", "DiskTier", "Identity", "MemoryTier", "Tier",
           "default_local_dir"]

log = logging.getLogger("htpdata.cache")
_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()
_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


@atexit.register
def _flush_writers() -> None:
    """Let queued cache writes land before the interpreter goes (they hold claims), and merge
    the packs of what this process fetched in several batches."""
    for w in list(_writers):
        w.flush()
    for c in list(_caches):
        with contextlib.suppress(Exception):
            c.compact()


class _Writer:
    """One background thread per cache for disk writes: the reader has its bytes already."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="htpdata-cache-write")
                _writers.add(self)
            self._pool.submit(self._guarded, job)

    @staticmethod
    def _guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # a cache write never breaks anything
            log.warning("cache write failed: %s", exc)

    def flush(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _names(me: Me) -> tuple[str, str]:
    try:
        user = pwd.getpwuid(me.uid).pw_name
    except KeyError:
        user = str(me.uid)
    try:
        group = grp.getgrgid(me.gid).gr_name
    except KeyError:
        group = str(me.gid)
    return user, group


class Cache:
    """The tiers of one client, and what is done to them (reads, passes, pins, clearing)."""

    def __init__(self, settings: CacheSettings, *, me: Me | None = None) -> None:
        self.settings = settings
        self.me = me or Me.current()
        self.user, self.group = _names(self.me)
        self.memory = MemoryTier(settings.memory_size) if settings.memory_size > 0 else None
        self.tiers: list[DiskTier] = []
        if settings.local_dir.lower() != "off":
            root = Path(settings.local_dir).expanduser() if settings.local_dir \
                else default_local_dir()
            self.tiers.append(DiskTier("local", root, settings.local_size, me=self.me,
                                       compact_after=settings.compact_after))
        if settings.shared_dir and settings.shared_dir.lower() != "off":
            self.tiers.append(DiskTier("shared", Path(settings.shared_dir).expanduser(),
                                       settings.shared_size, trust=settings.trust, me=self.me,
                                       compact_after=settings.compact_after))
        self.limits = Limits(merge_gap=settings.merge_gap, max_request=settings.max_extent,
                             head=settings.head, tail=settings.tail,
                             fill_ratio=settings.fill_ratio)
        self.known = Known(max_age=settings.revalidate_after)
        self.budget = Budget(settings.prefetch_concurrency)
        """Foreground and background (prefetch) upstream requests of this cache's readers."""
        self.writer = _Writer()
        self.totals = ReadCounters()
        """What every reader of this cache did so far (each reader has its own too)."""
        self._lock = threading.Lock()
        self._evicting: dict[str, threading.Thread] = {}
        """The tiers a pass runs on in the background, and its thread."""
        self._closing = threading.Event()
        """Set while :meth:`close` runs: a pass in the background stops at its next entry."""
        self._pending: set[str] = set()
        self._admit: dict[str, tuple[float, bool]] = {}
        self._warned: set[str] = set()
        self._check_every = max(1, min(64 * 1024**2, settings.local_size // 100 or 1))
        _caches.add(self)

    # -- reading ---------------------------------------------------------------------------
    def tier(self, name: str) -> DiskTier:
        for t in self.tiers:
            if t.name == name:
                return t
        hint = " (set cache.shared_dir)" if name == "shared" else ""
        raise ConfigError("cache", f"{name} tier", "not configured or not usable; configured: "
                          f"{', '.join(t.name for t in self.tiers) or 'none'}{hint}")

    def wrap(self, upstream: ReplicaReader, dataset: str | None = None) -> CachedReader:
        tiers: list[Tier] = [self.memory] if self.memory is not None else []
        tiers += self.tiers
        reader = CachedReader(upstream, tiers, limits=self.limits, writer=self.writer,
                              bounds=self, known=self.known, private=self._private(upstream),
                              dataset=dataset, totals=self.totals,
                              wait_limit=upstream.transports.settings.timeouts.read + 5.0)
        reader.budget = self.budget
        return reader

    def _private(self, upstream: ReplicaReader) -> bool:
        return self.private(upstream.resolved, upstream.transports)

    @staticmethod
    def private(resolved: ResolvedFile, transports: Transports) -> bool:
        """Must the bytes of ``resolved`` stay owner-only: will the request carry a credential
        (a token, a proxy, one written into the URL), or is the name in a private namespace?"""
        creds = transports.creds
        in_url = any(rep.credential is not None for rep in resolved.replicas)
        return is_private(str(resolved.name), bool(creds.token or creds.proxy or in_url))

    def flush(self) -> None:
        """Wait until every background cache write of this process has landed, the few KB
        kept back for a file's next pack included (see :meth:`DiskTier.defer`)."""
        self.writer.flush()
        for tier in self.tiers:
            tier.flush_deferred()

    # -- bounds (the reader's collaborator) -------------------------------------------------
    def _warn(self, key: str, text: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning("%s", text)

    def write_failed(self, tier: DiskTier, exc: CacheWriteError) -> None:
        tier.write_problem = str(exc)
        self._warn(f"write:{tier.name}", f"cache tier {tier.name} is not usable for writing "
                   f"({exc}); reading on without caching there")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._evict_soon(tier)

    def quotas(self, tier: DiskTier) -> dict[str, dict[str, Quota]]:
        return read_quotas(tier._open(), tier.owner.uid if tier.owner else None)

    def usage(self, tier: DiskTier) -> int:
        """This user's bytes in ``tier`` now: the last pass's summary of each of its areas
        plus what its processes stored and removed since (own writes count at once)."""
        total = 0
        for area in tier.my_areas():
            total += area_usage(area, None if area.spec.kind != "group" else self.me.uid,
                                tier.record_of(area))
        return total

    def room(self, tier: DiskTier, limit: str = "hard",
             quotas: dict[str, dict[str, Quota]] | None = None) -> dict[str, int]:
        """Bytes this user and their group may still store in ``tier`` under their ``limit``
        (:func:`htpdata.quotas.room`; the ``*`` rows are everyone's default), negative when
        over; this user's own writes and removals count at once. ``quotas``: the tier's, if
        read already (else read now)."""
        if quotas is None:
            quotas = self.quotas(tier)
        mine: dict[str, dict[str, Quota]] = {"users": {}, "groups": {}}
        for kind, who in (("users", self.user), ("groups", self.group)):
            q = limits_for(quotas, kind, who)
            if q is not None:
                mine[kind][who] = q
        if not (mine["users"] or mine["groups"]):
            return {}
        used = self.usage(tier)
        return room(mine, self.user, self.group,
                    {"by_user": {self.user: used}, "by_group": {self.group: used}}, limit)

    def admits(self, tier: DiskTier) -> bool:
        """May this user store more in ``tier``? Past its hard quota (or its group's), no:
        reads go on uncached (a quota never fails a read). Past a soft one: yes, said once.
        Decided at most once a minute."""
        now = time.monotonic()
        with self._lock:
            cached = self._admit.get(tier.name)
        if cached is not None and now - cached[0] < 60.0:
            return cached[1]
        verdict = True
        quotas = self.quotas(tier)  # read once for both limits
        hard = [w.replace(":", " ", 1) for w, left in self.room(tier, "hard", quotas).items()
                if left < 0]
        if hard:
            verdict = False
            self._warn(f"hard:{tier.name}", f"cache tier {tier.name}: over the hard quota "
                       f"({', '.join(hard)}); reading on without caching")
            self._evict_soon(tier)
        else:
            soft = [w.replace(":", " ", 1) for w, left in self.room(tier, "soft",
                                                                  quotas).items() if left < 0]
            if soft:
                self._warn(f"soft:{tier.name}", f"cache tier {tier.name}: over the soft quota "
                           f"({', '.join(soft)}); still caching, oldest entries go first")
        with self._lock:
            self._admit[tier.name] = (now, verdict)
        return verdict

    def inserted(self, tier: DiskTier, nbytes: int) -> None:
        """Bytes landed in ``tier``: start a pass in the background when this user's areas
        there may be past their high watermark."""
        if tier.added < self._check_every:
            return
        tier.added = 0
        if self._over_high(tier):
            self._evict_soon(tier)

    def _cap(self, tier: DiskTier, area: Area) -> int:
        """An area's bound: the tier's size for the owner's areas; for a user's own area its
        hard quota (``*`` for everyone), else only the filesystem's fullness bounds it."""
        if area.spec.kind == USER and not tier.is_owner:
            q = limits_for(self.quotas(tier), "users", self.user)
            return q.hard if q is not None else 0
        return tier.size

    def _over_high(self, tier: DiskTier) -> bool:
        from .evict import area_need

        s = self.settings
        for area in tier.my_areas():
            used, total = fs_usage(area.folder)
            if area_need(area_usage(area) + tier.added_total, self._cap(tier, area), used,
                         total, s.high_watermark, s.low_watermark) > 0:
                return True
        return False

    def _evict_soon(self, tier: DiskTier) -> None:
        with self._lock:
            self._pending.add(tier.name)
            if tier.name in self._evicting:
                return
            thread = threading.Thread(target=self._evict_in_background, args=(tier,),
                                      daemon=True, name=f"htpdata-evict-{tier.name}")
            self._evicting[tier.name] = thread
        thread.start()

    def _evict_in_background(self, tier: DiskTier) -> None:
        try:
            while True:  # bytes that landed while a pass ran ask for one more
                with self._lock:
                    if tier.name not in self._pending or self._closing.is_set():
                        self._evicting.pop(tier.name, None)
                        return
                    self._pending.discard(tier.name)
                if self.evict(tier.name) is None:
                    break  # another process holds the lease: it does the work
        except Exception as exc:  # never let eviction break reads
            log.warning("cache tier %s: eviction failed: %s", tier.name, exc)
        with self._lock:
            self._evicting.pop(tier.name, None)

    def wait_for_eviction(self, timeout: float = 60.0) -> bool:
        """Block until this process's background eviction passes are done (close, tests,
        stage); False if one still runs after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = list(self._evicting.values())
                if not busy:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            thread = busy[0]
            if thread.is_alive():
                thread.join(left)
            else:  # registered, not started yet
                time.sleep(min(left, 0.005))

    # -- passes ------------------------------------------------------------------------------
    def evict(self, tier_name: str, need: int | None = None,
              dry_run: bool = False) -> EvictionReport | None:
        """One eviction pass over this user's areas of a tier (as the tier's owner: the
        trusted and group areas). None if another process holds every lease."""
        tier = self.tier(tier_name)
        with contextlib.suppress(CacheWriteError):
            tier.ensure()
        seen = tier.added_total
        report = EvictionReport(tier.name)
        ran = False
        s = self.settings
        for area in tier.my_areas():
            drop = tier.drop_box() if area.spec.kind == TRUSTED else None
            got = evict_area(area, high=s.high_watermark, low=s.low_watermark,
                             policy=s.policy, cap=self._cap(tier, area), drop=drop,
                             need=need, dry_run=dry_run, tier_column=tier.name,
                             quotas=self.quotas(tier), stop=self._closing.is_set)
            if got is None:
                continue
            ran = True
            report.add(got)
        if not ran and tier.my_areas():
            return None
        tier.added_total = max(0, tier.added_total - seen)
        with self._lock:
            self._admit.pop(tier.name, None)  # decide again with the new usage
        if report.removed:
            log.info("cache tier %s: evicted %d entries, %d bytes", tier.name, report.removed,
                     report.freed)
        if report.skipped_foreign:
            log.warning("cache tier %s: %d entries other users own were left alone (only "
                        "their owners or the tier's owner may remove them)", tier.name,
                        report.skipped_foreign)
        return report

    # -- names ------------------------------------------------------------------------------
    def pin(self, name: str, size: int, adler32: str | None, until: float) -> int:
        """Keep ``name`` from eviction until ``until`` in this user's areas; returns in how
        many tiers it was pinned."""
        ident = Identity(name, size, adler32)
        n = 0
        for tier in self.tiers:
            area = tier.home() if tier.usable or not tier.root.exists() else None
            if area is None:
                with contextlib.suppress(CacheWriteError):
                    tier.ensure()
                area = tier.home()
            if area is not None:
                with contextlib.suppress(CacheWriteError):
                    n += area.pin(ident, until)
        return n

    def unpin(self, name: str, size: int, adler32: str | None) -> int:
        key = Identity(name, size, adler32).name_key
        return sum(area.unpin(key) for tier in self.tiers for area in tier.my_areas())

    def info(self, name: str) -> list[dict[str, Any]]:
        """What each tier holds of ``name`` (its newest content), without contacting storage."""
        from .whole import entry_info

        out = []
        for tier in self.tiers:
            row = entry_info(tier, name)
            out.append(row)
        return out

    def forget(self, name: str) -> int:
        """Remove ``name`` from this user's areas of every tier; returns the bytes freed."""
        self.flush()  # a queued write of the old content must not land after this
        key = Identity(name, 0).name_key
        if self.memory is not None:
            self.memory.drop_name(key)
        with self.known.lock:
            self.known.by_name.pop(name, None)
        return sum(tier.forget_name(name) for tier in self.tiers)

    def clear(self, tier_name: str | None = None) -> tuple[int, int, int]:
        """Remove every entry of this user's areas (default: every tier); returns (entries
        removed, bytes freed, entries skipped because other users own them). A tier in an
        older format is removed as a whole, as far as this user owns it."""
        from .legacy import clear_legacy
        from .scan import scan_area

        self.flush()
        entries = freed = skipped = 0
        for tier in self.tiers:
            if tier_name is not None and tier.name != tier_name:
                continue
            if tier.legacy():
                got = clear_legacy(tier)
                entries, freed, skipped = entries + got[0], freed + got[1], skipped + got[2]
                continue
            for area in tier.my_areas():
                for e in list(scan_area(area)):
                    try:
                        n = area.remove_entry(e.key)
                    except PermissionError:
                        skipped += 1
                        continue
                    except OSError:
                        skipped += 1
                        continue
                    entries += 1
                    freed += n
                    tier.note_removed(area, n)
                area.empty_trash()
        if self.memory is not None:
            self.memory.clear()
        with self.known.lock:
            self.known.by_name.clear()
        return entries, freed, skipped

    def sync(self) -> None:
        """Let queued writes land and bring this process's reader records up to date (what
        reports and other processes read); the cache stays usable."""
        self.flush()
        for tier in self.tiers:
            tier.flush_records()

    def compact(self) -> None:
        """Merge into one pack each entry this process wrote in several fetch batches."""
        self.flush()
        for tier in self.tiers:
            tier.compact_written()

    def close(self) -> None:
        """Writes landed, packs merged, records closed, every descriptor on the tiers closed (a
        client's end; the tiers open again if the cache is used after). A background
        eviction pass started by this process's writes is stopped at its next entry and
        waited for (what it removed stays removed; the next pass does the rest): left
        running, it opened the tiers again behind the close (a descriptor left in the tier
        keeps its filesystem busy), and on a tier of 10^5 entries a pass takes minutes."""
        self.compact()
        self._closing.set()
        try:
            if not self.wait_for_eviction(30.0):
                log.warning("cache: an eviction pass did not stop within 30 s; closing the "
                            "tiers under it")
        finally:
            self._closing.clear()
        for tier in self.tiers:
            tier.close()



def area_usage(area: Area, uid: int | None = None, mine: ProcessRecord | None = None) -> int:
    """An area's bytes now (only ``uid``'s, if given): its last summary plus what its
    processes' records added and removed since (what the summary counted is subtracted);
    this process's own record (``mine``) is taken from memory, not from its file."""
    from .records import parse_record

    summary = area.read_usage()
    if uid is None:
        total = summary.get("total", 0)
    else:
        by_uid = summary.get("by_uid")
        total = by_uid.get(str(uid), 0) if isinstance(by_uid, dict) else 0
    total = total if isinstance(total, int) else 0
    owners = (lambda u: u in (area.steward, 0)) if uid is None else (lambda u: u == uid)
    base = summary.get("records") if isinstance(summary.get("records"), dict) else {}
    r = area.sub("r")
    names: list[str] = []
    if r is not None:
        with contextlib.suppress(OSError):
            names = [e.name for e in r.names() if not e.name.startswith(".")]
    if mine is not None and mine.name not in names:
        names.append(mine.name)  # not written yet
    for name in names:
        if mine is not None and name == mine.name:
            added, removed = mine.added, mine.removed
        else:
            rec = parse_record(r, name, owners) if r is not None else None
            if rec is None:
                continue
            added, removed = rec.bytes_delta()
        b = base.get(name) if isinstance(base, dict) else None
        if isinstance(b, list) and len(b) == 2:
            added -= int(b[0])
            removed -= int(b[1])
        total += added - removed
    return max(0, total)

