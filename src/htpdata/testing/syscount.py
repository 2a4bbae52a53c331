"""Count the metadata system calls a command makes under a folder, with ``strace -f``.

On a network filesystem every open, stat, listing, create, rename and unlink is a round trip to
the metadata server, so these counts are what issue 13's figures budget; unlike times, they do
not depend on a noisy machine.

    counts = count_syscalls([python, "-c", "..."], folders=[tier])
    counts.metadata                 # all metadata calls on paths under the tier
    counts.kinds["open_create"]     # opens with O_CREAT
    counts.files_lasting, counts.files_transient

Only calls whose path (or descriptor's path, which ``strace -y`` prints) lies under one of
``folders`` count; failed calls count too (an ENOENT stat is a round trip as well). Files are
followed through renames in trace order: a file created during the run and still there at the
end is *lasting* (a temporary file renamed into place is one lasting file); one created and then
removed, or replaced by a rename onto its name, is *transient* (claims, temporary files).
Folders are counted apart (``dirs_created``).

:func:`parse_trace` is the pure part (a trace's lines in, counts out) and is tested on its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KINDS", "SYSCALLS", "SyscallCounts", "count_syscalls", "parse_trace", "snapshot",
           "strace_argv", "strace_available"]

# syscall -> kind ("open" is split into open_create / open by the O_CREAT flag)
SYSCALLS: Mapping[str, str] = {
    **dict.fromkeys(("open", "openat", "openat2", "creat"), "open"),
    **dict.fromkeys(("stat", "lstat", "fstat", "newfstatat", "statx", "access", "faccessat",
                     "faccessat2"), "stat"),
    **dict.fromkeys(("getdents", "getdents64"), "listdir"),
    **dict.fromkeys(("rename", "renameat", "renameat2"), "rename"),
    **dict.fromkeys(("unlink", "unlinkat"), "unlink"),  # unlinkat(AT_REMOVEDIR) is rmdir
    **dict.fromkeys(("mkdir", "mkdirat"), "mkdir"),
    "rmdir": "rmdir",
    **dict.fromkeys(("utime", "utimes", "utimensat", "futimesat"), "utime"),
    **dict.fromkeys(("chmod", "fchmod", "fchmodat", "fchmodat2"), "chmod"),
    **dict.fromkeys(("chown", "fchown", "lchown", "fchownat"), "chown"),
    **dict.fromkeys(("link", "linkat", "symlink", "symlinkat"), "link"),
    **dict.fromkeys(("readlink", "readlinkat"), "readlink"),
    **dict.fromkeys(("truncate", "ftruncate"), "truncate"),
    **dict.fromkeys(("mknod", "mknodat"), "mknod"),
}
KINDS: tuple[str, ...] = ("open_create", "open", "stat", "listdir", "rename", "unlink", "mkdir",
                          "rmdir", "utime", "chmod", "chown", "link", "readlink", "truncate",
                          "mknod")


@dataclass(frozen=True)
class SyscallCounts:
    """Metadata calls under the folders of interest, by syscall and by kind, and files made."""

    calls: Mapping[str, int] = field(default_factory=dict)
    kinds: Mapping[str, int] = field(default_factory=dict)
    failed: int = 0
    files_lasting: int = 0
    files_transient: int = 0
    dirs_created: int = 0
    returncode: int = 0
    elapsed: float = 0.0
    lasting_paths: tuple[str, ...] = ()
    stdout: str = ""  # what the command printed (count_syscalls)

    @property
    def metadata(self) -> int:
        return sum(self.kinds.values())

    def kind(self, name: str) -> int:
        return self.kinds.get(name, 0)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {self.kinds[k]}" for k in KINDS if self.kinds.get(k))
        return (f"{self.metadata} metadata calls ({parts}); files: {self.files_lasting} lasting,"
                f" {self.files_transient} transient; {self.dirs_created} folders")

    def to_json(self) -> dict[str, object]:
        return {"metadata": self.metadata, "kinds": dict(self.kinds), "calls": dict(self.calls),
                "failed": self.failed, "files_lasting": self.files_lasting,
                "files_transient": self.files_transient, "dirs_created": self.dirs_created,
                "returncode": self.returncode, "elapsed": round(self.elapsed, 3)}


def strace_available() -> str | None:
    """Why :func:`count_syscalls` cannot run here, or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (Debian: apt-get install strace)"
    return None


