"""The tiered cache: memory, node-local disk, shared volume; range-aware, verified, bounded.

:class:`Cache` is built from :class:`~htpdata.config.CacheSettings`; the client wraps each
file's :class:`~htpdata.reader.ReplicaReader` in a :class:`CachedReader`. Modules:

- :mod:`.ranges`: pure byte-range arithmetic (merge, subtract, cover);
- :mod:`.identity`: content identity and keys;
- :mod:`.layout`: where files live in a disk tier;
- :mod:`.disk`, :mod:`.memory`: the tiers;
- :mod:`.reader`: the read path through the tiers with single flight;
- :mod:`.evict`: what to evict (pure policies) and the eviction pass;
- :mod:`.accounting`: per-process journals of hits, misses and bytes.
"""

from __future__ import annotations

import atexit
import grp
import logging
import os
import pwd
import shutil
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import CacheSettings, default_local_dir
from ..errors import CacheWriteError
from ..reader import ReplicaReader
from .accounting import Journal
from .disk import DiskTier
from .evict import EvictionReport, evict, lease, over_quota, read_quotas
from .identity import Identity
from .memory import MemoryTier
from .reader import CachedReader

__all__ = ["Cache", "CachedReader", "DiskTier", "Identity", "MemoryTier", "default_local_dir"]

log = logging.getLogger("htpdata.cache")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


_writers: weakref.WeakSet[Cache] = weakref.WeakSet()


@atexit.register
def _flush_writers() -> None:
    """Let queued cache writes land before the interpreter goes (they hold claims)."""
    for cache in list(_writers):
        cache.flush()


def _who(settings: CacheSettings) -> tuple[str, str]:
    user = settings.user
    group = settings.group
    if not user:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    if not group:
        try:
            group = grp.getgrgid(os.getgid()).gr_name
        except KeyError:
            group = str(os.getgid())
    return user, group


