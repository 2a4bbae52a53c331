"""htpdata against a real Rucio server whose RSEs point at a real XRootD origin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import htpdata
from htpdata.errors import AuthenticationError, NameNotFoundError, ServiceUnavailableError
from htpdata.reader import ReplicaReader
from htpdata.testing import XRootDServer, free_port

from .conftest import TEST_FILES, TESTDATA

pytestmark = [pytest.mark.rucio, pytest.mark.xrootd]

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
CONTAINER = "/Test/All/NANOAOD"
BULK = 1200


@dataclass
class World:
    server: Any
    config: Path
    origin: XRootDServer


@pytest.fixture(scope="module")
def world(origin: XRootDServer) -> Iterator[World]:
    from .test_rucio_server import _need_rucio

    _need_rucio()
    from htpdata.testing.rucio import (
        RucioServer,
        add_container,
        add_dataset,
        add_rse,
        describe_files,
        register_files,
    )

    with RucioServer() as server:
        c = server.client()
        add_rse(c, "T2_IT_TEST", root_url=f"root://localhost:{origin.port}",
                davs_url=f"davs://localhost:{origin.http_port}", attributes={"country": "IT"})
        dead = free_port()
        add_rse(c, "T2_DE_DEAD", root_url=f"root://localhost:{dead}", attributes={"country": "DE"})
        # The tape endpoint is the same origin under another host spelling: Rucio keys
        # replicas by PFN, so two RSEs may not share one.
        add_rse(c, "T1_IT_TAPE", root_url=f"root://127.0.0.1:{origin.port}", tape=True)
        files = describe_files([TESTDATA / n for n in TEST_FILES], "/store/test/")
        register_files(c, "cms", "T2_IT_TEST", files, f"root://localhost:{origin.port}/")
        register_files(c, "cms", "T1_IT_TAPE", files, f"root://127.0.0.1:{origin.port}/")
        register_files(c, "cms", "T2_DE_DEAD", files, f"root://localhost:{dead}/")
        add_dataset(c, "cms", f"{CONTAINER}/block-1", [f["name"] for f in files])
        add_container(c, "cms", CONTAINER, [f"{CONTAINER}/block-1"])
        user = [{**f, "name": f["name"].rsplit("/", 1)[1],
                 "pfn": f"root://localhost:{origin.port}/{f['name']}"} for f in files]
        register_files(c, "user.analyst1", "T2_IT_TEST", user)
        add_dataset(c, "user.analyst1", "my.dataset", [f["name"] for f in user])
        bulk: list[dict[str, Any]] = [
            {"name": f"/store/bulk/f{i:05d}.root", "bytes": 1000 + i, "adler32": "00000001"}
            for i in range(BULK)]
        register_files(c, "cms", "T2_IT_TEST", bulk, f"root://localhost:{origin.port}/")
        add_dataset(c, "cms", "/Bulk/Many/NANOAOD", [f["name"] for f in bulk])
        old = os.environ.get("RUCIO_CONFIG")
        os.environ["RUCIO_CONFIG"] = str(server.client_config)
        try:
            yield World(server, server.client_config, origin)
        finally:
            if old is None:
                os.environ.pop("RUCIO_CONFIG", None)
            else:
                os.environ["RUCIO_CONFIG"] = old


def client(world: World, **extra: Any) -> htpdata.Client:
    settings = {"auth": {"ca_file": str(world.origin.cert)},
                "replicas": {"prefer_sites": ["T2_IT_*"]}, **extra}
    return htpdata.Client(**settings)


def test_open_a_file_did_with_uproot(world: World) -> None:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    expected = uproot.open(TESTDATA / NANO)["Events"].arrays(["Muon_pt", "Jet_pt"])
    with client(world) as c:
        htpdata.reset_default_client(c)
        with htpdata.open(f"rucio:cms:/store/test/{NANO}") as f:
            assert ak.array_equal(uproot.open(f)["Events"].arrays(["Muon_pt", "Jet_pt"]),
                                  expected)
        r = htpdata.resolve(f"rucio:cms:/store/test/{NANO}")
        assert isinstance(r, htpdata.ResolvedFile)
        assert r.replicas[0].site == "T2_IT_TEST"
        assert r.replicas[0].protocol == "root"
        assert "T1_IT_TAPE" not in {x.site for x in r.replicas}  # tape never streams
        assert all(x.name == f"rucio:cms:/store/test/{NANO}" for x in r.replicas)
        assert r.size == (TESTDATA / NANO).stat().st_size


def test_files_and_resolve_of_datasets_and_containers(world: World) -> None:
    with client(world) as c:
        htpdata.reset_default_client(c)
        files = htpdata.files(f"rucio:cms:{CONTAINER}")
        assert {f.name for f in files} == {f"rucio:cms:/store/test/{n}" for n in TEST_FILES}
        for f in files:
            local = TESTDATA / f.name.rsplit("/", 1)[1]
            assert f.size == local.stat().st_size
            assert f.adler32
        resolved = htpdata.resolve("rucio:user.analyst1:my.dataset")
        assert isinstance(resolved, list)
        assert len(resolved) == len(TEST_FILES)
        assert all(r.replicas[0].site == "T2_IT_TEST" for r in resolved)


def test_failover_from_a_dead_rse(world: World) -> None:
    with client(world, replicas={"prefer_sites": ["T2_DE_*"]},
                timeouts={"connect": 2, "read": 5}) as c:
        reader = c.reader(f"rucio:cms:/store/test/{NANO}", cache=False)
        assert isinstance(reader, ReplicaReader)
        assert reader.resolved.replicas[0].site == "T2_DE_DEAD"
        assert reader.read(0, 4) == b"root"
        assert [a.site for a in reader.attempts] == ["T2_DE_DEAD"]


def test_bulk_resolution_and_metadata_cache(world: World) -> None:
    calls: list[int] = []

    def counted(c: htpdata.Client) -> None:
        real = c.resolver.rucio.client()
        original = real.list_replicas

        def counting(dids: list[dict[str, str]], **kw: Any) -> Any:
            calls.append(len(dids))
            return original(dids, **kw)

        real.list_replicas = counting

    with client(world) as c:
        counted(c)
        resolved = c.resolve_all("rucio:cms:/Bulk/Many/NANOAOD")
        assert len(resolved) == BULK
        assert calls == [1]  # one streamed call for the whole dataset, not one per file
        one = c.resolve(str(resolved[7].name))  # a file of it: nothing more is asked
        assert one.replicas == resolved[7].replicas
        assert calls == [1]
    with client(world) as c:  # a new process: the metadata cache answers
        counted(c)
        assert len(c.resolve_all("rucio:cms:/Bulk/Many/NANOAOD")) == BULK
        assert calls == [1]


def test_cms_names_through_rucio_with_catalog_fallback(world: World, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    cat = tmp_path / "cms-test.toml"  # a local site for cms, used when Rucio fails
    cat.write_text(f'format = 1\n[sites.LOCAL_CMS]\npreference = 1\nprotocols = [{{ scheme = '
                   f'"root", namespace = "cms", prefix = "{world.origin.root_url}" }}]\n')
    settings = {"rucio": {"cms_via_rucio": True}, "catalogs": {"path": [str(cat)]}}
    with client(world, **settings) as c:
        assert c.resolve(f"cms:/store/test/{NANO}").replicas[0].site == "T2_IT_TEST"
        assert {f.name for f in c.files(f"cms:{CONTAINER}")} == {
            f"cms:/store/test/{n}" for n in TEST_FILES}
        # not in Rucio: the local catalogs answer
        assert c.resolve("cms:/store/elsewhere/x.root").replicas[0].site == "LOCAL_CMS"
    dead = tmp_path / "dead.cfg"
    dead.write_text(world.config.read_text().replace(f":{world.server.port}",
                                                     f":{free_port()}"))
    from htpdata.testing.rucio import rucio_config

    with rucio_config(dead), client(world, **settings) as c:
        rep = c.resolve(f"cms:/store/test/{NANO}").replicas[0]
        assert rep.site == "LOCAL_CMS"
        assert c.cat(f"cms:/store/test/{NANO}", 0, 4) == b"root"
    assert caplog.text.count("using the local catalogs") == 1


def test_clear_errors(world: World, tmp_path: Path) -> None:
    from htpdata.testing.rucio import rucio_config

    with client(world) as c:
        with pytest.raises(NameNotFoundError, match="not found in Rucio"):
            c.resolve("rucio:cms:/store/test/no-such.root")
        with pytest.raises(NameNotFoundError, match="scope"):
            c.resolve("rucio:no.such.scope:x")
    bad = tmp_path / "bad.cfg"
    text = world.config.read_text().replace("htpdata-test-secret", "wrong-password")
    bad.write_text("\n".join(  # its own token file: no token of the good login to reuse
        f"auth_token_file_path = {tmp_path / 'token'}" if line.startswith("auth_token_file")
        else line for line in text.splitlines()) + "\n")
    with rucio_config(bad), client(world) as c, pytest.raises(AuthenticationError):
        c.resolve("rucio:cms:/store/test/x.root")
    dead = tmp_path / "dead.cfg"
    dead.write_text(world.config.read_text().replace(f":{world.server.port}",
                                                     f":{free_port()}"))
    with rucio_config(dead), client(world) as c, pytest.raises(ServiceUnavailableError,
                                                                match="not reachable"):
        c.resolve("rucio:cms:/store/test/x.root")


def test_cli_resolve_ls_fileset(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_AUTH_CA_FILE": str(world.origin.cert)}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                              env=env, timeout=120)

    out = run("resolve", "rucio:user.analyst1:my.dataset", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == len(TEST_FILES)
    listing = run("ls", f"rucio:cms:{CONTAINER}").stdout.decode()
    assert all(n in listing for n in TEST_FILES)
    missing = run("resolve", "rucio:cms:/nope.root")
    assert missing.returncode == 3
    assert b"not found in Rucio" in missing.stderr
    target = tmp_path / "fileset.json"
    assert run("fileset", "rucio:user.analyst1:my.dataset", "-o", str(target)).returncode == 0
    fileset = json.loads(target.read_text())
    urls = fileset["rucio:user.analyst1:my.dataset"]["files"]
    assert len(urls) == len(TEST_FILES)
    assert all(u.startswith("htpdata://rucio/user.analyst1:") and t == "Events"
               for u, t in urls.items())


def test_offline_use_of_the_last_answer(world: World,
                                        caplog: pytest.LogCaptureFixture) -> None:
    name = f"rucio:cms:/store/test/{NANO}"
    with client(world, rucio={"metadata_ttl": 0}) as c:
        assert c.cat(name, 0, 4) == b"root"  # answers land in the metadata cache
    world.server.stop()
    try:
        with client(world, rucio={"metadata_ttl": 0}) as c:
            assert c.cat(name, 0, 4) == b"root"
        assert "Rucio unreachable" in caplog.text
    finally:
        world.server.start()
