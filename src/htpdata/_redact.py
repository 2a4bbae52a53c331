"""Keep secrets out of anything a person or a log can see.

Tokens reach storage in HTTP headers or the XRootD client's own environment, never in URLs we
build; but users paste URLs with ``?authz=...`` or ``user:pass@`` into names, and servers echo
them back in error messages. Everything printed goes through :func:`redact` first.
"""

from __future__ import annotations

import re

__all__ = ["redact", "register_secret"]

_SECRET_QUERY = re.compile(
    r"(?i)((?:authz|access_token|token|bearer_token|xrd\.authz|signature|x-amz-signature)=)[^&\s#]+"
)
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_known: set[str] = set()


def register_secret(secret: str) -> None:
    """Remember a secret value (a token we loaded) so it is scrubbed wherever it appears."""
    if len(secret) >= 8:
        _known.add(secret)


def redact(text: str) -> str:
    """Return ``text`` with tokens, passwords and signatures replaced by ``***``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, "***")
    text = _SECRET_QUERY.sub(r"\1***", text)
    text = _USERINFO.sub(r"\1***@", text)
    return _BEARER.sub(r"\1***", text)
