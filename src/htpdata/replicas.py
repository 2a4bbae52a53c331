"""Replicas, a file with its ordered replicas, and the pure decision of which to try first.

No I/O here: :func:`order_replicas` is a function of the candidates and the settings, tested
exhaustively without servers. :class:`ResolvedFile` is what the resolver
(:mod:`htpdata.resolve`) hands to the readers; the I/O that walks its replicas, with failover,
is :class:`htpdata.reader.ReplicaReader` (the contract every reader meets is
:class:`htpdata.io.FileReader`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .catalogs import FileEntry
from .config import ReplicaSettings
from .names import Name, URLCredential

__all__ = ["Replica", "ReplicaPolicy", "ResolvedFile", "order_replicas"]


class Replica(NamedTuple):
    """One physical copy of a logical file, with where it came from.

    A named tuple rather than a frozen dataclass: a dataset's resolution builds tens of
    thousands of them, three times faster this way, and they are just as immutable."""

    url: str
    site: str
    protocol: str
    name: str
    """The logical name this replica stands for (kept so a failed file can be looked up again)."""
    preference: int = 100
    role: str = "site"
    tape: bool = False
    credential: URLCredential | None = None
    """What the user wrote into the URL as a credential (``?authz=``, ``user:pass@``): sent
    with the request by :meth:`htpdata.transports.Transports.for_replica`, never in ``url``."""

    def as_dict(self) -> dict[str, object]:
        return {"url": self.url, "site": self.site, "protocol": self.protocol,
                "name": self.name, "preference": self.preference, "role": self.role}


@dataclass(frozen=True, slots=True)
class ResolvedFile:
    """A file with what is known of it and its replicas in the order they will be tried."""

    name: Name
    replicas: tuple[Replica, ...]
    size: int | None = None
    adler32: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"name": str(self.name), "size": self.size, "adler32": self.adler32,
                "replicas": [r.as_dict() for r in self.replicas]}

    def entry(self) -> FileEntry:
        return FileEntry(str(self.name), self.size, self.adler32)

    def _repr_html_(self) -> str:
        from .display import resolved_html

        return resolved_html(self)


_new_tuple = tuple.__new__


def _matches(site: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(site, p) for p in patterns)


class ReplicaPolicy:
    """The replica settings as a decision per (site, protocol, preference, role, tape),
    remembered: ordering the replicas of 5000 files asks fnmatch once per site, not per
    replica. Pure; :func:`order_replicas` is the one-shot form."""

    def __init__(self, settings: ReplicaSettings) -> None:
        self.settings = settings
        self.protocols = list(settings.protocols)
        self._ranks: dict[tuple[str, str, int, str, bool], tuple[bool, int, int, int] | None] = {}
        self._pfn_ranks: dict[tuple[str, str, bool], tuple[bool, int, int, int] | None] = {}

    def _decide(self, key: tuple[str, str, int, str, bool]) -> tuple[bool, int, int, int] | None:
        """Sort key of a (site, protocol, preference, role, tape), or None if excluded."""
        site, protocol, preference, role, tape = key
        s = self.settings
        rank: tuple[bool, int, int, int] | None = None
        if (not tape and protocol in self.protocols
                and (not s.allow_sites or _matches(site, s.allow_sites))
                and not _matches(site, s.block_sites)):
            preferred = next((i for i, p in enumerate(s.prefer_sites)
                              if fnmatch.fnmatchcase(site, p)), len(s.prefer_sites))
            rank = (role == "redirector", preferred, preference, self.protocols.index(protocol))
        self._ranks[key] = rank
        return rank

    def order(self, replicas: Iterable[Replica]) -> list[Replica]:
        """Filter and order candidates; the first is tried first (see :func:`order_replicas`)."""
        ranks = self._ranks
        ranked = []
        for r in replicas:
            key = (r.site, r.protocol, r.preference, r.role, r.tape)
            rank = ranks[key] if key in ranks else self._decide(key)
            if rank is not None:
                ranked.append((rank, r.url, r))
        if len(ranked) < 2:
            return [r for _, _, r in ranked]
        if len({url for _, url, _ in ranked}) < len(ranked):  # one replica per URL: the last
            ranked = list({url: (rank, url, r) for rank, url, r in ranked}.values())
        ranked.sort()  # URLs are unique now: the replicas themselves are never compared
        return [r for _, _, r in ranked]

    def order_pfns(self, pfns: Iterable[Sequence[Any]], name: str) -> tuple[Replica, ...]:
        """:meth:`order` for Rucio's ``(pfn, rse, tape)`` triples (site role, default
        preference; ``tape`` anything true or false), building only the replicas kept: a
        dataset's warm resolution is this loop, so it is written for speed (two replicas
        sorted without a sort, the kept replicas built as tuples without the named tuple's
        Python-level constructor)."""
        ranks = self._pfn_ranks
        kept = []
        for pfn, rse, tape in pfns:
            cut = pfn.find("://")
            scheme = pfn[:cut] if cut > 0 else "file"
            key = (rse, scheme, bool(tape))
            if key in ranks:
                rank = ranks[key]
            else:
                rank = ranks[key] = self._decide((rse, scheme, 100, "site", bool(tape)))
            if rank is not None:
                kept.append((rank, pfn, rse, scheme))
        n = len(kept)
        if n == 2:
            a, b = kept
            if a[1] == b[1]:  # one replica per URL: the last
                kept = [b]
            elif b < a:
                kept = [b, a]
        elif n > 2:
            if len({k[1] for k in kept}) < n:
                kept = list({k[1]: k for k in kept}.values())
            kept.sort()
        # Tape is never kept, so every replica here is Replica(pfn, rse, scheme, name).
        return tuple([_new_tuple(Replica, (pfn, rse, scheme, name, 100, "site", False, None))
                      for _, pfn, rse, scheme in kept])


def order_replicas(replicas: Iterable[Replica], settings: ReplicaSettings) -> list[Replica]:
    """Filter and order candidates; the first is tried first.

    Dropped: tape endpoints, protocols not in ``settings.protocols``, sites not allowed or
    blocked. Order: sites before redirectors (a redirector is the fallback), then the first
    matching ``prefer_sites`` pattern, then the catalog's preference, then protocol preference,
    then the URL (so the order is total and stable).
    """
    return ReplicaPolicy(settings).order(replicas)
