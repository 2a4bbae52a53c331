"""The emulated server: a pyfuse3 (low-level FUSE) passthrough over one backing folder.

Each inode the kernel knows is remembered by its backing file handle (``name_to_handle_at``,
what an NFS server hands out), and reached through an ``O_PATH`` descriptor opened from it
(``open_by_handle_at``) and kept in a bounded cache, pinned while the node has the file open.
Every operation acts on those descriptors (``openat``, ``fstat``, ``renameat`` ...), never on
remembered path names, so a rename made through the *other* mount (another process, another
"node") cannot make this one act on the wrong file, and a tree of millions of files needs no
million descriptors. (Not root, or a backing filesystem without file handles: each inode's
descriptor is held from lookup to forget instead, the design of libfuse's ``passthrough_hp``.)
Node ids are the backing inode numbers, so both nodes report the same ``st_ino`` for a file, as
NFS clients report the server's file id.

The kernel checks permissions itself (``default_permissions``) with the caller's credentials and
the attributes passed through here; the server runs as root and gives what a caller creates to
the caller (``fchown`` to the caller's uid, and to the caller's gid or the folder's when the
folder is setgid), so files made by ``alice`` through a mount are owned by ``alice`` in the
backing folder too.

Network-filesystem behaviour emulated (see docs/testing.md, "The network-filesystem emulator"):

- a sleep of ``meta_latency`` in each metadata request (:data:`~.counters.META_OPS`) and of
  ``data_latency`` in each read, write and fsync, precise to a few microseconds on average
  (:class:`_Sleeper`; a ``trio.sleep`` of 1 ms lasts 1.17); requests overlap (up to 99 in
  flight), as RPCs to a real server do;
- per-node attribute and entry caches (``attr_timeout``, ``entry_timeout``; absent names are
  cached for ``negative_timeout``), like ``actimeo`` and ``lookupcache=all``;
- close-to-open for data and attributes: an ``open`` of a file whose size, mtime or ctime changed
  since this node last saw it drops the node's cached pages and attributes;
- ``ESTALE`` where NFS gives it: an inode removed in the backing folder (by the other node) that
  this node still caches answers ``open``/``getattr``/``opendir`` with ESTALE unless this node
  holds it open, and the kernel then redoes the lookup (as after an NFS server's ESTALE); a
  ``create`` that finds the name taken by the other node (this node cached it as absent) answers
  ESTALE too, so the kernel looks again and opens the existing file with the usual checks.

Not emulated: writes are written through at once (NFS may hold them until close); POSIX and
flock locks are local to each node (the kernel keeps them; NFS shares them through the server);
no silly rename (``.nfsXXXX``) for files removed while open on the same node; no extended
attributes (like NFSv3: ENOTSUP); no delegations or leases.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import itertools
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import (
    EntryAttributes,
    FileHandleT,
    FileInfo,
    FileNameT,
    FlagT,
    FUSEError,
    InodeT,
    ModeT,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
)

from ._libc import fchown_empty, file_handle, link_empty, open_by_handle, renameat2
from .counters import DATA_OPS, META_OPS, OpCounts

__all__ = ["PassthroughFs", "ServerSettings"]

log = logging.getLogger("htpdata.nfsemu")

ROOT = pyfuse3.ROOT_INODE
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# Flags the kernel has already acted on, or that would break the server's own reads and writes.
_STRIP_OPEN = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_DIRECT
_FOREIGN_BASE = 1 << 62  # node ids for inodes on another device than the backing folder's

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[P, Coroutine[Any, Any, R]]


@dataclass
class ServerSettings:
    """What one node's server does; the latencies can be changed while it runs."""

    meta_latency: float = 0.001  # seconds per metadata request
    data_latency: float = 0.0  # seconds per read, write, fsync
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    negative_timeout: float = 1.0
    close_latency: bool = False  # also sleep meta_latency in flush/release (NFSv4 CLOSE)
    nfs_round_trips: bool = False  # no sleep in opendir, nor in a readdir past the last name
    fd_cache: int = 4096  # O_PATH descriptors kept open for inodes reached by file handle


