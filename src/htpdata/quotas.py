"""Quota arithmetic: how much room a user and their group have left under their limits (pure).

A tier's quotas (``quota.json``) give users and groups a soft and a hard limit; its usage
summary gives the bytes each holds. Two decisions rest on the same sums: whether this process
may store more (the cache admits bytes only under the hard limits, and warns past the soft
ones) and whether a stage fits (``htpdata stage`` refuses what would not fit under the hard
limits). Both call :func:`room`; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

__all__ = ["Limits", "limits_for", "room", "tightest"]

L = TypeVar("L")


class Limits(Protocol):
    """One owner's limits in bytes (0: none); the cache's ``Quota`` is one."""

    @property
    def soft(self) -> int: ...

    @property
    def hard(self) -> int: ...


def limits_for(quotas: Mapping[str, Mapping[str, L]], kind: str, who: str) -> L | None:
    """The limits of ``who`` among ``quotas[kind]`` (``kind``: ``"users"`` or ``"groups"``):
    their own row, else the ``*`` row (everyone's default), else None."""
    rows = quotas.get(kind, {})
    return rows.get(who) or rows.get("*")


def room(quotas: Mapping[str, Mapping[str, Limits]], user: str, group: str,
         usage: Mapping[str, Any], limit: str = "hard", added: int = 0) -> dict[str, int]:
    """Bytes ``user`` and ``group`` may still store under their ``limit`` (``"hard"`` or
    ``"soft"``), negative when over, for each of them that has one: ``{"user:NAME": n,
    "group:NAME": n}``.

    ``quotas`` is ``{"users": {name: Limits}, "groups": {name: Limits}}``; ``usage`` a tier's
    usage summary (``by_user``, ``by_group``: bytes held); ``added`` bytes this process stored
    since that summary was written (counted against both).
    """
    out: dict[str, int] = {}
    for kind, who in (("user", user), ("group", group)):
        q = quotas.get(f"{kind}s", {}).get(who)
        cap = 0 if q is None else q.hard if limit == "hard" else q.soft
        if cap:
            used = int((usage.get(f"by_{kind}") or {}).get(who, 0)) + added
            out[f"{kind}:{who}"] = cap - used
    return out


def tightest(left: Mapping[str, int]) -> tuple[int, str] | None:
    """The smallest room of :func:`room`'s answer and whose it is, or None when no limit."""
    if not left:
        return None
    owner = min(left, key=lambda k: (left[k], k))
    return left[owner], owner
