"""Parse and validate the names users give: logical names, Rucio DIDs, physical URLs, paths.

Pure functions, no I/O. Every other module receives a parsed :data:`Name`, never a raw string::

    cms:/store/mc/.../x.root            LogicalName(namespace="cms", path="/store/mc/.../x.root")
    rucio:user.jdoe:my.dataset          DID(scope="user.jdoe", name="my.dataset")
    root://host:1094//store/x.root      PhysicalURL (also davs://, https://, http://, file://)
    /data/x.root, ./x.root              PhysicalURL("file:///data/x.root")

Credentials a user pastes into a URL (``?authz=TOKEN``, ``?access_token=``, ``user:pass@``, a
signature) are never part of a name: :func:`split_credentials` takes them out, the name keeps the
credential-free URL (what is keyed, stored, logged and reported), and the credential rides along
in :attr:`PhysicalURL.credential`, a separate carrier the transport applies to the request itself.

The ``htpdata://`` form used through fsspec maps onto these: ``htpdata://cms/store/x.root`` is
``cms:/store/x.root``, ``htpdata://rucio/scope:name`` is ``rucio:scope:name`` and
``htpdata://root://host//x.root`` is the physical URL itself.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from ._redact import SECRET_PARAMS, register_secret
from .errors import InvalidNameError

__all__ = [
    "DID",
    "PHYSICAL_SCHEMES",
    "LogicalName",
    "Name",
    "PhysicalURL",
    "URLCredential",
    "from_fsspec_path",
    "namespace_of",
    "parse_name",
    "split_credentials",
    "to_fsspec_url",
]

PHYSICAL_SCHEMES = frozenset({"root", "xroot", "davs", "https", "http", "dav", "file"})
RUCIO_NAMESPACE = "rucio"

_NAMESPACE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True, order=True, slots=True)
class LogicalName:
    """A name in a catalog namespace, e.g. CMS LFNs ``cms:/store/...``."""

    namespace: str
    path: str

    kind = "logical"

    def __str__(self) -> str:
        return f"{self.namespace}:{self.path}"


@dataclass(frozen=True, order=True, slots=True)
class DID:
    """A Rucio data identifier ``rucio:scope:name``."""

    scope: str
    name: str

    kind = "did"

    def __str__(self) -> str:
        return f"{RUCIO_NAMESPACE}:{self.scope}:{self.name}"


@dataclass(frozen=True, slots=True)
class URLCredential:
    """The secret parts of a URL as the user wrote them, kept apart from the name.

    ``userinfo`` is what stood before ``@`` in the authority (``user:pass``, or an XRootD login
    name); ``params`` are the secret query parameters, verbatim (``authz=...``). Its ``repr``
    shows nothing, so it never ends up in a log line or a traceback's locals.
    """

    userinfo: str | None = None
    params: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return "URLCredential(***)"

    def apply(self, url: str) -> str:
        """The URL to send: ``url`` (a credential-free name) with the credential put back."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            return url
        rest, hashmark, fragment = rest.partition("#")
        if self.userinfo:
            rest = f"{self.userinfo}@{rest}"
        if self.params:
            rest += ("&" if "?" in rest else "?") + "&".join(self.params)
        return f"{scheme}://{rest}{hashmark}{fragment}"


def _is_secret(param: str) -> bool:
    key = urllib.parse.unquote(param.partition("=")[0]).strip().lower()
    return key in SECRET_PARAMS


