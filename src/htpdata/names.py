"""Parse and validate the names users give: logical names, Rucio DIDs, physical URLs, paths.

Pure functions, no I/O. Every other module receives a parsed :data:`Name`, never a raw string::

    cms:/store/mc/.../x.root            LogicalName(namespace="cms", path="/store/mc/.../x.root")
    rucio:user.jdoe:my.dataset          DID(scope="user.jdoe", name="my.dataset")
    root://host:1094//store/x.root      PhysicalURL (also davs://, https://, http://, file://)
    /data/x.root, ./x.root              PhysicalURL("file:///data/x.root")

The ``htpdata://`` form used through fsspec maps onto these: ``htpdata://cms/store/x.root`` is
``cms:/store/x.root``, ``htpdata://rucio/scope:name`` is ``rucio:scope:name`` and
``htpdata://root://host//x.root`` is the physical URL itself.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from .errors import InvalidNameError

__all__ = [
    "DID",
    "PHYSICAL_SCHEMES",
    "LogicalName",
    "Name",
    "PhysicalURL",
    "from_fsspec_path",
    "parse_name",
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


@dataclass(frozen=True, order=True, slots=True)
class PhysicalURL:
    """A URL a transport can read directly (``root://``, ``davs://``, ``https://``, ``file://``)."""

    url: str

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
        return PhysicalURL("file://" + rest)
    authority, sep, path = rest.partition("/")
    if "@" in authority:  # never keep credentials in a name
        raise InvalidNameError(text, "credentials in URLs are not allowed; use a token or proxy",
                               part="userinfo")
    host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
    if not host or not _HOST.fullmatch(host):
        raise InvalidNameError(text, "the URL has no valid host", part=authority or "(empty)")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidNameError(text, "invalid port", part=port)
    if not sep or not path.strip("/"):
        raise InvalidNameError(text, "the URL has no path", part=text)
    query = ""
    if scheme != "root" and scheme != "xroot":
        path, qmark, query = path.partition("?")
        query = qmark + query
    _check_segments(text, path)
    if scheme in ("root", "xroot"):
        # XRootD wants root://host//abs/path; accept the single-slash form and normalise.
        return PhysicalURL(f"root://{authority}//{path.lstrip('/')}")
    if scheme == "dav":
        scheme = "http"
    return PhysicalURL(f"{scheme}://{authority}/{path.lstrip('/')}{query}")


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
