"""Refreshing the access token by itself, against a real OIDC provider (issue 20).

The provider is panva's oidc-provider in Node.js (:mod:`htpdata.testing.oidc`), issuing
WLCG-profile JWTs that live a few seconds; the token-protected origin (XRootD's SciTokens plugin)
trusts its keys and checks signature, audience, scope and expiry. With the variables a JupyterHub
spawner sets (``ACCESS_TOKEN``, ``REFRESH_TOKEN``) and the client's id and secret, a stage that
lasts several token lifetimes completes, refreshing through the token endpoint found by OIDC
discovery, the rotated refresh token kept, every token file private.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import htpdata
from htpdata.errors import AuthenticationError
from htpdata.testing.oidc import OIDCProvider
from htpdata.testing.tokens import TokenOrigin
from htpdata.testing.wan import WanProxy
from htpdata.transports.http import HTTPTransport
from htpdata.transports.tokens import jwt_claims

from .conftest import TEST_FILES, TESTDATA, catalog_text, lay_out

pytestmark = pytest.mark.xrootd

AUDIENCE = "https://origin.htpdata.test"
TTL = 4          # seconds an access token lives
MARGIN = 1.5     # htpdata refreshes this long before exp
NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
PATH = f"store/test/{NANO}"


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCProvider]:
    if not OIDCProvider.available():
        why = "the test OIDC provider is not installed (Node.js, npm ci in .ci/oidc: .ci/setup)"
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail(why)
        pytest.skip(why)
    with OIDCProvider(audience=AUDIENCE, scope="storage.read:/store", access_ttl=TTL) as p:
        yield p


@pytest.fixture(scope="module")
def idp_origin(idp: OIDCProvider) -> Iterator[TokenOrigin]:
    if not TokenOrigin.available():
        pytest.fail("XRootD's SciTokens plugin is not installed (xrootd-scitokens-plugins)") \
            if os.environ.get("HTPDATA_REQUIRE_SERVERS") else pytest.skip("no SciTokens plugin")
    server = TokenOrigin(idp, name="idp-origin", audience=AUDIENCE)
    lay_out(server.data)
    with server:
        yield server


@pytest.fixture
def ca_bundle(idp: OIDCProvider, idp_origin: TokenOrigin, tmp_path: Path) -> Path:
    """One CA file trusting both the provider and the origin (each has its own certificate)."""
    assert idp.cert is not None
    assert idp_origin.cert is not None
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(idp.cert.read_bytes() + idp_origin.cert.read_bytes())
    return bundle


def _status(origin: TokenOrigin, token: str) -> int:
    assert origin.cert is not None
    with httpx.Client(verify=ssl.create_default_context(cafile=str(origin.cert))) as http:
        return http.get(origin.https_url + PATH, headers={
            "Authorization": f"Bearer {token}", "Range": "bytes=0-9"}).status_code


def test_a_stage_longer_than_the_tokens_life_completes(
        idp: OIDCProvider, idp_origin: TokenOrigin, ca_bundle: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    access, refresh = idp.login()
    spare, _ = idp.login()            # never shown to the origin: it expires unused
    assert _status(idp_origin, access) == 206
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**idp.environment(access, refresh), "XDG_RUNTIME_DIR": str(run)}
    total = sum((TESTDATA / n).stat().st_size for n in TEST_FILES)
    # Slow enough that the stage lasts about 2.5 token lifetimes.
    with WanProxy("127.0.0.1", idp_origin.http_port, delay_ms=1,
                  rate=total / (2.5 * TTL)) as wan:
        cat = tmp_path / "idp.toml"
        cat.write_text(catalog_text([("IDP_SITE", idp_origin, 1)], namespace="idp")
                       .replace(f":{idp_origin.http_port}/", f":{wan.port}/"))
        with htpdata.Client(environ=env, auth={"ca_file": str(ca_bundle),
                                               "token_margin": MARGIN},
                            catalogs={"path": [str(cat)]}, replicas={"protocols": ["davs"]},
                            cache={"local_dir": str(tmp_path / "local")}) as c, \
                caplog.at_level(logging.WARNING, "htpdata.stage"):
            tokens = c.transports.creds.tokens
            assert tokens is not None
            assert tokens.refresher is not None
            assert tokens.path == run / "htpdata" / "access-token"
            s = htpdata.stage("idp:/Test/All", client=c, streams=1, jobs=2)
            assert s.ok, [r.error for r in s.failed]
            assert s.seconds > 2 * TTL
            assert not caplog.records   # it can refresh: no warning that the token will expire
            # The token is needed where a request starts: at least one refresh happened, and
            # no request went out with an expired token although the stage outlived two.
            assert tokens.refreshes >= 1
            http = c.transports.for_url("davs://x/")
            assert isinstance(http, HTTPTransport)
            assert http.auth.sent_expired == 0
            current = tokens.token()
            assert current is not None
            assert current != access
    claims = jwt_claims(current)
    assert claims is not None
    assert claims["iss"] == idp.issuer
    assert claims["scope"] == "storage.read:/store"
    for f in (tokens.path, tokens.path.with_name("access-token.refresh")):
        assert f.stat().st_mode & 0o777 == 0o600
        assert refresh not in f.read_text()              # the provider rotated it
    assert _status(idp_origin, current) == 206
    assert _status(idp_origin, spare) == 403              # expired: the origin checks exp
    for name in TEST_FILES:
        assert c.cat(f"idp:/store/test/{name}", 0, 100) == (TESTDATA / name).read_bytes()[:100]


def test_root_reads_the_refreshed_file(idp: OIDCProvider, idp_origin: TokenOrigin,
                                       ca_bundle: Path, tmp_path: Path) -> None:
    access, refresh = idp.login()
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    # A process of its own: XRootD's client fixes TLS and security set-up once per process.
    code = ("import htpdata, sys\n"
            "c = htpdata.Client(auth={'ca_dir': sys.argv[2], 'ca_file': sys.argv[3]},"
            " cache={'local_dir': 'off'})\n"
            "assert c.cat(sys.argv[1], 0, 4096) == open(sys.argv[4], 'rb').read(4096)\n"
            "import os; print(os.environ['BEARER_TOKEN_FILE'])")
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k}
    env.update(idp.environment(access, refresh), XDG_RUNTIME_DIR=str(run))
    p = subprocess.run([sys.executable, "-c", code, idp_origin.root_url + "/" + PATH,
                        str(idp_origin.ca_dir), str(ca_bundle), str(TESTDATA / NANO)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(run / "htpdata" / "access-token")


def test_a_refused_refresh_is_one_authentication_error(idp: OIDCProvider,
                                                       idp_origin: TokenOrigin,
                                                       ca_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {"REFRESH_TOKEN": "not-a-refresh-token-6c1d", "OIDC_CLIENT_ID": idp.client_id,
           "OIDC_CLIENT_SECRET": idp.client_secret, "OIDC_TOKEN_ENDPOINT": idp.token_endpoint,
           "XDG_RUNTIME_DIR": str(run)}
    with htpdata.Client(environ=env, auth={"ca_file": str(ca_bundle)},
                        cache={"enabled": False}) as c, \
            pytest.raises(AuthenticationError) as err:
        c.cat(idp_origin.https_url + PATH, 0, 10)
    assert err.value.exit_code == 4
    assert "invalid_grant" in str(err.value)
    assert "not-a-refresh-token-6c1d" not in str(err.value)
    assert idp.client_secret not in str(err.value)
