"""The tiers: one interface for the memory tier and the disk tiers, and the disk tier itself.

A disk tier is a root folder (node-local disk, or the facility's shared volume) laid out as::

    ROOT/                     owned by the tier's owner (the trusted writer), not writable by others
      htpdata-cache.json      {"format": 2}
      trusted/                the owner's area (see :mod:`.trust`)
      users/                  mode 1733: every user may create their own area, nobody may list
        UID/                  one user's area, 0700
      group/                  the group area (``cache.trust = "group"`` only), 3770
      drop/                   mode 1733: readers' records for the owner, stage requests
      quota.json              limits, honoured only when the owner wrote them
      usage.json              the owner's summary of the tier

The root is opened once per process and everything below it through descriptors (see
:mod:`.fsops`). Nothing about the tier is touched until a read or write needs it, so a process
served by a higher tier makes no operation at all on the lower ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import CacheWriteError
from .area import ABSENT_TTL, Area, ClaimHandle
from .entry import Entry
from .fsops import Folder, create_exclusive, open_beneath, publish, read_small, umask
from .identity import Identity
from .plan import ClaimView
from .ranges import Range, merge, subtract
from .records import ProcessRecord
from .trust import (
    GROUP,
    TRUSTED,
    USER,
    AreaSpec,
    Me,
    TierOwner,
    area_problem,
    modes,
    read_areas,
    write_area,
)

__all__ = ["FORMAT", "DiskTier", "Flight", "Tier"]

log = logging.getLogger("htpdata.cache")
FORMAT = 2
DEFER_ENTRIES = 64
"""Files whose few unclaimed KB a tier keeps back for their next pack at most (then stored)."""
DEFER_BYTES = 64 * 1024
"""Bytes of one file a tier keeps back at most (more: stored now, in one pack)."""
LEGACY = ("entries", "names")
"""Folders only a format-1 tier (htpdata before the pack format) has."""


class Tier(Protocol):
    """What the read path needs of every tier, memory or disk."""

    name: str

    def read(self, ident: Identity, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        """The verified bytes of the parts of ``ranges`` this tier holds, as (start, bytes)."""
        ...

    def holds_any(self, ident: Identity) -> bool:
        """Does this tier hold any byte of ``ident``?"""
        ...

    def store(self, ident: Identity, pieces: Sequence[tuple[int, bytes]],
              info: dict[str, Any], private: bool) -> int:
        """Keep ``pieces``; returns bytes stored (raises CacheWriteError when it cannot)."""
        ...


class Flight:
    """Single flight in a tier's write area for one file: the claims other processes see."""

    def __init__(self, tier: DiskTier, area: Area, entry: Entry, ident: Identity) -> None:
        self.tier = tier
        self.area = area
        self.entry = entry
        self.ident = ident
        self.claim: ClaimHandle | None = None

    def refresh(self, force: bool = False) -> None:
        """List the entry again if it changed (one ``fstat``), or anyway with ``force`` (no
        ``fstat`` then: the next :meth:`changed` takes the baseline)."""
        if self.entry.folder is None:
            self.area.recheck(self.entry)
            return
        if force:
            self.entry.baseline = None
            self.entry.load()
        elif self.entry.baseline is None or self.entry.changed():
            self.entry.load(baseline=True)

    def look(self) -> None:
        """List the entry again now, its state recorded first (the ``fstat`` :meth:`changed`
        just made, or one now), so the next :meth:`changed` tells of whatever lands after
        this listing: what a waiter polls with."""
        if self.entry.folder is None:
            self.area.recheck(self.entry)
            return
        self.entry.load(baseline=True)

    def listed_at(self) -> float:
        """When the entry was last listed, by any thread of this process (they share it: a
        listing made by one shows the packs to all, and moves the baseline :meth:`changed`
        compares with)."""
        return self.entry.listed_at

    def changed(self) -> bool:
        if self.entry.folder is None:
            self.area.recheck(self.entry)
            return self.entry.folder is not None
        return self.entry.changed()

    def read(self, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        return self.entry.read(self.ident.key, ranges)

    def held(self) -> list[Range]:
        return self.entry.held(self.ident.key)

    def claims(self, overlapping: Sequence[Range] = ()) -> list[ClaimView]:
        mine = self.claim.name if self.claim is not None else None
        return self.entry.live_claims(mine, self.tier.claim_stale, overlapping)

    def with_stamps(self, views: Sequence[ClaimView]) -> list[ClaimView]:
        """``views`` with this process's claims stamped (see :meth:`Entry.with_stamps`)."""
        return self.entry.with_stamps(views)

    def publish(self, ranges: Sequence[Range]) -> str | None:
        """Claim ``ranges``; the claim's name (None: this tier takes no claims now)."""
        if self.entry.folder is None:
            with contextlib.suppress(OSError):
                self.area.materialize(self.entry)
        self.claim = self.area.publish_claim(self.entry, ranges)
        if self.claim is None:
            return None
        from .heartbeat import HEART

        self.claim.beat = HEART.add(self.claim.heartbeat)
        return self.claim.name

    def release(self) -> None:
        claim, self.claim = self.claim, None
        if claim is not None:
            from .heartbeat import HEART

            if claim.beat is not None:
                HEART.remove(claim.beat)
            self.area.release_claim(claim)

    def take_over(self, names: Sequence[str]) -> None:
        """Remove dead claims (only ours can be in this area)."""
        for name in names:
            self.entry.remove_claim(name)


def _via_drop(area: Area) -> bool:
    """Does this process's record for ``area`` go to the owner's drop box (the trusted area,
    read by someone who is not its owner)?"""
    return area.spec.kind == TRUSTED and not area.writable


def _opener(area: Area, private: bool) -> Callable[[str, int], int]:
    """Create a reader record in ``area``'s ``r/``: one ``openat2`` from the area's descriptor
    once the folder exists (made on first need)."""
    def create(name: str, mode: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = open_beneath(area.folder.fd, f"r/{name}", flags, mode)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                folder_mode = 0o700 if private else area.dir_mode
                os.mkdir("r", folder_mode, dir_fd=area.folder.fd)
                if folder_mode & umask or folder_mode & 0o7000:
                    with Folder(open_beneath(area.folder.fd, "r"), "r", None) as made:
                        os.fchmod(made.fd, folder_mode)
            fd = open_beneath(area.folder.fd, f"r/{name}", flags, mode)
        if mode & umask:
            os.fchmod(fd, mode)
        return fd
    return create


class DiskTier:
    """A cache folder on local disk or the shared volume. Thread-safe."""

    def __init__(self, name: str, root: str | Path, size: int, *, trust: str = "owner",
                 me: Me | None = None, claim_stale: float = 30.0,
                 compact_after: int = 8) -> None:
        self.name = name
        self.root = Path(root).expanduser()
        self.size = size
        self.trust = trust
        self.me = me or Me.current()
        self.claim_stale = claim_stale
        self.compact_after = compact_after
        self.owner: TierOwner | None = None
        self.problem: str | None = None
        """Why this tier is not used at all (None: it is, or it was not looked at yet)."""
        self.write_problem: str | None = None
        """Why this process stopped writing to it (full, read-only, no area of its own)."""
        self.added = 0
        """Bytes this process stored since its last watermark check."""
        self.added_total = 0
        """Bytes this process stored since the last eviction pass."""
        self._root: Folder | None = None
        self._opened = False
        self._areas: dict[str, Area | None] = {}
        self._records: dict[str, ProcessRecord] = {}
        self._held: dict[str, int] = {}
        self._touched: set[str] = set()
        self._marked: dict[str, set[str]] = {}
        self._found: dict[str, set[str]] = {}
        self._drop_folder: Folder | None = None
        self._drop_checked = False
        self._missing = False
        self._legacy_checked = False
        self._written: dict[str, tuple[Identity, bool]] = {}
        self._absent: dict[str, float] = {}
        self._deferred: dict[tuple[str, bool], tuple[Identity, dict[str, Any],
                                                     list[tuple[int, bytes]]]] = {}
        """Bytes fetched without a claim, kept for the next pack of their file (see defer)."""
        self._lock = threading.RLock()
        self._looked_side_by_side = False

    def __repr__(self) -> str:
        return f"DiskTier({self.name!r}, {str(self.root)!r})"

    # -- opening -------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self._open() is not None and self.problem is None

    @property
    def writable(self) -> bool:
        """May this process write here (a tier not made yet is made by its first write)?"""
        return self.write_problem is None and self.problem is None and (
            self.usable or self._missing)

    def legacy(self) -> bool:
        """Is this a tier in an older format (refused)?"""
        root = self._open()
        if root is not None and self.problem is None:
            with contextlib.suppress(CacheWriteError):
                self._check_legacy(root)
        return self.problem is not None and "format 1" in self.problem

    def _open(self) -> Folder | None:
        with self._lock:
            if self._opened:
                return self._root
            self._opened = True
            try:
                folder = Folder.open_root(str(self.root))
            except FileNotFoundError:
                self._missing = True  # made by the first write (see ensure)
                return None
            except OSError as exc:
                self.problem = f"cannot open {self.root}: {exc.strerror or exc}"
                self._warn_once(f"not usable ({self.problem}); reading on without it")
                return None
            mode = stat.S_IMODE(folder.st.st_mode)
            if mode & 0o022 and folder.st.st_uid != self.me.uid:
                folder.close()
                self.problem = (f"{self.root} is writable by other users (mode {mode:04o}); "
                                f"its owner must make it 0755 (or 0750) for the tier to be used")
                self._warn_once(f"not usable ({self.problem}); reading on without it")
                return None
            if mode & 0o022:
                folder.chmod(mode & ~0o022)  # ours (made by an older htpdata): fix
            self._root = folder
            self.owner = TierOwner(folder.st.st_uid, folder.st.st_gid)
            return folder

    @property
    def is_owner(self) -> bool:
        return self._open() is not None and self.owner is not None and (
            self.owner.uid == self.me.uid)

    def ensure(self) -> None:
        """Create the tier if missing (its creator becomes its owner) and, as its owner, the
        areas' folders; raise CacheWriteError if that cannot be done."""
        with self._lock:  # many threads may write first at once: one makes the tier
            self._ensure()

    def _ensure(self) -> None:
        try:
            root = self._open()
            if root is None and self._missing:
                if not self.root.exists():
                    self.root.mkdir(parents=True, mode=0o755, exist_ok=True)
                    os.chmod(self.root, 0o755)  # mkdir's mode went through the umask
                self._reset()
                root = self._open()
            if root is None:
                raise CacheWriteError(errno.EACCES, f"cache tier {self.name}: {self.problem}")
            self._check_legacy(root)
            if self.is_owner:
                self._lay_out(root)
        except CacheWriteError:
            raise
        except OSError as exc:
            raise CacheWriteError(exc.errno or errno.EIO, f"cache tier {self.name} at "
                                  f"{self.root}: {exc.strerror or exc}") from exc

    def _reset(self) -> None:
        with self._lock:
            if self._root is not None:
                self._root.close()
            self._root, self._opened, self.problem, self._missing = None, False, None, False
            for a in self._areas.values():
                if a is not None:
                    a.close()
            self._areas.clear()
            self._looked_side_by_side = False

    def _lay_out(self, root: Folder) -> None:
        assert self.owner is not None
        drop_mode = 0o1733 if root.st.st_mode & 0o001 else 0o1730
        for name, mode in ((TRUSTED, modes(AreaSpec(TRUSTED), root.st.st_mode)[0]),
                           ("users", drop_mode), ("drop", drop_mode)):
            root.make(name, mode).close()
        if self.trust == "group":
            root.make(GROUP, 0o3770).close()
        if read_small(root.fd, "htpdata-cache.json", 4096) is None:
            with contextlib.suppress(OSError):
                publish(root.fd, "htpdata-cache.json", [json.dumps(
                    {"format": FORMAT, "tier": self.name, "created": time.time()}).encode()],
                    0o644)

    def _check_legacy(self, root: Folder) -> None:
        """A tier in an older format is refused, never misread."""
        for name in LEGACY:
            try:
                st = os.stat(name, dir_fd=root.fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                self.problem = (f"{self.root} holds a cache in the format of an older htpdata "
                                f"(format 1); it is not used. Clear it with `htpdata cache clear "
                                f"--tier {self.name} --yes` (as its owner)")
                self._warn_once(self.problem)
                raise CacheWriteError(errno.EPROTO, f"cache tier {self.name}: {self.problem}")

    # -- areas ---------------------------------------------------------------------------------
    def area(self, spec: AreaSpec, create: bool = False) -> Area | None:
        """The area ``spec`` (opened once; None if absent, refused or unusable)."""
        key = spec.rel
        with self._lock:
            if key in self._areas:
                got = self._areas[key]
                if got is not None or (not create and time.monotonic() - self._absent.get(
                        key, 0.0) < ABSENT_TTL):
                    return got
            root = self._open()
            if root is None or self.owner is None:
                return None
            got = self._open_area(root, spec, create)
            self._areas[key] = got
            if got is None:
                self._absent[key] = time.monotonic()  # not looked for again for a while
            return got

    def _open_area(self, root: Folder, spec: AreaSpec, create: bool) -> Area | None:
        assert self.owner is not None
        dir_mode, file_mode = modes(spec, root.st.st_mode)
        mine = (spec.kind == USER and spec.uid == self.me.uid) or \
            (spec.kind == TRUSTED and self.owner.uid == self.me.uid) or \
            (spec.kind == GROUP and (self.owner.gid in self.me.groups
                                     or self.owner.uid == self.me.uid))
        try:
            folder = root.try_open(spec.rel, listable=False)  # walked through, seldom listed
            if folder is None:
                if self.problem is None and spec.kind == TRUSTED and not self._legacy_checked:
                    self._legacy_checked = True  # no trusted area: a new tier, or an old one
                    with contextlib.suppress(CacheWriteError):
                        self._check_legacy(root)
                if self.problem is not None or not create or not mine:
                    return None
                folder = self._make_area(root, spec, dir_mode)
                if folder is None:
                    return None
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return None  # not ours to read (another user's area)
            self._warn_once(f"area {spec}: {exc.strerror or exc}")
            return None
        why = area_problem(spec, folder.st, self.owner)
        if why is not None and spec.kind == USER and folder.st.st_uid == self.me.uid:
            folder.chmod(0o700)  # our own area with loose modes: tighten it
            why = area_problem(spec, folder.st, self.owner)
        if why is not None:
            folder.close()
            self._warn_once(f"{self.root}/{spec.rel} is {why}; not used (its owner or root "
                            f"must remove it)")
            return None
        area = Area(self.name, spec, folder, self.owner, self.me, dir_mode, file_mode, mine)
        if spec.kind == GROUP and mine:
            own = AreaSpec(TRUSTED) if self.is_owner else AreaSpec(USER, self.me.uid)
            home = self._areas.get(own.rel) or self._open_area(root, own, True)
            if home is not None:
                self._areas[own.rel] = home
                area.lease_area = home
        return area

    def _make_area(self, root: Folder, spec: AreaSpec, dir_mode: int) -> Folder | None:
        assert self.owner is not None
        if spec.kind == USER:
            users = root.try_open("users")
            if users is None and self.is_owner:
                self._lay_out(root)
                users = root.try_open("users")
            if users is None:
                self._warn_once(f"{self.root} has no users/ folder: its owner (uid "
                                f"{self.owner.uid}) must set the tier up (any htpdata command "
                                f"it runs on the tier does)")
                return None
            with users:
                if users.st.st_uid not in (self.owner.uid, 0) or users.st.st_mode & 0o1000 == 0:
                    self._warn_once(f"{self.root}/users is not the owner's sticky folder; "
                                    "not used")
                    return None
                try:
                    os.mkdir(str(spec.uid), 0o700, dir_fd=users.fd)
                except FileExistsError:
                    pass
                return users.try_open(str(spec.uid))
        if not self.is_owner:
            return None
        self._lay_out(root)
        return root.try_open(spec.rel)

    def read_areas(self) -> list[Area]:
        if self._open() is None or self.owner is None or self.problem is not None:
            return []
        specs = read_areas(self.me, self.owner, self.trust)
        self._open_side_by_side(specs)
        return [a for spec in specs if (a := self.area(spec)) is not None]

    def _open_side_by_side(self, specs: Sequence[AreaSpec]) -> None:
        """A process's first look opens its areas at once: each open is two or three round
        trips on a network filesystem (most often one of them finds no area, the user's own),
        so all but the first are opened by short threads while this one opens the first."""
        if self._looked_side_by_side:
            return  # every read comes here: one look per process, then nothing
        with self._lock:
            root = self._root
            todo = [s for s in specs if s.rel not in self._areas and s.kind in (TRUSTED, USER)]
            self._looked_side_by_side = root is not None
        if root is None or len(todo) < 2:
            return
        found: dict[str, Area | None] = {}

        def look(spec: AreaSpec) -> None:
            with contextlib.suppress(Exception):  # the plain look below says what went wrong
                found[spec.rel] = self._open_area(root, spec, False)

        threads = [threading.Thread(target=look, args=(s,), daemon=True,
                                    name="htpdata-area") for s in todo[1:]]
        for t in threads:
            t.start()
        self.area(todo[0])
        for t in threads:
            t.join()
        with self._lock:
            for rel, got in found.items():
                if rel in self._areas:
                    if got is not None:
                        got.close()  # another thread stored its own meanwhile
                    continue
                self._areas[rel] = got
                if got is None:
                    self._absent[rel] = time.monotonic()

    def _open_to_write(self) -> bool:
        """Open the root for a write, making the tier first if it does not exist yet."""
        with self._lock:
            if self._open() is None and self._missing and self.write_problem is None:
                try:
                    self._ensure()
                except CacheWriteError as exc:
                    self.write_problem = str(exc)
                    self._warn_once(f"not usable ({exc}); reading on without it")
                    return False
            return self._open() is not None and self.owner is not None

    def write_area(self, private: bool) -> Area | None:
        if not self._open_to_write() or self.problem is not None:
            return None
        assert self.owner is not None
        return self.area(write_area(self.me, self.owner, self.trust, private), create=True)

    def my_areas(self) -> list[Area]:
        """The areas this process may remove from (its own; the trusted one if it is the
        owner; the group area if it is a member)."""
        return [a for a in self.read_areas() if a.writable]

    # -- reads ---------------------------------------------------------------------------------
    def read(self, ident: Identity, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        left = merge(ranges)
        for area in self.read_areas():
            if not left:
                break
            with area.using(ident.name_key) as entry:
                if entry.folder is None:
                    continue
                got = entry.read(ident.key, left)
            if got:
                self._mark(ident, area)
                if _via_drop(area):
                    # Its owner's reports show whom the trusted area serves: bytes by reader
                    # (the drop record's owner), per entry key, no names (in memory until the
                    # record's next write).
                    self._record(area).count(ident.name_key, served=sum(len(b) for _, b in got),
                                             requests=1)
                out += got
                left = subtract(left, [(s, s + len(b)) for s, b in got])
        return out

    def holds_any(self, ident: Identity) -> bool:
        with self._lock:
            if any(key == ident.key for key, _ in self._deferred):
                return True  # kept back for its next pack
        for area in self.read_areas():
            with area.using(ident.name_key) as entry:
                if entry.folder is not None and len(entry.spans(ident.key)):
                    return True
        return False

    def complete(self, ident: Identity) -> bool:
        """Is the whole file here, checked against its adler32 by its writer?"""
        for area in self.read_areas():
            with area.using(ident.name_key) as entry:
                if entry.folder is not None and entry.complete(ident.key, ident.size):
                    return True
        return False

    def held(self, ident: Identity) -> list[Range]:
        out: list[Range] = []
        for area in self.read_areas():
            with area.using(ident.name_key) as entry:
                if entry.folder is not None:
                    out += entry.held(ident.key)
        return merge(out)

    def known(self, name: str, name_key: str) -> tuple[int, str | None, float] | None:
        """What the tier recorded of ``name`` when it was last fetched: (size, adler32, when),
        from the newest pack this process trusts; None if nothing."""
        best: tuple[int, str | None, float] | None = None
        for area in self.read_areas():
            with area.using(name_key) as entry:
                if entry.folder is None:
                    continue
                for head in entry.heads():
                    info = head.info
                    if info.get("name") != name:
                        continue
                    learnt = info.get("learnt")
                    t = float(learnt) if isinstance(learnt, int | float) else 0.0
                    adler = info.get("adler32")
                    if best is None or t > best[2]:
                        best = (head.size, adler if isinstance(adler, str) else None, t)
        return best

    # -- writes --------------------------------------------------------------------------------
    def defer(self, ident: Identity, pieces: Sequence[tuple[int, bytes]],
              info: dict[str, Any], private: bool) -> int:
        """Keep a few KB of ``ident`` (fetched without a claim) for the next pack this process
        writes of it, instead of a pack of their own (its temporary file, rename, and later
        merge); written by :meth:`compact_written` at the process's end if no pack comes.
        Returns the bytes kept (0: none, too many kept already: stored now instead)."""
        if self.write_problem is not None or not pieces:
            return 0
        with self._lock:
            key = (ident.key, private)
            if key not in self._deferred and len(self._deferred) >= DEFER_ENTRIES:
                kept = None
            else:
                kept = self._deferred.setdefault(key, (ident, info, []))[2]
                kept += pieces
                if sum(len(b) for _, b in kept) > DEFER_BYTES:  # many readers' first reads
                    kept = None
                    pieces = self._deferred.pop(key)[2]
        if kept is None:
            return self.store(ident, pieces, info, private)
        return sum(len(b) for _, b in pieces)

    def _take_deferred(self, ident: Identity, private: bool,
                       pieces: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """``pieces`` and the bytes kept back for ``ident`` that they do not hold, by start."""
        with self._lock:
            got = self._deferred.pop((ident.key, private), None)
        if got is None:
            return list(pieces)
        have = merge((s, s + len(b)) for s, b in pieces)
        out = list(pieces)
        for s, b in got[2]:
            for lo, hi in subtract([(s, s + len(b))], have):
                out.append((lo, b[lo - s:hi - s]))
            have = merge([*have, (s, s + len(b))])
        return sorted(out, key=lambda p: p[0])

    def flush_deferred(self) -> None:
        """Write the bytes kept back by :meth:`defer` that no later pack took along and the
        entry does not hold already (a reader that waited for another process's packs finds
        its few KB there). Such a pack is not merged at the end (:meth:`compact_written`): a
        process that only waited must not rewrite the packs others wrote."""
        with self._lock:
            left, self._deferred = list(self._deferred.items()), {}
        for (_, private), (ident, info, pieces) in left:
            area = self.write_area(private) if self.write_problem is None else None
            if area is None:
                continue
            with area.using(ident.name_key) as entry:
                have = entry.held(ident.key) if entry.folder is not None else []
            rest = [(lo, b[lo - s:hi - s]) for s, b in pieces
                    for lo, hi in subtract([(s, s + len(b))], have)]
            if rest:
                with contextlib.suppress(CacheWriteError, OSError):
                    self._write(area, ident, rest, info, private, remember=False)

    def store(self, ident: Identity, pieces: Sequence[tuple[int, bytes]],
              info: dict[str, Any], private: bool) -> int:
        if self.write_problem is not None or not pieces:
            return 0
        if self._deferred:
            pieces = self._take_deferred(ident, private, pieces)
        area = self.write_area(private)
        if area is None:
            raise CacheWriteError(errno.EACCES, f"cache tier {self.name}: no area of this "
                                  f"user to write ({self.problem or 'see the warning above'})")
        return self._write(area, ident, pieces, info, private)

    def _write(self, area: Area, ident: Identity, pieces: Sequence[tuple[int, bytes]],
               info: dict[str, Any], private: bool, remember: bool = True) -> int:
        n = area.write_pack(ident, pieces, info)
        self._mark(ident, area)
        self._record(area).note(added=n)
        with self._lock:
            if remember and len(self._written) < 4096:
                self._written[ident.key] = (ident, private)
            self.added += n
            self.added_total += n
        return n

    def tidy(self, ident: Identity, private: bool) -> None:
        """After a write (and its claim's release): drop this user's packs of older contents
        of the name, and merge its packs of ``ident`` once there are ``compact_after``."""
        area = self.write_area(private) if self.write_problem is None else None
        if area is None:
            return
        freed = 0
        with contextlib.suppress(OSError):
            freed = area.after_write(ident, self.compact_after)
        if freed:
            self._record(area).note(removed=freed)

    def compact_written(self, limit: int = 64 * 1024**2) -> None:
        """Merge, into one pack each, the entries this process wrote several packs into (at
        its end: every later reader on every node opens one pack, not one per fetch batch)."""
        self.flush_deferred()
        with self._lock:
            written, self._written = list(self._written.values()), {}
        for ident, private in written:
            area = self.write_area(private) if self.write_problem is None else None
            if area is None:
                continue
            with contextlib.suppress(OSError):
                freed = area.compact(ident, limit, known=True)
                if freed:
                    self._record(area).note(removed=freed)

    @contextlib.contextmanager
    def flight(self, ident: Identity, private: bool) -> Iterator[Flight | None]:
        """Single flight for ``ident`` in the area this process writes (None: none here)."""
        area = self.write_area(private) if self.write_problem is None else None
        if area is None:
            yield None
            return
        with area.using(ident.name_key) as entry:
            flight = Flight(self, area, entry, ident)
            try:
                yield flight
            finally:
                flight.release()

    def forget_name(self, name: str) -> int:
        """Remove ``name``'s entry from this user's areas; returns the bytes freed."""
        key = Identity(name, 0).name_key
        freed = 0
        for area in self.my_areas():
            try:
                n = area.remove_entry(key)
            except OSError:
                continue
            if n:
                self.note_removed(area, n)
            freed += n
        return freed

    # -- reader records ------------------------------------------------------------------------
    def _record(self, area: Area) -> ProcessRecord:
        """This process's record for ``area`` (the drop box for the trusted area of others)."""
        drop = _via_drop(area)
        key = "drop" if drop else area.spec.rel
        with self._lock:
            rec = self._records.get(key)
            if rec is None:
                if drop:
                    rec = ProcessRecord(self._drop_opener, 0o644, drop=True)
                else:  # private but in the group area (members' marks, no names)
                    private = area.spec.kind != GROUP
                    rec = ProcessRecord(_opener(area, private),
                                        0o600 if private else area.file_mode)
                self._records[key] = rec
            return rec

    def _drop_opener(self, name: str, mode: int) -> int:
        folder = self._drop()
        if folder is None:
            raise FileNotFoundError(2, "no drop box", "drop")
        return create_exclusive(folder.fd, name, mode)

    def drop_box(self) -> Folder | None:
        """The drop box to fold, for the tier's owner only (None for everyone else)."""
        return self._drop() if self.is_owner else None

    def _drop(self) -> Folder | None:
        """``ROOT/drop``, if it is the owner's sticky folder."""
        with self._lock:
            if self._drop_checked:
                return self._drop_folder
            self._drop_checked = True
            root = self._open()
            folder = root.try_open("drop") if root is not None else None
            if folder is not None and (
                    self.owner is None or folder.st.st_uid not in (self.owner.uid, 0)
                    or not folder.st.st_mode & 0o1000):
                folder.close()
                folder = None
            self._drop_folder = folder
            return folder

    def _mark(self, ident: Identity, area: Area) -> None:
        """``ident`` was found in (or written to) ``area``: mark it there if it is held."""
        with self._lock:
            marked = self._marked.setdefault(ident.name_key, set())
            if area.spec.rel in marked:
                return
            held = self._held.get(ident.name_key, 0) > 0
            touched = ident.name_key in self._touched
            if not held and not touched:
                self._found.setdefault(ident.name_key, set()).add(area.spec.rel)
                return
            marked.add(area.spec.rel)
        rec = self._record(area)
        if held:
            rec.hold(ident.name_key)
        else:
            rec.touch(ident.name_key)

    def _areas_of(self, ident: Identity) -> list[Area]:
        with self._lock:
            rels = self._found.pop(ident.name_key, set()) | self._marked.get(ident.name_key, set())
        return [a for a in (self._areas.get(r) for r in rels) if a is not None]

    def hold(self, ident: Identity) -> None:
        """A reader opened ``ident``: mark it in use where it is (counted per reader)."""
        with self._lock:
            self._held[ident.name_key] = self._held.get(ident.name_key, 0) + 1
            if self._held[ident.name_key] > 1:
                return
        for area in self._areas_of(ident):
            self._mark(ident, area)

    def release(self, ident: Identity) -> None:
        with self._lock:
            n = self._held.get(ident.name_key, 0) - 1
            if n > 0:
                self._held[ident.name_key] = n
                return
            self._held.pop(ident.name_key, None)
            key = ident.name_key
            rels = set() if key in self._touched else self._marked.pop(key, set())
        for rel in rels:
            area = self._areas.get(rel)
            if area is not None:
                self._record(area).release(ident.name_key)

    def touch(self, ident: Identity) -> None:
        """A read of ``ident`` without an open file: keep it marked for a while."""
        with self._lock:
            first = ident.name_key not in self._touched
            self._touched.add(ident.name_key)
            if len(self._touched) > 4096:
                self._touched.clear()
        if first:
            for area in self._areas_of(ident):
                self._mark(ident, area)
        else:
            for rel in list(self._marked.get(ident.name_key, ())):
                marked = self._areas.get(rel)
                if marked is not None:
                    self._record(marked).touch(ident.name_key)

    def home(self) -> Area | None:
        """This process's own area: the trusted one for the tier's owner, else its user
        area (created on first use)."""
        if not self._open_to_write():
            return None
        spec = AreaSpec(TRUSTED) if self.is_owner else AreaSpec(USER, self.me.uid)
        return self.area(spec, create=True)

    def journal(self) -> ProcessRecord | None:
        """The record that carries this process's traffic through this tier (its own area,
        where names may be written)."""
        if self.write_problem is not None:
            return None
        area = self.home()
        return self._record(area) if area is not None else None

    def record_of(self, area: Area) -> ProcessRecord | None:
        """This process's record for ``area``, if it has one (not created here)."""
        with self._lock:
            return self._records.get("drop" if _via_drop(area) else area.spec.rel)

    def note_removed(self, area: Area, nbytes: int) -> None:
        self._record(area).note(removed=nbytes)

    def flush_records(self) -> None:
        for rec in list(self._records.values()):
            rec.flush()

    # -- messages ------------------------------------------------------------------------------
    _warned: set[str] = set()  # noqa: RUF012 - one process-wide set of lines said once
    _warned_lock = threading.Lock()

    def _warn_once(self, text: str) -> None:
        line = f"cache tier {self.name}: {text}"
        with self._warned_lock:
            if line in DiskTier._warned:
                return
            DiskTier._warned.add(line)
        log.warning("%s", line)

    def close(self) -> None:
        self.flush_deferred()
        for rec in list(self._records.values()):
            rec.close()
        self._records.clear()
        if self._drop_folder is not None:
            self._drop_folder.close()
            self._drop_folder, self._drop_checked = None, False
        self._reset()
