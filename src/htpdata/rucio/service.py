"""Talking to a Rucio server through the real ``rucio-clients``, with a metadata cache.

The Rucio client is configured exactly as the user's other Rucio tools are (``rucio.cfg``,
``RUCIO_CONFIG``, ``RUCIO_HOME``, account, userpass / x509 proxy / OIDC token): htpdata adds no
second place to configure it. Answers (DID types, file lists, replica lists) are kept on disk for
``rucio.metadata_ttl`` seconds, so opening 5000 files of a dataset costs one bulk call, and the
last answer is used when the server cannot be reached (``rucio.offline``), with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..atomic import write_atomically
from ..catalogs import FileEntry
from ..config import RucioSettings
from ..errors import AuthenticationError, HtpdataError, NameNotFoundError, ServiceUnavailableError
from ..replicas import Replica
from .convert import CompactRow, compact_row, did_name, file_entry, replicas_of, scope_name

__all__ = ["MetadataCache", "RucioService"]

log = logging.getLogger("htpdata.rucio")
T = TypeVar("T")


class _Depth(threading.local):
    depth = 0  # htpdata calls into Rucio running on this thread


class _Quiet(logging.Filter):
    """Drops what Rucio's client logs while htpdata's own calls run, on the calling thread.

    The client logs each failed request at ERROR on its own handler (logger ``baseclient``),
    and htpdata reports the same failure once, translated, with what to do. So during htpdata's
    calls (and only on the thread making them) those records are dropped, unless htpdata's own
    log is at DEBUG (``--debug``), when they pass as Rucio wrote them. Nothing else changes:
    no logger's level is touched, and the user's own Rucio calls, before, after or on other
    threads, log as they always do.
    """

    LOGGERS = ("baseclient", "rucio", "rucio.client.baseclient")

    def __init__(self) -> None:
        super().__init__()
        self._local = _Depth()
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                for name in self.LOGGERS:
                    logging.getLogger(name).addFilter(self)
                self._installed = True

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        self._local.depth += 1
        try:
            yield
        finally:
            self._local.depth -= 1

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._local.depth:
            return True
        return log.isEnabledFor(logging.DEBUG)


_QUIET = _Quiet()


class MetadataCache:
    """JSON answers on disk, one small file per question, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, key: str, ttl: float | None) -> tuple[Any, float] | None:
        """(value, age in seconds), or None if absent or older than ``ttl`` (None: any age)."""
        try:
            raw = json.loads(self._path(key).read_bytes())
        except (OSError, ValueError):
            return None
        age = time.time() - float(raw.get("t", 0))
        if ttl is not None and age > ttl:
            return None
        return raw.get("value"), age

    def put(self, key: str, value: Any) -> None:
        """Keep an answer (best effort: a cache that cannot be written is only slower)."""
        path = self._path(key)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps({"t": time.time(), "key": key, "value": value}))


