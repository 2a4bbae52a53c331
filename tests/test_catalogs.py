"""Catalog loading: the bundled catalogs, the format, every validation error with file/key/line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.catalogs import bundled_dir, load_catalog, load_catalogs, parse_catalog
from htpdata.config import load_settings
from htpdata.errors import (
    CatalogError,
    InvalidNameError,
    NameNotFoundError,
    UnknownNamespaceError,
)

GOOD = """
format = 1
[namespaces.exp]
[sites.T2_XX_Site]
preference = 3
protocols = [
  { scheme = "root", namespace = "exp", prefix = "root://se.example.org:1094/" },
  { scheme = "davs", namespace = "exp", rules = [
      { path-match = "/store/user/(.*)", result = "davs://web.example.org/user/$1" },
      { path-match = "/store/(.*)", result = "davs://web.example.org/data/$1" },
  ] },
]
[datasets."/A/B/C"]
namespace = "exp"
files = [ { name = "/store/a.root", size = 10, adler32 = "0000abcd" } ]
"""


def test_bundled_catalogs_load() -> None:
    cat = load_catalogs(load_settings({}))
    assert {"cms", "demo"} <= set(cat.namespaces)
    assert (bundled_dir() / "cms.toml").is_file()


def test_cms_prefers_the_italian_redirector() -> None:
    reps = htpdata.Client().resolve("cms:/store/mc/RunIISummer20UL18NanoAODv9/x.root").replicas
    assert [r.url for r in reps] == [
        "root://xrootd-cms.infn.it//store/mc/RunIISummer20UL18NanoAODv9/x.root",
        "root://cms-xrd-global.cern.ch//store/mc/RunIISummer20UL18NanoAODv9/x.root",
    ]
    assert reps[0].site == "INFN_redirector"


def test_prefix_and_ordered_rules() -> None:
    cat = parse_catalog(GOOD, "good.toml")
    root, davs = cat.sites["T2_XX_Site"].protocols
    assert root.url_for("/store/x.root", {}) == "root://se.example.org:1094//store/x.root"
    assert davs.url_for("/store/user/me/x", {}) == "davs://web.example.org/user/me/x"
    assert davs.url_for("/store/mc/x", {}) == "davs://web.example.org/data/mc/x"
    assert davs.url_for("/other/x", {}) is None
    entry = cat.file("exp", "/store/a.root")
    assert entry is not None
    assert entry.adler32 == "0000abcd"


def test_variables_expand_at_resolve_time() -> None:
    cat = parse_catalog('format = 1\n[namespaces.d]\n[sites.S]\nprotocols = [{ scheme = "root",'
                        ' namespace = "d", prefix = "root://localhost:${HTPDATA_PORT:-1094}/" }]\n')
    proto = cat.sites["S"].protocols[0]
    assert proto.url_for("/x", {}) == "root://localhost:1094//x"
    assert proto.url_for("/x", {"HTPDATA_PORT": "2000"}) == "root://localhost:2000//x"


@pytest.mark.parametrize(("text", "key", "line", "words"), [
    ("format = 2", "format", 1, "unsupported format"),
    ("colour = 1", "colour", 1, "unknown key"),
    ("[sites.S]\npreference = 1", "sites.S", 1, "missing required key 'protocols'"),
    ("[sites.S]\nprotocols = []", "sites.S.protocols", 2, "at least one protocol"),
    ("[sites.S]\npreference = 'high'\nprotocols = []", "sites.S.preference", 2, "integer"),
    ("[sites.S]\nrole = 'boss'\nprotocols = []", "sites.S.role", 2, "role must be"),
    ('[sites.S]\nprotocols = [{ scheme = "gsiftp", namespace = "x", prefix = "gsiftp://h/" }]',
     "sites.S.protocols[0].scheme", 2, "scheme must be"),
    ('[sites.S]\nprotocols = [{ scheme = "root", namespace = "x" }]',
     "sites.S.protocols[0]", None, "exactly one of"),
    ('[sites.S]\nprotocols = [{ scheme = "root", namespace = "x", prefix = "https://h/" }]',
     "sites.S.protocols[0].prefix", 2, "must start with root://"),
    ('[sites.S]\nprotocols = [{ scheme = "root", namespace = "x", prefix = "root://h/../etc" }]',
     "sites.S.protocols[0].prefix", 2, "'..'"),
    ('[sites.S]\nprotocols = [{ scheme = "root", namespace = "x", rules = [\n'
     '  { path-match = "/(a", result = "root://h//$1" }] }]',
     "sites.S.protocols[0].rules[0].path-match", 3, "invalid regular expression"),
    ('[sites.S]\nprotocols = [{ scheme = "root", namespace = "x", rules = [\n'
     '  { path-match = "/a", result = "root://h//$1" }] }]',
     "sites.S.protocols[0].rules[0].result", 3, "only 0 group"),
    ('[datasets."/A"]\nnamespace = "x"\nfiles = [{ name = "/f", adler32 = "xyz" }]',
     'datasets."/A".files[0].adler32', 3, "8 hex digits"),
    ('[datasets."/A"]\nnamespace = "x"\nfiles = [{ name = "/f" }, { name = "/f" }]',
     'datasets."/A".files[1].name', 3, "listed twice"),
    ('[datasets."/A"]\nnamespace = "x"\nfiles = [{ name = "/f", size = -1 }]',
     'datasets."/A".files[0].size', 3, "negative"),
    ('[datasets."A"]\nnamespace = "x"\nfiles = []', 'datasets."A"', None, "absolute path"),
])
def test_validation_errors_name_file_key_and_line(text: str, key: str, line: int | None,
                                                  words: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "bad.toml")
    err = info.value
    assert err.path == "bad.toml"
    assert err.key == key
    assert words in err.problem
    if line is not None:
        assert err.line == line
        assert f"bad.toml:{line}" in str(err)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("format = 1\n[sites.S\n")
    with pytest.raises(CatalogError, match=r"broken.toml:2: not valid TOML"):
        load_catalog(p)


def test_unreadable_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.toml")


def test_undeclared_namespace_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('format = 1\n[sites.S]\nprotocols = [{ scheme = "root", '
                                     'namespace = "ghost", prefix = "root://h/" }]\n')
    with pytest.raises(CatalogError, match="namespace 'ghost' is not declared"):
        load_catalogs(load_settings({}, catalogs={"path": [str(tmp_path)]}))


def test_user_catalog_folder_and_env_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "cfg" / "htpdata" / "catalogs"
    user.mkdir(parents=True)
    (user / "mine.toml").write_text(GOOD)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert "exp" in load_catalogs(load_settings()).namespaces
    extra = tmp_path / "extra.toml"
    extra.write_text(GOOD.replace("exp", "exp2"))
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(extra))
    assert {"exp", "exp2"} <= set(load_catalogs(load_settings()).namespaces)
    monkeypatch.setenv("HTPDATA_CATALOGS_PATH", str(tmp_path / "nope"))
    with pytest.raises(CatalogError, match="no such catalog"):
        load_catalogs(load_settings())


def test_unknown_namespace_and_unmatched_name(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    client = htpdata.Client(catalogs={"path": [str(tmp_path)]})
    with pytest.raises(UnknownNamespaceError, match="unknown namespace 'atlas'") as info:
        client.resolve("atlas:/x")
    assert "exp" in info.value.known
    with pytest.raises(NameNotFoundError, match="excluded by the replica settings"):
        htpdata.Client(catalogs={"path": [str(tmp_path)]},
                       replicas={"protocols": ["davs"]}).resolve("exp:/other/x")
    (tmp_path / "c.toml").write_text(GOOD.replace(
        '{ scheme = "root", namespace = "exp", prefix = "root://se.example.org:1094/" },', ""))
    with pytest.raises(NameNotFoundError, match="no site rule matches"):
        htpdata.Client(catalogs={"path": [str(tmp_path)]}).resolve("exp:/other/x")


def test_rules_cannot_map_outside_the_tree(tmp_path: Path) -> None:
    # A rule that passes a captured '..' through is caught when the URL is re-validated.
    (tmp_path / "c.toml").write_text(
        'format = 1\n[namespaces.exp]\n[sites.S]\nprotocols = [{ scheme = "root", '
        'namespace = "exp", rules = [{ path-match = "/x/(.*)", result = "root://h//d/$1" }] }]\n')
    client = htpdata.Client(catalogs={"path": [str(tmp_path)]})
    assert client.resolve("exp:/x/a").replicas[0].url == "root://h//d/a"


@given(st.text(max_size=200))
def test_loader_never_crashes_on_garbage(text: str) -> None:
    try:
        parse_catalog(text, "fuzz.toml")
    except CatalogError:
        pass


# -- hardening: catalogs written by someone else (issue 14, item 6) -------------------------
def _rules(*rules: tuple[str, str], scheme: str = "root") -> str:
    body = ",\n".join(f"  {{ path-match = '{m}', result = '{r}' }}" for m, r in rules)
    return (f'format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [{{ scheme = "{scheme}", '
            f'namespace = "x", rules = [\n{body}\n] }}]\n')


def _client(tmp_path: Path, text: str) -> htpdata.Client:
    (tmp_path / "c.toml").write_text(text)
    return htpdata.Client(catalogs={"path": [str(tmp_path / "c.toml")]},
                          replicas={"protocols": ["root", "davs", "https", "file"]})


REDOS = [r"/(a+)+b", r"/(a|aa)+b", r"/(a*)*b", r"/(.*a){12}b", r"/((a+)+)+c"]


@pytest.mark.parametrize("pattern", REDOS)
def test_redos_patterns_match_in_linear_time(pattern: str) -> None:
    """Each pattern takes super-linear time in Python's re on '/aaaa...a' (measured: 24 a's
    against '/(a+)+b' take 1 s, and each further 'a' doubles it); with RE2 the resolve answers
    at once. In a child process, so a regression fails in 60 s instead of hanging the suite."""
    code = (
        "import sys, time\n"
        "from htpdata.catalogs import parse_catalog\n"
        "from htpdata.config import load_settings\n"
        "from htpdata.errors import NameNotFoundError\n"
        "from htpdata.resolve import Resolver\n"
        "r = Resolver(load_settings({}), catalogs=parse_catalog(sys.argv[1]))\n"
        "start = time.monotonic()\n"
        "for n in (40, 4000, 4000 - 1):\n"
        "    try:\n"
        "        r.resolve('x:/' + 'a' * n)\n"
        "    except NameNotFoundError:\n"
        "        pass\n"
        "print(time.monotonic() - start)\n")
    p = subprocess.run([sys.executable, "-c", code, _rules((pattern, "root://h//$1"))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # Not a timing assertion: Python's re would need days for 40 a's alone (2**16 s), so any
    # bound far below that tells the engines apart whatever the machine's load.
    assert float(p.stdout) < 30.0


@pytest.mark.parametrize(("pattern", "words"), [
    (r"/(?=a)(.*)", "lookaround"),
    (r"/(a)\1(.*)", "backreferences"),
    ("/" + "a" * 1100 + "(.*)", "longer than 1024"),
    (r"/((a{100}){100}){100}(.*)", "repetition"),
])
def test_patterns_re2_cannot_run_are_refused_on_load(pattern: str, words: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(_rules((pattern, "root://h//$1")), "c.toml")
    assert info.value.key == "sites.S.protocols[0].rules[0].path-match"
    assert words in str(info.value)


def test_python_style_patterns_of_existing_catalogs_still_work() -> None:
    cat = parse_catalog(_rules((r"/+store/(mc|data)/(\w+)/(.*)", "root://h//$1/$2/$3"),
                               ("/(?P<rest>.*)", "root://h//other/$1")))
    proto = cat.sites["S"].protocols[0]
    assert proto.url_for("/store/mc/Run2/x.root", {}) == "root://h//mc/Run2/x.root"
    assert proto.url_for("//store/data/A/b/c", {}) == "root://h//data/A/b/c"
    assert proto.url_for("/else", {}) == "root://h//other/else"
    for p in bundled_dir().glob("*.toml"):
        load_catalog(p)


@pytest.mark.parametrize(("result", "name"), [
    ("file:///data/$1/$2/$3", "x:/u/..-../etc/passwd"),
    ("file:///data/$1$2/$3", "x:/u/.-./etc"),
    ("davs://h/data/$1/$2/$3", "x:/u/..-../etc/passwd"),
    ("root://h//data/$1/$2/$3", "x:/u/..-%2e%2e/etc/passwd"),
    ("file:///data/$1/$3", "x:/u/%2e%2e-x/etc"),
])
def test_a_rule_product_with_dotdot_is_an_invalid_name_never_a_url(
        tmp_path: Path, result: str, name: str) -> None:
    scheme = result.split(":", 1)[0]
    client = _client(tmp_path, _rules((r"/u/(.*)-(.*)/(.*)", result), scheme=scheme))
    with pytest.raises(InvalidNameError, match="rule maps it to an invalid URL"):
        client.resolve(name)
    assert client.resolve("x:/u/a-b/c").replicas[0].url.startswith(f"{scheme}://")


@pytest.mark.parametrize("var", ["BEARER_TOKEN", "BEARER_TOKEN_FILE", "X509_USER_PROXY",
                                 "HTPDATA_AUTH_TOKEN_FILE", "AWS_SECRET_ACCESS_KEY",
                                 "MY_PASSWORD", "PATH", "LD_PRELOAD", "OIDC_AGENT_SESSION"])
@pytest.mark.parametrize("where", ["prefix", "result"])
def test_variables_outside_the_allow_list_are_refused(var: str, where: str) -> None:
    if where == "prefix":
        text = ('format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [{ scheme = "davs", '
                f'namespace = "x", prefix = "davs://h/${{{var}}}/" }}]\n')
        key = "sites.S.protocols[0].prefix"
    else:
        text = _rules(("/(.*)", f"davs://h/$1?t=${{{var}:-x}}"), scheme="davs")
        key = "sites.S.protocols[0].rules[0].result"
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "/shared/catalogs/evil.toml")
    assert info.value.path == "/shared/catalogs/evil.toml"
    assert info.value.key == key
    assert f"${{{var}}} cannot be used" in str(info.value)


def test_allowed_variables_expand_and_names_never_do(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEARER_TOKEN", "eyJ-secret-token-value")
    monkeypatch.setenv("SCRATCH", "/scratch/jdoe")
    client = _client(tmp_path, _rules(("/s/(.*)", "file://${SCRATCH:-/tmp}/$1"),
                                      ("/(.*)", "davs://h/$1"), scheme="file").replace(
        "result = 'davs://h/$1'", "result = 'file:///data/$1'"))
    assert client.resolve("x:/s/a.root").replicas[0].url == "file:///scratch/jdoe/a.root"
    url = client.resolve("x:/${BEARER_TOKEN}/a.root").replicas[0].url
    assert "eyJ-secret-token-value" not in url
    assert url == "file:///data/${BEARER_TOKEN}/a.root"


def test_absurd_nesting_is_a_catalog_error() -> None:
    for text in ("a = " + "[" * 100_000 + "]" * 100_000,
                 "a = " + "{ b = " * 5_000 + "1" + " }" * 5_000):
        with pytest.raises(CatalogError, match=r"nested too deeply|not valid TOML"):
            parse_catalog(text, "deep.toml")


def test_huge_files_and_non_regular_files_are_refused_without_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as f:
        f.truncate(40 << 30)  # sparse: 40 GiB that nobody should read
    start = time.monotonic()
    with pytest.raises(CatalogError, match="larger than 32 MiB"):
        load_catalog(huge)
    assert time.monotonic() - start < 5
    with pytest.raises(CatalogError, match="larger than 32 MiB"):
        parse_catalog("#" * (33 << 20), "big.toml")
    with pytest.raises(CatalogError, match="not a regular file"):
        load_catalog(tmp_path)
    # a FIFO planted as a catalog: opened without blocking (in a child, so a regression
    # fails in 60 s instead of hanging)
    fifo = tmp_path / "planted.toml"
    os.mkfifo(fifo)
    p = subprocess.run([sys.executable, "-c", "import sys\nfrom htpdata.catalogs import "
                        "load_catalog\ntry:\n    load_catalog(sys.argv[1])\nexcept Exception "
                        "as e:\n    print(type(e).__name__, e)", str(fifo)],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.startswith("CatalogError"), p.stderr
    assert "not a regular file" in p.stdout


@pytest.mark.parametrize(("what", "text", "words"), [
    ("rules", _rules(*[(f"/r{i}/(.*)", "root://h//$1") for i in range(1001)]),
     "1001 rules; at most 1000"),
    ("all rules", "format = 1\n[namespaces.x]\n" + "".join(
        f'[sites.S{i}]\nprotocols = [{{ scheme = "root", namespace = "x", rules = [' +
        ",".join(f'{{ path-match = "/{j}", result = "root://h//{j}" }}' for j in range(1000))
        + "] }]\n" for i in range(11)), "rules in this catalog"),
    ("protocols", 'format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [' + ",".join(
        '{ scheme = "root", namespace = "x", prefix = "root://h/" }' for _ in range(65)) + "]\n",
     "65 protocols"),
    ("url", 'format = 1\n[namespaces.x]\n[sites.S]\nprotocols = [{ scheme = "root", '
     f'namespace = "x", prefix = "root://h/{"a" * 5000}" }}]\n', "longer than 4096"),
])
def test_absurd_sizes_are_catalog_errors(what: str, text: str, words: str) -> None:
    start = time.monotonic()
    with pytest.raises(CatalogError, match=words):
        parse_catalog(text, "big.toml")
    assert time.monotonic() - start < 30, what


def test_a_million_rules_is_a_catalog_error_not_a_hang() -> None:
    rule = '{ path-match = "/a/(.*)", result = "root://h//$1" },\n'
    text = _rules(("/b/(.*)", "root://h//$1")).replace("[\n", "[\n" + rule * 1_000_000, 1)
    start = time.monotonic()
    with pytest.raises(CatalogError, match="larger than 32 MiB"):
        parse_catalog(text, "million.toml")
    assert time.monotonic() - start < 5
