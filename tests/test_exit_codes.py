"""The exit-code table of docs/errors.md is exact, and every code is reached by a real command.

The table is parsed from the page itself: every error class is listed under the code it exits
with, every class that exists is listed, and each code (but 11, internal) is produced below by
running ``htpdata`` against real servers (or a real silent socket for the timeout).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from htpdata.errors import HtpdataError
from htpdata.testing import XRootDServer, free_port, sigint_as_in_a_terminal

from .conftest import REPO, TEST_FILES, TESTDATA, catalog_text

ERRORS_MD = REPO / "docs" / "errors.md"


def _table() -> dict[str, int]:
    """class name -> exit code, from the table in docs/errors.md."""
    out: dict[str, int] = {}
    for line in ERRORS_MD.read_text().splitlines():
        m = re.match(r"\| (\d+) \|[^|]*\| (.*) \|$", line)
        if m:
            for name in re.findall(r"`(\w+Error)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def _every_error_class() -> set[type[HtpdataError]]:
    import htpdata.convert
    import htpdata.copy
    import htpdata.reporting
    import htpdata.staging  # noqa: F401  (their errors register as subclasses)

    seen: set[type[HtpdataError]] = set()
    todo = [HtpdataError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("htpdata") and sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return seen


def test_the_table_is_exact() -> None:
    table = _table()
    classes = {c.__name__: c for c in _every_error_class()}
    missing = sorted(set(classes) - set(table))
    assert not missing, f"not in docs/errors.md's table: {missing}"
    assert table.pop("HtpdataError") == 1  # "any HtpdataError not listed below"
    table.pop("OSError")  # "other OSError": 1
    unknown = sorted(set(table) - set(classes))
    assert not unknown, f"in the table but no such class: {unknown}"
    wrong = {n: (classes[n].exit_code, code) for n, code in table.items()
             if classes[n].exit_code != code}
    assert not wrong, f"class exit_code vs table: {wrong}"
    assert HtpdataError.exit_code == 1


def run(*args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("htpdata: error: ")
    return err


class Silent(int):
    """The port of a server that accepts and never answers; ``connected`` is set at the first
    connection (so a test knows a client is waiting on it)."""

    connected: threading.Event


@pytest.fixture
def silent_port() -> Iterator[Silent]:
    """A real TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []
    stop = threading.Event()
    port = Silent(srv.getsockname()[1])
    port.connected = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
                port.connected.set()
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def _catalog(tmp_path: Path, scheme: str, prefix: str) -> dict[str, str]:
    cat = tmp_path / "x.toml"
    cat.write_text(f'format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [{{ scheme = "{scheme}", '
                   f'namespace = "x", prefix = "{prefix}" }}]\n')
    return {"HTPDATA_CATALOGS_PATH": str(cat), "HTPDATA_TIMEOUTS_CONNECT": "1",
            "HTPDATA_TIMEOUTS_READ": "1"}


def test_0_1_2_6_7(tmp_path: Path) -> None:
    assert run("config", "--json").returncode == 0
    bad = run("resolve", "cms:store/x")
    assert bad.returncode == 2
    one_line(bad)
    folder = run("cat", str(tmp_path))
    assert folder.returncode == 2
    assert "is a folder, not a file" in one_line(folder)
    soft = run("quota", "set", "--user", "alice", "1TB", "--soft", "2TB")
    assert soft.returncode == 2
    assert "above the hard limit" in one_line(soft)
    refused = run("cat", "x:/store/f.root",
                  env=_catalog(tmp_path, "root", f"root://localhost:{free_port()}/"))
    assert refused.returncode == 6
    one_line(refused)
    assert run("config", env={"HTPDATA_TIMEOUTS_READ": "forever"}).returncode == 7


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_5_when_every_replica_timed_out(tmp_path: Path, silent_port: Silent, scheme: str) -> None:
    proc = run("cat", "x:/store/f.root",
               env=_catalog(tmp_path, scheme, f"{scheme}://localhost:{silent_port}/"))
    assert proc.returncode == 5, proc.stderr
    assert "Timeout" in one_line(proc)


