"""Shared fixtures: isolated configuration, the real ROOT test files, real XRootD origins.

Servers are real (Debian ``xrootd-server``), started on free localhost ports with a readiness
probe and stopped by PID; see :mod:`htpdata.testing.servers`. Tests that need them carry the
``xrootd`` marker and are skipped, loudly, only when ``xrootd`` is not installed and
``HTPDATA_REQUIRE_SERVERS`` is unset (CI sets it, so there a missing server is a failure).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import pytest

import htpdata
from htpdata.default import reset_default_client
from htpdata.demo import SAMPLES
from htpdata.testing import XRootDServer
from htpdata.testing.tokens import TokenIssuer, TokenOrigin
from htpdata.testing.users import Tenants, TenantSetupError

REPO = Path(__file__).resolve().parent.parent
_SHARED = REPO.parent / "shared" / "testdata"
TESTDATA = Path(os.environ.get("HTPDATA_TESTDATA", _SHARED if _SHARED.is_dir() else SAMPLES))
TEST_FILES = sorted(p.name for p in TESTDATA.glob("*.root"))


class Sections(TypedDict, total=False):
    """Settings overrides as tests pass them, ``htpdata.Client(**sections)``: one table per
    section of :class:`htpdata.config.Settings`. A TypedDict rather than ``dict[str, ...]`` so
    that mypy matches each key to ``Client``'s ``**overrides`` and never to its ``settings`` or
    ``environ`` parameters."""

    catalogs: dict[str, object]
    timeouts: dict[str, object]
    replicas: dict[str, object]
    auth: dict[str, object]
    cache: dict[str, object]
    rucio: dict[str, object]


def adler32_of(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def _need_xrootd() -> None:
    if shutil.which("xrootd") is None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("xrootd is not installed but HTPDATA_REQUIRE_SERVERS is set")
        pytest.skip("xrootd (Debian xrootd-server) is not installed")


def _need_scitokens() -> None:
    _need_xrootd()
    if not TokenOrigin.available():
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("XRootD's SciTokens plugin is not installed but HTPDATA_REQUIRE_SERVERS "
                        "is set (Debian: xrootd-scitokens-plugins)")
        pytest.skip("XRootD's SciTokens plugin (Debian xrootd-scitokens-plugins) is not installed")


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No user config, no user catalogs, no credentials from the machine leak into a test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    (home / "run").mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))  # gateway state files
    for var in list(os.environ):
        if var.startswith("HTPDATA_") and var not in ("HTPDATA_REQUIRE_SERVERS",
                                                      "HTPDATA_TESTDATA"):
            monkeypatch.delenv(var)
    for var in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "X509_USER_PROXY"):
        monkeypatch.delenv(var, raising=False)
    reset_default_client()
    yield
    reset_default_client()


def lay_out(data: Path) -> None:
    """Put every test file at /store/test/<name> under ``data``."""
    target = data / "store" / "test"
    target.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        shutil.copyfile(TESTDATA / name, target / name)


def catalog_text(sites: list[tuple[str, XRootDServer, int]], namespace: str = "test") -> str:
    """A catalog for ``namespace`` served by each (site name, server, preference)."""
    out = [f'format = 1\n[namespaces.{namespace}]\ndescription = "test files"\n']
    for site, server, pref in sites:
        out.append(
            f"[sites.{site}]\npreference = {pref}\nprotocols = [\n"
            f'  {{ scheme = "root", namespace = "{namespace}", prefix = "{server.root_url}" }},\n'
            f'  {{ scheme = "{server.http_url.split(":")[0]}", '
            f'namespace = "{namespace}", rules = [\n'
            f'    {{ path-match = "/(.*)", result = "{server.http_url}$1" }} ] }},\n]\n')
    files = ",\n".join(
        f'  {{ name = "/store/test/{n}", size = {(TESTDATA / n).stat().st_size}, '
        f'adler32 = "{adler32_of(TESTDATA / n)}" }}' for n in TEST_FILES)
    out.append(f'[datasets."/Test/All"]\nnamespace = "{namespace}"\nfiles = [\n{files}\n]\n')
    return "\n".join(out)


@pytest.fixture(scope="session")
def origin() -> Iterator[XRootDServer]:
    """One XRootD origin for the session, serving the test files on root:// and davs://."""
    _need_xrootd()
    server = XRootDServer(name="origin")
    lay_out(server.data)
    with server:
        yield server


