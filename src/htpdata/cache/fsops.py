"""Tier I/O on folder descriptors: nothing followed, nothing outside the tier, nothing blocks.

Every disk-tier operation starts from a folder descriptor the process holds and names a child of
it. What is planted in a tier (a symlink for a folder or a file, a FIFO, a device, a socket, a
hard link) can then neither lead a read, a write or a removal out of the tier nor hang a
process:

- folders are opened ``O_DIRECTORY | O_NOFOLLOW`` one level at a time, or in one ``openat2``
  call with ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` where the kernel has it (Linux 5.6+): a
  symlink anywhere on the way fails the open (``ELOOP``/``ENOTDIR``) instead of being followed,
  and it is checked on every use because every use opens again from a held descriptor;
- files are created ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted name, even a dangling symlink,
  makes the create fail), written through the descriptor, and published by ``renameat``;
- sidecars are opened ``O_NONBLOCK | O_NOFOLLOW`` (a FIFO cannot block the open), must be
  regular files of an expected owner (``fstat`` of the very descriptor read) and are read with a
  size bound;
- removals are ``unlinkat``/``unlinkat(AT_REMOVEDIR)`` of names inside held folders, recursing by
  descriptor: a symlink is removed as a name, never followed.

Nothing here decides policy (who is trusted, what goes where); see :mod:`.trust`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import socket
import stat
import sys
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .trust import Me

__all__ = [
    "DIR_FLAGS",
    "NODE",
    "SHORT_REPLY",
    "Folder",
    "ProcessId",
    "create_exclusive",
    "list_names",
    "open_beneath",
    "process_alive",
    "read_small",
    "remove_tree",
    "renamed_when_written",
    "umask",
    "write_all",
    "write_chunks",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
"""What opening a path inside a tier raises when it is absent or a planted non-folder."""

NODE = os.environ.get("HTPDATA_NODE_ID") or socket.gethostname()
"""This node's name in claims, leases and reader records. ``HTPDATA_NODE_ID`` overrides it for
tests that play two nodes on one machine (never set it in production)."""


def _read_umask() -> int:
    with contextlib.suppress(OSError, ValueError), \
            open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


umask = _read_umask()
"""The process's umask (read once): modes it would strip are set again with ``fchmod``."""


# -- openat2 --------------------------------------------------------------------------------------
class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_RESOLVE = 0x02 | 0x04 | 0x08  # RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "ppc64le": 437, "s390x": 437}.get(os.uname().machine)
_libc: ctypes.CDLL | None = None
_have_openat2 = _SYS_OPENAT2 is not None


def _syscall() -> Any:
    """libc's ``syscall`` (loaded once, errno kept, a ``long`` result)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _libc = libc
    return _libc.syscall


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int | None:
    """``openat2`` with no symlinks and no escape; None when the kernel or a seccomp filter
    refuses the call itself (then the caller walks one level at a time)."""
    global _have_openat2
    if not _have_openat2:
        return None
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = int(_syscall()(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how),
                           ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS or (err == errno.EPERM and not flags & os.O_CREAT):
        _have_openat2 = False  # an old kernel or a sandbox: walk instead, from now on
        return None
    raise OSError(err, os.strerror(err), path)


def open_beneath(dir_fd: int, path: str, flags: int = DIR_FLAGS, mode: int = 0) -> int:
    """Open ``path`` (relative, ``/``-separated, no ``..``) below the folder ``dir_fd`` without
    following any symlink on the way; raises OSError as ``os.open`` does."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {path!r}")
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if len(parts) > 1:
        fd = _openat2(dir_fd, path, flags, mode)
        if fd is not None:
            return fd
    cur = dir_fd
    try:
        for p in parts[:-1]:
            nxt = os.open(p, DIR_FLAGS, dir_fd=cur)
            if cur != dir_fd:
                os.close(cur)
            cur = nxt
        return os.open(parts[-1], flags, mode, dir_fd=cur)
    finally:
        if cur != dir_fd:
            os.close(cur)


# -- listings -------------------------------------------------------------------------------------
_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "ppc64le": 202, "s390x": 220}.get(
    os.uname().machine) if ctypes.sizeof(ctypes.c_void_p) == 8 else None
"""The kernel's architecture names the number; a 32-bit process on it (whose numbers differ)
lists with ``os.scandir``."""
_LISTING_BYTES = 32 * 1024
SHORT_REPLY = 10
"""A ``getdents64`` reply of fewer entries than this ended its listing, so the call that would
only find the end is not made. Every kernel filesystem (ext4, XFS, NFS, CephFS, Lustre) fills
the caller's buffer (32 KiB here) before it returns; FUSE answers each call with one page
(4 KiB) its server fills, and a page of ``READDIRPLUS`` replies holds at least 10 entries of
the longest names (408 bytes each). A filesystem that answered with fewer without having
reached the end would make a listing miss names: a pack not seen is fetched again, a claim not
seen is fetched twice; no byte is ever served wrong (every read is verified)."""


