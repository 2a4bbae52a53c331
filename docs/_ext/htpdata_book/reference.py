"""The configuration and command-line references, written at build time from the code itself.

:func:`settings_markdown` walks the settings dataclasses of :mod:`htpdata.config` (their
fields, types, defaults and attribute docstrings, read from the module's source with
:mod:`ast`) and :func:`cli_markdown` walks the ``argparse`` parser of ``htpdata``
(``htpdata.cli.main.build_parser``: every command, its options, help texts and epilog). Both
return MyST Markdown that :mod:`htpdata_book` puts in place of a ``{htpdata-reference}`` block
before the page is parsed, so the pages cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
import re
import textwrap
import typing
from collections.abc import Iterator
from typing import Any

from htpdata import config

__all__ = ["SettingDoc", "cli_markdown", "settings", "settings_markdown"]


@dataclasses.dataclass(frozen=True)
class SettingDoc:
    """One setting as the reference shows it."""

    section: str
    key: str
    kind: str
    default: str
    env: str
    doc: str
    rule: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal right after each annotated field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for stmt, nxt in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _class_doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    # a dataclass without a docstring gets its signature as one
    return "" if doc.startswith(f"{cls.__name__}(") else inspect.cleandoc(doc)


def _size(value: int) -> str:
    if value == 0:
        return "0"
    for unit, factor in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3),
                         ("MiB", 1024**2), ("KiB", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    for unit, factor in (("PB", 1000**5), ("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2),
                         ("kB", 1000)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


# Checks load_settings makes beyond a value's kind (htpdata.config._checked_cache): (what the
# reference says, a value refused, a value accepted); tests/test_docs.py checks both values.
EXTRA_RULES: dict[str, tuple[str, str, str]] = {
    "cache.high_watermark": ("a fraction in (0, 1], not below `cache.low_watermark`", "1.5",
                             "0.95"),
    "cache.low_watermark": ("a fraction in (0, 1], not above `cache.high_watermark`", "0",
                            "0.5"),
    "cache.compact_after": ("at least 2", "1", "2"),
    "cache.fill_ratio": ("a fraction in [0, 1]", "1.5", "0.02"),
    "cache.prefetch_concurrency": ("at least 1", "0", "2"),
    "cache.policy": (f"one of {', '.join(f'`{p}`' for p in config.POLICIES)} (any case)",
                     "mru", "LFU"),
    "cache.trust": (f"one of {', '.join(f'`{t}`' for t in config.TRUST)} (any case)",
                    "nobody", "Group"),
    "replicas.proxy": ("an address such as `root://xcache.site:1094//` or "
                       "`https://xcache.site:8443/` (no path), or empty", "x",
                       "root://xcache.site:1094//"),
    "replicas.proxy_mode": ("`path` or `forward` (any case)", "tunnel", "Forward"),
    "replicas.proxy_timeout": ("more than 0", "0", "5"),
    "replicas.proxy_failures": ("more than 0", "0", "3"),
    "replicas.slow_window": ("more than 0", "0", "5"),
}


def _duration(value: float) -> str:
    for unit, factor in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600),
                         ("m", 60)):
        if value and value % factor == 0:
            return f"{int(value // factor)}{unit}"
    return f"{value:g}"


def _describe(typ: Any, key: str, value: Any) -> tuple[str, str, str]:
    """(kind, default as written in TOML, how values are checked) for one field type."""
    if typ is bool:
        return ("boolean", "true" if value else "false",
                "TOML `true`/`false`, or in a string or variable one of `1`, `true`, `yes`, "
                "`on`, `0`, `false`, `no`, `off` (any case)")
    if typ is config.ByteSize:
        return ("size", f'"{_size(int(value))}"' if value else "0",
                "bytes, or a number with a unit: `20GB`, `512MiB`, `1.5TB` (k, M, G, T, P "
                "are powers of 1000; KiB, MiB, GiB, TiB, PiB of 1024); not negative")
    if typ is config.Duration:
        return ("duration", f'"{_duration(float(value))}"',
                "seconds, or a number with a unit: `90s`, `30m`, `12h`, `7d`, `2w`, `1y` "
                "(365 days); not negative")
    if typ in (int, float):
        return ("integer" if typ is int else "number", repr(value),
                "a number (a TOML number or a string such as `\"10\"`); not negative")
    if typ is str:
        return "string", f'"{value}"', "a string"
    if typing.get_origin(typ) is tuple:
        sep = config.list_separator(key)
        items = ", ".join(f'"{v}"' for v in value)
        return ("list of strings", f"[{items}]",
                f"a TOML array of strings, or one string split on `{sep}` (as in the "
                "environment variable)")
    raise TypeError(f"no description for settings of type {typ!r}")  # pragma: no cover


def settings() -> Iterator[tuple[str, str, list[SettingDoc]]]:
    """``(section, its docstring, its settings)`` for every section, in the code's order."""
    hints = typing.get_type_hints(config.Settings)
    for sec in dataclasses.fields(config.Settings):
        if sec.name == "sources":
            continue
        cls = hints[sec.name]
        docs = _attribute_docs(cls)
        types = typing.get_type_hints(cls)
        default = cls()
        rows = []
        for f in dataclasses.fields(cls):
            kind, shown, rule = _describe(types[f.name], f.name, getattr(default, f.name))
            extra = EXTRA_RULES.get(f"{sec.name}.{f.name}")
            if extra is not None:
                rule = f"{rule}; {extra[0]}"
            rows.append(SettingDoc(sec.name, f.name, kind, shown,
                                   config.env_variable(sec.name, f.name),
                                   docs.get(f.name, ""), rule))
        yield sec.name, _class_doc(cls), rows


