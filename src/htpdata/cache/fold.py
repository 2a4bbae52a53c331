"""Folding reader records: marks in use, access stamps, daily traffic, bytes added (I/O).

A pass over an area (eviction, ``report --refresh``) first reads the reader records of the
area's processes (``AREA/r/``; for the trusted area also the owner's drop box ``ROOT/drop/``):

- the entries live records mark in use are left alone by the pass (marks from the drop box count
  for at most :data:`MARKS_PER_USER` entries per user: a hostile reader cannot pin the tier);
- accesses set the entries' access stamps (never later than now) and add a byte to them per
  process (the stamp's length is the entry's number of opens, for the ``lfu`` policy);
- traffic is added into ``AREA/traffic/DAY.json`` (what each record added since the last fold,
  per user, group, dataset, namespace and site);
- records of processes that are gone are removed once folded.

Records are keyed by entry (the name key); nothing here reads a pack.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import json
import os
import pwd
import stat
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..names import namespace_of
from .area import Area
from .fsops import Folder, create_exclusive, publish, read_owned_json
from .records import COUNTERS, RecordView, parse_record, settle

__all__ = ["DAY_FIELDS", "Folded", "fold_area", "read_days"]

MARKS_PER_USER = 4096
DAY_FIELDS = ("user", "group", "dataset", "namespace", "site")
_STATE_LIMIT = 64 * 1024**2


@dataclass
class Folded:
    in_use: set[str] = field(default_factory=set)
    records: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Bytes added and removed by the records still present (the summary's baseline)."""
    folded: int = 0
    removed: int = 0
    ignored_marks: int = 0


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_of(uid: int) -> str:
    try:
        return grp.getgrgid(pwd.getpwuid(uid).pw_gid).gr_name
    except KeyError:
        return "-"


def _load_json(folder: Folder, name: str, owner: int) -> dict[str, Any]:
    return read_owned_json(folder.fd, name, owner, _STATE_LIMIT)


def fold_area(area: Area, drop: Folder | None, now: float, *, tier_column: str) -> Folded:
    """Fold the area's records (and the drop box's, when given); see the module docstring.
    The caller holds the area's pass lease."""
    settle()  # this process's own records, still being created, are seen too
    out = Folded()
    sources: list[tuple[Folder, bool]] = []
    r = area.sub("r")
    if r is not None:
        sources.append((r, False))
    if drop is not None:
        sources.append((drop, True))
    traffic = area.sub("traffic", create=True, private=True) if area.writable else None
    state = _load_json(traffic, "folded.json", area.steward) if traffic is not None else {}
    new_state: dict[str, Any] = {}
    days: dict[str, dict[str, Any]] = {}
    accessed: dict[str, float] = {}
    marks_by_uid: dict[int, int] = defaultdict(int)
    for folder, is_drop in sources:
        try:
            names = [e.name for e in folder.names() if not e.name.startswith(".")]
        except OSError:
            continue
        for name in names:
            if is_drop and not name.startswith("r."):
                continue
            rec = parse_record(folder, name, (lambda uid: True) if is_drop
                               else (lambda uid: uid in (area.steward, 0)))
            if rec is None:
                if is_drop:
                    _drop_junk(folder, name, now)
                continue
            alive = rec.alive(now)
            if alive:
                for key in rec.in_use():
                    if is_drop and marks_by_uid[rec.uid] >= MARKS_PER_USER:
                        out.ignored_marks += 1
                        continue
                    marks_by_uid[rec.uid] += is_drop
                    out.in_use.add(key)
            for key, t in rec.access(now).items():
                accessed[key] = max(accessed.get(key, 0.0), t)
            sid = f"{'drop/' if is_drop else ''}{name}"
            before = state.get(sid, {})
            done = _add_traffic(days, rec, before, now, tier_column, labels=not is_drop)
            new_state[sid] = done
            out.folded += 1
            if not alive and traffic is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder.fd)  # folded, and its process is gone
                new_state.pop(sid, None)
                out.removed += 1
            elif not is_drop:
                out.records[name] = rec.bytes_delta()
    for key, t in accessed.items():
        stamp_and_count(area, key, t)
    if traffic is not None:
        for day, agg in days.items():
            old = _load_json(traffic, f"{day}.json", area.steward)
            _merge_day(old, agg)
            with contextlib.suppress(OSError):
                publish(traffic.fd, f"{day}.json", [json.dumps(old).encode()], 0o600)
        with contextlib.suppress(OSError):
            publish(traffic.fd, "folded.json", [json.dumps(new_state).encode()], 0o600)
    return out


