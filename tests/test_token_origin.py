"""A real token-protected origin: XRootD's SciTokens plugin checks every request.

With a valid token reads work on root:// and davs://; without one, or with one that is expired,
signed by another key or scoped elsewhere, htpdata raises StoragePermissionError (CLI exit 4).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import htpdata
from htpdata.errors import ReplicasDeniedError, StoragePermissionError
from htpdata.testing.tokens import TokenIssuer, TokenOrigin, write_token_file

from .conftest import TESTDATA, catalog_text

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
PATH = f"store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()


def _client(origin: TokenOrigin, token_file: Path | None, **cache: str) -> htpdata.Client:
    auth = {"ca_file": str(origin.cert), "ca_dir": str(origin.ca_dir)}
    if token_file is not None:
        auth["token_file"] = str(token_file)
    return htpdata.Client(auth=auth, cache={"local_dir": "off", **cache})


@pytest.fixture
def token(tmp_path: Path, token_issuer: TokenIssuer) -> Path:
    return write_token_file(tmp_path, token_issuer.token("alice", scope="storage.read:/store"))


def test_the_origin_itself_checks_tokens_on_head_range_and_multirange(
        token_origin: TokenOrigin, token_issuer: TokenIssuer) -> None:
    url = token_origin.https_url + PATH
    good = {"Authorization": f"Bearer {token_issuer.token('alice')}"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(token_origin.cert))) as http:
        assert http.head(url).status_code == 403
        assert http.get(url, headers={"Range": "bytes=0-9"}).status_code == 403
        head = http.head(url, headers=good)
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(WANT)
        one = http.get(url, headers={**good, "Range": "bytes=100-199"})
        assert (one.status_code, one.content) == (206, WANT[100:200])
        many = http.get(url, headers={**good, "Range": "bytes=0-9,1000-1009"})
        assert many.status_code == 206
        assert many.headers["content-type"].startswith("multipart/byteranges")
        assert WANT[0:10] in many.content
        assert WANT[1000:1010] in many.content


@pytest.mark.parametrize("scheme", ["https", "davs", "root"])
def test_a_read_with_the_token_works(token_origin: TokenOrigin, token: Path, scheme: str) -> None:
    base = {"https": token_origin.https_url, "davs": token_origin.http_url,
            "root": token_origin.root_url + "/"}[scheme]
    if scheme == "root":
        # In a process of its own: XRootD's client sets up TLS and its security protocols once
        # per process, so after earlier tests (no CA folder, no token) ztn has no way left.
        code = ("import htpdata, sys\n"
                "c = htpdata.Client(auth={'ca_dir': sys.argv[2], 'token_file': sys.argv[3]},"
                " cache={'local_dir': 'off'})\n"
                "assert c.cat(sys.argv[1], 0, 4096) == open(sys.argv[4], 'rb').read(4096)\n"
                "print(c.info(sys.argv[1])['size'])")
        p = subprocess.run([sys.executable, "-c", code, base + PATH, str(token_origin.ca_dir),
                            str(token), str(TESTDATA / NANO)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        assert int(p.stdout) == len(WANT)
        return
    with _client(token_origin, token) as c:
        assert c.cat(base + PATH, 0, 4096) == WANT[:4096]
        assert c.info(base + PATH)["size"] == len(WANT)


def test_reads_through_a_catalog_and_the_cache_with_the_token(
        token_origin: TokenOrigin, token: Path, tmp_path: Path) -> None:
    cat = tmp_path / "tok.toml"
    cat.write_text(catalog_text([("TOKEN_SITE", token_origin, 1)], namespace="tok"))
    with htpdata.Client(auth={"ca_file": str(token_origin.cert), "ca_dir":
                              str(token_origin.ca_dir), "token_file": str(token)},
                        catalogs={"path": [str(cat)]},
                        cache={"local_dir": str(tmp_path / "local")}) as c:
        assert c.cat(f"tok:/{PATH}", 0, 10_000) == WANT[:10_000]
        assert c.cat(f"tok:/{PATH}", 5, 6) == WANT[5:6]


def test_without_a_token_the_read_is_denied(token_origin: TokenOrigin, tmp_path: Path) -> None:
    with _client(token_origin, None) as c, pytest.raises(StoragePermissionError) as err:
        c.cat(token_origin.https_url + PATH, 0, 10)
    assert isinstance(err.value, ReplicasDeniedError)
    assert err.value.exit_code == 4
    # root:// in a process of its own: XRootD's client shares one authenticated connection per
    # server among all clients of a process, so an earlier test's token would be reused here.
    code = ("import htpdata, sys\n"
            "c = htpdata.Client(auth={'ca_dir': sys.argv[2]}, cache={'local_dir': 'off'})\n"
            "try:\n    c.cat(sys.argv[1], 0, 10)\n"
            "except Exception as e:\n    print(type(e).__name__, isinstance(e, PermissionError))")
    p = subprocess.run([sys.executable, "-c", code, token_origin.root_url + "/" + PATH,
                        str(token_origin.ca_dir)], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if "BEARER" not in k}
                       | {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert p.stdout.split() == ["ReplicasDeniedError", "True"], p.stderr


@pytest.mark.parametrize("kind", ["expired", "foreign-key", "wrong-scope", "wrong-audience",
                                  "not-a-jwt"])
def test_a_token_the_origin_does_not_accept_is_denied(
        token_origin: TokenOrigin, token_issuer: TokenIssuer, tmp_path: Path, kind: str) -> None:
    makers: dict[str, Callable[[], str]] = {
        "expired": lambda: token_issuer.token("alice", lifetime=-120),
        "foreign-key": lambda: TokenIssuer(issuer=token_issuer.issuer).token("alice"),
        "wrong-scope": lambda: token_issuer.token("alice", scope="storage.read:/other"),
        "wrong-audience": lambda: token_issuer.token("alice", audience="https://elsewhere"),
        "not-a-jwt": lambda: "not-a-token-at-all",
    }
    value = makers[kind]()
    with _client(token_origin, write_token_file(tmp_path, value)) as c, \
            pytest.raises(StoragePermissionError):
        c.cat(token_origin.https_url + PATH, 0, 10)


def test_cli_exits_4_with_one_line_without_a_token(token_origin: TokenOrigin,
                                                   tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_AUTH_CA_FILE": str(token_origin.cert),
           "HTPDATA_AUTH_CA_DIR": str(token_origin.ca_dir), "HTPDATA_CACHE_LOCAL_DIR": "off",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    for url in (token_origin.https_url + PATH, token_origin.root_url + "/" + PATH):
        p = subprocess.run([sys.executable, "-m", "htpdata", "cat", url, "--end", "10"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 4, p.stderr
        assert p.stdout == ""
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("htpdata: error:")


def test_cli_reads_with_the_token(token_origin: TokenOrigin, token: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_AUTH_CA_FILE": str(token_origin.cert),
           "HTPDATA_AUTH_CA_DIR": str(token_origin.ca_dir), "HTPDATA_CACHE_LOCAL_DIR": "off",
           "BEARER_TOKEN_FILE": str(token)}
    for url in (token_origin.https_url + PATH, token_origin.root_url + "/" + PATH):
        p = subprocess.run([sys.executable, "-m", "htpdata", "cat", url, "--end", "100"],
                           capture_output=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout == WANT[:100]
