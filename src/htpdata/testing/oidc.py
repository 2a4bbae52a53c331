"""A real OpenID Connect provider on loopback, for the token-refresh tests.

panva's ``oidc-provider`` (npm; OpenID Certified, the provider under many Node.js identity
services) runs in Node.js from ``.ci/oidc`` (``.ci/setup`` installs it there, pinned by its
lock file). It serves HTTPS with a self-signed certificate, OIDC discovery, a JWKS, the
authorization-code and refresh-token grants, and issues WLCG-profile JWT access tokens
(``wlcg.ver``, ``scope``, ``aud``; RS256) with a lifetime of the test's choosing; refresh tokens
rotate on every use. Logging in needs no form: the provider's interaction page logs
:attr:`OIDCProvider.account` in and grants what is asked.

:class:`~htpdata.testing.tokens.TokenOrigin` accepts its tokens: it is an issuer (``issuer``,
``jwks()``) whose keys go into the origin's key cache.

    with OIDCProvider(audience=origin_audience, scope="storage.read:/store",
                      access_ttl=10) as idp:
        access, refresh = idp.login()           # what JupyterHub puts into the environment
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Any

from .servers import free_port, make_self_signed, wait_for_port

__all__ = ["OIDCProvider", "provider_dir"]


def provider_dir() -> Path:
    """The folder holding ``provider.mjs`` and its ``node_modules``: ``$HTPDATA_OIDC_DIR``, else
    the repository's ``.ci/oidc``."""
    env = os.environ.get("HTPDATA_OIDC_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / ".ci" / "oidc"


def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class OIDCProvider:
    """oidc-provider in a Node.js process on a free loopback port (HTTPS).

    ``access_ttl`` is the access tokens' lifetime in seconds; ``scope`` what they carry (WLCG
    ``storage.read:/PATH`` scopes); ``audience`` their ``aud``.
    """

    redirect_uri = "https://client.htpdata.test/callback"

    def __init__(self, *, audience: str, scope: str = "storage.read:/", access_ttl: int = 60,
                 account: str = "alice", client_id: str = "htpdata-test") -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.audience = audience
        self.scope = scope
        self.access_ttl = access_ttl
        self.account = account
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(24)
        self.key_id = "htpdata-oidc"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.work = Path(tempfile.mkdtemp(prefix="htpdata-oidc-"))
        self.port = 0
        self.cert: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.work / "provider.log"

    @staticmethod
    def available() -> bool:
        """Whether Node.js and the installed provider are here (``bash .ci/setup``)."""
        return (shutil.which("node") is not None
                and (provider_dir() / "node_modules" / "oidc-provider").is_dir())

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def jwks(self) -> dict[str, Any]:
        """The public signing keys (what the provider's ``jwks_uri`` serves)."""
        n = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id,
                          "n": _b64_int(n.n), "e": _b64_int(n.e)}]}

    def _private_jwk(self) -> dict[str, Any]:
        p = self._key.private_numbers()
        return {**self.jwks()["keys"][0], "d": _b64_int(p.d), "p": _b64_int(p.p),
                "q": _b64_int(p.q), "dp": _b64_int(p.dmp1), "dq": _b64_int(p.dmq1),
                "qi": _b64_int(p.iqmp)}

    def start(self, timeout: float = 30.0) -> OIDCProvider:
        node = shutil.which("node")
        if node is None or not self.available():
            raise RuntimeError("the test OIDC provider is not installed (Node.js and "
                               "`npm ci` in .ci/oidc: run bash .ci/setup)")
        self.port = self.port or free_port()
        cert, key, _ = make_self_signed(self.work)
        self.cert = cert
        config = self.work / "config.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"port": self.port, "issuer": self.issuer, "cert": str(cert),
                       "key": str(key), "jwk": self._private_jwk(),
                       "client_id": self.client_id, "client_secret": self.client_secret,
                       "redirect_uri": self.redirect_uri, "audience": self.audience,
                       "scope": self.scope, "access_ttl": self.access_ttl,
                       "account": self.account}, f)
        with self.log.open("wb") as logf:
            self.proc = subprocess.Popen(
                [node, str(provider_dir() / "provider.mjs"), str(config)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=provider_dir(),
                env={**os.environ, "NODE_ENV": "production"})
        try:
            wait_for_port(self.port, timeout, self.proc, self.log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def login(self) -> tuple[str, str]:
        """``(access token, refresh token)`` of :attr:`account` for this client, by the
        authorization-code grant (what a JupyterHub authenticator does at login)."""
        import httpx

        assert self.cert is not None
        query = urllib.parse.urlencode({
            "client_id": self.client_id, "response_type": "code",
            "redirect_uri": self.redirect_uri, "scope": f"openid offline_access {self.scope}",
            "prompt": "consent", "resource": self.audience, "state": secrets.token_hex(8)})
        with httpx.Client(verify=ssl.create_default_context(cafile=str(self.cert)),
                          timeout=30) as http:
            url = f"{self.issuer}/auth?{query}"
            for _ in range(10):  # /auth -> /interaction/UID -> /auth/UID -> redirect_uri?code=
                resp = http.get(url)
                location = resp.headers.get("location", "")
                if resp.status_code not in (302, 303) or not location:
                    raise RuntimeError(f"login stopped at {url}: HTTP {resp.status_code} "
                                       f"{resp.text[:300]}")
                url = urllib.parse.urljoin(url, location)
                if url.startswith(self.redirect_uri):
                    break
            params = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            if "code" not in params:
                raise RuntimeError(f"login gave no code: {url}")
            resp = http.post(self.token_endpoint, auth=(self.client_id, self.client_secret),
                             data={"grant_type": "authorization_code",
                                   "code": params["code"][0],
                                   "redirect_uri": self.redirect_uri,
                                   "resource": self.audience})
            body = resp.json()
            if resp.status_code != 200:
                raise RuntimeError(f"code exchange refused: {body}")
            return str(body["access_token"]), str(body["refresh_token"])

    def environment(self, access: str, refresh: str) -> dict[str, str]:
        """The variables a JupyterHub spawner would set for htpdata to refresh by itself."""
        return {"ACCESS_TOKEN": access, "REFRESH_TOKEN": refresh,
                "OIDC_CLIENT_ID": self.client_id, "OIDC_CLIENT_SECRET": self.client_secret}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
