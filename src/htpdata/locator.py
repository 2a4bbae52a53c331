"""Basket location out of the analysis's interpreter: TTrees parsed in a helper process.

To prefetch the next file's baskets of the branches an analysis reads, the prefetch must know
where they are, which means parsing that file's TTree with uproot: for NanoAOD about 1,300
branches, 0.5 to 1.5 s of pure-Python work per file. In a thread of the analysis's process that
work holds the GIL against the analysis it is meant to speed up: one process reading 24 files
of 90 MB in turn at 50 ms each way took 1.01 x a direct read with an in-thread parse against
0.63 x with the next files' metadata fetched and no parse (``docs/analyses.md``).

So :class:`Locator` runs the parse in one helper process (:func:`main`, this interpreter),
started when first needed and stopped with its prefetcher. The helper reads nothing itself:
the parent hands it the metadata bytes it read through its tiers (verified like every byte
htpdata serves) as ``(start, bytes)`` chunks, and the helper opens them with uproot as a file
(:class:`ChunkFile`). A read of a range it was not given is answered "missing"; the parent reads
that range and asks again (at most :data:`ROUNDS` times). What comes back is
``{tree: {branch: [(start, stop) of each basket]}}`` (:func:`baskets_in`, uproot's public API
only: ``uproot.open``, ``TBranch.member("fBasketSeek")``, ``num_baskets``).

Frames on the helper's stdin and stdout: a 4-byte big-endian length, then a pickle. The helper
is this package's own code run by the same user from the same interpreter; it exits when its
stdin closes (its parent stopped it, or died).
"""

from __future__ import annotations

import bisect
import io
import logging
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from .cache.ranges import Range

__all__ = ["ROUNDS", "ChunkFile", "LocateFailed", "Locator", "Missing", "baskets_in"]

log = logging.getLogger("htpdata.locator")
ROUNDS = 8
"""How many times a parse may ask for a range it was not given before it is given up."""
Baskets = dict[str, dict[str, list[Range]]]


class LocateFailed(Exception):
    """The helper could not locate the file's baskets (not started, died, a parse error, or
    too many missing ranges). The prefetch of that file is given up; nothing else is."""


