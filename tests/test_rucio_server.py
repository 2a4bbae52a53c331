"""The real Rucio server fixture: RSEs, replicas, datasets and a container, read back by Client.

No XRootD is needed: the RSE protocols point at free localhost ports nothing listens on, and
only Rucio's catalogue answers are checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from htpdata.testing import free_port
from htpdata.testing.rucio import (
    RucioServer,
    add_container,
    add_dataset,
    add_rse,
    describe_files,
    register_files,
)

from .conftest import TEST_FILES, TESTDATA

pytestmark = [pytest.mark.rucio, pytest.mark.timeout(60)]

CMS_DATASET = "/Test/All/NANOAOD/block-1"  # CMS block names carry '#', which Rucio's generic
CMS_CONTAINER = "/Test/All/NANOAOD"        # schema rejects
USER_SCOPE = "user.analyst1"
USER_DATASET = "my.dataset"


def _need_rucio() -> None:
    try:
        import gunicorn  # noqa: F401
        import rucio  # noqa: F401
    except ImportError as exc:
        reason = f"{exc.name} is not installed (pip install rucio gunicorn)"
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail(f"{reason} but HTPDATA_REQUIRE_SERVERS is set")
        pytest.skip(reason)


@dataclass
class Site:
    server: RucioServer
    client: Any  # rucio.client.Client
    root_ports: dict[str, int] = field(default_factory=dict)
    davs_ports: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def rucio_site() -> Iterator[Site]:
    """A Rucio server with two disk RSEs and one tape RSE holding the test files."""
    _need_rucio()
    assert TEST_FILES, f"no test files in {TESTDATA}"
    with RucioServer() as server:
        site = Site(server, server.client())
        for rse, attrs in (("T2_IT_TEST", {"country": "IT", "site": "T2_IT_Test"}),
                           ("XRD_B", {"country": "CH", "site": "T2_CH_Test"})):
            site.root_ports[rse], site.davs_ports[rse] = free_port(), free_port()
            add_rse(site.client, rse, root_url=f"root://localhost:{site.root_ports[rse]}",
                    davs_url=f"davs://localhost:{site.davs_ports[rse]}", attributes=attrs)
        site.root_ports["T1_IT_TAPE"] = free_port()
        add_rse(site.client, "T1_IT_TAPE", root_url=f"root://localhost:"
                f"{site.root_ports['T1_IT_TAPE']}", tape=True, attributes={"country": "IT"})

        site.files = describe_files([TESTDATA / n for n in TEST_FILES], "/store/test/")
        for rse, port in site.root_ports.items():
            register_files(site.client, "cms", rse, site.files, f"root://localhost:{port}/")
        add_dataset(site.client, "cms", CMS_DATASET, [f["name"] for f in site.files])
        add_container(site.client, "cms", CMS_CONTAINER, [CMS_DATASET])

        user_files = describe_files([TESTDATA / n for n in TEST_FILES], "")
        port = site.root_ports["T2_IT_TEST"]
        register_files(site.client, USER_SCOPE, "T2_IT_TEST", user_files,
                       f"root://localhost:{port}//store/user/analyst1/")
        add_dataset(site.client, USER_SCOPE, USER_DATASET, [f["name"] for f in user_files])
        yield site


def _by_name(files: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    return {f["name"]: (f["bytes"], f["adler32"]) for f in files}


@pytest.mark.parametrize("did", [CMS_DATASET, CMS_CONTAINER])
def test_list_files_sizes_and_checksums(rucio_site: Site, did: str) -> None:
    listed = list(rucio_site.client.list_files("cms", did))
    assert _by_name(listed) == _by_name(rucio_site.files)
    assert {f["scope"] for f in listed} == {"cms"}


def test_list_replicas_pfns(rucio_site: Site) -> None:
    replicas = list(rucio_site.client.list_replicas(
        [{"scope": "cms", "name": CMS_CONTAINER}], schemes=["root", "davs"], sort="random"))
    assert _by_name(replicas) == _by_name(rucio_site.files)
    ports = rucio_site.root_ports
    for rep in replicas:
        name = rep["name"]
        assert set(rep["rses"]) == {"T2_IT_TEST", "XRD_B", "T1_IT_TAPE"}
        for rse, port in ports.items():
            assert f"root://localhost:{port}/{name}" in rep["rses"][rse]
        for rse, port in rucio_site.davs_ports.items():
            assert f"davs://localhost:{port}{name}" in rep["rses"][rse]
        assert all(p.startswith(("root://localhost:", "davs://localhost:"))
                   for p in rep["pfns"])
        assert all("///" not in p for p in rep["pfns"])
        types = {info["rse"]: info["type"] for info in rep["pfns"].values()}
        assert types == {"T2_IT_TEST": "DISK", "XRD_B": "DISK", "T1_IT_TAPE": "TAPE"}


def test_user_scope(rucio_site: Site) -> None:
    client = rucio_site.client
    listed = list(client.list_files(USER_SCOPE, USER_DATASET))
    assert sorted(f["name"] for f in listed) == sorted(TEST_FILES)
    port = rucio_site.root_ports["T2_IT_TEST"]
    replicas = list(client.list_replicas([{"scope": USER_SCOPE, "name": USER_DATASET}],
                                         schemes=["root"], sort="random"))
    assert {p for r in replicas for p in r["pfns"]} == {
        f"root://localhost:{port}//store/user/analyst1/{n}" for n in TEST_FILES}


def test_rse_attributes(rucio_site: Site) -> None:
    client = rucio_site.client
    assert {r["rse"] for r in client.list_rses("country=IT")} == {"T2_IT_TEST", "T1_IT_TAPE"}
    assert {r["rse"] for r in client.list_rses("rse_type=TAPE")} == {"T1_IT_TAPE"}
    assert client.list_rse_attributes("XRD_B")["site"] == "T2_CH_Test"


def test_missing_did(rucio_site: Site) -> None:
    from rucio.common.exception import DataIdentifierNotFound

    with pytest.raises(DataIdentifierNotFound):
        rucio_site.client.get_did("cms", "/store/test/no-such-file.root")
    with pytest.raises(DataIdentifierNotFound):
        list(rucio_site.client.list_files("cms", "/No/Such/DATASET"))
