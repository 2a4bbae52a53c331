"""The other commands: convert, config, demo, completion."""

from __future__ import annotations

import argparse
import sys

from .args import dask_address
from .base import Command, client, json_option, name_argument
from .output import error, print_json, print_table

__all__ = ["COMPLETION", "CONFIG", "CONVERT", "DEMO"]


# -- convert ---------------------------------------------------------------------------------
def _convert_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "names", "files or datasets", many=True)
    p.add_argument("--to", dest="format", default="parquet", choices=["parquet", "rntuple"],
                   help="output format (default parquet)")
    p.add_argument("--columns", help="comma-separated names or wildcards (default: all)")
    p.add_argument("--tree", help="the TTree or RNTuple (default: the only one)")
    p.add_argument("--tier", choices=["local", "shared"],
                   help="where the copy is kept (default: shared if configured, else local)")
    p.add_argument("--dask", metavar="SCHEDULER", type=dask_address,
                   help="convert on a Dask cluster: tcp://host:port (or host:port)")
    json_option(p, "one record per input (name, derived, path, url, or error)")


def _convert(args: argparse.Namespace) -> int:
    from ..convert import convert_many
    from ..known import lookup_all

    c = client()
    lookup_all(c, args.names)
    rows = convert_many(args.names, args.format, args.columns, client=c,
                        tree=args.tree, tier=args.tier, dask=args.dask)
    failed = [r for r in rows if "error" in r]
    if args.json:
        print_json(rows)
    else:
        print_table(f"converted to {args.format}", ["input", "derived name", "path"],
                    [[r["name"], r["derived"], r["path"]] for r in rows if "error" not in r])
        for r in failed:
            error(f"{r['error']}")
    if len(rows) == 1 and failed:
        return 10
    return 1 if failed else 0


CONVERT = Command(
    "convert ROOT files to Parquet or RNTuple, kept in the cache", _convert_args, _convert,
    (("htpdata convert demo:/Demo/TTJets/NANOAODSIM --columns 'Muon_*,Jet_pt'",
      "a Parquet copy of some columns"),
     ("htpdata convert demo:/Demo/DiLepton/SIM --to rntuple --tree events", "as RNTuple"),
     ("htpdata convert demo:/Demo/TTJets/NANOAODSIM --json | jq -r '.[].path'", "the paths")),
    "Convert ROOT files (TTree or RNTuple) to Parquet or RNTuple. Each copy is a cache entry "
    "named by its source's content, the columns and the format: converting again serves it. "
    "Each output line names its input, its derived name (derived:FORMAT:HASH: "
    "htpdata.converted(that name) finds it, for anyone sharing the tier) and its path.")


# -- config ----------------------------------------------------------------------------------
def _config_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    json_option(p, "the settings with their sources, the catalogs and the credentials found")


def _config(args: argparse.Namespace) -> int:
    from ..catalogs import catalog_files
    from ..config import config_path

    c = client()
    s = c.settings
    creds = c.transports.creds.describe()
    catalogs = [str(p) for p in catalog_files(s)]
    if args.json:
        print_json({"config_file": str(config_path()),
                    "settings": {k: {"value": v, "source": src} for k, v, src in s.items()},
                    "catalogs": catalogs, "credentials": creds})
        return 0
    print_table(f"settings (file: {config_path()})", ["setting", "value", "source"],
                [[k, v, src] for k, v, src in s.items()])
    print_table("catalogs", ["file"], [[cat] for cat in catalogs])
    print_table("credentials (where found; values are never shown)", ["kind", "source"],
                [[k, v or "-"] for k, v in creds.items()])
    return 0


CONFIG = Command(
    "print the effective settings and where each came from", _config_args, _config,
    (("htpdata config", "settings, catalogs, credentials"),
     ("htpdata config | grep cache.", "the cache settings"),
     ("htpdata config --json | jq '.settings[\"cache.shared_dir\"]'", "one setting")))


# -- demo ------------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-running", action="store_true",
                   help="leave the demo origin running until Ctrl-C, and print the settings "
                        "another shell needs to use it")
    json_option(p, "what the demo checked, the ports and the settings for another shell")


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(keep_running=args.keep_running, as_json=args.json)


DEMO = Command(
    "run the demo: a local XRootD origin, read by logical name", _demo_args, _demo,
    (("htpdata demo", "start, read, check, stop"),
     ("htpdata demo --keep-running", "leave the site up for another shell")),
    "Start an XRootD origin on free localhost ports serving the bundled sample files, and read "
    "them by logical name through the demo catalog: list, resolve, checksum, uproot over "
    "root:// and WebDAV, the cache cold and warm, a stage. Needs Debian's xrootd-server.")


# -- completion ------------------------------------------------------------------------------
def _completion_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh"],
                   help="the shell to print the completion script for")


def _completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["htpdata"], shell=args.shell))
    return 0


COMPLETION = Command(
    "print a shell's completion script (commands, options, catalog names)", _completion_args,
    _completion,
    (('eval "$(htpdata completion bash)"', "in ~/.bashrc"),
     ('eval "$(htpdata completion zsh)"', "in ~/.zshrc"),
     ("htpdata completion fish | source", "in fish's config.fish")),
    "Print the script that makes a shell complete htpdata's commands, options, their choices, "
    "and names: namespaces, and the datasets and files the catalogs list (no storage is "
    "contacted while completing).")
