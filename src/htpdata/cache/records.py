"""This process's record in an area: which entries it has open, what it accessed, its traffic.

One small file per process per area, not one file per entry per open: ``AREA/r/NODE.PID.START``
in the user's own area, or ``ROOT/drop/r.RANDOM`` for readers of the trusted area who are not its
owner (a drop box only the owner can list). It holds

- ``in_use``: entries open in this process (counted per reader: two readers of one file, one
  closed, keep the mark), so eviction leaves them alone while the record's heartbeat is alive;
- ``access``: when each entry was last read, folded by the area's passes into the entries'
  access stamps (reads themselves write nothing per entry);
- ``traffic``: bytes served, fetched upstream and inserted per entry (labelled with the name and
  dataset only in the user's own area: a drop-box record names no file, and counts only what the
  trusted area served, so its owner's report shows whom it serves);
- ``added``/``removed``: bytes this process stored into and removed from the area, so quota
  decisions see a user's own writes and removals at once.

It is created on first need (one ``open``: the only metadata operation a reading process makes
for it; made by a short thread, so a warm read does not wait for that round trip, and joined by
:func:`settle` before this process folds records and by :meth:`ProcessRecord.close`),
rewritten in place through the descriptor it keeps when it changed (the heartbeat, every few
seconds; ``fdatasync`` so other nodes see it), touched otherwise, and written a last time at
exit with ``"closed": true`` so passes fold it and remove it. A pass that catches a
rewrite half done reads again.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .fsops import Folder, ProcessId, process_alive, read_small
from .heartbeat import HEART, STALE

__all__ = ["COUNTERS", "ProcessRecord", "RecordView", "parse_record", "settle"]

log = logging.getLogger("htpdata.cache")
COUNTERS = ("served", "upstream", "inserted", "requests", "staged")
"""Per entry: bytes this tier served; fetched upstream on its misses; stored; read requests;
bytes ``htpdata stage`` fetched into it (not reads: kept out of hit ratios)."""
MAX_KEYS = 4096
"""Entries one record file tracks; past this a new file starts (bounded size and memory)."""
RECORD_LIMIT = 8 * 1024**2
GRACE = 60.0
"""Seconds an entry read without an open file (``htpdata://`` ``cat_ranges``) stays marked."""
FUTURE = 60.0
_records: weakref.WeakSet[ProcessRecord] = weakref.WeakSet()
_seq = itertools.count(1)  # record names stay unique when one process has several caches
_making: set[threading.Thread] = set()
"""Threads creating a record file right now (see :meth:`ProcessRecord._publish_soon`)."""
_making_lock = threading.Lock()


def settle() -> None:
    """Wait until every record file this process started creating exists: a pass or report run
    in this process then sees this process's own marks."""
    with _making_lock:
        pending = list(_making)
    for t in pending:
        if t is not threading.current_thread():
            t.join()


class ProcessRecord:
    """This process's record in one area. Thread-safe."""

    def __init__(self, create: Callable[[str, int], int], file_mode: int, *,
                 drop: bool = False) -> None:
        self._create = create
        """Makes the record file (``name``, ``mode``) and returns its descriptor."""
        self.file_mode = file_mode
        self.drop = drop
        self.proc = ProcessId.mine()
        self.name = self._new_name()
        self.in_use: Counter[str] = Counter()
        self.marked_until: dict[str, float] = {}
        self.access: dict[str, float] = {}
        self.traffic: dict[str, dict[str, Any]] = {}
        self.added = 0
        self.removed = 0
        self._lock = threading.Lock()
        """Guards what readers change (marks, counts): held for moments, never across I/O."""
        self._io = threading.RLock()
        """Guards the file (its name, descriptor, length) across a create or write; taken
        before ``_lock``, never while holding it. Readers counting bytes never wait for a
        create or a write on the metadata server."""
        self._dirty = False
        self._created = False
        self._fd = -1
        self._length = 0
        self._beat: int | None = None
        self._failed = False
        self._maker: threading.Thread | None = None
        self._again = False
        _records.add(self)

    def _new_name(self) -> str:
        if self.drop:
            return f"r.{secrets.token_hex(16)}"
        return f"{self.proc.tag()}.{next(_seq)}"

    # -- what readers say ------------------------------------------------------------------
    def hold(self, key: str) -> None:
        with self._lock:
            self.in_use[key] += 1
            self.access[key] = time.time()
            new = self.in_use[key] == 1
            self._dirty = True
        if new:
            self._publish_soon()

    def release(self, key: str) -> None:
        with self._lock:
            if self.in_use[key] > 0:
                self.in_use[key] -= 1
            done = self.in_use[key] <= 0
            if done:
                del self.in_use[key]
                self._dirty = True
        if done:
            self._wait_made()
        if done and self._created:
            self.flush()  # in place: eviction may take it from now on

    def touch(self, key: str, grace: float = GRACE) -> None:
        """Mark ``key`` in use for ``grace`` seconds (reads with no open file)."""
        now = time.time()
        with self._lock:
            new = key not in self.marked_until and key not in self.in_use
            self.marked_until[key] = now + grace
            self.access[key] = now
            self._dirty = True
        if new:
            self._publish_soon()

    def count(self, key: str, labels: Mapping[str, str | None] | None = None,
              **counts: int) -> None:
        with self._lock:
            row = self.traffic.get(key)
            if row is None:
                row = self.traffic[key] = dict.fromkeys(COUNTERS, 0)
            if labels and not self.drop:
                for k, v in labels.items():
                    if v:
                        row[k] = v
            for c, n in counts.items():
                row[c] = row.get(c, 0) + n
            self.access[key] = time.time()
            self._dirty = True
            rotate = len(self.traffic) > MAX_KEYS
        if rotate:
            self._rotate()

    def note(self, added: int = 0, removed: int = 0) -> None:
        with self._lock:
            self.added += added
            self.removed += removed
            self._dirty = True

    # -- the file ----------------------------------------------------------------------------
    def snapshot(self, closed: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._snapshot(closed)

    def _snapshot(self, closed: bool) -> dict[str, Any]:
        """What the file says now (``_lock`` held)."""
        now = time.time()
        for k in [k for k, t in self.marked_until.items() if t < now]:
            del self.marked_until[k]
        keys = set(self.in_use) | set(self.marked_until)
        return {"v": 1, "proc": self.proc.tag(), "t": now, "closed": closed,
                "in_use": [] if closed else sorted(keys),
                "access": dict(self.access), "traffic": {k: dict(v) for k, v in
                                                          self.traffic.items()},
                "added": self.added, "removed": self.removed}

    def _publish_soon(self) -> None:
        """A new mark must be visible before eviction's next look: written now (in place, no
        metadata operation once the file exists), then the heartbeat keeps it current.

        The file's first create is a round trip to the metadata server on a network filesystem
        (two or three requests); a short thread makes it, so the read that made the mark goes on
        meanwhile. The thread writes again whatever changed while it created the file."""
        if self._created:
            self.flush()
        else:
            with self._lock:  # started under the lock: no one joins it before it runs
                if self._maker is None and not self._failed:
                    maker = self._maker = threading.Thread(target=self._make, daemon=True,
                                                           name="htpdata-record")
                    with _making_lock:
                        _making.add(maker)
                    maker.start()
                else:
                    self._again = True  # the thread at work writes once more when done
        self._ensure_beat()

    def _make(self) -> None:
        try:
            while True:
                self.flush()
                with self._lock:
                    if not self._again or self._failed:
                        self._maker = None
                        break
                    self._again = False
        finally:
            with self._lock:
                self._maker = None
            with _making_lock:
                _making.discard(threading.current_thread())

    def _wait_made(self) -> None:
        maker = self._maker
        if maker is not None and maker is not threading.current_thread():
            maker.join()

    def _ensure_beat(self) -> None:
        if self._beat is None:
            self._beat = HEART.add(self._heartbeat)

    def _heartbeat(self) -> None:
        if self._dirty or (self.marked_until and min(self.marked_until.values()) < time.time()):
            self.flush(sync=True)
        else:
            with self._io:
                if self._fd >= 0:
                    with contextlib.suppress(OSError):
                        os.utime(self._fd)  # the heartbeat: mtime now

    def flush(self, closed: bool = False, sync: bool = False) -> None:
        """Write the record: created on first use, then rewritten in place. Writes follow one
        another in the order of their snapshots."""
        with self._io:
            with self._lock:
                snap = self._take(closed)
            if snap is not None:
                self._write(snap, closed, sync)

    def _take(self, closed: bool) -> dict[str, Any] | None:
        """The snapshot to write now, None when there is nothing to write (``_lock`` held)."""
        if self._failed:
            return None
        empty = not (self.in_use or self.marked_until or self.access or self.traffic
                     or self.added or self.removed)
        if empty and not self._created:
            return None
        self._dirty = False
        return self._snapshot(closed)

    def _write(self, snap: dict[str, Any], closed: bool, sync: bool = False) -> None:
        """Write ``snap`` into the record's file (``_io`` held), creating it on first use."""
        data = json.dumps(snap, separators=(",", ":")).encode()
        try:
            if self._fd < 0:
                self._fd = self._create(self.name, self.file_mode)
                self._created = True
                self._length = 0
            if len(data) < self._length:  # pad (JSON ends in spaces): no truncate needed
                data += b" " * (self._length - len(data))
            os.pwrite(self._fd, data, 0)
            self._length = len(data)
            if sync:
                os.fdatasync(self._fd)
            if closed:
                os.close(self._fd)
                self._fd = -1
        except OSError as exc:
            with self._lock:
                self._failed = True  # accounting never breaks a read
            log.debug("cache: cannot write the reader record %s: %s", self.name, exc)

    def _rotate(self) -> None:
        self._wait_made()
        with self._io:  # no other write between the old file's last and the new one's first
            with self._lock:  # the old file's last snapshot and the reset in one hold: a
                last = self._take(closed=True)  # count landing between them is not lost
                self.traffic = {}
                self.access = {}
                self.added = self.removed = 0
                self._dirty = bool(self.in_use or self.marked_until)
            if last is not None:  # counts meanwhile go to the new file: its writes wait on _io
                self._write(last, closed=True)
            with self._lock:
                self.name = self._new_name()
                self._created = False
            if self._dirty:
                self.flush()

    def close(self) -> None:
        self._wait_made()
        if self._beat is not None:
            HEART.remove(self._beat)
            self._beat = None
        if self._created or self._dirty:
            self.flush(closed=True)
        with self._io:
            self._created = False
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1


@atexit.register
def _close_all() -> None:
    for rec in list(_records):
        with contextlib.suppress(Exception):
            rec.close()


# -- reading records (passes, reports) -----------------------------------------------------------
class RecordView:
    """A record file as a pass reads it."""

    def __init__(self, name: str, uid: int, mtime: float, raw: dict[str, Any]) -> None:
        self.name = name
        self.uid = uid
        self.mtime = mtime
        self.raw = raw
        self.proc = ProcessId.from_tag(str(raw.get("proc", "")))
        self.closed = bool(raw.get("closed"))

    def alive(self, now: float | None = None) -> bool:
        """Does its process still run (this node: its pid; others: its heartbeat)?"""
        if self.closed:
            return False
        now = time.time() if now is None else now
        age = now - self.mtime
        if age < -FUTURE:
            return False  # dated ahead: ignored
        local = process_alive(self.proc, self.uid) if self.proc is not None else None
        if local is not None:
            return local
        return age <= STALE

    def in_use(self) -> list[str]:
        keys = self.raw.get("in_use")
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def access(self, now: float) -> dict[str, float]:
        got = self.raw.get("access")
        if not isinstance(got, dict):
            return {}
        out = {}
        for k, t in got.items():
            if isinstance(k, str) and isinstance(t, int | float) and t <= now + FUTURE:
                out[k] = min(float(t), now)  # an access dated ahead counts as now, no later
        return out

    def traffic(self) -> dict[str, dict[str, Any]]:
        got = self.raw.get("traffic")
        return {k: v for k, v in got.items() if isinstance(v, dict)} \
            if isinstance(got, dict) else {}

    def bytes_delta(self) -> tuple[int, int]:
        def num(k: str) -> int:
            v = self.raw.get(k)
            return int(v) if isinstance(v, int | float) and v >= 0 else 0
        return num("added"), num("removed")


def parse_record(folder: Folder, name: str, owners: Callable[[int], bool]) -> RecordView | None:
    """A record file, if it is a regular file of an accepted owner holding a record (read again
    when caught half rewritten)."""
    for attempt in range(3):
        got = read_small(folder.fd, name, RECORD_LIMIT)
        if got is None or not owners(got[1].st_uid):
            return None
        try:
            raw = json.loads(got[0])
        except ValueError:
            if attempt == 2:
                return None
            time.sleep(0.01)
            continue
        if not isinstance(raw, dict) or raw.get("v") != 1:
            return None
        return RecordView(name, got[1].st_uid, got[1].st_mtime, raw)
    return None
