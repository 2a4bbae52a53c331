"""Whole files in a tier: staging (one pack per file, written in place, resumable), converted
outputs kept as plain files, small named blobs, and what ``htpdata cache info`` shows.

A staged file is written as one pack ``.s.KEY`` in its entry folder: the data where the pack's
layout puts it, as pieces arrive from many streams, each piece's block checksums appended to
``.s.KEY.log`` once its bytes are written. A run killed at any moment leaves both behind; the
next run fetches only the pieces the log does not list. When every piece is there, the file's
adler32 is combined from the block checksums (no second read), compared with the catalog's,
the head is written and the pack is published by rename: a reader sees the whole file or none.
Two stagers of one file take turns through a lease in its entry folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..adler32 import combine_all
from ..errors import CacheWriteError
from . import fsops
from .area import Area, _as_cache_write_error
from .fsops import create_exclusive, publish, read_small
from .identity import Identity
from .lease import Lease
from .pack import BLOB, BLOCK, COMPLETE, RANGE, Record, block_sums, encode, encode_head, plan_layout
from .ranges import Range, split
from .tier import DiskTier

__all__ = ["StagedFile", "adopt", "entry_info", "get_blob", "put_blob", "scratch",
           "whole_file"]

_LOG_LIMIT = 64 * 1024**2


class StagedFile:
    """One file on its way into a tier (see the module docstring). Thread-safe for
    :meth:`write` from many streams."""

    def __init__(self, tier: DiskTier, ident: Identity, info: dict[str, Any], *,
                 private: bool, piece: int) -> None:
        # Checksum blocks never straddle two pieces (each piece's sums are its own): 64 KiB
        # blocks when pieces are multiples of that (4 MiB by default), else one per piece.
        self.block = BLOCK if piece % BLOCK == 0 else piece
        self.tier = tier
        self.ident = ident
        self.piece = piece
        self.private = private
        # "adler32" holds eight digits from the start (a placeholder when the catalog has
        # none): the head's length fixes where the data goes, so it must not change later.
        self._info = {**info, "name": ident.name, "adler32": ident.adler32 or "00000000",
                      "adler32_from": "catalog" if ident.adler32 else "staging",
                      "learnt": time.time(), "staged": True, "piece": piece}
        self.area: Area | None = None
        self._entry_fd = -1
        self._fd = -1
        self._log = -1
        self._lease: Lease | None = None
        self._sums: dict[int, tuple[int, ...]] = {}
        self.data_off = 0
        self.name = f".s.{ident.key}"

    # -- opening -------------------------------------------------------------------------------
    def open(self, wait: float = 600.0) -> list[Range]:
        """Take the file's staging lease (waiting while another live process stages it) and
        return the pieces still to fetch; [] if the whole file is already in the tier."""
        area = self.tier.write_area(self.private)
        if area is None:
            raise CacheWriteError(errno.EACCES, f"cache tier {self.tier.name}: no area of this "
                                  "user to stage into")
        self.area = area
        with _as_cache_write_error(str(area)), area.using(self.ident.name_key,
                                                          create=True) as entry:
            area.materialize(entry)
            if entry.folder is None:
                raise PermissionError(errno.EACCES, "cannot create the entry", str(area))
            self._entry_fd = os.dup(entry.folder.fd)
        deadline = time.monotonic() + wait
        while True:
            lease = Lease(self._entry_fd, f"stage-{self.ident.key[:16]}", area.dir_mode,
                          area.file_mode, lambda uid: uid in (area.steward, 0))
            if lease.acquire():
                self._lease = lease
                break
            if time.monotonic() > deadline:
                raise CacheWriteError(errno.EBUSY, f"{self.ident.name} is being staged by "
                                      "another process")
            time.sleep(0.5)
        if self.tier.complete(self.ident):
            return []
        with _as_cache_write_error(str(area)):
            return self._resume()

    def _resume(self) -> list[Range]:
        assert self.area is not None
        log = read_small(self._entry_fd, f"{self.name}.log", _LOG_LIMIT)
        lines = log[0].split(b"\n") if log is not None and self.area.mine(log[1].st_uid) else []
        info = None
        if lines:
            with contextlib.suppress(ValueError):
                info = json.loads(lines[0])
        if not isinstance(info, dict) or info.get("name") != self.ident.name or \
                info.get("piece") != self.piece:
            self._discard()  # another file's, or cut in other pieces: start anew
            info, lines = self._info, []
        self._info = info
        _, (self.data_off,) = plan_layout(self._info, [(RANGE, 0, self.ident.size, "")],
                                          self.block)
        for line in lines[1:]:
            parts = line.split()
            if len(parts) != 3:
                continue  # the last line of a killed run may be half written
            try:
                start, end = int(parts[0], 16), int(parts[1], 16)
                sums = tuple(int(x, 16) for x in parts[2].split(b",")) if parts[2] != b"-" \
                    else ()
            except ValueError:
                continue
            if len(sums) == -(-(end - start) // self.block) and start % self.piece == 0:
                self._sums[start] = sums
        if not lines:
            self._log = create_exclusive(self._entry_fd, f"{self.name}.log",
                                         self.area.file_mode)
            fsops.write_all(self._log, json.dumps(self._info).encode() + b"\n")
            self._fd = create_exclusive(self._entry_fd, self.name, self.area.file_mode)
        else:
            self._log = os.open(f"{self.name}.log", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
                                | os.O_CLOEXEC, dir_fd=self._entry_fd)
            self._fd = os.open(self.name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=self._entry_fd)
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode) or not self.area.mine(st.st_uid):
                raise PermissionError(errno.EPERM, "not our staging file", self.name)
        done = {s for s in self._sums}
        return [p for p in split((0, self.ident.size), self.piece) if p[0] not in done]

    @property
    def resumed(self) -> int:
        return sum(min(self.piece, self.ident.size - s) for s in self._sums)

    def _discard(self) -> None:
        for n in (self.name, f"{self.name}.log"):
            with contextlib.suppress(OSError):
                os.unlink(n, dir_fd=self._entry_fd)
        self._sums.clear()

    # -- writing -------------------------------------------------------------------------------
    def write(self, start: int, data: bytes) -> None:
        """Store one piece (it must start on a piece boundary)."""
        with _as_cache_write_error(self.tier.name):
            fsops.write_all(self._fd, data, self.data_off + start)
            sums = block_sums(data, self.block)
            line = f"{start:x} {start + len(data):x} " + (",".join(f"{s:x}" for s in sums)
                                                         or "-") + "\n"
            os.write(self._log, line.encode())  # after the bytes: the log never runs ahead
            self._sums[start] = sums

    def adler32(self) -> str:
        """The whole file's adler32, combined from the pieces' block checksums."""
        parts: list[tuple[int, int]] = []
        for start in sorted(self._sums):
            end = min(start + self.piece, self.ident.size)
            for i, s in enumerate(self._sums[start]):
                lo = start + i * self.block
                parts.append((s, min(self.block, end - lo)))
        return f"{combine_all(parts):08x}"

    def missing(self) -> list[Range]:
        return [p for p in split((0, self.ident.size), self.piece) if p[0] not in self._sums]

    def finish(self) -> str:
        """Write the head and publish the pack; returns the whole file's adler32."""
        assert self.area is not None
        got = self.adler32()
        sums = tuple(s for start in sorted(self._sums) for s in self._sums[start])
        records = [Record(RANGE, 0, self.ident.size, self.data_off, sums)] \
            if self.ident.size else []
        info = dict(self._info)
        if info.get("adler32_from") == "staging":
            info["adler32"] = got  # eight digits for eight: the layout stays as planned
        head = encode_head(self.ident.key, self.ident.size, info, records, COMPLETE,
                           self.block)
        with _as_cache_write_error(str(self.area)):
            fsops.write_all(self._fd, head, 0)
            if not records:
                os.ftruncate(self._fd, len(head))
            os.close(self._fd)
            self._fd = -1
            name = f"p.{time.time_ns():016x}.{self.area.proc.tag()}.{os.urandom(3).hex()}"
            os.rename(self.name, name, src_dir_fd=self._entry_fd, dst_dir_fd=self._entry_fd)
            with contextlib.suppress(OSError):
                os.unlink(f"{self.name}.log", dir_fd=self._entry_fd)
        n = len(head) + self.ident.size if records else len(head)
        self.tier._record(self.area).note(added=n)
        self.area.forget(self.ident.name_key)  # list again: the new pack is there
        return got

    def restart(self) -> list[Range]:
        """After :meth:`drop`: start the file anew; returns all its pieces."""
        with _as_cache_write_error(self.tier.name):
            return self._resume()

    def drop(self) -> None:
        """Throw away what was staged (a checksum mismatch: the next attempt starts anew)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._log >= 0:
            os.close(self._log)
            self._log = -1
        self._discard()

    def close(self) -> None:
        for fd in (self._fd, self._log):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._log = -1
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._entry_fd >= 0:
            os.close(self._entry_fd)
            self._entry_fd = -1


# -- whole files kept as they are (conversions) ----------------------------------------------------
def scratch(tier: DiskTier) -> Path:
    """A folder for files being written, in this user's own area (for :func:`adopt`)."""
    area = tier.home()
    if area is None:
        raise CacheWriteError(errno.EACCES, f"cache tier {tier.name}: no area of this user")
    with _as_cache_write_error(str(area)):
        area.sub("tmp", create=True)
    return tier.root / area.spec.rel / "tmp"


