"""The small shared pieces that used to exist in two or four copies (pure, or one local file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htpdata.atomic import write_atomically
from htpdata.io import byte_range
from htpdata.names import namespace_of
from htpdata.quotas import room, tightest
from htpdata.units import human_bytes

offsets = st.one_of(st.none(), st.integers(-300, 300))


@given(offsets, offsets, st.integers(0, 200))
def test_byte_range_is_python_slicing(start: int | None, end: int | None, size: int) -> None:
    """fsspec's start/end are Python's slice bounds: None, negative from the end, clipped."""
    data = bytes(range(256))[:size] if size <= 256 else b""
    s, e = byte_range(start, end, size)
    assert 0 <= s <= e <= size
    assert data[s:e] == data[start:end]


def test_byte_range_takes_any_integer_and_refuses_the_rest() -> None:
    np = pytest.importorskip("numpy")
    assert byte_range(np.int64(10), np.uint32(20), 100) == (10, 20)
    with pytest.raises(TypeError):
        byte_range(1.5, 10, 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        byte_range("1", 10, 100)  # type: ignore[arg-type]


def test_namespace_of_recorded_names() -> None:
    assert namespace_of("cms:/store/x.root") == "cms"
    assert namespace_of("rucio:user.jdoe:f.root") == "rucio:user.jdoe"
    assert namespace_of("root://host//x") == "root"
    assert namespace_of("plain") == "?"


def test_human_bytes() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(999) == "999 B"
    assert human_bytes(1000) == "1.0 kB"
    assert human_bytes(1_234_567) == "1.2 MB"
    assert human_bytes(-2_000) == "-2.0 kB"
    assert human_bytes(5 * 10**18) == "5000.0 PB"


class Q:
    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard


def test_room_under_user_and_group_limits() -> None:
    quotas = {"users": {"alice": Q(80, 100)}, "groups": {"cms": Q(0, 1000), "atlas": Q(5, 0)}}
    usage = {"by_user": {"alice": 70}, "by_group": {"cms": 950}}
    assert room(quotas, "alice", "cms", usage) == {"user:alice": 30, "group:cms": 50}
    assert room(quotas, "alice", "cms", usage, "soft") == {"user:alice": 10}
    assert room(quotas, "alice", "cms", usage, added=60) == {"user:alice": -30,
                                                            "group:cms": -10}
    assert room(quotas, "bob", "atlas", usage) == {}  # atlas has only a soft limit
    assert room(quotas, "bob", "atlas", usage, "soft") == {"group:atlas": 5}
    assert tightest(room(quotas, "alice", "cms", usage)) == (30, "user:alice")
    assert tightest({}) is None


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
       st.integers(0, 10**6))
def test_room_is_limit_minus_use(hard: int, used: int, gused: int, added: int) -> None:
    quotas = {"users": {"u": Q(0, hard)}, "groups": {"g": Q(0, hard)}}
    left = room(quotas, "u", "g", {"by_user": {"u": used}, "by_group": {"g": gused}},
                added=added)
    if hard:
        assert left == {"user:u": hard - used - added, "group:g": hard - gused - added}
        assert tightest(left) == (min(hard - used, hard - gused) - added,
                                  "user:u" if used > gused else "group:g")  # ties: group
    else:
        assert left == {}


def test_write_atomically_replaces_whole_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomically(target, "first")
    write_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    old = os.umask(0o022)
    try:
        write_atomically(target, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644

    class Boom(str):
        def encode(self, *a: object, **k: object) -> bytes:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(target, Boom("y"))
    assert target.read_bytes() == b"x"
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "f", "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
