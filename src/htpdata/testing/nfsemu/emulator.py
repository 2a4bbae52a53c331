"""Start, probe, read and stop the emulator's nodes: one server process per mount point.

    with NfsEmulator(backing, mounts=2, meta_latency_ms=1) as emu:
        a, b = emu.mounts                 # two "nodes" over one backing folder
        ...
        phase = emu.reset()               # counts so far (all nodes), then zero
        emu.counters(node=1).meta         # metadata round trips node 1 served since

Each node is a separate process (``python -m htpdata.testing.nfsemu.serve``) with its own FUSE
connection, so its own kernel dentry, attribute and page caches, like two NFS clients of one
server. Nodes are readiness-probed (the mount is in /proc/self/mountinfo and the control socket
answers), and stopped by PID (SIGTERM, then SIGKILL), then ``fusermount3 -u -z`` if a mount is
still there, also when the block that used them raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .counters import OpCounts

__all__ = ["NfsEmulator", "NfsEmulatorError", "is_mounted", "unavailable_reason"]


class NfsEmulatorError(RuntimeError):
    """A node did not start, or its control socket did not answer."""


def unavailable_reason() -> str | None:
    """Why the emulator cannot run here (None when it can): /dev/fuse, fusermount3, pyfuse3."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    try:
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 is not importable ({exc}); pip install 'htpdata[nfsemu]'"
    return None


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_mounted(path: str | Path) -> bool:
    """Whether a FUSE filesystem is mounted at ``path`` (read from mountinfo: no FUSE request)."""
    target = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
                    sep = fields.index("-") if "-" in fields else -1
                    if sep > 0 and fields[sep + 1].startswith("fuse"):
                        return True
    except OSError:
        return False
    return False