def list_names(fd: int) -> list[str]:
    """The names in the folder open (readable) at ``fd``: ``getdents64`` straight on the
    descriptor, from its start. Two metadata operations fewer than ``os.scandir`` on a
    network filesystem: glibc's ``fdopendir`` makes an ``fstat`` (a round trip when the folder
    just changed, which is when single flight lists it), and the last call, which only finds
    the end, is not made after a short reply (:data:`SHORT_REPLY`). Where the system call is
    not known, ``os.scandir``. Callers serialise listings of one descriptor (its position is
    shared) and leave it rewound."""
    if _SYS_GETDENTS64 is None:  # pragma: no cover - Linux on the architectures above
        with os.scandir(fd) as it:
            return [e.name for e in it]
    syscall = _syscall()
    buf = ctypes.create_string_buffer(_LISTING_BYTES)
    names: list[str] = []
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        while True:
            n = int(syscall(_SYS_GETDENTS64, fd, buf, _LISTING_BYTES))
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, os.strerror(err))
            if n == 0:
                return names
            raw = ctypes.string_at(buf, n)
            pos = count = 0
            before = len(names)
            while pos < n:  # struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
                reclen = int.from_bytes(raw[pos + 16:pos + 18], sys.byteorder)
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                if name not in (b".", b".."):
                    names.append(os.fsdecode(name))
                pos += reclen
                count += 1
            # A reply of "." and ".." alone is not taken for the end: a filesystem may give
            # them before asking its server (CephFS), and a failure after them is not said.
            if count < SHORT_REPLY and len(names) > before:
                return names
    finally:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)


# -- folders --------------------------------------------------------------------------------------
class Folder:
    """An open folder of a tier: its descriptor, its ``fstat`` (taken when opened, or on first
    use when the opener did not need it: one metadata operation less), and a path for
    messages only (never used to open anything).

    A folder that is only walked through and created in (the tier's root, the areas) may be
    held by an ``O_PATH`` descriptor (``listable=False``): on a network filesystem that open is
    one lookup, where a readable open of a folder is a second round trip (FUSE's ``opendir``,
    NFSv4's ``OPEN``). :meth:`names` and :meth:`chmod` work on both kinds."""

    __slots__ = ("_st", "fd", "path", "path_only")

    def __init__(self, fd: int, path: str, st: os.stat_result | None, *,
                 path_only: bool = False) -> None:
        self.fd = fd
        self.path = path
        self._st = st
        self.path_only = path_only

    def __repr__(self) -> str:
        return f"Folder({self.path!r}, fd={self.fd})"

    @property
    def st(self) -> os.stat_result:
        if self._st is None:
            self._st = os.fstat(self.fd)
        return self._st

    @st.setter
    def st(self, value: os.stat_result) -> None:
        self._st = value

    @classmethod
    def open_root(cls, path: str) -> Folder:
        """The tier's root: the configured path is the operator's, so symlinks in it are
        followed; nothing below it ever is. Held ``O_PATH`` when this user may list and enter
        it (as a readable open would have checked); otherwise opened readable, so the kernel
        gives its answer."""
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if may_list(st):
            return cls(fd, path, st, path_only=True)
        os.close(fd)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls(fd, path, os.fstat(fd))

    def open(self, rel: str, *, stat: bool = True, listable: bool = True) -> Folder:
        """A folder below this one (OSError if absent or not a real folder), ``fstat``'ed
        unless ``stat`` is false. A folder this user may enter and write but not list (a
        drop box: ``users/``, ``drop/``) is opened ``O_PATH``: good for creating names in it,
        not for listing it. With ``listable`` false a folder this user may list is held
        ``O_PATH`` too (one round trip less; :meth:`names` opens it when it is listed)."""
        if not listable:
            fd = open_beneath(self.fd, rel, os.O_PATH | os.O_DIRECTORY)
            try:
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            if may_list(st):
                return Folder(fd, f"{self.path}/{rel}", st, path_only=True)
            os.close(fd)  # the kernel's own answer (ACLs included) from a readable open
        try:
            fd = open_beneath(self.fd, rel)
        except PermissionError:
            fd = open_beneath(self.fd, rel, os.O_PATH | os.O_DIRECTORY)
        try:
            return Folder(fd, f"{self.path}/{rel}", os.fstat(fd) if stat else None)
        except BaseException:
            os.close(fd)
            raise

    def try_open(self, rel: str, *, stat: bool = True, listable: bool = True
                 ) -> Folder | None:
        """:meth:`open`, or None when the folder is absent or something else stands there."""
        try:
            return self.open(rel, stat=stat, listable=listable)
        except OSError as exc:
            if exc.errno in _NOT_THERE:
                return None
            raise

    def make(self, name: str, mode: int, *, stat: bool = True) -> Folder:
        """The child folder ``name``, created with exactly ``mode`` if missing (a concurrent
        creator's folder is fine; a planted non-folder raises). An existing one costs one
        open (and the ``fstat`` if asked for)."""
        found = self.try_open(name, stat=stat)
        if found is not None:
            return found
        try:
            os.mkdir(name, mode, dir_fd=self.fd)
            made = True
        except FileExistsError:
            made = False
        sub = self.open(name, stat=made or stat)
        if made and _mode(sub.st) != mode:
            os.fchmod(sub.fd, mode)  # mkdir drops the umask's bits and never sets setgid
            sub._st = os.fstat(sub.fd) if stat else None
        return sub

    def refresh(self) -> os.stat_result:
        """``fstat`` again (one metadata operation); the result is kept in :attr:`st`."""
        self.st = os.fstat(self.fd)
        return self.st

    def names(self) -> list[os.DirEntry[str]]:
        """One listing (``getdents``) of the folder, from its descriptor (an ``O_PATH`` one is
        opened readable for it first)."""
        if not self.path_only:
            with os.scandir(self.fd) as it:
                return list(it)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            with os.scandir(fd) as it:
                return list(it)
        finally:
            os.close(fd)

    def list(self) -> list[str]:
        """The names in the folder (:func:`list_names`: no ``fstat``, no call that only finds
        the end); for a folder held readable, by callers that serialise its listings."""
        if self.path_only:
            return [e.name for e in self.names()]
        return list_names(self.fd)

    def chmod(self, mode: int) -> None:
        """Set the folder's mode (through ``/proc`` for an ``O_PATH`` descriptor, which
        ``fchmod`` refuses) and take its ``fstat`` again."""
        if self.path_only:
            os.chmod(f"/proc/self/fd/{self.fd}", mode)
        else:
            os.fchmod(self.fd, mode)
        self.refresh()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def may_list(st: os.stat_result, me: Me | None = None) -> bool:
    """May ``me`` (default: this process) list and enter a folder of these attributes, by its
    owner, group and other bits? The check a readable open makes, done on an ``fstat`` already
    taken. Root is judged by the bits too (on an NFS export that squashes root it has no more
    rights than anyone), so a folder whose bits say no is opened readable by the callers and
    the kernel answers. ACLs are not read: a folder whose ACL alone closes it to this user is
    seen as open, and what is read below it then fails as any unreadable entry does."""
    me = me or Me.current()
    mode = st.st_mode
    if st.st_uid == me.uid:
        bits = mode >> 6
    elif st.st_gid in me.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & 0o5 == 0o5


