"""Every error htpdata raises, in one place.

Each class also subclasses the builtin that fits, so code written for fsspec and uproot (which
catch ``FileNotFoundError``, ``PermissionError``, ``TimeoutError``, ``OSError``) keeps working::

    HtpdataError
    ├── InvalidNameError            (ValueError)       a name that cannot be parsed
    │   └── UnknownNamespaceError                      ``foo:/x`` where no catalog declares ``foo``
    ├── CatalogError                (ValueError)       a malformed catalog file (file, key, line)
    ├── ConfigError                 (ValueError)       a malformed setting (source, key)
    ├── NameNotFoundError           (FileNotFoundError) no catalog rule, DID or dataset for a name
    ├── ServiceUnavailableError     (ConnectionError)  Rucio unreachable or failing
    ├── AuthenticationError         (PermissionError)  Rucio or a token issuer refused us
    ├── StorageError                (OSError)          a storage server refused or failed
    │   ├── StorageNotFoundError    (FileNotFoundError)
    │   ├── StoragePermissionError  (PermissionError)
    │   ├── StorageExistsError      (FileExistsError)  exclusive create of an existing file
    │   ├── StorageIsADirectoryError (IsADirectoryError) a folder where a file is needed
    │   ├── StorageTimeoutError     (TimeoutError)     no progress within the configured timeout
    │   │   └── StorageTooSlowError                    progress below replicas.slow_floor
    │   ├── StorageUnavailableError (ConnectionError)  connection refused, dropped, server gone
    │   └── ReplicasExhaustedError                     every replica was tried; lists the attempts
    │       ├── NoReplicaFoundError (FileNotFoundError) ... and none of them had the file
    │       ├── ReplicasDeniedError (PermissionError)  ... and every one refused our credentials
    │       ├── ReplicasTimedOutError (TimeoutError)   ... and every one timed out
    │       └── NotAFileError       (IsADirectoryError) ... and each of them is a folder
    ├── ChecksumMismatchError       (OSError)          bytes that do not match their adler32
    ├── UsageError                  (ValueError)       a request that cannot be done as asked
    ├── CacheWriteError             (OSError)          a cache tier cannot store bytes (internal:
    │                                                  reads go on uncached with one warning)
    ├── CopyError                   (OSError)          htpdata cp: the destination cannot take it
    ├── StageRefusedError           (OSError)          a stage that would not fit (tier, quota)
    ├── OperatorOnlyError           (PermissionError)  an operator's command run by someone else
    ├── GatewayError                (OSError)          no gateway running, its port taken, its
    │                                                  state file unsafe (``htpdata serve``)
    └── ConversionError             (ValueError)       a conversion that cannot be done
        └── ColumnNotFoundError     (KeyError)         a column pattern that matches nothing

``exit_code`` on each class is the one table of CLI exit codes (docs/errors.md shows it).
Backend exceptions and statuses are translated in one place, :mod:`htpdata.transports.base`,
through one table per protocol (XRootD client and server codes, HTTP statuses), the message
read last. Messages never contain secrets: they pass through :func:`htpdata._redact.redact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._redact import redact

__all__ = [
    "Attempt",
    "AuthenticationError",
    "CacheWriteError",
    "CatalogError",
    "ChecksumMismatchError",
    "ColumnNotFoundError",
    "ConfigError",
    "ConversionError",
    "CopyError",
    "GatewayError",
    "HtpdataError",
    "InvalidNameError",
    "NameNotFoundError",
    "NoReplicaFoundError",
    "NotAFileError",
    "OperatorOnlyError",
    "ReplicasDeniedError",
    "ReplicasExhaustedError",
    "ReplicasTimedOutError",
    "ServiceUnavailableError",
    "StageRefusedError",
    "StorageError",
    "StorageExistsError",
    "StorageIsADirectoryError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "StorageTimeoutError",
    "StorageTooSlowError",
    "StorageUnavailableError",
    "UnknownNamespaceError",
    "UsageError",
    "exhausted",
]


class HtpdataError(Exception):
    """Base of every htpdata error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other constructor arguments than ``args``; rebuild from state so the
        # errors cross process boundaries (Dask workers, multiprocessing) intact.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[HtpdataError], message: str, state: dict[str, object]) -> HtpdataError:
    err = cls.__new__(cls)
    err.args = (message,)
    err.__dict__.update(state)
    return err


