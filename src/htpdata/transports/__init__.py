"""Transports: how bytes move for each URL scheme. Chosen by :class:`Transports`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import InvalidNameError
from .auth import Credentials, discover_credentials
from .base import Transport, translate

if TYPE_CHECKING:
    from .http import HTTPTransport

__all__ = ["Credentials", "Transport", "Transports", "discover_credentials", "translate"]


class Transports:
    """One transport per scheme family, created on first use and shared."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.creds = discover_credentials(settings.auth, environ)
        self._by_scheme: dict[str, Transport] = {}
        self._http_transport: HTTPTransport | None = None
        self._lock = threading.Lock()

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

    def prepare(self, url: str) -> None:
        """Get ready to read ``url`` soon, where a transport keeps open files (XRootD opens
        and keeps the handle); nothing elsewhere."""
        prepare = getattr(self.for_url(url), "prepare", None)
        if prepare is not None:
            prepare(url)

    def release(self, url: str) -> None:
        """Done with ``url`` for now: let its transport close what it holds open. Never
        creates a transport (one not made yet holds nothing)."""
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        release = getattr(self._by_scheme.get(scheme), "release", None)
        if release is not None:
            release(url)

    def close(self) -> None:
        """Close pooled connections (HTTP clients); XRootD's are the library's own."""
        for t in {id(t): t for t in self._by_scheme.values()}.values():
            close = getattr(t, "close", None)
            if close is not None:
                close()
        self._by_scheme.clear()
        self._http_transport = None

    def _http(self) -> HTTPTransport:
        from .http import HTTPTransport

        if self._http_transport is None:
            self._http_transport = HTTPTransport(self.settings.timeouts, self.creds)
        return self._http_transport
