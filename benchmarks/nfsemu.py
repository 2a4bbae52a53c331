"""A network-filesystem emulator for people: mount a folder at N points with metadata latency.

Each mount point is one "node" with its own kernel caches, served by its own process; every
metadata request (lookup, getattr, create, rename, ...) sleeps ``--meta-latency-ms``, and every
request is counted. The implementation is :mod:`htpdata.testing.nfsemu`; tests and benchmarks
use ``NfsEmulator`` from there.

    python benchmarks/nfsemu.py --backing /var/tmp/tier --mounts 2 --meta-latency-ms 1
    # prints the mount points; Enter prints the counters, "r" + Enter prints and resets them,
    # Ctrl-C (or end of input) unmounts

    python benchmarks/nfsemu.py --backing /var/tmp/tier -- htpdata stage ...   # one command:
    # runs it with HTPDATA_NFSEMU_MOUNTS set to the mount points, prints the counters, unmounts
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from htpdata.testing.nfsemu import NfsEmulator, OpCounts


def _print(label: str, counts: OpCounts) -> None:
    print(f"{label}: {counts.summary()}; {counts.bytes_read} B read, "
          f"{counts.bytes_written} B written, {counts.latency_s:.3f} s of latency", flush=True)


def _report(emu: NfsEmulator, as_json: bool) -> None:
    per_node = [emu.counters(i) for i in range(emu.n)]
    if as_json:
        print(json.dumps({"nodes": [c.to_json() for c in per_node]}), flush=True)
        return
    for i, c in enumerate(per_node):
        _print(f"node {i}", c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backing", required=True, type=Path, help="the folder the nodes share")
    ap.add_argument("--mounts", type=int, default=2, help="how many nodes (default 2)")
    ap.add_argument("--mount-dir", type=Path, default=None,
                    help="where the mount points go (default a new temporary folder)")
    ap.add_argument("--meta-latency-ms", type=float, default=1.0,
                    help="sleep in each metadata request (default 1)")
    ap.add_argument("--data-latency-ms", type=float, default=0.0,
                    help="sleep in each read, write and fsync (default 0)")
    ap.add_argument("--attr-timeout", type=float, default=1.0,
                    help="seconds a node trusts cached attributes (default 1, like actimeo=1)")
    ap.add_argument("--entry-timeout", type=float, default=1.0,
                    help="seconds a node trusts a cached name (default 1)")
    ap.add_argument("--negative-timeout", type=float, default=None,
                    help="seconds a node trusts 'no such name' (default: the entry timeout)")
    ap.add_argument("--close-latency", action="store_true",
                    help="also sleep the metadata latency in flush and release")
    ap.add_argument("--json", action="store_true", help="print counters as JSON")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="after --: a command to run with the mounts, then unmount")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    args.backing.mkdir(parents=True, exist_ok=True)
    with NfsEmulator(args.backing, mounts=args.mounts, meta_latency_ms=args.meta_latency_ms,
                     data_latency_ms=args.data_latency_ms, attr_timeout=args.attr_timeout,
                     entry_timeout=args.entry_timeout, negative_timeout=args.negative_timeout,
                     close_latency=args.close_latency, mount_dir=args.mount_dir) as emu:
        mounts = os.pathsep.join(str(m) for m in emu.mounts)
        if command:
            env = dict(os.environ, HTPDATA_NFSEMU_MOUNTS=mounts)
            rc = subprocess.run(command, env=env, check=False).returncode
            _report(emu, args.json)
            return rc
        print(f"{args.backing} at {', '.join(map(str, emu.mounts))} "
              f"({args.meta_latency_ms} ms per metadata request); Enter: counters, "
              f"r Enter: counters and reset, Ctrl-C: unmount", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            for line in sys.stdin:
                if line.strip() == "r":
                    for i in range(emu.n):
                        _print(f"node {i}", emu.reset(i))
                else:
                    _report(emu, args.json)
        except KeyboardInterrupt:
            pass
        _report(emu, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
