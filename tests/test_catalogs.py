"""Catalog loading: the bundled catalogs, the format, every validation error with file/key/line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import htpdata
from htpdata.catalogs import bundled_dir, load_catalog, load_catalogs, parse_catalog
from htpdata.config import load_settings
from htpdata.errors import CatalogError, NameNotFoundError, UnknownNamespaceError

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
    assert cat.file("exp", "/store/a.root").adler32 == "0000abcd"


def test_variables_expand_at_resolve_time() -> None:
    cat = parse_catalog('format = 1\n[namespaces.d]\n[sites.S]\nprotocols = [{ scheme = "root",'
                        ' namespace = "d", prefix = "root://localhost:${PORT:-1094}/" }]\n')
    proto = cat.sites["S"].protocols[0]
    assert proto.url_for("/x", {}) == "root://localhost:1094//x"
    assert proto.url_for("/x", {"PORT": "2000"}) == "root://localhost:2000//x"


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
