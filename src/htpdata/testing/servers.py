"""An XRootD origin (Debian ``xrootd-server``) serving a folder on root:// and WebDAV.

Used by the test fixtures, ``htpdata demo`` and the benchmarks. The server runs as ``nobody``
(xrootd refuses to run as root), listens on free ports, is probed for readiness instead of slept
for, and is stopped by PID. Clients reach it only as ``localhost``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["XRootDServer", "free_port", "wait_for_port"]


def sigint_as_in_a_terminal() -> None:
    """A ``preexec_fn`` for a child that a test interrupts with SIGINT: SIGINT at its default
    disposition and unblocked, whatever the test run inherited (a background job ignores it;
    some harnesses block it, and a blocked signal mask survives exec). Python then turns the
    signal into KeyboardInterrupt, as Ctrl-C in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None,
                  log: Path | None = None) -> None:
    """Return once something accepts connections on localhost:port, or raise RuntimeError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening on "
                               f"{port}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on localhost:{port} after {timeout} s")


def _run_user() -> tuple[str, int, int]:
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid()
    pw = pwd.getpwnam("nobody")
    return "nobody", pw.pw_uid, pw.pw_gid


def make_self_signed(folder: Path) -> tuple[Path, Path, Path]:
    """A localhost certificate and key, and a CA folder holding the certificate's hash link."""
    cert, key, cadir = folder / "cert.pem", folder / "key.pem", folder / "ca"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    cadir.mkdir()
    shutil.copy(cert, cadir / "cert.pem")
    digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)], check=True,
                            capture_output=True, text=True).stdout.strip()
    (cadir / f"{digest}.0").symlink_to("cert.pem")
    return cert, key, cadir


class XRootDServer:
    """One xrootd process serving ``data`` on ``root://localhost:{port}`` and WebDAV.

    With ``tls=True`` the HTTP port speaks HTTPS (``davs://``) with a self-signed certificate;
    clients verify against :attr:`cert`. Use as a context manager or call start/stop.
    """

    def __init__(self, data: str | Path | None = None, *, tls: bool = True, name: str = "origin",
                 writable: bool = True, extra_config: str = "") -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"htpdata-xrootd-{name}-"))
        self.work.chmod(0o755)
        self.data = Path(data) if data is not None else self.work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.tls = tls
        self.writable = writable
        self.extra_config = extra_config
        self.env: dict[str, str] | None = None
        """The server's environment (None: this process's), for plugins that read variables."""
        self.port = 0
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert: Path | None = None
        self.ca_dir: Path | None = None
        # started with -l logs/xrootd.log: xrootd -n NAME writes logs/NAME/xrootd.log
        self.log = self.work / "logs" / name / "xrootd.log"

    # -- URLs --------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"root://localhost:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"{'davs' if self.tls else 'http'}://localhost:{self.http_port}/"

    @property
    def https_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.http_port}/"

    # -- life cycle --------------------------------------------------------------------
    def _config(self, user_uid: int, user_gid: int) -> Path:
        admin = self.work / "admin"
        admin.mkdir(exist_ok=True)
        os.chown(admin, user_uid, user_gid)
        lines = [
            "all.export /",
            f"oss.localroot {self.data}",
            f"all.adminpath {admin}",
            f"all.pidpath {admin}",
            f"xrd.port {self.port}",
            "xrootd.chksum adler32",
            "xrd.allow host localhost",
            "xrd.allow host 127.0.0.1",
            "if exec xrootd",
            f"xrd.protocol XrdHttp:{self.http_port} libXrdHttp.so",
            "fi",
        ]
        if self.tls:
            if self.cert is None:  # kept across restarts: clients already trust it
                cert, key, cadir = make_self_signed(self.work)
                os.chown(key, user_uid, user_gid)
                key.chmod(0o600)
                self.cert, self.ca_dir = cert, cadir
            lines += [f"xrd.tls {self.cert} {self.work / 'key.pem'}",
                      f"xrd.tlsca certdir {self.ca_dir}"]
        if self.extra_config:
            lines.append(self.extra_config)
        cfg = self.work / "xrootd.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def start(self, timeout: float = 30.0) -> XRootDServer:
        exe = shutil.which("xrootd")
        if exe is None:
            raise RuntimeError("xrootd is not installed (Debian: apt-get install xrootd-server "
                               "xrootd-server-plugins xrootd-client)")
        user, uid, gid = _run_user()
        if self.writable:
            for root, dirs, files in os.walk(self.data):
                for entry in [root, *(os.path.join(root, d) for d in dirs),
                              *(os.path.join(root, f) for f in files)]:
                    os.chown(entry, uid, gid)
        else:
            for root, dirs, _ in os.walk(self.data):
                for d in [root, *(os.path.join(root, x) for x in dirs)]:
                    os.chmod(d, 0o755)
        self.port = self.port or free_port()
        self.http_port = self.http_port or free_port()
        cfg = self._config(uid, gid)
        self.log.parent.parent.mkdir(exist_ok=True)
        os.chown(self.log.parent.parent, uid, gid)
        cmd = [exe, "-c", str(cfg), "-l", str(self.log.parent.parent / "xrootd.log"), "-n",
               self.name]
        if os.getuid() == 0:
            cmd[1:1] = ["-R", user]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     env=self.env)
        try:
            wait_for_port(self.port, timeout, self.proc, self.log)
            wait_for_port(self.http_port, timeout, self.proc, self.log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crashed server: connections drop without goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self, timeout: float = 30.0) -> XRootDServer:
        """Start again on the same ports (after kill or stop)."""
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop the server and remove its folder (and the ``/tmp/xrootd.NAME.env`` file
        xrootd leaves behind for its instance name)."""
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
        Path(tempfile.gettempdir(), f"xrootd.{self.name}.env").unlink(missing_ok=True)

    def __enter__(self) -> XRootDServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
