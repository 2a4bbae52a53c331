"""Pack files: what one fetch batch stored, in one write-once file (pure encoding, no I/O).

A pack holds the bytes of several ranges of one file (and, for later uses such as a coffea
preprocess result, small named blobs), written once under a temporary name and published by
rename. Its head comes first, so one read of the first 64 KiB usually gives everything needed
to serve it::

    header   68 bytes   magic "HTPPACK2", format version, flags, lengths, the file's size,
                        the pack's own length, the entry's identity key, a checksum of the head
    info     JSON       the identity as the writer learnt it: name, adler32, when, dataset
    index    records    kind, start, end, offset in the pack, and one adler32 per block
    (padding to 4 KiB)
    data     bytes      the records' bytes, in index order

The checksums are there for torn writes and bad disks only (a crash before the data reached the
disk, a full disk, a flipped bit): every block read from disk is checked before its bytes are
served. They are not a defence against a hostile writer, who can compute them as easily;
whose packs a reader accepts is decided by file ownership (:mod:`.trust`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..adler32 import adler32

__all__ = [
    "BLOCK",
    "COMPLETE",
    "HEAD_READ",
    "BlockSummer",
    "Head",
    "PackError",
    "Record",
    "encode",
    "encode_head",
    "parse_head",
    "plan_layout",
    "verify_blocks",
]

MAGIC = b"HTPPACK2"
VERSION = 2
COMPLETE = 1
"""Flag: the pack holds the whole file and its writer checked the whole file's adler32."""
RANGE, BLOB = 0, 1
BLOCK = 64 * 1024
"""Bytes per checksum block: a 6 kB basket costs one block read, a 4 MiB piece 64 checksums."""
HEAD_READ = 64 * 1024
"""Bytes a reader reads first: the head of all but the largest packs."""
ALIGN = 4096
_HEADER = struct.Struct("<8sHHIIIIQQ20sI")
_RECORD = struct.Struct("<BBHIQQQ")
_SUM = struct.Struct("<I")
MAX_HEAD = 64 * 1024**2  # a head this large is damage, not a pack
MAX_RECORDS = 1 << 20


class PackError(ValueError):
    """The bytes are not a sound pack of this format (torn, truncated, damaged, foreign)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One stored range ``[start, end)`` of the file (or a named blob) at ``offset`` in the
    pack, with one adler32 per :data:`BLOCK` of its bytes."""

    kind: int
    start: int
    end: int
    offset: int
    sums: tuple[int, ...]
    name: str = ""

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Head:
    """A pack's parsed head."""

    key: str
    """The identity key (40 hex digits) of the file the bytes belong to."""
    size: int
    flags: int
    block: int
    pack_len: int
    info: dict[str, Any]
    records: tuple[Record, ...]

    @property
    def complete(self) -> bool:
        return bool(self.flags & COMPLETE)

    def ranges(self) -> list[Record]:
        return [r for r in self.records if r.kind == RANGE]

    def blob(self, name: str) -> Record | None:
        return next((r for r in self.records if r.kind == BLOB and r.name == name), None)

    @property
    def has_blobs(self) -> bool:
        """Whether the pack keeps named blobs (never merged away with the byte ranges)."""
        return any(r.kind == BLOB for r in self.records)


