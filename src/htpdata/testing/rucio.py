"""A real Rucio server (PyPI ``rucio``, SQLite, gunicorn) on loopback, and helpers to fill it.

The server runs in its own process with ``RUCIO_CONFIG`` pointing at a server config (one that has
a ``[database]`` section). The database is built once per process, in a child process, and copied
for every server, so each server starts from an empty, isolated catalogue.

Clients use :attr:`RucioServer.client_config`, a config with only a ``[client]`` section (Rucio
treats any config with ``[database]`` as server mode). Rucio caches its parsed config for the
whole process (``rucio.common.config.get_config``), so :func:`rucio_config` sets ``RUCIO_CONFIG``
*and* clears that cache on the way in and out; :meth:`RucioServer.client` builds a
``rucio.client.Client`` inside it with every connection setting passed explicitly. Code that
builds its own ``Client()`` (htpdata itself) should run inside
``rucio_config(server.client_config)``, or set the variable and call ``clean_cached_config()``.
``rucio.rse`` also fixes client or server mode once, at its first import, from whatever config
is current then.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..adler32 import adler32_hex
from .servers import free_port

if TYPE_CHECKING:
    from rucio.client import Client

__all__ = [
    "ACCOUNT",
    "PASSWORD",
    "USERNAME",
    "RucioServer",
    "add_container",
    "add_dataset",
    "add_rse",
    "describe_files",
    "register_files",
    "rucio_config",
]

#: The userpass identity bootstrapped into every database (mapped to the ``root`` account).
USERNAME = "htpdata"
PASSWORD = "htpdata-test-secret"  # a throwaway loopback test server
ACCOUNT = "root"

#: SQLite limits with Rucio: ``add_replicas`` fails at 1000 files; ``attach_dids`` caps at 1000.
REPLICA_BATCH = 500
ATTACH_BATCH = 1000

_BUILD_SCRIPT = """\
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
"""

_template_lock = threading.Lock()
_template_db: Path | None = None
_template_seconds = 0.0


# -- the installed package -------------------------------------------------------------------
def rucio_etc() -> Path:
    """The ``etc`` folder the ``rucio`` distribution installs (templates, mail templates)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        for f in distribution("rucio").files or []:
            if f.name == "alembic.ini.template":
                return Path(str(f.locate())).resolve().parent
    except PackageNotFoundError:
        pass
    return Path(sys.prefix) / "rucio" / "etc"


def _rucio_package() -> Path:
    import rucio

    return Path(rucio.__file__).resolve().parent


def _alembic_ini(db_url: str) -> str:
    """alembic.ini for ``db_url`` with the logging sections of the packaged template."""
    template = (rucio_etc() / "alembic.ini.template").read_text()
    logging_part = template[template.index("[loggers]"):]
    script = _rucio_package() / "db" / "sqla" / "migrate_repo"
    return (f"[alembic]\nsqlalchemy.url = {db_url}\nscript_location = {script}/\n\n"
            f"{logging_part}")


def _server_config(work: Path, db: Path, cache_port: int) -> str:
    etc = rucio_etc()
    return f"""\
[common]
logdir = {work / "logs"}
loglevel = WARNING
mailtemplatedir = {etc / "mail_templates"}

[database]
default = sqlite:///{db}

[bootstrap]
userpass_identity = {USERNAME}
userpass_pwd = {PASSWORD}
userpass_email = {USERNAME}@localhost

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
support = htpdata tests
support_rucio = https://github.com/rucio/rucio/issues/

[alembic]
cfg = {work / "alembic.ini"}

[monitor]
enable_metrics = False

[cache]
# Nothing listens here: Rucio then runs without memcached instead of sharing one.
url = 127.0.0.1:{cache_port}
"""


def _write_server_files(work: Path, db: Path) -> Path:
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "alembic.ini").write_text(_alembic_ini(f"sqlite:///{db}"))
    cfg = work / "rucio.cfg"
    cfg.write_text(_server_config(work, db, free_port()))
    return cfg


def _server_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUCIO_", "X509_", "BEARER_TOKEN"))}
    env["RUCIO_CONFIG"] = str(config)
    return env


def template_database(timeout: float = 120.0) -> Path:
    """The empty, bootstrapped database, built once per process in a child process.

    Building in a child keeps the server config out of this process: Rucio caches its config,
    its database engine and its client/server mode per process.
    """
    global _template_db, _template_seconds
    with _template_lock:
        if _template_db is not None and _template_db.exists():
            return _template_db
        work = Path(tempfile.mkdtemp(prefix="htpdata-rucio-template-"))
        atexit.register(shutil.rmtree, work, True)
        db = work / "rucio.db"
        cfg = _write_server_files(work, db)
        t0 = time.monotonic()
        try:
            out = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT], env=_server_env(cfg),
                                 cwd=work, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"building the Rucio database took over {timeout} s") from exc
        if out.returncode != 0 or not db.exists():
            raise RuntimeError(f"building the Rucio database failed ({out.returncode}):\n"
                               f"{(out.stdout + out.stderr)[-3000:]}")
        _template_seconds = time.monotonic() - t0
        _template_db = db
        return db