@pytest.fixture(scope="session")
def token_issuer() -> TokenIssuer:
    """Mints real JWTs (RS256, WLCG profile) that :func:`token_origin` accepts."""
    return TokenIssuer()


@pytest.fixture(scope="session")
def token_origin(token_issuer: TokenIssuer) -> Iterator[TokenOrigin]:
    """An XRootD origin serving the test files on root:// and davs://, every read needing a
    bearer token from ``token_issuer`` (checked by XRootD's SciTokens plugin)."""
    _need_scitokens()
    server = TokenOrigin(token_issuer)
    lay_out(server.data)
    with server:
        yield server


@pytest.fixture
def catalog_dir(tmp_path: Path, origin: XRootDServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user catalog folder with namespace ``test`` on the session origin."""
    folder = tmp_path / "catalogs"
    folder.mkdir()
    (folder / "test.toml").write_text(catalog_text([("SITE_A", origin, 1)]))
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(folder))
    assert origin.cert is not None
    monkeypatch.setenv("HTPDATA_AUTH_CA_FILE", str(origin.cert))
    reset_default_client()
    return folder


@pytest.fixture
def client(catalog_dir: Path) -> htpdata.Client:
    return htpdata.default_client()



@pytest.fixture
def two_origins(tmp_path: Path) -> Iterator[tuple[XRootDServer, XRootDServer, Path]]:
    """Two origins with the same files (SITE_A preferred) and a catalog file naming both."""
    _need_xrootd()
    a, b = XRootDServer(name="siteA", tls=False), XRootDServer(name="siteB", tls=False)
    for s in (a, b):
        lay_out(s.data)
    with a, b:
        cat = tmp_path / "two-sites.toml"
        cat.write_text(catalog_text([("SITE_A", a, 1), ("SITE_B", b, 2)]))
        yield a, b, cat


@pytest.fixture(scope="session")
def tenant_machine() -> Iterator[Tenants]:
    """The real Unix test users (created as root) and a probed way to run htpdata as them."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create real Unix users (CI runs the suite as root)")
    try:
        machine = Tenants.start()
    except TenantSetupError as exc:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail(f"multi-tenant tests cannot run: {exc}")
        pytest.skip(f"multi-tenant tests cannot run: {exc}")
    yield machine
    machine.cleanup()


@pytest.fixture
def tenants(tenant_machine: Tenants) -> Iterator[Tenants]:
    """The test users with fresh homes, and a folder they can all traverse (``tenants.tmp``)."""
    t = tenant_machine.fresh(Path(tempfile.mkdtemp(prefix="test-", dir=tenant_machine.base)))
    yield t
    t.cleanup()


@pytest.fixture
def dask_client() -> Iterator[object]:
    """A distributed.Client on a LocalCluster of two worker processes. The scheduler's HTTP
    server (dashboard, /metrics) listens on a free port: with ``None`` distributed still binds
    8787, which another run on the machine may hold."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as dc:
        yield dc


_SERVER_FIXTURES = frozenset({"origin", "two_origins", "catalog_dir", "client"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using a real XRootD server must say so (``@pytest.mark.xrootd``), so that
    ``-m "not xrootd"`` runs without servers and CI knows what a skip would hide."""
    for item in items:
        uses = _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("xrootd") is None:
            raise pytest.UsageError(f"{item.nodeid} uses {', '.join(sorted(uses))} (a real "
                                    "XRootD server) but lacks @pytest.mark.xrootd")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .figures import FIGURES, write_figures

    if any(FIGURES.values()):
        terminalreporter.write_sep("-", "reliability figures")
        for k, v in FIGURES.items():
            terminalreporter.write_line(f"{k}: {v}")
        if os.environ.get("HTPDATA_FIGURES_JSON"):  # the book's copy: docs/_data/results/
            write_figures(Path(os.environ["HTPDATA_FIGURES_JSON"]))
