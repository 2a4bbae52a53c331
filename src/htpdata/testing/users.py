"""Real Unix users for the multi-tenant tests: create them (as root) and run htpdata as them.

The shared tier is used by many Unix users who do not trust each other, so its tests must be
run by real users that the kernel tells apart, not by one process pretending::

    tenants = Tenants.start(base)              # as root: group, users, a probe run as a user
    t = tenants.fresh(folder)                  # fresh, empty homes for one test
    r = t.htpdata(t.alice, "cat", "test:/store/x.root", env={"HTPDATA_CACHE_SHARED_DIR": d})
    out = t.python(t.mallory, "import os; result = os.getuid()")
    assert out.unwrap() == t.mallory.uid

Who is who (created idempotently; several test sessions may do it at once):

========== =================================== ===========================================
user       groups                              role
========== =================================== ===========================================
htpalice   htpcms                              a physicist (victim in most tests)
htpbob     htpcms                              another physicist of the same group
htpmallory htpcms                              a hostile co-tenant in the same group
htpcache   htpcms                              the shared tier's owner and trusted writer
htpeve     htpeve (not in htpcms)              a user outside the collaboration group
========== =================================== ===========================================

Every run is ``setpriv --reuid --regid --init-groups`` (util-linux) in a new session with an exact
environment (nothing inherited from the test process: ``PATH``, ``HOME``, ``XDG_*``, ``LANG`` and
what the test passes), stdin closed, and a timeout that kills the whole process group. The
environment goes through ``execve``, never argv, so tokens passed to a run do not show in
``ps`` to the other users. Other users must be able to run the virtual environment: when the
checkout (or the venv) lies under a folder they cannot traverse (CI's clean clone under
``/root``), each run gets a private mount namespace with a read-only bind mount of the checkout
at a world-traversable path instead, so nothing outside the test is loosened. A probe run as a
user decides which of the two works; if neither does, :meth:`Tenants.start` raises
:class:`TenantSetupError` saying why.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GROUP",
    "MEMBERS",
    "OUTSIDER",
    "TRUSTED_WRITER",
    "PyOutcome",
    "RunResult",
    "TenantSetupError",
    "Tenants",
    "UnixUser",
    "UserRunTimeout",
    "ensure_users",
    "make_shared_tier",
]

GROUP = "htpcms"
"""The collaboration group every tenant but the outsider belongs to."""
MEMBERS = ("htpalice", "htpbob", "htpmallory")
TRUSTED_WRITER = "htpcache"
"""The shared tier's owner: the account operators run ``htpdata stage`` and eviction as."""
OUTSIDER = "htpeve"
COMMENT = "htpdata test tenant"
DEFAULT_TIMEOUT = 120.0
_PATH = "/usr/local/bin:/usr/bin:/bin"


class TenantSetupError(RuntimeError):
    """The users or a run as them cannot be set up here; the message says what to change."""


class UserRunTimeout(AssertionError):
    """A run as a user did not finish within its timeout; its process group was killed."""

    def __init__(self, user: str, args: Sequence[str], timeout: float, stdout: bytes,
                 stderr: bytes) -> None:
        self.user, self.command, self.timeout = user, list(args), timeout
        self.stdout, self.stderr = stdout, stderr
        tail = stderr.decode(errors="replace")[-1500:]
        super().__init__(f"run as {user} did not finish within {timeout:g} s and was killed: "
                         f"{' '.join(args)[:300]}\n{tail}")


@dataclass(frozen=True)
class UnixUser:
    """One test user; ``home`` is this test's fresh home (0700, owned by the user)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path

    @property
    def group(self) -> str:
        return grp.getgrgid(self.gid).gr_name


@dataclass(frozen=True)
class RunResult:
    """What a command run as a user returned."""

    user: str
    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def check(self) -> RunResult:
        """Raise AssertionError (with the output) unless the command succeeded."""
        if self.returncode != 0:
            raise AssertionError(f"run as {self.user} exited {self.returncode}: "
                                 f"{' '.join(self.args)[:300]}\n{self.err[-3000:]}")
        return self


@dataclass(frozen=True)
class PyOutcome:
    """What a Python snippet run as a user produced: its ``result`` or the exception it raised.

    ``error`` is the exception's class name and ``error_classes`` its MRO's names (so a test
    can ask ``"StoragePermissionError" in out.error_classes``); ``exit_code`` is an
    :class:`~htpdata.errors.HtpdataError`'s CLI exit code.
    """

    run: RunResult
    result: Any = None
    error: str | None = None
    error_classes: tuple[str, ...] = ()
    message: str = ""
    exit_code: int | None = None
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The snippet's ``result``; AssertionError with its traceback if it raised."""
        if self.error is not None:
            raise AssertionError(f"snippet run as {self.run.user} raised {self.error}: "
                                 f"{self.message}\n{self.traceback[-3000:]}")
        return self.result