class InvalidNameError(HtpdataError, ValueError):
    """A name that cannot be parsed; ``part`` is the offending piece."""

    exit_code = 2

    def __init__(self, name: str, reason: str, part: str | None = None) -> None:
        self.name = name
        self.reason = reason
        self.part = part
        where = f" (offending part: {part!r})" if part is not None else ""
        super().__init__(f"invalid name {name!r}: {reason}{where}")


class UnknownNamespaceError(InvalidNameError):
    """A logical name whose namespace no catalog declares."""

    def __init__(self, name: str, namespace: str, known: Sequence[str]) -> None:
        import difflib

        self.namespace = namespace
        self.known = list(known)
        hint = ", ".join(sorted(self.known)) or "none"
        near = difflib.get_close_matches(namespace.lower(), sorted(self.known), n=1, cutoff=0.5)
        mean = f"did you mean {near[0]!r}? " if near else ""
        super().__init__(name, f"unknown namespace {namespace!r}; {mean}known namespaces: "
                               f"{hint}", part=namespace)


class CatalogError(HtpdataError, ValueError):
    """A catalog file that is not valid. Names the file and the key (and line when known)."""

    exit_code = 7

    def __init__(self, path: str, problem: str, key: str | None = None,
                 line: int | None = None) -> None:
        self.path = path
        self.problem = problem
        self.key = key
        self.line = line
        loc = path + (f":{line}" if line is not None else "")
        at = f" at {key}" if key else ""
        super().__init__(f"catalog {loc}{at}: {problem}")


class ConfigError(HtpdataError, ValueError):
    """A setting with a wrong type or value; names where it came from."""

    exit_code = 7

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        super().__init__(f"config {source}: {key}: {problem}")


class ServiceUnavailableError(HtpdataError, ConnectionError):
    """A catalog service (Rucio) could not be reached or failed."""

    exit_code = 6


class AuthenticationError(HtpdataError, PermissionError):
    """A service refused our credentials (wrong password, expired token or proxy)."""

    exit_code = 4


class NameNotFoundError(HtpdataError, FileNotFoundError):
    """The catalogs know the namespace but have no rule, file or dataset for this name."""

    exit_code = 3

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"{name}: {reason}")


class StorageError(HtpdataError, OSError):
    """A storage server failed. Carries the logical name, the replica URL, what the server said
    (``status``) and its status code (``code``: the XRootD server's ``kXR_*`` error number or
    the XRootD client's error code, or the HTTP status), when there is one."""

    exit_code = 6

    def __init__(self, message: str, *, name: str | None = None, url: str | None = None,
                 status: str | None = None, code: int | None = None) -> None:
        self.name = name
        self.url = redact(url) if url else url
        self.status = status
        self.code = code
        parts = [message]
        if url:
            parts.append(f"replica {self.url}")
        if name and name != url:
            parts.append(f"name {name}")
        if status:
            parts.append(f"server said: {status}")
        super().__init__("; ".join(parts))


class StorageNotFoundError(StorageError, FileNotFoundError):
    exit_code = 3


class StoragePermissionError(StorageError, PermissionError):
    exit_code = 4


class StorageExistsError(StorageError, FileExistsError):
    """A write that must not overwrite found the file already there."""

    exit_code = 1


class StorageIsADirectoryError(StorageError, IsADirectoryError):
    """A folder where a file is needed (``htpdata cat`` or ``cp`` of a folder)."""

    exit_code = 2


class StorageTimeoutError(StorageError, TimeoutError):
    exit_code = 5


class StorageTooSlowError(StorageTimeoutError):
    """A replica kept answering, but slower than ``replicas.slow_floor``: left for the next
    one (internal to failover; it shows in the attempts of a final error)."""


class StorageUnavailableError(StorageError, ConnectionError):
    exit_code = 6


@dataclass(frozen=True)
class Attempt:
    """One replica tried on the way to a failure."""

    url: str
    site: str
    error: StorageError

    def describe(self) -> str:
        kind = type(self.error).__name__.removeprefix("Storage").removesuffix("Error")
        detail = self.error.status or self.error.message
        return f"{self.site} {redact(self.url)} -> {kind}: {detail}"


