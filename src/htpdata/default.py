"""The process's default client, built from the configuration on first use.

``htpdata.open``, ``htpdata.resolve`` and the other top-level functions, ``htpdata://`` URLs
opened without storage options, and the CLI use it. It sits just above :mod:`htpdata.client`
and below the fsspec layer (:mod:`htpdata.fs`), so both can reach it without an import cycle.
"""

from __future__ import annotations

import threading

from .client import Client
from .config import Settings

__all__ = ["close_default_client", "default_client", "reset_default_client", "worker_client"]

_default: Client | None = None
_lock = threading.Lock()
_workers: dict[str, Client] = {}


def default_client() -> Client:
    """The default client (built from the configuration the first time)."""
    global _default
    with _lock:
        if _default is None:
            _default = Client()
        return _default


def reset_default_client(client: Client | None = None) -> None:
    """Forget the default client (after changing configuration), or install ``client``. The
    old one is closed unless it is ``client``."""
    global _default
    with _lock:
        old, _default = _default, client
    if old is not None and old is not client:
        old.close()


def close_default_client() -> bool:
    """Close the default client if one was made (queued cache writes land, pools and their
    threads go); the next use builds it again. What the CLI does before it exits. False when
    some storage handle could not be closed in time (see :meth:`Client.close`)."""
    global _default
    with _lock:
        old, _default = _default, None
    return old.close() if old is not None else True


def worker_client(settings: Settings) -> Client:
    """One client per process and settings, for work shipped to Dask workers with the
    caller's settings (staging, conversion): tasks on a worker share its connections, open
    handles and cache instead of each building their own."""
    key = repr(settings)
    with _lock:
        client = _workers.get(key)
        if client is None:
            client = _workers[key] = Client(settings)
        return client
