"""Commands that put files in the cache, keep them, or take them out: stage, pin, unpin, evict,
cache (info, clear, evict)."""

from __future__ import annotations

import argparse
import datetime
import time
from typing import TYPE_CHECKING, Any

from ..known import lookup, lookup_all
from .args import at_least_one, dask_address, duration
from .base import Command, client, complete_names, json_option, name_argument
from .output import Bytes, error, human_bytes, note, print_json, print_table

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["CACHE", "EVICT", "PIN", "STAGE", "UNPIN"]


# -- stage -----------------------------------------------------------------------------------
def _stage_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    names = p.add_argument("names", nargs="*", metavar="NAME",
                           help="files, datasets or containers")
    names.completer = complete_names  # type: ignore[attr-defined]
    who = p.add_mutually_exclusive_group()
    who.add_argument("--request", action="store_true",
                     help="ask the shared tier's owner to stage these for everyone (a "
                          "request with the names only; see docs/cache.md)")
    who.add_argument("--requests", action="store_true",
                     help="the tier's owner: stage what users requested, into the trusted "
                          "area")
    p.add_argument("--tier", choices=["local", "shared"],
                   help="target tier (default: shared if configured, else local)")
    p.add_argument("--pin", metavar="DURATION", type=duration,
                   help="keep from eviction for e.g. 7d, 12h, 2w")
    p.add_argument("--dry-run", action="store_true",
                   help="plan only: files, bytes, already cached, headroom")
    p.add_argument("--jobs", type=at_least_one, default=16,
                   help="jobs x streams pieces in flight over all files (default 16)")
    p.add_argument("--streams", type=at_least_one, default=4, help="pieces in flight per file (4)")
    p.add_argument("--site-limit", type=at_least_one, default=None,
                   help="files open at once per site (default 2 x jobs)")
    p.add_argument("--evict", action="store_true",
                   help="make room by evicting unpinned entries if it would not fit")
    p.add_argument("--dask", metavar="SCHEDULER", type=dask_address,
                   help="run on a Dask cluster: tcp://host:port (or host:port)")
    json_option(p, "a summary (no progress)")


def _stage(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..staging import request_stage, serve_requests, stage
    from .output import OPTIONS

    c = client()
    if args.requests:
        if args.names:
            raise UsageError("stage --requests takes no names: it stages what users asked for")
        served = serve_requests(client=c, tier=args.tier or "shared", pin=args.pin,
                                jobs=args.jobs, streams=args.streams, dry_run=args.dry_run)
        if args.json:
            print_json(served.as_dict())
        else:
            done = served.summary.as_dict() if served.summary is not None else None
            note(f"{len(served.names)} name(s) requested"
                 + (f"; staged {done['staged']}, already cached {done['already_cached']}, "
                    f"failed {done['failed']}" if done else "")
                 + (f"; {len(served.refused)} request(s) refused" if served.refused else ""))
        return 0 if served.summary is None or served.summary.ok else 1
    if not args.names:
        raise UsageError("stage needs at least one name (or --requests)")
    lookup_all(c, args.names)
    if args.request:
        n = request_stage(args.names, client=c, tier=args.tier or "shared")
        if args.json:
            print_json({"requested": n})
        else:
            note(f"requested {n} name(s); the tier's owner stages them for everyone")
        return 0
    summary = stage(args.names, client=c, tier=args.tier, pin=args.pin, jobs=args.jobs,
                    streams=args.streams, site_limit=args.site_limit, dry_run=args.dry_run,
                    evict=args.evict, dask=args.dask,
                    progress="none" if args.json or OPTIONS.quiet else "auto")
    if args.json:
        print_json(summary.as_dict())
    else:
        p = summary.plan
        if args.dry_run:
            print(f"plan ({p.tier} tier): {len(p.to_fetch)} file(s) to fetch "
                  f"({p.fetch_bytes} bytes, {p.partial_bytes} already there from earlier "
                  f"runs), {len(p.cached)} already cached ({p.cached_bytes} bytes); headroom "
                  f"{p.headroom if p.headroom is not None else 'unbounded'}"
                  + (" bytes" if p.headroom is not None else "")
                  + (f"; WOULD NOT FIT: {p.problem}" if p.problem else ""))
        else:
            d = summary.as_dict()
            rate = f", {d['rate_mb_s']:.1f} MB/s" if d["rate_mb_s"] else ""
            note(f"staged {d['staged']}, already cached {d['already_cached']}, failed "
                 f"{d['failed']}: {d['bytes_fetched']} bytes ({human_bytes(d['bytes_fetched'])}"
                 f") in {summary.seconds:.1f} s{rate}")
            for f in summary.failed:
                error(f"{f.name}: {f.error}")
    if args.dry_run:
        return 0 if summary.plan.fits else 9
    return 0 if summary.ok else 1


STAGE = Command(
    "prefetch files or datasets into the cache, verified (and pinned)", _stage_args, _stage,
    (("htpdata stage demo:/Demo/DiLepton/SIM --pin 7d", "stage a dataset and keep it a week"),
     ("htpdata stage demo:/Demo/DiLepton/SIM --dry-run", "what it would fetch, and if it fits"),
     ("htpdata stage demo:/Demo/DiLepton/SIM --dask tcp://scheduler:8786", "on a Dask cluster"),
     ("htpdata stage demo:/Demo/DiLepton/SIM --json | jq .failed", "for scripts"),
     ("htpdata stage --request cms:/TTJets/RunII/NANOAODSIM", "ask the facility to stage it"),
     ("htpdata stage --requests --pin 30d", "the tier's owner, from cron: stage the requests")),
    "Fetch whole files into a cache tier, each verified against its adler32, resumable after "
    "Ctrl-C, optionally pinned. Refused (exit 9) when it would not fit in the tier or your "
    "quota; exit 1 when some files failed (each named once, with its reason).")


# -- pin, unpin, evict -----------------------------------------------------------------------
def _identities(c: Client, names: list[str]) -> list[tuple[str, int, str | None]]:
    """(canonical name, size, adler32) of every file the names stand for: from the catalogs,
    else from what the cache holds, else one stat of storage."""
    from ..names import parse_name
    from ..reader import ReplicaReader

    out = []
    for known in lookup_all(c, names):
        for f in c.files(known.name):
            name = str(parse_name(f.name))
            size, adler = f.size, f.adler32
            if size is None:
                held = [t for t in c.cache.info(name) if t["held"]]
                if held:
                    size, adler = int(held[0]["size"]), held[0].get("adler32")
                else:
                    size = ReplicaReader(c.resolve(name), c.transports).size()
            out.append((name, size, adler))
    return out


def _pin_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "names", "files or datasets", many=True)
    p.add_argument("--for", dest="duration", type=duration, default=7 * 86400.0,
                   metavar="DURATION", help="how long: e.g. 12h, 7d, 2w, 1y (default 7d)")
    json_option(p, "the pinned files and the time the pin ends")


