"""``htpdata stage``: plan, then transfer many files in parallel, on one node or a Dask cluster.

``jobs x streams`` piece reads are in flight over all files, at most ``streams`` from one
file; up to ``2 x jobs`` files are open at once (``site_limit`` bounds them per site). With a
``distributed.Client`` the files are spread over the cluster's workers (Dask schedules; htpdata
does not), each writing into the shared tier.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from .._dask import connect
from ..cache.identity import Identity
from ..cache.tier import DiskTier
from ..catalogs import FileEntry
from ..client import Client
from ..config import Duration, Settings
from ..errors import StageRefusedError
from ..names import Name, parse_name
from ..quotas import tightest
from .plan import Plan, make_plan
from .progress import Progress
from .transfer import FileResult, stage_file, transfer

__all__ = ["StageRefusedError", "StageSummary", "parse_duration", "stage",
           "warn_if_token_outlasted"]

log = logging.getLogger("htpdata.stage")


def parse_duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``90s``, ``2w``, ``1y`` (365 days) or a plain
    number of seconds."""
    return float(Duration.parse(text))


@dataclass
class StageSummary:
    plan: Plan
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    pinned_until: float | None = None

    @property
    def staged(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "staged"]

    @property
    def cached(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "cached"]

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        fetched = sum(r.fetched for r in self.results)
        return {"plan": self.plan.as_dict(), "dry_run": self.dry_run,
                "staged": len(self.staged), "already_cached": len(self.cached) + len(
                    self.plan.cached), "failed": len(self.failed),
                "bytes_fetched": fetched, "seconds": self.seconds,
                "rate_mb_s": fetched / self.seconds / 1e6 if self.seconds else None,
                "pinned_until": self.pinned_until,
                "failures": [{"name": r.name, "error": r.error} for r in self.failed],
                "files": [r.as_dict() for r in self.results]}

    def _repr_html_(self) -> str:
        from ..display import stage_summary_html

        return stage_summary_html(self)


def _bounds(client: Client, tier: DiskTier) -> tuple[int | None, int | None, str]:
    """Bytes the tier can still take, bytes the tightest hard quota (the user's or their
    group's) can still take, and that quota's name."""
    cache = client.cache
    tier_free: int | None = None
    used = cache.usage(tier)  # this user's bytes there, own writes and removals included
    if tier.size > 0 and (tier.is_owner or not tier.root.exists()):
        tier_free = max(0, int(client.settings.cache.high_watermark * tier.size) - used)
    try:
        disk_free = shutil.disk_usage(tier.root if tier.root.exists() else
                                      tier.root.parent).free
        tier_free = disk_free if tier_free is None else min(tier_free, disk_free)
    except OSError:
        pass
    left = tightest(cache.room(tier))
    if left is None:
        return tier_free, None, "your hard quota"
    free, owner = left
    name = "your hard quota" if owner.startswith("user:") else \
        f"the hard quota of group {owner.split(':', 1)[1]}"
    return tier_free, max(0, free), name


def plan_stage(client: Client, names: list[str | Name], tier: DiskTier) -> Plan:
    return _plan(client, names, tier)[0]


def _plan(client: Client, names: list[str | Name],
          tier: DiskTier) -> tuple[Plan, dict[str, str]]:
    """The plan, and the dataset each file is staged as: the collection the user named (so
    ``report --by dataset`` keeps a dataset staged by name together, even for files that
    other datasets list too)."""
    files: dict[str, FileEntry] = {}
    staged_as: dict[str, str] = {}
    for n in names:
        collection = client.resolver.is_collection(n)
        if collection:
            client.resolve_all(n)  # one bulk Rucio call fills the metadata cache for all files
        for f in client.files(n):
            files.setdefault(f.name, f)
            if collection:
                staged_as.setdefault(f.name, str(parse_name(n)))
    complete: dict[str, bool] = {}
    partial: dict[str, int] = {}
    for f in files.values():
        if f.size is None:
            continue
        ident = Identity(str(parse_name(f.name)), f.size, f.adler32)
        complete[f.name] = tier.complete(ident)
        partial[f.name] = 0
    tier_free, quota_free, quota_name = _bounds(client, tier)
    return make_plan(files.values(), complete, partial, tier.name, tier_free, quota_free,
                     quota_name), staged_as


