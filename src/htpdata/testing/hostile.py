"""What a hostile co-tenant plants in a shared tier, independent of the cache's format.

The tier's names are predictable (they derive from public facts), so a co-tenant can create
them before a victim does. :func:`plant` does that for any layout: given the tier root and the
relative paths of a victim's entry (as an honest read made them, see :func:`tree`), it puts one
kind of trap at each path, creating the folders above it as real folders. Run it *as* the
hostile user, so the kernel's rules apply as on a facility::

    layout = tree(scratch_tier)                        # an honest read's files, in a scratch tier
    out = tenants.call(tenants.mallory, "htpdata.testing.hostile:plant",
                       str(shared_tier), layout, "symlink-out", str(outside))
    planted = out.unwrap()                             # [{"path", "kind", "planted", "why"}]

Kinds (:data:`KINDS`):

``symlink-out``
    a symbolic link to ``outside`` (a folder for folders, ``outside/victim-file`` for files):
    whatever follows it reads, writes, appends to or deletes outside the tier.
``symlink-loop``
    a link to itself (ELOOP for whoever follows it).
``fifo``
    a named pipe: an ``open()`` without O_NONBLOCK hangs for ever.
``hardlink``
    a hard link to ``outside/mallory-file``, a file the planter owns outside the tier (with
    ``fs.protected_hardlinks = 1`` one can only link one's own files): a writer that truncates
    or appends in place changes a file outside the tier.
``huge``
    a sparse file of :data:`HUGE` bytes (1 TiB; no space used): a reader without a size bound
    reads for ever or runs out of memory.
``wrong-type``
    a folder where a file belongs, a file where a folder belongs.
``future``
    a regular file or folder with its mtime ten years ahead (leases, claims, "recently used").
``device``
    a character device (``/dev/zero``'s numbers); only root may create one (CAP_MKNOD), so as a
    user this is recorded as not planted, with the reason.

Paths whose parent was already replaced by a non-folder are skipped (recorded, with why); a
path that already exists is replaced only if the planter may remove it (its own file, or a
folder without the sticky bit). Each record says what happened, so tests can assert on it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["HUGE", "KINDS", "plant", "tree"]

KINDS = ("symlink-out", "symlink-loop", "fifo", "hardlink", "huge", "wrong-type", "future",
         "device")
HUGE = 1 << 40
_TEN_YEARS = 10 * 365 * 86400


def tree(root: str | Path) -> list[tuple[str, bool]]:
    """Every path under ``root``, relative, with whether it is a folder; parents first.
    Symbolic links are listed as files and not followed."""
    base = Path(root)
    out: list[tuple[str, bool]] = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        rel = Path(folder).relative_to(base)
        for d in sorted(dirs):
            out.append((str(rel / d), not (Path(folder) / d).is_symlink()))
        for f in sorted(files):
            out.append((str(rel / f), False))
    return sorted(out, key=lambda p: (p[0].count("/"), p[0]))


def _clear(path: Path) -> str | None:
    """Remove what is at ``path`` if we may; None when free, else why not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as exc:
        return f"exists and cannot be replaced ({errno.errorcode.get(exc.errno or 0, exc)})"
    return None


def _plant_one(path: Path, is_dir: bool, kind: str, outside: Path) -> None:
    if kind == "symlink-out":
        target = outside if is_dir else outside / "victim-file"
        os.symlink(target, path, target_is_directory=is_dir)
    elif kind == "symlink-loop":
        os.symlink(path.name, path)
    elif kind == "fifo":
        os.mkfifo(path, 0o666)
    elif kind == "hardlink":
        os.link(outside / "mallory-file", path)
    elif kind == "huge":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.ftruncate(fd, HUGE)
        finally:
            os.close(fd)
    elif kind == "wrong-type":
        if is_dir:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        else:
            os.mkdir(path, 0o755)
    elif kind == "future":
        if is_dir:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        ahead = time.time() + _TEN_YEARS
        os.utime(path, (ahead, ahead), follow_symlinks=False)
    elif kind == "device":
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


def plant(root: str, paths: Sequence[Sequence[Any]], kind: str, outside: str) -> list[dict[str,
          Any]]:
    """Plant ``kind`` at each of ``paths`` (``(relative path, is_folder)``) under ``root``.

    ``outside`` is a folder outside the tier the links point into; for ``hardlink`` the
    planter's own ``outside/mallory-file`` is created if missing. Returns one record per path:
    ``{"path", "kind", "planted": bool, "why": str}`` (JSON, for runs as another user).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    base, out_dir = Path(root), Path(outside)
    if kind == "hardlink" and not (out_dir / "mallory-file").exists():
        (out_dir / "mallory-file").write_bytes(b"mallory's own file, outside the tier\n")
    records: list[dict[str, Any]] = []
    replaced: list[str] = []  # folders now replaced by something that is not a folder
    for rel, is_dir in paths:
        rel = str(rel)
        record: dict[str, Any] = {"path": rel, "kind": kind, "planted": False, "why": ""}
        records.append(record)
        above = next((r for r in replaced if rel.startswith(r + "/")), None)
        if above is not None:
            record["why"] = f"under {above}, already planted"
            continue
        path = base / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            why = _clear(path)
            if why is not None:
                record["why"] = why
                continue
            _plant_one(path, bool(is_dir), kind, out_dir)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc))
            record["why"] = (f"not possible as uid {os.getuid()}: mknod needs CAP_MKNOD ({name})"
                             if kind == "device" else f"{type(exc).__name__} ({name})")
            continue
        record["planted"] = True
        if is_dir and kind not in ("future",):
            replaced.append(rel)
    return records
