"""What every benchmark shares: the clock, isolated child runs, sites, results and ratios.

A benchmark is a ``main(argv)`` that builds a :class:`Bench`, starts its sites with the helpers
here (which reuse :mod:`htpdata.testing`), runs each case as a new process through
:meth:`Bench.measure` (or :func:`run` for whole commands), and ends with :func:`write_results`
and :func:`print_targets`. Peers run in the same run and figures are printed as ratios: absolute
times on a shared 2-core machine are noise.

::

    import _harness as h

    deadline = h.Deadline(args.max_seconds)
    h.exit_on_sigterm()
    h.compile_htpdata()
    with ExitStack() as stack:
        work = h.workdir(stack, "mybench")
        origin = h.xrootd_origin(stack, {"/store/bench/x.root": path})
        b = h.Bench(h.isolated_env(work), work, deadline, run_timeout=300)
        b.measure("htpdata cold", "htpdata.cat(name)", h.child("my_case.py", spec))
        h.write_results(args.json, {**h.run_meta(), "cases": b.rows()})

A child prints one JSON object on its last stdout line (``seconds`` and whatever it measured);
:meth:`Bench.measure` records it, or the error, and prints one progress line.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from htpdata.testing import XRootDServer
    from wan import WanProxy

__all__ = [
    "CHILDREN",
    "DATA",
    "HERE",
    "RESULTS",
    "Bench",
    "Case",
    "Deadline",
    "OutOfTime",
    "Ran",
    "child",
    "compile_htpdata",
    "exit_on_sigterm",
    "fmt",
    "isolated_env",
    "print_targets",
    "ratio",
    "run",
    "run_meta",
    "source_state",
    "tail",
    "target",
    "workdir",
    "write_results",
    "xcache",
    "xrootd_origin",
]

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
CHILDREN = HERE / "children"
"""Child programs (real modules, checked by ruff and mypy), run as ``python FILE ARGS``."""

# Variables that would let the caller's own settings leak into a measurement.
_FOREIGN = ("HTPDATA_", "XRD_", "RUCIO_", "X509_", "BEARER_TOKEN")


# -- the clock ---------------------------------------------------------------------------------
class OutOfTime(Exception):
    """The run's wall-clock bound (``--max-seconds``) was reached."""


class Deadline:
    """The wall-clock bound of a whole run (``time.monotonic``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self, cap: float, what: str = "", need: float = 5.0) -> float:
        """Seconds one step may take (at most ``cap``); raises :class:`OutOfTime` when fewer
        than ``need`` are left."""
        left = self.remaining()
        if left < need:
            raise OutOfTime(what or f"the {self.seconds:.0f} s bound")
        return min(cap, left)

    def passed(self) -> bool:
        return time.monotonic() > self.at


def exit_on_sigterm() -> None:
    """SIGTERM exits through ``sys.exit`` so ``finally`` blocks stop the servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# -- children ----------------------------------------------------------------------------------
