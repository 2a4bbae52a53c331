"""The gateway's secret, where a running gateway is recorded, and how clients find it.

A gateway is known by its *base URL*, ``http://127.0.0.1:PORT/SECRET/``: the secret is the first
path segment of every URL it serves. The secret never goes on a command line (``ps`` shows every
process's argv to every user); it is kept in

- the state file ``gateway-<host>.json`` (mode 0600, in a 0700 folder: ``$XDG_RUNTIME_DIR/htpdata``,
  else the user's htpdata config folder; the host name in the file name keeps nodes that share a
  home folder apart), written when a gateway starts and removed when it stops;
- the environment variable :data:`ENV_URL` (``/proc/PID/environ`` is readable by its owner and
  root only), which a gateway started for a Dask worker or a notebook's children inherits.

A state file is trusted only when it is a regular file owned by this user, not readable by
anyone else, in a folder nobody else can write to. A client can check that whatever listens on a
port is the gateway it knows without sending the secret there: ``GET /_gateway/hello?nonce=N``
answers ``HMAC(secret, N)`` (:func:`proof`), so a program of another user that took the port
learns nothing from the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .._redact import register_secret
from ..config import user_dir
from ..errors import GatewayError
from ..names import Name
from .paths import path_for_name

__all__ = [
    "ENV_URL",
    "GatewayInfo",
    "discover",
    "new_secret",
    "proof",
    "remove_state",
    "runtime_dir",
    "state_path",
    "write_state",
]

ENV_URL = "HTPDATA_GATEWAY_URL"
"""A running gateway's base URL, secret included; read before the state file."""
_HELLO = b"htpdata-gateway-hello:"


def new_secret() -> str:
    """256 random bits, URL-safe (43 characters), registered for redaction from messages."""
    value = secrets.token_urlsafe(32)
    register_secret(value)
    return value


def proof(secret: str, nonce: str) -> str:
    """What a gateway answers to ``hello?nonce=...``: proves it knows ``secret``."""
    return hmac.new(secret.encode(), _HELLO + nonce.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class GatewayInfo:
    """A gateway as a client sees it: where it listens and its secret."""

    host: str
    port: int
    secret: str
    pid: int | None = None
    unix_socket: str | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/SECRET/``: prefix every gateway path with this."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{self.secret}/"

    def url(self, name: str | Name) -> str:
        """The gateway URL of a name (a logical name, DID or physical URL)."""
        return self.base_url + path_for_name(name).lstrip("/")

    @classmethod
    def from_url(cls, url: str, source: str = ENV_URL) -> GatewayInfo:
        parts = urllib.parse.urlsplit(url)
        secret = parts.path.strip("/").split("/", 1)[0]
        if parts.scheme != "http" or not parts.hostname or not parts.port or not secret:
            raise GatewayError(f"{source}: expected http://HOST:PORT/SECRET/, got a URL of "
                               f"another form")
        register_secret(secret)
        return cls(parts.hostname, parts.port, secret)


def runtime_dir(environ: Mapping[str, str] | None = None, create: bool = True) -> Path:
    """The folder of this user's gateway state: ``$XDG_RUNTIME_DIR/htpdata`` (node-local,
    private) if set, else the htpdata config folder. Made 0700; refused if another user owns
    it or others can write to it."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "htpdata" if base else user_dir(env)
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return folder
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise GatewayError(f"{folder} is not a folder of this user; refusing to keep the "
                           "gateway's secret there")
    if st.st_mode & 0o022:
        raise GatewayError(f"{folder} is writable by others; refusing to keep the gateway's "
                           "secret there (chmod go-w)")
    if create and st.st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def state_path(environ: Mapping[str, str] | None = None, create: bool = False) -> Path:
    return runtime_dir(environ, create) / f"gateway-{socket.gethostname()}.json"


def write_state(info: GatewayInfo, environ: Mapping[str, str] | None = None) -> Path:
    """Record a started gateway (atomically: beside, 0600 from the start, then renamed)."""
    path = state_path(environ, create=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({**asdict(info), "started": time.time()}, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_state(info: GatewayInfo, environ: Mapping[str, str] | None = None) -> None:
    """Remove the state file if it still describes ``info`` (not a newer gateway's)."""
    with contextlib.suppress(OSError, GatewayError):
        path = state_path(environ)
        found = _read_state(path)
        if found is not None and found.port == info.port and found.pid == info.pid:
            path.unlink()


def _read_state(path: Path) -> GatewayInfo | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise GatewayError(f"cannot read the gateway state {path}: {exc.strerror}") from None
    with os.fdopen(fd) as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise GatewayError(f"{path} is not a private file of this user (owner uid "
                               f"{st.st_uid}, mode {st.st_mode & 0o777:o}); not trusting it")
        try:
            data = json.load(fh)
            info = GatewayInfo(str(data["host"]), int(data["port"]), str(data["secret"]),
                               int(data["pid"]) if data.get("pid") else None,
                               data.get("unix_socket"))
        except (ValueError, KeyError, TypeError):
            raise GatewayError(f"{path} is not a gateway state file") from None
    register_secret(info.secret)
    return info


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pid reused by another user's process
        return False
    return True


def discover(environ: Mapping[str, str] | None = None) -> GatewayInfo | None:
    """This user's running gateway on this node: from :data:`ENV_URL`, else the state file
    (if its process is alive). ``None`` when there is none."""
    env = os.environ if environ is None else environ
    if env.get(ENV_URL):
        return GatewayInfo.from_url(env[ENV_URL])
    info = _read_state(state_path(env))
    if info is None or not _alive(info.pid):
        return None
    return info
