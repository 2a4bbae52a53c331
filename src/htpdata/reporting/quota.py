"""Quotas on a tier: read by everyone, set by the tier's owner only (or root).

``ROOT/quota.json`` steers everyone's caching, so it is honoured only when the tier's owner (the
account its trusted writer and eviction passes run as) or root wrote it; a copy planted by
anyone else is ignored. ``*`` as a user or group name is everyone's default.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..cache.fsops import publish, read_small
from ..cache.tier import DiskTier
from ..errors import OperatorOnlyError, UsageError

__all__ = ["OperatorOnlyError", "is_operator", "set_quota"]


def is_operator(tier: DiskTier) -> bool:
    """Is this process the tier's owner, or root?"""
    return os.getuid() == 0 or tier.is_owner


def set_quota(tier: DiskTier, kind: str, who: str, hard: int, soft: int | None
              ) -> dict[str, Any]:
    """Set (hard 0: remove) a user's or group's limit in the tier's ``quota.json``."""
    if kind not in ("users", "groups"):
        raise ValueError(kind)
    if soft is not None and hard > 0 and soft > hard:
        raise UsageError(f"the soft limit ({soft} bytes) is above the hard one ({hard} bytes): "
                         "the soft limit warns before the hard one refuses")
    tier.ensure()
    root = tier._open()
    if root is None or not is_operator(tier):
        owner = tier.owner.uid if tier.owner is not None else "?"
        raise OperatorOnlyError(f"only the owner of {tier.root} (uid {owner}) or root can set "
                                "quotas; run it as that account")
    got = read_small(root.fd, "quota.json", 1024**2,
                     owners={tier.owner.uid if tier.owner else 0, 0})
    data: dict[str, Any] = {}
    if got is not None:
        try:
            loaded = json.loads(got[0])
            data = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            data = {}
    for k in ("users", "groups"):
        if not isinstance(data.get(k), dict):
            data[k] = {}
    if hard <= 0:
        data[kind].pop(who, None)
    else:
        data[kind][who] = {"hard": hard, "soft": soft if soft is not None else int(hard * 0.9)}
    publish(root.fd, "quota.json", [json.dumps(data, indent=2).encode()], 0o644)
    return data
