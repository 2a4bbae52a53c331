"""A network-filesystem emulator for tests and benchmarks (issue 13): FUSE nodes over one folder.

A FUSE passthrough (pyfuse3 over Debian's fuse3) that sleeps a configurable latency in each
metadata request, counts every request by kind, and presents one backing folder at several mount
points, each served by its own process with its own kernel caches: two "nodes" of one shared
volume. See :class:`NfsEmulator`, and docs/testing.md for what it does and does not emulate.

Importing this package needs only the standard library; the server side
(:mod:`.passthrough`, :mod:`.serve`) needs pyfuse3 (``pip install 'htpdata[nfsemu]'``).
"""

from __future__ import annotations

from .counters import ALL_OPS, COUNTED_OPS, DATA_OPS, META_OPS, OpCounts
from .emulator import NfsEmulator, NfsEmulatorError, is_mounted, unavailable_reason

__all__ = ["ALL_OPS", "COUNTED_OPS", "DATA_OPS", "META_OPS", "NfsEmulator", "NfsEmulatorError",
           "OpCounts", "is_mounted", "unavailable_reason"]
