"""The subcommands, in the order ``htpdata --help`` lists them. Each lives in a small module
by what it is for: :mod:`.read` (find and read), :mod:`.keep` (the cache), :mod:`.report`
(usage and quotas), :mod:`.gateway` (url, serve), :mod:`.tools` (convert, config, demo,
completion)."""

from __future__ import annotations

from .base import Command
from .gateway import SERVE, URL
from .keep import CACHE, EVICT, PIN, STAGE, UNPIN
from .read import CAT, CP, FILESET, LS, RESOLVE
from .report import QUOTA, REPORT
from .tools import COMPLETION, CONFIG, CONVERT, DEMO

__all__ = ["COMMANDS", "Command"]

COMMANDS: dict[str, Command] = {
    "resolve": RESOLVE,
    "ls": LS,
    "cat": CAT,
    "cp": CP,
    "stage": STAGE,
    "pin": PIN,
    "unpin": UNPIN,
    "evict": EVICT,
    "cache": CACHE,
    "fileset": FILESET,
    "url": URL,
    "serve": SERVE,
    "convert": CONVERT,
    "report": REPORT,
    "quota": QUOTA,
    "config": CONFIG,
    "demo": DEMO,
    "completion": COMPLETION,
}
