"""The transport contract, and the one place backend failures become htpdata errors.

A transport reads and writes physical URLs of one family of schemes. It is small on purpose:
the file-level logic (failover, caching) sits above it and talks to every backend the same way.

Failures are translated here, by status code first and by message last:

- :func:`xrootd_error` turns an XRootD status (``XRootDStatus``: ``code`` is the client's error,
  ``errno`` the server's ``kXR_*`` error number when the server answered with an error) into an
  error through :data:`XROOTD_SERVER_CODES` and :data:`XROOTD_CLIENT_CODES`; the XRootD
  transport raises with it wherever it holds a status;
- :func:`translate` turns any backend exception into an error: HTTP statuses (httpx, webdav4)
  through :data:`HTTP_STATUSES`, Python's own ``OSError`` kinds, a ``[3011]``-style code in the
  message of libraries that flatten statuses into text (fsspec-xrootd) through the server
  table, and only then words in the message (:data:`MESSAGE_WORDS`).
"""

from __future__ import annotations

import re
import sys
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

__all__ = ["HTTP_STATUSES", "MESSAGE_WORDS", "XROOTD_CLIENT_CODES", "XROOTD_SERVER_CODES",
           "Transport", "http_error", "translate", "xrootd_error"]


class Transport(Protocol):
    """What every backend provides; ``url`` is always a full physical URL.

    The first five operations are required. The last four are optional: their defaults here do
    nothing, and a backend that keeps open files or connections (XRootD, HTTP) overrides them.
    Backends subclass this class explicitly, so they inherit the defaults and mypy checks that
    the required ones are there; callers call every operation directly, never probing.
    """

    schemes: tuple[str, ...]

    def info(self, url: str) -> dict[str, Any]:
        """``{"name", "size", "type"}`` of a file or folder."""
        ...

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``[start, end)`` range, in order, in as few requests as possible."""
        ...

    def ls(self, url: str) -> list[dict[str, Any]]:
        """Entries of a folder as ``info`` dicts with full URLs as names."""
        ...

    def checksum(self, url: str) -> str | None:
        """The server's adler32 of the file, or None where the server cannot tell."""
        ...

    def filesystem(self, url: str) -> tuple[Any, str]:
        """An fsspec filesystem and path for writes passed straight through (put, open wb)."""
        ...

    # -- optional: no-ops unless the backend keeps something open ---------------------------
    def prepare(self, url: str) -> None:
        """Get ready to read ``url`` soon (XRootD opens the file and keeps the handle)."""
        return

    def release(self, url: str) -> None:
        """Done with ``url`` for now: what is kept open for it may be closed."""
        return

    def forget(self, url: str) -> None:
        """``url`` was rewritten: drop anything that remembers its old content or size."""
        return

    def close(self) -> bool:
        """Close every connection, handle and thread this transport holds; False when some
        could not be closed in time (a dead server) and may still be open."""
        return True


# -- XRootD -----------------------------------------------------------------------------------
# Server error numbers (XProtocol.hh, enum XErrorCode), carried by statuses whose client code
# is errErrorResponse (400). Not listed: a plain StorageError (the server refused; another
# replica may not).
XROOTD_SERVER_CODES: dict[int, type[StorageError]] = {
    3003: StorageUnavailableError,   # kXR_FileLocked
    3005: StorageError,              # kXR_FSError (the server's filesystem failed)
    3007: StorageUnavailableError,   # kXR_IOError
    3008: StorageUnavailableError,   # kXR_NoMemory
    3009: StorageError,              # kXR_NoSpace
    3010: StoragePermissionError,    # kXR_NotAuthorized
    3011: StorageNotFoundError,      # kXR_NotFound
    3012: StorageUnavailableError,   # kXR_ServerError
    3014: StorageUnavailableError,   # kXR_noserver (a redirector found no data server)
    3018: StorageExistsError,        # kXR_ItExists
    3021: StoragePermissionError,    # kXR_overQuota
    3024: StorageUnavailableError,   # kXR_Overloaded
    3025: StoragePermissionError,    # kXR_fsReadOnly
    3028: StoragePermissionError,    # kXR_TLSRequired
    3029: StorageNotFoundError,      # kXR_noReplicas
    3030: StoragePermissionError,    # kXR_AuthFailed
    3034: StorageTimeoutError,       # kXR_ReqTimedOut
    3035: StorageTimeoutError,       # kXR_TimerExpired
}
KXR_IS_DIRECTORY = 3016  # opening a folder as a file
XRD_ERROR_RESPONSE = 400  # the client's code for "the server answered with an error"

# Client error codes (XrdCl/XrdClStatus.hh, also XRootDStatus.err* in pyxrootd).
XROOTD_CLIENT_CODES: dict[int, type[StorageError]] = {
    101: StorageUnavailableError,    # errInvalidAddr
    102: StorageUnavailableError,    # errSocketError
    103: StorageTimeoutError,        # errSocketTimeout
    104: StorageUnavailableError,    # errSocketDisconnected
    107: StorageUnavailableError,    # errStreamDisconnect
    108: StorageUnavailableError,    # errConnectionError
    109: StorageUnavailableError,    # errInvalidSession
    110: StorageUnavailableError,    # errTlsError
    202: StorageUnavailableError,    # errHandShakeFailed
    203: StoragePermissionError,     # errLoginFailed
    204: StoragePermissionError,     # errAuthFailed
    206: StorageTimeoutError,        # errOperationExpired
    207: StorageUnavailableError,    # errOperationInterrupted
    304: StorageNotFoundError,       # errNotFound
    306: StorageUnavailableError,    # errRedirectLimit
}