class Cache:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.memory = MemoryTier(settings.memory_size) if settings.memory_size > 0 else None
        self.tiers: list[DiskTier] = []
        if settings.local_dir.lower() != "off":
            root = Path(settings.local_dir).expanduser() if settings.local_dir \
                else default_local_dir()
            self.tiers.append(DiskTier("local", root, settings.local_size))
        if settings.shared_dir and settings.shared_dir.lower() != "off":
            self.tiers.append(DiskTier("shared", Path(settings.shared_dir).expanduser(),
                                       settings.shared_size, shared=True))
        for tier in self.tiers:
            try:
                tier.ensure()
            except CacheWriteError as exc:
                tier.broken = True
                self._warn(tier, exc)
        self.user, self.group = _who(settings)
        journal_tier = self.tiers[-1] if self.tiers else None
        self.journal = Journal(journal_tier.layout.journal if journal_tier else None,
                               self.user, self.group)
        self._writer: ThreadPoolExecutor | None = None
        self._writer_lock = threading.Lock()
        self._evict_lock = threading.Lock()
        self._evicting: set[str] = set()
        self._pending: set[str] = set()
        self._admit_cache: dict[str, tuple[float, bool]] = {}
        self._check_every = max(1, min(64 * 1024**2, settings.local_size // 100 or 1))

    def tier(self, name: str) -> DiskTier:
        for t in self.tiers:
            if t.name == name:
                return t
        from ..errors import ConfigError

        hint = " (set cache.shared_dir)" if name == "shared" else ""
        raise ConfigError("cache", f"{name} tier", "not configured or not usable; configured: "
                          f"{', '.join(t.name for t in self.tiers) or 'none'}{hint}")

    @staticmethod
    def _warn(tier: Any, exc: BaseException) -> None:
        key = (getattr(tier, "name", "?"), type(exc).__name__ + str(getattr(exc, "errno", "")))
        with _warned_lock:
            if key in _warned:
                return
            _warned.add(key)
        log.warning("cache tier %s is not usable (%s); reading on without it",
                    getattr(tier, "name", "?"), exc)

    def wrap(self, upstream: ReplicaReader, dataset: str | None = None) -> CachedReader:
        usable = [t for t in self.tiers if not t.broken]
        reader = CachedReader(upstream, usable, self.memory, self.settings, self.journal,
                              dataset=dataset, warn=self._warn)
        reader.on_insert = self.note_inserted
        reader.admits = self.admits
        reader._submit = self._write_later
        return reader

    def _write_later(self, fn: Any) -> None:
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="htpdata-cache-write")
                _writers.add(self)
            self._writer.submit(self._guarded, fn)

    @staticmethod
    def _guarded(fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # a cache write never breaks anything
            log.warning("cache write failed: %s", exc)

    def flush(self) -> None:
        """Wait until every background cache write of this process has landed."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    # -- bounds -------------------------------------------------------------------------------
    def note_inserted(self, tier: DiskTier, nbytes: int) -> None:
        """Called after bytes land in ``tier``; starts an eviction pass in the background when
        the tier may be past its high watermark (estimated from the last pass's usage plus
        what this process added since, or from the filesystem's own fullness)."""
        tier.added += nbytes
        tier.added_total += nbytes
        if tier.added < self._check_every:
            return
        tier.added = 0
        if not self._over_high(tier):
            return
        with self._evict_lock:
            self._pending.add(tier.name)  # a running pass will go round once more
            if tier.name in self._evicting:
                return
            self._evicting.add(tier.name)
        threading.Thread(target=self._evict_in_background, args=(tier,), daemon=True,
                         name=f"htpdata-evict-{tier.name}").start()

    def _over_high(self, tier: DiskTier) -> bool:
        s = self.settings
        if tier.size > 0:
            usage = tier.read_usage()
            estimate = int(usage.get("total", 0)) + tier.added_total
            return estimate > s.high_watermark * tier.size or not usage
        try:
            du = shutil.disk_usage(tier.root)
        except OSError:
            return False
        return du.used > s.high_watermark * du.total

    def _evict_in_background(self, tier: DiskTier) -> None:
        try:
            while True:  # bytes that landed while a pass ran ask for one more
                with self._evict_lock:
                    if tier.name not in self._pending:
                        # Stop and say so under the same lock note_inserted takes: a request
                        # arriving now starts a new pass instead of being lost.
                        self._evicting.discard(tier.name)
                        return
                    self._pending.discard(tier.name)
                if self.evict(tier.name) is None:
                    break  # another process holds the lease: it does the work
        except Exception as exc:  # never let eviction break reads
            log.warning("cache tier %s: eviction failed: %s", tier.name, exc)
        with self._evict_lock:
            self._evicting.discard(tier.name)

    def wait_for_eviction(self, timeout: float = 60.0) -> None:
        """Block until background eviction passes of this process are done (for tests and
        ``htpdata stage``)."""
        import time

        deadline = time.monotonic() + timeout
        while self._evicting and time.monotonic() < deadline:
            time.sleep(0.02)

    def evict(self, tier_name: str, need: int | None = None,
              dry_run: bool = False) -> EvictionReport | None:
        """One eviction pass (None if another process holds the tier's eviction lease)."""
        tier = self.tier(tier_name)
        seen = tier.added_total  # bytes added after this point are not in the pass's scan
        with lease(tier, "evict") as got:
            if not got:
                return None
            report = evict(tier, high=self.settings.high_watermark,
                           low=self.settings.low_watermark, policy=self.settings.policy,
                           need=need, dry_run=dry_run)
        tier.added_total = max(0, tier.added_total - seen)
        if report.removed:
            log.info("cache tier %s: evicted %d entries, %d bytes", tier.name, report.removed,
                     report.freed)
        return report

    def admits(self, tier: DiskTier) -> bool:
        """May this process's user and group store more in ``tier``? Past a hard quota, no:
        reads go on uncached (a quota never fails a read). Past a soft one: yes, with a warning.
        Decided from the tier's last usage summary, re-read at most once a minute."""
        import time

        now = time.monotonic()
        cached = self._admit_cache.get(tier.name)
        if cached is not None and now - cached[0] < 60.0:
            return cached[1]
        quotas = read_quotas(tier)
        verdict = True
        if quotas["users"] or quotas["groups"]:
            usage = tier.read_usage()
            by_user = {self.user: int((usage.get("by_user") or {}).get(self.user, 0))
                       + tier.added_total}
            by_group = {self.group: int((usage.get("by_group") or {}).get(self.group, 0))
                        + tier.added_total}
            hard = over_quota(quotas, by_user, by_group, "hard")
            soft = over_quota(quotas, by_user, by_group, "soft")
            if hard:
                verdict = False
                self._warn(tier, RuntimeError(
                    f"over the hard quota ({', '.join(hard)}); reading on without caching"))
                self._evict_soon(tier)
            elif soft:
                self._warn(tier, RuntimeError(f"over the soft quota ({', '.join(soft)})"))
        self._admit_cache[tier.name] = (now, verdict)
        return verdict

    def _evict_soon(self, tier: DiskTier) -> None:
        with self._evict_lock:
            self._pending.add(tier.name)
            if tier.name in self._evicting:
                return
            self._evicting.add(tier.name)
        threading.Thread(target=self._evict_in_background, args=(tier,), daemon=True).start()

    def pin(self, name: str, size: int, adler32: str | None, until: float) -> None:
        key = Identity(name, size, adler32).key
        for tier in self.tiers:
            tier.pin(key, until, self.user)

    def unpin(self, name: str, size: int, adler32: str | None) -> None:
        key = Identity(name, size, adler32).key
        for tier in self.tiers:
            tier.unpin(key)

    def info(self, name: str) -> list[dict[str, Any]]:
        """What each tier holds of ``name`` (its current identity), without contacting storage."""
        name_key = Identity(name, 0).name_key
        out = []
        for tier in self.tiers:
            key = tier.current_key(name_key)
            info = tier.entry_info(key) if key else None
            if info is None:
                out.append({"tier": tier.name, "root": str(tier.root), "held": False})
                continue
            extents = sorted(tier.extents(info.key))
            size = int(info.meta.get("size") or 0)
            out.append({
                "tier": tier.name, "root": str(tier.root), "held": True, "key": info.key,
                "size": size, "adler32": info.meta.get("adler32"), "bytes": info.bytes,
                "fraction": info.bytes / size if size else None, "extents": len(extents),
                "complete": info.complete, "pinned_until": tier.pinned_until(info.key) or None,
                "last_access": info.last_access, "opens": info.meta.get("opens", 0),
                "readers": info.readers, "owner": info.meta.get("user"),
                "dataset": info.meta.get("dataset"),
                "ranges": [list(r) for r in extents[:50]],
            })
        return out

    def clear(self, tier_name: str | None = None) -> tuple[int, int]:
        """Remove every entry of a tier (default: every tier); returns (entries, bytes)."""
        entries = freed = 0
        for tier in self.tiers:
            if tier_name is not None and tier.name != tier_name:
                continue
            for key in list(tier.keys()):
                freed += tier.remove_entry(key)
                entries += 1
        if self.memory is not None:
            self.memory = MemoryTier(self.memory.size)
        return entries, freed

    def forget(self, name: str) -> int:
        """Remove every tier's current entry for ``name``; returns the bytes freed."""
        self.flush()  # a queued write of the old content must not land after this
        name_key = Identity(name, 0).name_key
        freed = 0
        for tier in self.tiers:
            key = tier.current_key(name_key)
            if key is not None:
                if self.memory is not None:
                    self.memory.drop(key)
                freed += tier.remove_entry(key)
        return freed

    def close(self) -> None:
        self.flush()
        self.journal.flush()