# -- the client side -------------------------------------------------------------------------
@contextmanager
def rucio_config(path: str | Path) -> Iterator[None]:
    """Point ``RUCIO_CONFIG`` at ``path`` and drop Rucio's cached config, both ways."""
    from rucio.common.config import clean_cached_config

    old = os.environ.get("RUCIO_CONFIG")
    os.environ["RUCIO_CONFIG"] = str(path)
    clean_cached_config()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RUCIO_CONFIG", None)
        else:
            os.environ["RUCIO_CONFIG"] = old
        clean_cached_config()


# -- the server ------------------------------------------------------------------------------
class RucioServer:
    """One Rucio REST server (gunicorn, one sync worker) on ``http://127.0.0.1:{port}``.

    Its SQLite database is a copy of :func:`template_database`. Use as a context manager or call
    start/stop/cleanup. :attr:`client_config` is the ``rucio.cfg`` a client should use.
    """

    def __init__(self, name: str = "rucio") -> None:
        self.name = name
        self.work = Path(tempfile.mkdtemp(prefix=f"htpdata-{name}-"))
        self.db = self.work / "rucio.db"
        self.config = self.work / "rucio.cfg"
        self.client_config = self.work / "client" / "rucio.cfg"
        self.log = self.work / "logs" / "gunicorn.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.build_seconds = 0.0  # time this process spent building the template database
        self.start_seconds = 0.0  # last start(), from spawn to a good /ping

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_client_config(self) -> None:
        self.client_config.parent.mkdir(exist_ok=True)
        self.client_config.write_text(
            "[client]\n"
            f"rucio_host = {self.url}\n"
            f"auth_host = {self.url}\n"
            "auth_type = userpass\n"
            f"username = {USERNAME}\n"
            f"password = {PASSWORD}\n"
            f"account = {ACCOUNT}\n"
            # Without this the token lands in /tmp/.rucio_<user>/, shared by every server.
            f"auth_token_file_path = {self.client_config.parent / 'token' / 'auth_token'}\n"
            "request_retries = 1\n")

    def start(self, timeout: float = 60.0) -> RucioServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        built_before = _template_db is not None
        template = template_database()
        self.build_seconds = 0.0 if built_before else _template_seconds
        if not self.db.exists():
            shutil.copyfile(template, self.db)
        _write_server_files(self.work, self.db)
        self.port = self.port or free_port()
        self._write_client_config()
        bindir = Path(sys.executable).parent
        exe = bindir / "gunicorn"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gunicorn"]
        cmd += ["--no-control-socket", "-b", f"127.0.0.1:{self.port}", "-w", "1",
                "--graceful-timeout", "5", "--timeout", "60",
                "rucio.web.rest.flaskapi.v1.main:application"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.work, env=_server_env(self.config),
                                         start_new_session=True)
        t1 = time.monotonic()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t1
        return self

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rucio server exited with {self.proc.returncode} before "
                                   f"answering /ping\n{self._log_tail()}")
            wait = max(0.1, min(2.0, deadline - time.monotonic()))
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=wait) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"rucio server on {self.url} not ready after {timeout} s\n"
                           f"{self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM the gunicorn master, then SIGKILL whatever is left of its process group."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # gunicorn: graceful stop of the worker, at most --graceful-timeout
        deadline = time.monotonic() + 15
        # Wait without reaping: while the master is an unreaped zombie its PID, which is also
        # its process group's ID (start_new_session), cannot be reused, so killpg is exact.
        while (time.monotonic() < deadline
               and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None):
            time.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)

    def kill(self) -> None:
        """SIGKILL master and worker at once, as a crash: connections drop without an answer."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        try:  # the master is not reaped yet, so its process group is still the server's
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)

    def restart(self, timeout: float = 60.0) -> RucioServer:
        """Start again on the same port with the same database (after stop or kill)."""
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def client(self, timeout: int = 30) -> Client:
        """A ``rucio.client.Client`` for this server, logged in as ``root`` via userpass."""
        with rucio_config(self.client_config):
            from rucio.client import Client
            from rucio.common.constants import DEFAULT_VO

            return Client(rucio_host=self.url, auth_host=self.url, account=ACCOUNT,
                          auth_type="userpass",
                          creds={"username": USERNAME, "password": PASSWORD},
                          vo=DEFAULT_VO, timeout=timeout)

    def __enter__(self) -> RucioServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()


# -- filling it ------------------------------------------------------------------------------
def _host_port(url: str) -> tuple[str, str, int]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if not u.scheme or not u.hostname or not u.port:
        raise ValueError(f"need scheme://host:port, got {url!r}")
    return u.scheme, u.hostname, u.port


def add_rse(client: Client, name: str, root_url: str | None = None,
            davs_url: str | None = None, attributes: Mapping[str, Any] | None = None,
            deterministic: bool = False, tape: bool = False) -> None:
    """Create RSE ``name`` (``^[A-Z0-9]+([_-][A-Z0-9]+)*$``) with root:// and/or davs protocols.

    ``root_url``/``davs_url`` are ``scheme://host:port`` (any path is ignored). PFNs come out as
    ``root://host:port//store/...`` and ``davs://host:port/store/...``. root is priority 1 and
    davs 2 for read/write/delete in both the wan and lan domains. ``tape`` makes the RSE type
    TAPE (a column, usable in RSE expressions as ``rse_type=TAPE``).
    """
    client.add_rse(name, deterministic=deterministic, rse_type="TAPE" if tape else "DISK")
    protocols = []
    if root_url is not None:
        _, host, port = _host_port(root_url)
        # Rucio's xrootd plugin appends a non-deterministic replica's stored path ("/store/..")
        # verbatim after the prefix, a deterministic one's ("cms/..") without a leading slash.
        prefix = "//" if deterministic else "/"
        protocols.append(("root", host, port, prefix, "rucio.rse.protocols.xrootd.Default"))
    if davs_url is not None:
        scheme, host, port = _host_port(davs_url)
        protocols.append((scheme, host, port, "/", "rucio.rse.protocols.webdav.Default"))
    for priority, (scheme, host, port, prefix, impl) in enumerate(protocols, start=1):
        ops = {"read": priority, "write": priority, "delete": priority,
               "third_party_copy_read": priority, "third_party_copy_write": priority}
        client.add_protocol(name, {"scheme": scheme, "hostname": host, "port": port,
                                   "prefix": prefix, "impl": impl,
                                   "domains": {"wan": dict(ops), "lan": dict(ops)}})
    for key, value in (attributes or {}).items():
        client.add_rse_attribute(name, key, value)


def _ensure_scope(client: Client, scope: str) -> None:
    from rucio.common.exception import Duplicate

    try:
        client.add_scope(ACCOUNT, scope)
    except Duplicate:
        pass


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def describe_files(paths: Iterable[str | Path], name_prefix: str = "/store/test/"
                   ) -> list[dict[str, Any]]:
    """``{name, bytes, adler32}`` for local files, named ``name_prefix + file name``."""
    out = []
    for p in map(Path, paths):
        data = p.read_bytes()
        out.append({"name": name_prefix + p.name, "bytes": len(data),
                    "adler32": adler32_hex(data)})
    return out


def register_files(client: Client, scope: str, rse: str, files: Sequence[Mapping[str, Any]],
                   pfn_prefix: str | None = None) -> None:
    """Add replicas of ``files`` (dicts with name, bytes, adler32[, pfn]) on ``rse``.

    Creates ``scope`` if missing. Each PFN is the file's ``pfn`` or ``pfn_prefix + name``
    verbatim: for ``/store/...`` names on root:// pass ``root://host:port/`` to get
    ``root://host:port//store/...``. A non-deterministic RSE needs a PFN per file; on a
    deterministic one leave both out (Rucio refuses any PFN but the one its lfn2pfn gives).
    Sent in batches of at most 500 (SQLite's limit).
    """
    _ensure_scope(client, scope)
    entries = []
    for f in files:
        entry = {"scope": scope, "name": f["name"], "bytes": int(f["bytes"]),
                 "adler32": f["adler32"]}
        pfn = f.get("pfn") or (pfn_prefix + f["name"] if pfn_prefix is not None else None)
        if pfn is not None:
            entry["pfn"] = pfn
        entries.append(entry)
    for batch in _chunks(entries, REPLICA_BATCH):
        client.add_replicas(rse, list(batch))


def _dids(scope: str, items: Iterable[str | Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"scope": scope, "name": i} if isinstance(i, str)
            else {"scope": i.get("scope", scope), "name": i["name"]} for i in items]


def add_dataset(client: Client, scope: str, name: str,
                files: Iterable[str | Mapping[str, Any]]) -> None:
    """Create dataset ``scope:name`` and attach ``files`` (names or dicts with name[, scope])."""
    _ensure_scope(client, scope)
    client.add_dataset(scope, name)
    for batch in _chunks(_dids(scope, files), ATTACH_BATCH):
        client.attach_dids(scope, name, list(batch))


def add_container(client: Client, scope: str, name: str,
                  datasets: Iterable[str | Mapping[str, Any]]) -> None:
    """Create container ``scope:name`` and attach ``datasets`` (or containers)."""
    _ensure_scope(client, scope)
    client.add_container(scope, name)
    for batch in _chunks(_dids(scope, datasets), ATTACH_BATCH):
        client.attach_dids(scope, name, list(batch))
