"""Staging: prefetch whole files into a cache tier, verified, resumable, pinned.

- :mod:`.plan`: what a stage will do (pure);
- :mod:`.checksum`: whole-file adler32 from the pieces' (pure);
- :mod:`.transfer`: one file, in parallel pieces, with retries and resume;
- :mod:`.run`: many files on this node or on a Dask cluster, with progress and a summary;
- :mod:`.requests`: users ask, the tier's owner stages into the trusted area.
"""

from .plan import Plan, make_plan
from .requests import Requests, request_stage, serve_requests
from .run import StageRefusedError, StageSummary, parse_duration, stage
from .transfer import FileResult, stage_file

__all__ = ["FileResult", "Plan", "Requests", "StageRefusedError", "StageSummary", "make_plan",
           "parse_duration", "request_stage", "serve_requests", "stage", "stage_file"]
