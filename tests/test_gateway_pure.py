"""The gateway's pure decisions: ranges, paths, statuses, the secret and the state file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htpdata.errors import (
    Attempt,
    ChecksumMismatchError,
    GatewayError,
    InvalidNameError,
    NameNotFoundError,
    NoReplicaFoundError,
    ReplicasExhaustedError,
    StorageError,
    StorageIsADirectoryError,
    StorageNotFoundError,
    StoragePermissionError,
    StorageTimeoutError,
    StorageUnavailableError,
    UnknownNamespaceError,
)
from htpdata.gateway import paths, ranges, state, statuses
from htpdata.names import parse_name

# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "size", "want"), [
    ("bytes=0-3", 10, ((0, 4),)),
    ("bytes=5-", 10, ((5, 10),)),
    ("bytes=-3", 10, ((7, 10),)),
    ("bytes=-30", 10, ((0, 10),)),
    ("bytes=8-100", 10, ((8, 10),)),
    ("bytes=0-0,2-3, 9-9", 10, ((0, 1), (2, 4), (9, 10))),
    ("bytes=4-5,0-1", 10, ((4, 6), (0, 2))),          # order kept: ROOT fills one buffer
    ("bytes=0-5,2-3", 10, ((0, 6), (2, 4))),          # overlaps kept, never merged
    ("bytes=0-3,20-30", 10, ((0, 4),)),               # an unsatisfiable one is dropped
    ("BYTES = 1-2", 10, ((1, 3),)),
])
def test_parse_range(header: str, size: int, want: tuple[tuple[int, int], ...]) -> None:
    got = ranges.parse_range(header, size)
    assert got is not None
    assert got.ranges == want
    assert got.size == size


@pytest.mark.parametrize("header", [None, "items=0-3", "bytes=abc", "bytes=5-2", "bytes=",
                                    "bytes=-", "bytes=1-2,x"])
def test_unparseable_ranges_mean_the_whole_file(header: str | None) -> None:
    assert ranges.parse_range(header, 10) is None


@pytest.mark.parametrize("header", ["bytes=10-20", "bytes=-0", "bytes=10-", "bytes=99-99,10-"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(ranges.RangeNotSatisfiable):
        ranges.parse_range(header, 10)


def test_too_many_ranges_refused() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(ranges.MAX_RANGES + 1))
    with pytest.raises(ranges.RangeNotSatisfiable, match="at most"):
        ranges.parse_range(header, 10**6)


@given(st.integers(0, 10**6), st.lists(st.tuples(st.integers(0, 2 * 10**6),
                                                 st.integers(0, 10**6)), min_size=1,
                                       max_size=20))
def test_parsed_ranges_lie_inside_the_file(size: int, specs: list[tuple[int, int]]) -> None:
    header = "bytes=" + ",".join(f"{a}-{a + n}" for a, n in specs)
    try:
        got = ranges.parse_range(header, size)
    except ranges.RangeNotSatisfiable:
        assert all(a >= size for a, _ in specs)
        return
    assert got is not None
    kept = [(a, a + n + 1) for a, n in specs if a < size]
    assert got.ranges == tuple((a, min(e, size)) for a, e in kept)
    assert all(0 <= s < e <= size for s, e in got.ranges)


@given(st.binary(min_size=1, max_size=3000), st.data())
def test_multipart_body_parses_back(data: bytes, draw: st.DataObject) -> None:
    """The framing, read back the way ROOT's TWebFile reads it (lines, then raw bytes)."""
    n = len(data)
    parts = draw.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n)),
                               min_size=2, max_size=6))
    parts = [(s, min(n, s + k)) for s, k in parts]
    boundary = ranges.multipart_boundary()
    assert boundary.isdigit()
    assert len(boundary) == 20
    heads, tail, length = ranges.multipart_layout(parts, n, boundary)
    body = b"".join(h + data[s:e] for h, (s, e) in zip(heads, parts, strict=True)) + tail
    assert len(body) == length
    got, pos = [], 0
    while True:
        line_end = body.index(b"\r\n", pos)
        line = body[pos:line_end].decode()
        pos = line_end + 2
        if line == f"--{boundary}--":
            break
        if line.startswith("Content-Range: bytes "):
            first, last = line.split()[2].split("/")[0].split("-")
            blank = body.index(b"\r\n", pos)
            assert blank == pos  # the empty line before the bytes
            start = blank + 2
            got.append(body[start:start + int(last) - int(first) + 1])
            pos = start + int(last) - int(first) + 1
    assert got == [data[s:e] for s, e in parts]


def test_etag_and_if_range() -> None:
    strong = ranges.etag_for("cms:/store/x.root", 100, "0a0b0c0d")
    weak = ranges.etag_for("cms:/store/x.root", 100, None)
    assert strong.startswith('"')
    assert weak.startswith('W/"')
    assert strong != ranges.etag_for("cms:/store/x.root", 100, "0a0b0c0e")
    assert strong != ranges.etag_for("cms:/store/x.root", 101, "0a0b0c0d")
    assert ranges.if_range_allows(None, strong)
    assert ranges.if_range_allows(strong, strong)
    assert not ranges.if_range_allows('"other"', strong)
    assert not ranges.if_range_allows(weak, weak)  # strong comparison only
    assert not ranges.if_range_allows("Tue, 01 Dec 2026 10:00:00 GMT", strong)


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), [
    ("/cms/store/mc/x.root", "cms:/store/mc/x.root"),
    ("/demo/store/a%20b.root", "demo:/store/a b.root"),
    ("/rucio/user.jdoe/my.file.root", "rucio:user.jdoe:my.file.root"),
    ("/rucio/cms//store/mc/x.root", "rucio:cms:/store/mc/x.root"),
    ("/rucio/user.jdoe:f.root", "rucio:user.jdoe:f.root"),
    ("/_url/root/host:1094/store/x.root", "root://host:1094//store/x.root"),
    ("/_url/https/host:8443/path/x.root", "https://host:8443/path/x.root"),
    ("/_url/file/data/x.root", "file:///data/x.root"),
])
def test_path_to_name_and_back(path: str, name: str) -> None:
    assert str(paths.name_for_path(path)) == name
    assert paths.name_for_path(paths.path_for_name(name)) == parse_name(name)