def adopt(tier: DiskTier, ident: Identity, path: Path, meta: dict[str, Any]) -> Path:
    """Publish a whole file written under :func:`scratch` as the entry's ``w.KEY`` file (a
    plain file pyarrow or uproot open directly) and its ``meta`` as a blob beside it."""
    area = tier.home()
    if area is None:
        raise CacheWriteError(errno.EACCES, f"cache tier {tier.name}: no area of this user")
    tmp = area.sub("tmp", create=True)
    assert tmp is not None
    with _as_cache_write_error(str(area)), area.using(ident.name_key, create=True) as entry:
        area.materialize(entry)
        assert entry.folder is not None
        put_blob(tier, ident, "meta", json.dumps(meta).encode(), area=area)
        name = f"w.{ident.key}"
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tmp.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != area.me.uid:
                raise PermissionError(errno.EPERM, "not our file", str(path))
            os.fchmod(fd, area.file_mode)
        finally:
            os.close(fd)
        os.rename(path.name, name, src_dir_fd=tmp.fd, dst_dir_fd=entry.folder.fd)
        tier._record(area).note(added=st.st_size)
        entry.load()
    return tier.root / area.spec.rel / "e" / ident.name_key[:2] / ident.name_key / name


def whole_file(tier: DiskTier, name: str) -> tuple[Path, Identity, dict[str, Any]] | None:
    """The newest ``w.KEY`` file of ``name`` this process trusts, its identity and meta."""
    name_key = Identity(name, 0).name_key
    for area in tier.read_areas():
        with area.using(name_key) as entry:
            if entry.folder is None:
                continue
            for head in entry.heads():
                blob = head.blob("meta")
                w = f"w.{head.key}"
                if blob is None or w not in entry.wholes or not area.accepts(entry.wholes[w]):
                    continue
                ident = Identity(name, head.size, head.info.get("adler32"))
                if ident.key != head.key:
                    continue
                meta = get_blob(tier, ident, "meta")
                path = tier.root / area.spec.rel / "e" / name_key[:2] / name_key / w
                return path, ident, json.loads(meta) if meta else {}
    return None


