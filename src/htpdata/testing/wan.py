"""A user-space WAN emulator: a TCP proxy on loopback adding a fixed one-way delay.

The kernel here has no ``netem``, so latency is added in user space. Every chunk read from one
side is stamped on arrival and written to the other side at arrival + delay, in order. Reading
goes on while earlier chunks wait, so the delay adds latency without serialising the stream
(throughput is not capped at chunk size / delay). An optional rate cap (bytes/s, per direction,
shared by all connections like one link) adds serialisation time per chunk. Protocol-agnostic:
root://, HTTP and HTTPS all pass. Byte counters per direction show what crossed the "WAN".

    with WanProxy("localhost", 1094, delay_ms=10) as wan:      # 20 ms round trip
        uproot.open(f"root://localhost:{wan.port}//store/x.root")
        print(wan.bytes_down)

    python -m htpdata.testing.wan --target localhost:1094 --delay-ms 10 [--rate-mbps 1000]

(``benchmarks/wan.py`` is the same program.) Tests throttle one proxy mid-read with
:meth:`WanProxy.throttle` to make a replica slow but alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["WanCounters", "WanProxy"]

_READ_SIZE = 64 * 1024
_QUEUE_CHUNKS = 512  # in-flight chunks per direction and connection (a window, up to 32 MiB)


@dataclass(frozen=True)
class WanCounters:
    """What crossed the emulated WAN; ``up`` is client to server, ``down`` the reverse.

    ``sends_up`` counts the bursts the clients sent (one socket read each): requests that go
    out one after another each show as a burst, and each costs a round trip.
    """

    up: int = 0
    down: int = 0
    connections: int = 0
    sends_up: int = 0

    def __sub__(self, other: WanCounters) -> WanCounters:
        return WanCounters(self.up - other.up, self.down - other.down,
                           self.connections - other.connections,
                           self.sends_up - other.sends_up)

    @property
    def total(self) -> int:
        return self.up + self.down


class _Link:
    """One direction of the emulated link: the delay, the rate cap and the byte count."""

    def __init__(self, delay: float, rate: float | None) -> None:
        self.delay = delay
        self.rate = rate
        self.busy_until = 0.0
        self.bytes = 0
        self.sends = 0

    def release_time(self, arrival: float, size: int) -> float:
        """When a chunk that arrived at ``arrival`` comes out of the far end."""
        self.bytes += size
        if size:
            self.sends += 1
        if not self.rate:
            return arrival + self.delay
        start = max(arrival, self.busy_until)
        self.busy_until = start + size / self.rate
        return self.busy_until + self.delay


class WanProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with delay and rate cap.

    Runs its event loop in a daemon thread; use as a context manager or call start/stop.
    ``delay_ms`` is one way (10 ms gives a 20 ms round trip); ``rate`` is bytes/s or None.
    """

    def __init__(self, target_host: str, target_port: int, *, delay_ms: float = 10.0,
                 rate: float | None = None, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay_ms / 1000.0
        self.rate = rate
        self.port = port
        self._up = _Link(self.delay, rate)
        self._down = _Link(self.delay, rate)
        self._connections = 0
        self._last_activity = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def throttle(self, rate: float | None) -> None:
        """Change the rate cap (bytes/s, None: none) of both directions from now on, for
        every connection, open ones included."""
        self.rate = rate
        for link in (self._up, self._down):
            link.rate = rate
            link.busy_until = 0.0

    def set_delay(self, delay_ms: float) -> None:
        """Change the one-way delay of both directions from now on (a far site)."""
        self.delay = delay_ms / 1000.0
        for link in (self._up, self._down):
            link.delay = self.delay

    # -- counters ------------------------------------------------------------------------
    @property
    def counters(self) -> WanCounters:
        return WanCounters(self._up.bytes, self._down.bytes, self._connections, self._up.sends)

    @property
    def bytes_up(self) -> int:
        return self._up.bytes

    @property
    def bytes_down(self) -> int:
        return self._down.bytes

    def wait_idle(self, quiet: float = 0.5, timeout: float = 60.0) -> bool:
        """Return once no byte has crossed for ``quiet`` seconds (False if ``timeout`` passed).

        A server that goes on fetching after its client is done (XCache prefetching) is charged
        to the run that started it, not to the next one.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = time.monotonic() - self._last_activity
            if idle >= quiet:
                return True
            time.sleep(min(quiet - idle, 0.1))
        return False

    # -- proxying ------------------------------------------------------------------------
    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                try:
                    data = await reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    data = b""
                now = loop.time()
                self._last_activity = time.monotonic()
                await queue.put((link.release_time(now, len(data)), data))
                if not data or sender.done():
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        self._connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pump(client_r, server_w, self._up),
                                 self._pump(server_r, client_w, self._down))
        except asyncio.CancelledError:
            pass  # stop(): end quietly (a cancelled handler task is reported as an error)
        finally:
            for w in (client_w, server_w):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  family=socket.AF_INET, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    # -- life cycle ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> WanProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wan-proxy",
                                        daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> WanProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="host:port to forward to")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay (default 10)")
    ap.add_argument("--rate-mbps", type=float, default=None,
                    help="cap per direction, megabits/s (default none)")
    ap.add_argument("--port", type=int, default=0, help="listen port (default a free one)")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    rate = args.rate_mbps * 1e6 / 8 if args.rate_mbps else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with WanProxy(host or "localhost", int(port), delay_ms=args.delay_ms, rate=rate,
                  port=args.port) as wan:
        print(f"127.0.0.1:{wan.port} -> {host}:{port}, {args.delay_ms} ms each way"
              + (f", {args.rate_mbps} Mb/s" if rate else ""), flush=True)
        stop.wait()
        c = wan.counters
        print(f"up {c.up} B, down {c.down} B, {c.connections} connections")


if __name__ == "__main__":
    main()