class RucioService:
    def __init__(self, settings: RucioSettings, cache_dir: Path,
                 client_factory: Callable[[], Any] | None = None,
                 schemes: Sequence[str] = ("root", "davs", "https", "http")) -> None:
        self.settings = settings
        self.schemes = [s for s in schemes if s != "file"]
        self.meta = MetadataCache(cache_dir)
        self._factory = client_factory
        self._client: Any = None
        self._host: str | None = None
        self._warned: set[str] = set()
        self._rows: dict[tuple[str, str], CompactRow] = {}
        """Replica rows learnt from answers, for resolving their files later without asking."""
        self._unindexed: list[list[CompactRow]] = []
        """Whole-dataset answers not yet in ``_rows``: indexed on the first lookup, so that
        resolving a dataset does not pay for an index only single-file lookups use."""
        self._lock = threading.Lock()

    # -- the rucio client, and its errors ---------------------------------------------------
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._call(self._make_client, "connect to Rucio", "")
            return self._client

    def _make_client(self) -> Any:
        _QUIET.install()
        if self._factory is not None:
            return self._factory()
        try:
            from rucio.client import Client
        except ImportError as exc:
            raise ServiceUnavailableError(
                "Rucio DIDs need the Rucio client: pip install 'htpdata[rucio]'") from exc
        return Client()

    @property
    def host(self) -> str:
        """Which Rucio server (and account) answers are cached for, known without connecting."""
        if self._host is None:
            self._host = _server_id()
        return self._host

    def _call(self, fn: Callable[[], T], what: str, did: str) -> T:
        """Run ``fn`` and turn Rucio's exceptions into htpdata's, in this one place. What the
        Rucio client logs meanwhile, on this thread, is htpdata's to report (see _Quiet)."""
        try:
            with _QUIET.inside():
                return fn()
        except HtpdataError:
            raise
        except Exception as exc:
            raise _translate(exc, what, did) from exc

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # -- cached questions -----------------------------------------------------------------------
    def _ask(self, key: str, fetch: Callable[[], T], what: str, did: str) -> T:
        hit = self.meta.get(f"{self.host}|{key}", self.settings.metadata_ttl)
        if hit is not None:
            return hit[0]  # type: ignore[no-any-return]
        try:
            value = self._call(fetch, what, did)
        except ServiceUnavailableError as exc:
            stale = self.meta.get(f"{self.host}|{key}", None) if self.settings.offline else None
            if stale is None:
                raise
            self._warn_once("offline", f"Rucio unreachable ({exc}); using answers up to "
                       f"{stale[1] / 3600:.1f} h old from the metadata cache")
            return stale[0]  # type: ignore[no-any-return]
        self.meta.put(f"{self.host}|{key}", value)
        return value

    def dataset_replicas(self, scope: str, name: str) -> list[CompactRow]:
        """Replica rows of every file of a dataset or container: one streamed call (Rucio
        expands the collection), cached as one answer."""
        did = did_name(scope, name)
        key = (f"dsreplicas3|{scope}:{name}|{self.settings.rse_expression}|"
               f"{','.join(self.schemes)}")
        rows: list[CompactRow] = self._ask(
            key, lambda: self._list_replicas([(scope, name)]), "list replicas of", did)
        with self._lock:
            self._unindexed.append(rows)
        return rows

    def _known(self, d: tuple[str, str]) -> CompactRow | None:
        """The replica row of file DID ``d`` if an earlier answer had it."""
        if self._unindexed:
            with self._lock:
                pending, self._unindexed = self._unindexed, []
                for rows in pending:
                    for r in rows:
                        self._rows[scope_name(r)] = r
        return self._rows.get(d)

    def did_type(self, scope: str, name: str) -> str:
        """``FILE``, ``DATASET`` or ``CONTAINER``."""
        if self._known((scope, name)) is not None:
            return "FILE"
        did = did_name(scope, name)
        return str(self._ask(f"type|{scope}:{name}",
                             lambda: str(self.client().get_did(scope, name)["type"]).upper(),
                             "look up", did))

    def files(self, scope: str, name: str) -> list[FileEntry]:
        """Every file of a dataset or container (one streamed call), or the file itself."""
        did = did_name(scope, name)

        def fetch() -> list[list[Any]]:
            return [[r["scope"], r["name"], r.get("bytes"), r.get("adler32")]
                    for r in self.client().list_files(scope, name)]

        if self.did_type(scope, name) == "FILE":
            return [self.replicas([(scope, name)])[(scope, name)][0]]
        rows = self._ask(f"files2|{scope}:{name}", fetch, "list the files of", did)
        return [file_entry(r) for r in rows]

    def replicas(self, dids: Sequence[tuple[str, str]], logical: dict[tuple[str, str], str]
                 | None = None) -> dict[tuple[str, str], tuple[FileEntry, list[Replica]]]:
        """Replicas of many files in bulk (``rucio.batch`` DIDs per call), from the metadata
        cache where fresh."""
        out: dict[tuple[str, str], tuple[FileEntry, list[Replica]]] = {}
        missing: list[tuple[str, str]] = []
        for d in dids:
            known = self._known(d)
            if known is not None:
                out[d] = self._row(known, logical)
                continue
            hit = self.meta.get(self._replica_key(d),
                                self.settings.metadata_ttl)
            if hit is None:
                missing.append(d)
            else:
                out[d] = self._row(hit[0], logical)
        for i in range(0, len(missing), max(1, self.settings.batch)):
            batch = missing[i:i + self.settings.batch]

            def ask(b: list[tuple[str, str]] = batch) -> list[CompactRow]:
                return self._list_replicas(b)

            try:
                rows = self._call(ask, "list replicas of", did_name(*batch[0])
                                  if len(batch) == 1 else f"{len(batch)} files")
            except ServiceUnavailableError:
                if not self.settings.offline:
                    raise
                rows = []
                for d in batch:
                    stale = self.meta.get(self._replica_key(d), None)
                    if stale is None:
                        raise
                    rows.append(stale[0])
                self._warn_once("offline", "Rucio unreachable; using replica lists from the "
                           "metadata cache")
            for row in rows:
                d = scope_name(row)
                self.meta.put(self._replica_key(d), row)
                self._rows[d] = row  # a file: resolving it again asks nothing
                out[d] = self._row(row, logical)
        for d in dids:
            if d not in out:
                raise NameNotFoundError(did_name(*d), "no such file DID in Rucio")
        return out

    def _replica_key(self, d: tuple[str, str]) -> str:
        return (f"{self.host}|replicas3|{d[0]}:{d[1]}|{self.settings.rse_expression}|"
                f"{','.join(self.schemes)}")

    def _list_replicas(self, batch: Iterable[tuple[str, str]]) -> list[CompactRow]:
        # geoip sorting costs ~1.5 ms per file and htpdata orders replicas itself anyway
        kwargs: dict[str, Any] = {"sort": "random", "schemes": list(self.schemes)}
        if self.settings.rse_expression:
            kwargs["rse_expression"] = self.settings.rse_expression
        rows = self.client().list_replicas([{"scope": s, "name": n} for s, n in batch], **kwargs)
        return [compact_row(r) for r in rows]

    @staticmethod
    def _row(row: CompactRow, logical: dict[tuple[str, str], str] | None
             ) -> tuple[FileEntry, list[Replica]]:
        d = scope_name(row)
        name = (logical or {}).get(d)
        entry = file_entry(row)
        if name is not None:
            entry = FileEntry(name, entry.size, entry.adler32)
        return entry, replicas_of(row, name)


