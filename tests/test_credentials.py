"""Credentials written into URLs reach the server and nothing else.

A token in ``?authz=`` (or ``user:pass@``) is taken out of the name before anything is keyed:
the read still sends it (the token origin accepts only that way here), and no file under any
tier, no log line and no ``report --json`` holds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import htpdata
from htpdata.testing import XRootDServer
from htpdata.testing.tokens import TokenIssuer, TokenOrigin

from .conftest import TESTDATA

pytestmark = pytest.mark.xrootd

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
PATH = f"store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()


def _no_secret_anywhere(root: Path, *secrets: str) -> int:
    """Assert no file (name or bytes) under ``root`` holds a secret; returns files checked."""
    checked = 0
    for p in root.rglob("*"):
        for s in secrets:
            assert s not in str(p), p
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data, p
            checked += 1
    return checked


def test_a_token_in_the_query_is_sent_but_never_keyed_stored_or_reported(
        token_origin: TokenOrigin, token_issuer: TokenIssuer, tmp_path: Path) -> None:
    token = token_issuer.token("alice", scope="storage.read:/store")
    tiers = {"local_dir": str(tmp_path / "local"), "shared_dir": str(tmp_path / "shared")}
    for base in (token_origin.https_url, token_origin.http_url):
        url = f"{base}{PATH}?authz=Bearer%20{token}"
        with htpdata.Client(auth={"ca_file": str(token_origin.cert)}, cache=tiers) as c:
            resolved = c.resolve(url)
            assert str(resolved.name) == base + PATH
            assert token not in json.dumps(resolved.as_dict())
            assert c.cat(url, 0, 50_000) == WANT[:50_000]        # the server got the token
            assert c.info(url)["name"] == base + PATH
            assert c.cat(url, 60_000, 60_100) == WANT[60_000:60_100]
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": tiers["local_dir"],
           "HTPDATA_CACHE_SHARED_DIR": tiers["shared_dir"],
           "HTPDATA_AUTH_CA_FILE": str(token_origin.cert)}
    outs = []
    for args in (["--debug", "cat", f"{token_origin.https_url}{PATH}?authz={token}",
                  "--end", "10"],
                 ["--debug", "cat", f"{token_origin.https_url}store/test/nope.root?authz={token}"],
                 ["--debug", "resolve", f"{token_origin.https_url}{PATH}?access_token={token}"],
                 ["report", "--json"], ["cache", "info", f"{token_origin.https_url}{PATH}"]):
        p = subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                           env=env, timeout=120)
        outs.append((args[:2], p.returncode, p.stdout + p.stderr))
    assert outs[0][1] == 0
    assert outs[3][1] == 0
    for args, _, out in outs:
        assert token.encode() not in out, args
    assert _no_secret_anywhere(tmp_path, token) > 0


def test_userinfo_is_sent_but_never_kept(origin: XRootDServer, tmp_path: Path) -> None:
    password = "pa55-word-never-stored"
    url = f"https://jdoe:{password}@localhost:{origin.http_port}/{PATH}"
    tiers = {"local_dir": str(tmp_path / "local")}
    with htpdata.Client(auth={"ca_file": str(origin.cert)}, cache=tiers) as c:
        assert c.cat(url, 0, 1000) == WANT[:1000]
        assert str(c.resolve(url).name) == f"https://localhost:{origin.http_port}/{PATH}"
    assert _no_secret_anywhere(tmp_path, password, "jdoe") > 0


def test_the_same_file_with_different_tokens_is_one_cache_entry(
        token_origin: TokenOrigin, token_issuer: TokenIssuer, tmp_path: Path) -> None:
    tiers = {"local_dir": str(tmp_path / "local")}
    first, second = (token_issuer.token(s, scope="storage.read:/store") for s in ("a", "b"))
    with htpdata.Client(auth={"ca_file": str(token_origin.cert)}, cache=tiers) as c:
        assert c.cat(f"{token_origin.https_url}{PATH}?authz={first}", 0, 4096) == WANT[:4096]
    from htpdata.testing.cachecheck import packs_under

    entries = {p.parent for p in packs_under(tmp_path / "local")}
    with htpdata.Client(auth={"ca_file": str(token_origin.cert)}, cache=tiers) as c:
        assert c.cat(f"{token_origin.https_url}{PATH}?authz={second}", 0, 4096) == WANT[:4096]
        assert c.cache.info(f"{token_origin.https_url}{PATH}")
    assert {p.parent for p in packs_under(tmp_path / "local")} == entries
    assert len(entries) == 1
