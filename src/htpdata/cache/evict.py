"""Keeping areas within bounds: what to evict (pure policies) and the eviction pass (I/O).

Policies are data, a table of sort keys, so adding one is one line. A pass works on one area
(the user's own, or, run as the tier's owner, the trusted and group areas) under the area's
lease, with a heartbeat: it folds the reader records (marks in use, access stamps), scans the
entries (a few numbers each, never their ranges), asks :func:`choose_victims` which go, and
moves each victim into the area's trash with one rename, then empties the trash by descriptor.
Entries pinned, or marked in use by a live process, are never taken. What this user may not
remove (another member's entry in the group area) is skipped and counted, never an error.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..quotas import limits_for
from .area import Area
from .fold import fold_area
from .fsops import Folder, read_small
from .scan import EntryStat, scan_area
from .summary import summarize

__all__ = ["POLICIES", "EvictionReport", "Quota", "area_need", "choose_victims", "evict_area",
           "fold_now", "needed_bytes", "over_quota", "parse_quotas", "tally_area"]

POLICIES: dict[str, Callable[[EntryStat], tuple[float, ...]]] = {
    # least recently used first
    "lru": lambda e: (e.last_access,),
    # least often opened first, then least recently
    "lfu": lambda e: (float(e.opens), e.last_access),
    # largest first (frees most with fewest removals), then least recently
    "size": lambda e: (-float(e.bytes), e.last_access),
}
LEASE_CHECK = 256
"""Entries removed between two checks that the pass still holds its lease."""


@dataclass(frozen=True)
class Quota:
    soft: int = 0
    hard: int = 0


def parse_quotas(raw: object) -> dict[str, dict[str, Quota]]:
    """``{"users": {name: Quota}, "groups": {name: Quota}}`` from ``quota.json``'s content
    (``*`` is everyone's default); what is malformed is left out."""
    out: dict[str, dict[str, Quota]] = {"users": {}, "groups": {}}
    if not isinstance(raw, dict):
        return out
    for kind in ("users", "groups"):
        rows = raw.get(kind)
        if not isinstance(rows, dict):
            continue
        for who, q in rows.items():
            if not isinstance(who, str) or not isinstance(q, dict):
                continue
            try:
                soft, hard = int(q.get("soft", 0)), int(q.get("hard", 0))
            except (TypeError, ValueError):
                continue
            if soft >= 0 and hard >= 0:
                out[kind][who] = Quota(soft, hard)
    return out


def needed_bytes(total: int, size: int, high: float, low: float) -> int:
    """Bytes to free: none below the high watermark, else down to the low watermark."""
    if size <= 0 or total <= high * size:
        return 0
    return int(total - low * size)


def area_need(total: int, cap: int, fs_used: int, fs_total: int, high: float,
              low: float) -> int:
    """Bytes an area must free: down to ``low`` of its cap once past ``high``, and, when the
    filesystem itself is past ``high``, the same share of the area as of the filesystem must
    go (every area frees its part; no user's pass frees another's)."""
    need = needed_bytes(total, cap, high, low)
    if fs_total > 0 and fs_used > high * fs_total and fs_used > 0:
        need = max(need, int(total * (fs_used - low * fs_total) / fs_used))
    return need


def choose_victims(entries: Sequence[EntryStat], need: int, policy: str, now: float,
                   in_use: frozenset[str] | set[str] = frozenset(),
                   over: Mapping[int, int] | None = None) -> list[EntryStat]:
    """Which entries to remove: first those of owners (uids) over their hard quota, theirs
    until each is under, then by ``policy`` until ``need`` bytes are freed. Never pinned
    entries, never entries in use."""
    key = POLICIES[policy.lower()]
    free = [e for e in entries if e.key not in in_use and e.pinned_until <= now]
    chosen: list[EntryStat] = []
    taken: set[str] = set()
    for uid, excess in sorted((over or {}).items()):
        for e in sorted((e for e in free if e.uid == uid and e.key not in taken), key=key):
            if excess <= 0:
                break
            chosen.append(e)
            taken.add(e.key)
            excess -= e.bytes
    freed = sum(e.bytes for e in chosen)
    for e in sorted(free, key=key):
        if freed >= need:
            break
        if e.key not in taken:
            chosen.append(e)
            freed += e.bytes
    return chosen


def over_quota(quotas: Mapping[str, Mapping[str, Quota]], by_user: Mapping[str, int],
               by_group: Mapping[str, int], limit: str = "hard") -> dict[str, int]:
    """Owners past their ``limit`` (``hard`` or ``soft``) and by how many bytes:
    ``{"user:jdoe": 1234, "group:cms": 99}``."""
    out = {}
    for kind, usage in (("users", by_user), ("groups", by_group)):
        for who, used in usage.items():
            q = limits_for(quotas, kind, who)
            cap = (q.hard if limit == "hard" else q.soft) if q else 0
            if cap and used > cap:
                out[f"{kind[:-1]}:{who}"] = used - cap
    return out


@dataclass
class EvictionReport:
    tier: str
    area: str = ""
    total_before: int = 0
    freed: int = 0
    removed: int = 0
    skipped_busy: int = 0
    skipped_foreign: int = 0
    """Victims this user may not remove (another member's, in the group area)."""
    entries: int = 0
    pinned: int = 0
    ignored_marks: int = 0
    lease_lost: bool = False
    stopped: bool = False
    """Asked to stop (its process's client closing) before it was done."""
    by_uid: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, other: EvictionReport) -> None:
        for k in ("total_before", "freed", "removed", "skipped_busy", "skipped_foreign",
                  "entries", "pinned", "ignored_marks"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.lease_lost = self.lease_lost or other.lease_lost
        self.stopped = self.stopped or other.stopped
        for uid, b in other.by_uid.items():
            self.by_uid[uid] = self.by_uid.get(uid, 0) + b
        self.seconds += other.seconds
        self.area = ", ".join(a for a in (self.area, other.area) if a)


def read_quotas(root: Folder | None, owner: int | None) -> dict[str, dict[str, Quota]]:
    """The tier's ``quota.json``, honoured only when its owner (or root) wrote it."""
    got = read_small(root.fd, "quota.json", 1024**2) if root is not None else None
    if got is None or owner is None or got[1].st_uid not in (owner, 0):
        return parse_quotas(None)
    try:
        return parse_quotas(json.loads(got[0]))
    except ValueError:
        return parse_quotas(None)


def over_by_uid(stats: Sequence[EntryStat],
                quotas: Mapping[str, Mapping[str, Quota]]) -> dict[int, int]:
    """Owners (uids) past their hard quota, or in a group past its, and by how much."""
    import grp
    import pwd

    by_uid: dict[int, int] = {}
    by_gid: dict[int, int] = {}
    for e in stats:
        by_uid[e.uid] = by_uid.get(e.uid, 0) + e.bytes
        by_gid[e.gid] = by_gid.get(e.gid, 0) + e.bytes
    out: dict[int, int] = {}
    for uid, used in by_uid.items():
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        q = limits_for(quotas, "users", name)
        if q is not None and q.hard and used > q.hard:
            out[uid] = used - q.hard
    for gid, used in by_gid.items():
        try:
            gname = grp.getgrgid(gid).gr_name
        except KeyError:
            gname = str(gid)
        q = limits_for(quotas, "groups", gname)
        if q is not None and q.hard and used > q.hard:
            mine: dict[int, int] = {}
            for e in stats:
                if e.gid == gid:
                    mine[e.uid] = mine.get(e.uid, 0) + e.bytes
            for uid, b in mine.items():  # the group's excess, charged to its members pro rata
                out[uid] = max(out.get(uid, 0), (used - q.hard) * b // used)
    return out


def evict_area(area: Area, *, high: float, low: float, policy: str, cap: int,
               drop: Folder | None = None, need: int | None = None, dry_run: bool = False,
               tier_column: str = "shared",
               quotas: Mapping[str, Mapping[str, Quota]] | None = None,
               now: float | None = None,
               stop: Callable[[], bool] | None = None) -> EvictionReport | None:
    """One pass over ``area``; None if another process holds its lease. ``cap`` is the
    area's bound (0: only the filesystem's fullness); ``need`` forces freeing that much.
    ``stop`` is asked before each entry scanned and each victim removed: when it says yes
    the pass ends there (``stopped``; what it removed stays removed, a scan cut short writes
    no summary), and the next pass, of any process, does the rest."""
    t0 = time.monotonic()
    now = time.time() if now is None else now
    report = EvictionReport(area.tier, str(area.spec))
    if not area.writable:
        return report
    with area.pass_lease() as held:
        if held is None:
            return None
        folded = fold_area(area, drop, now, tier_column=tier_column)
        report.ignored_marks = folded.ignored_marks
        stats = []
        for e in scan_area(area, tidy=not dry_run, now=now):
            if stop is not None and stop():
                report.stopped = True
                report.seconds = time.monotonic() - t0
                return report
            stats.append(e)
        total = sum(e.bytes for e in stats)
        fs_used, fs_total = fs_usage(area.folder) if need is None else (0, 0)
        want = area_need(total, cap, fs_used, fs_total, high, low) if need is None else need
        over = over_by_uid(stats, quotas) if quotas else {}
        victims = choose_victims(stats, want, policy, now, folded.in_use, over)
        report.total_before, report.entries = total, len(stats)
        report.pinned = sum(1 for e in stats if e.pinned_until > now)
        for e in stats:
            report.by_uid[str(e.uid)] = report.by_uid.get(str(e.uid), 0) + e.bytes
        removed: set[str] = set()
        for i, e in enumerate(victims):
            if dry_run:
                report.freed += e.bytes
                report.removed += 1
                continue
            if stop is not None and stop():
                report.stopped = True
                break
            if i % LEASE_CHECK == LEASE_CHECK - 1 and not held.held():
                report.lease_lost = True  # taken over (this pass stalled): stop here
                break
            if not area.mine(e.uid) and area.me.uid != 0:
                report.skipped_foreign += 1
                continue
            try:
                freed = area.remove_entry(e.key)
            except PermissionError:
                report.skipped_foreign += 1
                continue
            except OSError:
                report.skipped_busy += 1
                continue
            report.freed += freed
            report.removed += 1
            removed.add(e.key)
        if not dry_run:
            area.empty_trash()
            kept = [e for e in stats if e.key not in removed]
            area.write_usage(summarize(kept, now, names=area.spec.kind != "group",
                                       in_use=frozenset(folded.in_use),
                                       records=folded.records))
    report.seconds = time.monotonic() - t0
    return report


def tally_area(area: Area, drop: Folder | None = None, *, tier_column: str = "shared",
               now: float | None = None) -> dict[str, Any] | None:
    """Fold the records and rescan ``area`` without removing anything (``report
    --refresh``); writes and returns its summary. None if a pass holds the lease now."""
    now = time.time() if now is None else now
    if not area.writable or area.me.uid not in (area.steward, 0):
        return area.read_usage()
    with area.pass_lease() as held:
        if held is None:
            return None
        folded = fold_area(area, drop, now, tier_column=tier_column)
        stats = scan_area(area, details=area.spec.kind != "group", now=now)
        summary = summarize(stats, now, names=area.spec.kind != "group",
                            in_use=frozenset(folded.in_use), records=folded.records)
        area.write_usage(summary)
        return summary


def fold_now(area: Area, drop: Folder | None = None, *, tier_column: str = "shared") -> bool:
    """Fold the area's reader records now (traffic, stamps), if no pass holds its lease."""
    if not area.writable or area.me.uid not in (area.steward, 0):
        return False
    with area.pass_lease() as held:
        if held is None:
            return False
        fold_area(area, drop, time.time(), tier_column=tier_column)
        return True


def fs_usage(folder: Folder) -> tuple[int, int]:
    """(used, total) bytes of the filesystem holding ``folder``."""
    try:
        du = shutil.disk_usage(f"/proc/self/fd/{folder.fd}")
    except OSError:
        return 0, 0
    return du.used, du.total
