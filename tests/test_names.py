"""The name parser: every accepted form, every rejection with the offending part named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htpdata._redact import SECRET_PARAMS
from htpdata.errors import InvalidNameError
from htpdata.names import (
    DID,
    LogicalName,
    PhysicalURL,
    from_fsspec_path,
    parse_name,
    split_credentials,
    to_fsspec_url,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("cms:/store/mc/Run/x.root", LogicalName("cms", "/store/mc/Run/x.root")),
    ("cms:/store//mc/x.root", LogicalName("cms", "/store/mc/x.root")),
    ("rucio:user.jdoe:my.dataset", DID("user.jdoe", "my.dataset")),
    ("rucio:cms:/store/mc/x.root", DID("cms", "/store/mc/x.root")),
    ("root://eos.cern.ch//eos/x.root", PhysicalURL("root://eos.cern.ch//eos/x.root")),
    ("root://host:1094/store/x.root", PhysicalURL("root://host:1094//store/x.root")),
    ("xroot://host//store/x.root", PhysicalURL("root://host//store/x.root")),
    ("davs://h.infn.it:8443/cms/x.root", PhysicalURL("davs://h.infn.it:8443/cms/x.root")),
    ("https://h/x.root", PhysicalURL("https://h/x.root")),
    ("http://127.0.0.1:8080/x.root", PhysicalURL("http://127.0.0.1:8080/x.root")),
    ("file:///data/x.root", PhysicalURL("file:///data/x.root")),
    ("htpdata://cms/store/x.root", LogicalName("cms", "/store/x.root")),
    ("htpdata://rucio/scope:name", DID("scope", "name")),
    ("htpdata://root://h//x.root", PhysicalURL("root://h//x.root")),
])
def test_accepted(text: str, expected: object) -> None:
    assert parse_name(text) == expected


def test_local_paths_become_absolute_file_urls(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_name("x.root") == PhysicalURL(f"file://{tmp_path}/x.root")
    assert parse_name("./a/../x.root") == PhysicalURL(f"file://{tmp_path}/x.root")
    assert parse_name(tmp_path / "y.root") == PhysicalURL(f"file://{tmp_path}/y.root")


@pytest.mark.parametrize(("text", "part"), [
    ("cms:/store/../etc/passwd", ".."),
    ("cms:/store/./x", "."),
    ("cms:/store/%2e%2e/x", ".."),
    ("cms:/store/a%2Fb", "%2F"),
    ("root://h//store/../x", ".."),
    ("rucio:scope:../x", ".."),
    ("cms:/a\x00b", "\\x00"),
    ("cms:/a\nb", "\\n"),
    ("cms:store/x", "store/x"),
    ("bad ns:/x", "bad ns"),
    ("gsiftp://h/x", "gsiftp"),
    ("root:///x", "(empty)"),
    ("root://h:99999//x", "99999"),
    ("rucio:noscope", "noscope"),
    ("rucio::name", "(empty)"),
    ("cms:/", "/"),
])
def test_rejected_naming_the_part(text: str, part: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        parse_name(text)
    assert info.value.part == part
    assert part in str(info.value) or repr(part)[1:-1] in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "htpdata://"])
def test_empty(text: str) -> None:
    with pytest.raises(InvalidNameError, match="empty"):
        parse_name(text)


def test_not_a_string() -> None:
    with pytest.raises(InvalidNameError, match="expected a string"):
        parse_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["cms:/store/x.root", "rucio:s:n", "root://h//x.root",
                                  "davs://h:1/x"])
def test_fsspec_url_round_trip(text: str) -> None:
    name = parse_name(text)
    assert parse_name(to_fsspec_url(name)) == name
    assert from_fsspec_path(to_fsspec_url(name)[len("htpdata://"):]) == name


segment = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                         blacklist_characters="/%"), min_size=1, max_size=12)


@given(st.lists(segment, min_size=1, max_size=6))
def test_parsed_logical_paths_never_escape(segs: list[str]) -> None:
    text = "cms:/" + "/".join(segs)
    try:
        name = parse_name(text)
    except InvalidNameError as exc:
        reason_is_named = exc.part is not None or "empty" in exc.reason
        assert reason_is_named
        return
    assert isinstance(name, LogicalName)
    parts = name.path.split("/")
    assert ".." not in parts
    assert "." not in parts
    assert name.path.startswith("/")
    assert parse_name(str(name)) == name  # canonical form is stable


@given(st.text(max_size=80))
def test_parser_never_crashes(text: str) -> None:
    try:
        parse_name(text)
    except InvalidNameError:
        pass


# -- credentials written into URLs: out of the name, into a separate carrier ---------------
@pytest.mark.parametrize(("text", "canonical", "sent"), [
    ("https://h/x.root?authz=Bearer%20tok123456", "https://h/x.root",
     "https://h/x.root?authz=Bearer%20tok123456"),
    ("https://h/x.root?a=1&access_token=tok123456&b=2", "https://h/x.root?a=1&b=2",
     "https://h/x.root?a=1&b=2&access_token=tok123456"),
    ("davs://h:8443/x.root?BEARER_TOKEN=tok123456", "davs://h:8443/x.root",
     "davs://h:8443/x.root?BEARER_TOKEN=tok123456"),
    ("root://h:1094//x.root?xrd.authz=tok123456", "root://h:1094//x.root",
     "root://h:1094//x.root?xrd.authz=tok123456"),
    ("root://h//x.root?xrd.wantprot=unix&authz=tok123456", "root://h//x.root?xrd.wantprot=unix",
     "root://h//x.root?xrd.wantprot=unix&authz=tok123456"),
    ("https://jdoe:pass123456@h/x.root", "https://h/x.root", "https://jdoe:pass123456@h/x.root"),
    ("root://jdoe@h//x.root", "root://h//x.root", "root://jdoe@h//x.root"),
    ("https://h/x?X-Amz-Signature=abcdef123&X-Amz-Credential=key123456&X-Amz-Date=1",
     "https://h/x?X-Amz-Date=1",
     "https://h/x?X-Amz-Date=1&X-Amz-Signature=abcdef123&X-Amz-Credential=key123456"),
    ("htpdata://https://h/x.root?authz=tok123456", "https://h/x.root",
     "https://h/x.root?authz=tok123456"),
])
def test_credentials_leave_the_name_and_ride_along(text: str, canonical: str, sent: str) -> None:
    name = parse_name(text)
    assert isinstance(name, PhysicalURL)
    assert name.url == str(name) == canonical
    assert name.credential is not None
    assert name.credential.apply(name.url) == sent
    assert name == PhysicalURL(canonical)  # one name, one cache key, whatever the token
    for secret in ("tok123456", "pass123456", "abcdef123", "key123456"):
        assert secret not in repr(name)
        assert secret not in repr(name.credential)
        assert secret not in to_fsspec_url(name)


def test_names_without_credentials_carry_none() -> None:
    name = parse_name("https://h/x.root?a=1")
    assert isinstance(name, PhysicalURL)
    assert name.credential is None
    assert split_credentials("https://h/x.root?a=1") == ("https://h/x.root?a=1", None)
    assert split_credentials("file:///a?authz=x") == ("file:///a?authz=x", None)


def test_an_invalid_url_with_a_token_names_the_url_without_it() -> None:
    with pytest.raises(InvalidNameError) as info:
        parse_name("https://h:99999/x.root?authz=sekrit-value-1")
    assert "sekrit-value-1" not in str(info.value)
    assert "***" not in str(info.value)  # not even masked: the name shown has no token


_secret_key = st.sampled_from([*sorted(SECRET_PARAMS), "AUTHZ", "Access_Token"])
_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", min_size=8, max_size=20)
_plain = st.tuples(st.sampled_from(["a", "b", "page", "xrd.wantprot"]),
                   st.text(alphabet="abc123", min_size=0, max_size=5))


@given(st.lists(st.one_of(st.tuples(_secret_key, _value).map(lambda kv: ("s", *kv)),
                          _plain.map(lambda kv: ("p", *kv))), max_size=6),
       st.sampled_from(["https", "davs", "root"]))
def test_split_then_apply_sends_every_parameter_and_keys_none_of_the_secrets(
        params: list[tuple[str, str, str]], scheme: str) -> None:
    query = "&".join(f"{k}={v}" for _, k, v in params)
    url = f"{scheme}://h:1//x.root" + (f"?{query}" if query else "")
    clean, cred = split_credentials(url)
    for kind, k, v in params:
        if kind == "s":
            assert f"{k}={v}" not in clean
        else:
            assert f"{k}={v}" in clean
    sent = cred.apply(clean) if cred else clean
    assert sorted(sent.partition("?")[2].split("&")) == sorted(query.split("&"))
