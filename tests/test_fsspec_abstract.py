"""fsspec's own conformance suite (``fsspec.tests.abstract``) run against ``htpdata://``.

The filesystem under test is htpdata with a catalog namespace ``scratch`` mapped onto a real,
writable XRootD origin: every read goes through name resolution and the failover reader, every
write passes through to the origin. Which parts of the suite apply is explained in
``docs/fsspec.md``.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable, Iterator

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

import htpdata
from htpdata.fs import HtpdataFileSystem
from htpdata.testing import XRootDServer

pytestmark = pytest.mark.xrootd


@pytest.fixture(scope="module")
def scratch_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XRootDServer]:
    from .conftest import _need_xrootd

    _need_xrootd()
    with XRootDServer(name="scratch", tls=False) as server:
        yield server


class HtpdataFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, scratch_origin: XRootDServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[HtpdataFileSystem]:
        cat = tmp_path_factory.mktemp("cat") / "scratch.toml"
        cat.write_text(f'format = 1\n[namespaces.scratch]\n[sites.ORIGIN]\nprotocols = [{{ '
                       f'scheme = "root", namespace = "scratch", prefix = '
                       f'"{scratch_origin.root_url}" }}]\n')
        client = htpdata.Client(catalogs={"path": [str(cat)]})
        yield HtpdataFileSystem(client=client, skip_instance_cache=True)
        client.close()

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self, fs: HtpdataFileSystem) -> str:
        path = f"scratch/abstract-{uuid.uuid4().hex[:8]}"
        fs.makedirs(path, exist_ok=True)
        return path


class TestHtpdataOpen(AbstractOpenTests, HtpdataFixtures):  # type: ignore[misc]
    pass


class TestHtpdataPipe(AbstractPipeTests, HtpdataFixtures):  # type: ignore[misc]
    pass


class TestHtpdataGet(AbstractGetTests, HtpdataFixtures):  # type: ignore[misc]
    pass


class TestHtpdataPut(AbstractPutTests, HtpdataFixtures):  # type: ignore[misc]
    pass


class TestHtpdataCopy(AbstractCopyTests, HtpdataFixtures):  # type: ignore[misc]
    pass
