"""One function per subcommand, each a few lines over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..client import Client
from ..names import parse_name
from .output import human_bytes, print_json, print_table, write_atomically

__all__ = ["COMMANDS"]

CHUNK = 8 << 20


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1 (a count of files or requests)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _client() -> Client:
    from ..client import default_client

    return default_client()


# -- resolve ---------------------------------------------------------------------------------
def _resolve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a logical name, dataset, DID or URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _resolve(args: argparse.Namespace) -> int:
    client = _client()
    name = parse_name(args.name)
    many = client.resolver.is_collection(name)
    resolved = client.resolve_all(name) if many else [client.resolve(name)]
    if args.json:
        print_json([r.as_dict() for r in resolved] if many else resolved[0].as_dict())
        return 0
    rows: list[list[Any]] = []
    for r in resolved:
        for i, rep in enumerate(r.replicas, 1):
            rows.append([str(r.name) if len(resolved) > 1 else i, rep.site, rep.protocol,
                         rep.url])
    head = "file" if len(resolved) > 1 else "#"
    meta = resolved[0]
    title = (f"{meta.name}  size {human_bytes(meta.size)}  adler32 {meta.adler32 or '-'}"
             if len(resolved) == 1 else f"{name}: {len(resolved)} files")
    print_table(title, [head, "site", "protocol", "url"], rows)
    return 0


# -- ls --------------------------------------------------------------------------------------
def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a namespace ('cms:'), dataset prefix, dataset, folder or URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _ls(args: argparse.Namespace) -> int:
    entries = _client().ls(args.name)
    if args.json:
        print_json(entries)
        return 0
    print_table(None, ["type", "size", "name"],
                [[e.get("type", ""), human_bytes(e.get("size")), e["name"]] for e in entries])
    return 0


# -- cat -------------------------------------------------------------------------------------
def _cat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a file's logical name or URL")
    p.add_argument("--start", type=int, default=0, help="first byte (default 0)")
    p.add_argument("--end", type=int, default=None, help="byte after the last (default: EOF)")


def _cat(args: argparse.Namespace) -> int:
    if args.start < 0 or (args.end is not None and args.end < args.start):
        print("htpdata: error: need 0 <= --start <= --end", file=sys.stderr)
        return 2
    reader = _client().reader(args.name)
    end = reader.size() if args.end is None else min(args.end, reader.size())
    out = sys.stdout.buffer
    pos = args.start
    while pos < end:  # stream in chunks: files may be larger than memory
        block = reader.read(pos, min(pos + CHUNK, end))
        out.write(block)
        pos += len(block)
    out.flush()
    return 0


# -- stage, pin, unpin, evict ------------------------------------------------------------------
def _stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="files, datasets or containers")
    p.add_argument("--tier", choices=["local", "shared"],
                   help="target tier (default: shared if configured, else local)")
    p.add_argument("--pin", metavar="DURATION", help="keep from eviction for e.g. 7d, 12h")
    p.add_argument("--dry-run", action="store_true",
                   help="plan only: files, bytes, already cached, headroom")
    p.add_argument("--jobs", type=_at_least_one, default=16,
                   help="jobs x streams pieces in flight over all files (default 16)")
    p.add_argument("--streams", type=_at_least_one, default=4, help="pieces in flight per file (4)")
    p.add_argument("--site-limit", type=_at_least_one, default=None,
                   help="files open at once per site (default 2 x jobs)")
    p.add_argument("--evict", action="store_true",
                   help="make room by evicting unpinned entries if it would not fit")
    p.add_argument("--dask", metavar="SCHEDULER", help="run on a Dask cluster (tcp://host:port)")
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout, no progress")


def _stage(args: argparse.Namespace) -> int:
    from ..staging import parse_duration, stage

    pin = None
    if args.pin:
        try:
            pin = parse_duration(args.pin)
        except ValueError as exc:
            print(f"htpdata: error: --pin: {exc}", file=sys.stderr)
            return 2
    summary = stage(args.names, client=_client(), tier=args.tier, pin=pin, jobs=args.jobs,
                    streams=args.streams, site_limit=args.site_limit, dry_run=args.dry_run,
                    evict=args.evict, dask=args.dask,
                    progress="none" if args.json else "auto")
    if args.json:
        print_json(summary.as_dict())
    else:
        p = summary.plan
        if args.dry_run:
            print(f"plan ({p.tier} tier): {len(p.to_fetch)} file(s) to fetch "
                  f"({human_bytes(p.fetch_bytes)}, {human_bytes(p.partial_bytes)} already "
                  f"there from earlier runs), {len(p.cached)} already cached "
                  f"({human_bytes(p.cached_bytes)}); headroom "
                  f"{human_bytes(p.headroom) if p.headroom is not None else 'unbounded'}"
                  + (f"; WOULD NOT FIT: {p.problem}" if p.problem else ""))
        else:
            d = summary.as_dict()
            rate = f", {d['rate_mb_s']:.1f} MB/s" if d["rate_mb_s"] else ""
            print(f"staged {d['staged']}, already cached {d['already_cached']}, failed "
                  f"{d['failed']}: {human_bytes(d['bytes_fetched'])} in "
                  f"{summary.seconds:.1f} s{rate}", file=sys.stderr)
            for f in summary.failed:
                print(f"  failed: {f.name}: {f.error}", file=sys.stderr)
    if args.dry_run:
        return 0 if summary.plan.fits else 9
    return 0 if summary.ok else 1


def _files_of(client: Client, names: list[str]) -> list[tuple[str, Any]]:
    """(canonical name, FileEntry) of every file the names stand for (datasets expand)."""
    return [(str(parse_name(f.name)), f) for n in names for f in client.files(n)]


def _names_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME")


def _pin_args(p: argparse.ArgumentParser) -> None:
    _names_args(p)
    p.add_argument("--for", dest="duration", default="7d", help="how long (default 7d)")


def _pin(args: argparse.Namespace) -> int:
    import time

    from ..staging import parse_duration

    client = _client()
    until = time.time() + parse_duration(args.duration)
    n = 0
    for name, f in _files_of(client, args.names):
        if f.size is not None:
            client.cache.pin(name, f.size, f.adler32, until)
            n += 1
    print(f"pinned {n} file(s) for {args.duration}", file=sys.stderr)
    return 0


def _unpin(args: argparse.Namespace) -> int:
    client = _client()
    n = 0
    for name, f in _files_of(client, args.names):
        if f.size is not None:
            client.cache.unpin(name, f.size, f.adler32)
            n += 1
    print(f"unpinned {n} file(s)", file=sys.stderr)
    return 0


def _evict(args: argparse.Namespace) -> int:
    client = _client()
    freed = sum(client.cache.forget(name) for name, _ in _files_of(client, args.names))
    print(f"evicted {human_bytes(freed)}", file=sys.stderr)
    return 0


# -- report and quota ------------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", default="user",
                   choices=["user", "group", "dataset", "namespace", "site"])
    p.add_argument("--since", metavar="DURATION", help="traffic of the last e.g. 7d")
    p.add_argument("--tier", action="append", choices=["local", "shared"],
                   help="only this tier (repeatable)")
    p.add_argument("--refresh", action="store_true",
                   help="rescan the tiers instead of using the last eviction pass's summary")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    fmt.add_argument("--html", metavar="FILE", help="write a self-contained page with charts")


def _report_of(args: argparse.Namespace) -> Any:
    import time

    from ..reporting import build_report
    from ..staging import parse_duration

    since = time.time() - parse_duration(args.since) if getattr(args, "since", None) else None
    return build_report(_client(), by=getattr(args, "by", "user"), since=since,
                        refresh=getattr(args, "refresh", False),
                        tiers=getattr(args, "tier", None))


def _report(args: argparse.Namespace) -> int:

    from ..reporting import to_csv, to_html, to_prometheus

    try:
        report = _report_of(args)
    except ValueError as exc:
        print(f"htpdata: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(report.as_dict())
    elif args.csv:
        sys.stdout.write(to_csv(report))
    elif args.prometheus:
        sys.stdout.write(to_prometheus(report))
    elif args.html:
        write_atomically(args.html, to_html(report))
        print(f"wrote {args.html}", file=sys.stderr)
    else:
        for t in report.tiers:
            size = f" of {human_bytes(t.size)}" if t.size else ""
            print_table(f"{t.name} tier ({t.root}): {human_bytes(t.usage.get('total', 0))}"
                        f"{size}, {t.usage.get('entries', 0)} files, "
                        f"{human_bytes(t.usage.get('pinned', 0))} pinned", [], [])
        rows = report.records()
        print_table(f"by {args.by}", ["tier", args.by, "held", "files", "quota", "read from cache",
                                      "fetched upstream", "hit ratio"],
                    [[r["tier"], r[args.by], human_bytes(r["bytes"]), r["files"],
                      human_bytes(r["quota_hard"]) if r["quota_hard"] else "",
                      human_bytes(r["served_memory"] + r["served_local"] + r["served_shared"]),
                      human_bytes(r["upstream"]),
                      f"{r['hit_ratio']:.0%}" if r["hit_ratio"] is not None else ""]
                     for r in rows])
    return 0


def _quota_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="quota_command", metavar="ACTION")
    s = sub.add_parser("set", help="operators: set a user's or group's limit on a tier")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--group")
    s.add_argument("hard", metavar="SIZE", help="hard limit, e.g. 2TB (0 removes the limit)")
    s.add_argument("--soft", metavar="SIZE", help="soft limit (default 90%% of hard)")
    s.add_argument("--tier", default="shared", choices=["local", "shared"])
    p.add_argument("--json", action="store_true")


def _quota(args: argparse.Namespace) -> int:
    from ..config import ByteSize
    from ..reporting import set_quota

    client = _client()
    if args.quota_command == "set":
        try:
            hard = ByteSize.parse(args.hard)
            soft = ByteSize.parse(args.soft) if args.soft else None
        except ValueError as exc:
            print(f"htpdata: error: {exc}", file=sys.stderr)
            return 2
        kind, name = ("users", args.user) if args.user else ("groups", args.group)
        set_quota(client.cache.tier(args.tier), kind, name, hard, soft,
                  client.settings.cache.operators)
        print(f"{args.tier}: {kind[:-1]} {name}: hard {human_bytes(hard)}", file=sys.stderr)
        return 0
    report = _report_of(args)
    me, group = client.cache.user, client.cache.group
    rows = []
    for t in report.tiers:
        for kind, who in (("users", me), ("groups", group)):
            used = int(t.usage.get(f"by_{kind[:-1]}", {}).get(who, 0))
            q = t.quotas.get(kind, {}).get(who)
            rows.append({"tier": t.name, "kind": kind[:-1], "name": who, "bytes": used,
                         "soft": q["soft"] if q else None, "hard": q["hard"] if q else None,
                         "tier_bytes": t.usage.get("total", 0), "tier_size": t.size})
    if args.json:
        print_json(rows)
        return 0
    print_table(f"quota for {me} ({group})", ["tier", "who", "using", "soft", "hard", "state"],
                [[r["tier"], f"{r['kind']} {r['name']}", human_bytes(r["bytes"]),
                  human_bytes(r["soft"]) if r["soft"] else "-",
                  human_bytes(r["hard"]) if r["hard"] else "-",
                  "OVER HARD" if r["hard"] and r["bytes"] > r["hard"] else
                  "over soft" if r["soft"] and r["bytes"] > r["soft"] else "ok"]
                 for r in rows])
    return 0


# -- convert ---------------------------------------------------------------------------------
def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="files or datasets")
    p.add_argument("--to", dest="format", default="parquet", choices=["parquet", "rntuple"])
    p.add_argument("--columns", help="comma-separated names or wildcards (default: all)")
    p.add_argument("--tree", help="the TTree or RNTuple (default: the only one)")
    p.add_argument("--tier", choices=["local", "shared"])
    p.add_argument("--dask", metavar="SCHEDULER", help="convert on a Dask cluster")
    p.add_argument("--json", action="store_true")


def _convert(args: argparse.Namespace) -> int:
    from ..convert import convert_many

    rows = convert_many(args.names, args.format, args.columns, client=_client(),
                        tree=args.tree, tier=args.tier, dask=args.dask)
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            if "error" in r:
                print(f"htpdata: error: {r['error']}", file=sys.stderr)
            else:
                print(r["path"])
    failed = [r for r in rows if "error" in r]
    if len(rows) == 1 and failed:
        return 10
    return 1 if failed else 0


# -- fileset ---------------------------------------------------------------------------------
def _fileset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset or container names")
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    p.add_argument("--tree", default="Events", help="the tree name in every file")


def _fileset(args: argparse.Namespace) -> int:
    import json

    data = _client().fileset(*args.datasets, tree=args.tree)
    if args.output is None:
        print_json(data)
        return 0
    write_atomically(args.output, json.dumps(data, indent=2))
    n = sum(len(v["files"]) for v in data.values())
    print(f"wrote {args.output}: {len(data)} dataset(s), {n} file(s)", file=sys.stderr)
    return 0


# -- config ----------------------------------------------------------------------------------
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _config(args: argparse.Namespace) -> int:
    from ..catalogs import catalog_files
    from ..config import config_path

    client = _client()
    s = client.settings
    creds = client.transports.creds.describe()
    catalogs = [str(p) for p in catalog_files(s)]
    if args.json:
        print_json({"config_file": str(config_path()),
                    "settings": {k: {"value": v, "source": src} for k, v, src in s.items()},
                    "catalogs": catalogs, "credentials": creds})
        return 0
    print_table(f"settings (file: {config_path()})", ["setting", "value", "source"],
                [[k, v, src] for k, v, src in s.items()])
    print_table("catalogs", ["file"], [[c] for c in catalogs])
    print_table("credentials (where found; values are never shown)", ["kind", "source"],
                [[k, v or "-"] for k, v in creds.items()])
    return 0


# -- cache -----------------------------------------------------------------------------------
def _cache_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="what each tier holds of a file")
    info.add_argument("name")
    info.add_argument("--json", action="store_true")
    clear = sub.add_parser("clear", help="remove a file's entries, or everything in a tier")
    clear.add_argument("name", nargs="?")
    clear.add_argument("--tier", choices=["local", "shared"], help="only this tier")
    evict = sub.add_parser("evict", help="run an eviction pass now (watermarks, quotas, pins)")
    evict.add_argument("--tier", choices=["local", "shared"], required=True)
    evict.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    evict.add_argument("--json", action="store_true")


def _cache(args: argparse.Namespace) -> int:
    client = _client()
    cache = client.cache
    if args.cache_command == "info":
        name = str(parse_name(args.name))
        rows = cache.info(name)
        if args.json:
            print_json({"name": name, "tiers": rows})
            return 0
        print_table(f"cache: {name}", ["tier", "held", "bytes", "extents", "complete", "pinned",
                                       "last access"],
                    [[r["tier"], "yes" if r["held"] else "no",
                      f"{human_bytes(r.get('bytes'))} of {human_bytes(r.get('size'))}"
                      if r["held"] else "", r.get("extents", ""),
                      "yes" if r.get("complete") else "", _when(r.get("pinned_until")),
                      _when(r.get("last_access"))] for r in rows])
        return 0
    if args.cache_command == "clear":
        if args.name:
            freed = cache.forget(str(parse_name(args.name)))
            print(f"removed {human_bytes(freed)} held for {args.name}", file=sys.stderr)
        else:
            entries, freed = cache.clear(args.tier)
            print(f"removed {entries} entries, {human_bytes(freed)}", file=sys.stderr)
        return 0
    report = cache.evict(args.tier, dry_run=args.dry_run)
    if report is None:
        print("htpdata: another process is evicting this tier now", file=sys.stderr)
        return 0
    if args.json:
        print_json(report.as_dict())
    else:
        verb = "would free" if args.dry_run else "freed"
        print(f"{args.tier}: {verb} {human_bytes(report.freed)} in {report.removed} entries "
              f"of {report.entries} ({human_bytes(report.total_before)} held, "
              f"{report.pinned} pinned, {report.skipped_busy} busy) in {report.seconds:.1f} s")
    return 0


def _when(t: float | None) -> str:
    if not t:
        return ""
    import datetime

    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


# -- demo ------------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-running", action="store_true",
                   help="leave the demo origin running until Ctrl-C")


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(keep_running=args.keep_running)


Command = tuple[str, Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "resolve": ("show the replicas of a file (or of each file of a dataset)", _resolve_args,
                _resolve),
    "ls": ("list datasets, a dataset's files, or a storage folder", _ls_args, _ls),
    "cat": ("write a file's bytes to standard output", _cat_args, _cat),
    "convert": ("convert ROOT files to Parquet or RNTuple, kept in the cache", _convert_args,
                _convert),
    "report": ("usage, quota and hit-ratio reports of the cache tiers", _report_args, _report),
    "quota": ("my usage and limits; operators: quota set", _quota_args, _quota),
    "fileset": ("write a coffea/uproot fileset (htpdata:// URLs) for datasets", _fileset_args,
                _fileset),
    "config": ("print the effective settings and where each came from", _config_args, _config),
    "cache": ("inspect, clear or evict the cache", _cache_args, _cache),
    "stage": ("prefetch files or datasets into the cache, verified (and pinned)", _stage_args,
              _stage),
    "pin": ("keep files or datasets from eviction", _pin_args, _pin),
    "unpin": ("let files or datasets be evicted again", _names_args, _unpin),
    "evict": ("remove files or datasets from the cache now", _names_args, _evict),
    "demo": ("run the demo: a local XRootD origin, read by logical name", _demo_args, _demo),
}
