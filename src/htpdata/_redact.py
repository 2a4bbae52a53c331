"""Keep secrets out of anything a person or a log can see.

Tokens reach storage in HTTP headers or the XRootD client's own environment, never in URLs we
build; but users paste URLs with ``?authz=...`` or ``user:pass@`` into names, and servers echo
them back in error messages. Everything printed goes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import re

__all__ = ["SECRET_PARAMS", "RedactingFilter", "install_filter", "redact", "register_secret"]

SECRET_PARAMS = frozenset({
    "authz", "xrd.authz", "access_token", "bearer_token", "token", "signature", "sig",
    "password", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential"})
"""Query parameters that carry a credential (lower case): stripped from names
(:func:`htpdata.names.split_credentials`) and masked in everything printed."""

_LONGEST_FIRST = sorted(SECRET_PARAMS, key=len, reverse=True)
_SECRET_QUERY = re.compile(
    r"(?i)(?<![\w.-])((?:" + "|".join(map(re.escape, _LONGEST_FIRST)) + r")=)[^&\s#]+")
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


class RedactingFilter(logging.Filter):
    """Redacts each record's message: on the CLI's handlers, and on the ``httpx`` logger, whose
    INFO line names every request's URL (with whatever credential the user wrote into it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_filter(logger: logging.Logger | logging.Handler) -> None:
    """Add one :class:`RedactingFilter` to ``logger`` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
