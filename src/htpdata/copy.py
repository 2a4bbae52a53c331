"""``htpdata cp``: copy files to a local file or folder, verified, never half visible.

In the manner of ``xrdcp``: ``cp NAME DEST`` writes the file at DEST, or inside DEST when it is
a folder (or ends with ``/``); several names, or a dataset, need a folder. Each file is written
beside its target under a hidden temporary name, its adler32 computed on the way and compared
with the catalog's (or Rucio's, or the server's) before it is renamed into place; a failure or
Ctrl-C removes the temporary file. An existing target is kept unless ``force``. Reads go through
the cache (a staged dataset copies from the shared volume) unless ``cache=False``.

:func:`targets` is the pure part (where each file goes); :func:`copy_file` does the I/O.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .adler32 import adler32
from .catalogs import FileEntry
from .errors import ChecksumMismatchError, CopyError, HtpdataError, StorageError
from .names import DID, LogicalName, parse_name

if TYPE_CHECKING:
    from .client import Client
    from .io import FileReader

__all__ = ["CopyError", "CopyResult", "copy", "copy_file", "targets"]

PIECE = 8 << 20
PIECES_AT_ONCE = 4  # one vector read (XRootD) or parallel ranges (HTTP) per round trip


@dataclass
class CopyResult:
    name: str
    dest: str
    status: str = "failed"  # "copied" | "failed"
    size: int = 0
    adler32: str | None = None
    expected: str | None = None
    verified: bool = False
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _path_of(name: str) -> str:
    n = parse_name(name)
    if isinstance(n, LogicalName):
        return n.path
    if isinstance(n, DID):
        return n.name if n.name.startswith("/") else "/" + n.name
    return n.path


def targets(names: Sequence[str], dest: str, dest_is_dir: bool,
            keep_paths: bool = False) -> list[tuple[str, str]]:
    """(name, target path) of each file (pure). ``dest_is_dir``: DEST is (or will be) a
    folder; ``keep_paths``: below it, the file's whole logical path, not just its base name."""
    if len(names) > 1 and not dest_is_dir:
        raise CopyError(f"{dest}: several files need a destination folder (end it with '/' "
                        "to create it)")
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name in names:
        path = _path_of(name)
        if not dest_is_dir:
            target = dest
        else:
            rel = path.lstrip("/") if keep_paths else path.rstrip("/").rsplit("/", 1)[-1]
            target = os.path.join(dest, rel)
        if target in seen:
            raise CopyError(f"{seen[target]} and {name} would both be written to {target} "
                            "(use --keep-paths)")
        seen[target] = name
        out.append((name, target))
    return out


def _expected(client: Client, entry: FileEntry, reader_adler: str | None,
              replica_url: str | None) -> str | None:
    """The adler32 to verify against: the catalog's or Rucio's, else the server's."""
    if entry.adler32 or reader_adler:
        return entry.adler32 or reader_adler
    if replica_url is None:
        return None
    try:
        return client.transports.for_url(replica_url).checksum(replica_url)
    except (StorageError, NotImplementedError):
        return None


def _publish(tmp: str, target: str, force: bool) -> None:
    """Rename into place; without ``force`` never over an existing file (a hard link is the
    atomic no-clobber rename; filesystems without links fall back to a check, then rename)."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise CopyError(f"{target}: exists (use --force to overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(target):
            raise CopyError(f"{target}: exists (use --force to overwrite)") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _stream(reader: FileReader, size: int, out: BinaryIO,
            on_bytes: Callable[[int], None] | None, cancel: threading.Event | None) -> int:
    """Write the file's bytes to ``out``; returns their adler32."""
    value = 1
    pos = 0
    while pos < size:
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt
        ranges = []
        for _ in range(PIECES_AT_ONCE):
            if pos >= size:
                break
            ranges.append((pos, min(size, pos + PIECE)))
            pos = ranges[-1][1]
        for block in reader.read_ranges(ranges):
            out.write(block)
            value = adler32(block, value)
            if on_bytes is not None:
                on_bytes(len(block))
    return value


