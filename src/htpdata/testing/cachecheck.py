"""Check what a cache tier holds against the origin's files, byte for byte (tests, benchmarks).

:func:`verify_tier` walks a tier's folders (never following a symlink), parses every published
pack and compares each stored range with the origin's bytes for that name; packs whose blocks
do not match their own checksums are counted as torn (a reader would refuse them) and are never
counted as served. Unpublished files (``.t.*``, ``.s.*``) are not looked at: no reader sees them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.pack import NeedMore, PackError, parse_head, verify_blocks

__all__ = ["TierCheck", "packs_under", "verify_tier"]


@dataclass
class TierCheck:
    packs: int = 0
    records: int = 0
    bytes_checked: int = 0
    """Bytes of packs whose names are in ``originals``, compared with the origin."""
    wrong_bytes: int = 0
    """Bytes that a reader would accept (checksums fine) but differ from the origin."""
    torn: int = 0
    """Packs a reader refuses (bad head, truncated, or a block not matching its checksum)."""
    wrong: list[str] = field(default_factory=list)


def packs_under(root: Path) -> Iterator[Path]:
    """Every published pack under ``root`` (``p.*`` regular files; symlinks not followed)."""
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for f in files:
            if f.startswith("p."):
                p = Path(folder) / f
                if stat.S_ISREG(os.lstat(p).st_mode):
                    yield p


def verify_tier(root: Path, originals: Mapping[str, bytes],
                accept: Callable[[os.stat_result], bool] = lambda st: True) -> TierCheck:
    """Compare every stored range under ``root`` with ``originals`` (name -> bytes)."""
    out = TierCheck()
    for path in packs_under(root):
        st = os.lstat(path)
        if not accept(st):
            continue
        out.packs += 1
        data = path.read_bytes()
        try:
            try:
                head = parse_head(data, len(data))
            except NeedMore:  # pragma: no cover - the whole file was read
                raise
        except PackError:
            out.torn += 1
            continue
        name = head.info.get("name")
        want = originals.get(name) if isinstance(name, str) else None
        for rec in head.records:
            out.records += 1
            chunk = data[rec.offset:rec.offset + rec.length]
            if not verify_blocks(rec, 0, chunk, head.block):
                out.torn += 1
                break
            if want is None or rec.kind != 0:
                continue
            expected = want[rec.start:rec.end]
            bad = sum(a != b for a, b in zip(chunk, expected, strict=False)) + abs(
                len(chunk) - len(expected))
            out.bytes_checked += len(chunk)
            if bad:
                out.wrong_bytes += bad
                out.wrong.append(f"{path}: {rec.start}-{rec.end}")
    return out
