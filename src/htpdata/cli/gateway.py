"""``htpdata url`` and ``htpdata serve``: the HTTP gateway's commands, a few lines each over
:mod:`htpdata.gateway`."""

from __future__ import annotations

import argparse
import os
import sys

from ..names import Name, parse_name, to_fsspec_url
from .base import Command, client, json_option, name_argument
from .output import note, print_json

__all__ = ["SERVE", "URL"]


# -- url -------------------------------------------------------------------------------------
def _url_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "names", "files or datasets (a dataset gives one URL per file)", many=True)
    p.add_argument("--gateway", action="store_true",
                   help="the URL through your running gateway (htpdata serve), for ROOT's "
                        "TFile, TChain and RDataFrame, curl or xrdcp --allow-http")
    json_option(p, "a list of URLs")


def _url(args: argparse.Namespace) -> int:
    from ..gateway import running
    from ..known import lookup

    c = client()
    info = running() if args.gateway else None
    out: list[str] = []
    for text in args.names:
        known = lookup(c, text)
        files: list[Name] = ([parse_name(f.name) for f in c.files(known.name)]
                             if known.kind == "collection" else [known.name])
        out += [info.url(f) if info else to_fsspec_url(f) for f in files]
    if args.json:
        print_json(out)
    else:
        sys.stdout.write("".join(u + "\n" for u in out))
    return 0


URL = Command(
    "print the URLs of files or datasets: htpdata:// or, with --gateway, for ROOT and curl",
    _url_args, _url,
    (("htpdata url demo:/Demo/TTJets/NANOAODSIM --gateway", "one gateway URL per file, for "
      "TChain or RDataFrame"),
     ("htpdata url demo:/store/mc/ttbar/nano.root", "its htpdata:// URL, for uproot")),
    "A gateway URL carries the gateway's secret: keep it off command lines (ps shows them to "
    "every user); put it in a macro, a script or a fileset.")


# -- serve -----------------------------------------------------------------------------------
def _serve_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=None,
                   help="TCP port (default: a free one; the URLs say which)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1). RISK: any other address "
                        "makes the gateway reachable from other machines, guarded only by its "
                        "secret, which travels in clear HTTP; operators only")
    p.add_argument("--threads", type=int, default=8, help="reads in flight at once (8)")
    p.add_argument("--unix-socket", metavar="PATH",
                   help="also listen on this Unix socket (0600; curl --unix-socket)")
    p.add_argument("--no-cache", action="store_true", help="read around the cache")
    p.add_argument("--exit-when-unused", metavar="LOCKFILE",
                   help="(for the Dask plugin) exit once no process holds a shared lock on "
                        "LOCKFILE; write no state file")
    json_option(p, "one line once listening: host, port, pid, state file (never the secret)")


def _serve(args: argparse.Namespace) -> int:
    from ..gateway.server import Gateway, GatewayOptions
    from ..gateway.state import ENV_URL, GatewayInfo, new_secret, state_path

    secret, port = None, args.port
    if os.environ.get(ENV_URL):  # started for a Dask worker or by a notebook's gateway
        given = GatewayInfo.from_url(os.environ[ENV_URL])
        secret = given.secret
        port = given.port if port is None else port
    opts = GatewayOptions(port=port or 0, bind=args.bind, threads=args.threads,
                          unix_socket=args.unix_socket, cache=False if args.no_cache else None)
    node = args.exit_when_unused is not None
    gw = Gateway(client(), opts, secret=secret or new_secret(), record=not node,
                 users_lock=args.exit_when_unused)

    def ready(g: Gateway) -> None:
        assert g.info is not None
        state = None if node else str(state_path())
        if args.json:
            print_json({"host": g.info.host, "port": g.info.port, "pid": g.info.pid,
                        "unix_socket": g.info.unix_socket, "state_file": state})
            sys.stdout.flush()
        where = f" and {g.info.unix_socket}" if g.info.unix_socket else ""
        kept = f"; secret kept in {state}" if state else ""
        # Always said, also with -q: a service that started says so.
        print(f"htpdata: gateway listening on http://{g.info.host}:{g.info.port}/{where}{kept}; "
              "URLs: htpdata url NAME --gateway; Ctrl-C stops it", file=sys.stderr, flush=True)

    gw.serve_forever(on_ready=ready)
    note("htpdata: gateway stopped")
    return 0


SERVE = Command(
    "run the HTTP gateway to the cache for ROOT, curl and other tools (only you can use it)",
    _serve_args, _serve,
    (("htpdata serve &", "start it; then: htpdata url NAME --gateway"),
     ("htpdata serve --unix-socket ~/.htpdata.sock", "also on a Unix socket (no secret needed "
      "there)")),
    "Serves HEAD and GET with byte ranges (multi-range as ROOT asks) for logical names, reading "
    "through htpdata: the cache, replica failover, verification. Every URL carries a secret "
    "kept in a 0600 state file, never on a command line; see docs/gateway.md.")
