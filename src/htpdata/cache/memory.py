"""The per-process memory tier: verified extents, least recently used out first."""

from __future__ import annotations

import threading
from collections import OrderedDict

from .ranges import Range

__all__ = ["MemoryTier"]


class MemoryTier:
    name = "memory"

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._lru: OrderedDict[tuple[str, Range], bytes] = OrderedDict()
        self._by_key: dict[str, set[Range]] = {}
        self._lock = threading.Lock()

    def extents(self, key: str) -> list[Range]:
        with self._lock:
            return list(self._by_key.get(key, ()))

    def get(self, key: str, r: Range) -> bytes | None:
        with self._lock:
            data = self._lru.get((key, r))
            if data is not None:
                self._lru.move_to_end((key, r))
            return data

    def put(self, key: str, r: Range, data: bytes) -> None:
        if len(data) > self.size:
            return
        with self._lock:
            if (key, r) in self._lru:
                self._lru.move_to_end((key, r))
                return
            self._lru[(key, r)] = data
            self._by_key.setdefault(key, set()).add(r)
            self.used += len(data)
            while self.used > self.size and self._lru:
                (k, rr), old = self._lru.popitem(last=False)
                self.used -= len(old)
                ranges = self._by_key.get(k)
                if ranges is not None:
                    ranges.discard(rr)
                    if not ranges:
                        del self._by_key[k]

    def drop(self, key: str) -> None:
        with self._lock:
            for r in self._by_key.pop(key, set()):
                data = self._lru.pop((key, r), None)
                if data is not None:
                    self.used -= len(data)