def test_debug_keeps_the_exit_code(tmp_path: Path) -> None:
    plain = run("resolve", "atlas:/x")
    debug = run("resolve", "atlas:/x", "--debug")  # after the command, too
    assert plain.returncode == debug.returncode == 2
    assert b"Traceback" in debug.stderr
    assert debug.stderr.decode().strip().splitlines()[-1] == plain.stderr.decode().strip()


def _signal_state(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "?"
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_130_on_ctrl_c(tmp_path: Path, silent_port: Silent) -> None:
    env = {**os.environ, **_catalog(tmp_path, "http", f"http://localhost:{silent_port}/"),
           "HTPDATA_TIMEOUTS_READ": "60"}
    # Python then turns Ctrl-C into KeyboardInterrupt, as in a terminal.
    with subprocess.Popen([sys.executable, "-m", "htpdata", "cat", "x:/store/f.root"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          preexec_fn=sigint_as_in_a_terminal) as proc:
        assert silent_port.connected.wait(60)  # htpdata is up and waiting on the server
        state = _signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no exit 30 s after SIGINT (the child's signals: {state}): {err!r}")
    assert proc.returncode == 130, (state, err)
    assert b"interrupted" in err


@pytest.mark.xrootd
def test_3_4_8_9_10_50_against_real_servers(catalog_dir: Path, tmp_path: Path,
                                             origin: XRootDServer) -> None:
    unknown = run("ls", "test:/Test/Al")
    assert unknown.returncode == 3
    assert "did you mean test:/Test/All?" in one_line(unknown)

    tiny = {"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "tiny"), "HTPDATA_CACHE_LOCAL_SIZE": "10"}
    assert run("stage", "test:/Test/All", "--tier", "local", env=tiny).returncode == 9

    not_root = tmp_path / "notes.txt"
    not_root.write_text("not a ROOT file\n")
    conv = run("convert", str(not_root), env={"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "c")})
    assert conv.returncode == 10, conv.stderr
    one_line(conv)

    name = f"test:/store/test/{TEST_FILES[0]}"
    dest = tmp_path / "out"
    dest.mkdir()
    assert run("cp", name, str(dest)).returncode == 0
    again = run("cp", name, str(dest))
    assert again.returncode == 50
    assert "exists (use --force" in one_line(again)

    # A catalog whose adler32 is wrong: the copy fails verification and leaves nothing.
    good = catalog_text([("SITE_A", origin, 1)])
    real = re.search(rf'{re.escape(TEST_FILES[0])}", size = \d+, adler32 = "(\w+)"', good)
    assert real is not None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test.toml").write_text(good.replace(real.group(1), "00000001"))
    out = tmp_path / "verify"
    out.mkdir()
    mismatch = run("cp", name, str(out), "--no-cache", env={"HTPDATA_CATALOGS_PATH": str(bad)})
    assert mismatch.returncode == 8
    assert "adler32 mismatch" in one_line(mismatch)
    assert list(out.iterdir()) == []  # no partial file, no temporary left
    assert (dest / TEST_FILES[0]).read_bytes() == (TESTDATA / TEST_FILES[0]).read_bytes()


@pytest.mark.xrootd
def test_4_without_the_token(tmp_path: Path, token_origin: XRootDServer) -> None:
    folder = tmp_path / "cats"
    folder.mkdir()
    (folder / "t.toml").write_text(catalog_text([("TOKEN_SITE", token_origin, 1)]))
    proc = run("cat", f"test:/store/test/{TEST_FILES[0]}",
               env={"HTPDATA_CATALOGS_PATH": str(folder),
                    "HTPDATA_AUTH_CA_FILE": str(token_origin.cert)})
    assert proc.returncode == 4, proc.stderr
    # (The XRootD client library itself may print a note about token security on stderr.)
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("htpdata: error: ")
    assert "Permission" in last
