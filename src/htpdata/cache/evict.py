"""Keeping tiers within bounds: what to evict (pure policies) and the eviction pass (I/O).

Policies are data, a table of sort keys, so adding one is one line. The pass scans the tier
(one ``listdir`` per fan-out folder and per entry; no file is opened except small ``meta.json``
files), asks :func:`choose_victims` which entries go, re-checks each victim for readers that
arrived meanwhile, and removes it. Pinned entries and entries open in a live process are never
taken. Owners over their hard quota lose their own unpinned entries first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .disk import DiskTier, EntryInfo
from .summary import summarize

__all__ = ["POLICIES", "EvictionReport", "Quota", "choose_victims", "evict", "lease",
           "needed_bytes", "over_quota", "read_quotas", "scan"]

POLICIES: dict[str, Callable[[EntryInfo], tuple[float, ...]]] = {
    # least recently used first
    "lru": lambda e: (e.last_access,),
    # least often opened first, then least recently
    "lfu": lambda e: (float(e.meta.get("opens", 0)), e.last_access),
    # largest first (frees most with fewest deletions), then least recently
    "size": lambda e: (-float(e.bytes), e.last_access),
}


@dataclass(frozen=True)
class Quota:
    soft: int = 0
    hard: int = 0


def read_quotas(tier: DiskTier) -> dict[str, dict[str, Quota]]:
    """``{"users": {name: Quota}, "groups": {name: Quota}}`` from the tier's ``quota.json``."""
    try:
        raw = json.loads(tier.layout.quota.read_bytes())
    except (OSError, ValueError):
        return {"users": {}, "groups": {}}
    out: dict[str, dict[str, Quota]] = {"users": {}, "groups": {}}
    for kind in ("users", "groups"):
        for who, q in (raw.get(kind) or {}).items():
            with contextlib.suppress(TypeError, ValueError):
                out[kind][who] = Quota(int(q.get("soft", 0)), int(q.get("hard", 0)))
    return out


def needed_bytes(total: int, size: int, high: float, low: float) -> int:
    """Bytes to free: none below the high watermark, else down to the low watermark."""
    if size <= 0 or total <= high * size:
        return 0
    return int(total - low * size)


def choose_victims(entries: Sequence[EntryInfo], need: int, policy: str, now: float,
                   pins: Mapping[str, float], over_quota: Mapping[str, int] | None = None
                   ) -> list[EntryInfo]:
    """Which entries to remove: first from owners over their hard quota (their own entries
    until each is under), then by ``policy`` until ``need`` bytes are freed. Never pinned
    entries, never entries with readers."""
    key = POLICIES[policy]
    free = [e for e in entries if e.readers == 0 and pins.get(e.key, 0.0) <= now]
    chosen: list[EntryInfo] = []
    taken: set[str] = set()
    for owner, excess in sorted((over_quota or {}).items()):
        for e in sorted((e for e in free if owner in _owners(e) and e.key not in taken),
                        key=key):
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


def _owners(e: EntryInfo) -> tuple[str, str]:
    return f"user:{e.meta.get('user', '?')}", f"group:{e.meta.get('group', '?')}"


def over_quota(quotas: Mapping[str, Mapping[str, Quota]], by_user: Mapping[str, int],
               by_group: Mapping[str, int], limit: str = "hard") -> dict[str, int]:
    """Owners past their ``limit`` (``hard`` or ``soft``) and by how many bytes:
    ``{"user:jdoe": 1234, "group:cms": 99}``."""
    out = {}
    for kind, usage in (("users", by_user), ("groups", by_group)):
        for who, q in quotas.get(kind, {}).items():
            cap = q.hard if limit == "hard" else q.soft
            used = usage.get(who, 0)
            if cap and used > cap:
                out[f"{kind[:-1]}:{who}"] = used - cap
    return out


@dataclass
class EvictionReport:
    tier: str
    total_before: int = 0
    freed: int = 0
    removed: int = 0
    skipped_busy: int = 0
    entries: int = 0
    pinned: int = 0
    by_user: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan(tier: DiskTier) -> tuple[list[EntryInfo], dict[str, float]]:
    """Every entry's info and the live pins (key -> deadline)."""
    return list(tier.infos()), tier.pins()


def _usage_by(entries: Iterable[EntryInfo], field_name: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for e in entries:
        out[str(e.meta.get(field_name, "?"))] += e.bytes
    return dict(out)


def evict(tier: DiskTier, *, high: float, low: float, policy: str, now: float | None = None,
          need: int | None = None, dry_run: bool = False) -> EvictionReport:
    """One eviction pass over ``tier``. ``need`` forces freeing that many bytes."""
    t0 = time.monotonic()
    now = time.time() if now is None else now
    entries, pins = scan(tier)
    total = sum(e.bytes for e in entries)
    size = tier.size
    if size <= 0:  # no configured size: the filesystem's own size is the bound
        with contextlib.suppress(OSError):
            du = shutil.disk_usage(tier.root)
            size = du.total
            total = du.used
    want = needed_bytes(total, size, high, low) if need is None else need
    quotas = read_quotas(tier)
    by_user = _usage_by(entries, "user")
    by_group = _usage_by(entries, "group")
    over = over_quota(quotas, by_user, by_group)
    victims = choose_victims(entries, want, policy, now, pins, over)
    report = EvictionReport(tier.name, total_before=total, entries=len(entries),
                            pinned=sum(1 for d in pins.values() if d > now), by_user=by_user)
    for e in victims:
        if dry_run:
            report.freed += e.bytes
            report.removed += 1
            continue
        if tier.live_readers(e.key) or tier.pinned_until(e.key) > now:
            report.skipped_busy += 1  # opened or pinned since the scan
            continue
        report.freed += tier.remove_entry(e.key)
        report.removed += 1
    report.seconds = time.monotonic() - t0
    if not dry_run:
        removed = {e.key for e in victims} if report.removed else set()
        kept = [e for e in entries if e.key not in removed or tier.entry_info(e.key)]
        tier.write_usage(summarize(kept, pins, now))
    return report


@contextlib.contextmanager
def lease(tier: DiskTier, name: str, stale_after: float = 600.0) -> Iterator[bool]:
    """An exclusive lease across nodes (an O_EXCL file, taken over when older than
    ``stale_after`` seconds); yields False if someone else holds it."""
    path = tier.root / f"{name}.lease"
    got = False
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        got = True
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > stale_after:
                path.unlink()
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                got = True
    except OSError:
        got = False
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(OSError):
                path.unlink()