@pytest.mark.parametrize("path", ["/", "/cms", "/cms/", "/cms/store/../../etc/passwd",
                                  "/cms/store/%2e%2e/x", "/_url/root/host:1094/../x",
                                  "/cms/a%00b", "/_url/ftp/host/x"])
def test_bad_paths_are_invalid_names(path: str) -> None:
    with pytest.raises(InvalidNameError):
        paths.name_for_path(path)


def test_path_quoting() -> None:
    assert paths.path_for_name("demo:/store/a b#c?.root") == "/demo/store/a%20b%23c%3F.root"
    assert paths.name_for_path("/demo/store/a%20b%23c%3F.root") == parse_name(
        "demo:/store/a b#c?.root")
    with pytest.raises(InvalidNameError, match="query"):
        paths.path_for_name("https://host/x.root?foo=bar")
    # Credentials leave a name when it is parsed (they ride along to the request), so a
    # gateway URL never carries them.
    assert paths.path_for_name("https://host/x.root?authz=abc") == "/_url/https/host/x.root"


def test_secret_split() -> None:
    assert paths.split_secret("/s3cr3t/cms/store/x", "s3cr3t") == (True, "/cms/store/x")
    assert paths.split_secret("/s3cr3T/cms/store/x", "s3cr3t")[0] is False
    assert paths.split_secret("/cms/store/x", "s3cr3t")[0] is False
    assert paths.split_secret("/", "s3cr3t")[0] is False


# -- statuses --------------------------------------------------------------------------------


def _exhausted(*errors: StorageError) -> ReplicasExhaustedError:
    return ReplicasExhaustedError("n", [Attempt(f"root://h{i}//x", f"S{i}", e)
                                        for i, e in enumerate(errors)])


@pytest.mark.parametrize(("exc", "status"), [
    (UnknownNamespaceError("foo:/x", "foo", ["cms"]), 404),
    (InvalidNameError("x", "bad"), 400),
    (NameNotFoundError("cms:/x", "no rule"), 404),
    (NoReplicaFoundError("n", [Attempt("u", "S", StorageNotFoundError("gone"))]), 404),
    (StoragePermissionError("denied"), 403),
    (StorageIsADirectoryError("a folder"), 404),
    (StorageTimeoutError("slow"), 504),
    (_exhausted(StorageTimeoutError("a"), StorageTimeoutError("b")), 504),
    (_exhausted(StorageTimeoutError("a"), StorageUnavailableError("b")), 502),
    (StorageUnavailableError("refused"), 502),
    (ChecksumMismatchError("n", "1", "2"), 502),
    (RuntimeError("bug"), 500),
])
def test_status_table(exc: Exception, status: int) -> None:
    assert statuses.status_for(exc) == status


def test_head_never_gets_500() -> None:
    assert statuses.status_for(RuntimeError("bug"), "HEAD") == 503


def test_reason_is_one_printable_line_without_secrets() -> None:
    secret = state.new_secret()
    text = statuses.reason_phrase(RuntimeError(f"line1\r\nline2 {secret} é" + "x" * 500))
    assert "\r" not in text
    assert "\n" not in text
    assert secret not in text
    assert text.isascii()
    assert len(text) <= 300


# -- secret and state --------------------------------------------------------------------------


def test_secret_and_proof() -> None:
    a, b = state.new_secret(), state.new_secret()
    assert a != b
    assert len(a) >= 43
    assert state.proof(a, "nonce123") == state.proof(a, "nonce123")
    assert state.proof(a, "nonce123") != state.proof(b, "nonce123")
    assert a not in state.proof(a, "nonce123")


def test_state_file_private_and_discovered(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    info = state.GatewayInfo("127.0.0.1", 4321, state.new_secret(), os.getpid())
    path = state.write_state(info, env)
    assert path.parent == tmp_path / "htpdata"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert state.discover(env) == info
    assert info.url("cms:/store/x.root") == f"http://127.0.0.1:4321/{info.secret}/cms/store/x.root"
    state.remove_state(info, env)
    assert state.discover(env) is None


def test_state_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    state.write_state(state.GatewayInfo("127.0.0.1", 4321, "s" * 43, 2**22 + 12345), env)
    assert state.discover(env) is None


def test_state_readable_by_others_is_refused(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    path = state.write_state(state.GatewayInfo("127.0.0.1", 1, "s" * 43, os.getpid()), env)
    path.chmod(0o644)
    with pytest.raises(GatewayError, match="not a private file"):
        state.discover(env)
    path.write_text(json.dumps({"nonsense": 1}))
    path.chmod(0o600)
    with pytest.raises(GatewayError, match="not a gateway state file"):
        state.discover(env)


def test_folder_writable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "htpdata").mkdir(mode=0o777)
    (tmp_path / "htpdata").chmod(0o777)
    with pytest.raises(GatewayError, match="writable by others"):
        state.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})


def test_environment_wins_and_is_checked() -> None:
    info = state.discover({state.ENV_URL: "http://127.0.0.1:5555/abcdefgh/"})
    assert info is not None
    assert (info.port, info.secret) == (5555, "abcdefgh")
    with pytest.raises(GatewayError):
        state.discover({state.ENV_URL: "http://127.0.0.1/"})
