"""A separate process reading through the cache, for the multi-process tests.

    python tests/cache_worker.py SETTINGS_JSON NAME RANGES_JSON [--start-at T] [--loop]
        [--forget] [--clock-skew S] [--claim-delay S]

Prints one JSON line: the bytes' adler32 per range and the reader's counters. With ``--loop``
it reads forever (the kill -9 tests kill it at a random moment); with ``--forget`` each round
first drops the file from the cache, so every round fetches and writes again. With
``--clock-skew S`` the names it gives files (claims, packs: ``time.time_ns``) are read from a
clock S seconds off, as on a node whose clock is wrong; with ``--claim-delay S`` each claim
file is created S seconds after its name was taken, as behind a slow metadata server.
"""

from __future__ import annotations

import json
import sys
import time
import zlib

import htpdata


def main() -> None:
    settings, name, ranges = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    start_at = float(sys.argv[sys.argv.index("--start-at") + 1]) if "--start-at" in sys.argv \
        else 0.0
    if "--clock-skew" in sys.argv:
        skew, real = float(sys.argv[sys.argv.index("--clock-skew") + 1]), time.time_ns
        time.time_ns = lambda: real() + int(skew * 1e9)
    if "--claim-delay" in sys.argv:
        import htpdata.cache.area as area

        delay, create = float(sys.argv[sys.argv.index("--claim-delay") + 1]), \
            area.create_exclusive  # type: ignore[attr-defined]

        def slow(dir_fd: int, name: str, mode: int, **kw: bool) -> int:
            if name.startswith("c."):
                time.sleep(delay)
            return create(dir_fd, name, mode, **kw)
        area.create_exclusive = slow  # type: ignore[attr-defined]
    client = htpdata.Client(**settings)
    reader = client.reader(name)
    reader.size()
    while time.time() < start_at:  # all workers miss at the same moment
        time.sleep(0.001)
    while True:
        datas = reader.read_ranges([tuple(r) for r in ranges])
        if "--loop" not in sys.argv:
            break
        if "--forget" in sys.argv:
            client.cache.forget(str(htpdata.parse_name(name)))
        reader = client.reader(name)
        if client.cache.memory is not None:
            client.cache.memory.clear()
    print(json.dumps({"adler32": [zlib.adler32(d) & 0xFFFFFFFF for d in datas],
                      "stats": reader.counters.as_dict()}))
    client.close()


if __name__ == "__main__":
    main()
