"""An area of a disk tier: one trust domain's folder, its entries, and what is written there.

Inside an area (``ROOT/trusted``, ``ROOT/users/UID``, ``ROOT/group``)::

    e/ab/NAMEKEY/        one entry per name (see :mod:`.entry`)
    r/NODE.PID.START.N   reader records of this area's processes (see :mod:`.records`)
    trash/               entries on their way out (one rename in, emptied by descriptor)
    tmp/                 whole files being made (conversions), renamed into an entry
    evict.lease/         the eviction lease (see :mod:`.lease`)
    usage.json           the area's summary, written by its passes

Only the area's owner writes here (the folder's mode says so and :mod:`.trust` checks it), so
nothing found in an area of another owner is ever written, removed or trusted by this process
beyond what the trust model accepts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import CacheWriteError
from . import fsops
from .entry import Entry, PackRef, claim_name
from .fsops import (
    Folder,
    ProcessId,
    create_exclusive,
    publish,
    remove_tree,
    temp_name,
    umask,
)
from .identity import Identity
from .lease import Lease, lease
from .pack import (
    COMPLETE,
    RANGE,
    BlockSummer,
    Record,
    encode,
    encode_head,
    parse_head,
    plan_layout,
)
from .ranges import Range, Spans
from .trust import AreaSpec, Me, TierOwner, accepted

__all__ = ["Area", "ClaimHandle"]

MAX_OPEN_ENTRIES = 64
"""Entries (folder and pack descriptors) kept open per area; older ones are closed."""
COMPACT_LIMIT = 512 * 1024**2
"""Entries whose packs hold more than this are not compacted (they are rare: staged files are
one pack already), so a compaction reads and writes a bounded amount."""
ABSENT_TTL = 10.0
"""Seconds an entry found absent is not looked for again by plain reads (single flight and
writes always look): a process reading from the trusted area does not pay a failed open in
its own area per read."""


class ClaimHandle:
    """A claim this process published; removed by :meth:`Area.release_claim`."""

    def __init__(self, entry: Entry, name: str, ranges: Sequence[Range], born: int = 0) -> None:
        self.entry = entry
        self.name = name
        self.ranges = list(ranges)
        self.born = born
        """When it reached the folder: its mtime in ns as the storage stamped it (0: not
        taken yet, or unknown); see :meth:`stamp`."""
        self.beat: int | None = None
        self._stamping = threading.Lock()
        self._tried = born != 0

    def stamp(self) -> int:
        """:attr:`born`, taken on first use by one ``stat``: single flight needs it only when
        another claim overlaps this one (then it orders them), so a reader alone makes no
        request for it. Taken before the first heartbeat moves the mtime (which takes it
        first), and tried once: 0 if the claim could not be stat'ed then (names decide)."""
        with self._stamping:
            folder = self.entry.folder
            if not self._tried and folder is not None and folder.fd >= 0:
                self._tried = True
                with contextlib.suppress(OSError):
                    self.born = os.stat(self.name, dir_fd=folder.fd,
                                        follow_symlinks=False).st_mtime_ns
            return self.born

    def heartbeat(self) -> None:
        self.stamp()
        if self.entry.folder is not None and self.entry.folder.fd >= 0:
            with self._stamping, contextlib.suppress(OSError):
                os.utime(self.name, dir_fd=self.entry.folder.fd, follow_symlinks=False)


