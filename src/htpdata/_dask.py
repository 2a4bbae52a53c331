"""Connecting to a Dask scheduler for ``stage`` and ``convert``: fail fast, in one line.

distributed retries a connection until its connect timeout (30 s by default) and then raises a
bare ``OSError``; a malformed address is a ``ValueError`` from deep inside it. Both become
htpdata errors here: a bad address is a :class:`~htpdata.errors.UsageError` (exit 2), a
scheduler that does not answer within ``timeout`` seconds a
:class:`~htpdata.errors.ServiceUnavailableError` (exit 6).
"""

from __future__ import annotations

import socket
from typing import Any

from .errors import ServiceUnavailableError, UsageError

__all__ = ["CONNECT_TIMEOUT", "connect"]


def _probe(address: str, timeout: float) -> None:
    """A refused TCP connection is known at once; distributed would retry it for ``timeout``."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("", "tcp") or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except ConnectionRefusedError:
        raise ServiceUnavailableError(f"Dask scheduler {address}: connection refused (is the "
                                      "scheduler running, on this port?)") from None
    except OSError:
        return  # unresolvable or filtered: distributed says what it finds

CONNECT_TIMEOUT = 5.0


def connect(dask: Any, timeout: float = CONNECT_TIMEOUT) -> tuple[Any, bool]:
    """``(distributed.Client, owned)`` for a client (returned as is) or a scheduler address
    (connected here; ``owned``: the caller closes it)."""
    if not isinstance(dask, str):
        return dask, False
    try:
        from distributed import Client as DaskClient
    except ImportError:
        raise UsageError("--dask needs distributed: pip install 'htpdata[dask]'") from None
    _probe(dask, timeout)
    try:
        return DaskClient(dask, timeout=timeout), True
    except ValueError as exc:
        raise UsageError(f"Dask scheduler address {dask!r}: {exc}") from None
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailableError(
            f"Dask scheduler {dask} did not answer within {timeout:.0f} s "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no reply'})"
        ) from None