# -- blobs -------------------------------------------------------------------------------------
def put_blob(tier: DiskTier, ident: Identity, name: str, data: bytes, *,
             private: bool = False, area: Area | None = None) -> int:
    """Keep a small named blob for content ``ident`` (metadata derived from the file, such
    as a coffea preprocess result), as a pack of its own; returns bytes written."""
    area = area or tier.write_area(private)
    if area is None:
        return 0
    chunks = encode(ident.key, ident.size, {"name": ident.name, "adler32": ident.adler32,
                                            "learnt": time.time(), "blob": name}, [],
                    blobs=[(name, data)])
    with _as_cache_write_error(str(area)), area.using(ident.name_key, create=True) as entry:
        area.materialize(entry)
        assert entry.folder is not None
        pname = f"p.{time.time_ns():016x}.{area.proc.tag()}.{os.urandom(3).hex()}"
        n = publish(entry.folder.fd, pname, chunks, area.file_mode)
        entry.load()
    return n


def get_blob(tier: DiskTier, ident: Identity, name: str) -> bytes | None:
    """The blob ``name`` kept for exactly content ``ident``, verified; None if none."""
    for area in tier.read_areas():
        with area.using(ident.name_key) as entry:
            if entry.folder is None:
                continue
            for ref in list(entry.packs.values()):
                rec = ref.head.blob(name) if ref.head.key == ident.key else None
                if rec is None:
                    continue
                data = ref.read(Record(BLOB, 0, rec.length, rec.offset, rec.sums), 0,
                                rec.length, entry.folder.fd)
                if isinstance(data, bytes):
                    return data
    return None


# -- what cache info shows ----------------------------------------------------------------------
def entry_info(tier: DiskTier, name: str) -> dict[str, Any]:
    """What ``tier`` holds of ``name``: its newest content, bytes held, packs, completeness,
    pin, where (area) and whose."""
    name_key = Identity(name, 0).name_key
    row: dict[str, Any] = {"tier": tier.name, "root": str(tier.root), "held": False}
    best: tuple[float, Area, Any] | None = None
    for area in tier.read_areas():
        with area.using(name_key) as entry:
            if entry.folder is None:
                continue
            for head in entry.heads():
                if head.info.get("name") != name:
                    continue
                t = head.info.get("learnt") or 0.0
                if best is None or t > best[0]:
                    best = (float(t) if isinstance(t, int | float) else 0.0, area, head)
    if best is None:
        return row
    _, area, head = best
    with area.using(name_key) as entry:
        held = entry.held(head.key)
        packs = [r for r in entry.packs.values() if r.head.key == head.key]
        row.update({
            "held": bool(held), "key": head.key, "area": str(area.spec),
            "size": head.size, "adler32": head.info.get("adler32"),
            "bytes": sum(e - s for s, e in held),
            "fraction": sum(e - s for s, e in held) / head.size if head.size else None,
            "extents": len(held), "packs": len(packs),
            "complete": entry.complete(head.key, head.size),
            "pinned_until": entry.pinned_until or None,
            "last_access": _stamp(entry.folder.fd if entry.folder else -1),
            "owner": packs[0].uid if packs else None,
            "dataset": head.info.get("dataset"),
            "ranges": [list(r) for r in held[:50]],
        })
    return row


def _stamp(fd: int) -> float | None:
    if fd < 0:
        return None
    try:
        return os.stat("a", dir_fd=fd, follow_symlinks=False).st_mtime
    except OSError:
        return None