def _server_id() -> str:
    """``rucio_host`` and account from the client configuration Rucio itself would read
    (``$RUCIO_CONFIG``, else ``$RUCIO_HOME/etc/rucio.cfg``, else ``/opt/rucio/etc/rucio.cfg``)."""
    import configparser

    candidates = [os.environ.get("RUCIO_CONFIG", "")]
    if os.environ.get("RUCIO_HOME"):
        candidates.append(os.path.join(os.environ["RUCIO_HOME"], "etc", "rucio.cfg"))
    candidates.append("/opt/rucio/etc/rucio.cfg")
    for path in candidates:
        if path and os.path.isfile(path):
            cp = configparser.ConfigParser(interpolation=None)
            with contextlib.suppress(configparser.Error, OSError):
                cp.read(path)
                host = cp.get("client", "rucio_host", fallback="")
                account = os.environ.get("RUCIO_ACCOUNT") or cp.get("client", "account",
                                                                      fallback="")
                return f"{host}#{account}"
    return os.environ.get("RUCIO_HOST", "")


def _translate(exc: BaseException, what: str, did: str) -> HtpdataError:
    kind = type(exc).__name__
    text = str(exc).strip().replace("\n", " ") or kind
    where = f" {did}" if did else ""
    if kind in ("DataIdentifierNotFound", "RSENotFound"):
        return NameNotFoundError(did or "?", f"not found in Rucio ({text})")
    if kind == "ScopeNotFound":
        return NameNotFoundError(did or "?", f"unknown Rucio scope ({text})")
    if kind in ("CannotAuthenticate", "AccessDenied", "CannotAuthorize"):
        return AuthenticationError(f"Rucio refused the credentials when trying to {what}"
                                   f"{where}: {text}")
    if kind == "ConfigNotFound":  # not an outage; still unavailable, so fallbacks apply
        return ServiceUnavailableError(f"could not {what}{where}: no Rucio client "
                                       "configuration (set RUCIO_CONFIG or RUCIO_HOME, or "
                                       f"rucio.enabled = false): {text}")
    if kind in ("ServiceUnavailable", "ServerConnectionException", "ConnectionError",
                "ConnectTimeout", "ReadTimeout", "MissingClientParameter") or isinstance(
                    exc, OSError | ConnectionError | TimeoutError):
        return ServiceUnavailableError(f"could not {what}{where}: Rucio is not reachable "
                                       f"({kind}: {text})")
    return ServiceUnavailableError(f"could not {what}{where}: Rucio said {kind}: {text}")
