"""The pure replica-ordering decision."""

from __future__ import annotations

import itertools

import pytest

from htpdata.config import ReplicaSettings
from htpdata.replicas import Replica, order_replicas


def rep(site: str, proto: str = "root", pref: int = 100, role: str = "site",
        tape: bool = False) -> Replica:
    return Replica(f"{proto}://{site.lower()}//f", site, proto, "cms:/f", pref, role, tape)


def test_catalog_preference_then_protocol() -> None:
    reps = [rep("B", pref=2), rep("A", "davs", pref=1), rep("A", pref=1)]
    got = order_replicas(reps, ReplicaSettings())
    assert [(r.site, r.protocol) for r in got] == [("A", "root"), ("A", "davs"), ("B", "root")]


def test_redirectors_are_fallbacks() -> None:
    got = order_replicas([rep("REDIR", pref=0, role="redirector"), rep("SITE", pref=50)],
                         ReplicaSettings())
    assert [r.site for r in got] == ["SITE", "REDIR"]


def test_prefer_allow_block_tape_protocols() -> None:
    reps = [rep("T2_DE_X", pref=1), rep("T2_IT_Legnaro", pref=5), rep("T1_IT_CNAF_Disk", pref=9),
            rep("T1_IT_CNAF_Tape", tape=True), rep("T2_US_Y", "https", pref=0)]
    s = ReplicaSettings(prefer_sites=("T2_IT_*", "T1_IT_CNAF*"), block_sites=("T2_DE_*",),
                        protocols=("root", "davs"))
    assert [r.site for r in order_replicas(reps, s)] == ["T2_IT_Legnaro", "T1_IT_CNAF_Disk"]
    s = ReplicaSettings(allow_sites=("T2_*",))
    assert [r.site for r in order_replicas(reps, s)] == ["T2_US_Y", "T2_DE_X", "T2_IT_Legnaro"]


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_order_is_total_and_input_order_free(perm: tuple[int, ...]) -> None:
    reps = [rep("A", pref=1), rep("B", pref=1), rep("C", "davs", pref=1), rep("D", pref=0)]
    shuffled = [reps[i] for i in perm]
    assert order_replicas(shuffled, ReplicaSettings()) == order_replicas(reps, ReplicaSettings())


def test_duplicates_collapse() -> None:
    assert len(order_replicas([rep("A"), rep("A")], ReplicaSettings())) == 1