def copy_file(client: Client, entry: FileEntry, target: str, *, cache: bool = True,
              force: bool = False, on_bytes: Callable[[int], None] | None = None,
              stdout: BinaryIO | None = None,
              cancel: threading.Event | None = None) -> CopyResult:
    """Copy one file to ``target`` (or to ``stdout``); never raises for a storage or
    destination problem (see ``.error`` and ``.exit_code``)."""
    r = CopyResult(entry.name, "-" if stdout is not None else target)
    t0 = time.monotonic()
    tmp: str | None = None
    try:
        if stdout is None and not force and os.path.lexists(target):
            raise CopyError(f"{target}: exists (use --force to overwrite)")
        reader = client.reader(entry.name, cache=cache, prefetch=False)  # whole files
        r.size = size = reader.size()
        replica = reader.resolved.replicas[0].url if reader.resolved.replicas else None
        r.expected = _expected(client, entry, reader.resolved.adler32, replica)
        if stdout is not None:
            got = _stream(reader, size, stdout, on_bytes, cancel)
        else:
            folder = os.path.dirname(os.path.abspath(target))
            tmp = os.path.join(folder, f".{os.path.basename(target)}.htpdata-"
                                       f"{os.getpid()}-{secrets.token_hex(4)}.part")
            if not os.path.isdir(folder):
                raise CopyError(f"{folder}: no such folder (use -p to create it)")
            with open(tmp, "xb") as fh:
                got = _stream(reader, size, fh, on_bytes, cancel)
        r.adler32 = f"{got:08x}"
        if r.expected is not None and r.adler32 != r.expected:
            raise ChecksumMismatchError(entry.name, r.expected, r.adler32, "copied bytes")
        r.verified = r.expected is not None
        if tmp is not None:
            _publish(tmp, target, force)
            tmp = None
        r.status = "copied"
    except HtpdataError as exc:
        r.error, r.exit_code = str(exc), exc.exit_code
    except OSError as exc:  # the destination: no space, no permission, read-only
        err = CopyError(f"{target}: {exc.strerror or exc}")
        r.error, r.exit_code = str(err), err.exit_code
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        r.seconds = time.monotonic() - t0
    return r


def copy(client: Client, entries: Sequence[FileEntry], dest: str, *, parallel: int = 4,
         cache: bool = True, force: bool = False, keep_paths: bool = False,
         make_dirs: bool = False, on_bytes: Callable[[int], None] | None = None,
         on_file: Callable[[CopyResult], None] | None = None) -> list[CopyResult]:
    """Copy ``entries`` into ``dest`` (a file for one entry, else a folder), ``parallel``
    files at once; results in the order of ``entries``. Ctrl-C stops every copy and leaves no
    temporary file."""
    dest_is_dir = dest.endswith("/") or os.path.isdir(dest) or len(entries) > 1
    plan = targets([e.name for e in entries], dest, dest_is_dir, keep_paths)
    if dest_is_dir and (make_dirs or dest.endswith("/")):
        Path(dest).mkdir(parents=True, exist_ok=True)
    if keep_paths:
        for _, target in plan:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    cancel = threading.Event()

    def one(pair: tuple[FileEntry, str]) -> CopyResult:
        result = copy_file(client, pair[0], pair[1], cache=cache, force=force,
                           on_bytes=on_bytes, cancel=cancel)
        if on_file is not None:
            on_file(result)
        return result

    work = [(e, t) for e, (_, t) in zip(entries, plan, strict=True)]
    pool = ThreadPoolExecutor(max(1, min(parallel, len(work))), thread_name_prefix="htpdata-cp")
    try:
        futures = [pool.submit(one, w) for w in work]
        return [f.result() for f in futures]
    except BaseException:
        cancel.set()  # each copy stops at its next piece and removes its temporary file
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
