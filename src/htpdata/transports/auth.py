"""WLCG credentials: X.509 proxies and bearer tokens, found the way grid tools find them.

Token discovery follows the WLCG Bearer Token Discovery spec, first hit wins:
``$BEARER_TOKEN`` (the token itself), ``$BEARER_TOKEN_FILE``, ``$XDG_RUNTIME_DIR/bt_u$UID``,
``/tmp/bt_u$UID``. The proxy is ``$X509_USER_PROXY`` then ``/tmp/x509up_u$UID``. An explicit
``auth.token_file`` / ``auth.proxy`` setting wins over discovery.

Both protocols get the same credentials: HTTP as an ``Authorization`` header and a client
certificate, XRootD through the variables its security plugins read (set only when the setting
differs from what the plugins would discover themselves). Token values are registered with
:func:`htpdata._redact.register_secret`, so they are scrubbed from every message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._redact import register_secret
from ..config import AuthSettings

if TYPE_CHECKING:
    import ssl

__all__ = ["Credentials", "discover_credentials"]


@dataclass(frozen=True)
class Credentials:
    proxy: Path | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    """Where the token came from (a path or a variable name), safe to print."""
    ca_dir: Path | None = None
    ca_file: Path | None = None

    def http_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

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
        return {"proxy": str(self.proxy) if self.proxy else None,
                "token": self.token_source, "ca_dir": str(self.ca_dir) if self.ca_dir else None,
                "ca_file": str(self.ca_file) if self.ca_file else None}


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def discover_credentials(settings: AuthSettings, environ: Mapping[str, str] | None = None,
                         uid: int | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid

    token: str | None = None
    token_source: str | None = None
    candidates: list[tuple[str, Path]] = []
    if settings.token_file:
        candidates.append((settings.token_file, Path(settings.token_file).expanduser()))
    elif env.get("BEARER_TOKEN", "").strip():
        token, token_source = env["BEARER_TOKEN"].strip(), "$BEARER_TOKEN"
    else:
        if env.get("BEARER_TOKEN_FILE"):
            candidates.append(("$BEARER_TOKEN_FILE", Path(env["BEARER_TOKEN_FILE"])))
        if env.get("XDG_RUNTIME_DIR"):
            candidates.append((f"$XDG_RUNTIME_DIR/bt_u{uid}",
                               Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"))
        candidates.append((f"/tmp/bt_u{uid}", Path(f"/tmp/bt_u{uid}")))
    for label, path in candidates:
        token = _read_token(path)
        if token:
            token_source = label if label.startswith("$") else str(path)
            break
    if token:
        register_secret(token)

    proxy: Path | None = None
    for cand in (settings.proxy, env.get("X509_USER_PROXY", ""), f"/tmp/x509up_u{uid}"):
        if cand and Path(cand).expanduser().is_file():
            proxy = Path(cand).expanduser()
            break

    ca_dir = None
    for cand in (settings.ca_dir, env.get("X509_CERT_DIR", ""), "/etc/grid-security/certificates"):
        if cand and Path(cand).is_dir():
            ca_dir = Path(cand)
            break
    ca_file = Path(settings.ca_file).expanduser() if settings.ca_file else None
    return Credentials(proxy, token, token_source, ca_dir, ca_file)


def export_for_xrootd(creds: Credentials, settings: AuthSettings,
                      environ: MutableMapping[str, str]) -> None:
    """Hand explicitly configured credentials to the XRootD client's security plugins.

    The plugins discover ``$X509_USER_PROXY``/``/tmp/x509up_u$UID`` and the WLCG token locations
    on their own; only a path set in htpdata's settings needs exporting.
    """
    if settings.proxy and creds.proxy is not None:
        environ["X509_USER_PROXY"] = str(creds.proxy)
    if settings.token_file and creds.token_source:
        environ["BEARER_TOKEN_FILE"] = str(Path(settings.token_file).expanduser())
    if settings.ca_dir and creds.ca_dir is not None:
        environ["X509_CERT_DIR"] = str(creds.ca_dir)
