"""Exclusive leases across processes and nodes, with a heartbeat, on any filesystem.

A lease is a folder ``NAME.lease`` in an area (so only the area's owner can hold, take or
forge one) holding its holder's file ``h.NODE.PID.START.RAND``; the holder touches that file
every few seconds. Taking over needs no lock either:

- ``mkdir`` succeeds for exactly one of several creators;
- a holder whose heartbeat stopped (its pid gone on this node, or its mtime older than
  :data:`~.heartbeat.STALE`, or in the future) is taken over by creating ``t.INODE`` with
  ``O_EXCL``, ``INODE`` being the stale holder file's: of two takers of the same stale holder
  exactly one wins, and a later stale holder has another inode;
- only the holder removes its own file (a unique name, so it can never remove a newer holder's)
  and then the folder, which ``rmdir`` refuses while a newer holder's file is in it.

A holder that was taken over notices at its next heartbeat (its file is gone) and stops.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator

from .fsops import DIR_FLAGS, ProcessId, create_exclusive, process_alive
from .heartbeat import HEART, STALE

__all__ = ["Lease", "lease"]

FUTURE = 60.0


class Lease:
    def __init__(self, area_fd: int, name: str, dir_mode: int, file_mode: int,
                 accepts: Callable[[int], bool], stale: float = STALE) -> None:
        self.area_fd = area_fd
        self.dir = f"{name}.lease"
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.accepts = accepts
        self.stale = stale
        self.proc = ProcessId.mine()
        self.holder = f"h.{self.proc.tag()}.{secrets.token_hex(4)}"
        self.fd = -1
        self.lost = False
        self._beat: int | None = None

    # -- taking ------------------------------------------------------------------------------
    def acquire(self) -> bool:
        for _ in range(3):
            try:
                os.mkdir(self.dir, self.dir_mode, dir_fd=self.area_fd)
            except FileExistsError:
                verdict = self._take_over()
                if verdict is not None:
                    return verdict
                continue  # an abandoned empty folder was removed: try again
            except OSError:
                return False
            return self._become_holder()
        return False

    def _open_dir(self) -> int | None:
        try:
            return os.open(self.dir, DIR_FLAGS, dir_fd=self.area_fd)
        except OSError:
            return None

    def _become_holder(self, fd: int | None = None) -> bool:
        fd = self._open_dir() if fd is None else fd
        if fd is None:
            return False
        try:
            os.close(create_exclusive(fd, self.holder, self.file_mode))
        except OSError:
            os.close(fd)
            return False  # the folder went (an abandoned-folder sweep raced us)
        self.fd = fd
        self._beat = HEART.add(self.beat)
        return True

    def _take_over(self) -> bool | None:
        """True: taken over; False: someone holds it; None: it was abandoned and removed."""
        fd = self._open_dir()
        if fd is None:
            return False  # not a folder (planted?) or gone: not ours to take
        try:
            files = []
            with os.scandir(fd) as it:
                listed = list(it)
            for e in listed:
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and self.accepts(st.st_uid):
                        files.append((e.name, st))
            now = time.time()
            if any(self._alive(name, st, now) for name, st in files):
                os.close(fd)
                return False
            if not files:
                st = os.fstat(fd)
                os.close(fd)
                if now - st.st_mtime < self.stale:
                    return False  # just made: its creator is about to write its holder file
                with contextlib.suppress(OSError):
                    os.rmdir(self.dir, dir_fd=self.area_fd)
                return None
            _, stale_st = max(files, key=lambda f: f[1].st_mtime)
            take = f"t.{stale_st.st_ino}"
            try:
                tfd = create_exclusive(fd, take, self.file_mode)
            except OSError:
                os.close(fd)
                return False  # another process is taking it over
            with contextlib.suppress(OSError):
                os.write(tfd, json.dumps({"by": self.proc.tag()}).encode())
            os.close(tfd)
            for name, _ in files:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
            if not self._become_holder(fd):
                return False
            with contextlib.suppress(OSError):
                os.unlink(take, dir_fd=fd)
            return True
        except BaseException:
            with contextlib.suppress(OSError):
                if self.fd != fd:
                    os.close(fd)
            raise

    def _alive(self, name: str, st: os.stat_result, now: float) -> bool:
        age = now - st.st_mtime
        if age < -FUTURE:
            return False  # a heartbeat dated ahead is ignored
        if name.startswith("h."):
            proc = ProcessId.from_tag(name[2:].rsplit(".", 1)[0])
            local = process_alive(proc, st.st_uid) if proc is not None else None
            if local is not None:
                return local
        return age <= self.stale

    # -- holding -------------------------------------------------------------------------------
    def beat(self) -> None:
        if self.fd < 0 or self.lost:
            return
        try:
            os.utime(self.holder, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            self.lost = True  # taken over: stop at the next check
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                self.lost = True

    def held(self) -> bool:
        """Still ours? (One ``stat``; a pass asks now and then and stops when not.)"""
        if self.fd < 0 or self.lost:
            return False
        try:
            os.stat(self.holder, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            self.lost = True
        return not self.lost

    def release(self) -> None:
        if self._beat is not None:
            HEART.remove(self._beat)
            self._beat = None
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.holder, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = -1
        with contextlib.suppress(OSError):  # refused while a newer holder's file is there
            os.rmdir(self.dir, dir_fd=self.area_fd)


@contextlib.contextmanager
def lease(area_fd: int, name: str, dir_mode: int, file_mode: int,
          accepts: Callable[[int], bool], stale: float = STALE) -> Iterator[Lease | None]:
    """The lease ``name`` of an area, or None if another live process holds it."""
    got = Lease(area_fd, name, dir_mode, file_mode, accepts, stale)
    if not got.acquire():
        yield None
        return
    try:
        yield got
    finally:
        got.release()
