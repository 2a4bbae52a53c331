"""Turning Rucio's answers into htpdata's types, and Rucio's errors into htpdata's (pure)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from htpdata.config import ReplicaSettings, RucioSettings
from htpdata.errors import AuthenticationError, NameNotFoundError, ServiceUnavailableError
from htpdata.replicas import Replica, ReplicaPolicy, order_replicas
from htpdata.rucio import MetadataCache, RucioService, file_entry, replicas_of
from htpdata.rucio.convert import compact_row, scope_name, unpack
from htpdata.rucio.service import _translate

PFNS: dict[str, dict[str, object]] = {  # a list_replicas row's pfns
    "root://se.lnl.infn.it:1094//store/mc/x.root": {"rse": "T2_IT_Legnaro", "type": "DISK",
                                                     "priority": 2},
    "davs://se.lnl.infn.it:8443/store/mc/x.root": {"rse": "T2_IT_Legnaro", "type": "DISK",
                                                    "priority": 3},
    "root://se.de:1094//store/mc/x.root": {"rse": "T2_DE_DESY", "type": "DISK",
                                           "priority": 1},
    "root://tape.cnaf.infn.it//store/mc/x.root": {"rse": "T1_IT_CNAF_Tape", "type": "TAPE",
                                                  "priority": 1},
}
ROW: dict[str, object] = {"scope": "cms", "name": "/store/mc/x.root", "bytes": 1234,
                          "adler32": "abc", "pfns": PFNS}


def test_file_entry_pads_adler32() -> None:
    e = file_entry(compact_row(ROW))
    assert (e.name, e.size, e.adler32) == ("rucio:cms:/store/mc/x.root", 1234, "00000abc")


def test_replicas_keep_the_logical_name_and_order_by_policy() -> None:
    reps = replicas_of(compact_row(ROW), logical="cms:/store/mc/x.root")
    assert all(r.name == "cms:/store/mc/x.root" for r in reps)
    ordered = order_replicas(reps, ReplicaSettings(prefer_sites=("T2_IT_*", "T1_IT_CNAF*")))
    assert [(r.site, r.protocol) for r in ordered] == [
        ("T2_IT_Legnaro", "root"), ("T2_IT_Legnaro", "davs"), ("T2_DE_DESY", "root")]
    plain = order_replicas(reps, ReplicaSettings())  # no preference: protocol, then URL
    assert [r.protocol for r in plain] == ["root", "root", "davs"]
    assert "T1_IT_CNAF_Tape" not in {r.site for r in ordered}  # tape never streams


def test_compact_rows_round_trip_and_sort_by_scope_then_name() -> None:
    row = compact_row(ROW)
    assert isinstance(row, str)
    scope, name, size, adler, pfns = unpack(row)
    assert (scope, name, size, adler) == ("cms", "/store/mc/x.root", 1234, "abc")
    assert {(p, rse, tape) for p, rse, tape in pfns} == {
        (url, info["rse"], "1" if info["type"] == "TAPE" else "") for url, info in
        PFNS.items()}
    assert scope_name(row) == ("cms", "/store/mc/x.root")
    rows = [compact_row({**ROW, "scope": s, "name": n}) for s, n in
            [("cms2", "/a"), ("cms", "/b"), ("cms", "/a/b"), ("cms", "/a")]]
    assert [scope_name(r) for r in sorted(rows)] == sorted(scope_name(r) for r in rows)


def test_old_servers_rses_map_and_no_priority() -> None:
    row = compact_row({"scope": "s", "name": "/f", "bytes": None, "adler32": None,
                       "rses": {"A": ["root://a//f"], "B": ["davs://b/f"]}})
    scope, name, size, adler, pfns = unpack(row)
    assert (scope, name, size, adler, list(pfns)) == (
        "s", "/f", None, None, [("root://a//f", "A", ""), ("davs://b/f", "B", "")])
    assert file_entry(row).size is None
    assert [r.site for r in replicas_of(row)] == ["A", "B"]


def test_policy_remembers_decisions_and_matches_the_one_shot_order() -> None:
    settings = ReplicaSettings(prefer_sites=("T2_IT_*",), block_sites=("T3_*",))
    policy = ReplicaPolicy(settings)
    reps = [Replica(f"root://{site}//f{i}", site, "root", "cms:/f") for i in range(3)
            for site in ("T2_DE_X", "T2_IT_Y", "T3_US_Z")]
    first = policy.order(reps)
    assert [r.site for r in first[:3]] == ["T2_IT_Y"] * 3
    assert len(first) == 6
    assert policy.order(reversed(reps)) == first == order_replicas(reps, settings)
    assert len(policy._ranks) == 3  # one decision per site, not per replica


@pytest.mark.parametrize(("name", "cls"), [
    ("DataIdentifierNotFound", NameNotFoundError),
    ("ScopeNotFound", NameNotFoundError),
    ("CannotAuthenticate", AuthenticationError),
    ("ServiceUnavailable", ServiceUnavailableError),
    ("ConnectionError", ServiceUnavailableError),
    ("SomethingElse", ServiceUnavailableError),
    ("ConfigNotFound", ServiceUnavailableError),
])
def test_error_translation(name: str, cls: type[Exception]) -> None:
    exc = type(name, (Exception,), {})("details")
    err = _translate(exc, "list", "rucio:cms:/x")
    assert isinstance(err, cls)
    assert "details" in str(err)


def test_metadata_cache_ttl_and_offline(tmp_path: Path) -> None:
    m = MetadataCache(tmp_path)
    m.put("k", {"a": 1})
    fresh = m.get("k", 10)
    assert fresh is not None
    assert fresh[0] == {"a": 1}
    assert fresh[1] == pytest.approx(0, abs=1)
    assert m.get("k", -1) is None  # expired for a TTL...
    assert m.get("k", None) is not None  # ...but usable offline


def test_unreachable_server_uses_the_last_answer(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The server going away is a fault a real server cannot be made to produce on demand
    between two calls of one test cheaply; a client factory that fails stands in for it."""
    class Down:
        def get_did(self, scope: str, name: str) -> dict[str, str]:
            raise ConnectionError("connection refused")

    svc = RucioService(RucioSettings(metadata_ttl=0), tmp_path, client_factory=Down)
    with pytest.raises(ServiceUnavailableError, match="not reachable"):
        svc.did_type("cms", "/x")
    svc.meta.put(f"{svc.host}|type|cms:/x", "FILE")
    assert svc.did_type("cms", "/x") == "FILE"
    assert "Rucio unreachable" in caplog.text


def test_rucio_client_logs_are_dropped_only_inside_htpdata_calls(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What the Rucio client logs during htpdata's own call is reported by htpdata, once,
    translated; the user's own Rucio logging (levels, records outside htpdata's calls) is
    left alone."""
    base = logging.getLogger("baseclient")
    level_before = base.level

    class FailingClient:
        def get_did(self, scope: str, name: str) -> dict[str, str]:
            base.error("request failed (logged by the Rucio client)")
            raise ConnectionError("refused")

    svc = RucioService(RucioSettings(), tmp_path, client_factory=FailingClient)
    with caplog.at_level(logging.INFO):
        with pytest.raises(ServiceUnavailableError):
            svc.did_type("cms", "/x")
        base.error("the user's own Rucio call")
    seen = [r.getMessage() for r in caplog.records if r.name == "baseclient"]
    assert seen == ["the user's own Rucio call"]
    assert base.level == level_before
    with caplog.at_level(logging.DEBUG, logger="htpdata.rucio"):  # --debug: they pass
        caplog.clear()
        with pytest.raises(ServiceUnavailableError):
            svc.did_type("cms", "/y")
    assert "request failed (logged by the Rucio client)" in caplog.text