class ReplicasExhaustedError(StorageUnavailableError):
    """Every replica of a name failed. ``attempts`` lists each one and why."""

    def __init__(self, name: str, attempts: Sequence[Attempt], what: str = "open") -> None:
        self.attempts = list(attempts)
        tried = "; ".join(a.describe() for a in self.attempts) or "no replicas"
        super().__init__(f"could not {what} {name}: all {len(self.attempts)} replica(s) failed "
                         f"[{tried}]")
        self.name = name


class NoReplicaFoundError(ReplicasExhaustedError, FileNotFoundError):
    """Every replica answered that the file does not exist."""

    exit_code = 3


class ReplicasDeniedError(ReplicasExhaustedError, StoragePermissionError):
    """Every replica refused access: no credential, or one it does not accept (an expired or
    foreign token, a scope that does not cover the file)."""

    exit_code = 4


class ReplicasTimedOutError(ReplicasExhaustedError, TimeoutError):
    """Every replica timed out: the file may well exist; a longer timeout may do."""

    exit_code = 5


class NotAFileError(ReplicasExhaustedError, IsADirectoryError):
    """Every replica of a name is a folder: it cannot be read as a file."""

    exit_code = 2

    def __init__(self, name: str, attempts: Sequence[Attempt], what: str = "open") -> None:
        super().__init__(name, attempts, what)
        self.message = redact(f"{name}: is a folder, not a file (htpdata ls lists it)")
        self.args = (self.message,)


def exhausted(name: str, attempts: Sequence[Attempt], what: str = "open") -> ReplicasExhaustedError:
    """The right 'all replicas failed' error: not-found, denied, not-a-file or timed-out if
    every replica said so."""
    if attempts and all(isinstance(a.error, FileNotFoundError) for a in attempts):
        return NoReplicaFoundError(name, attempts, what)
    if attempts and all(isinstance(a.error, PermissionError) for a in attempts):
        return ReplicasDeniedError(name, attempts, what)
    if attempts and all(isinstance(a.error, IsADirectoryError) for a in attempts):
        return NotAFileError(name, attempts, what)
    if attempts and all(isinstance(a.error, TimeoutError) for a in attempts):
        return ReplicasTimedOutError(name, attempts, what)
    return ReplicasExhaustedError(name, attempts, what)


class ChecksumMismatchError(HtpdataError, OSError):
    """Bytes whose adler32 is not the one the catalog or the server reported."""

    exit_code = 8

    def __init__(self, name: str, expected: str, actual: str, where: str = "") -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        at = f" ({where})" if where else ""
        super().__init__(f"{name}: adler32 mismatch{at}: expected {expected}, got {actual}")


class UsageError(HtpdataError, ValueError):
    """A request that cannot be done as asked: contradictory options (a soft quota above the
    hard one), or a choice htpdata cannot make for you (which tree, when a file has several).
    The message says what to pass instead."""

    exit_code = 2


class CacheWriteError(HtpdataError, OSError):
    """A cache tier could not store bytes (full, read-only, gone, refused). Internal to the
    read path: the cache reports it once and reads go on uncached; ``htpdata stage`` reports it
    as the reason a file could not be staged."""

    exit_code = 11

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_
        self.strerror = message


class GatewayError(HtpdataError, OSError):
    """The HTTP gateway (``htpdata serve``) cannot be started, found or used: none is running,
    its port is taken by another program, or its state file is not safe to trust."""

    exit_code = 12
class StageRefusedError(HtpdataError, OSError):
    """The stage would not fit in the tier or the user's quota (nothing was fetched)."""

    exit_code = 9


class OperatorOnlyError(HtpdataError, PermissionError):
    """Only the tier's owner (or root) may do this."""

    exit_code = 4


class ConversionError(HtpdataError, ValueError):
    """A conversion that cannot be done: not a ROOT file, not a tree, an unsupported type."""

    exit_code = 10


class ColumnNotFoundError(ConversionError, KeyError):
    """A column pattern that matches no column of the file; ``near`` are the closest names."""

    def __init__(self, source: str, pattern: str, near: Sequence[str]) -> None:
        self.source = source
        self.pattern = pattern
        self.near = list(near)
        hint = f"; did you mean {', '.join(self.near)}?" if self.near else ""
        super().__init__(f"{source}: no column matches {pattern!r}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class CopyError(HtpdataError, OSError):
    """The destination cannot take the file: it exists (without ``force``), the folder is
    missing, no space or no permission. Exit code 50, as ``xrdcp`` uses for local errors."""

    exit_code = 50
