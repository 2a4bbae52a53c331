"""Tokens that change while htpdata works (issue 20): re-read, retried, shipped as a path.

The decisions are pure and tested on their own; the rest against the real token-protected
origin (XRootD's SciTokens plugin checks each request): a token file replaced under a running
client is picked up, a 403 re-reads the file once and retries once, and what a Dask stage sends
its workers holds the token file's path, never the token.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.config import AuthSettings
from htpdata.errors import StoragePermissionError
from htpdata.staging.run import warn_if_token_outlasted
from htpdata.testing.tokens import TokenIssuer, TokenOrigin, write_token_file
from htpdata.transports.auth import discover_credentials
from htpdata.transports.http import HTTPTransport
from htpdata.transports.tokens import (
    TokenSource,
    jwt_claims,
    outlasting,
    seconds_left,
    should_reread,
)

from .conftest import TESTDATA, catalog_text

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
PATH = f"store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()


def _jwt(claims: dict[str, Any]) -> str:
    def enc(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'none'})}.{enc(claims)}.c2ln"


# -- pure decisions ----------------------------------------------------------------------------
def test_jwt_claims_without_verifying() -> None:
    assert jwt_claims(_jwt({"exp": 123, "iss": "https://i"})) == {"exp": 123, "iss": "https://i"}
    for opaque in (None, "", "opaque-token", "a.b", "a.!!.c", _jwt({}).replace(".", "..", 1)):
        assert jwt_claims(opaque) is None
    assert jwt_claims("x." + base64.urlsafe_b64encode(b"[1]").decode() + ".y") is None


@given(st.one_of(st.none(), st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9))),
       st.one_of(st.none(), st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9))),
       st.one_of(st.none(), st.floats(-1e6, 1e6)), st.floats(0, 1e3))
def test_should_reread(known: tuple[int, int, int] | None, current: tuple[int, int, int] | None,
                       exp: float | None, margin: float) -> None:
    now = 1000.0
    want = known != current or (exp is not None and exp - now <= margin)
    assert should_reread(known, current, exp, now, margin) is want


def test_outlasting_says_so_only_when_the_plan_outlives_a_token_that_cannot_refresh() -> None:
    assert outlasting(100, None, False) is None          # an opaque token: nothing known
    assert outlasting(100, 200, False) is None
    assert outlasting(100, 50, True) is None             # it will be refreshed
    msg = outlasting(3600, 1200, False)
    assert msg is not None
    assert "20 min" in msg
    assert "60 min" in msg
    assert "\n" not in msg
    expired = outlasting(10, -5, False)
    assert expired is not None
    assert "expired" in expired
    assert seconds_left(None, 5) is None
    assert seconds_left(10, 4) == 6


def test_the_file_is_reread_when_it_changes_and_before_exp(tmp_path: Path) -> None:
    clock = [1000.0]
    path = tmp_path / "tok"
    path.write_text(_jwt({"exp": 2000, "n": 1}))
    source = TokenSource(path, margin=60, clock=lambda: clock[0])
    first = source.token()
    assert jwt_claims(first) == {"exp": 2000, "n": 1}
    for _ in range(5):
        assert source.token() == first
    assert source.reads == 1                  # unchanged and far from exp: one read
    new = tmp_path / "tok.new"
    new.write_text(_jwt({"exp": 2000, "n": 2}))
    os.replace(new, path)                     # how htgettoken and oidc-agent write it
    assert jwt_claims(source.token()) == {"exp": 2000, "n": 2}
    assert source.reads == 2
    clock[0] = 1941.0                          # within the margin of exp
    source.token()
    assert source.reads == 3
    assert source.seconds_left() == 59.0


def test_a_value_token_is_never_pickled_only_a_private_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    value = "tok-value-3f9e1c2b7a6d"
    creds = discover_credentials(AuthSettings(), {"BEARER_TOKEN": value}, uid=1)
    assert creds.tokens is not None
    blob = pickle.dumps(creds.tokens)
    assert value.encode() not in blob
    again = pickle.loads(blob)
    assert again.token() == value
    assert again.path is not None
    assert again.path.stat().st_mode & 0o777 == 0o600


# -- the real origin -------------------------------------------------------------------------
def _same_size(a: str, b: str) -> tuple[str, str]:
    width = max(len(a), len(b))
    return a.ljust(width), b.ljust(width)  # the file is stripped when read


def _overwrite_keeping_stat(path: Path, text: str) -> None:
    """Rewrite ``path`` in place with the same size and mtime: a change stat cannot see, so
    only a refusal makes htpdata read it again."""
    before = path.stat()
    with path.open("r+") as f:
        f.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


@pytest.mark.xrootd
def test_a_403_rereads_the_file_once_and_retries_once(token_origin: TokenOrigin,
                                                      token_issuer: TokenIssuer,
                                                      tmp_path: Path) -> None:
    foreign = TokenIssuer(issuer=token_issuer.issuer).token("alice", scope="storage.read:/store")
    good = token_issuer.token("alice", scope="storage.read:/store")
    good, foreign = _same_size(good, foreign)
    path = write_token_file(tmp_path, foreign)
    with htpdata.Client(auth={"ca_file": str(token_origin.cert), "token_file": str(path)},
                        cache={"enabled": False}) as c:
        url = token_origin.https_url + PATH
        with pytest.raises(StoragePermissionError):
            c.cat(url, 0, 100)                         # refused; re-read: the same bad one
        http = c.transports.for_url(url)
        assert isinstance(http, HTTPTransport)
        assert http.auth.retried == 0
        _overwrite_keeping_stat(path, good + "\n")     # renewed, in a way stat cannot see
        assert c.cat(url, 100, 200) == WANT[100:200]   # refused once, re-read, retried once
        assert http.auth.retried == 1
        assert c.cat(url, 200, 300) == WANT[200:300]   # the new token from then on
        assert http.auth.retried == 1


@pytest.mark.xrootd
def test_a_replaced_token_file_is_used_without_a_new_client(token_origin: TokenOrigin,
                                                            token_issuer: TokenIssuer,
                                                            tmp_path: Path) -> None:
    path = write_token_file(tmp_path, token_issuer.token("alice", scope="storage.read:/other"))
    with htpdata.Client(auth={"ca_file": str(token_origin.cert), "token_file": str(path)},
                        cache={"enabled": False}) as c:
        url = token_origin.https_url + PATH
        with pytest.raises(StoragePermissionError):
            c.cat(url, 0, 10)
        new = write_token_file(tmp_path, token_issuer.token("alice",
                                                            scope="storage.read:/store"))
        os.replace(new, path)
        assert c.cat(url, 0, 10) == WANT[:10]


@pytest.fixture
def tok_catalog(token_origin: TokenOrigin, tmp_path: Path) -> Path:
    cat = tmp_path / "tok.toml"
    cat.write_text(catalog_text([("TOKEN_SITE", token_origin, 1)], namespace="tok"))
    return cat


@pytest.mark.xrootd
def test_a_dask_stage_sends_the_token_file_path_never_the_token(
        token_origin: TokenOrigin, token_issuer: TokenIssuer, tok_catalog: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    from distributed.protocol import pickle as dask_pickle

    dumps: Callable[[object], bytes] = dask_pickle.dumps  # how distributed pickles tasks
    from htpdata.gateway.dask import GatewayPlugin, settings_environment

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    value = token_issuer.token("alice", scope="storage.read:/store")
    sent: list[bytes] = []
    real_submit: Callable[..., Any] = distributed.Client.submit

    def recording_submit(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(dumps((fn, args, kwargs)))       # what goes to the scheduler
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "submit", recording_submit)
    shared = tmp_path / "shared"
    with htpdata.Client(environ={"BEARER_TOKEN": value},
                        auth={"ca_file": str(token_origin.cert)},
                        catalogs={"path": [str(tok_catalog)]},
                        replicas={"protocols": ["davs"]},
                        cache={"local_dir": "off", "shared_dir": str(shared)}) as c:
        # Workers in this process (quick to start): what matters is what is sent, pickled
        # here as distributed pickles it for workers elsewhere.
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as dask_client:
            s = htpdata.stage(f"tok:/{PATH}", client=c, dask=dask_client)
        assert s.ok, [r.error for r in s.failed]
        assert len(s.staged) == len(sent) > 0
        for blob in [*sent, pickle.dumps(c), dumps(GatewayPlugin(1, "s", c.worker_settings()))]:
            assert value.encode() not in blob
        env = settings_environment(c.worker_settings())
        assert value not in json.dumps(env)
        assert Path(env["HTPDATA_AUTH_TOKEN_FILE"]).read_text().strip() == value
        assert Path(env["HTPDATA_AUTH_TOKEN_FILE"]).stat().st_mode & 0o777 == 0o600


@pytest.mark.xrootd
def test_a_stage_longer_than_the_token_says_so_first(
        token_origin: TokenOrigin, token_issuer: TokenIssuer, tok_catalog: Path,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_token_file(tmp_path, token_issuer.token("alice", scope="storage.read:/store",
                                                         lifetime=600))
    env = {**os.environ, "HTPDATA_AUTH_CA_FILE": str(token_origin.cert),
           "HTPDATA_AUTH_TOKEN_FILE": str(path), "HTPDATA_AUTH_PLAN_RATE": "1kB",
           "HTPDATA_CATALOGS_PATH": str(tok_catalog), "HTPDATA_CACHE_LOCAL_DIR":
           str(tmp_path / "local")}
    p = subprocess.run([sys.executable, "-m", "htpdata", "stage", "tok:/Test/All", "--dry-run"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    warnings = [line for line in p.stderr.splitlines() if "token expires" in line]
    assert len(warnings) == 1, p.stderr
    assert re.match(r"htpdata: WARNING: the access token expires in \d+ min", warnings[0])
    with htpdata.Client(auth={"ca_file": str(token_origin.cert), "token_file": str(path)},
                        catalogs={"path": [str(tok_catalog)]},
                        cache={"local_dir": str(tmp_path / "local")}) as c, \
            caplog.at_level(logging.WARNING, "htpdata.stage"):
        assert warn_if_token_outlasted(c, 10**6) is None       # 1 MB at 50 MB/s: fine
        htpdata.stage("tok:/Test/All", client=c, dry_run=True)
        assert not caplog.records
    fast = htpdata.Client(auth={"ca_file": str(token_origin.cert), "token_file": str(path),
                                "plan_rate": "1kB"}, cache={"local_dir": "off"})
    assert warn_if_token_outlasted(fast, 10**6) is not None
