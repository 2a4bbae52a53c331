"""One node of the emulator as its own process: mount, serve, answer the control socket, unmount.

    python -m htpdata.testing.nfsemu.serve --backing DIR --mount DIR --control SOCKET \\
        [--meta-latency-ms 1] [--data-latency-ms 0] [--attr-timeout 1] [--entry-timeout 1] \\
        [--negative-timeout 1] [--close-latency] [--nfs-round-trips] [--fd-cache 4096] \\
        [--parent-pid PID]

:class:`~.emulator.NfsEmulator` starts one per mount point. The control socket (a Unix socket,
mode 0600) takes one JSON object per line and answers one per line:
``{"cmd": "counters"}``, ``{"cmd": "reset"}`` (answers the counts it cleared),
``{"cmd": "set", "meta_latency_ms": 2, "data_latency_ms": 0}``, ``{"cmd": "ping"}`` and
``{"cmd": "stop"}``. SIGTERM or SIGINT end the loop and unmount; so does the death of
``--parent-pid`` (a test runner killed with -9 leaves no mount behind).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import socket
import sys
from typing import Any

import pyfuse3
import trio

from .passthrough import PassthroughFs, ServerSettings

__all__ = ["main"]

log = logging.getLogger("htpdata.nfsemu")
_MAX_LINE = 64 * 1024


def _allow_other() -> bool:
    """allow_other needs root, or ``user_allow_other`` in /etc/fuse.conf."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def mount_options(node: str) -> set[str]:
    opts = set(pyfuse3.default_options) | {f"fsname=nfsemu-{node}", "subtype=nfsemu"}
    opts.add("default_permissions")  # the kernel checks modes and owners, as NFS clients do
    if _allow_other():
        opts.add("allow_other")  # other Unix users (the multi-tenant tests) may use the mount
    return opts


def _answer(fs: PassthroughFs, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    if cmd == "ping":
        return {"ok": True, "pid": os.getpid(), "inodes": len(fs.inodes),
                "open_fds": len(os.listdir("/proc/self/fd"))}
    if cmd == "counters":
        return {"ok": True, "counters": fs.counters().to_json()}
    if cmd == "reset":
        return {"ok": True, "counters": fs.reset().to_json()}
    if cmd == "set":
        s = fs.settings
        if "meta_latency_ms" in request:
            s.meta_latency = max(0.0, float(request["meta_latency_ms"]) / 1000)
        if "data_latency_ms" in request:
            s.data_latency = max(0.0, float(request["data_latency_ms"]) / 1000)
        return {"ok": True, "meta_latency_ms": s.meta_latency * 1000,
                "data_latency_ms": s.data_latency * 1000}
    if cmd == "stop":
        pyfuse3.terminate()
        return {"ok": True}
    return {"ok": False, "error": f"unknown command {cmd!r}"}


async def _control_client(fs: PassthroughFs, stream: trio.abc.Stream) -> None:
    buf = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            buf += chunk
            if len(buf) > _MAX_LINE:
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    request = json.loads(line)
                    reply = _answer(fs, request if isinstance(request, dict) else {})
                except (ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                await stream.send_all(json.dumps(reply).encode() + b"\n")


async def _control(fs: PassthroughFs, path: str,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(16)
    task_status.started()
    async def handle(stream: trio.SocketStream) -> None:
        await _control_client(fs, stream)

    await trio.serve_listeners(handle, [trio.SocketListener(sock)])


async def _watch(parent_pid: int | None) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async def on_signal() -> None:
            async for _ in signals:
                pyfuse3.terminate()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            while parent_pid is not None:
                await trio.sleep(0.5)
                if os.getppid() != parent_pid:
                    log.warning("nfsemu: parent %d is gone, unmounting", parent_pid)
                    pyfuse3.terminate()
                    break
            await trio.sleep_forever()


async def _serve(fs: PassthroughFs, control: str, parent_pid: int | None) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(_control, fs, control)
        nursery.start_soon(_watch, parent_pid)
        await pyfuse3.main(min_tasks=4, max_tasks=99)  # returns on terminate or unmount
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one node of the network-filesystem emulator")
    ap.add_argument("--backing", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--control", required=True, help="path of the control socket")
    ap.add_argument("--node", default="0")
    ap.add_argument("--meta-latency-ms", type=float, default=1.0)
    ap.add_argument("--data-latency-ms", type=float, default=0.0)
    ap.add_argument("--attr-timeout", type=float, default=1.0)
    ap.add_argument("--entry-timeout", type=float, default=1.0)
    ap.add_argument("--negative-timeout", type=float, default=None,
                    help="seconds an absent name is cached (default: the entry timeout)")
    ap.add_argument("--close-latency", action="store_true",
                    help="also sleep the metadata latency in flush and release")
    ap.add_argument("--nfs-round-trips", action="store_true",
                    help="no latency for the requests an NFS client does not send (opendir, "
                         "the readdir that only finds the end of a listing)")
    ap.add_argument("--fd-cache", type=int, default=4096,
                    help="descriptors kept open for inodes reached by file handle")
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s nfsemu[%(process)d] %(levelname)s %(message)s")

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # inodes without file handles, and open files, each hold a descriptor
        with open("/proc/sys/fs/nr_open") as f:
            most = int(f.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))  # root only
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.umask(0)  # the callers' modes arrive already masked with their own umask

    settings = ServerSettings(
        meta_latency=args.meta_latency_ms / 1000, data_latency=args.data_latency_ms / 1000,
        attr_timeout=args.attr_timeout, entry_timeout=args.entry_timeout,
        negative_timeout=(args.entry_timeout if args.negative_timeout is None
                          else args.negative_timeout),
        close_latency=args.close_latency, nfs_round_trips=args.nfs_round_trips,
        fd_cache=max(1, args.fd_cache))
    fs = PassthroughFs(args.backing, settings)
    pyfuse3.init(fs, args.mount, mount_options(args.node))
    log.info("nfsemu: node %s serves %s at %s (meta %.3g ms, data %.3g ms, attr %gs, "
             "entry %gs)", args.node, args.backing, args.mount, args.meta_latency_ms,
             args.data_latency_ms, args.attr_timeout, args.entry_timeout)
    try:
        trio.run(_serve, fs, args.control, args.parent_pid)
    finally:
        pyfuse3.close(unmount=True)
        fs.close_all()
        log.info("nfsemu: node %s unmounted", args.node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
