"""Where a ROOT file keeps its metadata, from its first bytes (pure, no I/O).

A ROOT file starts with a header (``root``, then ``fVersion``, ``fBEGIN``, ``fEND``,
``fSeekFree``, ``fNbytesFree``, ``nfree``, ``fNbytesName``, ``fUnits``, ``fCompress``,
``fSeekInfo``, ``fNbytesInfo``, ``fUUID``), 32-bit offsets for files written small
(``fVersion < 1000000``) and 64-bit ones for large files. The top directory's record follows at
``fBEGIN + fNbytesName`` and says where the list of keys is (``fSeekKeys``, ``fNbytesKeys``;
64-bit when its own version is above 1000). Every reader that opens the file reads exactly
these: the first bytes, the keys list and the streamer info (``fSeekInfo``, ``fNbytesInfo``),
and then the objects the keys point to (a TTree's metadata, read when the tree is opened).

:func:`parse_layout` turns a prefix of the file into a :class:`RootLayout` (or says how many
bytes it needs); :func:`parse_keys` turns the keys list into the top-level objects' extents. The
cache fetches these extents exactly instead of fixed-size head and tail blocks (see
``docs/cache.md``), and the next-file prefetch locates a file's trees through them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn

from .ranges import Range, merge

__all__ = ["HEAD_GUESS", "KeyExtent", "NotRoot", "RootLayout", "parse_keys", "parse_layout"]

HEAD_GUESS = 512
"""Bytes that hold the header and the top directory's record in every file seen so far
(``fBEGIN`` is 100; the record follows the file's name and title)."""

_SMALL = struct.Struct(">iiiiiiiBiii")  # fVersion .. fNbytesInfo, 32-bit offsets (4 .. 45)
_LARGE = struct.Struct(">iiqqiiiBiqi")  # the same with 64-bit fEND, fSeekFree, fSeekInfo
_DIR_SMALL = struct.Struct(">hIIiiiii")  # version, ctime, mtime, nbyteskeys, nbytesname,
_DIR_LARGE = struct.Struct(">hIIiiqqq")  # seekdir, seekparent, seekkeys
_BIG = 1000000


class NotRoot(ValueError):
    """The bytes are not (the start of) a ROOT file, or contradict themselves."""


@dataclass(frozen=True)
class RootLayout:
    """What the header and the top directory say (offsets in bytes from the file's start)."""

    version: int
    begin: int
    end: int
    seek_free: int
    nbytes_free: int
    nbytes_name: int
    compress: int
    seek_info: int
    nbytes_info: int
    seek_keys: int
    nbytes_keys: int
    head_end: int
    """Where the top directory's record ends: ``[0, head_end)`` is all an opener reads first."""

    @property
    def large(self) -> bool:
        return self.version >= _BIG

    def extents(self, size: int) -> list[Range]:
        """The ranges every opener of the file reads: the head, the keys list, the streamer
        info (sorted, disjoint, clipped to ``size``)."""
        parts = [(0, self.head_end), (self.seek_keys, self.seek_keys + self.nbytes_keys),
                 (self.seek_info, self.seek_info + self.nbytes_info)]
        return merge((max(0, s), min(e, size)) for s, e in parts if e > s and s < size)


@dataclass(frozen=True)
class KeyExtent:
    """One top-level key: the object's class, name and cycle, and where its record is."""

    classname: str
    name: str
    cycle: int
    start: int
    nbytes: int

    @property
    def range(self) -> Range:
        return (self.start, self.start + self.nbytes)


def parse_layout(data: bytes, size: int | None = None) -> RootLayout | int:
    """The layout from the file's first bytes ``data``, or (an int) how many first bytes it
    needs when ``data`` is too short. :class:`NotRoot` when the bytes are no ROOT file or
    point outside a file of ``size`` bytes."""
    if not b"root".startswith(data[:4]):
        _not_root("no 'root' magic")
    if len(data) < 4 + _SMALL.size:
        return HEAD_GUESS
        _not_root("no 'root' magic")
    version = struct.unpack_from(">i", data, 4)[0]
    fmt = _LARGE if version >= _BIG else _SMALL
    if len(data) < 4 + fmt.size:
        return 4 + fmt.size
    (version, begin, end, seek_free, nbytes_free, _nfree, nbytes_name, _units, compress,
     seek_info, nbytes_info) = fmt.unpack_from(data, 4)
    if not 0 < begin <= end or nbytes_name < 0 or (size is not None and end > size):
        _not_root(f"header says fBEGIN={begin}, fEND={end}"
                  + (f" in a file of {size} bytes" if size is not None else ""))
    at = int(begin) + int(nbytes_name)
    if len(data) < at + 2:
        return at + _DIR_LARGE.size
    dir_version = struct.unpack_from(">h", data, at)[0]
    dfmt = _DIR_LARGE if dir_version > 1000 else _DIR_SMALL
    if len(data) < at + dfmt.size:
        return at + dfmt.size
    _v, _c, _m, nbytes_keys, _n, _seekdir, _parent, seek_keys = dfmt.unpack_from(data, at)
    for what, start, n in (("streamer info", seek_info, nbytes_info),
                           ("keys list", seek_keys, nbytes_keys)):
        if start < 0 or n < 0 or start + n > end:
            _not_root(f"{what} at {start}+{n} lies outside fEND={end}")
    return RootLayout(version, begin, end, seek_free, nbytes_free, nbytes_name, compress,
                      seek_info, nbytes_info, seek_keys, nbytes_keys, at + dfmt.size)


def parse_keys(data: bytes, layout: RootLayout) -> list[KeyExtent]:
    """The top-level keys from the keys list (``data``: the ``layout.nbytes_keys`` bytes at
    ``layout.seek_keys``). :class:`NotRoot` when it is garbled."""
    try:
        keylen = struct.unpack_from(">h", data, 14)[0]  # the keys list's own key first
        if keylen < 26:  # shorter than the smallest key header
            _not_root(f"keys list's key is {keylen} bytes long")
        (nkeys,) = struct.unpack_from(">i", data, keylen)
        if nkeys < 0 or nkeys > len(data):
            _not_root(f"keys list says it has {nkeys} keys")
        at, out = keylen + 4, []
        for _ in range(nkeys):
            key, at = _key(data, at)
            if key.start < 0 or key.start + key.nbytes > layout.end:
                _not_root(f"key {key.name!r} at {key.start}+{key.nbytes} lies outside "
                          f"fEND={layout.end}")
            out.append(key)
    except (struct.error, UnicodeDecodeError) as exc:
        raise NotRoot(f"garbled keys list: {exc}") from None
    return out


def _key(data: bytes, at: int) -> tuple[KeyExtent, int]:
    start = at
    nbytes, version, _objlen, _datime, keylen, cycle = struct.unpack_from(">ihiIhh", data, at)
    at += 18
    if version > 1000:
        seek, _pdir = struct.unpack_from(">qq", data, at)
        at += 16
    else:
        seek, _pdir = struct.unpack_from(">ii", data, at)
        at += 8
    classname, at = _string(data, at)
    name, at = _string(data, at)
    _title, at = _string(data, at)
    if at - start > keylen:
        _not_root(f"key {name!r} is longer than its keylen {keylen}")
    return KeyExtent(classname, name, cycle, seek, nbytes), start + keylen


def _string(data: bytes, at: int) -> tuple[str, int]:
    n = data[at]
    at += 1
    if n == 255:
        (n,) = struct.unpack_from(">i", data, at)
        at += 4
    if at + n > len(data):
        raise struct.error("string past the end")
    return data[at:at + n].decode("utf-8", "replace"), at + n


def _not_root(why: str) -> NoReturn:
    raise NotRoot(f"not a ROOT file: {why}")