# -- files ----------------------------------------------------------------------------------------
def _mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode)


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
    """Write every byte (the one place cache bytes hit the disk; tests inject a full disk)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


WRITE_BATCH = 1 << 20
"""Bytes per write when many small pieces go out one after another (a pack's ranges are a
basket each, a few KB): joined, so a network filesystem gets one request per MiB, not one per
piece (on the emulator a cold read's 309 writes, each making the next one ask for the file's
attributes again)."""


def write_chunks(fd: int, chunks: Iterable[bytes | bytearray | memoryview],
                 offset: int | None = None, batch: int = WRITE_BATCH) -> int:
    """Write ``chunks`` one after another (from ``offset``, else at the file position) in
    writes of about ``batch`` bytes: small chunks are joined, big ones go as they are. Returns
    the bytes written. Every write goes through :func:`write_all`."""
    total = 0
    buf = bytearray()

    def out(data: bytes | bytearray | memoryview) -> None:
        nonlocal offset
        write_all(fd, data, offset)
        if offset is not None:
            offset += memoryview(data).nbytes

    for chunk in chunks:
        n = memoryview(chunk).nbytes
        if buf and len(buf) + n > batch:
            out(buf)
            buf = bytearray()  # a new one: the old may still be exported to a view
        if n >= batch:
            out(chunk)
        else:
            buf += chunk
        total += n
    if buf:
        out(buf)
    return total


def create_exclusive(dir_fd: int, name: str, mode: int, *, readable: bool = False) -> int:
    """A new file ``name`` in the folder: fails if anything (a file, a symlink, a FIFO) stands
    there. Mode exactly ``mode`` (set again if the umask took bits)."""
    flags = (_CREATE_FLAGS & ~os.O_WRONLY) | os.O_RDWR if readable else _CREATE_FLAGS
    fd = os.open(name, flags, mode, dir_fd=dir_fd)
    if mode & umask:
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
    return fd


def temp_name(prefix: str = ".t") -> str:
    """A name no other process on any node will pick: node, pid and random bits."""
    return f"{prefix}.{_safe(NODE)}.{os.getpid()}.{secrets.token_hex(6)}"


def publish(dir_fd: int, name: str, chunks: Iterable[bytes | memoryview], mode: int) -> int:
    """Write ``chunks`` to a temporary name in the folder and rename it to ``name`` (readers
    see the whole file or none); returns the bytes written. A failure removes the temporary."""
    tmp = temp_name()
    fd = create_exclusive(dir_fd, tmp, mode)
    total = 0
    try:
        try:
            total = write_chunks(fd, chunks)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return total


@contextlib.contextmanager
def renamed_when_written(dir_fd: int, fd: int, tmp: str, name: str) -> Iterator[None]:
    """The block writes the temporary file ``tmp`` of the folder (open at ``fd``), then it is
    renamed to ``name`` and ``fd`` stays open for the caller; if anything fails, ``fd`` is
    closed and ``tmp`` removed (a pack published by rename, its descriptor kept to read it)."""
    try:
        yield
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def read_small(dir_fd: int, name: str, limit: int, owners: Collection[int] | None = None
               ) -> tuple[bytes, os.stat_result] | None:
    """A sidecar's bytes and ``fstat``, or None unless it is a regular file of one of
    ``owners`` (any owner if None) no larger than ``limit`` bytes. Never blocks on a FIFO,
    never follows a symlink."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None  # absent, a symlink (ELOOP), a socket (ENXIO), not ours to read (EACCES)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit or (
                owners is not None and st.st_uid not in owners):
            return None
        out = bytearray()
        while len(out) <= limit:
            chunk = os.pread(fd, limit + 1 - len(out), len(out))
            if not chunk:
                break
            out += chunk
        if len(out) > limit:
            return None
        return bytes(out), st
    except OSError:
        return None
    finally:
        os.close(fd)


