"""Bearer tokens that change while htpdata works: re-read, refreshed, handed on as a path.

WLCG access tokens live about 20 minutes; a stage or a Dask analysis lasts longer. So a token is
never read once and kept:

- :class:`TokenSource` re-reads its file when the file changes (inode, size or mtime differ:
  htgettoken and oidc-agent replace it) and when the token is within ``margin`` seconds of its
  ``exp``. The JWT payload is decoded without verifying it (:func:`jwt_claims`): the server
  verifies; htpdata only needs to know when to look again.
- After a 401/403 the caller asks :meth:`TokenSource.renew` once; it re-reads (and refreshes,
  if it can) and says whether the token changed, so the request is retried once with it.
- :class:`Refresher` runs the OAuth2 refresh grant (RFC 6749 section 6) against the issuer's
  token endpoint, found by OIDC discovery from the token's ``iss`` unless configured, when the
  environment holds a refresh token and client credentials (the facility's JupyterHub puts
  ``ACCESS_TOKEN`` and ``REFRESH_TOKEN`` there). The new access token is written atomically to a
  private (0600) file, which every transport then reads, XRootD's client through
  ``BEARER_TOKEN_FILE``; a rotated refresh token is kept next to it, also 0600. Processes that
  share the file (a client and its local Dask workers) refresh one at a time under a lock, and
  whoever comes second finds the fresh token already there.
- What leaves the process (Dask tasks, the gateway's environment) carries the token file's
  path, never a token (:meth:`TokenSource.shareable_path`).

The decisions (:func:`should_reread`, :func:`seconds_left`) are pure and tested on their own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._redact import register_secret
from ..atomic import write_atomically
from ..config import user_dir
from ..errors import AuthenticationError

__all__ = ["ENV_ACCESS", "ENV_CLIENT_ID", "ENV_CLIENT_SECRET", "ENV_REFRESH",
           "ENV_TOKEN_ENDPOINT", "FileSignature", "Refresher", "TokenSource", "jwt_claims",
           "outlasting", "seconds_left", "should_reread"]

ENV_ACCESS = "ACCESS_TOKEN"
ENV_REFRESH = "REFRESH_TOKEN"
ENV_CLIENT_ID = "OIDC_CLIENT_ID"
ENV_CLIENT_SECRET = "OIDC_CLIENT_SECRET"
ENV_TOKEN_ENDPOINT = "OIDC_TOKEN_ENDPOINT"

FileSignature = tuple[int, int, int]
"""``(inode, size, mtime in ns)`` of a token file: any change means it was rewritten."""


def jwt_claims(token: str | None) -> dict[str, Any] | None:
    """The payload of a JWT, decoded without checking its signature; None for a token that is
    not a JWT (an opaque token: it is then re-read only when its file changes)."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _exp(token: str | None) -> float | None:
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def seconds_left(exp: float | None, now: float) -> float | None:
    """Seconds until ``exp`` (negative once passed); None when the token says nothing."""
    return None if exp is None else exp - now


def should_reread(known: FileSignature | None, current: FileSignature | None,
                  exp: float | None, now: float, margin: float) -> bool:
    """Whether to read the token file again: it changed (or appeared, or went away), or the
    token it held is within ``margin`` seconds of expiring (or has expired)."""
    if known != current:
        return True
    left = seconds_left(exp, now)
    return left is not None and left <= margin