# -- parsing -------------------------------------------------------------------------------
_TS = r"(?:(?P<ts>\d+\.\d+)\s+)?"  # strace -ttt: seconds since the epoch
_LINE = re.compile(rf"^(?P<pid>\d+)\s+{_TS}(?P<name>[a-z0-9_]+)\((?P<args>.*)\)\s+=\s+"
                   r"(?P<ret>.*)$")
_UNFINISHED = re.compile(rf"^(?P<pid>\d+)\s+{_TS}(?P<head>.*)\s+<unfinished \.\.\.>$")
_RESUMED = re.compile(rf"^(?P<pid>\d+)\s+{_TS}<\.\.\. (?P<name>[a-z0-9_]+) resumed>"
                      r"(?P<rest>.*)$")
# one argument: a quoted string, a descriptor with its path (3</x> or AT_FDCWD</x>), or other
_STRING = r'"(?:[^"\\]|\\.)*"'
_FDPATH = r"(?:-?\d+|AT_FDCWD)<(?:[^>\\]|\\.)*>"
_ARG = re.compile(rf"\s*({_STRING}\.{{0,3}}|{_FDPATH}|\{{[^{{}}]*\}}|\[[^\[\]]*\]|[^,]+)\s*(?:,|$)")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", '"': '"', "\\": "\\"}


def _unescape(s: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0].isdigit():
            return chr(int(e, 8))
        return _SIMPLE.get(e, e)
    return _ESCAPE.sub(one, s)


def _split_args(args: str) -> list[str]:
    out, pos = [], 0
    while pos < len(args):
        m = _ARG.match(args, pos)
        if m is None or m.end() == pos:
            break
        out.append(m.group(1).strip())
        pos = m.end()
    return out


def _string(arg: str) -> str | None:
    if arg.startswith('"'):
        end = arg.rfind('"')
        return _unescape(arg[1:end])
    return None


def _fd_path(arg: str) -> str | None:
    """The path strace -y printed for a descriptor argument (``3</a/b>``, ``AT_FDCWD</cwd>``)."""
    lt = arg.find("<")
    if lt <= 0 or not arg.endswith(">"):
        return None
    path = _unescape(arg[lt + 1:-1])
    return path.removesuffix(" (deleted)")


def _join(base: str | None, name: str) -> str | None:
    if name.startswith("/"):
        return os.path.normpath(name)
    if base is None:
        return None
    return os.path.normpath(os.path.join(base, name)) if name else base


class _Files:
    """Paths created during the run, followed through renames (see the module docstring)."""

    def __init__(self, existing: set[str]) -> None:
        self.present = set(existing)
        self.created: set[str] = set()
        self.transient = 0
        self.dirs = 0

    def create(self, path: str) -> None:
        if path not in self.present:
            self.present.add(path)
            self.created.add(path)

    def remove(self, path: str) -> None:
        self.present.discard(path)
        if path in self.created:
            self.created.discard(path)
            self.transient += 1

    def rename(self, src: str | None, dst: str | None, inside: set[str]) -> None:
        if dst is not None and dst in inside:
            self.remove(dst)  # whatever the name held is gone
        if src is None:
            return
        prefix = src + "/"
        moved = [p for p in self.created if p == src or p.startswith(prefix)]
        for p in [q for q in self.present if q.startswith(prefix)]:
            self.present.discard(p)
            if dst is not None and dst in inside:
                self.present.add(dst + p[len(src):])
        self.present.discard(src)
        for p in moved:
            self.created.discard(p)
            if dst is not None and dst in inside:
                self.created.add(dst + p[len(src):])
            else:
                self.transient += 1  # moved out of the folders: no longer lasting there
        if dst is not None and dst in inside:
            self.present.add(dst)