def read_owned_json(dir_fd: int, name: str, owner: int, limit: int) -> dict[str, Any]:
    """A sidecar's JSON object if ``owner`` (or root) wrote it (:func:`read_small`); else,
    or when it is not a JSON object, ``{}``: a forged or damaged sidecar steers nothing."""
    got = read_small(dir_fd, name, limit, owners=(owner, 0))
    if got is None:
        return {}
    try:
        data = json.loads(got[0])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def remove_tree(parent_fd: int, name: str, depth: int = 0) -> int:
    """Remove ``name`` from the folder ``parent_fd``: a file or symlink is unlinked (never
    followed), a folder emptied by descriptor and removed. Returns the bytes of regular files
    removed. Raises PermissionError for what this user may not remove; other errors (a name
    gone meanwhile) are ignored."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    if depth > 8:
        raise PermissionError(errno.EPERM, "folder nesting too deep to be a cache entry", name)
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a symlink: drop the name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent_fd)
            return 0
        if exc.errno == errno.ENOENT:
            return 0
        raise
    freed = 0
    try:
        with os.scandir(fd) as it:
            names = [e.name for e in it]
        for name_ in names:
            freed += remove_tree(fd, name_, depth + 1)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)
    return freed


def entries(folder: Folder) -> Iterator[os.DirEntry[str]]:
    """The folder's entries (one listing); an unreadable folder lists as empty."""
    try:
        yield from folder.names()
    except OSError:
        return


# -- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessId:
    """A process as other processes name it: node, pid and the pid's start time (so a reused
    pid is not taken for the process that died)."""

    node: str
    pid: int
    start: int

    @classmethod
    def mine(cls) -> ProcessId:
        return cls(NODE, os.getpid(), _start_ticks(os.getpid()))

    def tag(self) -> str:
        """``node.pid.start`` for file names (node names hold no dots we would split on:
        they are sanitised)."""
        return f"{_safe(self.node)}.{self.pid}.{self.start}"

    @classmethod
    def from_tag(cls, tag: str) -> ProcessId | None:
        node, _, rest = tag.partition(".")
        pid, _, start = rest.partition(".")
        if not node or not pid.isdigit() or not start.isdigit():
            return None
        return cls(node, int(pid), int(start))


def _safe(node: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in node)[:64] or "node"


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return -1
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        return int(raw[raw.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return -1


def process_alive(proc: ProcessId, uid: int | None = None) -> bool | None:
    """True or False for a process of this node, None for one of another node (its heartbeat
    must tell). With ``uid`` (the owner of the file that names the process), the process must
    also be that user's: a claim or record naming someone else's long-lived process (pid 1,
    say) is not kept alive by it."""
    if _safe(proc.node) != _safe(NODE):
        return None
    start = _start_ticks(proc.pid)
    if start < 0:
        return False
    if uid is not None and uid != 0:
        try:
            if os.stat(f"/proc/{proc.pid}").st_uid != uid:
                return False
        except OSError:
            return False
    return start == proc.start or proc.start < 0
