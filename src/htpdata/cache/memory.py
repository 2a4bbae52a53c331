"""The per-process memory tier: pieces of files, least recently used out first.

Same interface as the disk tiers (:class:`~.tier.Tier`), so the read path is one loop over
tiers. Bytes here were verified when they came from a disk tier or arrived from storage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .identity import Identity
from .ranges import Range, Spans, merge

__all__ = ["MemoryTier"]


class MemoryTier:
    name = "memory"

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._lru: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._by_key: dict[str, dict[int, int]] = {}
        self._spans: dict[str, Spans[int]] = {}
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _spans_of(self, key: str) -> Spans[int]:
        got = self._spans.get(key)
        if got is None:
            starts = self._by_key.get(key, {})
            got = self._spans[key] = Spans((s, e, s) for s, e in starts.items())
        return got

    def read(self, ident: Identity, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        key = ident.key
        out: list[tuple[int, bytes]] = []
        with self._lock:
            if key not in self._by_key:
                return out
            spans = self._spans_of(key)
            for r in merge(ranges):
                for lo, hi, start in spans.parts(r):
                    data = self._lru.get((key, start))
                    if data is None:
                        continue
                    self._lru.move_to_end((key, start))
                    out.append((lo, data[lo - start:hi - start]
                                if (lo, hi) != (start, start + len(data)) else data))
        return out

    def holds_any(self, ident: Identity) -> bool:
        with self._lock:
            return bool(self._by_key.get(ident.key))

    def held(self, ident: Identity) -> list[Range]:
        """The ranges of ``ident`` held here (sorted, disjoint)."""
        with self._lock:
            return merge(self._by_key.get(ident.key, {}).items())

    def store(self, ident: Identity, pieces: Sequence[tuple[int, bytes]],
              info: dict[str, Any] | None = None, private: bool = False) -> int:
        with self._lock:
            keys = self._names.setdefault(ident.name_key, set())
            keys.add(ident.key)
            if len(self._names) > 65536:  # a long-lived worker: stay bounded
                self._names.clear()
        return sum(self.put(ident.key, s, d) for s, d in pieces)

    def drop_name(self, name_key: str) -> None:
        """Forget every content this process held of one name."""
        with self._lock:
            keys = self._names.pop(name_key, set())
        for key in keys:
            self.drop(key)

    def put(self, key: str, start: int, data: bytes) -> int:
        if not data or len(data) > self.size:
            return 0
        with self._lock:
            old = self._lru.get((key, start))
            if old is not None and len(old) >= len(data):
                self._lru.move_to_end((key, start))
                return 0
            if old is not None:
                self.used -= len(old)
            self._lru[(key, start)] = data
            self._by_key.setdefault(key, {})[start] = start + len(data)
            self._spans.pop(key, None)
            self.used += len(data)
            while self.used > self.size and self._lru:
                (k, s), gone = self._lru.popitem(last=False)
                self.used -= len(gone)
                starts = self._by_key.get(k)
                if starts is not None:
                    starts.pop(s, None)
                    self._spans.pop(k, None)
                    if not starts:
                        del self._by_key[k]
        return len(data)

    def drop(self, key: str) -> None:
        with self._lock:
            for s in self._by_key.pop(key, {}):
                data = self._lru.pop((key, s), None)
                if data is not None:
                    self.used -= len(data)
            self._spans.pop(key, None)

    def clear(self) -> None:
        """Forget everything, in place (readers holding this tier keep working)."""
        with self._lock:
            self._lru.clear()
            self._by_key.clear()
            self._spans.clear()
            self._names.clear()
            self.used = 0
