"""adler32 of a whole file from the adler32s of its consecutive pieces (pure); the functions
live in :mod:`htpdata.adler32`, with every other checksum htpdata computes."""

from __future__ import annotations

from ..adler32 import adler32_combine, combine_all

__all__ = ["adler32_combine", "combine_all"]