class _Sleeper:
    """Sleeps of a configured latency, as precise as the machine allows.

    ``trio.sleep`` cannot sleep less than a whole millisecond past the request (its epoll
    timeout is in whole milliseconds, rounded up), and wakes late besides: 1.17 ms for 1 ms,
    which made the "1 ms" emulator a 1.23 ms one as its clients saw it. Here one thread holds
    the deadlines and wakes each sleeping request through trio's token; how late the wakes have
    come so far is taken off the next deadlines (a running correction), so a request sleeps the
    latency, on average, within a few microseconds."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._due: list[tuple[float, int, trio.Event]] = []
        self._wake = threading.Condition()
        self._ids = itertools.count()
        self._bias = 0.0  # seconds the wakes have come late, on average
        threading.Thread(target=self._run, daemon=True, name="nfsemu-sleeper").start()

    def _run(self) -> None:
        with self._wake:
            while True:
                if not self._due:
                    self._wake.wait()
                    continue
                left = self._due[0][0] - time.perf_counter()
                if left > 0:
                    self._wake.wait(left)
                    continue
                event = heapq.heappop(self._due)[2]
                try:
                    self._token.run_sync_soon(event.set)
                except trio.RunFinishedError:
                    return

    async def sleep(self, delay: float) -> None:
        event = trio.Event()
        start = time.perf_counter()
        with self._wake:
            heapq.heappush(self._due, (start + delay - self._bias, next(self._ids), event))
            self._wake.notify()
        await event.wait()
        late = time.perf_counter() - start - delay
        self._bias = min(delay / 2, max(0.0, self._bias + 0.1 * late))


class _Inode:
    """One inode the kernel holds a reference to: how to reach it, and its reference counts.

    ``handle`` is the backing inode's file handle (``name_to_handle_at``), what an NFS server
    keeps; ``fd`` an O_PATH descriptor opened from it when needed and kept in a bounded cache
    (pinned while the node has the file open). A backing filesystem without file handles gets
    ``handle`` None and a descriptor held until the kernel forgets the inode.
    """

    __slots__ = ("fd", "handle", "nlookup", "opens", "seen")

    def __init__(self, fd: int, handle: bytes | None, seen: tuple[int, int, int]) -> None:
        self.fd: int | None = fd
        self.handle = handle
        self.nlookup = 1
        self.opens = 0  # open files and folders on this node
        self.seen = seen  # (size, mtime_ns, ctime_ns) as last told to this node's kernel


class _Handle:
    __slots__ = ("nodeid", "wrote")

    def __init__(self, nodeid: int) -> None:
        self.nodeid = nodeid
        self.wrote = False


class _Dir:
    __slots__ = ("entries", "nodeid")

    def __init__(self, nodeid: int) -> None:
        self.nodeid = nodeid
        self.entries: list[bytes] | None = None


def _seen(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _request(op: str) -> Callable[[Handler[P, R]], Handler[P, R]]:
    """Count ``op``, sleep its latency, run it, and turn any error into a FUSE errno.

    pyfuse3 lets a handler raise only FUSEError; anything else would end the main loop, i.e.
    hang or kill the mount for every client. An unexpected error is logged and answered EIO.
    """
    def wrap(fn: Handler[P, R]) -> Handler[P, R]:
        @functools.wraps(fn)
        async def handler(*args: P.args, **kwargs: P.kwargs) -> R:
            fs = args[0]
            assert isinstance(fs, PassthroughFs)
            await fs.account(op, fs.not_an_nfs_round_trip(op, args))
            try:
                return await fn(*args, **kwargs)
            except FUSEError:
                raise
            except OSError as exc:
                raise FUSEError(exc.errno or errno.EIO) from None
            except Exception:
                log.exception("nfsemu: %s failed", op)
                raise FUSEError(errno.EIO) from None
        return handler
    return wrap


class PassthroughFs(pyfuse3.Operations):
    """The FUSE operations of one node over ``backing`` (see the module docstring)."""

    supports_dot_lookup = False  # no NFS export of the mount: the kernel never looks up . or ..
    enable_writeback_cache = False  # writes reach the server (and the other node) at once
    enable_acl = False

    def __init__(self, backing: str, settings: ServerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.root_fd = os.open(backing, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # open_by_handle_at wants a real descriptor of the filesystem, not an O_PATH one
        self.mount_fd = os.open(backing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self.root_fd)
        self._root_key = (st.st_dev, st.st_ino)
        self._dev = st.st_dev
        self.inodes: dict[int, _Inode] = {ROOT: _Inode(self.root_fd, None, _seen(st))}
        self._fds: OrderedDict[int, None] = OrderedDict()  # node ids whose fd may be closed
        self.inodes[ROOT].nlookup = 1 << 62  # never forgotten
        self._foreign: dict[tuple[int, int], int] = {}
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, _Dir] = {}
        self._owner = os.geteuid() == 0  # only root can give files to their callers
        self._by_handle = self._owner  # and open inodes by file handle
        self._ops: dict[str, int] = {}
        self._bytes_read = 0
        self._bytes_written = 0
        self._slept = 0.0
        self._sleeper: _Sleeper | None = None

    # -- counters ------------------------------------------------------------------------
    async def account(self, op: str, free: bool = False) -> None:
        """Count ``op`` and sleep its latency (``free``: counted, not slept)."""
        self._ops[op] = self._ops.get(op, 0) + 1
        s = self.settings
        delay = 0.0 if free else (
            s.meta_latency if op in META_OPS or (s.close_latency and op in ("flush", "release"))
            else s.data_latency if op in DATA_OPS else 0.0)
        if delay > 0:
            self._slept += delay
            if self._sleeper is None:
                self._sleeper = _Sleeper(trio.lowlevel.current_trio_token())
            await self._sleeper.sleep(delay)

    def not_an_nfs_round_trip(self, op: str, args: tuple[object, ...]) -> bool:
        """With ``nfs_round_trips``: is this a request an NFS client would not send? An
        ``opendir``, or a ``readdir`` from past the last name of a listing this handle has
        already sent whole (the kernel asks once more to find the end; READDIR's reply says
        so)."""
        if not self.settings.nfs_round_trips:
            return False
        if op == "opendir":
            return True
        if op == "readdir" and len(args) > 2:
            fh, start = args[1], args[2]
            d = self._dirs.get(fh) if isinstance(fh, int) else None
            return (d is not None and d.entries is not None and isinstance(start, int)
                    and 0 < len(d.entries) <= start)
        return False

    def counters(self) -> OpCounts:
        return OpCounts(dict(self._ops), self._bytes_read, self._bytes_written, self._slept)

    def reset(self) -> OpCounts:
        before = self.counters()
        self._ops = {}
        self._bytes_read = self._bytes_written = 0
        self._slept = 0.0
        return before

    # -- inodes --------------------------------------------------------------------------
    def _nodeid(self, st: os.stat_result) -> int:
        key = (st.st_dev, st.st_ino)
        if key == self._root_key:
            return ROOT
        if st.st_dev == self._dev and 1 < st.st_ino < _FOREIGN_BASE:
            return st.st_ino
        return self._foreign.setdefault(key, _FOREIGN_BASE + len(self._foreign))

    def _inode(self, nodeid: int) -> _Inode:
        try:
            return self.inodes[nodeid]
        except KeyError:
            raise FUSEError(errno.ESTALE) from None

    def _fd(self, nodeid: int) -> int:
        """An O_PATH descriptor of the inode; ESTALE if it is gone from the backing folder."""
        ino = self._inode(nodeid)
        if ino.fd is not None:
            if nodeid in self._fds:
                self._fds.move_to_end(nodeid)
            return ino.fd
        assert ino.handle is not None
        try:
            ino.fd = open_by_handle(self.mount_fd, ino.handle, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise FUSEError(exc.errno or errno.ESTALE) from None  # removed: ESTALE, as NFS
        self._unpin(nodeid)
        return ino.fd

    def _unpin(self, nodeid: int) -> None:
        """Let the inode's descriptor be closed when the cache is full (file handle known)."""
        self._fds[nodeid] = None
        self._fds.move_to_end(nodeid)
        while len(self._fds) > self.settings.fd_cache:
            old, _ = self._fds.popitem(last=False)
            ino = self.inodes.get(old)
            if ino is not None and ino.fd is not None and ino.opens <= 0:
                os.close(ino.fd)
                ino.fd = None

    def _pin(self, nodeid: int) -> int:
        """Keep the inode's descriptor open while the node has the file open (unlinked or not)."""
        fd = self._fd(nodeid)
        self._fds.pop(nodeid, None)
        return fd

    def _entry(self, st: os.stat_result, nodeid: int) -> EntryAttributes:
        e = EntryAttributes()
        e.st_ino = nodeid
        e.generation = 0
        e.entry_timeout = self.settings.entry_timeout
        e.attr_timeout = self.settings.attr_timeout
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _remember(self, fd: int, st: os.stat_result | None = None) -> EntryAttributes:
        """Count one more kernel reference to the inode ``fd`` (an O_PATH descriptor) holds."""
        if st is None:
            st = os.fstat(fd)
        nodeid = self._nodeid(st)
        known = self.inodes.get(nodeid)
        if known is None:
            try:
                handle: bytes | None = file_handle(fd) if self._by_handle else None
            except OSError:
                handle = None  # no file handles here: hold the descriptor instead
            self.inodes[nodeid] = _Inode(fd, handle, _seen(st))
            if handle is not None:
                self._unpin(nodeid)
        else:
            os.close(fd)
            known.nlookup += 1
            known.seen = _seen(st)
        return self._entry(st, nodeid)

    def _drop_if_unused(self, nodeid: int) -> None:
        ino = self.inodes.get(nodeid)
        if ino is not None and nodeid != ROOT and ino.nlookup <= 0 and ino.opens <= 0:
            if ino.fd is not None:
                os.close(ino.fd)
            self._fds.pop(nodeid, None)
            del self.inodes[nodeid]

    def _fresh_stat(self, nodeid: int, ino: _Inode) -> os.stat_result:
        """The inode's attributes; ESTALE if it was removed in the backing folder meanwhile."""
        st = os.fstat(self._fd(nodeid))
        if st.st_nlink == 0 and ino.opens == 0 and nodeid != ROOT:
            raise FUSEError(errno.ESTALE)
        return st

    def _give_to_caller(self, fd: int, parent_fd: int, ctx: RequestContext, mode: int) -> None:
        """Make what the root server created belong to the caller, as a local create would."""
        if not self._owner:
            return
        parent = os.fstat(parent_fd)
        gid = parent.st_gid if parent.st_mode & stat.S_ISGID else ctx.gid
        fchown_empty(fd, ctx.uid, gid)
        if mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(_proc(fd), stat.S_IMODE(mode))  # chown cleared them

    def _new_entry(self, parent_fd: int, name: bytes, ctx: RequestContext,
                   mode: int) -> EntryAttributes:
        fd = os.open(name, _PATH_FLAGS, dir_fd=parent_fd)
        try:
            self._give_to_caller(fd, parent_fd, ctx, mode)
        except BaseException:
            os.close(fd)
            raise
        return self._remember(fd)

    @staticmethod
    def _check_name(name: bytes) -> None:
        if name in (b".", b"..") or b"/" in name:
            raise FUSEError(errno.EINVAL)

    # -- names ---------------------------------------------------------------------------
    @_request("lookup")
    async def lookup(self, parent_inode: InodeT, name: FileNameT,
                     ctx: RequestContext) -> EntryAttributes:
        if name in (b".", b".."):
            raise FUSEError(errno.ENOENT)
        try:
            fd = os.open(name, _PATH_FLAGS, dir_fd=self._fd(parent_inode))
        except FileNotFoundError:
            if self.settings.negative_timeout <= 0:
                raise
            e = EntryAttributes()
            e.st_ino = 0  # a cached "no such name", for negative_timeout
            e.entry_timeout = self.settings.negative_timeout
            return e
        return self._remember(fd)

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        self._ops["forget"] = self._ops.get("forget", 0) + len(inode_list)
        for nodeid, n in inode_list:
            ino = self.inodes.get(nodeid)
            if ino is not None:
                ino.nlookup -= n
                try:
                    self._drop_if_unused(nodeid)
                except OSError:  # forget must not raise
                    log.exception("nfsemu: forget")

    @_request("getattr")
    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        ino = self._inode(inode)
        st = self._fresh_stat(inode, ino)
        ino.seen = _seen(st)
        return self._entry(st, inode)

    @_request("setattr")
    async def setattr(self, inode: InodeT, attr: EntryAttributes, fields: SetattrFields,
                      fh: FileHandleT | None, ctx: RequestContext) -> EntryAttributes:
        ino = self._inode(inode)
        pfd = self._fd(inode)
        target: int | str = fh if fh is not None else _proc(pfd)
        is_link = stat.S_ISLNK(os.fstat(pfd).st_mode)
        if fields.update_size:
            os.truncate(target, attr.st_size)
        if fields.update_uid or fields.update_gid:
            fchown_empty(pfd, attr.st_uid if fields.update_uid else -1,
                         attr.st_gid if fields.update_gid else -1)
        if fields.update_mode:  # after chown, which clears setuid and setgid
            if is_link:
                raise FUSEError(errno.EOPNOTSUPP)
            os.chmod(target, stat.S_IMODE(attr.st_mode))
        if fields.update_atime or fields.update_mtime:
            if is_link:
                raise FUSEError(errno.EPERM)
            now = os.fstat(pfd)
            os.utime(target, ns=(attr.st_atime_ns if fields.update_atime else now.st_atime_ns,
                                 attr.st_mtime_ns if fields.update_mtime else now.st_mtime_ns))
        st = os.fstat(pfd)
        ino.seen = _seen(st)
        return self._entry(st, inode)

    @_request("readlink")
    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        return os.readlink(b"", dir_fd=self._fd(inode))

    @_request("mknod")
    async def mknod(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        self._check_name(name)
        pfd = self._fd(parent_inode)
        mode &= ~ctx.umask
        os.mknod(name, mode, rdev, dir_fd=pfd)
        return self._new_entry(pfd, name, ctx, mode)

    @_request("mkdir")
    async def mkdir(self, parent_inode: InodeT, name: FileNameT, mode: ModeT,
                    ctx: RequestContext) -> EntryAttributes:
        self._check_name(name)
        pfd = self._fd(parent_inode)
        os.mkdir(name, stat.S_IMODE(mode & ~ctx.umask), dir_fd=pfd)
        return self._new_entry(pfd, name, ctx, 0)

    @_request("symlink")
    async def symlink(self, parent_inode: InodeT, name: FileNameT, target: FileNameT,
                      ctx: RequestContext) -> EntryAttributes:
        self._check_name(name)
        pfd = self._fd(parent_inode)
        os.symlink(target, name, dir_fd=pfd)
        return self._new_entry(pfd, name, ctx, 0)

    @_request("link")
    async def link(self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT,
                   ctx: RequestContext) -> EntryAttributes:
        self._check_name(new_name)
        ino = self._inode(inode)
        fd, pfd = self._fd(inode), self._fd(new_parent_inode)
        if self._owner:
            link_empty(fd, pfd, new_name)
        else:
            os.link(_proc(fd), new_name, dst_dir_fd=pfd, follow_symlinks=True)
        st = os.fstat(fd)
        ino.nlookup += 1
        ino.seen = _seen(st)
        return self._entry(st, inode)

    @_request("unlink")
    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        os.unlink(name, dir_fd=self._fd(parent_inode))

    @_request("rmdir")
    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        os.rmdir(name, dir_fd=self._fd(parent_inode))

    @_request("rename")
    async def rename(self, parent_inode_old: InodeT, name_old: FileNameT,
                     parent_inode_new: InodeT, name_new: FileNameT, flags: FlagT,
                     ctx: RequestContext) -> None:
        self._check_name(name_new)
        src, dst = self._fd(parent_inode_old), self._fd(parent_inode_new)
        if flags:
            renameat2(src, name_old, dst, name_new, flags)
        else:
            os.rename(name_old, name_new, src_dir_fd=src, dst_dir_fd=dst)

    # -- files ---------------------------------------------------------------------------
    def _opened(self, fd: int, nodeid: int) -> None:
        self._handles[fd] = _Handle(nodeid)
        self._pin(nodeid)
        self.inodes[nodeid].opens += 1

    def _closed(self, nodeid: int) -> None:
        ino = self.inodes.get(nodeid)
        if ino is None:
            return
        ino.opens -= 1
        if ino.opens <= 0 and ino.handle is not None and nodeid != ROOT:
            self._unpin(nodeid)
        self._drop_if_unused(nodeid)

    @_request("open")
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        ino = self._inode(inode)
        st = self._fresh_stat(inode, ino)
        changed = _seen(st) != ino.seen
        fd = os.open(_proc(self._fd(inode)), (flags & ~_STRIP_OPEN) | os.O_CLOEXEC)
        self._opened(fd, inode)
        ino.seen = _seen(st)
        if changed:  # close-to-open: the node's cached attributes are stale, drop them
            try:
                pyfuse3.invalidate_inode(inode, attr_only=True)
            except OSError:
                pass
        # keep_cache=False makes the kernel drop the node's cached pages of the file
        return FileInfo(fh=fd, keep_cache=not changed)

    @_request("create")
    async def create(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        self._check_name(name)
        pfd = self._fd(parent_inode)
        mode &= ~ctx.umask
        try:
            fd = os.open(name, (flags & ~_STRIP_OPEN) | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         stat.S_IMODE(mode), dir_fd=pfd)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            # This node cached the name as absent; the other node has made it since. Let the
            # kernel look it up again and open it with the usual permission checks.
            raise FUSEError(errno.ESTALE) from None
        try:
            pathfd = os.open(_proc(fd), os.O_PATH | os.O_CLOEXEC)
            self._give_to_caller(pathfd, pfd, ctx, mode)
        except BaseException:
            os.close(fd)
            raise
        entry = self._remember(pathfd)
        self._opened(fd, entry.st_ino)
        return FileInfo(fh=fd, keep_cache=True), entry

    @_request("read")
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        data = os.pread(fh, size, off)
        self._bytes_read += len(data)
        return data

    @_request("write")
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        n = os.pwrite(fh, buf, off)
        self._bytes_written += n
        self._handles[fh].wrote = True
        return n

    @_request("flush")
    async def flush(self, fh: FileHandleT) -> None:
        return None  # writes were written through; nothing is buffered here

    @_request("release")
    async def release(self, fh: FileHandleT) -> None:
        handle = self._handles.pop(fh, None)
        try:
            if handle is not None:
                ino = self.inodes.get(handle.nodeid)
                if ino is not None and handle.wrote:  # this node's kernel knows its writes
                    ino.seen = _seen(os.fstat(fh))
                self._closed(handle.nodeid)
        finally:
            os.close(fh)

    @_request("fsync")
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    # -- folders -------------------------------------------------------------------------
    @_request("opendir")
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        ino = self._inode(inode)
        self._fresh_stat(inode, ino)
        fd = os.open(_proc(self._fd(inode)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirs[fd] = _Dir(inode)
        self._pin(inode)
        ino.opens += 1
        return fd

    @_request("readdir")
    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        d = self._dirs[fh]
        if d.entries is None or start_id == 0:
            d.entries = [os.fsencode(n) for n in os.listdir(fh)]
        for i in range(start_id, len(d.entries)):
            name = d.entries[i]
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=fh)
            except FileNotFoundError:
                continue  # removed since the listing
            st = os.fstat(fd)
            if not pyfuse3.readdir_reply(token, name, self._entry(st, self._nodeid(st)), i + 1):
                os.close(fd)
                break
            self._remember(fd, st)  # readdirplus: the kernel now holds a reference

    @_request("releasedir")
    async def releasedir(self, fh: FileHandleT) -> None:
        d = self._dirs.pop(fh, None)
        try:
            if d is not None:
                self._closed(d.nodeid)
        finally:
            os.close(fh)

    @_request("fsyncdir")
    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        os.fsync(fh)

    @_request("statfs")
    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        sv = os.fstatvfs(self.root_fd)
        out = StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(sv, name))
        return out

    # No xattr handlers: like NFSv3, the mount has none (ENOTSUP), and the kernel then stops
    # asking for security.capability on every write, which would distort the counts.

    def close_all(self) -> None:
        """Close every descriptor (after the main loop ended)."""
        for fd in list(self._handles) + list(self._dirs):
            with contextlib.suppress(OSError):
                os.close(fd)
        for nodeid, ino in list(self.inodes.items()):
            if nodeid != ROOT and ino.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(ino.fd)
        self.inodes = {ROOT: self.inodes[ROOT]}
        self._fds.clear()
