"""``htpdata`` entry point: parse arguments, call the library, print, exit with a clear code.

Any error prints one line on stderr (``htpdata: error: ...``) and exits with the error's
``exit_code`` (see :mod:`htpdata.errors` and docs/errors.md); ``--debug`` prints the traceback
as well, and keeps the exit code. ``-v``, ``-q``, ``--debug`` and ``--bytes`` go anywhere on the
command line.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence

from .. import __version__
from .._redact import install_filter, redact
from ..errors import HtpdataError
from .args import common_options
from .commands import COMMANDS, Command
from .output import configure, error

__all__ = ["EXIT_INTERRUPTED", "build_parser", "main"]

EXIT_INTERRUPTED = 130
GLOBAL_FLAGS = ("verbose", "quiet", "debug", "exact_bytes")

EXAMPLES = """\
examples:
  htpdata ls demo:                                   datasets of the demo namespace
  htpdata resolve demo:/Demo/DiLepton/SIM --json     replicas of every file, as JSON
  htpdata cp demo:/Demo/DiLepton/SIM ./data/         copy a dataset's files, verified
  htpdata stage demo:/Demo/DiLepton/SIM --pin 7d     prefetch into the cache and keep it
  htpdata fileset demo:/Demo/DiLepton/SIM -o fs.json a coffea / uproot.dask fileset
  htpdata report --html report.html                  the cache's usage at a glance

Names: cms:/store/..., rucio:SCOPE:NAME, root://host//path, davs://..., https://...,
file:// or a local path. Exit codes: 0 ok, 1 other, 2 usage or invalid name, 3 not found,
4 permission, 5 timeout, 6 unavailable, 7 catalog or config, 8 checksum, 9 stage refused,
10 conversion, 50 cp cannot write its destination, 130 interrupted (docs/errors.md).
Shell completion: htpdata completion --help.
"""


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, cmd: Command,
         common: argparse.ArgumentParser) -> None:
    description = textwrap.fill(cmd.description or cmd.help, 88)
    p = sub.add_parser(name, help=cmd.help, description=description,
                       epilog=cmd.epilog(), parents=[common],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.configure(p, common)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="htpdata", parents=[common], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read WLCG data by logical name, through catalogs and replicas, over\n"
                    "XRootD and WebDAV, with a tiered cache.")
    parser.add_argument("--version", action="version", version=f"htpdata {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        _add(sub, name, cmd, common)
    return parser


def _fail(args: argparse.Namespace | None, message: str, code: int) -> int:
    if args is not None and args.debug:  # redacted: chained backend errors name request URLs
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
    error(message)
    return code


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion (argcomplete): imported only when the shell asks for completions."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _complete(parser)
    args = parser.parse_args(argv)
    for flag in GLOBAL_FLAGS:  # suppressed defaults (see common_options): absent is False
        setattr(args, flag, getattr(args, flag, False))
    level = (logging.DEBUG if args.debug else logging.INFO if args.verbose
             else logging.ERROR if args.quiet else logging.WARNING)
    logging.basicConfig(level=level, format="htpdata: %(levelname)s: %(message)s")
    configure(quiet=args.quiet, exact_bytes=args.exact_bytes)
    for handler in logging.getLogger().handlers:
        install_filter(handler)  # every line shown, also other libraries', is redacted
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except HtpdataError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("htpdata: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `htpdata cat NAME | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        return _fail(args, redact(str(exc)), 1)
    except Exception as exc:  # a bug: still one line (the traceback with --debug)
        return _fail(args, f"internal error: {type(exc).__name__}: {redact(str(exc))} (run "
                           "with --debug for the traceback, and please report it)", 1)


def entry() -> None:
    """The console script: run, then close the default client before the interpreter exits.

    Closing first is what keeps the exit prompt: queued cache writes land and the reader
    records close; the XRootD handles still open are closed concurrently (each close is a round
    trip; a dead server gets at most 5 s), so the XRootD client's own exit handler finds none
    left to close one by one, and its threads stop at once. When every handle is closed, the
    objects alive now are frozen (``gc.freeze``): the interpreter's exit still runs every exit
    handler, flushes and joins its threads, but its last collections no longer walk the whole
    heap, and the XRootD client's exit handler (which scans every object for open files) has
    none to scan: it has nothing to close. That makes a normal exit as quick as ``os._exit``
    was (measured: docs/architecture.md). A handle left open (its server did not answer the
    close) must be closed by that handler while the client's threads still run: then nothing
    is frozen.
    """
    code = main()
    closed = False
    try:
        from ..default import close_default_client

        closed = close_default_client()
    except Exception as exc:  # pragma: no cover - never mask the command's own result
        logging.getLogger("htpdata").debug("closing the client failed: %s", exc)
    if closed:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