def _myst(text: str, indent: str = "  ") -> str:
    """A docstring as MyST: reST literals and roles as code spans, each paragraph on one line,
    paragraphs after the first indented (they continue a definition)."""
    text = re.sub(r":[a-z]+:`([^`]+)`", r"``\1``", text).replace("``", "`")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return f"\n\n{indent}".join(paragraphs)


def settings_markdown(level: int = 2) -> str:
    """The settings reference: one heading per section, one definition per setting."""
    h = "#" * level
    out = []
    for name, doc, rows in settings():
        out += [f"{h} `[{name}]`", ""]
        if doc:
            out += [_myst(doc, indent=""), ""]
        for s in rows:
            out += [f"({s.dotted})=", f"`{s.dotted}`: {s.kind}, default `{s.default}`",
                    f": {_myst(s.doc) or '(undocumented)'}", "",
                    f"  Environment: `{s.env}`. Accepts {s.rule}.", ""]
    return "\n".join(out)


# -- the command line ---------------------------------------------------------------------------

_GLOBAL = {"verbose", "quiet", "debug", "exact_bytes", "help"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    return " ".join(text.split())


def _option_rows(parser: argparse.ArgumentParser, skip_global: bool) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if skip_global and action.dest in _GLOBAL:
            continue
        if action.option_strings:
            meta = ""
            if action.nargs != 0:
                fmt = parser._get_formatter()
                meta = " " + fmt._format_args(action, fmt._get_default_metavar_for_optional(
                    action))
            flags = ", ".join(f"`{o}{meta}`" for o in action.option_strings)
        else:
            fmt = parser._get_formatter()
            flags = f"`{fmt._format_args(action, action.dest)}`"
        help_text = _help_of(parser, action).replace("|", "\\|")
        if action.choices and not isinstance(action.choices, dict):
            choices = ", ".join(f"`{c}`" for c in action.choices)
            if "choices" not in help_text.lower():
                help_text += f" (one of {choices})"
        rows.append(f"| {flags} | {help_text} |")
    if not rows:
        return []
    return ["| option | what it does |", "| --- | --- |", *rows, ""]


def _fenced(text: str) -> list[str]:
    return ["```text", text.rstrip("\n"), "```", ""]


def _command(parser: argparse.ArgumentParser, words: list[str], help_line: str,
             level: int) -> list[str]:
    name = " ".join(words)
    out = [f"({name.replace(' ', '-')})=", f"{'#' * level} `{name}`", ""]
    if help_line:
        out += [help_line[0].upper() + help_line[1:] + ".", ""]
    out += _fenced(parser.format_usage().removeprefix("usage: "))
    if parser.description and " ".join(parser.description.split()) != " ".join(
            help_line.split()):
        out += [" ".join(parser.description.split()), ""]
    out += _option_rows(parser, skip_global=True)
    if parser.epilog:
        out += _fenced(parser.epilog)
    helps = {a.dest: a.help for a in _subparser_action(parser)} if _subcommands(parser) else {}
    for sub_name, sub in _subcommands(parser).items():
        out += _command(sub, [*words, sub_name], helps.get(sub_name) or "", level + 1)
    return out


def _subparser_action(parser: argparse.ArgumentParser) -> list[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action._choices_actions)
    return []


def cli_markdown(level: int = 2) -> str:
    """The command-line reference: the top level, the options every command takes, then one
    heading per command (and per sub-command) with its usage, options and examples."""
    from htpdata.cli.main import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # argparse wraps usage lines to the terminal; fix the width
    try:
        parser = build_parser()
        out = [f"{'#' * level} `htpdata`", ""]
        out += _fenced(parser.format_usage().removeprefix("usage: "))
        out += [" ".join((parser.description or "").split()), ""]
        out += ["Options that every command takes, before or after its name:", ""]
        out += _option_rows(parser, skip_global=False)
        if parser.epilog:
            out += _fenced(parser.epilog)
        helps = {a.dest: a.help for a in _subparser_action(parser)}
        for name, sub in _subcommands(parser).items():
            out += _command(sub, ["htpdata", name], helps.get(name) or "", level)
        return "\n".join(out)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
