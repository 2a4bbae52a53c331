"""``htpdata demo``: a local demo site, read by logical name, end to end.

Starts a real XRootD origin (Debian ``xrootd-server``) on free localhost ports serving the
sample files bundled in ``htpdata/demo/samples`` (from scikit-hep-testdata) at the paths the
bundled ``demo`` catalog names, then resolves, lists, opens with uproot over root:// and WebDAV
(HTTPS), and checks every file's adler32 against the catalog.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..adler32 import adler32_hex
from ..client import Client
from ..testing import XRootDServer

__all__ = ["SAMPLES", "lay_out_demo_site", "run_demo"]

SAMPLES = Path(__file__).resolve().parent / "samples"
DEMO_DATASETS = ("/Demo/TTJets/NANOAODSIM", "/Demo/TTJets/NANOAODSIM-RNTuple",
                 "/Demo/DiLepton/SIM")


def lay_out_demo_site(client: Client, data: Path, samples: Path = SAMPLES) -> list[str]:
    """Copy each sample to the path its logical name has in the demo catalog; return the names."""
    names = []
    for ds in DEMO_DATASETS:
        for f in client.files(f"demo:{ds}"):
            path = f.name.split(":", 1)[1]
            target = data / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(samples / Path(path).name, target)
            names.append(f.name)
    return names


class _Out:
    """The demo's printing: rich on a terminal; piped, plain lines that never wrap (URLs stay
    whole for copy and paste). Quiet with ``as_json``: the JSON goes out at the end."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = Console(soft_wrap=True, highlight=False)

    def section(self, title: str) -> None:
        if self.quiet:
            return
        if self.console.is_terminal:
            self.console.rule(f"[bold]{title}" if title.startswith("htpdata") else title)
        else:
            self.console.print(f"== {title}", markup=False)

    def line(self, text: str, markup: bool = True) -> None:
        if not self.quiet:
            self.console.print(text, markup=markup)


def _another_shell(server: XRootDServer, cache: dict[str, str]) -> dict[str, str]:
    """What a second shell needs to read this site by name: the ports the catalog's prefixes
    take, the CA that signed the HTTPS certificate, and (optional) the demo's own cache."""
    return {"HTPDATA_DEMO_ROOT_PORT": str(server.port),
            "HTPDATA_DEMO_HTTPS_PORT": str(server.http_port),
            "HTPDATA_AUTH_CA_FILE": str(server.cert),
            "HTPDATA_CACHE_LOCAL_DIR": cache["local_dir"],
            "HTPDATA_CACHE_SHARED_DIR": cache["shared_dir"]}


