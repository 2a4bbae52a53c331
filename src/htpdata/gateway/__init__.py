"""The HTTP gateway: ROOT, RDataFrame, TChain, curl and every non-Python tool read through
htpdata (the cache tiers, replica failover, verification, logical names) over loopback HTTP.

::

    with htpdata.gateway() as gw:                 # in a notebook or script (a thread)
        df = ROOT.RDataFrame("Events", gw.url("cms:/store/mc/.../x.root"))

    $ htpdata serve &                             # in a shell: one per user and node
    $ htpdata url cms:/store/mc/.../x.root --gateway
    http://127.0.0.1:40123/<secret>/cms/store/mc/.../x.root

    gw = htpdata.gateway.install(dask_client)     # one gateway per node, same URL on every worker

How it is built (each module a few screens)::

    paths.py     URL path <-> name (/cms/store/..., /rucio/SCOPE/NAME, /_url/root/HOST/...)
    ranges.py    Range / If-Range / ETag / multipart framing, pure
    statuses.py  htpdata error -> HTTP status, one table
    state.py     the secret, the 0600 state file, discovery, the hello proof
    app.py       the aiohttp application: authorise, resolve, read on a thread pool, stream
    server.py    Gateway: sockets, event loop, foreground or background thread
    dask.py      the worker plugin: one gateway per node and user, shared by its workers
    root.py      PyROOT helpers (the wheel's TWebFile handler)

``htpdata.gateway`` is both this package and a callable (``htpdata.gateway()`` starts one),
because both spellings read naturally at the call site; the module's class is swapped for a
callable subclass below, which is all the trick there is.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..names import Name, parse_name
from .state import ENV_URL, GatewayInfo, discover

if TYPE_CHECKING:
    from ..client import Client
    from ..config import Settings
    from .server import Gateway

__all__ = ["ENV_URL", "GatewayInfo", "discover", "fileset", "gateway", "gateway_url",
           "install", "running"]


def gateway(client: Client | None = None, *, port: int = 0, threads: int = 8,
            bind: str = "127.0.0.1", unix_socket: str | None = None,
            cache: bool | None = None, record: bool = False) -> Gateway:
    """A gateway in this process, serving from a background thread; use as a context
    manager (``with htpdata.gateway() as gw: gw.url(name)``) or call ``.stop()``.

    It sets ``HTPDATA_GATEWAY_URL`` while it runs, so programs this process starts (a ROOT
    macro, ``htpdata url --gateway``) find it. ``record=True`` also writes the state file, as
    ``htpdata serve`` does.
    """
    from .server import Gateway, GatewayOptions

    opts = GatewayOptions(port=port, bind=bind, threads=threads, unix_socket=unix_socket,
                          cache=cache)
    return Gateway(client, opts, record=record).start()


def running(environ: Mapping[str, str] | None = None) -> GatewayInfo:
    """This user's running gateway on this node, or :class:`GatewayError` saying how to
    start one."""
    info = discover(environ)
    if info is None:
        raise GatewayError("no htpdata gateway is running for you on this node; start one "
                           "with 'htpdata serve' (or htpdata.gateway() in Python)")
    return info


def gateway_url(name: str | Name, environ: Mapping[str, str] | None = None) -> str:
    """The URL of ``name`` through this user's running gateway (what ROOT users paste into
    ``RDataFrame`` or ``TChain::Add``)."""
    return running(environ).url(name)


def fileset(data: dict[str, Any], info: GatewayInfo) -> dict[str, Any]:
    """A fileset (``Client.fileset``'s shape) with gateway URLs instead of ``htpdata://``."""
    from ..names import from_fsspec_path

    out: dict[str, Any] = {}
    for ds, entry in data.items():
        files = {}
        for url, tree in entry["files"].items():
            name = from_fsspec_path(url.removeprefix("htpdata://")) if url.startswith(
                "htpdata://") else parse_name(url)
            files[info.url(name)] = tree
        out[ds] = {**entry, "files": files}
    return out


def install(client: Any, *, port: int | None = None, threads: int = 8,
            settings: Settings | None = None, root: bool = False) -> GatewayInfo:
    """Run one gateway per node and user on a Dask cluster (see :mod:`.dask`)."""
    from .dask import install as _install

    return _install(client, port=port, threads=threads, settings=settings, root=root)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Gateway:
        return gateway(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
