"""Settings precedence, the error hierarchy, redaction and credential discovery."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import htpdata
from htpdata import errors
from htpdata._redact import redact
from htpdata.config import AuthSettings, load_settings
from htpdata.errors import Attempt, ConfigError, StorageNotFoundError, exhausted
from htpdata.transports.auth import discover_credentials


def test_precedence_default_file_env_argument(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[timeouts]\nconnect = 3\nread = 30\n[replicas]\nprefer_sites = ['T2_IT_*']\n")
    env = {"HTPDATA_CONFIG": str(cfg), "HTPDATA_TIMEOUTS_READ": "20"}
    s = load_settings(env, timeouts={"read": 7})
    assert s.timeouts.connect == 3
    assert s.timeouts.read == 7
    assert s.replicas.prefer_sites == ("T2_IT_*",)
    src = dict((k, v) for k, _, v in s.items())
    assert src["timeouts.connect"] == f"file {cfg}"
    assert src["timeouts.read"] == "argument"
    assert src["replicas.block_sites"] == "default"
    assert load_settings(env).sources["timeouts.read"] == "env HTPDATA_TIMEOUTS_READ"


@pytest.mark.parametrize(("text", "words"), [
    ("[timeouts]\nconect = 3\n", "unknown setting"),
    ("[timeout]\nconnect = 3\n", "unknown section"),
    ("[timeouts]\nconnect = 'soon'\n", "could not convert"),
    ("[timeouts]\nconnect = -1\n", "negative"),
    ("[catalogs]\nbundled = 'maybe'\n", "true or false"),
    ("[timeouts\n", "(syntax)"),
])
def test_bad_config_file(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        load_settings({"HTPDATA_CONFIG": str(cfg)})
    assert str(cfg) in str(info.value)


def test_misspelt_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="HTPDATA_TIMEOUTS_CONECT"):
        load_settings({"HTPDATA_TIMEOUTS_CONECT": "3"})
    load_settings({"HTPDATA_DEMO_ROOT_PORT": "1"})  # other HTPDATA_ variables are not settings


def test_error_hierarchy_matches_builtins() -> None:
    assert issubclass(errors.InvalidNameError, ValueError)
    assert issubclass(errors.NameNotFoundError, FileNotFoundError)
    assert issubclass(errors.StorageNotFoundError, FileNotFoundError)
    assert issubclass(errors.StoragePermissionError, PermissionError)
    assert issubclass(errors.StorageTimeoutError, TimeoutError)
    assert issubclass(errors.StorageUnavailableError, ConnectionError)
    assert issubclass(errors.NoReplicaFoundError, FileNotFoundError)
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.HtpdataError)


def test_errors_pickle_for_dask_workers() -> None:
    err = exhausted("cms:/f", [Attempt("root://h//f", "S", StorageNotFoundError(
        "stat failed", url="root://h//f", status="[3011] no such file"))])
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err)
    assert str(again) == str(err)
    assert again.attempts[0].site == "S"


def test_public_api() -> None:
    import importlib

    for sub in ("convert", "reporting", "staging"):  # importing them must not shadow functions
        importlib.import_module(f"htpdata.{sub}")

    for name in htpdata.__all__:
        assert hasattr(htpdata, name), name
    for fn in ("open", "resolve", "files", "fileset", "stage", "report", "converted", "arrays"):
        assert callable(getattr(htpdata, fn)), fn
    assert htpdata.__version__


@pytest.mark.parametrize("text", [
    "davs://h/x?authz=SECRETSECRET",
    "https://user:hunter22@h/x",
    "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.abc.def",
    "https://h/x?access_token=SECRETSECRET&y=1",
])
def test_redaction(text: str) -> None:
    out = redact(text)
    assert "SECRET" not in out
    assert "hunter22" not in out
    assert "eyJ" not in out
    assert "***" in out


def test_token_discovery_order(tmp_path: Path) -> None:
    (tmp_path / "bt_u1000").write_text("from-xdg-token-value\n")
    f = tmp_path / "file-token"
    f.write_text("from-file-token-value")
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert discover_credentials(AuthSettings(), env, uid=1000).token == "from-xdg-token-value"
    env["BEARER_TOKEN_FILE"] = str(f)
    assert discover_credentials(AuthSettings(), env, uid=1000).token == "from-file-token-value"
    env["BEARER_TOKEN"] = "from-env-token-value"
    creds = discover_credentials(AuthSettings(), env, uid=1000)
    assert creds.token == "from-env-token-value"
    assert creds.token_source == "$BEARER_TOKEN"
    assert "from-env" not in repr(creds)
    assert "from-env" not in str(creds.describe())
    assert creds.http_headers() == {"Authorization": "Bearer from-env-token-value"}
    explicit = discover_credentials(AuthSettings(token_file=str(f)), env, uid=1000)
    assert explicit.token == "from-file-token-value"


def test_loaded_tokens_are_scrubbed_from_errors(tmp_path: Path) -> None:
    env = {"BEARER_TOKEN": "tok-6f1e2d3c4b5a"}
    discover_credentials(AuthSettings(), env, uid=1)
    err = StorageNotFoundError("read failed", url="https://h/x",
                               status="server echoed tok-6f1e2d3c4b5a back")
    assert "tok-6f1e2d3c4b5a" not in str(err)


def test_proxy_discovery(tmp_path: Path) -> None:
    proxy = tmp_path / "x509up_u1"
    proxy.write_text("PEM")
    assert discover_credentials(AuthSettings(), {"X509_USER_PROXY": str(proxy)}, uid=1).proxy \
        == proxy
    assert discover_credentials(AuthSettings(proxy=str(proxy)), {}, uid=1).proxy == proxy
