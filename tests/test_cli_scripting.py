"""Scriptable: --json on every command, piped tables with a header and exact bytes, the common
flags anywhere, help with examples for every command and option, shell completion."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htpdata.cli.commands import COMMANDS
from htpdata.cli.main import build_parser

from .conftest import TEST_FILES, TESTDATA, adler32_of

NO_JSON = {"cat": "its output is the file", "completion": "its output is a shell script"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its full name (``cache info``, ``quota set``)."""
    out = []
    todo = [("htpdata", build_parser())]
    while todo:
        name, p = todo.pop()
        out.append((name, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(f"{name} {n}", sub) for n, sub in a.choices.items()]
    return out


def test_every_option_has_help_and_every_command_examples() -> None:
    for name, p in _parsers():
        for a in p._actions:
            if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert a.help, f"{name}: {a.dest} has no help"
            assert a.help != argparse.SUPPRESS, f"{name}: {a.dest} has no help"
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if name == "htpdata" or (leaf and name.count(" ") == 1):
            assert "examples:" in (p.epilog or ""), f"{name} has no examples"


def test_json_on_every_command() -> None:
    for name, p in _parsers():
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        skip = name.split()[-1] in NO_JSON or (has_sub and name != "htpdata quota")
        if name == "htpdata" or skip:
            continue
        assert any("--json" in a.option_strings for a in p._actions), f"{name} has no --json"
    assert set(NO_JSON) <= set(COMMANDS)


@pytest.mark.parametrize("where", ["before", "after"])
def test_common_flags_anywhere(where: str) -> None:
    flags = ["-v", "-q", "--debug", "--bytes"]
    argv = [*flags, "ls", "demo:"] if where == "before" else ["ls", "demo:", *flags]
    args = build_parser().parse_args(argv)
    assert args.verbose
    assert args.quiet
    assert args.debug
    assert args.exact_bytes
    nested = build_parser().parse_args(["cache", "info", "x:/y", "--debug"])
    assert nested.debug


def test_help_runs_for_every_command() -> None:
    for name in COMMANDS:
        proc = run(name, "--help")
        assert proc.returncode == 0, name
        assert b"examples:" in proc.stdout or name == "completion"


def test_completion_script_and_names() -> None:
    assert b"complete" in run("completion", "bash").stdout
    assert b"compdef htpdata" in run("completion", "zsh").stdout

    def complete(line: str, tmp: Path) -> list[str]:
        out = tmp / "completions"
        subprocess.run([str(Path(sys.executable).parent / "htpdata")], timeout=60,
                       env={**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n",
                            "COMP_LINE": line, "COMP_POINT": str(len(line)),
                            "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}, check=True)
        return out.read_text().split("\n")

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        assert [c.strip() for c in complete("htpdata st", Path(d))] == ["stage"]
        assert "demo:" in [c.strip() for c in complete("htpdata ls de", Path(d))]
        assert "demo:/Demo/DiLepton/SIM" in [c.strip() for c in
                                             complete("htpdata stage demo:/Demo/Di", Path(d))]


@pytest.mark.xrootd
def test_piped_tables_have_a_header_and_exact_bytes(catalog_dir: Path, tmp_path: Path) -> None:
    env = {"HTPDATA_CACHE_LOCAL_DIR": str(tmp_path / "cache")}
    out = run("ls", "test:/Test/All", env=env).stdout.decode().splitlines()
    assert out[0].split("\t") == ["type", "size", "adler32", "files", "name"]
    rows = {r.split("\t")[4]: r.split("\t") for r in out[1:]}
    for n in TEST_FILES:
        row = rows[f"test:/store/test/{n}"]
        assert int(row[1]) == (TESTDATA / n).stat().st_size  # exact, not "377.6 kB"
        assert row[2] == adler32_of(TESTDATA / n)  # ls shows adler32
    folder = run("ls", "test:/store/test/", "-c", env=env).stdout.decode().splitlines()
    assert folder[0].startswith("type\tsize\tadler32")
    assert all(len(r.split("\t")[2]) == 8 for r in folder[1:])  # checksums from the catalog
    resolved = run("resolve", "test:/Test/All", env=env).stdout.decode().splitlines()
    assert resolved[0].split("\t")[:2] == ["file", "#"]
    # a Jupyter kernel's `!htpdata ls X | awk`: FORCE_COLOR=1 makes rich think it is on a
    # terminal, but standard output is a pipe, so the rows are still tab-separated
    forced = run("ls", "test:/Test/All", env={**env, "FORCE_COLOR": "1"}).stdout.decode()
    assert forced.splitlines()[0].split("\t") == ["type", "size", "adler32", "files", "name"]

    # The commands that had no --json: each prints JSON and nothing else on stdout.
    name = f"test:/store/test/{TEST_FILES[0]}"
    for args in (["pin", name, "--for", "1h"], ["unpin", name], ["evict", name],
                 ["cache", "info", name], ["cache", "clear", name], ["quota"],
                 ["report"], ["config"], ["ls", "test:"]):
        proc = run(*args, "--json", env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        json.loads(proc.stdout)
    quiet = run("-q", "pin", name, env=env)
    assert quiet.returncode == 0
    assert quiet.stderr == b""
