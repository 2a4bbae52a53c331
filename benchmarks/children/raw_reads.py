"""Link-capacity probe of ``bench_stage.py`` (case ``rN``): N raw 4 MiB XRootD reads in flight.

    python benchmarks/children/raw_reads.py N TARGET_DIR URL...

Opens every file (N at a time) with the XRootD bindings, then keeps N reads of 4 MiB in flight
over all pieces of all files, each piece written at its offset into ``TARGET_DIR``: no cache,
no checksum, so what is left is the link. Ends with ``os._exit``, as a C tool would: closing
hundreds of handles one by one is not part of moving the bytes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PIECE = 4 << 20


def open_file(url: str, target: str) -> tuple[int, Any, list[tuple[Callable[[int], None], int]]]:
    """Open ``url``, create its target file; return (fd, handle, [(read piece, offset)])."""
    from XRootD.client import File  # type: ignore[attr-defined]

    f = File()
    st, _ = f.open(url)
    if not st.ok:
        raise OSError(f"open {url}: {st.message}")
    st, info = f.stat()
    if not st.ok:
        raise OSError(f"stat {url}: {st.message}")
    size = int(info.size)
    fd = os.open(os.path.join(target, url.rsplit("/", 1)[1]), os.O_WRONLY | os.O_CREAT, 0o644)

    def piece(off: int) -> None:
        st, data = f.read(off, min(PIECE, size - off))
        if not st.ok:
            raise OSError(f"read {url}@{off}: {st.message}")
        os.pwrite(fd, data, off)

    return fd, f, [(piece, off) for off in range(0, size, PIECE)]


def main(argv: list[str]) -> None:
    n, target, urls = int(argv[0]), argv[1], argv[2:]
    with ThreadPoolExecutor(min(n, len(urls))) as opener:
        opened = list(opener.map(lambda u: open_file(u, target), urls))
    with ThreadPoolExecutor(n) as pool:
        for fut in [pool.submit(p, off) for _, _, pieces in opened for p, off in pieces]:
            fut.result()
    for fd, _, _ in opened:
        os.close(fd)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
