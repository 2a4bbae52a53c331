"""Cheap accounting: counters in memory, appended to a per-process journal now and then.

Each process writes only its own journal file (``ROOT/journal/HOST-PID-START.jsonl``), so no
locking is needed on any filesystem. A line is a JSON object of counters for one entry since
the last flush::

    {"t": 1732540000.0, "user": "jdoe", "group": "cms", "key": "...", "name": "cms:/store/...",
     "dataset": "cms:/TTJets/...", "site": "T2_IT_Legnaro", "memory": 0, "local": 1048576,
     "shared": 0, "upstream": 65536, "inserted": 65536, "requests": 12}

Reports (``htpdata report``) fold these files; nothing on the read path waits for them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import weakref
from collections import defaultdict
from pathlib import Path

__all__ = ["COUNTERS", "Journal"]

# "staged": bytes `htpdata stage` fetched (not reads: kept out of hit ratios)
COUNTERS = ("memory", "local", "shared", "upstream", "inserted", "requests", "staged")
_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


class Journal:
    def __init__(self, folder: Path | None, user: str, group: str,
                 flush_every: float = 10.0) -> None:
        self.folder = folder
        self.user = user
        self.group = group
        self.flush_every = flush_every
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        self._labels: dict[str, tuple[str, str | None, str | None]] = {}
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._path: Path | None = None
        self.totals = dict.fromkeys(COUNTERS, 0)
        _journals.add(self)

    def add(self, key: str, name: str, dataset: str | None, site: str | None = None,
            **counts: int) -> None:
        with self._lock:
            old_site = self._labels.get(key, ("", None, None))[2]
            self._labels[key] = (name, dataset, site or old_site)
            row = self._counts[key]
            for k, v in counts.items():
                row[k] += v
                self.totals[k] += v
            due = time.monotonic() - self._last > self.flush_every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
            labels = dict(self._labels)
            self._last = time.monotonic()
        if not counts or self.folder is None:
            return
        now = time.time()
        lines = []
        for key, row in counts.items():
            name, dataset, site = labels.get(key, ("", None, None))
            lines.append(json.dumps({"t": now, "user": self.user, "group": self.group,
                                     "key": key, "name": name, "dataset": dataset,
                                     "site": site, **row}))
        with contextlib.suppress(OSError):  # accounting never breaks a read
            if self._path is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._path = self.folder / (f"{socket.gethostname()}-{os.getpid()}-"
                                            f"{int(now)}.jsonl")
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")


@atexit.register
def _flush_all() -> None:
    for j in list(_journals):
        j.flush()