def split_credentials(url: str) -> tuple[str, URLCredential | None]:
    """``url`` without userinfo and secret query parameters, and those as a credential.

    Pure apart from remembering the secret values for redaction. Non-secret parameters keep
    their order; ``?`` goes when nothing is left. Other schemes than URLs pass unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() == "file":
        return url, None
    authority, slash, tail = rest.partition("/")
    userinfo = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
    path, qmark, query = tail.partition("?")
    query, hashmark, fragment = query.partition("#")
    kept: list[str] = []
    secret: list[str] = []
    for param in query.split("&") if qmark else ():
        if not param:
            continue
        (secret if _is_secret(param) else kept).append(param)
    if userinfo is None and not secret:
        return url, None
    for value in [p.partition("=")[2] for p in secret] + [(userinfo or "").partition(":")[2]]:
        for v in {value, urllib.parse.unquote(value)}:
            register_secret(v)
    clean = f"{scheme}://{authority}{slash}{path}"
    if kept:
        clean += "?" + "&".join(kept)
    if hashmark:
        clean += "#" + fragment
    return clean, URLCredential(userinfo, tuple(secret))


@dataclass(frozen=True, order=True, slots=True)
class PhysicalURL:
    """A URL a transport can read directly (``root://``, ``davs://``, ``https://``, ``file://``).

    ``url`` never holds a credential (it is the name: keyed, stored, printed); a credential the
    user wrote into it travels in ``credential``, which takes no part in equality or order.
    """

    url: str
    credential: URLCredential | None = field(default=None, compare=False, repr=False)

    kind = "physical"

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def path(self) -> str:
        """The path on the server (for ``root://`` without the leading extra slash)."""
        rest = self.url.split("://", 1)[1]
        if self.scheme == "file":
            return urllib.parse.unquote(rest)
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return "/" + path.lstrip("/")

    def __str__(self) -> str:
        return self.url


Name: TypeAlias = LogicalName | DID | PhysicalURL


def _check_common(text: str) -> None:
    if not text or not text.strip():
        raise InvalidNameError(text, "the name is empty")
    m = _CONTROL.search(text)
    if m:
        raise InvalidNameError(text, "control characters are not allowed",
                               part=repr(m.group())[1:-1])
    if len(text) > 4096:
        raise InvalidNameError(text[:80] + "...", "the name is longer than 4096 characters")


def _check_segments(full: str, path: str) -> None:
    """Reject ``..`` and ``.`` segments, also when percent-encoded (``%2e%2e``, ``%2f``)."""
    for candidate in {path, urllib.parse.unquote(path)}:
        for seg in candidate.split("/"):
            if seg in ("..", "."):
                raise InvalidNameError(full, f"'{seg}' path segments are not allowed", part=seg)
    if "%2f" in path.lower() or "%5c" in path.lower():
        raise InvalidNameError(full, "encoded path separators are not allowed",
                               part=path[path.lower().find("%"):][:3])


def _parse_logical(text: str, namespace: str, path: str) -> LogicalName:
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidNameError(text, "a namespace is a letter then letters, digits, '_', '-', '.'",
                               part=namespace)
    if not path.startswith("/"):
        raise InvalidNameError(text, "a logical path must start with '/'", part=path or "(empty)")
    if path == "/" or not path.strip("/"):
        raise InvalidNameError(text, "the logical path is empty", part=path)
    _check_segments(text, path)
    # Collapse doubled slashes so cms:/store//x and cms:/store/x are one name (one cache key).
    return LogicalName(namespace, re.sub("/{2,}", "/", path))


def _parse_did(text: str, rest: str) -> DID:
    scope, sep, name = rest.partition(":")
    if not sep:
        raise InvalidNameError(text, "a Rucio DID is written rucio:SCOPE:NAME", part=rest)
    if not _SCOPE.fullmatch(scope):
        raise InvalidNameError(text, "invalid Rucio scope", part=scope or "(empty)")
    if not name:
        raise InvalidNameError(text, "the DID name is empty", part="(empty)")
    _check_segments(text, name)
    return DID(scope, name)


def _parse_url(text: str, scheme: str) -> PhysicalURL:
    rest = text.split("://", 1)[1]
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):
            raise InvalidNameError(text, "a file:// URL needs an absolute path", part=rest)
        _check_segments(text, rest)  # as for every scheme: a URL never climbs with '..'
        return PhysicalURL("file://" + rest)
    # From here on only the credential-free form: errors name it, never the secret.
    text, credential = split_credentials(text)
    rest = text.split("://", 1)[1]
    authority, sep, path = rest.partition("/")
    host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
    if not host or not _HOST.fullmatch(host):
        raise InvalidNameError(text, "the URL has no valid host", part=authority or "(empty)")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidNameError(text, "invalid port", part=port)
    if not sep or not path.strip("/"):
        raise InvalidNameError(text, "the URL has no path", part=text)
    path, qmark, query = path.partition("?")
    query = qmark + query
    _check_segments(text, path)
    if scheme in ("root", "xroot"):
        # XRootD wants root://host//abs/path; accept the single-slash form and normalise.
        return PhysicalURL(f"root://{authority}//{path.lstrip('/')}{query}", credential)
    if scheme == "dav":
        scheme = "http"
    return PhysicalURL(f"{scheme}://{authority}/{path.lstrip('/')}{query}", credential)


def parse_name(text: str | os.PathLike[str] | Name) -> Name:
    """Parse ``text`` into a :data:`Name`, or raise :class:`InvalidNameError` naming the bad part.

    Namespaces are checked for syntax only here; whether a catalog declares them is the
    resolver's business (it raises :class:`~htpdata.errors.UnknownNamespaceError`).
    """
    if isinstance(text, LogicalName | DID | PhysicalURL):
        return text
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str):
        raise InvalidNameError(repr(text), f"expected a string, got {type(text).__name__}")
    _check_common(text)
    text = text.strip()
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "htpdata":
            return from_fsspec_path(text[len("htpdata://"):])
        if scheme not in PHYSICAL_SCHEMES:
            raise InvalidNameError(text, f"unsupported URL scheme {scheme!r}; use one of "
                                   + ", ".join(sorted(PHYSICAL_SCHEMES)), part=scheme)
        return _parse_url(text, scheme)
    head, sep, rest = text.partition(":")
    if sep and _NAMESPACE.fullmatch(head) and not text.startswith(("/", ".")):
        if head == RUCIO_NAMESPACE:
            return _parse_did(text, rest)
        return _parse_logical(text, head, rest)
    if sep and not text.startswith(("/", ".")):
        raise InvalidNameError(text, "a namespace is a letter then letters, digits, '_', '-', '.'",
                               part=head)
    # A plain local path: the user's own filesystem, so '..' is allowed and resolved here.
    path = Path(text)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~nobody-such": keep it literal, like the shell does
        pass
    return PhysicalURL("file://" + str(path.absolute().resolve()))