def isolated_env(work: Path, base: Mapping[str, str] | None = None,
                 **extra: str) -> dict[str, str]:
    """The environment of a measured child: the caller's, without htpdata, XRootD, Rucio or
    credential settings, with its own XDG config and cache homes under ``work`` (so no user
    configuration leaks in and nothing lands in ``~/.cache``), plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(_FOREIGN)}
    env.update(XDG_CONFIG_HOME=str(work / "xdg-config"), XDG_CACHE_HOME=str(work / "xdg-cache"),
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def compile_htpdata() -> None:
    """Write htpdata's bytecode once, as installing a wheel does.

    An editable install has none, and with ``PYTHONDONTWRITEBYTECODE=1`` (set on this machine and
    in :func:`isolated_env`) every new process would compile htpdata from source (~60 ms per CLI
    start) while the peers' packages have bytecode from pip. Timed commands then start as
    installed ones do.
    """
    import htpdata

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(htpdata.__file__).parent)],
                   check=False, capture_output=True, timeout=120)


def child(program: str, *args: Any) -> list[str]:
    """The command running ``benchmarks/children/PROGRAM`` (or a benchmark file) with ``args``
    (dicts and lists as JSON, the rest as text)."""
    path = CHILDREN / program if (CHILDREN / program).exists() else HERE / program
    return [sys.executable, str(path),
            *(json.dumps(a) if isinstance(a, dict | list) else str(a) for a in args)]


@dataclass
class Ran:
    """One finished command."""

    rc: int
    out: str
    err: str
    seconds: float
    """Spawn to exit."""
    first_out: float | None
    """Spawn to the first byte on stdout (with ``PYTHONUNBUFFERED=1``: when a Python child
    printed), so the time a child takes to exit after it answered shows."""

    def last_json(self) -> dict[str, Any] | None:
        """The child's answer: the JSON object on its last stdout line, if it printed one."""
        lines = self.out.strip().splitlines()
        if not lines:
            return None
        try:
            value = json.loads(lines[-1])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def run(cmd: Sequence[str], env: Mapping[str, str], timeout: float,
        cwd: Path | None = None) -> Ran:
    """Run ``cmd`` in its own session; on timeout kill its whole process group and raise
    :class:`subprocess.TimeoutExpired`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    out: list[bytes] = []
    err: list[bytes] = []
    first: list[float] = []

    def pump(stream: Any, into: list[bytes], mark: bool) -> None:
        while data := stream.read1(1 << 16):
            if mark and not first:
                first.append(time.perf_counter() - t0)
            into.append(data)

    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, True), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, err, False), daemon=True)]
    for t in pumps:
        t.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group is still its own
        proc.wait()
        raise
    finally:
        for t in pumps:
            t.join(10)
    return Ran(proc.returncode, b"".join(out).decode(errors="replace"),
               b"".join(err).decode(errors="replace"), time.perf_counter() - t0,
               first[0] if first else None)


def tail(text: str, width: int = 200) -> str:
    """The last non-empty line of ``text`` (a child's error), cut to ``width``."""
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:width] if lines else "no output"


