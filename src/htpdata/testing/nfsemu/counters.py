"""What the emulated server counts: operations by kind, and which of them cost a round trip.

The names are those of the FUSE requests the kernel sends (``lookup``, ``getattr``, ``create``,
...). On NFS or CephFS each metadata request is a round trip to the metadata server, so the
emulator sleeps ``meta_latency`` in each of :data:`META_OPS`; :data:`DATA_OPS` sleep
``data_latency`` (default none); :data:`COUNTED_OPS` are only counted (NFSv3 has no close RPC,
and ``forget`` is the kernel dropping an inode from its cache, not a client request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL_OPS", "COUNTED_OPS", "DATA_OPS", "META_OPS", "OpCounts"]

META_OPS: frozenset[str] = frozenset({
    "lookup", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir",
    "symlink", "rename", "link", "open", "create", "opendir", "readdir", "fsyncdir", "statfs",
})
DATA_OPS: frozenset[str] = frozenset({"read", "write", "fsync"})
COUNTED_OPS: frozenset[str] = frozenset({"flush", "release", "releasedir", "forget"})
ALL_OPS: frozenset[str] = META_OPS | DATA_OPS | COUNTED_OPS


@dataclass(frozen=True)
class OpCounts:
    """Operations one node (or several, added up) served, with the bytes moved and time slept.

    ``counts["lookup"]`` is 0 for an operation that never happened. Subtract two snapshots to get
    one phase's figures (``after - before``), or use :meth:`NfsEmulator.reset`, which returns the
    counts it cleared.
    """

    ops: Mapping[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    latency_s: float = 0.0  # total time the server slept to emulate round trips

    def __getitem__(self, op: str) -> int:
        return self.ops.get(op, 0)

    @property
    def meta(self) -> int:
        """Metadata round trips: the figure issue 13 budgets (lookups, getattrs, creates ...)."""
        return sum(n for op, n in self.ops.items() if op in META_OPS)

    @property
    def data(self) -> int:
        return sum(n for op, n in self.ops.items() if op in DATA_OPS)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __add__(self, other: OpCounts) -> OpCounts:
        ops = dict(self.ops)
        for op, n in other.ops.items():
            ops[op] = ops.get(op, 0) + n
        return OpCounts(ops, self.bytes_read + other.bytes_read,
                        self.bytes_written + other.bytes_written,
                        self.latency_s + other.latency_s)

    def __sub__(self, other: OpCounts) -> OpCounts:
        ops = {op: self[op] - other[op] for op in set(self.ops) | set(other.ops)}
        return OpCounts({op: n for op, n in ops.items() if n},
                        self.bytes_read - other.bytes_read,
                        self.bytes_written - other.bytes_written,
                        self.latency_s - other.latency_s)

    def to_json(self) -> dict[str, Any]:
        return {"ops": dict(sorted(self.ops.items())), "meta": self.meta,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
                "latency_s": round(self.latency_s, 6)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpCounts:
        return cls({str(k): int(v) for k, v in data.get("ops", {}).items()},
                   int(data.get("bytes_read", 0)), int(data.get("bytes_written", 0)),
                   float(data.get("latency_s", 0.0)))

    def summary(self, ops: tuple[str, ...] = ("lookup", "getattr", "open", "create",
                                              "readdir", "rename", "unlink", "mkdir")) -> str:
        """One line for a benchmark table: the metadata total and the usual suspects."""
        parts = [f"{op} {self[op]}" for op in ops if self[op]]
        return f"meta {self.meta}" + (f" ({', '.join(parts)})" if parts else "")
