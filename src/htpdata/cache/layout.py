"""Where things live inside a disk tier, and how cache file names encode what they hold.

Pure functions of a root folder and a key; no I/O. The layout is the contract between every
process on every node sharing a tier, so it is plain, versioned and documented::

    ROOT/htpdata-cache.json           format marker
    ROOT/entries/ab/cd/KEY/           one entry per content identity (name, size, adler32)
        meta.json                     the identity, owner, group, dataset (written once)
        x/START-END.ADLER32           an extent: bytes [START, END) of the file, hex offsets
        claims/START-END              "I am fetching these bytes" (single flight)
        readers/HOST.PID              an open reader (eviction leaves the entry alone)
        complete.ADLER32              the whole file is here and matched its adler32
        access                        its mtime is the entry's last access
    ROOT/names/ab/NAMEKEY             the key currently valid for a name (staleness)
    ROOT/pins/KEY                     pinned until the time inside
    ROOT/journal/HOST-PID-T.jsonl     per-process accounting events (append only)

Every file is written under a temporary name beginning with ``.`` in its final folder, then
renamed: a reader sees a whole file or none.
"""

from __future__ import annotations

import re
from pathlib import Path

from .ranges import Range

__all__ = ["FORMAT", "Layout", "extent_name", "parse_extent_name"]

FORMAT = 1
_EXTENT = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.([0-9a-f]{8})")


def extent_name(r: Range, adler32: str) -> str:
    return f"{r[0]:016x}-{r[1]:016x}.{adler32}"


def parse_extent_name(name: str) -> tuple[Range, str] | None:
    m = _EXTENT.fullmatch(name)
    if m is None:
        return None
    return (int(m.group(1), 16), int(m.group(2), 16)), m.group(3)


def claim_name(r: Range) -> str:
    return f"{r[0]:016x}-{r[1]:016x}"


def parse_claim_name(name: str) -> Range | None:
    parts = name.split("-")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9a-f]{16}", p) for p in parts):
        return None
    return int(parts[0], 16), int(parts[1], 16)


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries = root / "entries"
        self._entry: dict[str, Path] = {}  # key -> folder; files in flight ask it many times

    @property
    def marker(self) -> Path:
        return self.root / "htpdata-cache.json"

    @property
    def entries(self) -> Path:
        return self._entries

    def entry(self, key: str) -> Path:
        path = self._entry.get(key)
        if path is None:
            if len(self._entry) >= 4096:  # a long-lived worker sees many files: stay bounded
                self._entry.clear()
            path = self._entry[key] = self._entries.joinpath(key[:2], key[2:4], key)
        return path

    def extents(self, key: str) -> Path:
        return self.entry(key) / "x"

    def claims(self, key: str) -> Path:
        return self.entry(key) / "claims"

    def readers(self, key: str) -> Path:
        return self.entry(key) / "readers"

    def meta(self, key: str) -> Path:
        return self.entry(key) / "meta.json"

    def access(self, key: str) -> Path:
        return self.entry(key) / "access"

    def name_pointer(self, name_key: str) -> Path:
        return self.root / "names" / name_key[:2] / name_key

    def pin(self, key: str) -> Path:
        return self.root / "pins" / key

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def quota(self) -> Path:
        return self.root / "quota.json"
