"""Rule patterns and templates: linear-time matching and one-pass substitution.

A catalog's ``path-match`` runs on every name a user resolves, and catalogs come from other
people (a facility folder, a colleague, a co-tenant). Python's ``re`` backtracks: ``(a+)+b``
against a long name takes exponential time and hangs the resolver. Patterns are therefore
compiled with RE2 (PyPI ``google-re2``), whose matching time is linear in the name, with a
bounded program size. RE2 accepts Python's syntax except backreferences (``\\1``) and
lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``); its ``\\d``, ``\\w`` and ``\\s`` are ASCII.

A rule's ``result`` is a template of ``$N`` (the match's groups) and ``${VAR}`` /
``${VAR:-default}`` (environment variables, from an allow-list: :func:`variable_refusal`).
Both are replaced in **one pass over the template**, so text that came from the name (a group)
is never expanded again: a name ``cms:/store/${BEARER_TOKEN}/x`` stays literal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "ALLOWED_VARIABLES",
    "MAX_PATTERN",
    "Match",
    "Pattern",
    "PatternError",
    "compile_pattern",
    "expand_vars",
    "substitute",
    "variable_refusal",
    "variables_in",
]

MAX_PATTERN = 1024
"""Longest ``path-match`` accepted, in characters."""
_MAX_PROGRAM = 1 << 20  # bytes of compiled RE2 program per pattern (its default is 8 MiB)

ALLOWED_VARIABLES = frozenset({"USER", "LOGNAME", "HOME", "SCRATCH", "TMPDIR", "HOSTNAME",
                               "SITECONFIG_PATH", "CMS_LOCAL_SITE"})
"""Variables a catalog may expand, besides ``HTPDATA_*`` (see :func:`variable_refusal`)."""
_SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASS|KEY|CRED|AUTH|PROXY|COOKIE|SESSION|CERT|X509|BEARER"
                          r"|SIGN|PRIVATE", re.I)

# ${NAME} or ${NAME:-default}, and $N; one alternation so one pass does both.
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$(\d+)")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


class PatternError(ValueError):
    """A ``path-match`` that cannot be used; the message says why (the loader adds file/key)."""


class Match(Protocol):
    def group(self, index: int, /) -> str | None: ...


class Pattern(Protocol):
    """What the resolver needs of a compiled ``path-match``."""

    @property
    def groups(self) -> int: ...

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str, /) -> Match | None: ...


def _options() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.max_mem = _MAX_PROGRAM
    return options


def compile_pattern(pattern: str) -> Pattern:
    """Compile ``pattern`` for linear-time full matches, or raise PatternError saying why."""
    import re2

    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"longer than {MAX_PATTERN} characters")
    try:
        compiled: Pattern = re2.compile(pattern, options=_options())
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        hint = ""
        if "perl operator" in why or "escape sequence" in why:
            hint = " (backreferences and lookaround are not supported: see docs/catalogs.md)"
        raise PatternError(f"{why}{hint}") from None
    return compiled


def variables_in(text: str) -> list[str]:
    """The names of the ``${VAR}`` references in ``text``, in order."""
    return _VAR.findall(text)


def variable_refusal(name: str) -> str | None:
    """Why a catalog may not expand ``${name}``, or None if it may.

    Allowed: :data:`ALLOWED_VARIABLES` and ``HTPDATA_*``; refused whatever looks like a
    credential (TOKEN, SECRET, PASS, KEY, AUTH, PROXY, X509, ...), even with the prefix: a
    catalog written by someone else must not be able to put your token into a URL it chose.
    """
    if _SECRET_LIKE.search(name):
        return "it looks like a credential; catalogs may not expand credentials"
    if name in ALLOWED_VARIABLES or name.startswith("HTPDATA_"):
        return None
    return ("it is not on the allow-list (HTPDATA_*, "
            + ", ".join(sorted(ALLOWED_VARIABLES)) + ")")


def expand_vars(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; unset or empty takes the default (or "")."""
    return substitute(text, None, environ)


def substitute(template: str, match: Match | None, environ: Mapping[str, str]) -> str:
    """One pass over ``template``: ``$N`` becomes the match's group N (a group that did not take
    part becomes empty), ``${VAR}`` the variable. What is inserted is never looked at again."""

    def one(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            if match is None:  # a prefix has no groups: '$1' there is literal text
                return m.group(0)
            return match.group(int(m.group(3))) or ""
        return environ.get(m.group(1)) or (m.group(2) or "")

    return _TEMPLATE.sub(one, template)
