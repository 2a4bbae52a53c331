"""The transport contract, and the one place backend exceptions become htpdata errors.

A transport reads and writes physical URLs of one family of schemes. It is small on purpose:
the file-level logic (failover, caching) sits above it and talks to every backend the same way.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from .._redact import redact
from ..errors import (
    HtpdataError,
    StorageError,
    StorageExistsError,
    StorageNotFoundError,
    StoragePermissionError,
    StorageTimeoutError,
    StorageUnavailableError,
)

__all__ = ["Transport", "translate"]


class Transport(Protocol):
    """What every backend provides; ``url`` is always a full physical URL."""

    schemes: tuple[str, ...]

    def info(self, url: str) -> dict[str, Any]:
        """``{"name", "size", "type"}`` of a file or folder."""

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``[start, end)`` range, in order, in as few requests as possible."""

    def ls(self, url: str) -> list[dict[str, Any]]:
        """Entries of a folder as ``info`` dicts with full URLs as names."""

    def checksum(self, url: str) -> str | None:
        """The server's adler32 of the file, or None where the server cannot tell."""

    def filesystem(self, url: str) -> tuple[Any, str]:
        """An fsspec filesystem and path for writes passed straight through (put, open wb)."""


# XRootD error codes (XProtocol.hh) and the words its client uses, to error classes.
_XRD_CODES = {3011: StorageNotFoundError, 3010: StoragePermissionError,
              3005: StoragePermissionError, 3006: StorageError, 3018: StorageExistsError}
_XRD_WORDS = [
    (re.compile(r"file exists|already exists", re.I), StorageExistsError),
    (re.compile(r"no such file|not found|does not exist", re.I), StorageNotFoundError),
    (re.compile(r"permission denied|not authorized|unauthorized|auth.* fail", re.I),
     StoragePermissionError),
    (re.compile(r"operation expired|timed? ?out", re.I), StorageTimeoutError),
    (re.compile(r"connection|socket|network|invalid address|stream|broken pipe|reset|refused"
                r"|unreachable|server .*closed|\[FATAL\]", re.I), StorageUnavailableError),
]


def _status(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.replace("\n", " "))


def translate(exc: BaseException, url: str, name: str | None = None,
              what: str = "read") -> HtpdataError:
    """Map any backend exception to the matching :class:`~htpdata.errors.StorageError`."""
    if isinstance(exc, HtpdataError):
        return exc
    status = _status(exc)
    msg = f"{what} failed"
    try:
        import httpx
    except ImportError:  # pragma: no cover
        httpx = None  # type: ignore[assignment]
    if httpx is not None and isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        cls: type[StorageError] = {404: StorageNotFoundError, 410: StorageNotFoundError,
                                   401: StoragePermissionError, 403: StoragePermissionError,
                                   408: StorageTimeoutError, 504: StorageTimeoutError,
                                   }.get(code, StorageUnavailableError if code >= 500
                                         else StorageError)
        return cls(msg, name=name, url=url, status=f"HTTP {code} {exc.response.reason_phrase}")
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return StorageTimeoutError(msg, name=name, url=url, status=status)
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return StorageUnavailableError(msg, name=name, url=url, status=status)
    if isinstance(exc, FileExistsError):
        return StorageExistsError(msg, name=name, url=url, status=status)
    if isinstance(exc, FileNotFoundError):
        return StorageNotFoundError(msg, name=name, url=url, status=status)
    if isinstance(exc, PermissionError):
        return StoragePermissionError(msg, name=name, url=url, status=status)
    if isinstance(exc, TimeoutError | socket.timeout):
        return StorageTimeoutError(msg, name=name, url=url, status=status)
    if isinstance(exc, ConnectionError):
        return StorageUnavailableError(msg, name=name, url=url, status=status)
    m = re.search(r"\[(\d{4})\]", status)
    if m and int(m.group(1)) in _XRD_CODES:
        return _XRD_CODES[int(m.group(1))](msg, name=name, url=url, status=status)
    for pattern, cls in _XRD_WORDS:
        if pattern.search(status):
            return cls(msg, name=name, url=url, status=status)
    return StorageError(msg, name=name, url=url, status=status)