def _wait_for_stop() -> None:
    """Until Ctrl-C or SIGTERM (a service manager, ``kill``, a background job whose SIGINT the
    shell ignores): either way the origin is stopped on the way out."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


def run_demo(keep_running: bool = False, as_json: bool = False) -> int:
    out = _Out(as_json)
    result: dict[str, Any] = {"ok": False}
    if shutil.which("xrootd") is None:
        print("htpdata: error: htpdata demo needs the XRootD server: apt-get install "
              "xrootd-server xrootd-server-plugins xrootd-client (or run `make demo` in the "
              "source tree)", file=sys.stderr)
        return 6
    with XRootDServer(name="demo") as server:
        code = _run(server, out, result, keep_running)
        if as_json:
            print(json.dumps(result, indent=2, default=str), flush=True)
        if code == 0 and keep_running:
            _wait_for_stop()
    return code


def _run(server: XRootDServer, out: _Out, result: dict[str, Any], keep_running: bool) -> int:
    os.environ["HTPDATA_DEMO_ROOT_PORT"] = str(server.port)
    os.environ["HTPDATA_DEMO_HTTPS_PORT"] = str(server.http_port)
    # The demo's cache lives in its own temporary folder: nothing of yours is touched.
    cache_root = server.work / "cache"
    cache = {"local_dir": str(cache_root / "local"), "shared_dir": str(cache_root / "shared")}
    client = Client(auth={"ca_file": str(server.cert)}, cache=cache)
    names = lay_out_demo_site(client, server.data)
    server.restart()  # pick up the files with their final ownership
    out.section("htpdata demo: a local site behind the `demo` catalog")
    pid = server.proc.pid if server.proc else "?"
    out.line(f"XRootD origin on root://localhost:{server.port} and "
             f"davs://localhost:{server.http_port} (pid {pid}); its CA: {server.cert}",
             markup=False)
    result.update({"root_port": server.port, "https_port": server.http_port,
                   "ca_file": str(server.cert), "pid": pid, "cache": cache,
                   "env": _another_shell(server, cache)})

    out.section("datasets (htpdata ls demo:)")
    for e in client.ls("demo:"):
        out.line(f"  {e['name']:<40} {e['files']} file(s) {e['size']:>10,} bytes", markup=False)

    name = names[0]
    out.section(f"replicas (htpdata resolve {name})")
    for i, rep in enumerate(client.resolve(name).replicas, 1):
        out.line(f"  {i}. {rep.site:<12} {rep.protocol:<5} {rep.url}", markup=False)

    out.section("verify every file against the catalog's adler32 (htpdata cat)")
    result["files"] = checked = []
    for n in names:
        meta = client.resolver.metadata(n)
        data = client.cat(n, cache=False)
        got = adler32_hex(data)
        ok = got == meta.adler32 and len(data) == meta.size
        checked.append({"name": n, "adler32": got, "bytes": len(data), "ok": ok})
        mark = "[green]ok[/]" if ok else "[red]MISMATCH[/]"
        out.line(f"  {mark} {got} {len(data):>8,} B {escape(n)}")
        if not ok:
            return 8

    try:
        import uproot
    except ImportError:
        out.line("uproot is not installed; pip install 'htpdata[root]' to read ROOT files")
        result["ok"] = True
        return 0
    out.section("uproot through htpdata")
    from ..fs import open_name

    t0 = time.perf_counter()
    with open_name(client, name, cache=False) as f:
        events = uproot.open(f)["Events"]
        pt = events["Muon_pt"].array(library="np")
    out.line(f"  uproot.open(htpdata.open({name!r}))['Events']: {events.num_entries} events, "
             f"{len(events.keys())} branches, {sum(len(x) for x in pt)} muons "
             f"({time.perf_counter() - t0:.2f} s, root://)", markup=False)
    url = f"htpdata://davs://localhost:{server.http_port}{name.split(':', 1)[1]}:Events"
    t0 = time.perf_counter()
    from ..default import reset_default_client

    reset_default_client(client)
    tree = uproot.open(url, cache=False)
    jets = tree["nJet"].array(library="np")
    out.line(f"  uproot.open('htpdata://davs://...:Events'): {len(jets)} events, "
             f"{int(jets.sum())} jets ({time.perf_counter() - t0:.2f} s, WebDAV over HTTPS)",
             markup=False)

    out.section("through the cache: cold, then warm in a fresh client")
    branches = ["Muon_pt", "Jet_pt", "MET_pt"]
    result["cache_reads"] = reads = {}
    for label in ("cold", "warm"):
        with Client(auth={"ca_file": str(server.cert)}, cache=cache) as c:
            t0 = time.perf_counter()
            with open_name(c, name) as f:
                uproot.open(f)["Events"].arrays(branches)
            took = time.perf_counter() - t0
            s = c.cache.totals.as_dict()
            served = s["memory"] + s["local"] + s["shared"]
            reads[label] = {"seconds": took, "served_from_cache": served,
                            "memory": s["memory"], "local": s["local"], "shared": s["shared"],
                            "fetched_upstream": s["upstream"]}
            out.line(f"  {label}: {took:.2f} s; fetched from the origin {s['upstream']:,} "
                     f"bytes; served from the cache {served:,} bytes (memory {s['memory']:,}, "
                     f"local disk {s['local']:,}, shared volume {s['shared']:,})",
                     markup=False)

    out.section("stage a dataset (htpdata stage demo:/Demo/DiLepton/SIM --pin 1d)")
    from ..staging import stage

    summary = stage("demo:/Demo/DiLepton/SIM", client=client, pin="1d")
    d = summary.as_dict()
    result["stage"] = {k: d[k] for k in ("staged", "already_cached", "failed",
                                         "bytes_fetched")}
    out.line(f"  staged {d['staged']}, already cached {d['already_cached']}, failed "
             f"{d['failed']}; {d['bytes_fetched']:,} bytes, adler32 verified: "
             f"{all(r.verified for r in summary.staged)}", markup=False)
    if summary.failed:
        return 1

    out.section("what the cache holds (htpdata cache info)")
    client.cache.flush()
    for n in names:
        for t in client.cache.info(n):
            if t["held"]:
                pinned = " pinned" if t.get("pinned_until") else ""
                done = " complete" if t.get("complete") else ""
                out.line(f"  {n.split('/')[-1][:28]:<28} {t['tier']:<6} "
                         f"{t['bytes']:>8,}/{t['size']:>8,} B "
                         f"{t['extents']:>2} extent(s){done}{pinned}", markup=False)
    out.section("done")
    result["ok"] = True
    if keep_running:
        out.line("The origin stays up until Ctrl-C. In another shell, these make the demo "
                 "catalog point at it (the last two share this demo's cache; leave them out "
                 "to use your own):", markup=False)
        for k, v in result["env"].items():
            out.line(f"  export {k}={shlex.quote(v)}", markup=False)
        out.line("  htpdata ls demo:", markup=False)
    return 0