# -- creating the users --------------------------------------------------------------------
def _retrying(cmd: list[str], exists: Any) -> None:
    """Run a shadow-utils command, tolerating a concurrent creator and a busy passwd lock."""
    last = ""
    for _ in range(50):
        if exists():
            return
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode == 0 or exists():
            return
        last = p.stderr.strip()
        time.sleep(0.1)  # another session holds /etc/passwd's lock (exit 10) or raced us (9)
    raise TenantSetupError(f"{' '.join(cmd)} failed: {last}")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def ensure_users() -> dict[str, pwd.struct_passwd]:
    """Create the group and the users if missing (root only); idempotent and race-tolerant."""
    if os.geteuid() != 0:
        raise TenantSetupError("creating Unix users needs root (CI runs the suite as root)")
    for tool in ("useradd", "groupadd", "setpriv"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise TenantSetupError(f"{tool} is not installed (Debian: passwd, util-linux)")
    _retrying(["groupadd", GROUP], lambda: _group_exists(GROUP))
    common = ["-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-c", COMMENT]
    for name in (*MEMBERS, TRUSTED_WRITER):
        _retrying(["useradd", *common, "-N", "-g", GROUP, name], lambda n=name: _user_exists(n))
        if pwd.getpwnam(name).pw_gid != grp.getgrnam(GROUP).gr_gid:
            raise TenantSetupError(f"user {name} exists with another primary group than {GROUP}; "
                                   f"remove it (userdel {name}) and run again")
    _retrying(["useradd", *common, "-U", OUTSIDER], lambda: _user_exists(OUTSIDER))
    if OUTSIDER in grp.getgrnam(GROUP).gr_mem or pwd.getpwnam(OUTSIDER).pw_gid == \
            grp.getgrnam(GROUP).gr_gid:
        raise TenantSetupError(f"{OUTSIDER} must not be in group {GROUP}")
    return {n: pwd.getpwnam(n) for n in (*MEMBERS, TRUSTED_WRITER, OUTSIDER)}


# -- the shared tier as docs/cache.md prescribes -------------------------------------------
def make_shared_tier(path: Path, owner: str = TRUSTED_WRITER, group: str = GROUP,
                     trust: str = "owner") -> Path:
    """Create the shared tier the way docs/cache.md tells operators to (format 2).

    The root belongs to the trusted writer (the account operators run ``htpdata stage`` and
    eviction as) and the collaboration group, mode 0755: nobody else writes in it. Inside:
    ``trusted/`` (the owner's area, 0755), ``users/`` and ``drop/`` (1733: every user may create
    their own area or leave a record, nobody may list or remove another's) and, with
    ``trust="group"``, ``group/`` (3770). One small function on purpose: the cache's tests and
    the generic tenant tests set the tier up here only.
    """
    uid, gid = pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(0o755)
    folders = [("trusted", 0o755), ("users", 0o1733), ("drop", 0o1733)]
    if trust == "group":
        folders.append(("group", 0o3770))
    for name, mode in folders:
        (path / name).mkdir(exist_ok=True)
        os.chown(path / name, uid, gid)
        (path / name).chmod(mode)
    marker = path / "htpdata-cache.json"
    marker.write_text(json.dumps({"format": 2, "tier": "shared"}))
    os.chown(marker, uid, gid)
    marker.chmod(0o644)
    return path


# -- running as a user ---------------------------------------------------------------------
_BOOTSTRAP = r"""
import json, os, sys, traceback
req = json.loads(sys.stdin.read())
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
ns = {"__name__": "__tenant__", "args": req["args"]}
try:
    exec(compile(req["code"], "<snippet run as a tenant>", "exec"), ns)
    res = {"result": ns.get("result")}
except BaseException as exc:
    res = {"error": type(exc).__name__, "classes": [c.__name__ for c in type(exc).__mro__],
           "message": str(exc), "exit_code": getattr(exc, "exit_code", None),
           "traceback": traceback.format_exc()}
out.write(json.dumps(res, default=repr))
out.flush()
"""

_MOUNT_SCRIPT = ('while [ "$1" != "--" ]; do mount --bind -o ro "$1" "$2" || exit 125; '
                 'shift 2; done; shift; exec "$@"')


@dataclass
class _Exposure:
    """How users reach the interpreter and the htpdata sources: directly or by bind mounts."""

    python: str
    pythonpath: str | None = None
    mounts: list[tuple[Path, Path]] = field(default_factory=list)
    """(real path, world-traversable mount point) pairs, bound read-only in each run."""

    def visible(self, path: Path) -> Path:
        for real, seen in self.mounts:
            with contextlib.suppress(ValueError):
                return seen / Path(path).relative_to(real)
        return Path(path)

    def prefix(self) -> list[str]:
        if not self.mounts:
            return []
        pairs = [str(p) for real, seen in self.mounts for p in (real, seen)]
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _MOUNT_SCRIPT, "sh", *pairs, "--"]