class NfsEmulator:
    """``mounts`` mount points over one ``backing`` folder, each served by its own process.

    ``meta_latency_ms`` is slept in every metadata request (lookup, getattr, create, rename ...),
    ``data_latency_ms`` in every read, write and fsync. ``attr_timeout`` and ``entry_timeout``
    (seconds) are how long each node's kernel trusts what it was told, like NFS's ``actimeo``;
    ``negative_timeout`` (default: ``entry_timeout``) how long it trusts "no such name".
    ``mount_dir`` is where the mount points go (default a new folder under the system's temp
    folder, mode 0755 so other Unix users reach them). ``backing`` must exist. ``fd_cache`` is
    how many inodes a node keeps an open descriptor for (the others it reopens by file handle,
    as an NFS server does), so a tree of millions of files needs no million descriptors.
    With ``nfs_round_trips`` the requests FUSE sends and an NFS client does not are counted but
    not slept: ``opendir`` (NFS opens no folder) and the ``readdir`` that only finds the end of
    a listing (an NFS READDIR reply says when it holds the last names). The default sleeps in
    every FUSE metadata request.
    """

    def __init__(self, backing: str | Path, *, mounts: int = 2, meta_latency_ms: float = 1.0,
                 data_latency_ms: float = 0.0, attr_timeout: float = 1.0,
                 entry_timeout: float = 1.0, negative_timeout: float | None = None,
                 close_latency: bool = False, nfs_round_trips: bool = False,
                 mount_dir: str | Path | None = None,
                 fd_cache: int = 4096, python: str | None = None) -> None:
        if mounts < 1:
            raise ValueError("mounts must be at least 1")
        self.backing = Path(backing).resolve()
        if not self.backing.is_dir():
            raise NfsEmulatorError(f"backing folder {self.backing} does not exist")
        self.n = mounts
        self.meta_latency_ms = meta_latency_ms
        self.data_latency_ms = data_latency_ms
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.negative_timeout = negative_timeout
        self.close_latency = close_latency
        self.nfs_round_trips = nfs_round_trips
        self.fd_cache = fd_cache
        self.python = python or sys.executable
        self._given_mount_dir = Path(mount_dir) if mount_dir is not None else None
        self.work: Path | None = None
        self.mounts: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._controls: list[Path] = []
        self._logs: list[Path] = []

    # -- life cycle ----------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _argv(self, node: int) -> list[str]:
        argv = [self.python, "-m", "htpdata.testing.nfsemu.serve",
                "--backing", str(self.backing), "--mount", str(self.mounts[node]),
                "--control", str(self._controls[node]), "--node", str(node),
                "--meta-latency-ms", str(self.meta_latency_ms),
                "--data-latency-ms", str(self.data_latency_ms),
                "--attr-timeout", str(self.attr_timeout),
                "--entry-timeout", str(self.entry_timeout),
                "--fd-cache", str(self.fd_cache), "--parent-pid", str(os.getpid())]
        if self.negative_timeout is not None:
            argv += ["--negative-timeout", str(self.negative_timeout)]
        if self.close_latency:
            argv.append("--close-latency")
        if self.nfs_round_trips:
            argv.append("--nfs-round-trips")
        return argv

    def start(self, timeout: float = 30.0) -> NfsEmulator:
        reason = unavailable_reason()
        if reason is not None:
            raise NfsEmulatorError(f"the network-filesystem emulator cannot run: {reason}")
        self.work = Path(tempfile.mkdtemp(prefix="htpdata-nfsemu-"))
        self.work.chmod(0o755)
        control = self.work / "control"
        control.mkdir(mode=0o700)
        mount_dir = self._given_mount_dir or self.work
        mount_dir.mkdir(parents=True, exist_ok=True)
        try:
            for node in range(self.n):
                mount = mount_dir / f"node{node}"
                mount.mkdir(exist_ok=True)
                self.mounts.append(mount)
                self._controls.append(control / f"node{node}.sock")
                self._logs.append(self.work / f"node{node}.log")
            env = dict(os.environ)
            src = str(Path(__file__).resolve().parents[3])  # the folder holding htpdata/
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            for node in range(self.n):
                with open(self._logs[node], "wb") as log:
                    self.procs.append(subprocess.Popen(
                        self._argv(node), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                        env=env, start_new_session=True))
            deadline = time.monotonic() + timeout
            for node in range(self.n):
                self._wait_ready(node, deadline)
            self.reset()  # readiness probes are not the caller's operations
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, node: int, deadline: float) -> None:
        proc = self.procs[node]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NfsEmulatorError(f"nfsemu node {node} exited with {proc.returncode} "
                                       f"before mounting:\n{self.log_tail(node)}")
            if is_mounted(self.mounts[node]):
                with contextlib.suppress(OSError, NfsEmulatorError):
                    if self._call(node, {"cmd": "ping"}, timeout=2.0).get("ok"):
                        return
            time.sleep(0.02)
        raise NfsEmulatorError(f"nfsemu node {node} did not mount {self.mounts[node]} in time:\n"
                               f"{self.log_tail(node)}")

    def log_tail(self, node: int, chars: int = 3000) -> str:
        try:
            return self._logs[node].read_text(errors="replace")[-chars:]
        except (OSError, IndexError):
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node by PID (SIGTERM, then SIGKILL) and make sure nothing stays mounted."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        for mount in self.mounts:
            if is_mounted(mount):  # a killed server leaves its mount: detach it lazily
                subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False,
                               capture_output=True)
        for mount in self.mounts:
            with contextlib.suppress(OSError):
                if not is_mounted(mount):
                    mount.rmdir()
        if self.work is not None and not any(is_mounted(m) for m in self.mounts):
            shutil.rmtree(self.work, ignore_errors=True)
        self.procs, self.mounts, self._controls, self._logs, self.work = [], [], [], [], None

    def __enter__(self) -> NfsEmulator:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- control -------------------------------------------------------------------------
    def _call(self, node: int, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(str(self._controls[node]))
                s.sendall(json.dumps(request).encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            except OSError as exc:
                raise NfsEmulatorError(f"nfsemu node {node} does not answer: {exc}") from exc
        try:
            reply: dict[str, Any] = json.loads(buf)
        except ValueError as exc:
            raise NfsEmulatorError(f"nfsemu node {node} answered {buf[:200]!r}") from exc
        if not reply.get("ok"):
            raise NfsEmulatorError(f"nfsemu node {node}: {reply.get('error')}")
        return reply

    def _nodes(self, node: int | None) -> Sequence[int]:
        return range(self.n) if node is None else [node]

    def counters(self, node: int | None = None) -> OpCounts:
        """What ``node`` (default: all nodes, added up) served since the last reset."""
        total = OpCounts()
        for i in self._nodes(node):
            total = total + OpCounts.from_json(self._call(i, {"cmd": "counters"})["counters"])
        return total

    def reset(self, node: int | None = None) -> OpCounts:
        """Zero the counters and return what they held (one phase's figures)."""
        total = OpCounts()
        for i in self._nodes(node):
            total = total + OpCounts.from_json(self._call(i, {"cmd": "reset"})["counters"])
        return total

    def set_latency(self, meta_ms: float | None = None, data_ms: float | None = None,
                    node: int | None = None) -> None:
        request: dict[str, Any] = {"cmd": "set"}
        if meta_ms is not None:
            request["meta_latency_ms"] = meta_ms
            self.meta_latency_ms = meta_ms
        if data_ms is not None:
            request["data_latency_ms"] = data_ms
            self.data_latency_ms = data_ms
        for i in self._nodes(node):
            self._call(i, request)

    def cpu_seconds(self, node: int | None = None) -> float:
        """CPU time (user and system) the server process of ``node`` (default: all nodes, added
        up) has used so far, from ``/proc``: the emulator's own cost, which on a machine of
        few cores competes with the processes it serves (a real NFS server runs elsewhere)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for i in self._nodes(node):
            try:
                with open(f"/proc/{self.procs[i].pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total

    def server_state(self, node: int) -> dict[str, int]:
        """``inodes``: how many inodes ``node``'s kernel holds references to; ``open_fds``: the
        descriptors its server process has open."""
        reply = self._call(node, {"cmd": "ping"})
        return {"inodes": int(reply["inodes"]), "open_fds": int(reply["open_fds"])}