def parse_trace(lines: Iterable[str], folders: Sequence[str | Path],
                existing: Iterable[str] = (), cwd: str | None = None, *,
                since: float | None = None, until: float | None = None) -> SyscallCounts:
    """Counts from ``strace -f -y`` output lines for calls under ``folders``.

    ``existing`` holds the paths present under the folders before the run (so an O_CREAT open
    of one of them is not a creation); ``cwd`` is the command's working folder, for the old
    path calls whose relative paths strace does not annotate. With ``since``/``until`` (epoch
    seconds; the trace needs ``strace -ttt``, see :func:`strace_argv`) only the calls that
    completed in that window are counted; files are still followed through the whole trace.
    """
    roots = sorted({os.path.normpath(str(f)) for f in folders}
                   | {os.path.realpath(str(f)) for f in folders})

    def under(path: str | None) -> bool:
        return path is not None and any(path == r or path.startswith(r + "/") for r in roots)

    calls: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failed = 0
    files = _Files({os.path.normpath(p) for p in existing})
    cwds: dict[str, str] = {}
    pending: dict[str, str] = {}

    for raw in lines:
        line = raw.rstrip("\n")
        m_un = _UNFINISHED.match(line)
        if m_un:
            pending[m_un["pid"]] = m_un["head"]
            continue
        m_re = _RESUMED.match(line)
        if m_re:
            head = pending.pop(m_re["pid"], None)
            if head is None:
                continue
            line = f"{m_re['pid']} {m_re['ts'] or ''} {head}{m_re['rest']}"
        m = _LINE.match(line)
        if m is None:
            continue
        pid, name, ret = m["pid"], m["name"], m["ret"].strip()
        kind = SYSCALLS.get(name)
        if kind is None and name not in ("chdir", "fchdir"):
            continue
        args = _split_args(m["args"])
        ok = not ret.startswith("-1")
        base = cwds.get(pid, cwd)
        for a in args:
            if a.startswith("AT_FDCWD<"):
                base = _fd_path(a)
                if base is not None:
                    cwds[pid] = base
        if name in ("chdir", "fchdir"):
            if ok and args:
                target = (_join(base, _string(args[0]) or "") if name == "chdir"
                          else _fd_path(args[0]))
                if target is not None:
                    cwds[pid] = target
            continue
        assert kind is not None

        paths = _paths(name, args, base)
        if name in ("openat", "open", "openat2", "creat") and ok:
            result = _fd_path(ret)
            if result is not None:
                paths = [result]
        if not any(under(p) for p in paths):
            continue
        ts = float(m["ts"]) if m["ts"] else None
        counted = ts is None or ((since is None or ts >= since) and (until is None or ts <= until))
        if kind == "open":
            flags = args[2] if name in ("openat", "openat2") and len(args) > 2 else (
                args[1] if len(args) > 1 else "")
            if name == "creat" or "O_CREAT" in flags or "O_TMPFILE" in flags:
                kind = "open_create"
        if kind == "unlink" and len(args) > 2 and "AT_REMOVEDIR" in args[2]:
            kind = "rmdir"
        if counted:
            calls[name] += 1
            kinds[kind] += 1
            failed += not ok
        if not ok:
            continue
        _apply(files, name, kind, paths, args, under)

    lasting = tuple(sorted(files.created))
    return SyscallCounts(dict(calls), dict(kinds), failed, len(lasting), files.transient,
                         files.dirs, lasting_paths=lasting)


def _paths(name: str, args: list[str], base: str | None) -> list[str | None]:
    """The paths a call touches, resolved against its descriptor or working folder."""
    def at(dirfd: int, path: int) -> str | None:
        if len(args) <= path:
            return None
        s = _string(args[path])
        if s is None:
            return None
        return _join(_fd_path(args[dirfd]) if len(args) > dirfd else base, s)

    def plain(i: int) -> str | None:
        s = _string(args[i]) if len(args) > i else None
        return None if s is None else _join(base, s)

    if name in ("fstat", "fchmod", "fchown", "ftruncate", "getdents", "getdents64"):
        return [_fd_path(args[0])] if args else []
    if name in ("newfstatat", "statx", "openat", "openat2", "faccessat", "faccessat2",
                "mkdirat", "fchmodat", "fchmodat2", "fchownat", "utimensat", "futimesat",
                "readlinkat", "mknodat", "unlinkat"):
        return [at(0, 1)]
    if name in ("renameat", "renameat2", "linkat"):
        return [at(0, 1), at(2, 3)]
    if name == "symlinkat":
        return [at(1, 2)]
    if name == "symlink":
        return [plain(1)]
    if name in ("rename", "link"):
        return [plain(0), plain(1)]
    return [plain(0)]


