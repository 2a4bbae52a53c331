"""Writing a small file so that no reader ever sees it half written.

The bytes go to a temporary file beside the target (same folder, so same filesystem), which is
then renamed over it: a reader sees the old file or the new one, never a part. On any failure
the temporary file is removed and the target is left as it was. For the cache tiers' own
publishing (on folder descriptors, with checksums) see :mod:`htpdata.cache`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o666,
                     fsync: bool = False) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically, created with ``mode`` less the
    umask; ``fsync`` first makes it durable (for files that must survive a crash, not for
    caches that can be rebuilt)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
