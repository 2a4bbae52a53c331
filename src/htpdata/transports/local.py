"""``file://`` URLs and plain paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..adler32 import adler32_file
from .base import Transport, translate

__all__ = ["LocalTransport", "adler32_file"]


def _path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


class LocalTransport(Transport):
    schemes: tuple[str, ...] = ("file",)

    def filesystem(self, url: str) -> tuple[Any, str]:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), _path(url)

    def info(self, url: str) -> dict[str, Any]:
        try:
            st = os.stat(_path(url))
        except Exception as exc:
            raise translate(exc, url, what="stat") from exc
        return {"name": url, "size": st.st_size,
                "type": "directory" if Path(_path(url)).is_dir() else "file"}

    def cat_ranges(self, url: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            with open(_path(url), "rb") as fh:
                out = []
                for start, end in ranges:
                    fh.seek(start)
                    out.append(fh.read(max(0, end - start)))
                return out
        except Exception as exc:
            raise translate(exc, url) from exc

    def ls(self, url: str) -> list[dict[str, Any]]:
        try:
            return [{"name": f"file://{e.path}", "size": e.stat().st_size,
                     "type": "directory" if e.is_dir() else "file"}
                    for e in sorted(os.scandir(_path(url)), key=lambda e: e.name)]
        except Exception as exc:
            raise translate(exc, url, what="list") from exc

    def checksum(self, url: str) -> str | None:
        try:
            return adler32_file(_path(url))
        except Exception as exc:
            raise translate(exc, url, what="checksum") from exc
