"""Commands that find and read files: resolve, ls, cat, cp, fileset."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import UnknownNamespaceError
from ..known import lookup, lookup_all
from .args import at_least_one
from .base import Command, client, json_option, name_argument
from .output import Bytes, error, note, print_json, print_table, write_atomically

__all__ = ["CAT", "CP", "FILESET", "LS", "RESOLVE"]

CHUNK = 8 << 20


# -- resolve ---------------------------------------------------------------------------------
def _resolve_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "name", "a file's logical name, a dataset, a Rucio DID or a URL")
    json_option(p, "ResolvedFile.as_dict() (a list of them for a dataset)")


def _resolve(args: argparse.Namespace) -> int:
    c = client()
    known = lookup(c, args.name)
    many = known.kind == "collection"
    resolved = c.resolve_all(known.name) if many else [c.resolve(known.name)]
    if args.json:
        print_json([r.as_dict() for r in resolved] if many else resolved[0].as_dict())
        return 0
    rows: list[list[Any]] = []
    for r in resolved:
        for i, rep in enumerate(r.replicas, 1):
            rows.append([str(r.name), i, rep.site, rep.protocol, rep.url,
                         None if r.size is None else Bytes(r.size), r.adler32])
    meta = resolved[0]
    title = (f"{meta.name}: size {meta.size if meta.size is not None else '-'} B, adler32 "
             f"{meta.adler32 or '-'}" if not many else f"{known.name}: {len(resolved)} files")
    print_table(title, ["file", "#", "site", "protocol", "url", "size", "adler32"], rows)
    return 0


RESOLVE = Command(
    "show the replicas of a file (or of each file of a dataset), in the order they are tried",
    _resolve_args, _resolve,
    (("htpdata resolve demo:/store/demo/mc/HZZ/uproot-HZZ.root", "one file's replicas"),
     ("htpdata resolve demo:/Demo/DiLepton/SIM --json", "every file of a dataset, as JSON"),
     ("htpdata resolve demo:/Demo/DiLepton/SIM | cut -f5", "just the URLs")),
    "Show the replicas of a file, or of every file of a dataset, in the order htpdata tries "
    "them. Names the catalogs or Rucio know cost no storage I/O; other names are checked to "
    "exist with one stat, so a misspelt name is an error (exit 3) with near misses.")


# -- ls --------------------------------------------------------------------------------------
def _ls_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "name", "a namespace ('demo:'), a dataset prefix, a dataset, a storage "
                             "folder or a URL")
    p.add_argument("-c", "--checksums", action="store_true",
                   help="ask storage for the adler32 of listed files the catalogs do not know "
                        "(one request per file, in parallel)")
    json_option(p, "the entries (name, type, size, adler32, files)")


def _server_checksums(c: Any, entries: list[dict[str, Any]]) -> None:
    todo = [e for e in entries if e.get("type") == "file" and not e.get("adler32") and
            e.get("url", e["name"]).split("://", 1)[0] in ("root", "davs", "https", "http",
                                                             "file")]

    def ask(e: dict[str, Any]) -> None:
        url = e.get("url", e["name"])
        try:
            e["adler32"] = c.transports.for_url(url).checksum(url)
        except OSError:
            e["adler32"] = None

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ask, todo))


def _ls(args: argparse.Namespace) -> int:
    c = client()
    text = args.name.strip()
    if text.endswith(":") and text.count(":") == 1:  # a namespace
        ns = text[:-1]
        if ns not in c.resolver.catalogs.namespaces:
            raise UnknownNamespaceError(text, ns, list(c.resolver.catalogs.namespaces))
        entries = c.ls(text)
    else:
        known = lookup(c, text)
        entries = c.ls(known.name)
    cats = c.resolver.catalogs
    for e in entries:
        if e.get("type") == "file" and not e.get("adler32") and ":" in e["name"]:
            ns, _, path = e["name"].partition(":")
            f = cats.file(ns, path)
            e["adler32"] = f.adler32 if f is not None else None
    if args.checksums:
        _server_checksums(c, entries)
    if args.json:
        print_json(entries)
        return 0
    print_table(None, ["type", "size", "adler32", "files", "name"],
                [[e.get("type") or "", None if e.get("size") is None else Bytes(e["size"]),
                  e.get("adler32") or ("" if e.get("type") != "file" else "-"),
                  e.get("files", ""), e["name"]] for e in entries])
    return 0


LS = Command(
    "list a namespace's datasets, a dataset's files, or a storage folder", _ls_args, _ls,
    (("htpdata ls demo:", "the datasets of a namespace"),
     ("htpdata ls demo:/Demo/DiLepton/SIM", "a dataset's files with size and adler32"),
     ("htpdata ls demo:/store/demo/mc/HZZ/ -c", "a folder on storage, checksums asked"),
     ("htpdata ls demo:/Demo/DiLepton/SIM | awk 'NR>1 {s+=$2} END {print s}'", "total bytes")))


# -- cat -------------------------------------------------------------------------------------
def _cat_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "name", "a file's logical name or URL")
    p.add_argument("--start", type=int, default=0, help="first byte (default 0)")
    p.add_argument("--end", type=int, default=None, help="byte after the last (default: EOF)")


def _cat(args: argparse.Namespace) -> int:
    if args.start < 0 or (args.end is not None and args.end < args.start):
        error("need 0 <= --start <= --end")
        return 2
    c = client()
    from ..known import check_local

    check_local(c, args.name)
    reader = c.reader(args.name)
    end = reader.size() if args.end is None else min(args.end, reader.size())
    out = sys.stdout.buffer
    pos = args.start
    while pos < end:  # stream in chunks: files may be larger than memory
        block = reader.read(pos, min(pos + CHUNK, end))
        out.write(block)
        pos += len(block)
    out.flush()
    return 0


CAT = Command(
    "write a file's bytes (or a byte range) to standard output", _cat_args, _cat,
    (("htpdata cat demo:/store/demo/mc/HZZ/uproot-HZZ.root > HZZ.root", "the whole file"),
     ("htpdata cat demo:/store/demo/mc/HZZ/uproot-HZZ.root --end 4 | xxd", "its first bytes")),
    "Write a file's bytes to standard output, streamed in 8 MiB pieces, through the cache and "
    "with failover. There is no --json: the output is the file. To save files, htpdata cp "
    "verifies them and never leaves a partial file.")


# -- cp --------------------------------------------------------------------------------------
def _cp_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "names", "files or datasets to copy", many=True)
    p.add_argument("dest", metavar="DEST",
                   help="a file (one source), a folder (end it with '/' to create it), or '-' "
                        "for standard output")
    p.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing files (default: refuse, exit 50, like xrdcp)")
    p.add_argument("-p", "--path", dest="make_dirs", action="store_true",
                   help="create the destination folder if it is missing (xrdcp --path)")
    p.add_argument("--keep-paths", action="store_true",
                   help="below DEST, keep each file's logical path, not only its base name")
    p.add_argument("--parallel", type=at_least_one, default=4,
                   help="files copied at once (default 4)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="read straight from storage, not through the cache")
    p.add_argument("-N", "--nopbar", action="store_true",
                   help="no progress bar (as xrdcp; also off with -q, --json or when piped)")
    json_option(p, "one record per file (name, dest, size, adler32, verified, error)")


def _cp(args: argparse.Namespace) -> int:
    from ..copy import copy, copy_file
    from ..known import check_local
    from ..staging.progress import Progress
    from .output import OPTIONS

    c = client()
    for n in args.names:
        check_local(c, n)
    entries = [f for k in lookup_all(c, args.names) for f in c.files(k.name)]
    if args.dest == "-":
        if len(entries) != 1:
            error("'-' (standard output) takes exactly one file")
            return 2
        r = copy_file(c, entries[0], "-", cache=args.cache, stdout=sys.stdout.buffer)
        sys.stdout.buffer.flush()
        results = [r]
    else:
        quiet = args.json or OPTIONS.quiet or args.nopbar
        total = sum(e.size or 0 for e in entries)
        mode = "none" if quiet or not sys.stderr.isatty() else "rich"
        with Progress(len(entries), total, mode, label="cp") as bar:
            results = copy(c, entries, args.dest, parallel=args.parallel, cache=args.cache,
                           force=args.force, keep_paths=args.keep_paths,
                           make_dirs=args.make_dirs, on_bytes=bar.add_bytes,
                           on_file=lambda r: bar.file_done(r.status == "copied"))
    failed = [r for r in results if r.status != "copied"]
    if args.json:
        print_json([r.as_dict() for r in results])
    else:
        for r in results:
            if r.status == "copied":
                check = ("verified" if r.verified else "not verified: no checksum known")
                note(f"copied {r.name} -> {r.dest} ({r.size} bytes, adler32 {r.adler32}, "
                     f"{check})")
            else:
                error(f"{r.error}")
    if not failed:
        return 0
    return failed[0].exit_code if len(results) == 1 else 1


CP = Command(
    "copy files or datasets to a local file or folder, verified (like xrdcp)", _cp_args, _cp,
    (("htpdata cp demo:/store/demo/mc/HZZ/uproot-HZZ.root .", "one file into this folder"),
     ("htpdata cp demo:/Demo/DiLepton/SIM data/", "a dataset into data/ (created)"),
     ("htpdata cp demo:/Demo/DiLepton/SIM data/ --keep-paths", "with the /store/... paths"),
     ("htpdata cp root://host//store/x.root x.root -f", "overwrite x.root")),
    "Copy files, or every file of datasets, in the manner of xrdcp: each is written beside its "
    "target under a hidden temporary name, its adler32 checked against the catalog's, Rucio's "
    "or the server's, then renamed into place; a failure leaves nothing. Exit codes: htpdata's "
    "(3 not found, 6 unavailable, 8 checksum mismatch, ...), 50 for a destination problem "
    "(exists, no space, no permission) as xrdcp; with several files, 1 if any failed.")


# -- fileset ---------------------------------------------------------------------------------
def _fileset_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "datasets", "dataset or container names", many=True, metavar="DATASET")
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    p.add_argument("--tree", help="the TTree or RNTuple to read (default: the one the files "
                                  "have; needed when they have several)")
    p.add_argument("--for", dest="for_", choices=["uproot", "root"], default="uproot",
                   help="uproot/coffea: htpdata:// URLs (default); root: URLs through your "
                        "running gateway (htpdata serve), for RDataFrame and TChain")
    json_option(p, "the fileset (what stdout gets anyway; with -o, a summary)")


def _fileset(args: argparse.Namespace) -> int:
    import json

    from ..api import fileset

    data = fileset(*args.datasets, tree=args.tree, client=client())
    if args.for_ == "root":
        from ..gateway import fileset as through_gateway
        from ..gateway import running

        data = through_gateway(data, running())
    if args.output is None:
        print_json(data)
        return 0
    write_atomically(args.output, json.dumps(data, indent=2))
    n = sum(len(v["files"]) for v in data.values())
    summary = {"output": args.output, "datasets": len(data), "files": n,
               "trees": sorted({v["metadata"]["tree"] for v in data.values()})}
    if args.json:
        print_json(summary)
    else:
        note(f"wrote {args.output}: {len(data)} dataset(s), {n} file(s), tree "
             f"{', '.join(summary['trees'])}")
    return 0


FILESET = Command(
    "write a coffea / uproot.dask fileset (htpdata:// URLs) for datasets", _fileset_args,
    _fileset,
    (("htpdata fileset demo:/Demo/DiLepton/SIM -o fileset.json", "the tree is found in the "
      "files"),
     ("htpdata fileset demo:/Demo/TTJets/NANOAODSIM --tree Events", "name it explicitly"),
     ("htpdata fileset demo:/Demo/TTJets/NANOAODSIM --for root", "gateway URLs, for ROOT")))
