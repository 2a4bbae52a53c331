"""Two budgets of upstream requests: the foreground's (reads an analysis waits for) and the
background's (next-file prefetch), which never delays the foreground.

A background request is sent only while no foreground request is in flight, and at most
``concurrency`` of them at once; a foreground request never waits for anything. So prefetch
fills the time an analysis spends computing, and a foreground read that starts while a
prefetch request is in flight competes with at most ``concurrency`` requests of at most
``cache.max_extent`` bytes each.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["Budget", "Cancelled"]


class Cancelled(Exception):
    """The background work was cancelled (the analysis stopped, or the client closed)."""


class Budget:
    def __init__(self, concurrency: int = 2) -> None:
        self._cond = threading.Condition()
        self._foreground = 0
        self._background = 0
        self.concurrency = max(1, concurrency)
        self.last_foreground = time.monotonic()
        """When a foreground request last started or ended (the analysis is alive)."""

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        with self._cond:
            self._foreground += 1
            self.last_foreground = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._foreground -= 1
                self.last_foreground = time.monotonic()
                self._cond.notify_all()

    @contextlib.contextmanager
    def background(self, cancel: threading.Event) -> Iterator[None]:
        """Wait until no foreground request is in flight and a background slot is free;
        :class:`Cancelled` if ``cancel`` is set meanwhile."""
        with self._cond:
            while self._foreground or self._background >= self.concurrency:
                if cancel.is_set():
                    raise Cancelled()
                self._cond.wait(0.05)
            if cancel.is_set():
                raise Cancelled()
            self._background += 1
        try:
            yield
        finally:
            with self._cond:
                self._background -= 1
                self._cond.notify_all()

    def in_flight(self) -> tuple[int, int]:
        """(foreground, background) requests in flight now."""
        with self._cond:
            return self._foreground, self._background
