"""Stage requests: how data a user stages for a team becomes trusted.

A user's own reads and stages land in the user's own area of the shared tier: nobody else
accepts bytes another user wrote (adler32 is forgeable; ownership is not). For data a team
needs, a user files a *request* instead, a name and nothing else, dropped into the tier's drop
box (``ROOT/drop/q.RANDOM``, a folder only the tier's owner can list)::

    htpdata stage --request cms:/TTJets/RunII/NANOAODSIM      # any user
    htpdata stage --requests --pin 30d                        # the tier's owner, from cron

The owner's run resolves each requested name with the *facility's* catalogs and Rucio, fetches
with the facility's credentials, verifies every file against its adler32 and writes into the
trusted area, which every reader accepts. The user's bytes are never reused. Only logical names
and Rucio DIDs may be requested (a URL would make the facility fetch from wherever the
requester points); a request file that is not a regular file of plausible size, or not
well-formed, is dropped with a line saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cache.fsops import create_exclusive, read_small
from ..errors import CacheWriteError, HtpdataError, UsageError
from ..names import DID, LogicalName, parse_name

if TYPE_CHECKING:
    from ..client import Client
    from .run import StageSummary

__all__ = ["Requests", "request_stage", "serve_requests"]

log = logging.getLogger("htpdata.stage")
REQUEST_LIMIT = 64 * 1024
MAX_NAMES = 1000


def _checked(names: list[str]) -> list[str]:
    out = []
    for n in names:
        parsed = parse_name(n)
        if not isinstance(parsed, LogicalName | DID):
            raise UsageError(f"{n}: only logical names and Rucio DIDs can be requested (the "
                             "facility stages them with its own catalogs), not URLs")
        out.append(str(parsed))
    return out


def request_stage(names: list[str], *, client: Client, tier: str = "shared") -> int:
    """Ask the tier's owner to stage ``names`` into the trusted area; returns how many
    names were requested."""
    if not names or len(names) > MAX_NAMES:
        raise UsageError(f"request between 1 and {MAX_NAMES} names at a time")
    wanted = _checked(names)
    t = client.cache.tier(tier)
    folder = t._drop()
    if folder is None:
        raise CacheWriteError(2, f"cache tier {tier} at {t.root} has no drop box for requests "
                              "(its owner sets the tier up: see docs/cache.md)")
    body = json.dumps({"v": 1, "names": wanted, "t": time.time()}).encode()
    try:
        fd = create_exclusive(folder.fd, f"q.{secrets.token_hex(16)}", 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CacheWriteError(exc.errno or 5, f"cache tier {tier}: cannot leave the request: "
                              f"{exc.strerror or exc}") from exc
    return len(wanted)


@dataclass
class Requests:
    """What :func:`serve_requests` found and did."""

    names: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Request files dropped unread or unparsed (and why)."""
    summary: StageSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"names": self.names, "refused": self.refused,
                "stage": self.summary.as_dict() if self.summary is not None else None}


def serve_requests(*, client: Client, tier: str = "shared", pin: float | str | None = None,
                   jobs: int = 16, streams: int = 4, dry_run: bool = False) -> Requests:
    """As the tier's owner: stage every requested name into the trusted area and remove the
    requests (a name that fails to stage is said in the summary; its request goes too)."""
    from .run import stage

    t = client.cache.tier(tier)
    if not t.is_owner:
        owner = t.owner.uid if t.owner is not None else "?"
        raise UsageError(f"only the owner of {t.root} (uid {owner}) serves stage requests: run "
                         "it as that account")
    folder = t.drop_box()
    out = Requests()
    if folder is None:
        return out
    taken: list[str] = []
    try:
        entries = [e.name for e in folder.names() if e.name.startswith("q.")]
    except OSError:
        entries = []
    for name in sorted(entries):
        got = read_small(folder.fd, name, REQUEST_LIMIT)
        taken.append(name)
        if got is None:
            out.refused.append(f"{name}: not a regular file of at most {REQUEST_LIMIT} bytes")
            continue
        try:
            raw = json.loads(got[0])
            names = _checked([str(n) for n in raw["names"]][:MAX_NAMES])
        except (ValueError, KeyError, TypeError, HtpdataError) as exc:
            out.refused.append(f"{name} (uid {got[1].st_uid}): {exc}")
            continue
        out.names += [n for n in names if n not in out.names]
    for line in out.refused:
        log.warning("stage request refused: %s", line)
    if out.names:
        out.summary = stage(list(out.names), client=client, tier=tier, pin=pin, jobs=jobs,
                            streams=streams, dry_run=dry_run)
    if not dry_run:
        for name in taken:
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=folder.fd)  # the drop box's owner may remove any
    return out
