"""Quotas on a tier: reading them for everyone, setting them for operators only."""

from __future__ import annotations

import grp
import json
import os
from typing import Any

from ..cache.disk import DiskTier
from ..errors import OperatorOnlyError, UsageError

__all__ = ["OperatorOnlyError", "is_operator", "set_quota"]


def is_operator(tier: DiskTier, operators_group: str = "") -> bool:
    uid = os.getuid()
    if uid == 0:
        return True
    try:
        if tier.root.stat().st_uid == uid:
            return True
    except OSError:
        return False
    if operators_group:
        try:
            gid = grp.getgrnam(operators_group).gr_gid
        except KeyError:
            return False
        return gid in os.getgroups() or gid == os.getgid()
    return False


def set_quota(tier: DiskTier, kind: str, who: str, hard: int, soft: int | None,
              operators_group: str = "") -> dict[str, Any]:
    """Set (hard 0: remove) a user's or group's limit in the tier's ``quota.json``."""
    if kind not in ("users", "groups"):
        raise ValueError(kind)
    if soft is not None and hard > 0 and soft > hard:
        raise UsageError(f"the soft limit ({soft} bytes) is above the hard one ({hard} bytes): "
                         "the soft limit warns before the hard one refuses")
    if not is_operator(tier, operators_group):
        raise OperatorOnlyError(
            f"only the owner of {tier.root}, root or members of the operators group "
            f"({operators_group or 'cache.operators is not set'}) can set quotas")
    data: dict[str, Any]
    try:
        data = json.loads(tier.layout.quota.read_bytes())
    except (OSError, ValueError):
        data = {}
    data.setdefault("users", {})
    data.setdefault("groups", {})
    if hard <= 0:
        data[kind].pop(who, None)
    else:
        data[kind][who] = {"hard": hard, "soft": soft if soft is not None else int(hard * 0.9)}
    tier.ensure()
    tier._publish(tier.layout.quota, json.dumps(data, indent=2).encode())
    return data
