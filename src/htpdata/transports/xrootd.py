"""``root://`` through fsspec-xrootd and the XRootD client: stat, vector reads, writes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..config import TimeoutSettings
from .base import translate

__all__ = ["XRootDTransport"]

_env_lock = threading.Lock()
_env_applied: tuple[int, int] | None = None


def _configure_client(timeouts: TimeoutSettings) -> None:
    """Bound the XRootD client's own retries so a dead server fails over instead of hanging.

    Its defaults retry a connection for minutes (5 x 120 s windows) and wait 1800 s for a
    request, checking timeouts only every 15 s; htpdata's timeouts replace them. These are
    process-wide settings of the XRootD client: the last client configured wins.
    """
    global _env_applied
    connect = max(1, round(timeouts.connect))
    read = max(1, round(timeouts.read))
    with _env_lock:
        if _env_applied == (connect, read):
            return
        from XRootD import client as xrd_client

        put: Callable[[str, int], object] = getattr(xrd_client, "EnvPutInt")  # noqa: B009
        put("ConnectionWindow", connect)
        put("ConnectionRetry", 1)
        put("RequestTimeout", read)
        put("StreamTimeout", read)
        put("StreamErrorWindow", 0)
        put("TimeoutResolution", 1)
        _env_applied = (connect, read)


class XRootDTransport:
    schemes: tuple[str, ...] = ("root",)

    def __init__(self, timeouts: TimeoutSettings) -> None:
        _configure_client(timeouts)
        self.timeout = max(1, round(timeouts.read))

    def filesystem(self, url: str) -> tuple[Any, str]:
        from fsspec_xrootd import XRootDFileSystem

        kwargs = XRootDFileSystem._get_kwargs_from_urls(url)
        # No listings cache: another process may create or remove files at any moment, and
        # fsspec-xrootd answers stat from a stale listing when one is cached.
        fs = XRootDFileSystem(timeout=self.timeout, use_listings_cache=False, **kwargs)
        return fs, XRootDFileSystem._strip_protocol(url)

    def info(self, url: str) -> dict[str, Any]:
        fs, path = self.filesystem(url)
        try:
            info = fs.info(path)
        except Exception as exc:
            raise translate(exc, url, what="stat") from exc
        return {"name": url, "size": info["size"], "type": info["type"]}

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        fs, path = self.filesystem(url)
        try:
            if len(ranges) == 1:
                start, end = ranges[0]
                return [fs.cat_file(path, start=start, end=end)]
            out = fs.cat_ranges([path] * len(ranges), [r[0] for r in ranges],
                                [r[1] for r in ranges])
        except Exception as exc:
            raise translate(exc, url) from exc
        for item in out:
            if isinstance(item, BaseException):
                raise translate(item, url) from item
        return list(out)

    def ls(self, url: str) -> list[dict[str, Any]]:
        fs, path = self.filesystem(url)
        try:
            entries = fs.ls(path, detail=True)
        except Exception as exc:
            raise translate(exc, url, what="list") from exc
        prefix = url.split("//", 2)
        base = f"{prefix[0]}//{prefix[1]}/"
        return [{"name": base + "/" + e["name"].lstrip("/"), "size": e["size"],
                 "type": e["type"]} for e in entries]

    def checksum(self, url: str) -> str | None:
        fs, path = self.filesystem(url)
        try:
            algo, value = fs.checksum(path) if hasattr(fs, "checksum") else (None, None)
            if algo is None:
                from fsspec.asyn import sync

                algo, value = sync(fs.loop, fs._checksum, path)
        except Exception as exc:
            raise translate(exc, url, what="checksum") from exc
        return str(value).lower().rjust(8, "0") if algo == "adler32" else None