class Area:
    """One area of a tier, as this process uses it. Thread-safe."""

    def __init__(self, tier: str, spec: AreaSpec, folder: Folder, owner: TierOwner, me: Me,
                 dir_mode: int, file_mode: int, writable: bool) -> None:
        self.tier = tier
        self.spec = spec
        self.folder = folder
        self.owner = owner
        self.me = me
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.writable = writable
        self.proc = ProcessId.mine()
        self.lease_area: Area = self
        """Where this area's pass lease lives: the area itself where only its steward writes;
        for the group area, this process's own area (members could plant a lease folder in
        the group area and keep every pass out)."""
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._sub: dict[str, Folder] = {}

    def __str__(self) -> str:
        return f"{self.tier}:{self.spec}"

    def pass_lease(self) -> contextlib.AbstractContextManager[Lease | None]:
        """The lease a pass over this area holds (None: another live process has it)."""
        home = self.lease_area
        name = "evict" if home is self else f"{self.spec.kind}-evict"
        return lease(home.folder.fd, name, home.dir_mode, home.file_mode,
                     lambda uid: uid in (home.steward, 0))

    def accepts(self, uid: int) -> bool:
        return accepted(self.spec, uid, self.owner)

    def mine(self, uid: int) -> bool:
        """May this process remove a file owned by ``uid`` here? Its own files in an area it
        writes (root: any)."""
        return self.writable and (uid == self.me.uid or self.me.uid == 0)

    # -- folders -------------------------------------------------------------------------------
    def sub(self, name: str, create: bool = False, private: bool = False) -> Folder | None:
        """A top folder of the area (``e``, ``r``, ``trash``, ``tmp``, ``traffic``), kept
        open; ``private`` ones are the steward's alone (0700)."""
        with self._lock:
            got = self._sub.get(name)
            if got is not None:
                return got
            if create and self.writable:
                got = self.folder.make(name, 0o700 if private else self.dir_mode, stat=False)
            else:
                got = self.folder.try_open(name, stat=False)
            if got is not None:
                self._sub[name] = got
            return got

    # -- entries -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def using(self, name_key: str, create: bool = False) -> Iterator[Entry]:
        """The entry of ``name_key``, listed on first use, kept open while used (an absent
        entry has no folder; with ``create`` it is made)."""
        entry = self._get(name_key, create)
        entry.enter()
        try:
            yield entry
        finally:
            entry.leave()
            self._trim()

    def _get(self, name_key: str, create: bool) -> Entry:
        with self._lock:
            entry = self._entries.get(name_key)
            if entry is None:
                entry = Entry(str(self.spec), name_key, None, self.accepts, self.mine)
                self._entries[name_key] = entry
            else:
                self._entries.move_to_end(name_key)
        if entry.folder is None and (create or time.monotonic() - entry.absent_at > ABSENT_TTL):
            self._attach(entry, create)
        return entry

    def _attach(self, entry: Entry, create: bool) -> None:
        """Open (or with ``create`` make) the folder of an entry known to have none."""
        if create and not self.writable:
            create = False
        # Just found absent: make it without looking again.
        fresh = create and time.monotonic() - entry.absent_at < 1.0
        folder, made = self._open_entry(entry.name_key, create, look=not fresh)
        with entry.lock:
            if entry.folder is None and folder is not None:
                entry.folder = folder
                if made:  # made by us just now: empty, nothing to list
                    entry.listed, entry.listed_at = True, time.monotonic()
                else:
                    entry.load()
                return
            if folder is None:
                entry.absent_at = time.monotonic()
        if folder is not None:
            folder.close()

    def materialize(self, entry: Entry) -> None:
        """Create the folder of an entry that had none (its first write or claim)."""
        if entry.folder is None:
            self._attach(entry, True)

    def recheck(self, entry: Entry) -> None:
        """Does an entry absent so far exist now? (One open; single flight asks.)"""
        if entry.folder is None:
            self._attach(entry, False)

    def _open_entry(self, name_key: str, create: bool, look: bool = True
                    ) -> tuple[Folder | None, bool]:
        """The entry's folder (and whether this call made it); with ``create`` made if
        missing, without looking first when ``look`` is false."""
        found = None
        if look:
            with contextlib.suppress(OSError):
                found = self.folder.try_open(f"e/{name_key[:2]}/{name_key}", stat=False)
        if found is not None or not create or not self.writable:
            return found, False
        e = self.sub("e", create=True)
        assert e is not None
        with _made(e, name_key[:2], self.dir_mode)[0] as fan:
            return _made(fan, name_key, self.dir_mode)

    def _trim(self) -> None:
        with self._lock:
            while len(self._entries) > MAX_OPEN_ENTRIES:
                for key, entry in self._entries.items():
                    if entry.users <= 0:
                        del self._entries[key]
                        entry.close()
                        break
                else:
                    return  # all in use: allow more for now

    def forget(self, name_key: str) -> None:
        """Drop what this process knows of an entry it removed (a reader using it keeps its
        open packs until done, and lists again at its next miss)."""
        with self._lock:
            entry = self._entries.get(name_key)
            if entry is None:
                return
            if entry.users > 0:
                entry.baseline = None
                return
            del self._entries[name_key]
        entry.close()

    # -- writing -------------------------------------------------------------------------------
    def _writing(self) -> contextlib.AbstractContextManager[None]:
        return _as_cache_write_error(str(self))

    def write_pack(self, ident: Identity, pieces: Sequence[tuple[int, bytes]],
                   info: dict[str, Any], flags: int = 0) -> int:
        """Publish one pack of ``pieces`` of ``ident``; returns its size on disk."""
        with self._writing(), self.using(ident.name_key, create=True) as entry:
            self.materialize(entry)
            if entry.folder is None:
                raise PermissionError(errno.EACCES, "cannot create the entry", str(self))
            chunks = encode(ident.key, ident.size, info, pieces, flags=flags)
            name = f"p.{time.time_ns():016x}.{self.proc.tag()}.{os.urandom(3).hex()}"
            tmp = temp_name()
            fd = create_exclusive(entry.folder.fd, tmp, self.file_mode, readable=True)
            with entry.publishing(name):
                with fsops.renamed_when_written(entry.folder.fd, fd, tmp, name):
                    n = fsops.write_chunks(fd, chunks)
                # Its descriptor stays open: later reads of these bytes need no open, no fstat.
                entry.add_own(name, parse_head(bytes(chunks[0]), n), self.me.uid, fd)
            return n

    def drop_stale(self, entry: Entry, key: str) -> int:
        """Remove this user's packs of other contents of the entry's name (the file changed:
        the old bytes can never be served again); returns bytes freed."""
        freed = 0
        if entry.folder is None:
            return 0
        for ref in [r for r in entry.heads_refs() if r.head.key != key and self.mine(r.uid)]:
            with contextlib.suppress(OSError):
                os.unlink(ref.name, dir_fd=entry.folder.fd)
                freed += ref.head.pack_len
        if freed:
            entry.baseline = None
            entry.load()
        return freed

    def after_write(self, ident: Identity, compact_after: int) -> int:
        """Tidy the entry after a pack of ``ident`` landed: drop this user's packs of older
        contents, and merge its packs of ``ident`` once there are ``compact_after`` of them.
        Returns the bytes freed."""
        with self.using(ident.name_key) as entry:
            if entry.folder is None:
                return 0
            freed = self.drop_stale(entry, ident.key) if any(
                r.head.key != ident.key for r in entry.heads_refs()) else 0
            own = sum(1 for r in entry.heads_refs()
                      if r.head.key == ident.key and self.mine(r.uid) and not r.head.has_blobs)
        if own >= compact_after:
            freed += self.compact(ident)
        return freed

    def compact(self, ident: Identity, limit: int = COMPACT_LIMIT, *,
                known: bool = False) -> int:
        """Merge this user's packs of ``ident`` in its entry into one (the union of their
        ranges, overlaps stored once); the new pack is written in place under a temporary name
        and published by rename, then the old ones are removed. Returns the bytes saved (0:
        nothing done). With ``known`` (this process is ending), the packs this process wrote
        are merged without listing the folder again or waiting for others' claims: only its
        own, by name (two readers of one user ending at once, each merging every pack it knew,
        left two whole copies of the file; 16 readers on the emulator, 18 MB for 6)."""
        with self._writing(), self.using(ident.name_key) as entry:
            if entry.folder is None:
                return 0
            if not known:
                entry.load()
            tag = self.proc.tag()
            own = [r for r in entry.heads_refs() if r.head.key == ident.key
                   and self.mine(r.uid) and not r.head.has_blobs  # blob packs stay whole
                   and (not known or _writer_tag(r.name) == tag)]
            if len(own) < 2 or (not known and entry.live_claims(None, 30.0)):
                return 0
            if sum(r.head.pack_len for r in own) > limit:
                return 0  # huge entries are left as they are (staged files are one pack)
            spans = Spans((rec.start, rec.end, (ref, rec)) for ref in own
                          for rec in ref.head.ranges())
            segments = spans.held()
            items = [(RANGE, s, e, "") for s, e in segments]
            info = dict(max(own, key=lambda r: r.head.info.get("learnt") or 0).head.info)
            flags = COMPLETE if any(r.head.complete for r in own) else 0
            data_end, offsets = plan_layout(info, items)
            tmp = temp_name(".t") + "c"
            name = f"p.{time.time_ns():016x}.{self.proc.tag()}.{os.urandom(3).hex()}"
            fd = create_exclusive(entry.folder.fd, tmp, self.file_mode, readable=True)
            with entry.publishing(name, *(r.name for r in own)):
                with fsops.renamed_when_written(entry.folder.fd, fd, tmp, name):
                    records = []
                    for (s, e), off in zip(segments, offsets, strict=True):
                        # The checksums are of the bytes meant (read and verified from the
                        # old packs), not read back: a write that went wrong is then caught
                        # by the next read, never blessed with its own checksum (and a
                        # network filesystem is not asked for the pack's bytes again).
                        summer = BlockSummer()
                        fsops.write_chunks(fd, _summed(_parts(spans, (s, e), entry), summer),
                                           off)
                        records.append(Record(RANGE, s, e, off, summer.sums()))
                    head = encode_head(ident.key, ident.size, info, records, flags)
                    fsops.write_all(fd, head, 0)
                    if not records:
                        os.ftruncate(fd, len(head))
                new = max(data_end, len(head))
                old = sum(r.head.pack_len for r in own)
                for r in own:
                    with contextlib.suppress(OSError):
                        os.unlink(r.name, dir_fd=entry.folder.fd)
                entry.replace_own([r.name for r in own], name, parse_head(head, new),
                                  self.me.uid, fd)
            return old - new

    def publish_claim(self, entry: Entry, ranges: Sequence[Range]) -> ClaimHandle | None:
        """Claim the fetch of ``ranges`` (one file per fetch batch); None if the area takes
        no claims (not ours to write, read-only, full)."""
        if entry.folder is None or not self.writable or not ranges:
            return None
        name = claim_name(time.time_ns(), ranges, self.proc)
        body = json.dumps({"ranges": [list(r) for r in ranges]}).encode()
        try:
            fd = create_exclusive(entry.folder.fd, name, self.file_mode)
        except OSError:
            return None
        try:
            os.write(fd, body)  # one write: a reader sees it all, or nothing and the envelope
        except OSError:
            pass
        finally:
            os.close(fd)  # on NFS the close flushes the write: the stamp others will see
        handle = ClaimHandle(entry, name, ranges)
        entry.own_claim(name, ranges, handle.stamp)
        return handle

    def release_claim(self, claim: ClaimHandle) -> None:
        claim.entry.own_claim_gone(claim.name)
        folder = claim.entry.folder
        if folder is not None and folder.fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(claim.name, dir_fd=folder.fd)

    def pin(self, ident: Identity, until: float) -> bool:
        with self._writing(), self.using(ident.name_key, create=True) as entry:
            self.materialize(entry)
            if entry.folder is None:
                return False
            publish(entry.folder.fd, "pin", [json.dumps({"until": until}).encode()],
                    self.file_mode)
            entry.pinned_until = until
            return True

    def unpin(self, name_key: str) -> bool:
        with self.using(name_key) as entry:
            if entry.folder is None or not self.writable:
                return False
            try:
                os.unlink("pin", dir_fd=entry.folder.fd)
            except OSError:
                return False
            entry.pinned_until = 0.0
            return True

    # -- removing ------------------------------------------------------------------------------
    def remove_entry(self, name_key: str) -> int:
        """Move the entry into the trash (one rename: readers stop finding it at once) and
        empty it; returns the bytes freed. PermissionError if it is not ours to remove."""
        if not self.writable:
            raise PermissionError(errno.EACCES, "not an area this user writes", str(self))
        trash = self.lease_area.sub("trash", create=True)  # the group area's: in one's own
        assert trash is not None
        try:
            fan = self.folder.open(f"e/{name_key[:2]}")
        except OSError:
            return 0
        with fan:
            try:
                st = os.stat(name_key, dir_fd=fan.fd, follow_symlinks=False)
            except FileNotFoundError:
                return 0
            if not self.mine(st.st_uid):
                raise PermissionError(errno.EPERM, "entry owned by another user", name_key)
            moved = temp_name("x")
            try:
                os.rename(name_key, moved, src_dir_fd=fan.fd, dst_dir_fd=trash.fd)
            except FileNotFoundError:
                return 0
        self.forget(name_key)
        return remove_tree(trash.fd, moved)

    def empty_trash(self) -> int:
        """Remove what earlier passes (or killed ones) left in the trash."""
        trash = self.sub("trash")
        if trash is None or not self.writable:
            return 0
        freed = 0
        for e in list(trash.names()):
            with contextlib.suppress(OSError):
                freed += remove_tree(trash.fd, e.name)
        return freed

    @property
    def steward(self) -> int:
        """Whose summaries, leases and pins steer this area: the user of a user area, the
        tier's owner for the trusted and group areas."""
        return self.spec.uid if self.spec.uid is not None else self.owner.uid

    def read_usage(self) -> dict[str, Any]:
        """The area's last summary, if its steward wrote it."""
        return fsops.read_owned_json(self.folder.fd, "usage.json", self.steward, 16 * 1024**2)

    def write_usage(self, summary: dict[str, Any]) -> None:
        if self.writable and self.me.uid in (self.steward, 0):
            with contextlib.suppress(OSError):
                publish(self.folder.fd, "usage.json", [json.dumps(summary).encode()],
                        self.file_mode)

    def close(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                entry.close()
            self._entries.clear()
            for f in self._sub.values():
                f.close()
            self._sub.clear()
            self.folder.close()


def _parts(spans: Spans[tuple[PackRef, Record]], segment: Range,
           entry: Entry) -> Iterator[bytes]:
    """The bytes of ``segment`` in order, read (and verified) from the packs holding them."""
    assert entry.folder is not None
    for lo, hi, (ref, rec) in spans.parts(segment):
        data = ref.read(rec, lo, hi, entry.folder.fd)
        if isinstance(data, str):
            raise OSError(errno.EIO, f"pack {ref.name} is {data}")
        yield data


def _summed(parts: Iterator[bytes], summer: BlockSummer) -> Iterator[bytes]:
    for data in parts:
        summer.feed(data)
        yield data


def _writer_tag(pack: str) -> str:
    """The ``NODE.PID.START`` of the process that wrote pack ``p.TIME.NODE.PID.START.RAND``."""
    return pack.split(".", 2)[-1].rpartition(".")[0]


def _made(parent: Folder, name: str, mode: int) -> tuple[Folder, bool]:
    """``parent/name`` made (or found) and opened, and whether it was made here: mkdir first,
    since it is looked for only after it was found missing (two operations, not four)."""
    try:
        os.mkdir(name, mode, dir_fd=parent.fd)
        made = True
    except FileExistsError:
        made = False
    sub = parent.open(name, stat=made and bool(mode & umask or mode & 0o7000))
    if made and (mode & umask or mode & 0o7000) and stat.S_IMODE(sub.st.st_mode) != mode:
        os.fchmod(sub.fd, mode)
    return sub, made


@contextlib.contextmanager
def _as_cache_write_error(where: str) -> Iterator[None]:
    """A write into the tier that fails raises CacheWriteError, one line naming the area."""
    try:
        yield
    except CacheWriteError:
        raise
    except OSError as exc:
        raise CacheWriteError(exc.errno or errno.EIO,
                              f"cache tier {where}: {exc.strerror or exc}") from exc
