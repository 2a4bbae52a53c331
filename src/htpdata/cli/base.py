"""What every command module shares: the :class:`Command` record and the default client."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["Command", "client", "complete_names", "json_option", "name_argument"]

Configure = Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, how it adds its options (given the parser and the
    common options, for nested actions), what runs it, and examples for ``--help``."""

    help: str
    configure: Configure
    run: Callable[[argparse.Namespace], int]
    examples: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def epilog(self) -> str | None:
        if not self.examples:
            return None
        width = max(len(c) for c, _ in self.examples)
        lines = ["examples:"]
        for cmd, what in self.examples:
            lines.append(f"  {cmd:<{width}}  {what}" if width <= 60 else f"  {cmd}\n      {what}")
        return "\n".join(lines)


def client() -> Client:
    from ..default import default_client

    return default_client()


def complete_names(prefix: str, **_: Any) -> list[str]:
    """argcomplete: namespaces and catalog datasets and files matching what is typed (no
    storage I/O, no Rucio)."""
    try:
        cats = client().resolver.catalogs
    except Exception:  # completion must never print an error into the shell
        return []
    if ":" not in prefix:
        return [f"{ns}:" for ns in cats.namespaces if ns.startswith(prefix)]
    names = [f"{ns}:{d}" for (ns, d) in cats.datasets]
    names += [f"{ns}:{p}" for (ns, p) in cats.files]
    return sorted(n for n in names if n.startswith(prefix))


def name_argument(p: argparse.ArgumentParser, dest: str, help: str,
                  many: bool = False, metavar: str = "NAME") -> None:
    """A positional name (or names) with catalog completion."""
    action = p.add_argument(dest, nargs="+" if many else None, metavar=metavar, help=help)
    action.completer = complete_names  # type: ignore[attr-defined]


def json_option(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON on standard output (nothing else on stdout)")
