"""The walk of an area's entries, for eviction passes and reports (I/O, bounded memory).

One listing per fan-out folder and per entry, one ``stat`` per pack (its ``st_size`` and owner
are the entry's size and owner; packs are opaque here: no range is ever loaded), the access
stamp's mtime and size (last access, opens), and the pin. A symlink, FIFO or anything else
planted in the walk is skipped, never followed or opened. What a pass keeps per entry is a few
numbers (:class:`EntryStat`, ~120 bytes), whatever the number of ranges its packs hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .area import Area
from .fsops import DIR_FLAGS, ProcessId, process_alive, read_small
from .pack import HEAD_READ, NeedMore, PackError, parse_head

__all__ = ["EntryStat", "scan_area"]

FUTURE = 60.0
TEMP_STALE = 3600.0
"""Seconds after which a temporary file of a process of another node is taken as abandoned."""
_HEX = frozenset("0123456789abcdef")


@dataclass(slots=True)
class EntryStat:
    key: str
    """The entry's folder name (the name key)."""
    bytes: int
    last_access: float
    opens: int
    pinned_until: float
    uid: int
    gid: int
    packs: int
    claims: int
    name: str | None = None
    dataset: str | None = None
    complete: bool = False


def _hex(name: str, n: int) -> bool:
    return len(name) == n and set(name) <= _HEX


def scan_area(area: Area, *, details: bool = False, tidy: bool = False,
              now: float | None = None) -> Iterator[EntryStat]:
    """Every entry of ``area``. ``details`` reads one pack head per entry (name, dataset:
    reports); ``tidy`` removes this user's abandoned temporary files and dead claims."""
    now = time.time() if now is None else now
    e = area.sub("e")
    if e is None:
        return
    try:
        fans = sorted(x.name for x in e.names() if x.is_dir(follow_symlinks=False)
                      and _hex(x.name, 2))
    except OSError:
        return
    for fan_name in fans:
        try:
            fan = os.open(fan_name, DIR_FLAGS, dir_fd=e.fd)
        except OSError:
            continue
        try:
            with os.scandir(fan) as it:
                keys = [(x.name, x) for x in it if _hex(x.name, 40)
                        and x.is_dir(follow_symlinks=False)]
            for key, dent in sorted(keys, key=lambda k: k[0]):
                try:
                    est = dent.stat(follow_symlinks=False)
                except OSError:
                    continue
                got = _scan_entry(area, fan, key, est, details, tidy, now)
                if got is not None:
                    yield got
        except OSError:
            continue
        finally:
            os.close(fan)


def _scan_entry(area: Area, fan: int, key: str, est: os.stat_result, details: bool,
                tidy: bool, now: float) -> EntryStat | None:
    try:
        fd = os.open(key, DIR_FLAGS, dir_fd=fan)
    except OSError:
        return None
    try:
        size = packs = claims = opens = 0
        newest = 0.0
        stamp: float | None = None
        pinned = 0.0
        first_pack: str | None = None
        with os.scandir(fd) as it:
            names = list(it)
        for x in names:
            n = x.name
            if n.startswith(("p.", "w.")):
                with contextlib.suppress(OSError):
                    st = x.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and area.accepts(st.st_uid):
                        size += st.st_size
                        packs += 1
                        if st.st_mtime <= now + FUTURE:
                            newest = max(newest, min(st.st_mtime, now))
                        if first_pack is None and n.startswith("p."):
                            first_pack = n
            elif n == "a":
                with contextlib.suppress(OSError):
                    st = x.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_uid in (area.steward, 0) and \
                            st.st_mtime <= now + FUTURE:  # a stamp dated ahead is ignored
                        stamp, opens = min(st.st_mtime, now), st.st_size
            elif n == "pin":
                got = read_small(fd, "pin", 4096)
                if got is not None and got[1].st_uid in (area.steward, 0):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        pinned = float(json.loads(got[0])["until"])
            elif n.startswith("c."):
                claims += 1
                if tidy:
                    _tidy_claim(area, fd, n, now)
            elif n.startswith(".t.") and tidy:
                _tidy_temp(area, fd, n, now)
        out = EntryStat(key, size, stamp if stamp is not None else newest, opens, pinned,
                        est.st_uid, est.st_gid, packs, claims)
        if details and first_pack is not None:
            _details(area, fd, first_pack, out)
        return out
    finally:
        os.close(fd)


def _details(area: Area, folder: int, name: str, out: EntryStat) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=folder)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not area.accepts(st.st_uid):
            return
        buf = os.pread(fd, HEAD_READ, 0)
        try:
            head = parse_head(buf, st.st_size)
        except NeedMore as more:
            head = parse_head(os.pread(fd, more.length, 0), st.st_size)
        name_ = head.info.get("name")
        ds = head.info.get("dataset")
        out.name = name_ if isinstance(name_, str) else None
        out.dataset = ds if isinstance(ds, str) else None
        out.complete = head.complete
    except (OSError, PackError):
        return
    finally:
        os.close(fd)


def _tidy_claim(area: Area, folder: int, name: str, now: float) -> None:
    from .entry import parse_claim_name

    parsed = parse_claim_name(name)
    if parsed is None:
        return
    alive = process_alive(parsed[1])
    if alive is None:
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError:
            return
        alive = -FUTURE <= now - st.st_mtime <= 30.0
    if not alive:
        _remove_mine(area, folder, name)


def _tidy_temp(area: Area, folder: int, name: str, now: float) -> None:
    parts = name.split(".")
    if len(parts) < 5:
        return
    proc = ProcessId(parts[2], int(parts[3]) if parts[3].isdigit() else -1, -1)
    alive = process_alive(proc)
    if alive is None:
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError:
            return
        alive = now - st.st_mtime < TEMP_STALE
    if not alive:
        _remove_mine(area, folder, name)


def _remove_mine(area: Area, folder: int, name: str) -> None:
    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if area.mine(st.st_uid):
            os.unlink(name, dir_fd=folder)
