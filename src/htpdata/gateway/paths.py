"""Gateway URL paths to names and back, as pure functions.

A gateway URL is ``http://127.0.0.1:PORT/SECRET/<path>``; the path is the name::

    /cms/store/mc/.../x.root            cms:/store/mc/.../x.root       (a logical name)
    /demo/store/...                     demo:/store/...
    /rucio/SCOPE/NAME                   rucio:SCOPE:NAME               (NAME may hold '/')
    /_url/root/host:1094/store/x.root   root://host:1094//store/x.root (a physical URL)
    /_url/https/host/path/x.root        https://host/path/x.root
    /_url/file/data/x.root              file:///data/x.root

``_url`` cannot be a catalog namespace (namespaces start with a letter), so the forms never
collide. Queries are not carried: ROOT's HTTP client drops them, and credentials never belong in
a name. Paths are percent-decoded once, then parsed by :func:`htpdata.names.parse_name`, which
rejects ``..``, control characters and encoded separators.
"""

from __future__ import annotations

import hmac
import urllib.parse

from ..errors import InvalidNameError
from ..names import DID, RUCIO_NAMESPACE, LogicalName, Name, PhysicalURL, parse_name

__all__ = ["URL_PREFIX", "name_for_path", "path_for_name", "split_secret"]

URL_PREFIX = "_url"
_SAFE = "/:@!$&'()*+,;=-._~"


def split_secret(path: str, secret: str) -> tuple[bool, str]:
    """``(the first segment is the secret, the rest of the path)``; the comparison takes the
    same time whatever the segment holds (``hmac.compare_digest``)."""
    first, _, rest = path.lstrip("/").partition("/")
    ok = hmac.compare_digest(first.encode(), secret.encode())
    return ok, "/" + rest


def name_for_path(path: str) -> Name:
    """The :data:`~htpdata.names.Name` a gateway path (after the secret) stands for."""
    raw = urllib.parse.unquote(path)
    head, sep, rest = raw.lstrip("/").partition("/")
    if not head or not sep or not rest.strip("/"):
        raise InvalidNameError(raw, "expected /NAMESPACE/PATH, /rucio/SCOPE/NAME or "
                                    f"/{URL_PREFIX}/SCHEME/HOST/PATH")
    if head == URL_PREFIX:
        scheme, _, where = rest.partition("/")
        if scheme == "file":
            return parse_name(f"file:///{where.lstrip('/')}")
        if scheme in ("root", "xroot"):
            authority, _, p = where.partition("/")
            return parse_name(f"{scheme}://{authority}//{p.lstrip('/')}")
        return parse_name(f"{scheme}://{where}")
    if head == RUCIO_NAMESPACE:
        if ":" in rest.split("/", 1)[0]:  # the fsspec form /rucio/scope:name
            return parse_name(f"{RUCIO_NAMESPACE}:{rest}")
        scope, _, name = rest.partition("/")
        return parse_name(f"{RUCIO_NAMESPACE}:{scope}:{name}")
    return parse_name(f"{head}:/{rest}")


def path_for_name(name: str | Name) -> str:
    """The gateway path (without the secret) for a name; inverse of :func:`name_for_path`."""
    n = parse_name(name)
    if isinstance(n, LogicalName):
        path = f"/{n.namespace}{n.path}"
    elif isinstance(n, DID):
        path = f"/{RUCIO_NAMESPACE}/{n.scope}/{n.name}"
    else:
        assert isinstance(n, PhysicalURL)
        if "?" in n.url and n.scheme not in ("root", "xroot"):
            raise InvalidNameError(n.url, "a gateway URL cannot carry a query; ROOT drops it")
        scheme, _, rest = n.url.partition("://")
        if scheme == "file":
            path = f"/{URL_PREFIX}/file/{rest.lstrip('/')}"
        elif scheme == "root":
            authority, _, p = rest.partition("/")
            path = f"/{URL_PREFIX}/root/{authority}/{p.lstrip('/')}"
        else:
            path = f"/{URL_PREFIX}/{scheme}/{rest}"
    return urllib.parse.quote(path, safe=_SAFE)
