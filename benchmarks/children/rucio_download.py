"""Rucio's own download, the peer of ``htpdata stage`` in ``bench_stage.py``.

    python benchmarks/children/rucio_download.py SCOPE:NAME BASE_DIR

``DownloadClient().download_dids`` with its defaults (2 threads, each running ``xrdcp``); prints
one JSON line: import and download seconds, and how many files ended in each client state.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    t0 = time.monotonic()
    from rucio.client.downloadclient import DownloadClient

    t1 = time.monotonic()
    out = DownloadClient().download_dids([{"did": argv[0], "base_dir": argv[1]}])
    t2 = time.monotonic()
    states: dict[str, int] = {}
    for o in out:
        state = str(o.get("clientState"))
        states[state] = states.get(state, 0) + 1
    print(json.dumps({"import_s": t1 - t0, "download_s": t2 - t1, "states": states}))


if __name__ == "__main__":
    main(sys.argv[1:])