def _drop_junk(folder: Folder, name: str, now: float) -> None:
    """A drop-box name that is no record (a FIFO, a link, a huge or garbled file): removed by
    the box's owner once it is older than a heartbeat's staleness (as a name: never followed;
    a record being written is younger than that)."""
    from .heartbeat import STALE

    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return
        if now - st.st_mtime > STALE or st.st_mtime > now + 60 or not stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=folder.fd)


def _add_traffic(days: dict[str, dict[str, Any]], rec: RecordView, before: dict[str, Any],
                 now: float, column: str, labels: bool) -> dict[str, Any]:
    """Add what ``rec`` counted since ``before`` (its counters at the last fold) into the
    day of its last write; returns its counters now."""
    t = rec.raw.get("t")
    day = _day(min(float(t), now) if isinstance(t, int | float) else now)
    agg = days.setdefault(day, _empty())
    user, group = _user(rec.uid), _group_of(rec.uid)
    done: dict[str, Any] = {}
    for key, row in rec.traffic().items():
        old = before.get(key, {}) if isinstance(before.get(key), dict) else {}
        delta = {}
        for c in COUNTERS:
            v = row.get(c)
            cur = int(v) if isinstance(v, int | float) and v >= 0 else 0
            prev = old.get(c, 0) if isinstance(old.get(c, 0), int) else 0
            delta[c] = max(0, cur - prev)
            done.setdefault(key, {})[c] = cur
        if not any(delta.values()):
            continue
        counts = {column: delta["served"], "upstream": delta["upstream"],
                  "inserted": delta["inserted"], "requests": delta["requests"],
                  "staged": delta["staged"]}
        name = str(row.get("name") or "") if labels else ""
        for k, v in (("user", user), ("group", group),
                     ("dataset", row.get("dataset") if labels else None),
                     ("namespace", namespace_of(name) if name else None),
                     ("site", row.get("site") if labels else None)):
            bucket = agg[f"by_{k}"].setdefault(str(v or "-"), {})
            for c, n in counts.items():
                bucket[c] = bucket.get(c, 0) + n
        for c, n in counts.items():
            agg["totals"][c] = agg["totals"].get(c, 0) + n
    return done


def _empty() -> dict[str, Any]:
    return {"totals": {}, **{f"by_{k}": {} for k in DAY_FIELDS}}


def _merge_day(into: dict[str, Any], add: dict[str, Any]) -> None:
    for k, v in _empty().items():
        into.setdefault(k, v)
    for c, n in add["totals"].items():
        into["totals"][c] = into["totals"].get(c, 0) + n
    for k in DAY_FIELDS:
        target = into[f"by_{k}"]
        for who, row in add[f"by_{k}"].items():
            t = target.setdefault(who, {})
            for c, n in row.items():
                t[c] = t.get(c, 0) + n


def stamp_and_count(area: Area, name_key: str, t: float) -> None:
    """Set the entry's access stamp to ``t`` (never later than now, never back) and add one
    byte to it (one more open). The stamp is opened ``O_NOFOLLOW`` and must be our regular
    file: a planted symlink or FIFO is never written through."""
    if not area.writable:
        return
    try:
        with area.folder.open(f"e/{name_key[:2]}/{name_key}") as folder:
            try:
                fd = os.open("a", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, dir_fd=folder.fd)
            except FileNotFoundError:
                fd = create_exclusive(folder.fd, "a", area.file_mode)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or not area.mine(st.st_uid) or \
                        st.st_size > 1 << 30:
                    return
                now = time.time()
                t = max(min(t, now), st.st_mtime if st.st_mtime <= now else 0.0)
                os.write(fd, b".")
                os.utime(fd, (t, t))
            finally:
                os.close(fd)
    except OSError:
        pass


def read_days(area: Area, since: str = "") -> dict[str, dict[str, Any]]:
    """The area's daily traffic (days from ``since``, ``YYYY-MM-DD``), oldest first."""
    traffic = area.sub("traffic")
    if traffic is None:
        return {}
    out = {}
    with contextlib.suppress(OSError):
        for e in traffic.names():
            n = e.name
            if n.endswith(".json") and n[:4].isdigit() and n[:-5] >= since:
                day = _load_json(traffic, n, area.steward)
                if day:
                    for k, v in _empty().items():
                        day.setdefault(k, v)
                    out[n[:-5]] = day
    return dict(sorted(out.items()))
