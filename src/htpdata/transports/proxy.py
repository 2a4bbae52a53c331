"""The site's XCache as the first upstream, left when it fails or stalls, tried again later.

A facility runs an XCache (XRootD's proxy file cache) near its worker nodes and points ROOT
users at it. htpdata uses it the same way when the site configures it once
(``replicas.proxy = "root://xcache.site:1094//"``): a file's reads go to the proxy first, and
the direct replicas follow as the fallbacks they always are (:class:`htpdata.reader.ReplicaReader`
moves on at the same offset). Proxy requests get their own, shorter timeout
(``replicas.proxy_timeout``): a frozen cache is left after seconds, not after the read timeout.

Caches misbehave (operations expire, deadlocks, crashes), so each process keeps the proxy's
health in a small state machine, pure and tested on its own (:func:`after_success`,
:func:`after_failure`, :func:`use_proxy`)::

    healthy --failure--> suspect --failure x (proxy_failures - 1)--> bypassed (until T)
       ^                    |                                              |
       +-----success--------+                     now >= T: one reader tries it again
       +---------------------------------success-----------------------------+
    a stall (timeout) bypasses at once; a failed retry bypasses for twice as long (at most 16x)

A file the proxy does not have, or a credential it refuses, says nothing about the proxy's
health: the read moves on to the direct replicas and the state is left as it was.

Two ways to address the proxy: ``path`` (default) sends the file's path (an XCache whose
``pss.origin`` is the site's redirector or origin: ``root://xcache//store/...``); ``forward``
sends the whole replica URL (an XCache in forwarding mode, ``pss.origin =``:
``root://xcache//root://site:1094//store/...``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..config import ReplicaSettings, TimeoutSettings
from ..errors import StorageError, StorageNotFoundError, StoragePermissionError, StorageTimeoutError
from .base import Transport

__all__ = ["ProxyHealth", "ProxyTier", "after_failure", "after_success", "proxied_url",
           "use_proxy"]

Mode = Literal["healthy", "suspect", "bypassed"]
_MAX_BACKOFF = 16


@dataclass(frozen=True)
class ProxyHealth:
    """The proxy's health as seen by this process."""

    mode: Mode = "healthy"
    failures: int = 0
    """Consecutive failures."""
    until: float = 0.0
    """When bypassed: the time (monotonic) from which it is tried again."""
    backoff: int = 1
    """Multiplier of ``proxy_retry`` for the next bypass (doubles on a failed retry)."""
    latency: float | None = None
    """Smoothed seconds per request that succeeded (for reports)."""


def use_proxy(h: ProxyHealth, now: float) -> bool:
    """Whether a reader starting now goes to the proxy first (a bypassed proxy is tried again
    once its time has come)."""
    return h.mode != "bypassed" or now >= h.until


def after_success(h: ProxyHealth, latency: float) -> ProxyHealth:
    smooth = latency if h.latency is None else 0.8 * h.latency + 0.2 * latency
    return ProxyHealth("healthy", 0, 0.0, 1, smooth)


def after_failure(h: ProxyHealth, now: float, stalled: bool, settings: ReplicaSettings
                  ) -> ProxyHealth:
    """The state after a failed proxy request; ``stalled``: it timed out (no answer)."""
    failures = h.failures + 1
    retrying = h.mode == "bypassed"  # the trial after a bypass failed
    if stalled or retrying or failures >= max(1, settings.proxy_failures):
        backoff = min(h.backoff * 2, _MAX_BACKOFF) if retrying else h.backoff
        return replace(h, mode="bypassed", failures=failures,
                       until=now + settings.proxy_retry * backoff, backoff=backoff)
    return replace(h, mode="suspect", failures=failures)


def counts_against_proxy(err: StorageError) -> bool:
    """A missing file or a refused credential is the file's or the user's matter, not the
    proxy's health."""
    return not isinstance(err, StorageNotFoundError | StoragePermissionError)


def _path_of(url: str) -> str:
    """``/store/x`` of ``root://host:port//store/x`` or ``https://host/store/x``."""
    rest = url.split("://", 1)[1]
    path = rest.split("/", 1)[1] if "/" in rest else ""
    return "/" + path.lstrip("/")


def proxied_url(proxy: str, forward: bool, urls: Sequence[str]) -> str | None:
    """The URL to ask the proxy for a file with direct replicas ``urls``, or None when none of
    them is of a kind it serves (root:// for an XRootD proxy; davs/https too for an HTTP one)."""
    scheme = proxy.split("://", 1)[0]
    serves = ("root", "xroot") if scheme in ("root", "xroot") else ("davs", "https", "http",
                                                                     "root")
    base = proxy.rstrip("/")
    for url in urls:
        if url.split("://", 1)[0] in serves:
            if forward:
                return f"{base}//{url}" if scheme in ("root", "xroot") else f"{base}/{url}"
            path = _path_of(url)
            return f"{base}/{path}" if scheme in ("root", "xroot") else f"{base}{path}"
    return None


class ProxyTier:
    """The configured proxy: its URL rule, its own transport (shorter timeouts), and its
    health in this process (thread-safe)."""

    def __init__(self, settings: ReplicaSettings, timeouts: TimeoutSettings,
                 make: Callable[[TimeoutSettings], Transport],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.url = settings.proxy
        self.forward = settings.proxy_mode == "forward"
        limit = settings.proxy_timeout
        self.timeouts = TimeoutSettings(connect=min(timeouts.connect, limit),
                                        read=min(timeouts.read, limit))
        self._make = make
        self._transport: Transport | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self.health = ProxyHealth()
        self.transitions: list[Mode] = []
        """Every change of mode, in order (what tests and ``htpdata config`` look at)."""

    @property
    def transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                self._transport = self._make(self.timeouts)
            return self._transport

    def url_for(self, urls: Sequence[str]) -> str | None:
        """The proxy URL for a file starting to be read now, or None (bypassed, or no replica
        it serves)."""
        with self._lock:
            if not use_proxy(self.health, self._clock()):
                return None
        return proxied_url(self.url, self.forward, urls)

    def _set(self, new: ProxyHealth) -> None:
        if new.mode != self.health.mode:
            self.transitions.append(new.mode)
        self.health = new

    def succeeded(self, latency: float) -> None:
        with self._lock:
            self._set(after_success(self.health, latency))

    def failed(self, err: StorageError) -> None:
        if not counts_against_proxy(err):
            return
        with self._lock:
            self._set(after_failure(self.health, self._clock(),
                                    isinstance(err, StorageTimeoutError), self.settings))

    def close(self) -> bool:
        with self._lock:
            transport, self._transport = self._transport, None
        return transport.close() if transport is not None else True
