"""``htpdata demo``: a local demo site, read by logical name, end to end.

Starts a real XRootD origin (Debian ``xrootd-server``) on free localhost ports serving the
sample files bundled in ``htpdata/demo/samples`` (from scikit-hep-testdata) at the paths the
bundled ``demo`` catalog names, then resolves, lists, opens with uproot over root:// and WebDAV
(HTTPS), and checks every file's adler32 against the catalog.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rich.console import Console

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


def run_demo(keep_running: bool = False) -> int:
    out = Console()
    if shutil.which("xrootd") is None:
        out.print("[red]htpdata demo needs the XRootD server:[/] apt-get install xrootd-server "
                  "xrootd-server-plugins xrootd-client (or run `make demo` in the source tree)")
        return 6
    with XRootDServer(name="demo") as server:
        os.environ["HTPDATA_DEMO_ROOT_PORT"] = str(server.port)
        os.environ["HTPDATA_DEMO_HTTPS_PORT"] = str(server.http_port)
        # The demo's cache lives in its own temporary folder: nothing of yours is touched.
        cache_root = server.work / "cache"
        cache = {"local_dir": str(cache_root / "local"), "shared_dir": str(cache_root / "shared")}
        client = Client(auth={"ca_file": str(server.cert)}, cache=cache)
        names = lay_out_demo_site(client, server.data)
        server.restart()  # pick up the files with their final ownership
        out.rule("[bold]htpdata demo: a local site behind the `demo` catalog")
        pid = server.proc.pid if server.proc else "?"
        out.print(f"XRootD origin on root://localhost:{server.port} and "
                  f"davs://localhost:{server.http_port} (pid {pid})")

        out.rule("datasets (htpdata ls demo:)")
        for e in client.ls("demo:"):
            out.print(f"  {e['name']:<40} {e['files']} file(s) {e['size']:>10,} bytes")

        name = names[0]
        out.rule(f"replicas (htpdata resolve {name})")
        for i, rep in enumerate(client.resolve(name).replicas, 1):
            out.print(f"  {i}. {rep.site:<12} {rep.protocol:<5} {rep.url}")

        out.rule("verify every file against the catalog's adler32 (htpdata cat)")
        for n in names:
            meta = client.resolver.metadata(n)
            data = client.cat(n, cache=False)
            got = adler32_hex(data)
            ok = got == meta.adler32 and len(data) == meta.size
            mark = "[green]ok[/]" if ok else "[red]MISMATCH[/]"
            out.print(f"  {mark} {got} {len(data):>8,} B {n}")
            if not ok:
                return 8

        try:
            import uproot
        except ImportError:
            out.print("uproot is not installed; pip install 'htpdata[root]' to read ROOT files")
            return 0
        out.rule("uproot through htpdata")
        t0 = time.perf_counter()
        with client.open(name, cache=False) as f:
            events = uproot.open(f)["Events"]
            pt = events["Muon_pt"].array(library="np")
        out.print(f"  uproot.open(htpdata.open({name!r}))['Events']: {events.num_entries} events,"
                  f" {len(events.keys())} branches, {sum(len(x) for x in pt)} muons "
                  f"({time.perf_counter() - t0:.2f} s, root://)")
        url = f"htpdata://davs://localhost:{server.http_port}{name.split(':', 1)[1]}:Events"
        t0 = time.perf_counter()
        from ..client import reset_default_client

        reset_default_client(client)
        tree = uproot.open(url, cache=False)
        jets = tree["nJet"].array(library="np")
        out.print(f"  uproot.open('htpdata://davs://...:Events'): {len(jets)} events, "
                  f"{int(jets.sum())} jets ({time.perf_counter() - t0:.2f} s, WebDAV over HTTPS)")
        out.rule("through the cache: cold, then warm in a fresh client")
        branches = ["Muon_pt", "Jet_pt", "MET_pt"]
        for label in ("cold", "warm"):
            with Client(auth={"ca_file": str(server.cert)}, cache=cache) as c:
                t0 = time.perf_counter()
                with c.open(name) as f:
                    uproot.open(f)["Events"].arrays(branches)
                took = time.perf_counter() - t0
                s = c.cache.journal.totals
                out.print(f"  {label}: {took:.2f} s; bytes from upstream {s['upstream']:,}, "
                          f"local {s['local']:,}, shared {s['shared']:,}, "
                          f"memory {s['memory']:,}")

        out.rule("stage a dataset (htpdata stage demo:/Demo/DiLepton/SIM --pin 1d)")
        from ..staging import stage

        summary = stage("demo:/Demo/DiLepton/SIM", client=client, pin="1d")
        d = summary.as_dict()
        out.print(f"  staged {d['staged']}, already cached {d['already_cached']}, failed "
                  f"{d['failed']}; {d['bytes_fetched']:,} bytes, adler32 verified: "
                  f"{all(r.verified for r in summary.staged)}")
        if summary.failed:
            return 1

        out.rule("what the cache holds (htpdata cache info)")
        client.cache.flush()
        for n in names:
            for t in client.cache.info(n):
                if t["held"]:
                    pinned = " pinned" if t.get("pinned_until") else ""
                    done = " complete" if t.get("complete") else ""
                    out.print(f"  {n.split('/')[-1][:28]:<28} {t['tier']:<6} "
                              f"{t['bytes']:>8,}/{t['size']:>8,} B "
                              f"{t['extents']:>2} extent(s){done}{pinned}")
        out.rule("done")
        if keep_running:
            out.print("Origin left running; Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0