def _apply(files: _Files, name: str, kind: str, paths: list[str | None], args: list[str],
           under: Callable[[str | None], bool]) -> None:
    target = paths[-1] if paths else None
    if kind == "open_create" and target is not None:
        flags = " ".join(args)
        if "O_TMPFILE" not in flags and "O_DIRECTORY" not in flags:
            files.create(target)
    elif kind in ("mknod", "link") and target is not None:
        files.create(target)
    elif kind == "mkdir" and target is not None:
        files.present.add(target)
        files.dirs += 1
    elif kind in ("unlink", "rmdir") and target is not None:
        files.remove(target)
    elif kind == "rename" and len(paths) == 2:
        src, dst = paths
        inside = {p for p in (dst,) if p is not None and under(p)}
        flags = args[4] if name == "renameat2" and len(args) > 4 else ""
        if "RENAME_EXCHANGE" in flags:
            return  # both names stay; nothing created or removed
        files.rename(src if src is not None and under(src) else None, dst, inside)
        if src is not None and not under(src) and dst is not None and dst in inside:
            files.create(dst)  # moved in from outside: it appeared during the run


# -- running -------------------------------------------------------------------------------
def _snapshot(folders: Sequence[str | Path]) -> set[str]:
    seen: set[str] = set()
    for f in folders:
        for root in {os.path.normpath(str(f)), os.path.realpath(str(f))}:
            for dirpath, dirnames, filenames in os.walk(root):
                seen.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return seen


def snapshot(folders: Sequence[str | Path]) -> set[str]:
    """Every path under ``folders`` now: what :func:`parse_trace` takes as ``existing``."""
    return _snapshot(folders)


def strace_argv(cmd: Sequence[str], trace: str | Path, *, timestamps: bool = False
                ) -> list[str]:
    """The command line running ``cmd`` under strace, tracing the metadata calls into ``trace``
    (``-f``: children too; ``-y``: descriptors' paths; ``-ttt`` with ``timestamps``)."""
    traced = ",".join(f"?{name}" for name in [*SYSCALLS, "chdir", "fchdir"])
    return ["strace", "-f", "-qq", "-y", "-s", "4096", "--seccomp-bpf",
            *(["-ttt"] if timestamps else []), "-e", f"trace={traced}", "-o", str(trace),
            "--", *cmd]


def count_syscalls(cmd: Sequence[str], folders: Sequence[str | Path], *,
                   env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                   timeout: float | None = None, keep_trace: str | Path | None = None,
                   check: bool = True) -> SyscallCounts:
    """Run ``cmd`` under ``strace -f`` and count its metadata calls under ``folders``.

    Only the metadata calls are traced (``--seccomp-bpf`` lets every other call run at full
    speed). ``keep_trace`` keeps the raw trace there. With ``check`` a non-zero exit of ``cmd``
    raises CalledProcessError (carrying the command's stderr).
    """
    reason = strace_available()
    if reason is not None:
        raise RuntimeError(reason)
    folders = [os.path.abspath(str(f)) for f in folders]
    workdir = os.path.abspath(str(cwd)) if cwd is not None else os.getcwd()
    existing = _snapshot(folders)
    with tempfile.TemporaryDirectory(prefix="htpdata-strace-") as tmp:
        out = Path(keep_trace) if keep_trace is not None else Path(tmp) / "trace"
        start = time.monotonic()
        proc = subprocess.run(strace_argv(cmd, out), env=None if env is None else dict(env),
                              cwd=workdir, capture_output=True, timeout=timeout, check=False)
        elapsed = time.monotonic() - start
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, list(cmd), proc.stdout,
                                                proc.stderr)
        with open(out, errors="surrogateescape") as f:
            counts = parse_trace(f, folders, existing, cwd=workdir)
    return SyscallCounts(counts.calls, counts.kinds, counts.failed, counts.files_lasting,
                         counts.files_transient, counts.dirs_created, proc.returncode, elapsed,
                         counts.lasting_paths, proc.stdout.decode(errors="replace"))