def outlasting(estimate: float, left: float | None, refreshable: bool) -> str | None:
    """The warning for a plan of ``estimate`` seconds when the token has ``left`` seconds to
    live, or None: a token that says nothing, can be refreshed, or lives long enough is no
    reason to warn."""
    if left is None or refreshable or estimate <= left:
        return None
    if left <= 0:
        return (f"the access token has expired; this plan (about {_span(estimate)}) will be "
                "refused unless its file is renewed")
    return (f"the access token expires in {_span(left)} but this plan may take about "
            f"{_span(estimate)}: renew its file meanwhile (htgettoken, oidc-agent) or reads "
            "will be refused after that")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _signature(path: Path) -> FileSignature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if token:
        register_secret(token)
    return token or None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (``.PATH.lock``), held while refreshing it."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Refresher:
    """The OAuth2 refresh grant for one client at one issuer.

    ``token_endpoint`` empty means OIDC discovery (``ISS/.well-known/openid-configuration``,
    ``ISS`` from the access token). ``client_secret`` empty means a public client (the id is
    sent in the form). The refresh token in use is the one kept in :attr:`refresh_path` when it
    exists (a provider that rotates refresh tokens invalidates the first), else ``refresh_token``.
    """

    client_id: str
    client_secret: str
    refresh_token: str
    token_endpoint: str = ""
    ca_file: str = ""
    """CA bundle the issuer's certificate is checked against (else ``ca_dir``, else the
    system store)."""
    ca_dir: str = ""
    timeout: float = 30.0

    def __repr__(self) -> str:  # never the secrets
        return f"Refresher(client_id={self.client_id!r}, endpoint={self.token_endpoint!r})"

    @classmethod
    def from_environ(cls, env: Mapping[str, str], client_id: str = "", token_endpoint: str = "",
                     ca_file: str = "", ca_dir: str = "", timeout: float = 30.0
                     ) -> Refresher | None:
        """The refresher the environment allows (``REFRESH_TOKEN`` and a client id from
        ``auth.client_id`` or ``$OIDC_CLIENT_ID``), else None."""
        refresh = env.get(ENV_REFRESH, "").strip()
        cid = client_id or env.get(ENV_CLIENT_ID, "").strip()
        if not refresh or not cid:
            return None
        secret = env.get(ENV_CLIENT_SECRET, "").strip()
        for value in (refresh, secret):
            if value:
                register_secret(value)
        return cls(cid, secret, refresh, token_endpoint or env.get(ENV_TOKEN_ENDPOINT, ""),
                   ca_file, ca_dir, timeout)

    @staticmethod
    def refresh_path(access_path: Path) -> Path:
        return access_path.with_name(access_path.name + ".refresh")

    def _endpoint(self, http: Any, access_token: str | None) -> str:
        if self.token_endpoint:
            return self.token_endpoint
        claims = jwt_claims(access_token) or {}
        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss.startswith(("https://", "http://")):
            raise AuthenticationError("cannot refresh the access token: no token endpoint "
                                      f"configured ({ENV_TOKEN_ENDPOINT} or "
                                      "auth.token_endpoint) and the token names no issuer")
        url = iss.rstrip("/") + "/.well-known/openid-configuration"
        try:
            resp = http.get(url)
            resp.raise_for_status()
            endpoint = resp.json()["token_endpoint"]
        except Exception as exc:
            raise AuthenticationError(f"OIDC discovery at {url} failed: "
                                      f"{type(exc).__name__}: {exc}") from None
        if not isinstance(endpoint, str):
            raise AuthenticationError(f"OIDC discovery at {url}: no token_endpoint")
        return endpoint

    def refresh(self, access_path: Path, current: str | None) -> str:
        """Get a new access token and write it to ``access_path`` (0600, atomic); returns it.
        Raises :class:`~htpdata.errors.AuthenticationError` when the issuer refuses."""
        import httpx

        refresh_file = self.refresh_path(access_path)
        refresh_token = _read(refresh_file) or self.refresh_token
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        auth: httpx.Auth | None = None
        if self.client_secret:
            auth = httpx.BasicAuth(self.client_id, self.client_secret)  # client_secret_basic
        else:
            form["client_id"] = self.client_id
        import ssl

        verify = ssl.create_default_context(cafile=self.ca_file or None,
                                            capath=self.ca_dir or None)
        with httpx.Client(verify=verify, timeout=self.timeout) as http:
            endpoint = self._endpoint(http, current)
            try:
                resp = (http.post(endpoint, data=form, auth=auth) if auth is not None
                        else http.post(endpoint, data=form))
            except httpx.HTTPError as exc:
                raise AuthenticationError(f"token refresh at {endpoint} failed: "
                                          f"{type(exc).__name__}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
            why = ": ".join(str(body[k]) for k in ("error", "error_description")
                            if body.get(k)) or resp.reason_phrase
            raise AuthenticationError(f"token refresh at {endpoint} refused: HTTP "
                                      f"{resp.status_code} {why}")
        access = str(body["access_token"])
        register_secret(access)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            register_secret(rotated)
            write_atomically(refresh_file, rotated + "\n", mode=0o600)
        write_atomically(access_path, access + "\n", mode=0o600)
        return access


class TokenSource:
    """The bearer token in use, kept current (thread-safe).

    Either a file (``path``; re-read on change and near ``exp``) or a value from the
    environment (``$BEARER_TOKEN``; never re-read). With a :class:`Refresher` the file is the
    one htpdata writes refreshed tokens to, refreshed ``margin`` seconds before ``exp``.
    """

    def __init__(self, path: Path | None = None, value: str | None = None,
                 label: str | None = None, refresher: Refresher | None = None,
                 margin: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.label = label or (str(path) if path else None)
        """Where the token comes from, safe to print."""
        self.refresher = refresher
        self.margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: FileSignature | None = None
        self._token = value
        self._value = value is not None
        self.reads = 0
        """How many times the file was read (what tests count)."""
        self.refreshes = 0
        if path is not None:
            self._reread()

    def __repr__(self) -> str:
        return f"TokenSource({self.label!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Never pickled with its token: the other side reads the file itself.
        path = self.shareable_path()
        return (TokenSource, (path, None, self.label if path else None))

    def _reread(self) -> None:
        assert self.path is not None
        self._signature = _signature(self.path)
        self._token = _read(self.path)
        self.reads += 1

    @property
    def expires(self) -> float | None:
        """The token's ``exp`` (seconds since the epoch), None if it does not say."""
        with self._lock:
            return _exp(self._token)

    def seconds_left(self) -> float | None:
        return seconds_left(self.expires, self._clock())

    def token(self) -> str | None:
        """The token to send now: the file is re-read if it changed or the token is about to
        expire, and refreshed then when htpdata can refresh it."""
        if self._value or self.path is None:
            return self._token
        with self._lock:
            now = self._clock()
            missing = self._token is None and self.refresher is not None
            if missing or should_reread(self._signature, _signature(self.path),
                                        _exp(self._token), now, self.margin):
                self._reread()
                self._refresh_if_due(now)
            return self._token

    def _refresh_if_due(self, now: float, force: bool = False) -> None:
        if self.refresher is None or self.path is None:
            return
        left = seconds_left(_exp(self._token), now)
        if not force and self._token is not None and (left is None or left > self.margin):
            return
        with _locked(self.path):
            used = self._token
            self._reread()  # another process may have refreshed while we waited
            left = seconds_left(_exp(self._token), self._clock())
            if self._token != used and left is not None and left > self.margin:
                return
            self._token = self.refresher.refresh(self.path, self._token)
            self._signature = _signature(self.path)
            self.refreshes += 1

    def renew(self, used: str | None) -> bool:
        """After the server refused ``used`` (401/403): read the file again, refreshing when
        possible; True when there is now another token worth one retry."""
        if self._value or self.path is None:
            return False
        with self._lock:
            self._reread()
            if self._token == used and self.refresher is not None:
                self._refresh_if_due(self._clock(), force=True)
            return self._token is not None and self._token != used

    def shareable_path(self) -> Path | None:
        """A file other processes (Dask workers, the gateway) read the token from: the file
        itself, or for a token given as a value a private copy (0600) in the user's runtime
        folder. None without a token."""
        if self.path is not None:
            return self.path
        if self._token is None:
            return None
        target = private_dir(os.environ) / "bearer-token"
        write_atomically(target, self._token + "\n", mode=0o600)
        return target


def private_dir(env: Mapping[str, str], create: bool = True) -> Path:
    """``$XDG_RUNTIME_DIR/htpdata`` (else the htpdata config folder), made 0700; refused when
    another user owns it or others may write to it (a token must not go there)."""
    base = env.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "htpdata" if base else user_dir(env)
    if not create:
        return folder
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise AuthenticationError(f"{folder} is not a private folder of this user; refusing "
                                  "to write a token there")
    return folder


def default_refresh_file(env: Mapping[str, str], create: bool = True) -> Path:
    """Where refreshed tokens go by default: ``$XDG_RUNTIME_DIR/htpdata/access-token`` (else
    the htpdata config folder); ``auth.refreshed_token_file`` moves it (for Dask workers on
    other nodes, somewhere they all see, such as the home folder)."""
    return private_dir(env, create) / "access-token"


def seed_refresh_file(path: Path, access: str | None) -> None:
    """Start the refreshed-token file from ``$ACCESS_TOKEN`` unless it already holds a token
    that lives longer (a refresh in an earlier process)."""
    if not access:
        return
    register_secret(access)
    held = _read(path)
    if held is not None and (_exp(held) or 0) >= (_exp(access) or 0):
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(path):
        write_atomically(path, access + "\n", mode=0o600)
