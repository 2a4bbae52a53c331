"""One gateway per node and user on a Dask cluster, at the same URL on every worker.

``install(dask_client)`` picks a port and a new secret on the client and registers
:class:`GatewayPlugin`. On each worker the plugin makes sure the node has a gateway at
``127.0.0.1:PORT`` with that secret: the first worker of the node starts it (``python -m htpdata
serve`` in its own session, the secret in its environment, the client's settings as
``HTPDATA_*`` variables), later ones find it. So ``http://127.0.0.1:PORT/SECRET/cms/store/...``,
built once on the client, reads through the local tier of whichever node runs the task.

Who may start, and when it stops, is decided by two lock files in the user's runtime folder:
a worker holds a shared lock on ``gateway-HOST-PORT.users`` for as long as it lives (the kernel
drops it when the worker dies, however it dies), and the gateway exits once it can take that
lock exclusively - no worker is left. Starting is serialised by ``gateway-HOST-PORT.start``.
Before reusing whatever answers on the port, a worker checks the hello proof (:mod:`.state`), so
a program of another user that took the port is reported, never trusted.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

from distributed.diagnostics.plugin import WorkerPlugin

from ..config import Settings
from ..errors import GatewayError
from .state import ENV_URL, GatewayInfo, new_secret, proof, runtime_dir

__all__ = ["GatewayPlugin", "install", "node_gateway", "probe", "settings_environment"]

PLUGIN_NAME = "htpdata-gateway"
_READY_TIMEOUT = 60.0


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as ``HTPDATA_SECTION_KEY`` variables: the environment layer of
    :func:`htpdata.config.load_settings`, which overrides every file."""
    env = {}
    for key, value, _source in settings.items():
        section, name = key.split(".", 1)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            sep = os.pathsep if "path" in name else ","
            if any(sep in v for v in value):
                raise GatewayError(f"setting {key}: an item contains {sep!r}, which the "
                                   "environment cannot carry")
            text = sep.join(value)
        else:
            text = str(value)
        env[f"HTPDATA_{section}_{name}".upper()] = text
    return env


def probe(port: int, secret: str, host: str = "127.0.0.1", timeout: float = 3.0
          ) -> Literal["ours", "free", "other"]:
    """Whether ``host:port`` is our gateway (it proves it knows the secret, which is not sent),
    nothing, or some other program."""
    nonce = secrets.token_hex(16)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/_gateway/hello?nonce={nonce}")
        resp = conn.getresponse()
        body = resp.read(4096)
    except ConnectionRefusedError:
        return "free"
    except (OSError, http.client.HTTPException):
        return "other"
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        return "other"
    ok = (resp.status == 200 and isinstance(answer, dict)
          and answer.get("proof") == proof(secret, nonce))
    return "ours" if ok else "other"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def node_gateway(port: int, secret: str, settings: Settings, threads: int = 8) -> int:
    """Make sure this node runs our gateway on ``port``; returns the file descriptor of the
    shared "users" lock the caller must keep open while it uses the gateway."""
    folder = runtime_dir()
    host = socket.gethostname()
    stem = folder / f"gateway-{host}-{port}"
    start_fd = _lock(stem.with_suffix(".start"), fcntl.LOCK_EX)
    try:
        # Blocks while a gateway that found no users is shutting down; then it is gone.
        users_fd = _lock(stem.with_suffix(".users"), fcntl.LOCK_SH)
        try:
            found = probe(port, secret)
            if found == "other":
                raise GatewayError(f"port {port} on {host} is taken by another program; "
                                   "install the gateway with another port "
                                   "(htpdata.gateway.install(client, port=...))")
            if found == "free":
                _spawn(port, secret, settings, threads, stem)
        except BaseException:
            os.close(users_fd)
            raise
        return users_fd
    finally:
        os.close(start_fd)


def _spawn(port: int, secret: str, settings: Settings, threads: int, stem: Path) -> None:
    # The token reaches the gateway as auth.token_file (a path) in its settings, never as a
    # value in its environment.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HTPDATA_") and k != "BEARER_TOKEN"}
    env.update(settings_environment(settings))
    env[ENV_URL] = GatewayInfo("127.0.0.1", port, secret).base_url
    log_path = stem.with_suffix(".log")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as logf:
        # The secret travels in the environment only: argv is visible to every user.
        proc = subprocess.Popen(
            [sys.executable, "-m", "htpdata", "serve", "--port", str(port), "--threads",
             str(threads), "--exit-when-unused", str(stem.with_suffix(".users"))],
            env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise GatewayError(f"the gateway on {socket.gethostname()}:{port} exited at start "
                               f"({proc.returncode}): " + " | ".join(tail))
        if probe(port, secret, timeout=1.0) == "ours":
            return
        time.sleep(0.05)
    proc.kill()
    raise GatewayError(f"the gateway on {socket.gethostname()}:{port} did not answer within "
                       f"{_READY_TIMEOUT:.0f} s (log: {log_path})")


class GatewayPlugin(WorkerPlugin):
    """The worker plugin (registered by :func:`install`). It pickles with the port, the
    secret and the client's settings: the scheduler and workers run as the same user, and
    nothing of it is shown on a dashboard."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, port: int, secret: str, settings: Settings, threads: int = 8,
                 root: bool = False) -> None:
        self.port = port
        self.secret = secret
        self.settings = settings
        self.threads = threads
        self.root = root
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fd = None

    def setup(self, worker: Any) -> None:
        self._fd = node_gateway(self.port, self.secret, self.settings, self.threads)
        # Tasks on this worker find the gateway too (htpdata.gateway_url, ROOT macros).
        os.environ[ENV_URL] = GatewayInfo("127.0.0.1", self.port, self.secret).base_url
        if self.root:  # ROOT in this worker opens http:// (the PyPI wheel's TWebFile entry)
            from .root import enable_http

            enable_http()

    def teardown(self, worker: Any) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None


def install(client: Any, *, port: int | None = None, threads: int = 8,
            settings: Settings | None = None, root: bool = False) -> GatewayInfo:
    """Run a gateway on every node of the cluster of ``client`` (a ``distributed.Client``);
    returns the gateway as tasks see it (``.url(name)`` works on every worker).

    ``root=True`` also registers ROOT's HTTP handler in every worker (imports ROOT there), as
    ROOT's distributed RDataFrame needs with the PyPI wheel; workers that join later get it too.

    ``port`` defaults to one that is free here; when it is taken on some node, another is
    tried (twice). With an explicit ``port``, a taken port is a :class:`GatewayError`.
    ``settings`` default to those of htpdata's default client here.
    """
    from ..default import default_client

    if settings is None:
        settings = default_client().worker_settings()
    secret = new_secret()
    tries = 1 if port is not None else 3
    last: GatewayError | None = None
    for _ in range(tries):
        chosen = port if port is not None else _free_port()
        try:
            client.register_plugin(GatewayPlugin(chosen, secret, settings, threads, root),
                                   name=PLUGIN_NAME)
        except GatewayError as exc:
            last = exc
            with suppress(Exception):
                client.unregister_worker_plugin(PLUGIN_NAME)
            continue
        return GatewayInfo("127.0.0.1", chosen, secret)
    assert last is not None
    raise last
