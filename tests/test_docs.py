"""The book in docs/ builds offline, runs every example against the demo site, fails when an
example fails, and reads well in a browser (docs/contributing.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

pytestmark = pytest.mark.docs

# Pages whose screenshots are checked: the landing page, a page of runnable examples, the
# generated references, and the pages with pictures (every page is checked for overflow).
SCREENSHOT_PAGES = ("index", "quickstart", "cli-reference", "settings", "reports", "benchmarks")


def _need_book_tools() -> None:
    for module in ("sphinx", "myst_nb", "sphinx_book_theme", "ipykernel"):
        pytest.importorskip(module)
    if shutil.which("xrootd") is None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("the book's examples need xrootd (Debian xrootd-server)")
        pytest.skip("the book's examples need xrootd (Debian xrootd-server)")


def _build(src: Path, out: Path, pidfile: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``sphinx -W -T`` (warnings are errors; a failure prints its traceback, with the cell)."""
    env = {**os.environ, "HTPDATA_BOOK_PIDFILE": str(pidfile)}
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("sphinx-err-*.log"))
    try:
        return subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-T", "-q", "-b", "html",
             str(src), str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    finally:  # the crash log a failed build leaves (its traceback is in our output already)
        for log in set(tmp.glob("sphinx-err-*.log")) - before:
            log.unlink(missing_ok=True)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole book, built once for this module: every page executed."""
    _need_book_tools()
    out = tmp_path_factory.mktemp("book") / "html"
    pidfile = out.parent / "site.pid"
    t0 = time.monotonic()
    proc = _build(DOCS, out, pidfile, timeout=1200)
    took = time.monotonic() - t0
    print(f"\nbook built in {took:.0f} s")
    assert proc.returncode == 0, f"the book failed to build:\n{proc.stdout}\n{proc.stderr}"
    pid = int(pidfile.read_text())
    assert _gone(pid), f"the demo site (pid {pid}) is still running after the build"
    return out


@pytest.mark.timeout(1500)
def test_book_builds_and_its_examples_ran(book: Path) -> None:
    for page in ("index", "quickstart", "settings", "cli-reference"):
        assert (book / f"{page}.html").is_file(), page
    quickstart = (book / "quickstart.html").read_text()
    # real outputs of the demo site, not text written by hand
    assert "8f4a25d2" in quickstart
    assert "DEMO_ORIGIN" in quickstart
    assert re.search(r"root://localhost:\d+//store/demo/mc/HZZ/uproot-HZZ.root", quickstart)
    assert "cell_output" in quickstart
    # the figures are pictures (a matplotlib Figure alone shows as its text repr)
    for page, plots in (("benchmarks", 3), ("reliability", 1), ("reports", 1)):
        text = (book / f"{page}.html").read_text()
        assert len(re.findall(r'<img [^>]*src="_images/', text)) >= plots, page
        assert "&lt;Figure size" not in text, page
    # the cache caught a damaged pack; the operators page ran as real users (as root)
    assert "damaged pack" in (book / "cache.html").read_text()
    if os.geteuid() == 0:
        operators = (book / "operators.html").read_text()
        assert "htpcache:htpcms" in operators
        assert "planted by another user" in operators


@pytest.mark.timeout(1500)
def test_generated_references_cover_every_setting_and_command(book: Path) -> None:
    from htpdata.cli.main import build_parser
    from htpdata_book.reference import _subcommands, settings

    text = re.sub(r"<[^>]+>", "", (book / "settings.html").read_text())
    for _, _, rows in settings():
        for s in rows:
            assert s.doc, f"{s.dotted} has no docstring in htpdata.config"
            assert s.dotted in text, s.dotted
            assert s.env in text, s.env
    cli = re.sub(r"<[^>]+>", "", (book / "cli-reference.html").read_text())
    parser = build_parser()
    for name, sub in _subcommands(parser).items():
        assert f"htpdata {name}" in cli, name
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in cli, f"htpdata {name} {opt}"


def test_settings_reference_rules_hold() -> None:
    """What the reference says each kind of setting accepts is what load_settings does."""
    pytest.importorskip("sphinx")  # htpdata_book is a Sphinx extension
    from htpdata.config import load_settings
    from htpdata.errors import ConfigError
    from htpdata_book.reference import EXTRA_RULES, settings

    bad = {"boolean": "maybe", "size": "12XB", "number": "-1", "integer": "-1",
           "duration": "3 parsecs"}
    good = {"boolean": "yes", "size": "1.5TB", "number": "10", "integer": "10",
            "duration": "12h", "string": "x", "list of strings": "a:b"}
    for _, _, rows in settings():
        for s in rows:
            value = EXTRA_RULES[s.dotted][2] if s.dotted in EXTRA_RULES else good[s.kind]
            if s.kind == "list of strings":
                sep = ":" if "`:`" in s.rule else ","
                value = f"a{sep}b"
                got = getattr(getattr(load_settings({s.env: value}), s.section), s.key)
                assert got == ("a", "b"), s.dotted
            else:
                load_settings({s.env: value})
            if s.kind in bad:
                with pytest.raises(ConfigError):
                    load_settings({s.env: bad[s.kind]})
            if s.dotted in EXTRA_RULES:
                assert EXTRA_RULES[s.dotted][0] in s.rule
                with pytest.raises(ConfigError):
                    load_settings({s.env: EXTRA_RULES[s.dotted][1]})


@pytest.mark.timeout(600)
def test_a_failing_example_fails_the_build(tmp_path: Path) -> None:
    """A copy of the book's machinery with one page whose cell raises, then one whose command
    exits non-zero: each build fails, naming the cell; the demo site is stopped either way."""
    _need_book_tools()
    src = tmp_path / "docs"
    src.mkdir()
    for name in ("conf.py",):
        shutil.copy(DOCS / name, src / name)
    for folder in ("_ext", "_static"):
        shutil.copytree(DOCS / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    header = (DOCS / "quickstart.md").read_text().split("# Quickstart", 1)[0]
    setup = ('```{code-cell} python\n:tags: [remove-cell]\nimport os, sys; '
             'sys.path.insert(0, os.path.abspath("_ext"))\nfrom htpdata_book import page\n'
             'page.setup("broken")\n```\n')
    (src / "index.md").write_text("# Broken\n\n```{toctree}\nbroken\n```\n")
    for cell, expect in (("1 / 0", "ZeroDivisionError"),
                         ("!htpdata ls demo:/Demo/Nope", "returned non-zero exit status 3")):
        (src / "broken.md").write_text(f"{header}# A broken page\n\n{setup}\n"
                                       f"```{{code-cell}} python\nprint('fine')\n```\n\n"
                                       f"```{{code-cell}} python\n{cell}\n```\n")
        pidfile = tmp_path / "site.pid"
        proc = _build(src, tmp_path / "html", pidfile, timeout=300)
        assert proc.returncode != 0, f"the build passed with a failing cell: {cell}"
        assert expect in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert _gone(int(pidfile.read_text()))
    # and the same page with the command's failure shown on purpose builds
    (src / "broken.md").write_text(f"{header}# A page showing an error\n\n{setup}\n"
                                   "```{code-cell} python\n!htpdata ls demo:/Demo/Nope; "
                                   "echo \"exit code $?\"\n```\n")
    proc = _build(src, tmp_path / "html", tmp_path / "site.pid", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exit code 3" in (tmp_path / "html" / "broken.html").read_text()


@pytest.mark.timeout(1500)
def test_pages_in_chromium(book: Path) -> None:
    """A few pages as a reader sees them at 1200 px: not blank, no console errors, and no
    code block wider than its box."""
    from htpdata.testing.browser import Browser, chromium_path

    if chromium_path() is None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("chromium is not installed (Debian package chromium)")
        pytest.skip("chromium is not installed")
    overflow = ("Array.from(document.querySelectorAll('pre')).filter(p => p.scrollWidth > "
                "p.clientWidth + 1).map(p => p.textContent.split('\\n').sort((a, b) => "
                "b.length - a.length)[0])")
    pages = sorted(p.stem for p in book.glob("*.html") if p.stem not in ("genindex", "search"))
    assert set(SCREENSHOT_PAGES) <= set(pages)
    wide = {}
    with Browser() as browser:
        for page in pages:
            view = browser.view(book / f"{page}.html", 1200, 900,
                                evaluate={"overflow": overflow,
                                          "text": "document.body.innerText.length"})
            assert not view.errors, (page, view.errors)
            if view.values["overflow"]:
                wide[page] = view.values["overflow"]
            if page in SCREENSHOT_PAGES:
                assert view.values["text"] > 500, page
                assert _colours(view.png) > 10, f"{page}: the screenshot is blank"
    assert not wide, f"code blocks wider than their box at 1200 px: {wide}"


def _colours(png: bytes) -> int:
    """Distinct byte values in a sample of the PNG's pixels (1 or 2 for a blank page)."""
    import struct
    import zlib

    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat)[::97]))
