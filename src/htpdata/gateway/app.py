"""The gateway's HTTP application (aiohttp): HEAD and GET of names, with ranges, by secret.

Each request: check the secret (first path segment; on a Unix socket, the peer's uid), turn the
rest of the path into a name (:mod:`.paths`), get that file's reader (one
:class:`~htpdata.io.FileReader` per file, from :meth:`Client.reader`, kept while it is used), and
answer from it: the file's size for ``HEAD``, its bytes for ``GET`` - whole, one range, or many
ranges as ``multipart/byteranges`` (:mod:`.ranges`). Every call into the reader runs on a bounded
thread pool, never on the event loop, so a cold read over the WAN does not hold up a warm one.
A large answer is streamed: its ranges are read in groups of at most :data:`GROUP_BYTES`, a few
groups ahead of the one being written. Errors become statuses (:mod:`.statuses`) with one log
line each; the secret never reaches a log line or an answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from ..errors import HtpdataError
from ..io import FileReader
from ..names import Name
from . import ranges as rng
from .paths import name_for_path, split_secret
from .state import proof
from .statuses import reason_phrase, status_for

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["GROUP_BYTES", "GatewayCounters", "ReaderPool", "make_app"]

log = logging.getLogger("htpdata.gateway")

GROUP_BYTES = 16 << 20
"""Bytes asked of the reader in one call while streaming (one upstream vector read on a miss)."""
WINDOW = 4
"""Groups in flight ahead of the one being written, per request."""
_READER_TTL = 300.0
_MAX_READERS = 256
T = TypeVar("T")


@dataclass
class GatewayCounters:
    """What a gateway answered so far (``GET /SECRET/_gateway/status`` shows them)."""

    requests: int = 0
    head: int = 0
    get: int = 0
    whole: int = 0
    """GETs answered with the whole file (no usable ``Range``)."""
    single_range: int = 0
    multi_range: int = 0
    """GETs answered as ``multipart/byteranges``."""
    ranges: int = 0
    """Ranges served, over all GETs."""
    bytes_sent: int = 0
    """File bytes sent (framing not counted)."""
    refused: int = 0
    """Requests without the right secret (403)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Error answers by status."""

    def fail(self, status: int) -> None:
        self.failed[str(status)] = self.failed.get(str(status), 0) + 1


class ReaderPool:
    """One reader per file, shared by concurrent requests, dropped after a while unused.

    A reader is held (:meth:`FileReader.hold`: eviction leaves its cache entries alone) while it
    is in the pool, and released when it leaves. Its size is learnt once (catalog, cache or one
    stat upstream), not at every request.
    """

    def __init__(self, client: Client, cache: bool | None = None,
                 max_readers: int = _MAX_READERS, ttl: float = _READER_TTL) -> None:
        self.client = client
        self.cache = cache
        self.max_readers = max_readers
        self.ttl = ttl
        self._readers: OrderedDict[str, tuple[float, FileReader]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: Name) -> FileReader:
        """The reader of ``name`` (made, resolved and held on first use). Blocking: call it on
        the pool, not on the event loop."""
        key = str(name)
        now = time.monotonic()
        with self._lock:
            hit = self._readers.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._readers.move_to_end(key)
                return hit[1]
        reader = self.client.reader(name, cache=self.cache)
        reader.size()
        reader.hold()
        dropped: list[FileReader] = []
        with self._lock:
            old = self._readers.pop(key, None)
            if old is not None:
                dropped.append(old[1])
            self._readers[key] = (now, reader)
            while len(self._readers) > self.max_readers:
                dropped.append(self._readers.popitem(last=False)[1][1])
        for r in dropped:
            r.release()
        return reader

    def close(self) -> None:
        with self._lock:
            readers = [r for _, r in self._readers.values()]
            self._readers.clear()
        for r in readers:
            r.release()

    def __len__(self) -> int:
        return len(self._readers)


@dataclass
class _Piece:
    """A piece of the body: ``[start, end)`` of the file, with the framing before it."""

    start: int
    end: int
    head: bytes = b""


def _pieces(parts: Sequence[tuple[int, int]], heads: Sequence[bytes] | None) -> list[_Piece]:
    """The body as pieces of at most :data:`GROUP_BYTES`, framing attached to each part's
    first piece."""
    out = []
    for i, (start, end) in enumerate(parts):
        head = heads[i] if heads else b""
        pos = start
        while True:
            stop = min(end, pos + GROUP_BYTES)
            out.append(_Piece(pos, stop, head))
            head = b""
            pos = stop
            if pos >= end:
                break
    return out


def _groups(pieces: list[_Piece]) -> Iterator[list[_Piece]]:
    """Consecutive pieces of at most :data:`GROUP_BYTES` together (one reader call each)."""
    group: list[_Piece] = []
    size = 0
    for p in pieces:
        if group and size + (p.end - p.start) > GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append(p)
        size += p.end - p.start
    if group:
        yield group


class _Handler:
    def __init__(self, pool: ReaderPool, executor: ThreadPoolExecutor, threads: int,
                 secret: str, counters: GatewayCounters, boundary: str) -> None:
        self.pool = pool
        self.executor = executor
        self.secret = secret
        self.counters = counters
        self.boundary = boundary
        self.threads = threads
        self.started = time.time()

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- access ---------------------------------------------------------------------------------
    def _peer_is_owner(self, request: web.Request) -> bool:
        """On a Unix socket: whether the connecting process runs as this user (SO_PEERCRED)."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is None or sock.family != socket.AF_UNIX:
            return False
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return bool(uid == os.getuid())

    def _authorise(self, request: web.Request) -> str | None:
        """The path after the secret, or None when the request may not use this gateway."""
        # rel_url: ROOT sends absolute-form targets (GET http://host:port/path HTTP/1.0).
        path = request.rel_url.raw_path
        ok, rest = split_secret(path, self.secret)
        if ok:
            return rest
        if self._peer_is_owner(request):
            return path  # a Unix socket of this user: the secret may be left out
        return None

    # -- answers --------------------------------------------------------------------------------
    def _error(self, request: web.Request, status: int, reason: str, what: str) -> web.Response:
        self.counters.fail(status)
        log.warning("%d %s %s: %s", status, request.method, what, reason)
        body = b"" if request.method == "HEAD" else (f"{status} {reason}\n").encode()
        return web.Response(status=status, reason=reason, body=body,
                            content_type="text/plain")

    async def hello(self, request: web.Request) -> web.Response:
        nonce = request.query.get("nonce", "")
        if not 8 <= len(nonce) <= 128:
            return web.Response(status=400, text="nonce: 8 to 128 characters\n")
        return web.json_response({"gateway": "htpdata", "proof": proof(self.secret, nonce)})

    def status(self) -> web.Response:
        return web.json_response({"gateway": "htpdata", "pid": os.getpid(),
                                  "started": self.started, "readers": len(self.pool),
                                  "threads": self.threads,
                                  "counters": asdict(self.counters)})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counters.requests += 1
        rest = self._authorise(request)
        if rest is None:
            self.counters.refused += 1
            return self._error(request, 403, "Forbidden: this URL lacks the gateway's secret "
                               "(see htpdata url --gateway)", f"from {request.remote or '?'}")
        if rest.rstrip("/") == "/_gateway/status":
            return self.status()
        if request.method == "HEAD":
            self.counters.head += 1
        else:
            self.counters.get += 1
        what = "(path)"
        try:
            name = name_for_path(rest)
            what = str(name)
            reader = await self.run(self.pool.get, name)
            size = await self.run(reader.size)
        except Exception as exc:
            return self._error(request, status_for(exc, request.method), reason_phrase(exc),
                               what)
        etag = rng.etag_for(reader.name, size, reader.resolved.adler32)
        headers = {"Accept-Ranges": "bytes", "ETag": etag}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(size),
                                         "Content-Type": "application/octet-stream"})
        try:
            wanted = rng.parse_range(request.headers.get("Range"), size) if \
                rng.if_range_allows(request.headers.get("If-Range"), etag) else None
        except rng.RangeNotSatisfiable as exc:
            resp = self._error(request, 416, f"Range Not Satisfiable: {exc}", what)
            resp.headers["Content-Range"] = f"bytes */{size}"
            return resp
        return await self._send(request, reader, what, size, wanted, headers)

    async def _send(self, request: web.Request, reader: FileReader, what: str, size: int,
                    wanted: rng.ByteRanges | None, headers: dict[str, str]
                    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=headers)
        heads: list[bytes] | None = None
        tail = b""
        if wanted is None:
            parts: Sequence[tuple[int, int]] = [(0, size)] if size else []
            resp.content_length = size
            resp.content_type = "application/octet-stream"
            self.counters.whole += 1
        elif not wanted.multipart:
            parts = wanted.ranges
            resp.set_status(206)
            resp.headers["Content-Range"] = rng.content_range(*parts[0], size)
            resp.content_length = wanted.total
            resp.content_type = "application/octet-stream"
            self.counters.single_range += 1
        else:
            parts = wanted.ranges
            heads, tail, length = rng.multipart_layout(parts, size, self.boundary)
            resp.set_status(206)
            # Written whole and unquoted: ROOT takes the boundary from here to the line's end.
            resp.headers["Content-Type"] = f"multipart/byteranges; boundary={self.boundary}"
            resp.content_length = length
            self.counters.multi_range += 1
        self.counters.ranges += len(parts)
        log.debug("GET %s: %d range(s), %d bytes", what, len(parts),
                  sum(e - s for s, e in parts))
        groups = list(_groups(_pieces(parts, heads)))
        loop = asyncio.get_running_loop()
        inflight: list[asyncio.Future[list[bytes]]] = []

        def submit(i: int) -> None:
            if i < len(groups):
                inflight.append(loop.run_in_executor(
                    self.executor, reader.read_ranges, [(p.start, p.end) for p in groups[i]]))

        for i in range(min(WINDOW, len(groups))):
            submit(i)
        prepared = False
        try:
            for i, group in enumerate(groups):
                datas = await inflight.pop(0)
                submit(i + WINDOW)
                if not prepared:  # errors before the first byte still get a status
                    await resp.prepare(request)
                    prepared = True
                for piece, data in zip(group, datas, strict=True):
                    if len(data) != piece.end - piece.start:
                        raise HtpdataError(f"short read at {piece.start}: {len(data)} of "
                                           f"{piece.end - piece.start} bytes")
                    if piece.head:
                        await resp.write(piece.head)
                    await resp.write(data)
                    self.counters.bytes_sent += len(data)
            if not prepared:
                await resp.prepare(request)
            if tail:
                await resp.write(tail)
            await resp.write_eof()
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise  # the client went away
        except Exception as exc:
            if not prepared:
                return self._error(request, status_for(exc), reason_phrase(exc), what)
            # Headers are out: all that is left is to cut the connection, so the client sees
            # a short body instead of wrong bytes.
            self.counters.fail(status_for(exc))
            log.warning("%d GET %s: %s (connection closed mid-answer)", status_for(exc), what,
                        reason_phrase(exc))
            resp.force_close()
            if request.transport is not None:
                request.transport.close()
            return resp
        finally:
            for fut in inflight:
                fut.cancel()


def make_app(pool: ReaderPool, executor: ThreadPoolExecutor, threads: int, secret: str,
             counters: GatewayCounters) -> web.Application:
    """The aiohttp application: ``/_gateway/hello`` for anyone, everything else by secret.
    ``threads`` is the executor's size (shown in the status)."""
    handler = _Handler(pool, executor, threads, secret, counters, rng.multipart_boundary())
    app = web.Application(client_max_size=1 << 16)
    app.router.add_get("/_gateway/hello", handler.hello)
    app.router.add_get("/{tail:.*}", handler.handle)  # and HEAD; other methods get 405
    return app
