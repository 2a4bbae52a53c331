"""Staging: prefetch whole files into a cache tier, verified, resumable, pinned.

- :mod:`.plan`: what a stage will do (pure);
- :mod:`.checksum`: whole-file adler32 from the pieces' (pure);
- :mod:`.transfer`: one file, in parallel pieces, with retries and resume;
- :mod:`.run`: many files on this node or on a Dask cluster, with progress and a summary.
"""

from .plan import Plan, make_plan
from .run import StageRefusedError, StageSummary, parse_duration, stage
from .transfer import FileResult, stage_file

__all__ = ["FileResult", "Plan", "StageRefusedError", "StageSummary", "make_plan",
           "parse_duration", "stage", "stage_file"]
