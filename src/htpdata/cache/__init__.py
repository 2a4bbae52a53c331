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

import grp
import logging
import os
import pwd
import threading
from pathlib import Path
from typing import Any

from ..config import CacheSettings
from ..reader import ReplicaReader
from .accounting import Journal
from .disk import CacheWriteError, DiskTier
from .identity import Identity
from .memory import MemoryTier
from .reader import CachedReader

__all__ = ["Cache", "CachedReader", "DiskTier", "Identity", "MemoryTier", "default_local_dir"]

log = logging.getLogger("htpdata.cache")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def default_local_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "htpdata"


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
                tier.broken = True  # type: ignore[attr-defined]
                self._warn(tier, exc)
        self.user, self.group = _who(settings)
        journal_tier = self.tiers[-1] if self.tiers else None
        self.journal = Journal(journal_tier.layout.journal if journal_tier else None,
                               self.user, self.group)

    def tier(self, name: str) -> DiskTier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no cache tier {name!r} (configured: "
                       f"{', '.join(t.name for t in self.tiers) or 'none'})")

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
        usable = [t for t in self.tiers if not getattr(t, "broken", False)]
        return CachedReader(upstream, usable, self.memory, self.settings, self.journal,
                            dataset=dataset, warn=self._warn)

    def forget(self, name: str) -> int:
        """Remove every tier's current entry for ``name``; returns the bytes freed."""
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
        self.journal.flush()
