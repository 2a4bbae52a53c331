"""Backend failures become typed errors by status code, one table per protocol, words last.

The tables are pure and checked entry by entry; the codes a real server produces (not found,
a folder, a dead port, HTTP statuses through XrdHttp) are checked against real servers.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import htpdata
from htpdata.errors import (
    ColumnNotFoundError,
    ConversionError,
    HtpdataError,
    OperatorOnlyError,
    StageRefusedError,
    StorageError,
    StorageExistsError,
    StorageNotFoundError,
    StoragePermissionError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from htpdata.testing import XRootDServer, free_port
from htpdata.transports.base import (
    HTTP_STATUSES,
    XROOTD_CLIENT_CODES,
    XROOTD_SERVER_CODES,
    http_error,
    translate,
    xrootd_error,
)

URL = "root://h:1//store/x.root"


@dataclass
class Status:
    """The three fields of pyxrootd's XRootDStatus that translation reads."""

    code: int
    errno: int
    message: str
    ok: bool = False


@pytest.mark.parametrize(("server", "cls"), sorted(XROOTD_SERVER_CODES.items()))
def test_every_server_code_maps_to_its_class(server: int, cls: type[StorageError]) -> None:
    err = xrootd_error(Status(400, server, f"[ERROR] Server responded: [{server}] whatever"),
                       URL, "cms:/x", "open")
    assert type(err) is cls
    assert err.code == server
    assert err.url == URL
    assert "open failed" in str(err)


@pytest.mark.parametrize(("code", "cls"), sorted(XROOTD_CLIENT_CODES.items()))
def test_every_client_code_maps_to_its_class(code: int, cls: type[StorageError]) -> None:
    err = xrootd_error(Status(code, 0, "[ERROR] some text that says nothing"), URL)
    assert type(err) is cls
    assert err.code == code


def test_codes_win_over_words() -> None:
    # The message says "not found" but the server code says permission: the code wins.
    err = xrootd_error(Status(400, 3010, "[3010] file not found for you"), URL)
    assert type(err) is StoragePermissionError
    # A client timeout whose message mentions a socket is a timeout, not unavailable.
    assert type(xrootd_error(Status(103, 0, "socket timed out"), URL)) is StorageTimeoutError


def test_unknown_codes_fall_back_to_words_then_to_the_kind() -> None:
    assert type(xrootd_error(Status(400, 3999, "no such file"), URL)) is StorageNotFoundError
    assert type(xrootd_error(Status(400, 3999, "??"), URL)) is StorageError  # server refused
    assert type(xrootd_error(Status(999, 0, "??"), URL)) is StorageUnavailableError  # client


@pytest.mark.parametrize(("code", "cls"), sorted(HTTP_STATUSES.items()))
def test_every_http_status_maps_to_its_class(code: int, cls: type[StorageError]) -> None:
    err = http_error(code, "Reason", "davs://h/x")
    assert type(err) is cls
    assert err.code == code
    assert err.status == f"HTTP {code} Reason"


def test_http_status_defaults() -> None:
    assert type(http_error(500, "", "https://h/x")) is StorageUnavailableError
    assert type(http_error(418, "", "https://h/x")) is StorageError


def test_translate_reads_http_errors_by_status_not_text() -> None:
    req = httpx.Request("GET", "https://h/x")
    exc = httpx.HTTPStatusError("permission denied (says the text)", request=req,
                                response=httpx.Response(404, request=req))
    err = translate(exc, "https://h/x")
    assert type(err) is StorageNotFoundError
    assert isinstance(err, StorageError)
    assert err.code == 404


@pytest.mark.parametrize(("exc", "cls"), [
    (FileExistsError(errno.EEXIST, "exists"), StorageExistsError),
    (FileNotFoundError(errno.ENOENT, "gone"), StorageNotFoundError),
    (PermissionError(errno.EACCES, "no"), StoragePermissionError),
    (TimeoutError("slow"), StorageTimeoutError),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), StorageUnavailableError),
    (httpx.ConnectTimeout("slow"), StorageTimeoutError),
    (httpx.ConnectError("refused"), StorageUnavailableError),
    # fsspec-xrootd flattens statuses into text: the code in it is read by the server table
    (OSError("File did not open properly: [ERROR] Server responded with an error: [3011] "
             "Unable to open /x; no such file or directory"), StorageNotFoundError),
    (OSError("[ERROR] Server responded with an error: [3018] Unable to create /x; exists"),
     StorageExistsError),
    (OSError("operation expired"), StorageTimeoutError),  # words, the last resort
    (OSError("something else"), StorageError),
])
def test_translate_builtins_codes_in_text_and_words(exc: BaseException,
                                                    cls: type[StorageError]) -> None:
    err = translate(exc, URL, "cms:/x", "stat")
    assert type(err) is cls
    assert "stat failed" in str(err)


def test_translate_keeps_htpdata_errors() -> None:
    err = StorageNotFoundError("read failed", url=URL)
    assert translate(err, URL) is err


def test_moved_errors_live_in_errors_and_at_their_old_paths() -> None:
    from htpdata.convert import ColumnNotFoundError as C1
    from htpdata.convert import ConversionError as C2
    from htpdata.convert.columns import ColumnNotFoundError as C3
    from htpdata.reporting.quota import OperatorOnlyError as O1
    from htpdata.staging import StageRefusedError as S1
    from htpdata.staging.run import StageRefusedError as S2

    assert C1 is C3 is ColumnNotFoundError
    assert C2 is ConversionError
    assert O1 is OperatorOnlyError
    assert S1 is S2 is StageRefusedError
    for cls, code in ((StageRefusedError, 9), (OperatorOnlyError, 4), (ConversionError, 10)):
        assert issubclass(cls, HtpdataError)
        assert cls.exit_code == code


# -- against real servers ---------------------------------------------------------------------
@pytest.mark.xrootd
def test_real_xrootd_statuses(tmp_path: Path) -> None:
    from htpdata.config import load_settings
    from htpdata.transports import Transports

    with XRootDServer(name="translate", tls=False) as server:
        (server.data / "folder").mkdir()
        (server.data / "folder").chmod(0o755)
        transports = Transports(load_settings(environ={}, timeouts={"connect": 2, "read": 5}))
        try:
            root = transports.for_url(server.root_url)
            with pytest.raises(StorageNotFoundError) as missing:
                root.info(server.root_url + "/nothere.root")
            assert missing.value.code == 3011
            assert root.info(server.root_url + "/folder")["type"] == "directory"
            with pytest.raises(StorageNotFoundError):
                root.cat_ranges(server.root_url + "/nothere.root", [(0, 10)])
            http = transports.for_url(server.https_url)
            with pytest.raises(StorageNotFoundError) as not_there:
                http.info(server.https_url + "nothere.root")
            assert not_there.value.code == 404
            dead = f"root://localhost:{free_port()}//x.root"
            with pytest.raises((StorageUnavailableError, StorageTimeoutError)) as gone:
                root.info(dead)
            assert gone.value.code in XROOTD_CLIENT_CODES
        finally:
            transports.close()


def test_errors_reach_the_user_typed(tmp_path: Path) -> None:
    missing = tmp_path / "missing.root"
    with pytest.raises(htpdata.NoReplicaFoundError):
        htpdata.cat(str(missing))
