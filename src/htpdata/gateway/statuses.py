"""Which HTTP status each htpdata error becomes: one table, read top to bottom.

ROOT's HTTP client prints the status line's code and reason (``... Forbidden (403)``), and
treats 404 as "does not exist"; a ``500`` answer to its first ``HEAD`` would make it switch to a
long-gone Apache ``mod_root`` protocol, so internal errors on ``HEAD`` are answered ``503``.
The reason phrase is the error's own message (secrets masked, one line), so the user sees why.
"""

from __future__ import annotations

from ..errors import (
    AuthenticationError,
    ChecksumMismatchError,
    HtpdataError,
    InvalidNameError,
    NameNotFoundError,
    ReplicasExhaustedError,
    ServiceUnavailableError,
    StorageError,
    StorageTimeoutError,
    UnknownNamespaceError,
)

__all__ = ["STATUS_TABLE", "reason_phrase", "status_for"]

STATUS_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownNamespaceError, 404),   # "foo:/x": no catalog knows the namespace
    (InvalidNameError, 400),        # a path that is no name at all
    (NameNotFoundError, 404),       # no catalog rule, file or DID
    (FileNotFoundError, 404),       # every replica said "no such file"
    (IsADirectoryError, 404),       # a folder where a file is needed
    (AuthenticationError, 403),     # Rucio refused the user's credentials
    (PermissionError, 403),         # storage refused the user's token or proxy
    (StorageTimeoutError, 504),     # upstream stopped answering within the timeout
    (TimeoutError, 504),
    (ChecksumMismatchError, 502),   # upstream sent bytes that are not the file's
    (ServiceUnavailableError, 502),  # Rucio unreachable
    (StorageError, 502),            # upstream refused or failed (all replicas tried)
)


def status_for(exc: BaseException, method: str = "GET") -> int:
    """The HTTP status for an error raised while answering a request."""
    if isinstance(exc, ReplicasExhaustedError) and exc.attempts and all(
            isinstance(a.error, TimeoutError) for a in exc.attempts):
        return 504  # every replica timed out: a gateway timeout, not a bad gateway
    for cls, status in STATUS_TABLE:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, HtpdataError | OSError):
        return 502
    return 503 if method == "HEAD" else 500


def reason_phrase(exc: BaseException, limit: int = 300) -> str:
    """One line for the status line: the message, control characters and secrets removed."""
    from .._redact import redact

    text = redact(str(exc)) or type(exc).__name__
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
