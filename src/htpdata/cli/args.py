"""Argument types and the options every command takes, for the ``htpdata`` parser.

Each type turns a bad value into argparse's own one-line usage error (exit 2) naming the
option, instead of an exception from deep inside a command.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["at_least_one", "common_options", "dask_address", "duration", "size"]


def at_least_one(text: str) -> int:
    """A whole number >= 1 (a count of files or requests)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or a plain number of seconds."""
    from ..staging import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size(text: str) -> int:
    """A byte count: ``2TB``, ``512GiB`` or a plain number."""
    from ..config import ByteSize

    try:
        return int(ByteSize.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_ADDRESS = re.compile(r"(?:(tcp|tls|inproc|ucx|ws|wss)://)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\])"
                      r"(?::(\d{1,5}))?/?")


def dask_address(text: str) -> str:
    """A Dask scheduler address, ``tcp://host:port`` or ``host:port`` (port 8786 if none);
    checked here so a typo is a usage error, not a traceback from distributed."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None or (m.group(3) is not None and not 0 < int(m.group(3)) < 65536):
        raise argparse.ArgumentTypeError(
            f"expected a scheduler address such as tcp://host:8786 or host:8786, got {text!r}")
    scheme = m.group(1) or "tcp"
    return f"{scheme}://{m.group(2)}:{m.group(3) or 8786}"


def common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``htpdata -v ls X`` and ``htpdata ls X
    -v``). Defaults are suppressed here so a subcommand does not reset what the top level set."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output and diagnostics (anywhere on the command line)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also show informational messages, such as each replica failover")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="show only errors: no progress, no summary lines on standard error")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show debug logs, and the traceback of an error (the exit code stays "
                        "the error's)")
    g.add_argument("--bytes", dest="exact_bytes", action="store_true",
                   default=argparse.SUPPRESS,
                   help="print exact byte counts in tables, also on a terminal (piped output "
                        "always has them)")
    return p