class Missing(Exception):
    """A read of a range the chunks do not hold."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"bytes {start}-{end} were not given")
        self.range = (start, end)


# -- the parse (in the helper) ----------------------------------------------------------------
class ChunkFile(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes of which only ``chunks`` are known: a read
    inside one (after adjoining chunks are joined) is served, any other raises :class:`Missing`
    (remembered in :attr:`missing`, as uproot may wrap the exception)."""

    def __init__(self, size: int, chunks: Sequence[tuple[int, bytes]]) -> None:
        super().__init__()
        self.size = size
        joined: list[tuple[int, bytes]] = []
        for start, data in sorted(chunks, key=lambda c: c[0]):
            if joined and start <= joined[-1][0] + len(joined[-1][1]):
                s0, d0 = joined[-1]
                joined[-1] = (s0, d0 + data[s0 + len(d0) - start:])
            else:
                joined.append((start, bytes(data)))
        self.chunks = joined
        self._starts = [s for s, _ in joined]
        self.pos = 0
        self.missing: Range | None = None

    def read(self, n: int | None = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        i = bisect.bisect_right(self._starts, self.pos) - 1
        if i >= 0:
            start, data = self.chunks[i]
            if end <= start + len(data):
                out = data[self.pos - start:end - start]
                self.pos = end
                return out
        self.missing = (self.pos, end)
        raise Missing(self.pos, end)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def baskets_in(fileobj: Any, only: Mapping[str, Sequence[str]] | None = None) -> Baskets:
    """``{tree: {branch: basket ranges}}`` of the top-level TTrees of the ROOT file open as
    ``fileobj`` (only the trees and branches in ``only``, when given)."""
    import uproot

    out: Baskets = {}
    with uproot.open(fileobj) as f:
        for key, cls in f.classnames(recursive=False).items():
            tree_name = key.split(";")[0]
            if cls != "TTree" or tree_name in out or (only is not None and tree_name not in only):
                continue
            tree = f[tree_name]
            wanted = set(only[tree_name]) if only is not None else None
            branches: dict[str, list[Range]] = {}
            for b in tree.itervalues(recursive=True):
                if wanted is not None and b.name not in wanted:
                    continue
                n = b.num_baskets
                seeks, sizes = b.member("fBasketSeek"), b.member("fBasketBytes")
                branches[b.name] = [(int(seeks[k]), int(seeks[k]) + int(sizes[k]))
                                    for k in range(n) if int(seeks[k]) > 0 and int(sizes[k]) > 0]
            out[tree_name] = branches
    return out


def answer(size: int, chunks: Sequence[tuple[int, bytes]],
           only: Mapping[str, Sequence[str]] | None) -> tuple[str, Any]:
    """One request: ``("ok", baskets)``, ``("missing", range)`` or ``("error", message)``."""
    f = ChunkFile(size, chunks)
    try:
        return "ok", baskets_in(f, only)
    except Exception as exc:
        if f.missing is not None:
            return "missing", f.missing
        return "error", f"{type(exc).__name__}: {exc}"[:500]


def _read_frame(stream: IO[bytes]) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack(">I", head)
    body = stream.read(n)
    if len(body) < n:
        raise EOFError
    return pickle.loads(body)


def _write_frame(stream: IO[bytes], obj: Any) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def main() -> None:
    """The helper: answer requests from stdin until it closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    import uproot  # noqa: F401  (once, before the first request)

    while True:
        try:
            size, chunks, only = _read_frame(stdin)
        except EOFError:
            return
        _write_frame(stdout, answer(size, chunks, only))


# -- the parent's side --------------------------------------------------------------------------
class Locator:
    """One helper process, started at the first :meth:`locate`, one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[Any, Any] | None = None
        self.broken: str | None = None
        """Why the helper cannot be used (it is not started again)."""

    def locate(self, size: int, chunks: dict[int, bytes], read: Callable[[int, int], bytes],
               only: Mapping[str, Sequence[str]] | None = None) -> Baskets:
        """The baskets of a file of ``size`` bytes of which ``chunks`` (``{start: bytes}``,
        completed in place) are read; ``read(start, end)`` reads a range the parse asks for."""
        for _ in range(ROUNDS):
            status, value = self._ask((size, sorted(chunks.items()), only))
            if status == "ok":
                got: Baskets = value
                return got
            if status != "missing":
                raise LocateFailed(str(value))
            start, end = value
            chunks[start] = read(start, end)
        raise LocateFailed(f"still missing bytes after {ROUNDS} rounds")

    def start(self) -> None:
        """Start the helper now, if it is not running (it imports uproot before its first
        request); a helper that cannot start is left for :meth:`locate` to report. Never
        waits: while a request is under way, the helper is running."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._start()
        except LocateFailed:
            pass
        finally:
            self._lock.release()

    def _ask(self, request: tuple[Any, ...]) -> tuple[str, Any]:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                _write_frame(proc.stdin, request)
                reply: tuple[str, Any] = _read_frame(proc.stdout)
                return reply
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._stop()
                raise LocateFailed(f"the locator helper stopped: {exc or type(exc).__name__}"
                                   ) from None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.broken is not None:
            raise LocateFailed(self.broken)
        if self._proc is not None and self._proc.poll() is not None:
            self._stop()  # died between requests: a new one
        if self._proc is None:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", "from htpdata.locator import main; main()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
            except OSError as exc:
                self.broken = f"the locator helper cannot start: {exc}"
                raise LocateFailed(self.broken) from None
            # Stopped when this Locator is collected unclosed, and at the interpreter's exit.
            self._proc, self._reaper = proc, weakref.finalize(self, _reap, proc)
        return self._proc

    def close(self) -> None:
        """Stop the helper (a request under way fails with :class:`LocateFailed`)."""
        proc = self._proc
        if proc is not None:  # without the lock: a request may be waiting on the pipe
            proc.kill()
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        reaper, self._proc, self._reaper = self._reaper, None, None
        if reaper is not None:
            reaper()  # _reap(proc), once


def _reap(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.kill()
    proc.wait()