def xrootd_error(status: Any, url: str, name: str | None = None,
                 what: str = "read") -> StorageError:
    """The error for a failed XRootD status (``status.ok`` is false), by its codes."""
    code = int(status.code)
    server = int(status.errno or 0) if code == XRD_ERROR_RESPONSE else 0
    text = _text(str(status.message))
    cls = XROOTD_SERVER_CODES.get(server) if server else XROOTD_CLIENT_CODES.get(code)
    if cls is None:
        cls = _by_words(text) or (StorageError if server else StorageUnavailableError)
    return cls(f"{what} failed", name=name, url=url, status=text, code=server or code)


# -- HTTP -------------------------------------------------------------------------------------
HTTP_STATUSES: dict[int, type[StorageError]] = {
    401: StoragePermissionError,
    403: StoragePermissionError,
    404: StorageNotFoundError,
    405: StoragePermissionError,     # a method the server does not allow here (a write)
    408: StorageTimeoutError,
    410: StorageNotFoundError,
    412: StorageExistsError,         # an exclusive create (If-None-Match) found the file
    423: StorageUnavailableError,    # locked
    429: StorageUnavailableError,    # too many requests
    502: StorageUnavailableError,
    503: StorageUnavailableError,
    504: StorageTimeoutError,
    507: StorageError,               # insufficient storage
}


def http_error(code: int, reason: str, url: str, name: str | None = None,
               what: str = "read") -> StorageError:
    """The error for an HTTP status that is not a success."""
    cls = HTTP_STATUSES.get(code) or (StorageUnavailableError if code >= 500 else StorageError)
    return cls(f"{what} failed", name=name, url=url, status=f"HTTP {code} {reason}".strip(),
               code=code)


# -- anything else --------------------------------------------------------------------------
# Words in a message, for backends that give nothing better (the last resort).
MESSAGE_WORDS: list[tuple[re.Pattern[str], type[StorageError]]] = [
    (re.compile(r"file exists|already exists", re.I), StorageExistsError),
    (re.compile(r"no such file|not found|does not exist", re.I), StorageNotFoundError),
    (re.compile(r"permission denied|not authorized|unauthorized|auth.* fail", re.I),
     StoragePermissionError),
    (re.compile(r"operation expired|timed? ?out", re.I), StorageTimeoutError),
    (re.compile(r"connection|socket|network|invalid address|stream|broken pipe|reset|refused"
                r"|unreachable|server .*closed|\[FATAL\]", re.I), StorageUnavailableError),
]
_CODE_IN_TEXT = re.compile(r"\[(\d{4})\]")


def _text(message: str) -> str:
    return redact(message.strip().replace("\n", " "))


def _by_words(text: str) -> type[StorageError] | None:
    for pattern, cls in MESSAGE_WORDS:
        if pattern.search(text):
            return cls
    return None


# Python's own exception kinds; the most specific first.
_BUILTIN: list[tuple[type[BaseException], type[StorageError]]] = [
    (FileExistsError, StorageExistsError),
    (FileNotFoundError, StorageNotFoundError),
    (PermissionError, StoragePermissionError),
    (TimeoutError, StorageTimeoutError),
    (ConnectionError, StorageUnavailableError),
]


def translate(exc: BaseException, url: str, name: str | None = None,
              what: str = "read") -> HtpdataError:
    """Map any backend exception to the matching :class:`~htpdata.errors.StorageError`
    (htpdata's own errors pass through unchanged)."""
    if isinstance(exc, HtpdataError):
        return exc
    response = _http_response(exc)
    if response is not None:
        return http_error(int(response.status_code), str(response.reason_phrase), url, name,
                          what)
    text = _text(str(exc)) or type(exc).__name__
    msg = f"{what} failed"
    httpx = sys.modules.get("httpx")  # an httpx error needs httpx imported: never import it
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return StorageTimeoutError(msg, name=name, url=url, status=text)
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return StorageUnavailableError(msg, name=name, url=url, status=text)
    webdav = sys.modules.get("webdav4.client")
    if webdav is not None and isinstance(exc, webdav.ResourceNotFound):
        return StorageNotFoundError(msg, name=name, url=url, status=text)
    if webdav is not None and isinstance(exc, webdav.ResourceAlreadyExists):
        return StorageExistsError(msg, name=name, url=url, status=text)
    if webdav is not None and isinstance(exc, webdav.ForbiddenOperation):
        return StoragePermissionError(msg, name=name, url=url, status=text)
    for kind, cls in _BUILTIN:
        if isinstance(exc, kind):
            return cls(msg, name=name, url=url, status=text)
    m = _CODE_IN_TEXT.search(text)
    code = int(m.group(1)) if m else None
    found = XROOTD_SERVER_CODES.get(code) if code is not None else None
    return (found or _by_words(text) or StorageError)(msg, name=name, url=url, status=text,
                                                       code=code)


def _http_response(exc: BaseException) -> Any:
    """The HTTP response an httpx or webdav4 status error carries, if ``exc`` is one."""
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPStatusError):
        return exc.response
    webdav = sys.modules.get("webdav4.client")
    if webdav is not None and isinstance(exc, webdav.HTTPError):
        return exc.response
    return None
