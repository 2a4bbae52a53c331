"""The HTTP gateway against a real XRootD origin: HEAD, GET, ranges, errors, secret, CLI, curl,
xrdcp, and another Unix user refused."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

import htpdata
from htpdata.gateway import GatewayInfo, gateway, state
from htpdata.gateway import app as gateway_app
from htpdata.gateway.server import Gateway
from htpdata.io import FileReader
from htpdata.names import Name
from htpdata.testing import XRootDServer
from htpdata.testing.users import Tenants

from .conftest import REPO, TESTDATA

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
NAME = f"test:/store/test/{NANO}"
DATA = (TESTDATA / NANO).read_bytes()
Served = tuple[subprocess.Popen[str], dict[str, str]]  # ``htpdata serve`` and its environment


@pytest.fixture
def gw(client: htpdata.Client) -> Iterator[Gateway]:
    start = htpdata.gateway
    # The documented spelling: the package is callable (gateway/__init__.py swaps its module
    # class), which no type checker can see; the other tests call the function itself.
    assert callable(start)
    with start(client) as g:
        yield g


def _info(gw: Gateway) -> GatewayInfo:
    """The running gateway's port and secret (``info`` is None only before it starts)."""
    assert gw.info is not None
    return gw.info


def _multipart(resp: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part, parsed strictly by the boundary."""
    ctype = resp.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=", 1)[1]
    assert boundary.isdigit()  # what ROOT's TWebFile parses
    body = resp.content
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, rest = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        parts.append((fields["Content-Range"], rest.removesuffix(b"\r\n")))
    return parts


def test_head_get_and_ranges(gw: Gateway) -> None:
    url = gw.url(NAME)
    with httpx.Client() as http:
        head = http.head(url)
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(DATA)
        assert head.headers["accept-ranges"] == "bytes"
        etag = head.headers["etag"]
        assert etag.startswith('"')  # strong: the catalog gives the adler32
        assert http.get(url).content == DATA
        one = http.get(url, headers={"Range": "bytes=100-199"})
        assert one.status_code == 206
        assert one.content == DATA[100:200]
        assert one.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
        tail = http.get(url, headers={"Range": "bytes=-50"})
        assert tail.content == DATA[-50:]
        many = http.get(url, headers={"Range": "bytes=0-3,1000-1099,500-509,1000-1001"})
        assert many.status_code == 206
        assert _multipart(many) == [
            (f"bytes 0-3/{len(DATA)}", DATA[0:4]), (f"bytes 1000-1099/{len(DATA)}",
                                                   DATA[1000:1100]),
            (f"bytes 500-509/{len(DATA)}", DATA[500:510]),
            (f"bytes 1000-1001/{len(DATA)}", DATA[1000:1002])]
        bad = http.get(url, headers={"Range": f"bytes={len(DATA)}-"})
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{len(DATA)}"
        same = http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert same.status_code == 206
        changed = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert changed.status_code == 200
        assert changed.content == DATA
        status = http.get(gw.base_url + "_gateway/status").json()
    c = status["counters"]
    assert c["multi_range"] == 1
    assert c["single_range"] == 3
    assert c["whole"] == 2
    assert c["head"] == 1
    assert c["failed"] == {"416": 1}


def test_streams_large_answers_in_groups(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_app, "GROUP_BYTES", 10_000)  # 38 groups for the whole file
    url = gw.url(NAME)
    with httpx.Client() as http:
        assert http.get(url).content == DATA
        ranges = [(i * 9000, i * 9000 + 7000) for i in range(40)]
        spec = ",".join(f"{s}-{e - 1}" for s, e in ranges)
        parts = _multipart(http.get(url, headers={"Range": f"bytes={spec}"}))
        assert [p for _, p in parts] == [DATA[s:e] for s, e in ranges]


def test_concurrent_requests(gw: Gateway) -> None:
    url = gw.url(NAME)
    spans = [(i * 7919 % len(DATA), i * 7919 % len(DATA) + 5000) for i in range(64)]

    def get(span: tuple[int, int]) -> bool:
        s, e = span
        r = httpx.get(url, headers={"Range": f"bytes={s}-{e - 1}"})
        return r.content == DATA[s:e]

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        assert all(ex.map(get, spans))


def test_errors_become_statuses_with_one_log_line(gw: Gateway,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    base = gw.base_url
    caplog.set_level(logging.WARNING, logger="htpdata.gateway")
    with httpx.Client() as http:
        cases = {
            base + "test/store/test/nope.root": 404,
            base + "nosuchns/store/x.root": 404,
            base + "test/store/%2e%2e/etc/passwd": 400,
            base + "test": 400,
            base.replace(_info(gw).secret, "x" * len(_info(gw).secret)) + "test/store/test/" + NANO:
                403,
            gw.base_url.rsplit("/", 2)[0] + "/test/store/test/" + NANO: 403,
        }
        for url, want in cases.items():
            r = http.get(url)
            assert r.status_code == want, (url, r.text)
            assert _info(gw).secret not in r.text
        assert http.head(base + "test/store/test/nope.root").status_code == 404
        assert http.post(gw.url(NAME)).status_code == 405
    lines = [r.getMessage() for r in caplog.records if r.name == "htpdata.gateway"]
    assert len(lines) == len(cases) + 1
    assert all(_info(gw).secret not in line for line in lines)
    assert any(line.startswith("404 GET test:/store/test/nope.root:") for line in lines)
    assert any(line.startswith("403 GET from ") for line in lines)


def test_secret_is_not_in_argv_nor_readable_state(gw: Gateway) -> None:
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as fh:
        assert _info(gw).secret.encode() not in fh.read()
    assert os.environ[state.ENV_URL] == gw.base_url
    assert htpdata.gateway_url(NAME) == gw.url(NAME)


def test_gateway_url_without_a_gateway_says_how_to_start_one() -> None:
    with pytest.raises(htpdata.errors.GatewayError, match="htpdata serve"):
        htpdata.gateway_url(NAME)


def test_hello_proves_the_secret_without_it(gw: Gateway) -> None:
    from htpdata.gateway.dask import probe

    assert probe(_info(gw).port, _info(gw).secret) == "ours"
    assert probe(_info(gw).port, "another-secret") == "other"
    r = httpx.get(f"http://127.0.0.1:{_info(gw).port}/_gateway/hello?nonce=abcdefgh12")
    assert _info(gw).secret not in r.text


def test_unix_socket_checks_the_peer(client: htpdata.Client, tmp_path: Path) -> None:
    sock = tmp_path / "gw.sock"
    with gateway(client, unix_socket=str(sock)) as g:
        assert sock.stat().st_mode & 0o777 == 0o600
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport) as http:
            # The secret may be left out on the socket: the kernel tells who is connecting.
            r = http.get("http://gw/test/store/test/" + NANO, headers={"Range": "bytes=0-9"})
            assert r.status_code == 206
            assert r.content == DATA[:10]
            assert http.get(g.url(NAME).replace(f"127.0.0.1:{_info(g).port}", "gw")
                            ).content == DATA
    assert not sock.exists()


def test_failure_mid_answer_cuts_the_connection(client: htpdata.Client,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Every replica failing between two groups of one answer: the headers are out, so the
    connection is cut and the client sees a short body, never wrong bytes. (A fault injected
    into the reader: killing every origin between two groups of one answer cannot be timed.)"""
    from htpdata.errors import StorageUnavailableError

    monkeypatch.setattr(gateway_app, "GROUP_BYTES", 10_000)
    real_get = gateway_app.ReaderPool.get

    def failing_get(self: gateway_app.ReaderPool, name: Name) -> FileReader:
        reader = real_get(self, name)
        calls = {"n": 0}
        read_ranges = reader.read_ranges

        def flaky(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
            calls["n"] += 1
            if calls["n"] > 2:
                raise StorageUnavailableError("every replica went away", name=str(name))
            return read_ranges(ranges)

        reader.read_ranges = flaky  # type: ignore[method-assign]
        return reader

    monkeypatch.setattr(gateway_app.ReaderPool, "get", failing_get)
    caplog.set_level(logging.WARNING, logger="htpdata.gateway")
    with gateway(client) as g, httpx.Client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            http.get(g.url(NAME))
        assert http.get(g.url(NAME), headers={"Range": "bytes=0-9"}).status_code == 502
    assert any("connection closed mid-answer" in r.getMessage() for r in caplog.records)


def test_around_the_cache(client: htpdata.Client) -> None:
    with gateway(client, cache=False) as g, httpx.Client() as http:
        assert int(http.head(g.url(NAME)).headers["content-length"]) == len(DATA)
        r = http.get(g.url(NAME), headers={"Range": "bytes=10-19,30-39"})
        assert [p for _, p in _multipart(r)] == [DATA[10:20], DATA[30:40]]


def test_port_taken_is_a_clear_error(gw: Gateway, client: htpdata.Client) -> None:
    with pytest.raises(htpdata.errors.GatewayError, match="already in use"):
        gateway(client, port=_info(gw).port)


# -- the command line, curl and xrdcp ------------------------------------------------------------
def _cli_env(catalog_dir: Path, origin_cert: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTPDATA_")}
    env["HTPDATA_CATALOGS_PATH"] = str(catalog_dir)
    if origin_cert is not None:
        env["HTPDATA_AUTH_CA_FILE"] = str(origin_cert)
    return env


@pytest.fixture
def served(catalog_dir: Path, origin: XRootDServer) -> Iterator[Served]:
    """``htpdata serve`` as its own process, as a user starts it."""
    env = _cli_env(catalog_dir, origin.cert)
    proc = subprocess.Popen([sys.executable, "-m", "htpdata", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "gateway listening on http://127.0.0.1:" in line, line
        yield proc, env
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _htpdata(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv" / "bin" / "htpdata"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_serve_url_fileset_curl_xrdcp(served: Served, tmp_path: Path) -> None:
    proc, env = served
    info = state.discover(env)
    assert info is not None
    assert info.pid == proc.pid
    with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
        assert info.secret.encode() not in fh.read()
    assert state.state_path(env).stat().st_mode & 0o777 == 0o600
    out = _htpdata(env, "url", NAME, "--gateway")
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url == info.url(NAME)
    assert _htpdata(env, "url", NAME).stdout.strip() == f"htpdata://test/store/test/{NANO}"
    many = _htpdata(env, "url", "test:/Test/All", "--gateway", "--json")
    assert len(json.loads(many.stdout)) == 4
    fs = _htpdata(env, "fileset", "test:/Test/All", "--for", "root")
    assert fs.returncode == 0, fs.stderr
    files = json.loads(fs.stdout)["test:/Test/All"]["files"]
    assert url in files
    assert all(u.startswith(info.base_url) for u in files)
    curl = subprocess.run(["curl", "-sf", "-r", "100-199", url], capture_output=True,
                          timeout=60)
    assert curl.returncode == 0
    assert curl.stdout == DATA[100:200]
    head = subprocess.run(["curl", "-sfI", url], capture_output=True, text=True, timeout=60)
    assert f"Content-Length: {len(DATA)}" in head.stdout
    target = tmp_path / "copy.root"  # xrdcp over HTTP: Debian's xrootd-client-http-plugins
    cp = subprocess.run(["xrdcp", "--allow-http", "-f", "-s", url, str(target)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert target.read_bytes() == DATA
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert state.discover(env) is None  # the record went with it


def test_serve_refuses_a_hostname_bind(catalog_dir: Path, origin: XRootDServer) -> None:
    out = _htpdata(_cli_env(catalog_dir, origin.cert), "serve", "--bind", "localhost")
    assert out.returncode == 7
    assert out.stderr.startswith("htpdata: error: ")
    assert "IP address" in out.stderr
    help_text = _htpdata(_cli_env(catalog_dir, origin.cert), "serve", "--help").stdout
    assert "RISK" in help_text


def test_url_gateway_without_a_gateway(catalog_dir: Path, origin: XRootDServer) -> None:
    out = _htpdata(_cli_env(catalog_dir, origin.cert), "url", NAME, "--gateway")
    assert out.returncode == 12
    assert out.stderr.strip() == ("htpdata: error: no htpdata gateway is running for you on "
                                  "this node; start one with 'htpdata serve' (or "
                                  "htpdata.gateway() in Python)")


# -- another Unix user -----------------------------------------------------------------------------
def test_another_user_is_refused(served: Served, tenants: Tenants) -> None:
    """Other users on the node (``tenants``: real Unix users) reach the port but not the data:
    no secret, a guessed one or a nearly right one all get 403, and nothing they can read on
    the node holds the secret."""
    proc, env = served
    info = state.discover(env)
    assert info is not None
    port, path = info.port, f"test/store/test/{NANO}"
    for user in (tenants.mallory, tenants.eve):
        for url in (f"http://127.0.0.1:{port}/{path}",                           # no secret
                    f"http://127.0.0.1:{port}/{state.new_secret()}/{path}",    # a guess
                    f"http://127.0.0.1:{port}/{info.secret[:-1]}x/{path}",     # nearly
                    f"http://127.0.0.1:{port}/_gateway/status"):
            r = tenants.run(user, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            assert r.out == "403", (user.name, url, r.out, r.err)
        assert tenants.run(user, ["cat", str(state.state_path(env))]).returncode != 0
        assert tenants.run(user, ["cat", f"/proc/{proc.pid}/environ"]).returncode != 0
        ps = tenants.run(user, ["cat", f"/proc/{proc.pid}/cmdline"])
        assert info.secret not in ps.out
    # ... while the owner reads.
    assert httpx.get(info.url(NAME), headers={"Range": "bytes=0-3"}).content == b"root"
