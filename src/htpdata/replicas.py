"""Replicas and the pure decision of which to try first.

No I/O here: :func:`order_replicas` is a function of the candidates and the settings, tested
exhaustively without servers. The I/O that walks the list lives in :mod:`htpdata.io`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from .config import ReplicaSettings

__all__ = ["Replica", "order_replicas"]


@dataclass(frozen=True)
class Replica:
    """One physical copy of a logical file, with where it came from."""

    url: str
    site: str
    protocol: str
    name: str
    """The logical name this replica stands for (kept so a failed file can be looked up again)."""
    preference: int = 100
    role: str = "site"
    tape: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"url": self.url, "site": self.site, "protocol": self.protocol,
                "name": self.name, "preference": self.preference, "role": self.role}


def _matches(site: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(site, p) for p in patterns)


def order_replicas(replicas: Iterable[Replica], settings: ReplicaSettings) -> list[Replica]:
    """Filter and order candidates; the first is tried first.

    Dropped: tape endpoints, protocols not in ``settings.protocols``, sites not allowed or
    blocked. Order: sites before redirectors (a redirector is the fallback), then the first
    matching ``prefer_sites`` pattern, then the catalog's preference, then protocol preference,
    then the URL (so the order is total and stable).
    """
    protocols = list(settings.protocols)
    kept = [
        r for r in replicas
        if not r.tape
        and r.protocol in protocols
        and (not settings.allow_sites or _matches(r.site, settings.allow_sites))
        and not _matches(r.site, settings.block_sites)
    ]

    def rank(r: Replica) -> tuple[int, int, int, int, str]:
        preferred = next((i for i, p in enumerate(settings.prefer_sites)
                          if fnmatch.fnmatchcase(r.site, p)), len(settings.prefer_sites))
        return (r.role == "redirector", preferred, r.preference, protocols.index(r.protocol),
                r.url)

    unique = {r.url: r for r in kept}
    return sorted(unique.values(), key=rank)
