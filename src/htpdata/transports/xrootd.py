"""``root://`` through fsspec-xrootd and the XRootD client: stat, vector reads, writes."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..config import TimeoutSettings
from ..errors import StorageError
from .base import KXR_IS_DIRECTORY, Transport, translate, xrootd_error

__all__ = ["XRootDTransport"]

_env_lock = threading.Lock()
_env_applied: tuple[int, int] | None = None


def _configure_client(timeouts: TimeoutSettings) -> None:
    """Bound the XRootD client's own retries so a dead server fails over instead of hanging.

    Its defaults retry a connection for minutes (5 x 120 s windows) and wait 1800 s for a
    request, checking timeouts only every 15 s; htpdata's timeouts replace them. These are
    process-wide settings of the XRootD client: the last client configured wins.
    """
    global _env_applied
    connect = max(1, round(timeouts.connect))
    read = max(1, round(timeouts.read))
    with _env_lock:
        if _env_applied == (connect, read):
            return
        from XRootD import client as xrd_client

        put: Callable[[str, int], object] = getattr(xrd_client, "EnvPutInt")  # noqa: B009
        put("ConnectionWindow", connect)
        put("ConnectionRetry", 1)
        put("RequestTimeout", read)
        put("StreamTimeout", read)
        put("StreamErrorWindow", 0)
        put("TimeoutResolution", 1)
        _env_applied = (connect, read)


_HANDLE_TTL = 300.0  # seconds an open handle (and the size it reported) is reused
_BACKGROUND = 16  # threads for closes and limit queries (round trips nobody waits for)
_ERROR_RESPONSE = 400  # XrdCl's errErrorResponse: the server answered with an error
_LIMITS_TIMEOUT = 5  # seconds the limits query sent as a file opens may take (it goes out
# before the server is known to answer, and the interpreter's exit waits for it)


class _Background:
    """A transport's own threads for round trips off the reader's path (closing handles,
    asking a server's limits): created on first use, shut down with the transport."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_BACKGROUND,
                                                thread_name_prefix="htpdata-xrootd")
            return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        """Stop the threads; work still queued is dropped (closes are best effort)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _Handles:
    """Open files, kept per URL and shared by threads (the XRootD client is thread-safe).

    Opening returns the file's stat in the same round trip, so a fresh file costs one round
    trip before its first read, as with uproot's own XRootD source.
    """

    def __init__(self, timeout: int, background: _Background, count: Callable[[str], None],
                 limit: int = 64) -> None:
        self.timeout = timeout
        self.limit = limit
        self._background = background
        self._count = count
        self._files: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> Any:
        """The open handle of ``url`` (opened now if needed); raises StorageError."""
        now = time.monotonic()
        with self._lock:
            hit = self._files.get(url)
            if hit is not None and now - hit[1] < _HANDLE_TTL:
                self._files.move_to_end(url)
                return hit[0]
            stale = self._files.pop(url, None)
            opening = self._opening.setdefault(url, threading.Lock())
        if stale is not None:
            self._background.submit(_close_quietly, stale[0])
        # One open per URL at a time: parallel streams of one file share the first open
        # instead of each paying a round trip and throwing the extra handles away.
        with opening:
            with self._lock:
                hit = self._files.get(url)
                if hit is not None:
                    return hit[0]
            try:
                return self._open(url, now)
            finally:
                with self._lock:
                    self._opening.pop(url, None)

    def _open(self, url: str, now: float) -> Any:
        from XRootD.client import File  # type: ignore[attr-defined]
        from XRootD.client.flags import OpenFlags

        f = File()
        self._count("open")
        status, _ = f.open(url, OpenFlags.READ, timeout=self.timeout)
        if not status.ok:
            raise xrootd_error(status, url, what="open")
        evicted = []
        with self._lock:
            if url in self._files:  # another thread won the race; use its handle
                evicted.append(f)
                f = self._files[url][0]
            else:
                self._files[url] = (f, now)
            while len(self._files) > self.limit:
                evicted.append(self._files.popitem(last=False)[1][0])
        for old in evicted:
            # A close is a round trip: never under the lock, never on the reader's path.
            self._background.submit(_close_quietly, old)
        return f

    def release(self, url: str) -> None:
        """Close ``url``'s handle in the background (the caller is done with the file)."""
        with self._lock:
            hit = self._files.pop(url, None)
        if hit is not None:
            self._background.submit(_close_quietly, hit[0])

    def size(self) -> int:
        with self._lock:
            return len(self._files)

    def drop(self, url: str) -> None:
        with self._lock:
            hit = self._files.pop(url, None)
        if hit is not None:
            _close_quietly(hit[0])

    def close(self, wait: float = 5.0) -> bool:
        """Close every handle, concurrently (each close is a round trip), waiting at most
        ``wait`` seconds: a dead server must not hold a process open. True when every one
        was closed."""
        with self._lock:
            files, self._files = list(self._files.values()), OrderedDict()
        futures = [self._background.submit(_close_quietly, f) for f, _ in files]
        deadline = time.monotonic() + wait
        closed = True
        for fut in futures:
            try:
                closed = fut.result(timeout=max(0.0, deadline - time.monotonic())) and closed
            except Exception:
                return False
        return closed


