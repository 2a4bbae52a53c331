"""Transports: how bytes move for each URL scheme. Chosen by :class:`Transports`."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import InvalidNameError
from ..hedging import Latency
from ..names import URLCredential, split_credentials
from .auth import Credentials, discover_credentials
from .base import Transport, translate

if TYPE_CHECKING:
    from ..config import TimeoutSettings
    from ..replicas import Replica
    from .http import HTTPTransport
    from .proxy import ProxyTier

__all__ = ["Credentials", "Transport", "Transports", "discover_credentials", "translate"]


class Transports:
    """One transport per scheme family, created on first use and shared."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.creds = discover_credentials(settings.auth, environ)
        self._by_scheme: dict[str, Transport] = {}
        self._http_transport: HTTPTransport | None = None
        self._proxy: ProxyTier | None = None
        self._lock = threading.Lock()
        self.latency = Latency()
        """First-request latency of this client's reads, for hedging (:mod:`htpdata.hedging`)."""

    @property
    def proxy(self) -> ProxyTier | None:
        """The site's proxy (``replicas.proxy``) with its health in this process; None when
        none is configured."""
        if not self.settings.replicas.proxy:
            return None
        with self._lock:
            if self._proxy is None:
                from .proxy import ProxyTier

                self._proxy = ProxyTier(self.settings.replicas, self.settings.timeouts,
                                        self._make_proxy_transport)
            return self._proxy

    def _make_proxy_transport(self, timeouts: TimeoutSettings) -> Transport:
        scheme = self.settings.replicas.proxy.split("://", 1)[0]
        if scheme in ("root", "xroot"):
            import os

            from .auth import export_for_xrootd
            from .xrootd import XRootDTransport

            self.for_url("root://proxy//")  # the client's process-wide set-up, once
            export_for_xrootd(self.creds, self.settings.auth, os.environ)
            return XRootDTransport(timeouts, configure=False)
        from .http import HTTPTransport

        return HTTPTransport(timeouts, self.creds)

    def for_url(self, url: str) -> Transport:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        transport = self._by_scheme.get(scheme)
        if transport is not None:
            return transport
        # One transport per scheme even when many threads ask first at once: each XRootD
        # transport keeps its own pool of open handles, and a second pool would open again.
        with self._lock:
            transport = self._by_scheme.get(scheme)
            if transport is None:
                transport = self._by_scheme[scheme] = self._make(scheme, url)
            return transport

    def _make(self, scheme: str, url: str) -> Transport:
        transport: Transport
        if scheme in ("root", "xroot"):
            import os

            from .auth import export_for_xrootd
            from .xrootd import XRootDTransport

            export_for_xrootd(self.creds, self.settings.auth, os.environ)
            transport = XRootDTransport(self.settings.timeouts)
        elif scheme in ("davs", "https", "http", "dav"):
            transport = self._http()
        elif scheme == "file":
            from .local import LocalTransport

            transport = LocalTransport()
        else:
            raise InvalidNameError(url, f"no transport for scheme {scheme!r}", part=scheme)
        return transport

    def for_replica(self, rep: Replica) -> Transport:
        """The transport for a replica, sending the credential the user wrote into its URL
        (``rep.credential``) with each request. Callers pass ``rep.url`` as usual."""
        transport = self.for_url(rep.url)
        if rep.credential is None:
            return transport
        return _WithCredential(transport, rep.credential)

    def prepare(self, url: str | Replica) -> None:
        """Get ready to read ``url`` soon, where a transport keeps open files (XRootD opens
        and keeps the handle); nothing elsewhere."""
        if isinstance(url, str):
            self.for_url(url).prepare(url)
        else:
            self.for_replica(url).prepare(url.url)

    def _made(self, url: str | Replica) -> Transport | None:
        """The transport of ``url``'s scheme if one was made (one not made holds nothing),
        sending the replica's credential if it has one."""
        name = url if isinstance(url, str) else url.url
        transport = self._by_scheme.get(name.split("://", 1)[0] if "://" in name else "file")
        if transport is not None and not isinstance(url, str) and url.credential is not None:
            return _WithCredential(transport, url.credential)
        return transport

    def release(self, url: str | Replica) -> None:
        """Done with ``url`` for now: let its transport close what it holds open."""
        transport = self._made(url)
        if transport is not None:
            transport.release(url if isinstance(url, str) else url.url)

    def forget(self, url: str | Replica) -> None:
        """``url`` was rewritten: its transport drops what remembers the old content."""
        transport = self._made(url)
        if transport is not None:
            transport.forget(url if isinstance(url, str) else url.url)

    def close(self) -> bool:
        """Close every transport made (pooled connections, open handles, their threads);
        False when something could not be closed in time and may still be open."""
        with self._lock:
            made = list({id(t): t for t in self._by_scheme.values()}.values())
            self._by_scheme.clear()
            self._http_transport = None
            proxy = self._proxy
        closed = [t.close() for t in made]
        if proxy is not None:
            closed.append(proxy.close())  # its health is kept: the process still knows it
        return all(closed)

    def _http(self) -> HTTPTransport:
        from .http import HTTPTransport

        if self._http_transport is None:
            self._http_transport = HTTPTransport(self.settings.timeouts, self.creds)
        return self._http_transport


class _WithCredential(Transport):
    """A transport that sends a URL credential: the request goes to ``credential.apply(url)``,
    and what comes back names the credential-free URL again (infos, listings). Made per use;
    closing it leaves the shared transport underneath alone."""

    def __init__(self, transport: Transport, credential: URLCredential) -> None:
        self.transport = transport
        self.credential = credential
        self.schemes = transport.schemes

    def _url(self, url: str) -> str:
        return self.credential.apply(url)

    @staticmethod
    def _clean(info: dict[str, Any]) -> dict[str, Any]:
        name = info.get("name")
        return {**info, "name": split_credentials(name)[0]} if isinstance(name, str) else info

    def info(self, url: str) -> dict[str, Any]:
        return self._clean(self.transport.info(self._url(url)))

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return self.transport.cat_ranges(self._url(url), ranges)

    def ls(self, url: str) -> list[dict[str, Any]]:
        return [self._clean(e) for e in self.transport.ls(self._url(url))]

    def checksum(self, url: str) -> str | None:
        return self.transport.checksum(self._url(url))

    def filesystem(self, url: str) -> tuple[Any, str]:
        return self.transport.filesystem(self._url(url))

    def prepare(self, url: str) -> None:
        self.transport.prepare(self._url(url))

    def release(self, url: str) -> None:
        self.transport.release(self._url(url))

    def forget(self, url: str) -> None:
        self.transport.forget(self._url(url))
