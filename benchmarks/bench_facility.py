"""What the facility rules of issue 20 save: hedged first bytes, the slow floor, the proxy timeout.

    .venv/bin/python benchmarks/bench_facility.py [--repeat 3]

Real XRootD origins, each behind its own WAN emulator (``htpdata.testing.wan``), and a real
XCache (libXrdPfc). Each case is measured with the rule and without it, in the same run, in this
process (a fresh client per repetition), and printed as a ratio:

- **hedge**: the first 4 kB of a file whose preferred replica is far (a 1 s round trip) and whose
  second is near (4 ms): hedging on (``hedge_max`` 0.2 s) against off.
- **slow floor**: reading the last 300 kB of a file after its replica was throttled to 50 kB/s,
  a second replica at full speed: floor 200 kB/s (window 1 s) against off.
- **frozen XCache**: the rest of a file after the site's XCache was SIGSTOPped mid-read:
  ``proxy_timeout`` 2 s against 10 s (the read timeout).

Writes ``results/facility.json``. Timings on a shared machine are noisy; the ratios are what to
compare (each pair ran back to back).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
import htpdata  # noqa: E402
from htpdata.demo import SAMPLES  # noqa: E402
from htpdata.testing import XRootDServer  # noqa: E402
from htpdata.testing.wan import WanProxy  # noqa: E402

_SHARED = HERE.parent.parent / "shared" / "testdata"
TESTDATA = Path(os.environ.get("HTPDATA_TESTDATA", _SHARED if _SHARED.is_dir() else SAMPLES))
NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
LFN = f"/store/test/{NANO}"


def _catalog(path: Path, sites: list[tuple[str, int]]) -> Path:
    out = ["format = 1\n[namespaces.fac]\n"]
    for i, (site, port) in enumerate(sites, 1):
        out.append(f'[sites.{site}]\npreference = {i}\nprotocols = [{{ scheme = "root", '
                   f'namespace = "fac", prefix = "root://localhost:{port}/" }}]\n')
    size = (TESTDATA / NANO).stat().st_size
    out.append(f'[datasets."/F"]\nnamespace = "fac"\nfiles = [{{ name = "{LFN}", size = '
               f'{size} }}]\n')
    path.write_text("\n".join(out))
    return path


def _client(cat: Path, **replicas: object) -> htpdata.Client:
    return htpdata.Client(catalogs={"path": [str(cat)], "bundled": False},
                          timeouts={"read": 10}, cache={"enabled": False},
                          replicas={"protocols": ["root"], **replicas})


def _timed(read: Callable[[int, int], bytes], start: int, end: int, want: bytes) -> float:
    """Seconds of ``read(start, end)``, checked against the file's bytes."""
    t0 = time.perf_counter()
    got = read(start, end)
    seconds = time.perf_counter() - t0
    assert got == want[start:end], "wrong bytes"
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    h.exit_on_sigterm()
    want = (TESTDATA / NANO).read_bytes()
    name = f"fac:{LFN}"
    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        work = h.workdir(stack, "facility", Path(tempfile.gettempdir()))
        a = h.xrootd_origin(stack, {LFN: TESTDATA / NANO}, name="facA")
        b = h.xrootd_origin(stack, {LFN: TESTDATA / NANO}, name="facB")
        wa = stack.enter_context(WanProxy("localhost", a.port, delay_ms=2))
        wb = stack.enter_context(WanProxy("localhost", b.port, delay_ms=2))
        cat = _catalog(work / "two.toml", [("SITE_A", wa.port), ("SITE_B", wb.port)])

        # hedge: SITE_A far, SITE_B near
        wa.set_delay(500)
        for label, on in (("hedged", True), ("not hedged", False)):
            for _ in range(args.repeat):
                wa.wait_idle(quiet=0.5, timeout=60)  # the last hedge's loser has finished
                with _client(cat, hedge=on, hedge_max=0.2, slow_floor=0) as c:
                    read = c.reader(name, cache=False).read
                    results.setdefault("hedge", {}).setdefault(label, []).append(
                        _timed(read, 0, 4096, want))
        wa.set_delay(2)

        # slow floor: SITE_A throttled mid-read. A request left behind still fills A's
        # connection (one per process), so each repetition gets a new emulator for A.
        for label, floor in (("floor 200kB/s", "200kB"), ("no floor", "0")):
            for i in range(args.repeat):
                with WanProxy("localhost", a.port, delay_ms=2) as slow_a:
                    cat_i = _catalog(work / f"slow-{label[:2]}-{i}.toml",
                                     [("SITE_A", slow_a.port), ("SITE_B", wb.port)])
                    with _client(cat_i, slow_floor=floor, slow_window=1, slow_ramp_up=1,
                                 hedge=False) as c:
                        r = c.reader(name, cache=False)
                        assert r.read(0, 65536) == want[:65536]
                        slow_a.throttle(50_000)
                        results.setdefault("slow floor", {}).setdefault(label, []).append(
                            _timed(r.read, len(want) - 300_000, len(want), want))

        # frozen XCache in front of SITE_B (path mode)
        for label, timeout in (("proxy_timeout 2 s", 2.0), ("proxy_timeout 10 s", 10.0)):
            for _ in range(args.repeat):
                xc = XRootDServer(name=f"bench-facxc-{os.getpid()}", tls=False, writable=True,
                                  extra_config=h.XCACHE_CONFIG.format(port=b.port))
                xc.start()
                try:
                    with _client(cat, proxy=xc.root_url + "/", proxy_timeout=timeout,
                                 hedge=False) as c:
                        r = c.reader(name, cache=False)
                        assert r.read(0, 65536) == want[:65536]
                        assert xc.proc is not None
                        os.kill(xc.proc.pid, signal.SIGSTOP)
                        results.setdefault("frozen XCache", {}).setdefault(label, []).append(
                            _timed(r.read, 65536, len(want), want))
                        os.kill(xc.proc.pid, signal.SIGCONT)
                finally:
                    xc.cleanup()

    rows = []
    print(f"\n{'case':<16} {'with the rule':>22} {'without':>22} {'ratio':>7}")
    for case, runs in results.items():
        (with_label, with_t), (without_label, without_t) = runs.items()
        m_with, m_without = statistics.median(with_t), statistics.median(without_t)
        ratio = h.ratio(m_with, m_without)
        rows.append({"case": case, "with": with_label, "with_s": with_t, "without": without_label,
                     "without_s": without_t, "median_ratio": ratio})
        print(f"{case:<16} {with_label + ' ' + h.fmt(m_with) + ' s':>22} "
              f"{without_label + ' ' + h.fmt(m_without) + ' s':>22} {h.fmt(ratio):>7}")
    h.write_results(h.RESULTS / "facility.json", {**h.run_meta(), "cases": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