def _pin(args: argparse.Namespace) -> int:
    c = client()
    until = time.time() + args.duration
    files = _identities(c, args.names)
    for name, size, adler in files:
        c.cache.pin(name, size, adler, until)
    if args.json:
        print_json({"until": until, "files": [{"name": n, "size": s, "adler32": a}
                                              for n, s, a in files]})
    else:
        note(f"pinned {len(files)} file(s) until {_when(until)}")
    return 0


PIN = Command(
    "keep files or datasets from eviction", _pin_args, _pin,
    (("htpdata pin demo:/Demo/DiLepton/SIM --for 2w", "a dataset, two weeks"),
     ("htpdata pin demo:/store/demo/mc/HZZ/uproot-HZZ.root", "one file, a week")),
    "Keep files from eviction until a time. Pins are by content (name, size, adler32): a file "
    "that changes upstream is a new entry. Unknown names are an error (exit 3).")


def _names_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    name_argument(p, "names", "files or datasets", many=True)
    json_option(p, "the files concerned")


def _unpin(args: argparse.Namespace) -> int:
    c = client()
    files = _identities(c, args.names)
    for name, size, adler in files:
        c.cache.unpin(name, size, adler)
    if args.json:
        print_json({"files": [{"name": n, "size": s, "adler32": a} for n, s, a in files]})
    else:
        note(f"unpinned {len(files)} file(s)")
    return 0


UNPIN = Command("let files or datasets be evicted again", _names_args, _unpin,
                (("htpdata unpin demo:/Demo/DiLepton/SIM", "the whole dataset"),))


def _evict(args: argparse.Namespace) -> int:
    from ..names import parse_name

    c = client()
    rows: list[dict[str, Any]] = []
    for known in lookup_all(c, args.names):
        for f in c.files(known.name):
            name = str(parse_name(f.name))
            rows.append({"name": name, "freed": c.cache.forget(name)})
    freed = sum(r["freed"] for r in rows)
    if args.json:
        print_json({"freed": freed, "files": rows})
    else:
        note(f"evicted {freed} bytes ({human_bytes(freed)}) of {len(rows)} file(s)")
    return 0


EVICT = Command("remove files or datasets from the cache now", _names_args, _evict,
                (("htpdata evict demo:/Demo/DiLepton/SIM", "free what the dataset holds"),))


