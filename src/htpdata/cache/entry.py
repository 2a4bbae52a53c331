"""One entry folder as this process knows it: its packs' index, its claims, its pin.

An entry is one *name* (``AREA/e/ab/NAMEKEY/``); its packs carry the content identity they
belong to, so a reader whose identity changed (a new size or adler32) ignores the old ones. The
folder is listed once per process; afterwards one ``fstat`` of the folder says whether a pack or
claim was published or removed since (a rename or unlink in a folder changes its mtime, ctime or
inode), and only then is it listed again. A hit needs no metadata operation at all: the packs
stay open and a pack removed by eviction keeps serving from its open descriptor.

Names in an entry folder::

    p.TIME.NODE.PID.START.RAND    a pack (write-once; see :mod:`.pack`)
    c.TIME.LO-HI.NODE.PID.START   a claim: "this process is fetching these ranges"
    w.KEY                         a whole file stored as it is (converted outputs)
    pin                           {"until": T}: not evicted before T
    a                             the access stamp: its mtime is the last access
    .t.NODE.PID.RAND              a file being written (never read)
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
from dataclasses import dataclass, field

from .fsops import Folder, ProcessId, process_alive, read_small
from .pack import HEAD_READ, Head, NeedMore, PackError, Record, parse_head, span, verify_blocks
from .plan import ClaimView
from .ranges import Range, Spans

__all__ = ["ClaimRef", "Entry", "PackRef", "claim_name", "parse_claim_name"]

log = logging.getLogger("htpdata.cache")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CLAIM_LIMIT = 1024**2  # bytes a claim file may hold
FIRST_SIGHT_TRIES = 5
"""Reads of a claim seen empty (between its create and its one write) before its create's
stamp is taken for it (2, 4, 6, 8 ms apart)."""
PIN_LIMIT = 4096
FUTURE = 60.0
"""Seconds an mtime may lie ahead of this node's clock (skew) before it is ignored as forged."""


def claim_name(t_ns: int, ranges: Sequence[Range], proc: ProcessId) -> str:
    lo = min(s for s, _ in ranges)
    hi = max(e for _, e in ranges)
    return f"c.{t_ns:016x}.{lo:x}-{hi:x}.{proc.tag()}"


def parse_claim_name(name: str) -> tuple[Range, ProcessId] | None:
    parts = name.split(".", 3)
    if len(parts) != 4 or parts[0] != "c" or len(parts[1]) != 16:
        return None
    lo, _, hi = parts[2].partition("-")
    proc = ProcessId.from_tag(parts[3])
    try:
        envelope = (int(lo, 16), int(hi, 16))
        int(parts[1], 16)
    except ValueError:
        return None
    if proc is None or envelope[1] <= envelope[0]:
        return None
    return envelope, proc


GONE, DAMAGED = "gone", "damaged"


class _OwnClaims:
    """The claims this process holds, by entry and name, with their ranges and how to have
    their arrival stamps (taken on first need): another thread of this process that lists
    them knows them without a ``stat`` or an ``open`` (and knows them alive: a released one is
    simply not here)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.proc = ProcessId.mine()
        self.held: dict[tuple[str, str, str], tuple[tuple[Range, ...], Callable[[], int]]] = {}

    def me(self) -> ProcessId:
        if os.getpid() != self.pid:  # a forked child holds none of its parent's claims
            with self.lock:
                self.pid, self.proc, self.held = os.getpid(), ProcessId.mine(), {}
        return self.proc


OWN_CLAIMS = _OwnClaims()


@dataclass
class PackRef:
    """A pack: its head, and the descriptor its bytes are read from (-1: not opened yet, for
    a pack this process published itself)."""

    name: str
    head: Head
    fd: int
    uid: int
    ino: int

    def read(self, record: Record, lo: int, hi: int, folder_fd: int) -> bytes | str:
        """Bytes ``[lo, hi)`` of the file from ``record``, every block verified; or why not:
        :data:`GONE` (removed before this process opened it, or gone from under a network
        filesystem) or :data:`DAMAGED` (a block does not match its checksum)."""
        block = self.head.block
        first, off, n = span(record, lo - record.start, hi - record.start, block)
        try:
            if self.fd < 0:
                self._reopen(folder_fd)
            data = os.pread(self.fd, n, off)
        except OSError as exc:
            return GONE if exc.errno in (errno.ENOENT, errno.ESTALE) else DAMAGED
        if len(data) != n or not verify_blocks(record, first, data, block):
            return DAMAGED
        skip = lo - record.start - first * block
        return data[skip:skip + hi - lo]

    def _reopen(self, folder_fd: int) -> None:
        """Open a pack this process published (known without reading it back) on first use;
        it must still be the file written (same size and owner)."""
        fd = os.open(self.name, _OPEN, dir_fd=folder_fd)
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_size != self.head.pack_len
                or st.st_uid != self.uid):
            os.close(fd)
            raise OSError(errno.ESTALE, "pack replaced", self.name)
        self.fd, self.ino = fd, st.st_ino

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


@dataclass
class ClaimRef:
    """A claim found in the folder; its ranges are read only when its envelope matters."""

    name: str
    envelope: Range
    proc: ProcessId
    ranges: tuple[Range, ...] | None = None
    uid: int | None = None
    """Its file's owner, once read or stat'ed."""
    checked: float = 0.0
    """When its liveness was last judged (monotonic), and the verdict."""
    alive: bool = True
    born: int = 0
    """Its file's mtime (ns) when first seen: when it reached the folder (0: not seen yet)."""


