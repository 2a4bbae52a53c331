"""WLCG credentials: X.509 proxies and bearer tokens, found the way grid tools find them.

Token discovery follows the WLCG Bearer Token Discovery spec, first hit wins:
``$BEARER_TOKEN`` (the token itself), ``$BEARER_TOKEN_FILE``, ``$XDG_RUNTIME_DIR/bt_u$UID``,
``/tmp/bt_u$UID``, and last ``$ACCESS_TOKEN`` (JupyterHub's). Where the environment allows a
refresh (``$REFRESH_TOKEN`` and a client id), refreshed tokens in a private file come first
(:mod:`htpdata.transports.tokens`). The proxy is ``$X509_USER_PROXY`` then
``/tmp/x509up_u$UID``. An explicit ``auth.token_file`` / ``auth.proxy`` setting wins over
discovery. A token file is re-read when it changes and before the token expires.

Both protocols get the same credentials: HTTP as an ``Authorization`` header and a client
certificate, XRootD through the variables its security plugins read (set only when the setting
differs from what the plugins would discover themselves). Token values are registered with
:func:`htpdata._redact.register_secret`, so they are scrubbed from every message.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._redact import register_secret
from ..config import AuthSettings, Settings
from .tokens import (
    ENV_ACCESS,
    Refresher,
    TokenSource,
    default_refresh_file,
    seed_refresh_file,
)

if TYPE_CHECKING:
    import ssl

__all__ = ["Credentials", "discover_credentials", "settings_for_workers"]


@dataclass(frozen=True)
class Credentials:
    proxy: Path | None = None
    tokens: TokenSource | None = field(default=None, repr=False)
    """The bearer token, kept current (:mod:`htpdata.transports.tokens`)."""
    ca_dir: Path | None = None
    ca_file: Path | None = None

    @property
    def token(self) -> str | None:
        """The token to send now (re-read when its file changed or it is about to expire)."""
        return self.tokens.token() if self.tokens is not None else None

    @property
    def token_source(self) -> str | None:
        """Where the token comes from (a path or a variable name), safe to print."""
        return self.tokens.label if self.tokens is not None and self.tokens.token() else None

    def http_headers(self) -> dict[str, str]:
        token = self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def ssl_context(self) -> ssl.SSLContext:
        import ssl  # not at import: ~12 ms that root:// and cached reads never need

        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None,
            capath=str(self.ca_dir) if self.ca_dir else None,
        )
        if self.proxy is not None:
            # A proxy file holds the certificate chain and its key in one PEM.
            ctx.load_cert_chain(str(self.proxy))
        return ctx

    def describe(self) -> dict[str, str | None]:
        """For ``htpdata config``: where credentials come from, never their values."""
        refresh = self.tokens is not None and self.tokens.refresher is not None
        return {"proxy": str(self.proxy) if self.proxy else None,
                "token": self.token_source, "token_refresh": "yes" if refresh else None,
                "ca_dir": str(self.ca_dir) if self.ca_dir else None,
                "ca_file": str(self.ca_file) if self.ca_file else None}


def discover_credentials(settings: AuthSettings, environ: Mapping[str, str] | None = None,
                         uid: int | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    margin = settings.token_margin
    ca_file = Path(settings.ca_file).expanduser() if settings.ca_file else None

    ca_dir = None
    for cand in (settings.ca_dir, env.get("X509_CERT_DIR", ""), "/etc/grid-security/certificates"):
        if cand and Path(cand).is_dir():
            ca_dir = Path(cand)
            break
    refresher = Refresher.from_environ(env, settings.client_id, settings.token_endpoint,
                                       str(ca_file or ""), str(ca_dir or ""))
    tokens: TokenSource | None = None
    if settings.token_file:
        path = Path(settings.token_file).expanduser()
        tokens = TokenSource(path, label=settings.token_file, margin=margin,
                             refresher=refresher if _is_refresh_file(settings, env, path)
                             else None)
    elif refresher is not None:
        # The facility's JupyterHub: $ACCESS_TOKEN to start with, $REFRESH_TOKEN to go on.
        path = (Path(settings.refreshed_token_file).expanduser()
                if settings.refreshed_token_file else default_refresh_file(env))
        seed_refresh_file(path, env.get(ENV_ACCESS, "").strip() or None)
        tokens = TokenSource(path, label=f"{path} (refreshed)", refresher=refresher,
                             margin=margin)
    elif env.get("BEARER_TOKEN", "").strip():
        value = env["BEARER_TOKEN"].strip()
        register_secret(value)
        tokens = TokenSource(value=value, label="$BEARER_TOKEN")
    else:
        candidates: list[tuple[str, Path]] = []
        if env.get("BEARER_TOKEN_FILE"):
            candidates.append(("$BEARER_TOKEN_FILE", Path(env["BEARER_TOKEN_FILE"])))
        if env.get("XDG_RUNTIME_DIR"):
            candidates.append((f"$XDG_RUNTIME_DIR/bt_u{uid}",
                               Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"))
        candidates.append((f"/tmp/bt_u{uid}", Path(f"/tmp/bt_u{uid}")))
        for label, path in candidates:
            source = TokenSource(path, label=label, margin=margin)
            if source.token():
                tokens = source
                break
        if tokens is None and env.get(ENV_ACCESS, "").strip():
            value = env[ENV_ACCESS].strip()
            register_secret(value)
            tokens = TokenSource(value=value, label=f"${ENV_ACCESS}")

    proxy: Path | None = None
    for cand in (settings.proxy, env.get("X509_USER_PROXY", ""), f"/tmp/x509up_u{uid}"):
        if cand and Path(cand).expanduser().is_file():
            proxy = Path(cand).expanduser()
            break

    return Credentials(proxy, tokens, ca_dir, ca_file)


def settings_for_workers(settings: Settings, creds: Credentials) -> Settings:
    """``settings`` as other processes (Dask workers, the gateway) get them: the token as the
    path of its file (``auth.token_file``), never its value. A token given as a value
    (``$BEARER_TOKEN``) is written to a private file first; a refreshed token's file is named
    as the refresh target, so a worker whose environment allows refreshing refreshes the same
    file (one at a time, under its lock)."""
    tokens = creds.tokens
    path = tokens.shareable_path() if tokens is not None else None
    if path is None:
        return settings
    auth = dataclasses.replace(settings.auth, token_file=str(path))
    if tokens is not None and tokens.refresher is not None:
        auth = dataclasses.replace(auth, refreshed_token_file=str(path))
    sources = {**settings.sources, "auth.token_file": "argument"}
    return dataclasses.replace(settings, auth=auth, sources=sources)


def _is_refresh_file(settings: AuthSettings, env: Mapping[str, str], path: Path) -> bool:
    """Whether an explicit ``auth.token_file`` is the file refreshed tokens go to (a Dask
    worker is handed that path, and refreshes too when its environment allows)."""
    target = (Path(settings.refreshed_token_file).expanduser() if settings.refreshed_token_file
              else default_refresh_file(env, create=False))
    return path == target


def export_for_xrootd(creds: Credentials, settings: AuthSettings,
                      environ: MutableMapping[str, str]) -> None:
    """Hand explicitly configured credentials to the XRootD client's security plugins.

    The plugins discover ``$X509_USER_PROXY``/``/tmp/x509up_u$UID`` and the WLCG token locations
    on their own; only a path set in htpdata's settings needs exporting.
    """
    if settings.proxy and creds.proxy is not None:
        environ["X509_USER_PROXY"] = str(creds.proxy)
    if creds.tokens is not None and creds.tokens.path is not None and (
            settings.token_file or creds.tokens.refresher is not None):
        environ["BEARER_TOKEN_FILE"] = str(creds.tokens.path)
    if settings.ca_dir and creds.ca_dir is not None:
        environ["X509_CERT_DIR"] = str(creds.ca_dir)
