"""Progress of a stage or a copy: a live bar on a terminal, a live HTML line in a notebook,
plain periodic lines otherwise.

``mode="auto"`` picks ``notebook`` inside a Jupyter kernel (the display is updated in place as
bytes arrive, at most a few times a second, and at every finished file), ``rich`` on a terminal,
``lines`` (one line every ``every`` seconds and one at the end) when standard error is piped.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress", "in_notebook"]

NOTEBOOK_EVERY = 0.25  # seconds between two updates of a notebook display


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not in a terminal IPython)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """Counts files and bytes; ``mode`` is ``auto``, ``rich``, ``notebook``, ``lines`` or
    ``none``; ``label`` names the work (``stage``, ``cp``)."""

    def __init__(self, total_files: int, total_bytes: int, mode: str = "auto",
                 stream: TextIO | None = None, every: float = 10.0,
                 label: str = "stage") -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = ("notebook" if in_notebook() else
                    "rich" if self.stream.isatty() else "lines")
        if mode not in ("rich", "notebook", "lines", "none"):
            raise ValueError(f"progress must be auto, rich, notebook, lines or none, got {mode!r}")
        self.mode = mode
        self.label = label
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = self.failed = 0
        self.every = every
        self.updates = 0  # how often the display was redrawn (tests look at it)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last = self._t0
        self._rich: Any = None
        self._task: Any = None
        self._handle: Any = None

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
                TextColumn(f"[bold]{self.label}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[files]}"), transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.label, total=self.total_bytes or None,
                                             files=self._files_text())
        elif self.mode == "notebook":
            from IPython.display import HTML, display

            self._handle = display(HTML(self._html()), display_id=True)
            self._last = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)
        elif self.mode == "notebook":
            self._redraw()
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
        elif self.mode in ("lines", "notebook"):
            now = time.monotonic()
            every = NOTEBOOK_EVERY if self.mode == "notebook" else self.every
            if (force and self.mode == "notebook") or now - self._last >= every:
                self._last = now
                if self.mode == "notebook":
                    self._redraw()
                else:
                    self._line()

    def _numbers(self) -> tuple[float, float]:
        elapsed = max(1e-9, time.monotonic() - self._t0)
        rate = self.bytes / elapsed
        left = (self.total_bytes - self.bytes) / rate if rate > 0 and self.total_bytes else 0
        return rate, left

    def _redraw(self) -> None:
        if self._handle is not None:
            from IPython.display import HTML

            with self._lock:
                self.updates += 1
            self._handle.update(HTML(self._html()))

    def _html(self) -> str:
        rate, left = self._numbers()
        frac = self.bytes / self.total_bytes if self.total_bytes else (
            1.0 if self.files >= self.total_files else 0.0)
        failed = (f' <span style="color:#c00">{self.failed} failed</span>'
                  if self.failed else "")
        return (f'<div style="font-family:monospace">'
                f"<b>{html.escape(self.label)}</b> "
                f'<progress value="{min(1.0, frac):.4f}" max="1" style="width:16em"></progress> '
                f"{self.files}/{self.total_files} files, "
                f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB, "
                f"{rate / 1e6:.1f} MB/s, ETA {left:.0f} s{failed}</div>")

    def _line(self) -> None:
        rate, left = self._numbers()
        self.stream.write(f"{self.label}: {self.files}/{self.total_files} files, "
                          f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB, "
                          f"{rate / 1e6:.1f} MB/s, ETA {left:.0f} s, {self.failed} failed\n")
        self.stream.flush()
