"""Running a gateway: sockets, the event loop, its thread pool, and its record.

:class:`Gateway` serves in a background thread (``with htpdata.gateway() as gw:`` in a notebook
or script; :meth:`Gateway.start`/:meth:`Gateway.stop`) or in the foreground
(:meth:`Gateway.serve_forever`, what ``htpdata serve`` runs until Ctrl-C or SIGTERM). It listens
on 127.0.0.1 unless given another address explicitly, and optionally on a Unix socket (0600).
The sockets are bound before anything else happens, so a port already taken is an error at once
(:class:`~htpdata.errors.GatewayError`), never a gateway that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import ConfigError, GatewayError
from ..names import Name
from .state import ENV_URL, GatewayInfo, new_secret, remove_state, write_state

if TYPE_CHECKING:
    from aiohttp import web

    from ..client import Client
    from .app import GatewayCounters, ReaderPool

__all__ = ["Gateway", "GatewayOptions"]

log = logging.getLogger("htpdata.gateway")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class GatewayOptions:
    """How a gateway listens and reads. Checked when made."""

    port: int = 0
    """TCP port; 0 picks a free one."""
    bind: str = LOOPBACK
    """The address to listen on: an IP address. Anything but loopback makes the gateway
    reachable from other machines, guarded by its secret alone (sent in clear HTTP)."""
    threads: int = 8
    """Reads in flight at once (the thread pool's size)."""
    unix_socket: str | None = None
    """Also listen on this Unix socket path (made 0600; the peer's uid is checked)."""
    cache: bool | None = None
    """Read through the cache (default: as the client's settings say)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("argument", "gateway.port", f"must be 0 to 65535, got {self.port}")
        if self.threads < 1:
            raise ConfigError("argument", "gateway.threads",
                              f"must be at least 1, got {self.threads}")
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError("argument", "gateway.bind",
                              f"expected an IP address such as 127.0.0.1, got {self.bind!r}"
                              ) from None

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.bind).is_loopback


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind over TIME_WAIT
        sock.bind((host, port))
        sock.listen(256)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise GatewayError(f"port {port} on {host} is already in use by another program "
                               "(choose another with --port, or 0 for a free one)") from None
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _unix_socket(path: str) -> socket.socket:
    target = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if target.is_socket():
            target.unlink()  # a stale socket of an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(256)
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on the Unix socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.setblocking(False)
    return sock


class Gateway:
    """An HTTP gateway to the cache for this user, in this process.

    ``secret`` defaults to a new random one; ``record`` writes the state file that
    ``htpdata url --gateway`` and :func:`htpdata.gateway_url` read (``htpdata serve`` does;
    an in-process gateway sets ``HTPDATA_GATEWAY_URL`` for the processes it starts instead).
    ``users_lock``: exit once no process holds a shared lock on this file (the Dask plugin's
    node gateways).
    """

    def __init__(self, client: Client | None = None, options: GatewayOptions | None = None, *,
                 secret: str | None = None, record: bool = False,
                 users_lock: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        from ..default import default_client

        self.client = client if client is not None else default_client()
        self.options = options or GatewayOptions()
        self.secret = secret or new_secret()
        self.record = record
        self.users_lock = Path(users_lock) if users_lock else None
        self.environ = environ
        self.info: GatewayInfo | None = None
        self._socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ReaderPool | None = None
        self._stopped: asyncio.Event | None = None
        self._old_env: str | None = None
        self.counters: GatewayCounters | None = None

    # -- URLs ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self._info().base_url

    def url(self, name: str | Name) -> str:
        """The URL of a name through this gateway, for ROOT, curl or any HTTP client."""
        return self._info().url(name)

    def _info(self) -> GatewayInfo:
        if self.info is None:
            raise GatewayError("the gateway is not running (start it first)")
        return self.info

    # -- life cycle ---------------------------------------------------------------------------
    def _bind(self) -> None:
        opts = self.options
        self._socks = [_tcp_socket(opts.bind, opts.port)]
        if opts.unix_socket:
            try:
                self._socks.append(_unix_socket(opts.unix_socket))
            except GatewayError:
                self._socks[0].close()
                raise
        port = self._socks[0].getsockname()[1]
        self.info = GatewayInfo(opts.bind, port, self.secret, os.getpid(), opts.unix_socket)
        if not opts.loopback:
            log.warning("listening on %s:%d: reachable from other machines, guarded only by "
                        "the secret, over plain HTTP", opts.bind, port)

    async def _start(self) -> None:
        from aiohttp import web

        from .app import GatewayCounters, ReaderPool, make_app

        self._stopped = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.options.threads,
                                            thread_name_prefix="htpdata-gateway")
        self._pool = ReaderPool(self.client, self.options.cache)
        self.counters = GatewayCounters()
        app = make_app(self._pool, self._executor, self.options.threads, self.secret,
                       self.counters)
        # access_log=None: an access log line would carry the secret (the path's first part).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        for sock in self._socks:
            await web.SockSite(self._runner, sock).start()
        if self.users_lock is not None:
            asyncio.get_running_loop().create_task(self._watch_users(self.users_lock))

    async def _watch_users(self, lock: Path) -> None:
        """Stop once no process holds a shared lock on ``lock`` (every worker has gone)."""
        assert self._stopped is not None
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stopped.is_set():
                await asyncio.sleep(1.0)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                log.info("no worker uses this gateway any more; stopping")
                self._stopped.set()
                return  # the lock is held until the process ends: no new user races in
        finally:
            if not self._stopped.is_set():
                os.close(fd)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _after_start(self) -> None:
        assert self.info is not None
        if self.record:
            write_state(self.info, self.environ)
        log.info("gateway listening on %s:%d%s", self.info.host, self.info.port,
                 f" and {self.info.unix_socket}" if self.info.unix_socket else "")

    def _cleanup(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        for sock in self._socks:
            sock.close()
        if self.options.unix_socket:
            with contextlib.suppress(OSError):
                os.unlink(self.options.unix_socket)
        if self.record and self.info is not None:
            remove_state(self.info, self.environ)

    def start(self) -> Gateway:
        """Serve from a background thread (returns once the gateway answers)."""
        if self._loop is not None:
            return self
        self._bind()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="htpdata-gateway",
                                        daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
            self._after_start()
        except BaseException:
            self.stop()
            raise
        self._old_env = os.environ.get(ENV_URL)
        os.environ[ENV_URL] = self.base_url  # for processes this one starts (ROOT macros)
        return self

    def stop(self) -> None:
        """Stop serving, release every file, remove the record."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._cleanup()
        if self.info is not None and os.environ.get(ENV_URL) == self.info.base_url:
            if self._old_env is None:
                os.environ.pop(ENV_URL, None)
            else:
                os.environ[ENV_URL] = self._old_env

    def serve_forever(self, on_ready: Callable[[Gateway], None] | None = None) -> None:
        """Serve in this thread until SIGINT or SIGTERM (or, with ``users_lock``, until no
        worker is left). ``on_ready(gateway)`` is called once it answers."""
        self._bind()
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
            self._after_start()
            assert self._stopped is not None
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stopped.set)
            if on_ready is not None:
                on_ready(self)
            loop.run_until_complete(self._stopped.wait())
            loop.run_until_complete(self._stop())
        finally:
            self._loop = None
            loop.close()
            self._cleanup()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