def from_fsspec_path(path: str) -> Name:
    """Map the part after ``htpdata://`` to a name (see the module docstring)."""
    if not path:
        raise InvalidNameError("htpdata://", "the name is empty")
    if "://" in path:
        return parse_name(path)
    head, sep, rest = path.partition("/")
    if ":" in head:  # htpdata://cms:/store/... or htpdata://rucio:scope:name
        return parse_name(path)
    if not sep:
        raise InvalidNameError("htpdata://" + path, "expected htpdata://NAMESPACE/PATH", part=path)
    if head == RUCIO_NAMESPACE:
        return parse_name(f"{RUCIO_NAMESPACE}:{rest}")
    return parse_name(f"{head}:/{rest}")


def to_fsspec_url(name: Name) -> str:
    """The ``htpdata://`` URL for a name (what ``htpdata fileset`` writes)."""
    if isinstance(name, LogicalName):
        return f"htpdata://{name.namespace}{name.path}"
    if isinstance(name, DID):
        return f"htpdata://rucio/{name.scope}:{name.name}"
    return f"htpdata://{name.url}"


def namespace_of(name: str) -> str:
    """The namespace a name's text belongs to, for grouping figures (no parsing, so any
    recorded text works): ``cms`` for ``cms:/store/x``, ``rucio:SCOPE`` for a DID, the scheme
    for a URL, ``?`` for text without one."""
    if name.startswith(f"{RUCIO_NAMESPACE}:"):
        return f"{RUCIO_NAMESPACE}:" + name.split(":", 2)[1]
    return name.split(":", 1)[0] if ":" in name else "?"
