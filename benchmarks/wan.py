"""The WAN emulator, a TCP proxy adding delay and a rate cap: :mod:`htpdata.testing.wan`.

Kept here so the benchmarks' ``from wan import WanProxy`` and ``python benchmarks/wan.py
--target localhost:1094 --delay-ms 10`` go on working.
"""

from __future__ import annotations

from htpdata.testing.wan import WanCounters, WanProxy, main

__all__ = ["WanCounters", "WanProxy", "main"]

if __name__ == "__main__":
    main()
