"""The few Linux calls the passthrough needs that :mod:`os` does not offer (ctypes, glibc).

``renameat2`` (RENAME_NOREPLACE / RENAME_EXCHANGE); ``linkat``/``fchownat`` with
``AT_EMPTY_PATH``, which act on the inode an ``O_PATH`` descriptor holds whatever its current
name is (another node may have renamed it); and file handles (``name_to_handle_at``,
``open_by_handle_at``: root only), which name an inode without holding it open, as an NFS
server's file handles do, and fail with ESTALE once it is removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["AT_EMPTY_PATH", "fchown_empty", "file_handle", "link_empty", "open_by_handle",
           "renameat2"]

AT_EMPTY_PATH = 0x1000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_int]
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                           ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * _MAX_HANDLE_SZ)]


def _check(ret: int) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def renameat2(src_dir: int, src: bytes, dst_dir: int, dst: bytes, flags: int) -> None:
    _check(_libc.renameat2(src_dir, src, dst_dir, dst, flags))


def link_empty(fd: int, dst_dir: int, dst: bytes) -> None:
    """Link the inode ``fd`` refers to as ``dst`` (needs CAP_DAC_READ_SEARCH, i.e. root)."""
    _check(_libc.linkat(fd, b"", dst_dir, dst, AT_EMPTY_PATH))


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """chown the inode ``fd`` refers to (works on an O_PATH descriptor, symlinks included)."""
    _check(_libc.fchownat(fd, b"", uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, AT_EMPTY_PATH))


def file_handle(fd: int) -> bytes:
    """The file handle (struct file_handle, packed) of the inode ``fd`` refers to."""
    fh = _FileHandle()
    fh.handle_bytes = _MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    _check(_libc.name_to_handle_at(fd, b"", ctypes.byref(fh), ctypes.byref(mount_id),
                                   AT_EMPTY_PATH))
    return ctypes.string_at(ctypes.addressof(fh), 8 + fh.handle_bytes)


def open_by_handle(mount_fd: int, handle: bytes, flags: int) -> int:
    """Open the inode ``handle`` names (ESTALE once it is removed); needs CAP_DAC_READ_SEARCH."""
    fd = int(_libc.open_by_handle_at(mount_fd, handle, flags))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd
