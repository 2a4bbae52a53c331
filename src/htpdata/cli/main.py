"""``htpdata`` entry point: parse arguments, call the library, print, exit with a clear code.

A known error prints one line on stderr (``htpdata: error: ...``) and exits with the error's
``exit_code`` (see :mod:`htpdata.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from .._redact import install_filter, redact
from ..errors import HtpdataError
from .commands import COMMANDS

__all__ = ["build_parser", "main"]

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="htpdata",
        description="Read WLCG data by logical name, through catalogs and replicas, "
                    "over XRootD and WebDAV.",
        epilog="Names: cms:/store/..., rucio:SCOPE:NAME, root://host//path, davs://..., "
               "https://..., file:// or a local path. Docs: docs/ in the source tree.")
    parser.add_argument("--version", action="version", version=f"htpdata {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show warnings and progress")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, configure, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="htpdata: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        install_filter(handler)  # every line shown, also other libraries', is redacted
    if args.command is None:
        parser.print_help()
        return 2
    run = COMMANDS[args.command][2]
    try:
        return run(args)
    except HtpdataError as exc:
        if args.debug:  # the traceback, redacted: chained backend errors name request URLs
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        print(f"htpdata: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("htpdata: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `htpdata cat NAME | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        print(f"htpdata: error: {redact(str(exc))}", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script: run, flush what htpdata holds, and exit without the interpreter's
    slow teardown (the XRootD client's threads can hold an exit for a second or more)."""
    code = main()
    try:
        from ..cache.accounting import _flush_all
        from ..client import _default

        if _default is not None and _default._cache is not None:
            _default._cache.close()  # queued cache writes land, the journal flushes
        _flush_all()  # (open storage handles need no goodbye: the process ends here)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # pragma: no cover - never mask the command's own result
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
