"""A separate process reading through the cache, for the multi-process tests.

    python tests/cache_worker.py SETTINGS_JSON NAME RANGES_JSON [--start-at T] [--loop]
        [--forget]

Prints one JSON line: the bytes' adler32 per range and the reader's counters. With ``--loop``
it reads forever (the kill -9 tests kill it at a random moment); with ``--forget`` each round
first drops the file from the cache, so every round fetches and writes again.
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
