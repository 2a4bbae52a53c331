"""What a cache entry *is*: a logical name with its size and adler32.

The key is derived from the content identity, not from a replica URL, so a hit survives a change
of replica or redirector; and when the catalog or Rucio report another size or checksum for the
same name, the key changes, so the old bytes can never be served for the new content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

__all__ = ["Identity"]


@dataclass(frozen=True)
class Identity:
    name: str
    size: int
    adler32: str | None = None

    @cached_property  # asked many times per file while it moves; computed once
    def key(self) -> str:
        """40 hex digits naming the entry in every tier."""
        text = f"{self.name}\0{self.size}\0{self.adler32 or '-'}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    @property
    def name_key(self) -> str:
        """Names the *name* (all its versions): where the current identity is recorded."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:40]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "adler32": self.adler32, "key": self.key}