@dataclass
class Entry:
    """An entry folder of one area (None folder: the entry does not exist, yet)."""

    area_rel: str
    name_key: str
    folder: Folder | None
    accepts: Callable[[int], bool]
    """Which file owners this area accepts (see :func:`.trust.accepted`)."""
    mine: Callable[[int], bool]
    """Which files this process may remove (its own, in an area it may write)."""
    packs: dict[str, PackRef] = field(default_factory=dict)
    claims: dict[str, ClaimRef] = field(default_factory=dict)
    wholes: dict[str, int] = field(default_factory=dict)
    """``w.KEY`` files seen: name -> owner uid."""
    pinned_until: float = 0.0
    stamped: bool = False
    temps: list[str] = field(default_factory=list)
    baseline: tuple[int, int, int] | None = None
    listed: bool = False
    absent_at: float = float("-inf")
    """When (monotonic) the folder was last found absent."""
    listed_at: float = float("-inf")
    _fresh: tuple[int, int, int] | None = None
    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    _spans: dict[str, Spans[tuple[PackRef, Record]]] = field(default_factory=dict)
    _retired: list[PackRef] = field(default_factory=list)
    _settling: set[str] = field(default_factory=set)
    """Packs this process is publishing or replacing (:meth:`publishing`): a listing
    meanwhile neither opens them (:meth:`add_own` follows at once: no open, no ``fstat``, no
    head read) nor forgets them (a merge's old packs serve until :meth:`replace_own`)."""
    _own_pending: set[str] = field(default_factory=set)
    """Packs gone from the folder or dropped, closed once no reader is using the entry (a
    descriptor closed under a reading thread could be reused for another file)."""

    # -- listing ----------------------------------------------------------------------------
    def changed(self) -> bool:
        """Has the folder changed since it was listed? One ``fstat``. The first time, a
        listing made within the last second counts as current (its folder was opened
        without a ``fstat``, which a read served from the packs never needs)."""
        if self.folder is None:
            return True
        try:
            st = self.folder.refresh()
        except OSError:
            return True
        now = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if self.baseline is None and self.listed and time.monotonic() - self.listed_at < 1.0:
            self.baseline = now
            return False
        self._fresh = now
        return self.baseline != now

    def load(self, *, baseline: bool = False) -> None:
        """List the folder and open the packs not seen yet; forget those gone. With
        ``baseline`` its state is recorded, so :meth:`changed` can tell later (from the
        ``fstat`` :meth:`changed` just made, if any: not a second one)."""
        if self.folder is None:
            return
        with self.lock:
            if baseline:
                if self._fresh is not None:
                    self.baseline, self._fresh = self._fresh, None
                else:
                    with contextlib.suppress(OSError):
                        st = self.folder.refresh()
                        self.baseline = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            try:
                names = self.folder.list()  # under the lock: listings of one descriptor
            except OSError:
                names = []
            seen = set()
            claims: dict[str, ClaimRef] = {}
            self.temps = []
            self.wholes = {}
            self.stamped = False
            pinned = 0.0
            for name in names:
                seen.add(name)
                if name.startswith("p."):
                    if name not in self.packs and name not in self._settling:
                        ref = self._open_pack(name)
                        if ref is not None:
                            self.packs[name] = ref
                            self._spans.clear()
                elif name.startswith("c."):
                    old = self.claims.get(name)
                    if old is not None:
                        claims[name] = old
                    elif (parsed := parse_claim_name(name)) is not None:
                        claims[name] = ClaimRef(name, parsed[0], parsed[1])
                elif name.startswith("w."):
                    with contextlib.suppress(OSError):
                        self.wholes[name] = os.stat(name, dir_fd=self.folder.fd,
                                                    follow_symlinks=False).st_uid
                elif name == "pin":
                    pinned = self._read_pin()
                elif name == "a":
                    self.stamped = True
                elif name.startswith(".t."):
                    self.temps.append(name)
            self._own_pending -= seen
            for name in [n for n in self.packs if n not in seen and n not in self._own_pending
                         and n not in self._settling]:
                self._retire(self.packs.pop(name))
            self.claims = claims
            self.pinned_until = pinned
            self.listed = True
            self.listed_at = time.monotonic()

    def _open_pack(self, name: str) -> PackRef | None:
        assert self.folder is not None
        try:
            fd = os.open(name, _OPEN, dir_fd=self.folder.fd)
        except OSError:
            return None  # gone, a symlink, a FIFO that is no pack
        keep = False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self.accepts(st.st_uid):
                return None  # a foreign file: never read, never trusted
            buf = os.pread(fd, HEAD_READ, 0)
            try:
                try:
                    head = parse_head(buf, st.st_size)
                except NeedMore as more:
                    head = parse_head(os.pread(fd, more.length, 0), st.st_size)
            except PackError as exc:
                self._damaged(name, st.st_uid, str(exc))
                return None
            keep = True
            return PackRef(name, head, fd, st.st_uid, st.st_ino)
        except OSError:
            return None
        finally:
            if not keep:
                os.close(fd)

    def _damaged(self, name: str, uid: int, why: str) -> None:
        """A torn or damaged pack: never served; removed when it is ours to remove."""
        if self.mine(uid) and self.folder is not None:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.folder.fd)
            log.warning("cache: %s/%s: damaged pack %s (%s); removed, its bytes will be "
                        "fetched again", self.area_rel, self.name_key[:12], name, why)
        else:
            log.warning("cache: %s/%s: damaged pack %s (%s); ignored", self.area_rel,
                        self.name_key[:12], name, why)

    def _read_pin(self) -> float:
        assert self.folder is not None
        got = read_small(self.folder.fd, "pin", PIN_LIMIT)
        if got is None or not self.accepts(got[1].st_uid):
            return 0.0
        try:
            return float(json.loads(got[0])["until"])
        except (ValueError, KeyError, TypeError):
            return 0.0

    # -- what is held ------------------------------------------------------------------------
    def spans(self, key: str) -> Spans[tuple[PackRef, Record]]:
        """The pieces of content ``key`` held here, for O(log n) lookups."""
        with self.lock:
            got = self._spans.get(key)
            if got is None:
                got = self._spans[key] = Spans(
                    (rec.start, rec.end, (ref, rec)) for ref in self.packs.values()
                    if ref.head.key == key for rec in ref.head.ranges())
            return got

    def held(self, key: str) -> list[Range]:
        return self.spans(key).held()

    def complete(self, key: str, size: int) -> bool:
        """Does a pack of ``key`` hold the whole file, checked by its writer?"""
        with self.lock:
            return any(ref.head.key == key and ref.head.complete and ref.head.size == size
                       for ref in self.packs.values())

    def read(self, key: str, ranges: Sequence[Range]) -> list[tuple[int, bytes]]:
        """The verified bytes of the parts of ``ranges`` held for ``key``. A damaged pack is
        dropped (and removed if ours) and a vanished one forgotten; their parts are simply
        not returned (the caller fetches them)."""
        out: list[tuple[int, bytes]] = []
        bad: dict[str, str] = {}
        spans = self.spans(key)
        folder_fd = self.folder.fd if self.folder is not None else -1
        for r in ranges:
            for lo, hi, (ref, rec) in spans.parts(r):
                if bad.get(ref.name) == GONE:
                    continue
                data = ref.read(rec, lo, hi, folder_fd)  # every block checked on its own:
                if isinstance(data, str):  # a damaged block costs its range, not the pack's
                    bad[ref.name] = data
                    continue
                out.append((lo, data))
        if bad:
            with self.lock:
                for name, why in bad.items():
                    gone_ref = self.packs.pop(name, None)
                    self._own_pending.discard(name)
                    if gone_ref is not None:
                        ref = gone_ref
                        if why == DAMAGED:
                            self._damaged(name, ref.uid, "a block does not match its checksum")
                        self._retire(ref)
                self.baseline = None  # list again at the next miss
        return out

    def _retire(self, ref: PackRef) -> None:
        self._spans.clear()
        if self.users > 0:
            self._retired.append(ref)
        else:
            ref.close()

    @contextlib.contextmanager
    def publishing(self, name: str, *replacing: str) -> Iterator[None]:
        """Around the rename that publishes this process's pack ``name`` (and the removal of
        the packs in ``replacing``), up to :meth:`add_own` or :meth:`replace_own`: listings
        meanwhile leave these names as they are."""
        names = {name, *replacing}
        with self.lock:
            self._settling |= names
        try:
            yield
        finally:
            with self.lock:
                self._settling -= names

    def add_own(self, name: str, head: Head, uid: int, fd: int = -1) -> None:
        """A pack this process just published (its descriptor still open, if given): known
        without listing or reading it back."""
        with self.lock:
            old = self.packs.get(name)
            if old is not None:
                self._retire(old)
            self.packs[name] = PackRef(name, head, fd, uid, 0)
            self._own_pending.add(name)
            self._spans.clear()

    def replace_own(self, gone: Sequence[str], name: str, head: Head, uid: int, fd: int) -> None:
        """This process merged its packs ``gone`` into ``name``."""
        with self.lock:
            for n in gone:
                ref = self.packs.pop(n, None)
                self._own_pending.discard(n)
                if ref is not None:
                    self._retire(ref)
            self.add_own(name, head, uid, fd)

    def enter(self) -> None:
        with self.lock:
            self.users += 1

    def leave(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self._retired:
                for ref in self._retired:
                    ref.close()
                self._retired.clear()

    def heads(self) -> list[Head]:
        with self.lock:
            return [ref.head for ref in self.packs.values()]

    def heads_refs(self) -> list[PackRef]:
        with self.lock:
            return list(self.packs.values())

    # -- claims --------------------------------------------------------------------------------
    def live_claims(self, mine: str | None, claim_stale: float,
                    overlapping: Sequence[Range] = ()) -> list[ClaimView]:
        """Other processes' live claims (those whose envelope overlaps ``overlapping``, if
        given); a claim's ranges are read once per process, its liveness judged at most every
        second (same node: is the pid there; another node: is its heartbeat recent)."""
        out = []
        now = time.monotonic()
        me = OWN_CLAIMS.me().tag()
        for c in list(self.claims.values()):
            if c.name == mine:
                continue
            if overlapping and not any(s < c.envelope[1] and c.envelope[0] < e
                                       for s, e in overlapping):
                continue
            if c.proc.tag() == me:  # this process's: alive while it holds it, no stat, no open
                with OWN_CLAIMS.lock:
                    own = OWN_CLAIMS.held.get((self.area_rel, self.name_key, c.name))
                if own is not None:  # its stamp is taken by :meth:`with_stamps`, if needed
                    out.append(ClaimView(c.name, own[0]))
                continue
            if now - c.checked > 1.0:
                c.alive = self._alive(c, claim_stale)
                c.checked = now
            if not c.alive:
                continue
            if c.ranges is None:
                c.ranges = self._claim_ranges(c)
            out.append(ClaimView(c.name, c.ranges if c.ranges is not None else (c.envelope,),
                                 c.born))
        return out

    def with_stamps(self, views: Sequence[ClaimView]) -> list[ClaimView]:
        """``views`` with this process's claims given their arrival stamps (a ``stat`` each,
        once per claim): when claims are ordered, every one of them is ordered by its stamp,
        or the order is not one order (by name between two, by stamp between others, each of
        three can find an earlier one and nobody fetches)."""
        out = []
        for v in views:
            with OWN_CLAIMS.lock:
                own = OWN_CLAIMS.held.get((self.area_rel, self.name_key, v.name))
            out.append(ClaimView(v.name, v.ranges, own[1]()) if own is not None else v)
        return out

    def own_claim(self, name: str, ranges: Sequence[Range], stamp: Callable[[], int]) -> None:
        """This process published claim ``name``; ``stamp`` gives its arrival stamp."""
        with OWN_CLAIMS.lock:
            OWN_CLAIMS.held[(self.area_rel, self.name_key, name)] = (tuple(ranges), stamp)

    def own_claim_gone(self, name: str) -> None:
        with OWN_CLAIMS.lock:
            OWN_CLAIMS.held.pop((self.area_rel, self.name_key, name), None)

    def _alive(self, c: ClaimRef, claim_stale: float) -> bool:
        if self.folder is None:
            return False
        st: os.stat_result | None = None
        if not c.born:
            st = self._first_sight(c)
            if st is None:
                return False
        elif c.uid is None or process_alive(c.proc) is None:
            try:
                st = os.stat(c.name, dir_fd=self.folder.fd, follow_symlinks=False)
            except OSError:
                return False
            if not stat.S_ISREG(st.st_mode) or not self.accepts(st.st_uid):
                return False
            c.uid = st.st_uid
        local = process_alive(c.proc, c.uid)
        if local is not None:
            return local
        assert st is not None
        age = time.time() - st.st_mtime
        return -FUTURE <= age <= claim_stale  # a heartbeat in the future is ignored

    def _first_sight(self, c: ClaimRef) -> os.stat_result | None:
        """A claim seen for the first time: its stamp (the order of claims) and its ranges.

        Read through an open (close-to-open: its attributes fresh, not a node's cached ones)
        once its writer's one write has landed, so the stamp is the mtime its writer takes as
        its own (its ``stat`` after that write: ``ClaimHandle.stamp``), not its create's. Seen
        between the two, a claim's stamp was earlier than its writer's own: two claimers of
        one batch then each yielded to the other, nobody fetched it, and every waiter fetched
        it itself (14 of 16 readers, up to 2.4 x the WAN bytes, in 7 of 49 runs on the
        emulator's two nodes). A writer that died between its create and its write is stamped
        by its create after a few tries."""
        assert self.folder is not None
        for attempt in range(FIRST_SIGHT_TRIES):
            got = read_small(self.folder.fd, c.name, CLAIM_LIMIT)
            if got is None:
                return None  # gone, or no regular file
            data, st = got
            if not self.accepts(st.st_uid):
                return None
            if (data and st.st_size) or attempt == FIRST_SIGHT_TRIES - 1:
                c.uid = st.st_uid
                c.born = st.st_mtime_ns  # a later heartbeat moves the mtime; the order stays
                if data:
                    c.ranges = self._parse_ranges(c, data)
                return st
            time.sleep(0.002 * (attempt + 1))
        return None  # pragma: no cover - the loop returns on its last try

    def _claim_ranges(self, c: ClaimRef) -> tuple[Range, ...] | None:
        assert self.folder is not None
        got = read_small(self.folder.fd, c.name, CLAIM_LIMIT)
        if got is not None:
            c.uid = got[1].st_uid
        if got is None or not self.accepts(got[1].st_uid) or not got[0]:
            return None  # being written: its envelope stands for it meanwhile
        return self._parse_ranges(c, got[0])

    @staticmethod
    def _parse_ranges(c: ClaimRef, data: bytes) -> tuple[Range, ...]:
        try:
            raw = json.loads(data)["ranges"]
            ranges = tuple((int(s), int(e)) for s, e in raw)
        except (ValueError, KeyError, TypeError):
            return (c.envelope,)
        return tuple(r for r in ranges if c.envelope[0] <= r[0] < r[1] <= c.envelope[1])

    def remove_claim(self, name: str) -> None:
        """Remove a dead claim (only ours to remove: our own area)."""
        if self.folder is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=self.folder.fd, follow_symlinks=False)
            if self.mine(st.st_uid):
                os.unlink(name, dir_fd=self.folder.fd)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the folder and the packs (callers make sure no reader uses the entry)."""
        with self.lock:
            for ref in [*self.packs.values(), *self._retired]:
                ref.close()
            self.packs.clear()
            self._retired.clear()
            self._spans.clear()
            if self.folder is not None:
                self.folder.close()


def gone(exc: OSError) -> bool:
    return exc.errno in (errno.ENOENT, errno.ESTALE, errno.ENOTDIR, errno.ELOOP)