def _checkout() -> Path | None:
    """The source checkout htpdata is imported from, if it is one (``<checkout>/src/htpdata``)."""
    import htpdata

    src = Path(htpdata.__file__).resolve().parent.parent
    return src.parent if src.name == "src" else None


def _exposure_for(mode: str, base: Path) -> _Exposure:
    if mode == "direct":
        return _Exposure(sys.executable)
    if mode != "mount":
        raise ValueError(f"expose must be auto, direct or mount, not {mode!r}")
    exposure = _Exposure(sys.executable)
    checkout = _checkout()
    roots = [checkout] if checkout is not None else []
    venv = Path(sys.prefix).resolve()
    if checkout is None or not venv.is_relative_to(checkout):
        roots.append(venv)
    for i, real in enumerate(roots):
        seen = base / "exposed" / str(i)
        seen.mkdir(parents=True, exist_ok=True)
        exposure.mounts.append((real, seen))
    exposure.python = str(exposure.visible(Path(sys.prefix).resolve()) / "bin" / "python")
    if checkout is not None:
        exposure.pythonpath = str(exposure.visible(checkout / "src"))
    return exposure


class Tenants:
    """The test users and how to run things as them; see the module docstring."""

    def __init__(self, base: Path, users: Mapping[str, UnixUser], exposure: _Exposure) -> None:
        self.base = base
        self.users = dict(users)
        self._exposure = exposure

    # -- set-up ------------------------------------------------------------------------------
    @classmethod
    def start(cls, base: Path | None = None, *, expose: str = "auto") -> Tenants:
        """Create the users, a world-traversable ``base`` and probe a run as a user.

        ``expose`` is ``auto`` (direct if a user can run the venv, else bind mounts), ``direct``
        or ``mount``. Raises TenantSetupError when no way works.
        """
        found = ensure_users()
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="htpdata-tenants-"))
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        for parent in base.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise TenantSetupError(f"{parent} is not traversable by other users; give a base "
                                       "folder under /tmp")
        users = {n: UnixUser(n, pw.pw_uid, pw.pw_gid,
                             tuple(os.getgrouplist(n, pw.pw_gid)), base / "home" / n)
                 for n, pw in found.items()}
        probe = cls(base, users, _Exposure(sys.executable)).fresh(base / "probe")
        failures: list[str] = []
        for mode in (("direct", "mount") if expose == "auto" else (expose,)):
            exposure = _exposure_for(mode, base)
            probe._exposure = exposure
            why = probe._probe()
            if why is None:
                shutil.rmtree(base / "probe", ignore_errors=True)
                return cls(base, users, exposure)
            failures.append(f"{mode}: {why}")
        raise TenantSetupError("other Unix users cannot run htpdata from this checkout ("
                               + "; ".join(failures) + "). Make the venv from /usr/bin/python3 "
                               "and `chmod -R a+rX .venv src catalogs` (.ci/setup does)")

    def _probe(self) -> str | None:
        code = ("import htpdata, json, sys\n"
                "from htpdata.catalogs import bundled_dir\n"
                "(bundled_dir() / 'cms.toml').read_bytes()\n"
                "result = [htpdata.__file__, sys.prefix]")
        try:
            out = self.python(self.alice, code, timeout=60)
        except (UserRunTimeout, OSError) as exc:
            return str(exc)
        if out.error is not None:
            return f"{out.error}: {out.message}"
        if not out.ok or not isinstance(out.result, list):
            return out.run.err[-500:] or f"exit {out.run.returncode}"
        return None

    def fresh(self, folder: Path) -> Tenants:
        """The same users with fresh, empty homes under ``folder`` (one per test)."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        (folder / "home").mkdir(exist_ok=True)
        (folder / "home").chmod(0o755)
        users = {}
        for name, u in self.users.items():
            home = folder / "home" / name
            home.mkdir(exist_ok=True)
            for sub in (".config", ".cache", "run"):
                (home / sub).mkdir(exist_ok=True)
            for p in (home, home / ".config", home / ".cache", home / "run"):
                os.chown(p, u.uid, u.gid)
                p.chmod(0o700)
            users[name] = UnixUser(name, u.uid, u.gid, u.groups, home)
        return Tenants(folder, users, self._exposure)

    # -- who ---------------------------------------------------------------------------------
    @property
    def alice(self) -> UnixUser:
        return self.users["htpalice"]

    @property
    def bob(self) -> UnixUser:
        return self.users["htpbob"]

    @property
    def mallory(self) -> UnixUser:
        return self.users["htpmallory"]

    @property
    def cache(self) -> UnixUser:
        """``htpcache``: the shared tier's owner and trusted writer."""
        return self.users[TRUSTED_WRITER]

    @property
    def eve(self) -> UnixUser:
        """``htpeve``: not in the collaboration group."""
        return self.users[OUTSIDER]

    @property
    def gid(self) -> int:
        """The collaboration group's gid."""
        return grp.getgrnam(GROUP).gr_gid

    # -- folders -----------------------------------------------------------------------------
    def tmp(self, name: str, mode: int = 0o755) -> Path:
        """A new root-owned folder under this test's base that the users can traverse."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        path.chmod(mode)
        return path

    def shared_tier(self, name: str = "shared") -> Path:
        """A shared tier root set up as docs/cache.md prescribes (see :func:`make_shared_tier`)."""
        return make_shared_tier(self.tmp("tier") / name)

    def visible(self, path: str | Path) -> Path:
        """``path`` as the users see it (inside the bind mount when the checkout is hidden)."""
        return self._exposure.visible(Path(path))

    # -- running -----------------------------------------------------------------------------
    def env_for(self, user: UnixUser, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The exact environment of a run: nothing from the test process but what is given."""
        base = {"PATH": _PATH, "HOME": str(user.home), "USER": user.name,
                "LOGNAME": user.name, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                "XDG_CONFIG_HOME": str(user.home / ".config"),
                "XDG_CACHE_HOME": str(user.home / ".cache"),
                "XDG_RUNTIME_DIR": str(user.home / "run")}
        if self._exposure.pythonpath:
            base["PYTHONPATH"] = self._exposure.pythonpath
        return {**base, **(env or {})}

    def run(self, user: UnixUser, args: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float = DEFAULT_TIMEOUT, cwd: str | Path | None = None,
            input: bytes | None = None, umask: int = 0o022) -> RunResult:
        """Run ``args`` as ``user``; on timeout kill its process group, raise UserRunTimeout."""
        drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--"]
        cmd = [*self._exposure.prefix(), *drop, *args]
        proc = subprocess.Popen(cmd, env=self.env_for(user, env), cwd=str(cwd or user.home),
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, umask=umask)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise UserRunTimeout(user.name, list(args), timeout, stdout, stderr) from None
        finally:
            if proc.poll() is None:  # an exception in communicate: leave nothing behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children left running in the group (a daemonised helper) go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return RunResult(user.name, list(args), proc.returncode, stdout, stderr)

    def htpdata(self, user: UnixUser, *args: str, env: Mapping[str, str] | None = None,
                timeout: float = DEFAULT_TIMEOUT, cwd: str | Path | None = None) -> RunResult:
        """``python -m htpdata ARGS`` as ``user`` (exit code, stdout and stderr returned)."""
        return self.run(user, [self._exposure.python, "-m", "htpdata", *args], env=env,
                        timeout=timeout, cwd=cwd)

    def python(self, user: UnixUser, code: str, *, env: Mapping[str, str] | None = None,
               timeout: float = DEFAULT_TIMEOUT, args: Any = None) -> PyOutcome:
        """Run ``code`` as ``user``; it sees ``args`` (JSON) and sets ``result`` (JSON).

        An exception in the snippet is returned, not raised (``error``, ``error_classes``,
        ``exit_code``); the snippet's prints go to stderr.
        """
        request = json.dumps({"code": code, "args": args}).encode()
        run = self.run(user, [self._exposure.python, "-c", _BOOTSTRAP], env=env,
                       timeout=timeout, input=request)
        try:
            res = json.loads(run.stdout)
        except ValueError:
            return PyOutcome(run, error="NoOutcome", message=f"exit {run.returncode}: "
                             f"{run.err[-2000:]}")
        if "error" in res:
            return PyOutcome(run, error=res["error"], error_classes=tuple(res["classes"]),
                             message=res["message"], exit_code=res["exit_code"],
                             traceback=res["traceback"])
        return PyOutcome(run, result=res["result"])

    def call(self, user: UnixUser, function: str, *args: Any, env: Mapping[str, str] | None
             = None, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> PyOutcome:
        """Call ``"package.module:function"`` as ``user`` with JSON arguments."""
        module, _, attr = function.partition(":")
        code = ("import importlib\n"
                f"fn = getattr(importlib.import_module({module!r}), {attr!r})\n"
                "result = fn(*args['a'], **args['k'])")
        return self.python(user, code, env=env, timeout=timeout,
                           args={"a": list(args), "k": kwargs})

    def cleanup(self) -> None:
        """Remove the base folder (files the users made included)."""
        shutil.rmtree(self.base, ignore_errors=True)
