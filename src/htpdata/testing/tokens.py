"""A token-protected origin: XRootD with its SciTokens plugin, and a token issuer for it.

Real WLCG software checks the tokens: ``libXrdAccSciTokens`` (Debian
``xrootd-scitokens-plugins``, built on scitokens-cpp) verifies each bearer token's signature,
issuer, audience, expiry and ``storage.read:/PATH`` scopes, on root:// (the ``ztn`` security
protocol) and on HTTPS (``Authorization: Bearer``). Tokens are real JWTs (RS256) signed by
:class:`TokenIssuer`, with the lifetime a test asks for, so expiry can be tested too.

Offline: scitokens-cpp fetches an issuer's public keys over HTTPS from
``ISSUER/.well-known/openid-configuration``, which needs a trusted certificate and a network.
Instead the origin's key cache (scitokens-cpp's SQLite file under the server's
``$XDG_CACHE_HOME/scitokens/``) is seeded with the issuer's JWKS before the server starts, marked
fresh for a day, so the library never goes to the network. The issuer URL stays an ``https://``
name (the library insists on it); nothing listens there. The issuer may also be the real OIDC
provider of :mod:`htpdata.testing.oidc` (any :class:`KeyIssuer`).

    issuer = TokenIssuer()
    with TokenOrigin(issuer) as origin:        # XRootD, root:// and davs://, tokens required
        token = issuer.token("alice", scope="storage.read:/store", lifetime=600)

Facts found with this set-up (xrootd 5.5.3, scitokens-cpp 0.7.3): a token without a ``wlcg.ver``
claim or an ``aud`` matching the origin's ``audience`` is refused; the server caches a token it
accepted for at least 60 s (``XrdSciTokensAccess.cc`` computes the cache lifetime as
``max(monotonic - exp, 60)``), so a token that expires within a minute of its first use stays
accepted on that server until the minute is over.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from .servers import XRootDServer

__all__ = ["KeyIssuer", "TokenIssuer", "TokenOrigin", "seed_keycache", "write_token_file"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class TokenIssuer:
    """An RSA key pair that mints WLCG-profile JWTs, and its public keys as a JWKS."""

    def __init__(self, issuer: str = "https://issuer.htpdata.test", key_id: str = "htpdata-test"
                 ) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.issuer = issuer
        self.key_id = key_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id,
                          "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}]}

    def token(self, subject: str, *, scope: str = "storage.read:/", audience: str | None =
              "https://wlcg.cern.ch/jwt/v1/any", lifetime: float = 3600,
              not_before: float | None = None, issuer: str | None = None,
              extra: dict[str, Any] | None = None) -> str:
        """A signed token for ``subject`` valid for ``lifetime`` seconds from now (negative:
        already expired). ``scope`` is WLCG's space-separated ``storage.read:/PATH`` list."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer, "sub": subject, "wlcg.ver": "1.0", "scope": scope,
            "iat": now, "nbf": int(not_before) if not_before is not None else now - 60,
            "exp": int(now + lifetime), "jti": str(uuid.uuid4())}
        if audience is not None:
            claims["aud"] = audience
        claims.update(extra or {})
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def seed_keycache(self, cache_home: Path, *, fresh_for: float = 86400) -> Path:
        """Write scitokens-cpp's key cache under ``cache_home`` (its ``$XDG_CACHE_HOME``) so the
        library trusts this issuer's keys without fetching them."""
        return seed_keycache(cache_home, self, fresh_for=fresh_for)


class KeyIssuer(Protocol):
    """What an origin needs of a token issuer: its name and its public keys. A
    :class:`TokenIssuer` is one, and so is the real OIDC provider
    (:class:`htpdata.testing.oidc.OIDCProvider`)."""

    @property
    def issuer(self) -> str: ...

    def jwks(self) -> dict[str, Any]: ...


def seed_keycache(cache_home: Path, issuer: KeyIssuer, *, fresh_for: float = 86400) -> Path:
    """Write scitokens-cpp's key cache under ``cache_home`` (its ``$XDG_CACHE_HOME``) with
    ``issuer``'s JWKS, marked fresh for ``fresh_for`` seconds, so it is never fetched."""
    folder = cache_home / "scitokens"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scitokens_cpp.sqllite"  # sic: the library's own spelling
    now = int(time.time())
    value = json.dumps({"jwks": issuer.jwks(), "next_update": int(now + fresh_for),
                        "expires": int(now + fresh_for)})
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS keycache (issuer text UNIQUE PRIMARY KEY "
                   "NOT NULL, keys text NOT NULL)")
        db.execute("DELETE FROM keycache WHERE issuer = ?", (issuer.issuer,))
        db.execute("INSERT INTO keycache VALUES (?, ?)", (issuer.issuer, value))
    db.close()
    return path


def write_token_file(folder: Path, token: str, owner: int | None = None) -> Path:
    """Write ``token`` to a new file in ``folder`` with mode 0600 (XRootD's client refuses a
    token file others can read), owned by ``owner`` when given; returns its path."""
    path = folder / f"bt-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    if owner is not None:
        os.chown(path, owner, -1)
    return path


class TokenOrigin(XRootDServer):
    """An XRootD origin where every read needs a bearer token from ``issuer``.

    Tokens are accepted for ``storage.read:/PATH`` scopes relative to ``/`` of the data folder,
    with audience :attr:`audience` or WLCG's "any"; without a valid token every request is
    refused (HTTP 403, XRootD ``[3010]``).
    """

    def __init__(self, issuer: KeyIssuer, data: str | Path | None = None, *, tls: bool = True,
                 name: str = "token-origin", audience: str = "https://origin.htpdata.test"
                 ) -> None:
        super().__init__(data, tls=tls, name=name, writable=False)
        self.issuer = issuer
        self.audience = audience

    @staticmethod
    def available() -> bool:
        """Whether XRootD's SciTokens plugin is installed (Debian xrootd-scitokens-plugins)."""
        return any(Path(d).glob("libXrdAccSciTokens*.so*") for d in
                   ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                    "/usr/lib"))

    def _config(self, user_uid: int, user_gid: int) -> Path:
        cfg = self.work / "scitokens.cfg"
        cfg.write_text(
            "[Global]\n"
            f"audience_json = {json.dumps([self.audience, 'https://wlcg.cern.ch/jwt/v1/any'])}\n"
            "onmissing = deny\n\n"
            f"[Issuer {self.issuer.issuer}]\n"
            f"issuer = {self.issuer.issuer}\n"
            "base_path = /\n")
        cache_home = self.work / "xdg-cache"
        seed_keycache(cache_home, self.issuer)
        for root, dirs, files in os.walk(cache_home):
            for entry in [root, *(os.path.join(root, d) for d in dirs),
                          *(os.path.join(root, f) for f in files)]:
                os.chown(entry, user_uid, user_gid)
        self.env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
        self.extra_config = "\n".join([
            "ofs.authorize 1",
            f"ofs.authlib libXrdAccSciTokens.so config={cfg}",
            "http.header2cgi Authorization authz",
            "xrootd.seclib libXrdSec.so",
            "sec.protocol ztn",
            "sec.protbind * only ztn",
        ])
        return super()._config(user_uid, user_gid)

