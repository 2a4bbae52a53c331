"""Headless Chromium (Debian ``chromium``) driven over the DevTools protocol on a pipe.

Used by the docs build (the HTML report's picture) and by the tests that look at pages as a
reader would: a screenshot, the console messages, and values computed in the page (for example
whether a code block is wider than its box). ``--remote-debugging-pipe`` speaks the protocol on
file descriptors 3 (commands in) and 4 (replies out), one JSON message per NUL-terminated
chunk, so no port is opened and no websocket library is needed. The browser runs with a fresh
profile, no network services of its own, and is stopped by PID.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Browser", "BrowserError", "PageView", "chromium_path"]

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--disable-default-apps", "--mute-audio",
          "--hide-scrollbars", "--remote-debugging-pipe"]


class BrowserError(RuntimeError):
    """Chromium is missing, exited, did not answer in time, or a page failed to load."""


def chromium_path() -> str | None:
    """The Chromium binary on PATH (Debian names it ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageView:
    """What one page looked like: its screenshot (PNG), its console and its exceptions."""

    url: str
    png: bytes
    console: list[dict[str, Any]] = field(default_factory=list)
    """``{"level": "error"|"warning"|..., "text": ...}`` for every console message and log
    entry (a failed resource load is a log entry at level ``error``)."""
    exceptions: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    """The results of the expressions given to :meth:`Browser.view`."""

    @property
    def errors(self) -> list[str]:
        return [m["text"] for m in self.console if m["level"] == "error"] + self.exceptions


class Browser:
    """One headless Chromium process; :meth:`view` opens a page in a new tab of a given size.

    ``with Browser() as b: v = b.view(path, width=1200, height=900, evaluate={...})``
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile = ""
        self._to = self._from = -1
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> Browser:
        exe = chromium_path()
        if exe is None:
            raise BrowserError("chromium is not installed (Debian package chromium)")
        self._profile = tempfile.mkdtemp(prefix="htpdata-chromium-")
        cmd_r, cmd_w = os.pipe()    # we write commands, the browser reads fd 3
        out_r, out_w = os.pipe()    # the browser writes fd 4, we read replies

        def fds() -> None:
            # In the child, before exec: the two ends at 3 and 4 (copied above 10 first, as
            # either may be 3 or 4 already); subprocess keeps 3 and 4 open (pass_fds).
            high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._proc = subprocess.Popen(
            [exe, *_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=fds, start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)
        self._to, self._from = cmd_w, out_r
        self.call("Target.setDiscoverTargets", {"discover": False})  # readiness: it answers
        return self

    def stop(self) -> None:
        for fd in (self._to, self._from):
            if fd >= 0:
                os.close(fd)
        self._to = self._from = -1
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = ""

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"chromium did not answer within {self.timeout:.0f} s")
            ready, _, _ = select.select([self._from], [], [], left)
            if ready:
                chunk = os.read(self._from, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium exited")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._events.append(reply)

    def _wait_event(self, method: str, session: str, deadline: float) -> dict[str, Any]:
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == method and ev.get("sessionId") == session:
                    return self._events.pop(i)
            reply = self._read_message(deadline)
            if "method" in reply:
                self._events.append(reply)

    # -- pages ------------------------------------------------------------------------------
    def view(self, page: str | Path, width: int = 1200, height: int = 900, *,
             evaluate: dict[str, str] | None = None, full_page: bool = False) -> PageView:
        """Load ``page`` (a path or URL) in a ``width`` x ``height`` viewport, wait for its load
        event, evaluate each JavaScript expression of ``evaluate`` (its value must be JSON),
        and take a screenshot (of the whole page with ``full_page``)."""
        url = Path(page).resolve().as_uri() if isinstance(page, Path) else page
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable", {}, session)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1,
                       "mobile": False}, session)
            nav = self.call("Page.navigate", {"url": url}, session)
            if nav.get("errorText"):
                raise BrowserError(f"{url}: {nav['errorText']}")
            self._wait_event("Page.loadEventFired", session,
                             time.monotonic() + self.timeout)
            # fonts and layout settle after load; a last animation frame makes sure
            self.call("Runtime.evaluate", {"expression": "document.fonts.ready.then(() => "
                      "new Promise(r => requestAnimationFrame(() => r(1))))",
                      "awaitPromise": True}, session)
            values = {}
            for key, expr in (evaluate or {}).items():
                res = self.call("Runtime.evaluate", {"expression": expr,
                                "returnByValue": True, "awaitPromise": True}, session)
                if "exceptionDetails" in res:
                    raise BrowserError(f"{key}: {res['exceptionDetails'].get('text')}")
                values[key] = res["result"].get("value")
            shot: dict[str, Any] = {"format": "png"}
            if full_page:
                shot["captureBeyondViewport"] = True
                size = self.call("Page.getLayoutMetrics", {}, session)["cssContentSize"]
                shot["clip"] = {"x": 0, "y": 0, "width": width,
                                "height": max(height, int(size["height"])), "scale": 1}
            png = base64.b64decode(self.call("Page.captureScreenshot", shot, session)["data"])
            view = PageView(url, png, values=values)
            self._collect(view, session)
            return view
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def _collect(self, view: PageView, session: str) -> None:
        keep = []
        for ev in self._events:
            if ev.get("sessionId") != session:
                keep.append(ev)
                continue
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", "")))
                                for a in p.get("args", []))
                level = {"warning": "warning", "error": "error", "assert": "error"}.get(
                    p.get("type", ""), p.get("type", "log"))
                view.console.append({"level": level, "text": text})
            elif ev["method"] == "Log.entryAdded":
                entry = p.get("entry", {})
                view.console.append({"level": entry.get("level", "info"),
                                     "text": f"{entry.get('text', '')} {entry.get('url', '')}"
                                             .strip()})
            elif ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                view.exceptions.append(d.get("exception", {}).get("description")
                                       or d.get("text", "exception"))
        self._events = keep