def _nblocks(length: int, block: int) -> int:
    return -(-length // block) if length else 0


def block_sums(data: bytes | memoryview, block: int = BLOCK) -> tuple[int, ...]:
    view = memoryview(data)
    return tuple(adler32(view[i:i + block]) for i in range(0, len(view), block))


class BlockSummer:
    """The block checksums of bytes fed in pieces of any size (a record written part by part):
    :meth:`feed` each piece in order, then :meth:`sums` gives what :func:`block_sums` gives
    for the whole, without holding the whole in memory."""

    __slots__ = ("_block", "_done", "_fill", "_value")

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._done: list[int] = []
        self._value = 1  # adler32 of the current block so far
        self._fill = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            take = min(self._block - self._fill, len(view))
            self._value = adler32(view[:take], self._value)
            self._fill += take
            view = view[take:]
            if self._fill == self._block:
                self._done.append(self._value)
                self._value, self._fill = 1, 0

    def sums(self) -> tuple[int, ...]:
        return tuple(self._done) + ((self._value,) if self._fill else ())


def _head_bytes(key: str, size: int, flags: int, block: int, pack_len: int, info: bytes,
                records: Sequence[Record]) -> bytes:
    index = bytearray()
    for r in records:
        name = r.name.encode()
        index += _RECORD.pack(r.kind, 0, len(name), len(r.sums), r.start, r.end, r.offset)
        index += name
        index += struct.pack(f"<{len(r.sums)}I", *r.sums)
    fixed = _HEADER.pack(MAGIC, VERSION, flags, len(info), len(index), len(records), block,
                         size, pack_len, bytes.fromhex(key), 0)
    check = adler32(index, adler32(info, adler32(fixed[:-4])))
    return fixed[:-4] + _SUM.pack(check) + info + bytes(index)


def plan_layout(info: dict[str, Any], items: Sequence[tuple[int, int, int, str]],
                block: int = BLOCK) -> tuple[int, list[int]]:
    """Where the data of each item (kind, start, end, name) goes: (data offset of the first,
    offsets of each). Depends only on the head's lengths, so a writer can reserve the head,
    write the data where it belongs as it arrives, and write the head last (staging)."""
    info_len = len(json.dumps(info, sort_keys=True).encode())
    index_len = sum(_RECORD.size + len(name.encode()) + 4 * _nblocks(e - s, block)
                    for _, s, e, name in items)
    pos = -(-(_HEADER.size + info_len + index_len) // ALIGN) * ALIGN
    offsets = []
    for _, s, e, _ in items:
        offsets.append(pos)
        pos += e - s
    return pos, offsets


def encode_head(key: str, size: int, info: dict[str, Any], records: Sequence[Record],
                flags: int = 0, block: int = BLOCK) -> bytes:
    """The head of a pack whose records (with offsets from :func:`plan_layout`) are known;
    padded to the first record's offset."""
    raw_info = json.dumps(info, sort_keys=True).encode()
    pack_len = max((r.offset + r.length for r in records), default=0)
    head = _head_bytes(key, size, flags, block, pack_len, raw_info, records)
    first = min((r.offset for r in records), default=len(head))
    if len(head) > first:
        raise ValueError("records overlap the head (offsets not from plan_layout)")
    if not records:  # an empty pack (an empty file, complete): the head is all of it
        return _head_bytes(key, size, flags, block, len(head), raw_info, records)
    return head + bytes(first - len(head))


def encode(key: str, size: int, info: dict[str, Any],
           ranges: Sequence[tuple[int, bytes | memoryview]],
           blobs: Sequence[tuple[str, bytes]] = (), flags: int = 0,
           block: int = BLOCK) -> list[bytes | memoryview]:
    """A whole pack as chunks to write: the head, then each record's bytes."""
    items = [(RANGE, s, s + len(d), "") for s, d in ranges] + \
            [(BLOB, 0, len(d), n) for n, d in blobs]
    datas = [d for _, d in ranges] + [d for _, d in blobs]
    _, offsets = plan_layout(info, items, block)
    records = [Record(kind, s, e, off, block_sums(d, block), name)
               for (kind, s, e, name), off, d in zip(items, offsets, datas, strict=True)]
    for r in records:
        if r.kind == RANGE and not 0 <= r.start < r.end <= size:
            raise ValueError(f"range {r.start}-{r.end} outside a file of {size} bytes")
    return [encode_head(key, size, info, records, flags, block), *datas]


def parse_head(buf: bytes, st_size: int) -> Head:
    """Parse a pack's head from its first bytes. Raises :class:`PackError` for anything but a
    sound head of a pack of exactly ``st_size`` bytes; a head longer than ``buf`` raises
    :class:`NeedMore` with the length to read."""
    if len(buf) < _HEADER.size:
        raise PackError("shorter than a pack header")
    (magic, version, flags, info_len, index_len, nrec, block, size, pack_len, key,
     check) = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise PackError("not a pack (bad magic)")
    if version != VERSION:
        raise PackError(f"pack format {version}, expected {VERSION}")
    head_len = _HEADER.size + info_len + index_len
    if head_len > MAX_HEAD or nrec > MAX_RECORDS or block <= 0:
        raise PackError("implausible head")
    if pack_len != st_size:
        raise PackError(f"torn: {st_size} bytes on disk, {pack_len} written")
    if len(buf) < head_len:
        raise NeedMore(head_len)
    info_raw = buf[_HEADER.size:_HEADER.size + info_len]
    index = memoryview(buf)[_HEADER.size + info_len:head_len]
    if adler32(index, adler32(info_raw, adler32(buf[:_HEADER.size - 4]))) != check:
        raise PackError("head checksum mismatch")
    try:
        info = json.loads(info_raw)
    except ValueError as exc:
        raise PackError(f"bad info: {exc}") from None
    if not isinstance(info, dict):
        raise PackError("bad info")
    records = []
    pos = 0
    for _ in range(nrec):
        kind, _pad, name_len, nsums, start, end, offset = _RECORD.unpack_from(index, pos)
        pos += _RECORD.size
        name = bytes(index[pos:pos + name_len]).decode(errors="replace")
        pos += name_len
        sums = struct.unpack_from(f"<{nsums}I", index, pos)
        pos += 4 * nsums
        length = end - start
        if (kind not in (RANGE, BLOB) or length < 0 or offset < head_len
                or offset + length > pack_len or nsums != _nblocks(length, block)
                or (kind == RANGE and end > size)):
            raise PackError("implausible record")
        records.append(Record(kind, start, end, offset, sums, name))
    if pos != index_len:
        raise PackError("index length mismatch")
    return Head(key.hex(), size, flags, block, pack_len, info, tuple(records))


class NeedMore(PackError):
    """The head is longer than the bytes given; read ``length`` bytes and parse again."""

    def __init__(self, length: int) -> None:
        super().__init__(f"head of {length} bytes")
        self.length = length


def span(record: Record, lo: int, hi: int, block: int) -> tuple[int, int, int]:
    """The blocks of ``record`` holding its bytes ``[lo, hi)`` (offsets within the record):
    (first block, pack offset of its first byte, bytes to read)."""
    first = lo // block
    last = -(-hi // block)
    start = record.offset + first * block
    end = min(record.offset + last * block, record.offset + record.length)
    return first, start, end - start


def verify_blocks(record: Record, first: int, data: bytes | memoryview, block: int) -> bool:
    """Do the blocks read (``data``, starting at block ``first``) match their checksums?"""
    view = memoryview(data)
    for i, pos in enumerate(range(0, len(view), block)):
        if adler32(view[pos:pos + block]) != record.sums[first + i]:
            return False
    return True