def _close_quietly(f: Any) -> bool:
    """Close a handle; True if the server confirmed (the handle is dropped either way)."""
    try:
        status, _ = f.close(timeout=1)
    except Exception:  # the server may be gone
        return False
    return bool(status.ok)


def _host(url: str) -> str:
    """``host:port`` of a root:// URL (or of a ``DataServer`` property: ``[root://]host[:port]``),
    with the port 1094 when none is given, so that a URL's host and the data server its file
    opened on compare equal (a user part is kept: its queries go on the user's connection)."""
    hostport = url.split("//", 2)[1] if "//" in url else url
    hostport = hostport.rstrip("/")
    has_port = "]:" in hostport if hostport.startswith("[") else ":" in hostport
    return hostport if has_port else f"{hostport}:1094"


class XRootDTransport(Transport):
    schemes: tuple[str, ...] = ("root",)

    def __init__(self, timeouts: TimeoutSettings, configure: bool = True) -> None:
        """``configure=False`` leaves the XRootD client's process-wide settings alone (a
        second transport with shorter per-request timeouts, for the site proxy)."""
        if configure:
            _configure_client(timeouts)
        self.timeout = max(1, round(timeouts.read))
        self.sent: Counter[str] = Counter()
        """Requests sent so far, by kind (``open``, ``read``, ``vector_read``, ``query``):
        what tests and benchmarks count instead of timing."""
        self._background = _Background()
        self._handles = _Handles(self.timeout, self._background, self._count)
        self._limits: dict[str, tuple[int, int]] = {}
        self._asked: dict[str, Future[tuple[int, int] | None]] = {}
        self._limits_lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._limits_lock:
            self.sent[kind] += 1

    def close(self) -> bool:
        """Close the open handles (concurrently, bounded) and stop this transport's threads;
        False if some handle's close did not complete."""
        closed = self._handles.close()
        self._background.shutdown()
        return closed

    def prepare(self, url: str) -> None:
        """Open ``url`` now and keep the handle, so a read soon after costs no open. Skipped
        when the pool is half full: opening ahead must not push out handles in use."""
        if self._handles.size() * 2 >= self._handles.limit:
            return
        self._ask_limits(url)
        self._handles.get(url)

    def release(self, url: str) -> None:
        """Done with ``url`` for now: close its handle in the background."""
        self._handles.release(url)

    def forget(self, url: str) -> None:
        """Close the open handle of ``url`` (it was rewritten: the handle holds the old stat)."""
        self._handles.drop(url)

    def filesystem(self, url: str) -> tuple[Any, str]:
        from fsspec_xrootd import XRootDFileSystem

        kwargs = XRootDFileSystem._get_kwargs_from_urls(url)
        # No listings cache: another process may create or remove files at any moment, and
        # fsspec-xrootd answers stat from a stale listing when one is cached.
        fs = XRootDFileSystem(timeout=self.timeout, use_listings_cache=False, **kwargs)
        return fs, XRootDFileSystem._strip_protocol(url)

    def _ask_limits(self, url: str) -> None:
        """Send the vector-read limits query to the URL's host now, while its file opens
        (XRootD multiplexes both on one connection), unless known or asked already: a file's
        first read is often one range (a ROOT file's header), and asking only at its first
        vector read put a whole round trip before that read (21 ms at 10 ms each way on
        every cold read; uproot's own source waits for it too)."""
        host = _host(url)
        with self._limits_lock:
            if host in self._limits or host in self._asked:
                return
            self._asked[host] = self._background.submit(self._readv_limits, host, True)

    def info(self, url: str) -> dict[str, Any]:
        self._ask_limits(url)
        try:
            f = self._handles.get(url)
            status, st = f.stat(timeout=self.timeout)  # from the open response: no round trip
        except StorageError as exc:
            if exc.code == KXR_IS_DIRECTORY:  # a folder cannot be opened: stat its path
                return self._stat_path(url)
            raise
        except Exception as exc:
            raise translate(exc, url, what="stat") from exc
        if not status.ok:
            self._handles.drop(url)
            raise xrootd_error(status, url, what="stat")
        return {"name": url, "size": int(st.size), "type": "file"}

    def _stat_path(self, url: str) -> dict[str, Any]:
        fs, path = self.filesystem(url)
        try:
            info = fs.info(path)
        except Exception as exc:
            raise translate(exc, url, what="stat") from exc
        return {"name": url, "size": info["size"], "type": info["type"]}

    def _readv_limits(self, server: str, early: bool = False) -> tuple[int, int] | None:
        """(max chunks, max chunk size) of a vector read on ``server`` (``host:port``), asked
        once per server. Ask the data server that serves the file: a redirector's own limits
        say nothing about the server the reads go to. ``early`` (sent as the file opens,
        before the server is known to answer): waits at most 5 s, and without an answer
        gives None and is not remembered, so the first vector read asks again and waits for
        the answer (or the protocol's defaults, as ever)."""
        with self._limits_lock:
            if server in self._limits:
                return self._limits[server]
        from XRootD.client import FileSystem  # type: ignore[attr-defined]
        from XRootD.client.flags import QueryCode

        limits = (1024, 2097136)  # XRootD's protocol defaults (kXR_readv)
        self._count("query")
        status, result = FileSystem(f"root://{server}").query(
            QueryCode.CONFIG, "readv_iov_max readv_ior_max",
            timeout=min(self.timeout, _LIMITS_TIMEOUT) if early else self.timeout)
        if early and not status.ok and getattr(status, "code", 0) != _ERROR_RESPONSE:
            with self._limits_lock:
                self._asked.pop(server, None)
            return None
        if status.ok and result:
            try:
                iov, ior = (int(x) for x in result.split(b"\n")[:2])
                limits = (iov, ior)
            except ValueError:
                pass
        with self._limits_lock:
            self._limits[server] = limits
        return limits

    def _limits_for(self, f: Any, url: str) -> tuple[int, int]:
        """The vector-read limits of the server ``f`` is open on: known, or the answer to the
        query :meth:`_ask_limits` sent while the file opened (when the URL's host is the data
        server, as without a redirector), or asked now."""
        server = _host(str(f.get_property("DataServer") or "") or url)
        with self._limits_lock:
            known = self._limits.get(server)
            asked = self._asked.get(server)
        if known is not None:
            return known
        if asked is not None:
            try:
                got = asked.result()
            except Exception:
                got = None
            if got is not None:
                return got
        limits = self._readv_limits(server)
        assert limits is not None  # only an early query gives none
        return limits

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        self._ask_limits(url)
        try:
            f = self._handles.get(url)
            if len(ranges) == 1:
                start, end = ranges[0]
                self._count("read")
                status, data = f.read(start, max(0, end - start), timeout=self.timeout)
                if not status.ok:
                    raise xrootd_error(status, url)
                return [bytes(data)]
            iov_max, ior_max = self._limits_for(f, url)
            pieces: list[tuple[int, int]] = []
            for start, end in ranges:
                pieces += [(s, min(s + ior_max, end)) for s in range(start, end, ior_max)]
            got: dict[tuple[int, int], bytes] = {}
            for i in range(0, len(pieces), iov_max):
                batch = pieces[i:i + iov_max]
                self._count("vector_read")
                status, info = f.vector_read([(s, e - s) for s, e in batch],
                                             timeout=self.timeout)
                if not status.ok:
                    raise xrootd_error(status, url, what="vector read")
                for (s, e), chunk in zip(batch, info.chunks, strict=True):
                    got[(s, e)] = bytes(chunk.buffer)
        except Exception as exc:
            self._handles.drop(url)  # a broken connection must not poison later reads
            raise translate(exc, url) from exc
        out = []
        for start, end in ranges:
            out.append(b"".join(got[(s, min(s + ior_max, end))]
                                for s in range(start, end, ior_max)))
        return out

    def ls(self, url: str) -> list[dict[str, Any]]:
        fs, path = self.filesystem(url)
        try:
            entries = fs.ls(path, detail=True)
        except Exception as exc:
            raise translate(exc, url, what="list") from exc
        prefix = url.split("//", 2)
        base = f"{prefix[0]}//{prefix[1]}/"
        return [{"name": base + "/" + e["name"].lstrip("/"), "size": e["size"],
                 "type": e["type"]} for e in entries]

    def checksum(self, url: str) -> str | None:
        fs, path = self.filesystem(url)
        try:
            algo, value = fs.checksum(path) if hasattr(fs, "checksum") else (None, None)
            if algo is None:
                from fsspec.asyn import sync

                algo, value = sync(fs.loop, fs._checksum, path)
        except Exception as exc:
            raise translate(exc, url, what="checksum") from exc
        return str(value).lower().rjust(8, "0") if algo == "adler32" else None
