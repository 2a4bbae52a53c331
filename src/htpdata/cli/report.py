"""Commands for operators and for users' own usage: report, quota."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .args import duration, size
from .base import Command, client, json_option
from .output import Bytes, note, print_json, print_table, write_atomically

__all__ = ["QUOTA", "REPORT"]


def _report_args(p: argparse.ArgumentParser, _: argparse.ArgumentParser) -> None:
    p.add_argument("--by", default="user",
                   choices=["user", "group", "dataset", "namespace", "site"],
                   help="one row per user (default), group, dataset, namespace or site")
    p.add_argument("--since", metavar="DURATION", type=duration,
                   help="traffic of the last e.g. 7d (default: all days kept)")
    p.add_argument("--tier", action="append", choices=["local", "shared"],
                   help="only this tier (repeatable)")
    p.add_argument("--refresh", action="store_true",
                   help="rescan your areas of the tiers instead of using the last pass's "
                        "summary")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="the whole report as JSON (schema htpdata.report/1)")
    fmt.add_argument("--csv", action="store_true", help="the rows as CSV with a header")
    fmt.add_argument("--prometheus", action="store_true",
                     help="Prometheus text format (for a textfile collector)")
    fmt.add_argument("--html", metavar="FILE",
                     help="write a self-contained page (no scripts, SVG charts) to FILE")


def _report_of(args: argparse.Namespace) -> Any:
    import time

    from ..reporting import build_report

    since = time.time() - args.since if getattr(args, "since", None) else None
    return build_report(client(), by=getattr(args, "by", "user"), since=since,
                        refresh=getattr(args, "refresh", False),
                        tiers=getattr(args, "tier", None))


def _ratio(v: float | None) -> str | None:
    return None if v is None else f"{v:.1%}"


def _report(args: argparse.Namespace) -> int:
    from ..reporting import to_csv, to_html, to_prometheus

    report = _report_of(args)
    if args.json:
        print_json(report.as_dict())
        return 0
    if args.csv:
        sys.stdout.write(to_csv(report))
        return 0
    if args.prometheus:
        sys.stdout.write(to_prometheus(report))
        return 0
    if args.html:
        write_atomically(args.html, to_html(report))
        note(f"wrote {args.html}")
        return 0
    tiers = report.tier_totals()
    print_table("tiers", ["tier", "root", "held", "size", "share", "files", "pinned",
                          "read from cache", "fetched upstream", "staged", "hit ratio"],
                [[t["tier"], t["root"], Bytes(t["bytes"]), Bytes(t["size"]) if t["size"]
                  else None, _ratio(t["share"]), t["files"], Bytes(t["pinned"]),
                  Bytes(t["served"]), Bytes(t["upstream"]), Bytes(t["staged"]),
                  _ratio(t["hit_ratio"])] for t in tiers])
    rows = report.records()
    print_table(f"by {args.by}", ["tier", args.by, "held", "files", "share of tier", "quota",
                                  "read from cache", "fetched upstream", "staged",
                                  "hit ratio"],
                [[r["tier"], r[args.by], Bytes(r["bytes"]), r["files"],
                  _ratio(r["share_of_tier"]),
                  Bytes(r["quota_hard"]) if r["quota_hard"] else None,
                  Bytes(r["served_memory"] + r["served_local"] + r["served_shared"]),
                  Bytes(r["upstream"]), Bytes(r["staged"]), _ratio(r["hit_ratio"])]
                 for r in rows])
    return 0


REPORT = Command(
    "usage, quota and hit-ratio reports of the cache tiers", _report_args, _report,
    (("htpdata report", "per tier, then per user"),
     ("htpdata report --by dataset --since 7d", "what was read, by dataset, this week"),
     ("htpdata report --html report.html", "one page for operators"),
     ("htpdata report --prometheus > /var/lib/node_exporter/htpdata.prom", "for monitoring")))


def _quota_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="quota_command", metavar="ACTION")
    s = sub.add_parser("set", help="the tier's owner: set a user's or group's limit",
                       parents=[common],
                       description="Set (or with 0 remove) a user's or group's limit on a "
                                   "tier ('*' is everyone's default). Only the tier's owner "
                                   "or root may (exit 4 otherwise): a quota.json anyone else "
                                   "wrote is ignored.")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the Unix user the limit is for")
    who.add_argument("--group", help="the Unix group the limit is for")
    s.add_argument("hard", metavar="SIZE", type=size,
                   help="hard limit, e.g. 2TB (0 removes the limit)")
    s.add_argument("--soft", metavar="SIZE", type=size,
                   help="soft limit, at most the hard one (default 90%% of hard)")
    s.add_argument("--tier", default="shared", choices=["local", "shared"],
                   help="the tier (default shared)")
    json_option(s, "the quota set")
    json_option(p, "one record per tier for you and your group")


def _quota(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..quotas import limits_for
    from ..reporting import set_quota

    c = client()
    if args.quota_command == "set":
        if args.soft is not None and args.hard > 0 and args.soft > args.hard:
            raise UsageError(f"--soft {args.soft} bytes is above the hard limit {args.hard} "
                             "bytes: the soft limit warns before the hard one refuses")
        kind, name = ("users", args.user) if args.user else ("groups", args.group)
        data = set_quota(c.cache.tier(args.tier), kind, name, args.hard, args.soft)
        q = data[kind].get(name)
        if args.json:
            print_json({"tier": args.tier, "kind": kind[:-1], "name": name,
                        "hard": q["hard"] if q else 0, "soft": q["soft"] if q else 0})
        elif q is None:
            note(f"{args.tier}: {kind[:-1]} {name}: no limit")
        else:
            note(f"{args.tier}: {kind[:-1]} {name}: hard {q['hard']} bytes, soft {q['soft']} "
                 "bytes")
        return 0
    report = _report_of(args)
    me, group = c.cache.user, c.cache.group
    rows = []
    for t in report.tiers:
        for kind, who in (("users", me), ("groups", group)):
            used = int(t.usage.get(f"by_{kind[:-1]}", {}).get(who, 0))
            q = limits_for(t.quotas, kind, who)
            rows.append({"tier": t.name, "kind": kind[:-1], "name": who, "bytes": used,
                         "soft": q["soft"] if q else None, "hard": q["hard"] if q else None,
                         "tier_bytes": t.usage.get("total", 0), "tier_size": t.size})
    if args.json:
        print_json(rows)
        return 0
    print_table(f"quota for {me} ({group})", ["tier", "who", "using", "soft", "hard", "state"],
                [[r["tier"], f"{r['kind']} {r['name']}", Bytes(r["bytes"]),
                  Bytes(r["soft"]) if r["soft"] else None,
                  Bytes(r["hard"]) if r["hard"] else None,
                  "OVER HARD" if r["hard"] and r["bytes"] > r["hard"] else
                  "over soft" if r["soft"] and r["bytes"] > r["soft"] else "ok"]
                 for r in rows])
    return 0


QUOTA = Command(
    "my usage and limits; the tier's owner: quota set", _quota_args, _quota,
    (("htpdata quota", "what you and your group use, and your limits"),
     ("htpdata quota set --user alice 2TB --soft 1.5TB", "the tier's owner: alice's limit"),
     ("htpdata quota set --user '*' 500GB", "everyone's default limit"),
     ("htpdata quota set --group cms 0", "remove the group's limit")))
