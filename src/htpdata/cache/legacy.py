"""Tiers in the format of older htpdata (format 1: one file per extent, ``entries/``,
``names/``): never read, refused with one line saying how to clear them, and cleared here.

Format 1 keyed entries by public facts and trusted checksums their writers chose, so its bytes
cannot be served safely to anyone; reading it correctly would mean trusting it. ``htpdata cache
clear --tier NAME --yes`` removes what this user owns of it (by descriptor, never following a
symlink, skipping what others own) and lays the tier out anew.
"""

from __future__ import annotations

import contextlib
import os
import stat

from .fsops import Folder, remove_tree
from .tier import DiskTier

__all__ = ["LEGACY_NAMES", "clear_legacy"]

LEGACY_NAMES = ("entries", "names", "pins", "journal", "traffic", "tmp", "usage.json",
                "htpdata-cache.json", "evict.lease", "fold.lease")


def clear_legacy(tier: DiskTier) -> tuple[int, int, int]:
    """Remove a format-1 tier's files (what this user owns); (entries, bytes, skipped)."""
    try:
        root = Folder.open_root(str(tier.root))
    except OSError:
        return 0, 0, 0
    entries = freed = skipped = 0
    with root:
        if root.st.st_uid != os.getuid() and os.getuid() != 0:
            return 0, 0, 1
        with contextlib.suppress(OSError):
            st = os.stat("entries", dir_fd=root.fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                entries = _count_entries(root)
        for name in LEGACY_NAMES:
            try:
                freed += remove_tree(root.fd, name)
            except PermissionError:
                skipped += 1
            except OSError:
                skipped += 1
    tier._reset()
    return entries, freed, skipped


def _count_entries(root: Folder) -> int:
    n = 0
    with contextlib.suppress(OSError), root.open("entries") as entries:
        for a in entries.names():
            if not a.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError), entries.open(a.name) as fa:
                for b in fa.names():
                    if b.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError), fa.open(b.name) as fb:
                            n += sum(1 for _ in fb.names())
    return n
