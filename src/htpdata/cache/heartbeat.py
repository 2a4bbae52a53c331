"""One background thread per process that keeps its claims, leases and reader records alive.

A claim, a lease or a reader record is alive while its file's mtime is recent: other nodes
cannot ask whether a pid on this node still runs, so they judge by the heartbeat. Registered
callables run every :data:`EVERY` seconds; what one raises is logged and does not stop the
others. Forked children start with nothing registered (what the parent holds is the parent's).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable

__all__ = ["EVERY", "HEART", "STALE", "Heartbeat"]

log = logging.getLogger("htpdata.cache")
EVERY = 5.0
"""Seconds between heartbeats."""
STALE = 30.0
"""A heartbeat older than this means its process is gone (six missed beats)."""


class Heartbeat:
    def __init__(self, every: float = EVERY) -> None:
        self.every = every
        self._beats: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, beat: Callable[[], None]) -> int:
        with self._lock:
            token = next(self._ids)
            self._beats[token] = beat
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="htpdata-heartbeat")
                self._thread.start()
        return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._beats.pop(token, None)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.every)
            self._wake.clear()
            with self._lock:
                beats = list(self._beats.values())
            for beat in beats:
                try:
                    beat()
                except Exception as exc:  # a missed beat must not stop the others
                    log.debug("cache heartbeat failed: %s", exc)

    def _after_fork(self) -> None:
        self._beats = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None


HEART = Heartbeat()
os.register_at_fork(after_in_child=HEART._after_fork)