# -- cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    """The runs of one labelled case; a run is the child's JSON answer plus ``process_s`` (and
    the WAN counters when the bench has an emulator), or ``{"error": ...}``."""

    label: str
    what: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r.get("error") is None and r.get("seconds") is not None]

    @property
    def times(self) -> list[float]:
        return [float(r["seconds"]) for r in self.ok()]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def median_of(self, key: str) -> float | None:
        values = [r[key] for r in self.ok() if r.get(key) is not None]
        return statistics.median(values) if values else None

    @property
    def errors(self) -> list[str]:
        return [str(r["error"]) for r in self.runs if r.get("error") is not None]


class Bench:
    """The environment, the clock, the WAN emulator (if any) and the cases of one run."""

    def __init__(self, env: Mapping[str, str], work: Path, deadline: Deadline,
                 run_timeout: float, wan: WanProxy | None = None) -> None:
        self.env = dict(env)
        self.work = work
        self.deadline = deadline
        self.run_timeout = run_timeout
        self.wan = wan
        self.cases: dict[str, Case] = {}

    def case(self, label: str, what: str = "") -> Case:
        return self.cases.setdefault(label, Case(label, what))

    def measure(self, label: str, what: str, cmd: Sequence[str],
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                show: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
        """Run one child, record its JSON answer under ``label`` and print one line.

        Raises :class:`OutOfTime` when the run's bound is (nearly) reached; a child that fails
        or times out is recorded as an error, not raised. With a WAN emulator, the bytes that
        crossed it (waiting until it has been quiet for 0.5 s, so what a server goes on fetching
        after its client is charged to this run) are added as ``wan_down``, ``wan_up``,
        ``wan_connections`` and ``wan_sends_up``.
        """
        timeout = self.deadline.timeout(self.run_timeout, label)
        before = self.wan.counters if self.wan is not None else None
        try:
            ran = run(cmd, env if env is not None else self.env, timeout, cwd)
            answer = ran.last_json() if ran.rc == 0 else None
            result: dict[str, Any] = answer if answer is not None else {
                "error": f"exit {ran.rc}: {tail(ran.err or ran.out)}"}
            result["process_s"] = ran.seconds
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {timeout:.0f} s", "process_s": timeout}
        if self.wan is not None and before is not None:
            self.wan.wait_idle(quiet=0.5, timeout=max(1.0, min(60.0, self.deadline.remaining())))
            used = self.wan.counters - before
            result.update(wan_down=used.down, wan_up=used.up, wan_connections=used.connections,
                          wan_sends_up=used.sends_up)
        self.case(label, what).runs.append(result)
        if result.get("error") is not None:
            shown = f"FAILED: {result['error']}"
        elif show is not None:
            shown = show(result)
        else:
            shown = f"{result.get('seconds', 0.0):7.3f} s (process {result['process_s']:5.2f} s)"
        print(f"  {label:<34} {shown}", flush=True)
        return result


# -- sites -------------------------------------------------------------------------------------
def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copyfile(src, dst)


def xrootd_origin(stack: ExitStack, files: Mapping[str, Path], name: str = "origin",
                  **kwargs: Any) -> XRootDServer:
    """A read-only XRootD origin without TLS serving ``files`` (``{"/store/x": source}``, hard
    links where possible), stopped and removed when ``stack`` closes."""
    from htpdata.testing import XRootDServer

    server = XRootDServer(name=f"bench-{name}-{os.getpid()}", tls=False,
                          writable=kwargs.pop("writable", False), **kwargs)
    stack.callback(server.cleanup)
    for lfn, src in files.items():
        _link(src, server.data / lfn.lstrip("/"))
    return server.start()


XCACHE_CONFIG = """\
ofs.osslib libXrdPss.so
pss.cachelib libXrdPfc.so
pss.origin localhost:{port}
pfc.ram 2g
pfc.blocksize 1M
pfc.prefetch 10
pfc.diskusage 0.90 0.95"""


@contextlib.contextmanager
def xcache(origin_port: int, name: str = "xcache",
           data: Path | None = None) -> Iterator[XRootDServer]:
    """A fresh XCache (own, empty cache folder; ``data`` to put it somewhere, e.g. on the
    network-filesystem emulator) whose origin is ``localhost:origin_port``."""
    from htpdata.testing import XRootDServer

    server = XRootDServer(data, name=f"bench-{name}-{os.getpid()}", tls=False, writable=True,
                          extra_config=XCACHE_CONFIG.format(port=origin_port))
    try:
        yield server.start()
    finally:
        server.cleanup()


def workdir(stack: ExitStack, prefix: str, base: Path | None = None) -> Path:
    """A new work folder (under ``benchmarks/data/`` unless ``base``), removed at the end."""
    parent = base if base is not None else DATA
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"work-{prefix}-{os.getpid()}-", dir=parent))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    return work


# -- results -----------------------------------------------------------------------------------
def source_state() -> str:
    """The checkout's commit, and whether src/ differs from it (others edit it meanwhile)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                              text=True, capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def run_meta(source_at_start: str | None = None, host: Mapping[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    """What every results file records: when, the command, the host (plus ``host``: versions
    of the peers), the load average at the end (the machine is shared) and htpdata's source
    at the start (:func:`source_state`) and now; then ``extra``."""
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average": os.getloadavg(), **(host or {})},
        "htpdata_source": {"start": source_at_start, "end": source_state()},
    }
    meta.update(extra)
    return meta


def write_results(path: Path, data: Mapping[str, Any]) -> None:
    """Write a results file (JSON) beside its final name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    print(f"written {path}", flush=True)


def ratio(value: float | None, ref: float | None) -> float | None:
    """``value / ref``, or None when either is missing (or ``ref`` is zero)."""
    return value / ref if value is not None and ref else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def target(name: str, value: float | None, bound: float, higher: bool = False
           ) -> dict[str, Any]:
    """One checked target: met when ``value <= bound`` (``>=`` with ``higher``)."""
    ok = None if value is None else value >= bound if higher else value <= bound
    status = "not measured" if ok is None else "met" if ok else "NOT met"
    return {"target": name, "value": value, "bound": bound, "status": status}


def print_targets(title: str, checks: Sequence[Mapping[str, Any]], console: Any = None,
                  width: int = 60) -> None:
    """Print checked targets, one coloured line each (``console``: a rich Console)."""
    if console is None:
        from rich.console import Console

        console = Console(width=160)
    console.print(title)
    for t in checks:
        colour = {"met": "green", "NOT met": "red"}.get(str(t["status"]), "yellow")
        console.print(f"  {t['target']:<{width}} {fmt(t['value']):>7}  "
                      f"[{colour}]{t['status']}[/{colour}]")