# -- cache -----------------------------------------------------------------------------------
def _cache_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="what each tier holds of a file", parents=[common],
                          description="What each cache tier holds of a file: bytes, extents, "
                                      "complete, pinned, last access. No storage I/O for a "
                                      "file the catalogs or the cache know.")
    name_argument(info, "name", "a file's logical name or URL")
    json_option(info, "one record per tier")
    clear = sub.add_parser("clear", help="remove a file's entries, or everything of yours in a "
                           "tier", parents=[common],
                           description="Remove a file from your cache areas, or with no name "
                                       "everything of yours (what other users own is left "
                                       "alone and counted). With no name it asks on a "
                                       "terminal, and needs --yes otherwise.")
    clear.add_argument("name", nargs="?", help="a file (default: every entry of yours)")
    clear.add_argument("--tier", choices=["local", "shared"], help="only this tier")
    clear.add_argument("--yes", action="store_true",
                       help="do not ask before removing everything (needed when not on a "
                            "terminal)")
    json_option(clear, "what was removed")
    evict = sub.add_parser("evict", help="run an eviction pass now (watermarks, quotas, pins)",
                           parents=[common])
    evict.add_argument("--tier", choices=["local", "shared"], required=True,
                       help="the tier to evict from")
    evict.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    json_option(evict, "the eviction report")


def _cache(args: argparse.Namespace) -> int:
    from ..names import parse_name

    c = client()
    cache = c.cache
    if args.cache_command == "info":
        from ..reporting.held import cache_info

        held = cache_info(c, lookup(c, args.name).name)
        if args.json:
            print_json(held.as_dict())
            return 0
        print_table(f"cache: {held.name}", ["tier", "held", "bytes", "size", "extents",
                                            "complete", "pinned until", "last access"],
                    [[r["tier"], "yes" if r["held"] else "no",
                      Bytes(r["bytes"]) if r["held"] else None,
                      Bytes(r["size"]) if r["held"] else None, r.get("extents"),
                      ("yes" if r.get("complete") else "no") if r["held"] else None,
                      _when(r.get("pinned_until")), _when(r.get("last_access"))]
                     for r in held.tiers])
        return 0
    if args.cache_command == "clear":
        if args.name:
            name = str(parse_name(args.name))
            freed = cache.forget(name)
            result: dict[str, Any] = {"name": name, "freed": freed}
            text = f"removed {freed} bytes held for {name}"
        else:
            if not _confirmed(args):
                return 1
            entries, freed, skipped = cache.clear(args.tier)
            result = {"tier": args.tier, "entries": entries, "freed": freed,
                      "skipped": skipped}
            others = f"; {skipped} left alone (other users own them)" if skipped else ""
            text = f"removed {entries} entries, {freed} bytes ({human_bytes(freed)}){others}"
        if args.json:
            print_json(result)
        else:
            note(text)
        return 0
    report = cache.evict(args.tier, dry_run=args.dry_run)
    if report is None:
        if args.json:
            print_json({"tier": args.tier, "busy": True})
        else:
            note("htpdata: another process is evicting this tier now")
        return 0
    if args.json:
        print_json(report.as_dict())
    else:
        verb = "would free" if args.dry_run else "freed"
        others = f", {report.skipped_foreign} of other users left alone" \
            if report.skipped_foreign else ""
        print(f"{args.tier}: {verb} {report.freed} bytes ({human_bytes(report.freed)}) in "
              f"{report.removed} entries of {report.entries} ({report.total_before} bytes held, "
              f"{report.pinned} pinned, {report.skipped_busy} busy{others}) in "
              f"{report.seconds:.1f} s")
    return 0


def _confirmed(args: argparse.Namespace) -> bool:
    """``cache clear`` with no name removes everything of this user's: asked on a terminal,
    else ``--yes`` is needed (a UsageError, exit 2, says so)."""
    import sys

    from ..errors import UsageError

    if args.yes:
        return True
    where = f"the {args.tier} tier" if args.tier else "every tier"
    if not sys.stdin.isatty():
        raise UsageError(f"cache clear removes everything of yours in {where}; add --yes to "
                         "confirm")
    answer = input(f"remove everything of yours in {where}? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    note("nothing removed")
    return False


def _when(t: float | None) -> str | None:
    if not t:
        return None
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


CACHE = Command(
    "inspect, clear or evict the cache", _cache_args, _cache,
    (("htpdata cache info demo:/store/demo/mc/HZZ/uproot-HZZ.root", "what each tier holds"),
     ("htpdata cache evict --tier shared --dry-run", "what an eviction pass would remove"),
     ("htpdata cache clear demo:/store/demo/mc/HZZ/uproot-HZZ.root", "drop one file"),
     ("htpdata cache clear --tier local --yes", "empty your part of this node's tier")))
