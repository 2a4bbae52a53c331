"""Slow sources left behind, and hedged first bytes: the decisions, and the threads they need.

A replica that answers slowly but keeps making progress never times out, so failover alone
never leaves it. Two rules, used by :class:`htpdata.reader.ReplicaReader` when a file has another
replica to go to:

- **Slow floor.** A request of ``n`` bytes must finish within
  :func:`slow_deadline` = ``max(slow_window, n / slow_floor)`` seconds (plus ``slow_ramp_up``
  for the first request to a replica: opening, TLS, TCP slow start). Past that its rate over the
  window is below the floor: the reader stops waiting and asks the next replica for the same
  ranges (the same offset); the abandoned request finishes or times out in the background and
  its bytes are dropped.
- **Hedged first bytes.** The first request of a file (its open, size check and first read) is
  sent to a second replica too when the first has not answered within :func:`hedge_delay`: the
  usual first-request latency of this process (smoothed mean plus four deviations, as TCP
  computes its retransmission timeout), between ``hedge_min`` and ``hedge_max``. Whichever
  answers first is used from then on; at most one hedge is in flight per file.

The functions are pure; :class:`Latency` keeps the estimate (thread-safe), :func:`run_guarded`
and :class:`Started` run a request on a thread of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Generic, TypeVar

from .config import ReplicaSettings

__all__ = ["Latency", "LatencyEstimate", "Overdue", "Started", "hedge_delay", "run_guarded",
           "slow_deadline", "update_estimate"]

T = TypeVar("T")


def slow_deadline(nbytes: int, settings: ReplicaSettings, first: bool) -> float | None:
    """Seconds a request of ``nbytes`` may take before its replica counts as slower than the
    floor; None when the rule is off (``slow_floor = 0``)."""
    floor = int(settings.slow_floor)
    if floor <= 0:
        return None
    budget = max(settings.slow_window, nbytes / floor)
    return budget + (settings.slow_ramp_up if first else 0.0)


@dataclass(frozen=True)
class LatencyEstimate:
    """Smoothed first-request latency and its mean deviation (seconds), RFC 6298 style."""

    srtt: float | None = None
    rttvar: float = 0.0
    samples: int = 0


def update_estimate(e: LatencyEstimate, sample: float) -> LatencyEstimate:
    if e.srtt is None:
        return LatencyEstimate(sample, sample / 2, 1)
    rttvar = 0.75 * e.rttvar + 0.25 * abs(e.srtt - sample)
    return LatencyEstimate(0.875 * e.srtt + 0.125 * sample, rttvar, e.samples + 1)


def hedge_delay(e: LatencyEstimate, settings: ReplicaSettings) -> float:
    """How long the first replica is given before the hedge is sent."""
    if e.srtt is None:
        return settings.hedge_max
    return min(settings.hedge_max, max(settings.hedge_min, e.srtt + 4 * e.rttvar))


class Latency:
    """This process's first-request latency estimate, shared by its readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.estimate = LatencyEstimate()
        self.hedges = 0
        """Hedges sent (what tests count)."""
        self.hedges_won = 0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.estimate = update_estimate(self.estimate, seconds)

    def hedged(self, won: bool) -> None:
        with self._lock:
            self.hedges += 1
            self.hedges_won += int(won)


class Started(Generic[T]):
    """A request running on a daemon thread of its own (an abandoned request must never hold
    the interpreter's exit; one thread per guarded request costs about 0.1 ms), with its
    future."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.began_at = time.monotonic()
        future: Future[T] = Future()
        self.future = future

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever waits, as the call would raise
                future.set_exception(exc)

        threading.Thread(target=run, name="htpdata-guard", daemon=True).start()


class Overdue(Exception):
    """A guarded request did not finish by its deadline (it goes on, unobserved)."""


def run_guarded(fn: Callable[[], T], deadline: float) -> T:
    """``fn()`` on a thread of its own; raises :class:`Overdue` when it has not finished
    ``deadline`` seconds after it started (it then goes on in the background, unobserved).
    What ``fn`` raises is raised as is."""
    job = Started(fn)
    try:
        return job.future.result(timeout=max(0.0, job.began_at + deadline - time.monotonic()))
    except FutureTimeout:
        raise Overdue(f"not done within {deadline:.1f} s") from None
