"""What the cache holds of one file, tier by tier (``htpdata cache info``, ``htpdata.cache_info``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..names import Name, parse_name

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["CacheInfo", "cache_info"]


@dataclass
class CacheInfo:
    """``tiers``: one record per tier (``held``, ``bytes``, ``size``, ``extents``,
    ``complete``, ``pinned_until``, ``last_access``, ...), as :meth:`Cache.info` gives them."""

    name: str
    tiers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return any(t["held"] for t in self.tiers)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tiers": self.tiers}

    def _repr_html_(self) -> str:
        from ..display import cache_info_html

        return cache_info_html(self)


def cache_info(client: Client, name: str | Name) -> CacheInfo:
    """What each tier holds of ``name`` (no storage I/O)."""
    text = str(parse_name(name))
    return CacheInfo(text, client.cache.info(text))
