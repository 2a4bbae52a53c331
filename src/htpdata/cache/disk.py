"""A disk tier: node-local disk or the shared volume, same code, no cross-process locks.

Correctness rests on three filesystem operations that POSIX, NFS (close-to-open) and CephFS
all provide: ``rename`` within a folder is atomic, ``open(O_CREAT | O_EXCL)`` fails for the
second creator, and ``unlink`` does not disturb a reader that already opened the file. No
SQLite, no ``fcntl`` locks. Each extent file carries its adler32 in its name and is checked
on every read from disk, so a torn write (a crash, a full disk, a bad sector) is detected,
dropped and fetched again, never served.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adler32 import adler32_hex
from ..errors import CacheWriteError
from .identity import Identity
from .layout import FORMAT, Layout, claim_name, extent_name, parse_claim_name, parse_extent_name
from .ranges import Range

__all__ = ["CacheWriteError", "Claim", "DiskTier", "EntryInfo"]

log = logging.getLogger("htpdata.cache")
HOST = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    path: Path
    range: Range


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What eviction and reports need of one entry, read from names and a few small files."""

    key: str
    bytes: int
    last_access: float
    meta: dict[str, Any]
    complete: bool
    readers: int


class DiskTier:
    """One cache folder. ``shared`` marks the tier on the shared volume (group-writable)."""

    def __init__(self, name: str, root: str | Path, size: int, *, shared: bool = False,
                 claim_timeout: float = 120.0) -> None:
        self.name = name
        self.root = Path(root).expanduser()
        self.size = size
        self.shared = shared
        self.layout = Layout(self.root)
        self.claim_timeout = claim_timeout
        # Shared tier: group-writable folders with setgid (files keep the tier's group) and the
        # sticky bit (only a file's owner may delete or replace it); files never world-writable.
        self.dir_mode = 0o3775 if shared else 0o755
        self.file_mode = 0o644
        self._known_entries: set[str] = set()
        self._create_lock = threading.Lock()
        self._safe: set[str] = set()
        self._real_root = os.path.realpath(self.root)
        self.broken = False
        """True once a write failed (full, read-only): this process stops writing to it."""
        self.added = 0
        """Bytes this process stored since its last watermark check."""
        self.added_total = 0
        """Bytes this process stored since the last eviction pass."""
        self.claimable = True
        """False once creating a claim failed for another reason than an existing claim."""

    # -- set-up ----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the tier's folder and format marker if missing; raise CacheWriteError if we
        cannot."""
        try:
            self._mkdir(self.root)
            self._real_root = os.path.realpath(self.root)
            if not self.layout.marker.exists():
                self._publish(self.layout.marker, json.dumps(
                    {"format": FORMAT, "tier": self.name, "created": time.time()}).encode())
        except OSError as exc:
            raise CacheWriteError(exc.errno or 5, f"cache tier {self.name} at {self.root}: "
                                  f"{exc.strerror or exc}") from exc

    def _mkdir(self, path: Path) -> None:
        if path.is_dir():
            return
        self._mkdir(path.parent) if not path.parent.is_dir() else None
        try:
            path.mkdir(mode=self.dir_mode)
        except FileExistsError:
            return
        with contextlib.suppress(OSError):
            path.chmod(self.dir_mode)  # mkdir's mode is filtered by the umask

    def _publish(self, target: Path, data: bytes) -> None:
        """Write ``data`` beside ``target`` under a dot-name, then rename it into place."""
        tmp = target.parent / f".{target.name}.{HOST}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    # -- extents -----------------------------------------------------------------------------
    def _inside(self, key: str) -> bool:
        """Is the entry's extent folder really inside this tier? A symlink planted anywhere on
        the way (fan-out folders, the entry, ``x``) must not lead reads out of the tier."""
        if key in self._safe:
            return True
        folder = self.layout.extents(key)
        try:
            real = os.path.realpath(folder)
        except OSError:
            return False
        if not os.path.isdir(real):
            return False  # nothing cached yet: ask again next time
        if real != os.path.join(self._real_root, os.path.relpath(folder, self.root)):
            log.warning("cache %s: %s leads outside the tier (%s); ignored", self.name, folder,
                        real)
            return False
        if len(self._safe) > 65536:  # a long-lived worker opens many files: stay bounded
            self._safe.clear()
        self._safe.add(key)
        return True

    def extents(self, key: str) -> dict[Range, str]:
        """The extents held for ``key``: range -> adler32."""
        if not self._inside(key):
            return {}
        try:
            names = os.listdir(self.layout.extents(key))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out = {}
        for n in names:
            parsed = parse_extent_name(n)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
        return out

    def read_extent(self, key: str, r: Range, adler32: str) -> bytes | None:
        """The extent's bytes, verified; None if gone or corrupt (a corrupt one is removed)."""
        path = self.layout.extents(key) / extent_name(r, adler32)
        try:
            # O_NOFOLLOW: an extent replaced by a symlink (to /etc/shadow, say) is not read.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache %s: cannot read %s: %s", self.name, path, exc)
            return None
        if len(data) != r[1] - r[0] or adler32_hex(data) != adler32:
            log.warning("cache %s: corrupt extent %s (%d bytes, adler32 %s); dropped, will "
                        "fetch again", self.name, path, len(data), adler32_hex(data))
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def write_extent(self, ident: Identity, start: int, data: bytes, meta: dict[str, Any]
                     ) -> Range:
        """Store ``data`` as the extent at ``start``; returns its range."""
        r = (start, start + len(data))
        key = ident.key
        with self._writing():
            self._ensure_entry(ident, meta)
            if not self._inside(key):
                raise PermissionError(errno.EPERM, f"{self.layout.extents(key)} leads outside "
                                      "the tier (a planted symlink?); not writing there")
            self._publish(self.layout.extents(key) / extent_name(r, adler32_hex(data)), data)
        return r

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write into the tier that fails raises CacheWriteError, one line naming the tier."""
        try:
            yield
        except CacheWriteError:
            raise
        except OSError as exc:
            raise CacheWriteError(exc.errno or errno.EIO,
                                  f"cache tier {self.name}: {exc.strerror or exc}") from exc

    def _ensure_entry(self, ident: Identity, meta: dict[str, Any]) -> None:
        if ident.key not in self._known_entries:
            with self._create_lock:  # a file's parallel pieces create its entry once
                if ident.key not in self._known_entries:
                    if len(self._known_entries) > 65536:  # long-lived workers: stay bounded
                        self._known_entries.clear()
                    self._create_entry(ident, meta)

    def adopt(self, ident: Identity, path: Path, meta: dict[str, Any]) -> Path:
        """Publish a whole file written elsewhere in this tier as the entry's one extent.

        ``path`` must be on the same filesystem (e.g. under ``ROOT/tmp``); it is renamed, so
        readers see the finished file or nothing. Returns the extent's path (a complete file
        that tools such as pyarrow can open directly).
        """
        with self._writing():
            self._create_entry(ident, meta)
            if not self._inside(ident.key):
                raise PermissionError(errno.EPERM, "the entry leads outside the tier")
            target = self.layout.extents(ident.key) / extent_name((0, ident.size),
                                                                  ident.adler32 or "00000001")
            os.chmod(path, self.file_mode)
            os.replace(path, target)
            self.mark_complete(ident.key, ident.adler32 or "")
        return target

    def scratch(self) -> Path:
        """A folder for files being written, on the tier's filesystem (for :meth:`adopt`)."""
        folder = self.root / "tmp"
        self._mkdir(folder)
        return folder

    def _create_entry(self, ident: Identity, meta: dict[str, Any]) -> None:
        key = ident.key
        self._mkdir(self.layout.extents(key))
        if not self.layout.meta(key).exists():
            self._publish(self.layout.meta(key),
                          json.dumps({**ident.as_dict(), **meta, "created": time.time()}).encode())
        self._point_name(ident)
        self._known_entries.add(key)

    def _point_name(self, ident: Identity) -> None:
        """Record ``ident`` as the current identity of its name; drop the entry it replaces."""
        pointer = self.layout.name_pointer(ident.name_key)
        try:
            old = pointer.read_text().strip()
        except OSError:
            old = ""
        if old == ident.key:
            return
        self._mkdir(pointer.parent)
        self._publish(pointer, ident.key.encode())
        if old:
            log.info("cache %s: %s changed (size or adler32); dropping the stale entry",
                     self.name, ident.name)
            self.remove_entry(old)

    def current_key(self, name_key: str) -> str | None:
        try:
            return self.layout.name_pointer(name_key).read_text().strip() or None
        except OSError:
            return None

    # -- whole files ---------------------------------------------------------------------------
    def mark_complete(self, key: str, adler32: str) -> None:
        with self._writing():
            self._publish(self.layout.entry(key) / f"complete.{adler32}", b"")

    def mark_staged(self, ident: Identity, adler32: str, meta: dict[str, Any]) -> None:
        """Mark a whole file complete; its entry is created first when no piece made it (an
        empty file has no extents)."""
        with self._writing():
            self._ensure_entry(ident, meta)
        self.mark_complete(ident.key, adler32)

    def is_complete(self, key: str) -> bool:
        try:
            return any(n.startswith("complete.") for n in os.listdir(self.layout.entry(key)))
        except OSError:
            return False

    # -- single flight ---------------------------------------------------------------------------
    def claim(self, key: str, r: Range) -> Claim | None:
        """Claim the fetch of ``r``; None if a live claim for exactly ``r`` exists."""
        folder = self.layout.claims(key)
        path = folder / claim_name(r)
        body = json.dumps({"host": HOST, "pid": os.getpid(), "t": time.time()}).encode()
        for _ in range(2):
            try:
                self._mkdir(folder)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            except FileExistsError:
                if not self._claim_is_stale(path):
                    return None
                with contextlib.suppress(OSError):
                    path.unlink()  # its owner died: take it over
                continue
            except OSError:
                self.claimable = False  # read-only or full: fetch without single flight
                return None
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            return Claim(path, r)
        return None

    def release(self, claim: Claim) -> None:
        with contextlib.suppress(OSError):
            claim.path.unlink()

    def live_claims(self, key: str) -> list[Range]:
        folder = self.layout.claims(key)
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        out = []
        for n in names:
            r = parse_claim_name(n)
            if r is not None and not self._claim_is_stale(folder / n):
                out.append(r)
        return out

    def _claim_is_stale(self, path: Path) -> bool:
        try:
            st = path.stat()
            info = json.loads(path.read_bytes() or b"{}")
        except (OSError, ValueError):
            return True
        if time.time() - st.st_mtime > self.claim_timeout:
            return True
        if info.get("host") == HOST and isinstance(info.get("pid"), int):
            return not _pid_alive(info["pid"])
        return False

    # -- readers and access ------------------------------------------------------------------
    def touch(self, key: str) -> None:
        """Record an open: the ``access`` file's mtime is the last access, its length the
        number of opens (one appended byte each; for the ``lfu`` policy)."""
        if not self.layout.entry(key).is_dir():
            return
        with contextlib.suppress(OSError):
            fd = os.open(self.layout.access(key), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         self.file_mode)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)

    # -- pins --------------------------------------------------------------------------------
    def pin(self, key: str, until: float, who: str) -> None:
        path = self.layout.pin(key)
        self._mkdir(path.parent)
        self._publish(path, json.dumps({"until": until, "by": who}).encode())

    def unpin(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.layout.pin(key).unlink()

    def pinned_until(self, key: str) -> float:
        try:
            return float(json.loads(self.layout.pin(key).read_bytes())["until"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def pins(self) -> dict[str, float]:
        folder = self.layout.root / "pins"
        try:
            names = os.listdir(folder)
        except OSError:
            return {}
        return {n: self.pinned_until(n) for n in names if not n.startswith(".")}

    # -- usage summary -------------------------------------------------------------------------
    def write_usage(self, summary: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self._publish(self.root / "usage.json", json.dumps(summary).encode())

    def read_usage(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "usage.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def reading(self, key: str) -> Iterator[None]:
        """Mark the entry as open by this process; eviction skips it meanwhile."""
        marker = self.layout.readers(key) / f"{HOST}.{os.getpid()}"
        made = False
        with contextlib.suppress(OSError):
            self._mkdir(marker.parent)
            marker.touch(mode=self.file_mode)
            made = True
        try:
            yield
        finally:
            if made:
                with contextlib.suppress(OSError):
                    marker.unlink()

    def live_readers(self, key: str) -> int:
        folder = self.layout.readers(key)
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        live = 0
        for n in names:
            host, _, pid = n.rpartition(".")
            if host == HOST and pid.isdigit():
                if _pid_alive(int(pid)):
                    live += 1
                else:
                    with contextlib.suppress(OSError):
                        (folder / n).unlink()
            else:
                try:  # another node: trust markers touched within a day
                    live += time.time() - (folder / n).stat().st_mtime < 86400
                except OSError:
                    pass
        return live

    # -- whole entries -----------------------------------------------------------------------
    def remove_entry(self, key: str) -> int:
        """Delete an entry (extents first, so no reader ever sees meta without data); returns
        the bytes freed."""
        freed = 0
        entry = self.layout.entry(key)
        for r, adler in self.extents(key).items():
            with contextlib.suppress(FileNotFoundError):
                (self.layout.extents(key) / extent_name(r, adler)).unlink()
                freed += r[1] - r[0]
        for sub in ("x", "claims", "readers"):
            folder = entry / sub
            with contextlib.suppress(OSError):
                for n in os.listdir(folder):
                    with contextlib.suppress(OSError):
                        (folder / n).unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            for n in os.listdir(entry):
                with contextlib.suppress(OSError):
                    (entry / n).unlink()
        with contextlib.suppress(OSError):
            entry.rmdir()
        self._known_entries.discard(key)
        self._safe.discard(key)
        return freed

    def keys(self) -> Iterator[str]:
        """Every entry key (walks the fan-out folders; for eviction and reports)."""
        base = self.layout.entries
        with contextlib.suppress(OSError):
            for a in sorted(os.listdir(base)):
                with contextlib.suppress(OSError):
                    for b in sorted(os.listdir(base / a)):
                        with contextlib.suppress(OSError):
                            yield from sorted(os.listdir(base / a / b))

    def entry_info(self, key: str) -> EntryInfo | None:
        entry = self.layout.entry(key)
        try:
            meta = json.loads(self.layout.meta(key).read_bytes())
        except (OSError, ValueError):
            meta = {}
        extents = self.extents(key)
        if not extents and not meta and not entry.exists():
            return None
        try:
            st = self.layout.access(key).stat()
            last, meta["opens"] = st.st_mtime, st.st_size
        except OSError:
            last = meta.get("created", 0.0)
        return EntryInfo(key, sum(e - s for s, e in extents), last, meta,
                         self.is_complete(key), self.live_readers(key))

    def infos(self) -> Iterator[EntryInfo]:
        """Every entry's :class:`EntryInfo`, one walk of the tree (eviction passes, reports).

        Written for tiers of millions of entries: one ``scandir`` per folder, the file types it
        reports instead of a ``realpath`` per entry (a symlink anywhere in the walk, planted
        or not, is skipped: the walk never leaves the tier), and only the metadata reports and
        eviction use kept, with repeated owners, groups and datasets shared (~0.4 kB each).
        """
        strings: dict[str, str] = {}

        def dirs(path: str) -> list[str]:
            try:
                with os.scandir(path) as it:
                    return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                return []

        base = str(self.layout.entries)
        for a in dirs(base):
            for b in dirs(os.path.join(base, a)):
                folder = os.path.join(base, a, b)
                for key in dirs(folder):
                    info = self._scan_entry(key, os.path.join(folder, key), strings)
                    if info is not None:
                        yield info

    def _scan_entry(self, key: str, path: str, strings: dict[str, str]) -> EntryInfo | None:
        meta: dict[str, Any] = {}
        extents: list[str] = []
        complete = has_readers = False
        last: float | None = None
        opens = 0
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name == "meta.json" and e.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError, ValueError):
                            fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                            with os.fdopen(fd, "rb") as fh:
                                raw = json.loads(fh.read())
                            if isinstance(raw, dict):
                                meta = {k: raw[k] for k in _SCAN_META if k in raw}
                    elif e.name == "access" and e.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            st = e.stat(follow_symlinks=False)
                            last, opens = st.st_mtime, st.st_size
                    elif e.name == "x" and e.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            extents = os.listdir(e.path)
                    elif e.name.startswith("complete."):
                        complete = True
                    elif e.name == "readers":
                        has_readers = True
        except OSError:
            return None
        if last is not None:
            meta["opens"] = opens  # the access file grows by a byte per open
        for k in ("user", "group", "dataset"):
            v = meta.get(k)
            if isinstance(v, str):
                meta[k] = strings.setdefault(v, v)
        ranges = {parsed[0] for n in extents if (parsed := parse_extent_name(n)) is not None}
        if last is None:
            try:
                last = float(meta.get("created") or 0.0)
            except (TypeError, ValueError):  # one bad meta.json must not stop a pass
                last = 0.0
        return EntryInfo(key, sum(e - s for s, e in ranges), last, meta, complete,
                         self.live_readers(key) if has_readers else 0)

    def usage(self) -> int:
        """Bytes held (walks entries; see :mod:`htpdata.cache.evict` for the cost)."""
        return sum(e - s for key in self.keys() for s, e in self.extents(key))


_SCAN_META = ("name", "size", "adler32", "user", "group", "dataset", "created", "staged")
"""The meta.json fields a scan keeps (reports, quotas, eviction policies)."""


def _write_all(fd: int, data: bytes) -> None:
    """The one place cache bytes hit the disk (tests inject a full disk here)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
