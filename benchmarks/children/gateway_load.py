"""A warm load on a gateway for ``bench_gateway.py``: multi-range GETs from a few connections.

    python benchmarks/children/gateway_load.py '{"urls": [...], "size": N, "ranges": 64,
        "range_bytes": 65536, "total_bytes": 1e9, "connections": 4}'

Each connection (HTTP/1.1 keep-alive, one thread) asks for ``ranges`` random ranges of
``range_bytes`` in one request - the shape of ROOT's TTreeCache reads - over the given files,
until ``total_bytes`` of file data have been received; every answer is checked to be
``multipart/byteranges`` with the right length. Prints seconds and bytes; the benchmark reads
the gateway's own CPU time around this run.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    urls = [urllib.parse.urlsplit(u) for u in spec["urls"]]
    size, n, width = int(spec["size"]), int(spec["ranges"]), int(spec["range_bytes"])
    per_request = n * width
    requests = max(1, int(float(spec["total_bytes"]) // per_request))
    conns = int(spec["connections"])
    got = [0] * conns
    errors: list[str] = []

    def worker(k: int) -> None:
        rng = random.Random(k)
        host, port = urls[0].hostname, urls[0].port
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            for i in range(k, requests, conns):
                url = urls[i % len(urls)]
                starts = sorted(rng.randrange(0, size - width) for _ in range(n))
                header = "bytes=" + ",".join(f"{s}-{s + width - 1}" for s in starts)
                conn.request("GET", url.path, headers={"Range": header})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 206 or len(body) < per_request:
                    errors.append(f"{resp.status} {len(body)}")
                    return
                got[k] += per_request
        except Exception as exc:  # reported, not raised: the benchmark prints it
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise SystemExit(f"load failed: {errors[0]}")
    return {"seconds": seconds, "bytes": sum(got), "requests": requests}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