def stage(names: list[str | Name] | str | Name, *, client: Client | None = None,
          tier: str | None = None, pin: float | str | None = None, jobs: int = 16,
          streams: int = 4, site_limit: int | None = None, dry_run: bool = False,
          evict: bool = False, progress: str = "none", dask: Any = None,
          retries: int = 3) -> StageSummary:
    """Prefetch whole files (datasets expand) into a cache tier, verified and pinned.

    ``pin`` is a duration (``"7d"`` or seconds) to keep them from eviction. ``dask`` is a
    ``distributed.Client`` or a scheduler address; files then move on its workers.
    """
    from ..default import default_client

    client = client or default_client()
    todo: list[str | Name] = list(names) if isinstance(names, list) else [names]
    target = client.tier(tier)
    plan, staged_as = _plan(client, todo, target)
    if not plan.fits and evict and not dry_run:
        need = plan.fetch_bytes - (plan.headroom or 0)
        client.cache.evict(target.name, need=need)
        plan, staged_as = _plan(client, todo, target)
    summary = StageSummary(plan, dry_run=dry_run)
    warn_if_token_outlasted(client, plan.fetch_bytes)  # before anything starts, dry run too
    if dry_run:
        return summary
    if not plan.fits:
        raise StageRefusedError(f"stage refused: {plan.problem} (use --evict to make room "
                                "from unpinned entries, or stage less)")
    until = time.time() + (parse_duration(pin) if isinstance(pin, str) else pin) if pin \
        else None
    summary.pinned_until = until
    dc, own = connect(dask) if dask is not None else (None, False)  # fails fast, one line
    t0 = time.monotonic()
    try:
        with Progress(len(plan.to_fetch), plan.fetch_bytes, progress) as bar:
            if dc is not None:
                summary.results = _stage_on_dask(dc, client.worker_settings(), plan.to_fetch,
                                                 target.name, streams, retries, bar, staged_as)
            else:
                summary.results = _stage_here(client, plan.to_fetch, target, jobs, streams,
                                              site_limit, retries, bar, staged_as)
    finally:
        if own and dc is not None:
            dc.close()
    summary.seconds = time.monotonic() - t0
    if until is not None:
        for f in [*plan.cached, *(FileEntry(r.name, r.size, r.adler32)
                                  for r in summary.results if r.status != "failed")]:
            if f.size is not None:
                client.cache.pin(str(parse_name(f.name)), f.size, f.adler32, until)
    client.cache.sync()
    return summary


def warn_if_token_outlasted(client: Client, nbytes: int) -> str | None:
    """Say so, once and before anything starts, when moving ``nbytes`` at ``auth.plan_rate``
    takes longer than the bearer token has to live (and htpdata cannot refresh it); returns
    the warning (None: no reason to warn)."""
    from ..transports.tokens import outlasting

    tokens = client.transports.creds.tokens
    if tokens is None or nbytes <= 0:
        return None
    rate = max(1, int(client.settings.auth.plan_rate))
    message = outlasting(nbytes / rate, tokens.seconds_left(), tokens.refresher is not None)
    if message is not None:
        log.warning("%s", message)
    return message


def _stage_here(client: Client, files: list[FileEntry], tier: DiskTier, jobs: int, streams: int,
                site_limit: int | None, retries: int, bar: Progress,
                staged_as: dict[str, str]) -> list[FileResult]:
    return transfer(client, files, tier, jobs=jobs, streams=streams, site_limit=site_limit,
                    retries=retries, on_bytes=bar.add_bytes,
                    on_file=lambda r: bar.file_done(r.status != "failed"), datasets=staged_as)


# -- Dask ---------------------------------------------------------------------------------------
def _remote_stage(settings: Settings, entry: FileEntry, tier: str, streams: int,
                  retries: int, dataset: str | None = None) -> FileResult:
    """Runs on a Dask worker: one htpdata client per worker process and settings."""
    from ..default import worker_client

    client = worker_client(settings)
    result = stage_file(client, entry, client.cache.tier(tier), streams=streams,
                        retries=retries, dataset=dataset)
    client.cache.sync()  # the staged bytes reach the traffic figures
    return result


def _stage_on_dask(dc: Any, settings: Settings, files: list[FileEntry], tier: str,
                   streams: int, retries: int, bar: Progress,
                   staged_as: dict[str, str]) -> list[FileResult]:
    from distributed import as_completed

    futures = [dc.submit(_remote_stage, settings, f, tier, streams, retries,
                         staged_as.get(f.name), pure=False, key=f"htpdata-stage-{i}-{f.name}")
               for i, f in enumerate(files)]
    results = []
    for fut in as_completed(futures):
        r = fut.result()
        results.append(r)
        bar.add_bytes(r.fetched)
        bar.file_done(r.status != "failed")
    return results
