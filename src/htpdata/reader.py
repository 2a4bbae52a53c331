"""Read a logical file from its ordered replicas, failing over mid-read.

:class:`ReplicaReader` is the one place that walks a replica list. It keeps using the replica
that last worked; when a request fails (refused, dropped, timed out, file missing, wrong size)
it records the attempt, moves to the next replica, checks that its size is the same, and asks
it for the same byte ranges, so a read continues at the same offset. Only when every replica has
failed does it raise, once, an error listing what was tried. It is a
:class:`~htpdata.io.FileReader`; the cache's reader wraps one.

With a site proxy configured (``replicas.proxy``, :mod:`htpdata.transports.proxy`), the proxy
comes first, as one more replica in front of the direct ones, unless this process has
bypassed it; how each proxy request went updates its health.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout

from .errors import (
    Attempt,
    StorageError,
    StorageIsADirectoryError,
    StorageTooSlowError,
    exhausted,
)
from .hedging import Overdue, Started, hedge_delay, run_guarded, slow_deadline
from .io import ReadCounters
from .replicas import Replica, ResolvedFile
from .transports import Transport, Transports

__all__ = ["ReplicaReader"]

log = logging.getLogger("htpdata.reader")


class ReplicaReader:
    """Byte-range reads of one file with failover (a :class:`~htpdata.io.FileReader`).
    Thread-safe: uproot reads from threads."""

    def __init__(self, resolved: ResolvedFile, transports: Transports) -> None:
        self.resolved = resolved
        self.transports = transports
        self.name = str(resolved.name)
        self.counters = ReadCounters()
        """Every byte comes from storage: ``bytes_read == upstream``."""
        self.attempts: list[Attempt] = []
        self.replicas: tuple[Replica, ...] = resolved.replicas
        """What is tried, in order: the site proxy first when it is in use, then the file's
        replicas."""
        self._proxied = False
        proxy = transports.proxy
        if proxy is not None:
            url = proxy.url_for([r.url for r in resolved.replicas])
            if url is not None:
                first = resolved.replicas[0] if resolved.replicas else None
                self.replicas = (Replica(url, "proxy", url.split("://", 1)[0],
                                         first.name if first else self.name, role="proxy"),
                                 *resolved.replicas)
                self._proxied = True
        self._index = 0
        self._began = False
        self._first = threading.Event()
        """Set once the file's first request is settled (hedged or not)."""
        self._answered: set[int] = set()
        self._size: int | None = None
        self._checked: set[int] = set()
        self._lock = threading.Lock()

    @property
    def replica(self) -> Replica | None:
        """The replica in use (None once all have failed)."""
        reps = self.replicas
        return reps[self._index] if self._index < len(reps) else None

    def _transport(self, index: int, rep: Replica) -> Transport:
        if self._proxied and index == 0:
            proxy = self.transports.proxy
            assert proxy is not None
            return proxy.transport
        return self.transports.for_replica(rep)

    def _went(self, index: int, started: float, err: StorageError | None = None) -> None:
        """Tell the proxy's health how a request to it went (other replicas: nothing)."""
        proxy = self.transports.proxy
        if not self._proxied or index != 0 or proxy is None:
            return
        if err is None:
            proxy.succeeded(time.monotonic() - started)
        else:
            proxy.failed(err)

    def _fail(self, index: int, rep: Replica, err: StorageError) -> None:
        self._went(index, 0.0, err)
        with self._lock:
            if self._index != index:  # another thread already moved on
                return
            self.attempts.append(Attempt(rep.url, rep.site, err))
            self._index += 1
            nxt = self.replica
        if nxt is not None:
            # INFO, not WARNING: failing over is the designed path; the CLI shows it with -v.
            log.info("%s: replica %s failed (%s); continuing from %s", self.name, rep.url,
                        type(err).__name__, nxt.url)

    def _check(self, index: int, rep: Replica) -> int:
        """Stat a replica once; its size must match the catalog's and the first replica's."""
        if index in self._checked and self._size is not None:
            return self._size
        info = self._transport(index, rep).info(rep.url)
        size = info.get("size")
        if info.get("type") == "directory":
            raise StorageIsADirectoryError("is a folder, not a file", name=self.name,
                                           url=rep.url)
        expected = self.resolved.size if self.resolved.size is not None else self._size
        if size is None:
            size = expected
        if size is None:
            raise StorageError("server did not report a size", name=self.name, url=rep.url)
        if expected is not None and size != expected:
            raise StorageError(f"size {size} differs from the expected {expected} "
                               "(stale or different replica)", name=self.name, url=rep.url)
        with self._lock:
            self._size = size
            self._checked.add(index)
        return int(size)

    def _attempt(self, index: int, rep: Replica, op: Sequence[tuple[int, int]] | None
                 ) -> list[bytes] | int:
        """One replica's answer to ``op`` (None: its size), after its size check."""
        size = self._check(index, rep)
        if op is None:
            return size
        with self._lock:
            self.counters.upstream_requests += 1  # failed ones were sent too
        started = time.monotonic()
        data = self._transport(index, rep).cat_ranges(rep.url, op)
        for (start, end), chunk in zip(op, data, strict=True):
            want = max(0, min(end, size) - start)
            if len(chunk) != want:
                raise StorageError(f"short read at {start}: {len(chunk)} of {want} bytes",
                                   name=self.name, url=rep.url)
        self._went(index, started)
        with self._lock:
            self._answered.add(index)
        return data

    def _guarded(self, index: int, rep: Replica, op: Sequence[tuple[int, int]] | None
                 ) -> list[bytes] | int:
        """:meth:`_attempt`, left for the next replica when slower than the floor."""
        settings = self.transports.settings.replicas
        nbytes = sum(e - s for s, e in op) if op else 0
        deadline = (slow_deadline(nbytes, settings, index not in self._answered)
                    if index + 1 < len(self.replicas) else None)
        if deadline is None:
            return self._attempt(index, rep, op)
        try:
            return run_guarded(lambda: self._attempt(index, rep, op), deadline)
        except Overdue:
            raise StorageTooSlowError(
                f"slower than replicas.slow_floor ({int(settings.slow_floor)} B/s): "
                f"{nbytes} bytes not read within {deadline:.1f} s", name=self.name,
                url=rep.url) from None

    def _hedged(self, index: int, op: Sequence[tuple[int, int]] | None
                ) -> list[bytes] | int | None:
        """The first request of the file, hedged: sent to the next replica too when this one
        has not answered within the usual latency. None: both failed (recorded), go on."""
        latency = self.transports.latency
        settings = self.transports.settings.replicas
        second = index + 1
        t0 = time.monotonic()
        primary = Started(lambda: self._attempt(index, self.replicas[index], op))
        try:
            result = primary.future.result(timeout=hedge_delay(latency.estimate, settings))
        except FutureTimeout:
            pass
        else:
            latency.observe(time.monotonic() - t0)
            return result
        hedge = Started(lambda: self._attempt(second, self.replicas[second], op))
        which = {primary.future: index, hedge.future: second}
        pending: set[Future[list[bytes] | int]] = set(which)
        errors: dict[int, StorageError] = {}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = which[fut]
                exc = fut.exception()
                if exc is not None:
                    if not isinstance(exc, StorageError):
                        raise exc
                    errors[i] = exc
                    continue
                latency.observe(time.monotonic() - t0)
                latency.hedged(won=i == second)
                if i == second:
                    # The first is left behind: recorded as an attempt (it shows in a final
                    # error), its request going on unobserved.
                    late = errors.get(index) or StorageTooSlowError(
                        f"no answer within {time.monotonic() - t0:.1f} s, while another "
                        "replica answered (hedged request)", name=self.name,
                        url=self.replicas[index].url)
                    self._fail(index, self.replicas[index], late)
                return fut.result()
        latency.hedged(won=False)
        for i in (index, second):
            self._fail(i, self.replicas[i], errors[i])
        return None

    def _claim_hedge(self, index: int) -> bool:
        """Whether this, the file's first request, is hedged (once per file, and only with a
        second replica to ask)."""
        with self._lock:
            first, self._began = not self._began, True
        # Never hedged away from the site proxy: a cold cache is slower than a direct replica
        # for the first bytes, by design; its own timeout deals with a stalled one.
        hedge = (first and self.transports.settings.replicas.hedge
                 and index + 1 < len(self.replicas) and self.replicas[index].role != "proxy")
        if first and not hedge:
            self._first.set()
        return hedge

    def _run(self, what: str, op: Sequence[tuple[int, int]] | None) -> list[bytes] | int:
        while True:
            with self._lock:
                index = self._index
            rep = self.replicas[index] if index < len(self.replicas) else None
            if rep is None:
                raise exhausted(self.name, self.attempts, what)
            try:
                if self._claim_hedge(index):
                    try:
                        result = self._hedged(index, op)
                    finally:
                        self._first.set()
                    if result is None:
                        continue
                    return result
                if not self._first.is_set():
                    # Another thread is hedging the first request: wait for the replica it
                    # settles on rather than pile onto the slow one.
                    self._first.wait()
                    continue
                return self._guarded(index, rep, op)
            except StorageError as err:
                self._fail(index, rep, err)

    def stat(self) -> dict[str, object]:
        """``info`` of the file or folder from the first replica that answers (with failover)."""
        while True:
            with self._lock:
                index = self._index
            if index >= len(self.replicas):
                raise exhausted(self.name, self.attempts, "stat")
            rep = self.replicas[index]
            try:
                info = self._transport(index, rep).info(rep.url)
                if info.get("type") == "directory":
                    return {**info, "size": 0}
                return {**info, "size": self._check(index, rep)}
            except StorageError as err:
                self._fail(index, rep, err)

    def size(self) -> int:
        result = self._run("stat", None)
        assert isinstance(result, int)
        return result

    def prepare(self) -> None:
        """Open the replica in use ahead of the first read, where the transport keeps open
        files (XRootD). A replica that cannot be opened is failed over as a read would be;
        when none can, the first read raises."""
        while True:
            with self._lock:
                index = self._index
            if index >= len(self.replicas):
                return
            rep = self.replicas[index]
            try:
                if self._proxied and index == 0:
                    self._transport(index, rep).prepare(rep.url)
                else:
                    self.transports.prepare(rep)
                return
            except StorageError as err:
                self._fail(index, rep, err)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes of each ``[start, end)``; ends past the file are clipped, like a file read."""
        if not ranges:
            return []
        # Plain ints from here down: a numpy offset is fine, a float is the caller's TypeError
        # (raised before any request, so never counted as a replica's failure).
        result = self._run("read", [(operator.index(a), operator.index(b)) for a, b in ranges])
        assert isinstance(result, list)
        got = sum(len(chunk) for chunk in result)
        with self._lock:
            c = self.counters
            c.requests += 1
            c.ranges += len(ranges)
            c.bytes_read += got
            c.upstream += got
        return result

    def read(self, start: int, end: int) -> bytes:
        return self.read_ranges([(start, end)])[0]

    def hold(self) -> None:
        """Nothing is cached here, so nothing to keep from eviction."""

    def release(self) -> None:
        """See :meth:`hold`."""
