"""Progress for a stage: a live display on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts files and bytes; ``mode`` is ``rich``, ``lines`` or ``none``."""

    def __init__(self, total_files: int, total_bytes: int, mode: str = "auto",
                 stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "lines"
        self.mode = mode
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = self.failed = 0
        self.every = every
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last = self._t0
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]stage"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[files]}"), transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task("stage", total=self.total_bytes or None,
                                             files=self._files_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)
        elif self.mode == "lines":
            self._line()

    def _files_text(self) -> str:
        fail = f", [red]{self.failed} failed[/]" if self.failed else ""
        return f"{self.files}/{self.total_files} files{fail}"

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
        self._update()

    def file_done(self, ok: bool) -> None:
        with self._lock:
            self.files += 1
            self.failed += 0 if ok else 1
        self._update(force=True)

    def _update(self, force: bool = False) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.bytes, files=self._files_text())
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._line()

    def _line(self) -> None:
        elapsed = max(1e-9, time.monotonic() - self._t0)
        rate = self.bytes / elapsed
        left = (self.total_bytes - self.bytes) / rate if rate > 0 and self.total_bytes else 0
        self.stream.write(f"stage: {self.files}/{self.total_files} files, "
                          f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB, "
                          f"{rate / 1e6:.1f} MB/s, ETA {left:.0f} s, {self.failed} failed\n")
        self.stream.flush()
