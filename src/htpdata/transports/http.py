"""``davs://``, ``https://`` and ``http://``: HTTP range requests, WebDAV listings and writes.

Reads are plain ``GET`` with a ``Range`` header on one pooled :mod:`httpx` client, several
ranges in parallel (so a batch costs about one round trip, like an XRootD vector read).
Listings and writes go through webdav4. ``davs://`` is WebDAV over TLS, so HTTPS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .._redact import install_filter
from ..config import TimeoutSettings
from .auth import Credentials
from .base import Transport, http_error, translate

__all__ = ["BearerAuth", "HTTPTransport", "to_http_url"]

_MAX_PARALLEL = 16


class BearerAuth(httpx.Auth):
    """The token of the moment on every request; a 401/403 re-reads (or refreshes) the token
    once and, when that gives another token, sends the request once more with it."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.retried = 0
        """Requests sent again with a renewed token (what tests count)."""
        self.sent_expired = 0
        """Requests sent with a token past its ``exp`` (none should be, while it can be
        renewed)."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                            None]:
        tokens = self.creds.tokens
        used = tokens.token() if tokens is not None else None
        if used:
            request.headers["Authorization"] = f"Bearer {used}"
            left = tokens.seconds_left() if tokens is not None else None
            if left is not None and left < 0:
                self.sent_expired += 1
        response = yield request
        if response.status_code in (401, 403) and tokens is not None and tokens.renew(used):
            fresh = tokens.token()
            if fresh:
                request.headers["Authorization"] = f"Bearer {fresh}"
                self.retried += 1
                yield request


def to_http_url(url: str) -> str:
    if url.startswith("davs://"):
        return "https://" + url[len("davs://"):]
    if url.startswith("dav://"):
        return "http://" + url[len("dav://"):]
    return url


class HTTPTransport(Transport):
    schemes: tuple[str, ...] = ("davs", "https", "http")

    def __init__(self, timeouts: TimeoutSettings, creds: Credentials) -> None:
        install_filter(logging.getLogger("httpx"))  # its INFO line names each request's URL
        self.creds = creds
        self.timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ssl = creds.ssl_context()
        self._webdav: dict[str, Any] = {}
        self.auth = BearerAuth(creds)

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    auth=self.auth, verify=self._ssl,
                    timeout=self.timeout, follow_redirects=True,
                    limits=httpx.Limits(max_connections=_MAX_PARALLEL,
                                        max_keepalive_connections=_MAX_PARALLEL))
            return self._client

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_MAX_PARALLEL, thread_name_prefix="htpdata-http")
            return self._pool

    def close(self) -> bool:
        """Close the pooled connections and stop the range-request threads."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
            for fs in self._webdav.values():
                fs.client.http.close()
            self._webdav.clear()
        return True

    def filesystem(self, url: str) -> tuple[Any, str]:
        from webdav4.fsspec import WebdavFileSystem

        http = to_http_url(url)
        scheme, rest = http.split("://", 1)
        host = rest.split("/", 1)[0]
        path = rest.split("/", 1)[1] if "/" in rest else ""
        base = f"{scheme}://{host}/"
        with self._lock:
            fs = self._webdav.get(base)
            if fs is None:
                fs = WebdavFileSystem(base, auth=self.auth, verify=self._ssl,
                                      timeout=self.timeout, skip_instance_cache=True)
                self._webdav[base] = fs
        return fs, path

    def _request(self, method: str, url: str, what: str,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        """One request; a status that is not a success raises through the HTTP table."""
        try:
            resp = self.client.request(method, to_http_url(url), headers=headers)
        except Exception as exc:
            raise translate(exc, url, what=what) from exc
        if not resp.is_success:
            raise http_error(resp.status_code, resp.reason_phrase, url, what=what)
        return resp

    def info(self, url: str) -> dict[str, Any]:
        resp = self._request("HEAD", url, "stat")
        size = resp.headers.get("content-length")
        return {"name": url, "size": int(size) if size is not None else None, "type": "file"}

    def _get_range(self, url: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        resp = self._request("GET", url, "read", {"Range": f"bytes={start}-{end - 1}"})
        data = resp.content
        if resp.status_code == 200:  # server ignored Range: cut the piece out ourselves
            data = data[start:end]
        return data

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if len(ranges) <= 1:
            return [self._get_range(url, s, e) for s, e in ranges]
        futures = [self._executor().submit(self._get_range, url, s, e) for s, e in ranges]
        return [f.result() for f in futures]

    def ls(self, url: str) -> list[dict[str, Any]]:
        fs, path = self.filesystem(url)
        try:
            entries = fs.ls(path, detail=True)
        except Exception as exc:
            raise translate(exc, url, what="list") from exc
        base = url.split("://", 1)[0] + "://" + url.split("://", 1)[1].split("/", 1)[0]
        out = []
        for e in entries:
            # XrdHttp's PROPFIND does not mark files or folders; infer it.
            typ = e.get("type") or ("directory" if e.get("size") in (None, 0)
                                    and not e.get("content_type") else "file")
            out.append({"name": f"{base}/{e['name'].lstrip('/')}", "size": e.get("size") or 0,
                        "type": typ})
        return out

    def checksum(self, url: str) -> str | None:
        resp = self._request("HEAD", url, "checksum", {"Want-Digest": "adler32"})
        for part in resp.headers.get("digest", "").split(","):
            algo, _, value = part.strip().partition("=")
            if algo.lower() == "adler32" and value:
                return str(value).lower().rjust(8, "0")
        return None
