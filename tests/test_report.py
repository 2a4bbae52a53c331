"""Reports and quotas over real cache tiers filled by real reads from several users."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

import htpdata
from htpdata.reporting import build_report, to_csv, to_html, to_prometheus
from htpdata.testing import XRootDServer

from .conftest import TEST_FILES, Sections

pytestmark = pytest.mark.xrootd
WORKER = str(Path(__file__).with_name("cache_worker.py"))


@pytest.fixture
def filled(catalog_dir: Path, tmp_path: Path) -> Sections:
    """A shared tier read in separate processes: two files, one of them twice, and a third.
    (Usage is counted by the files' owners; the split between real users is tested in
    tests/test_tenants_cache.py, which runs as real Unix users.)"""
    shared = tmp_path / "shared"
    base: dict[str, object] = {"local_dir": "off", "shared_dir": str(shared)}
    for name in (TEST_FILES[0], TEST_FILES[1], TEST_FILES[2], TEST_FILES[0]):
        proc = subprocess.run([sys.executable, WORKER, json.dumps({"cache": base}),
                               f"test:/store/test/{name}", json.dumps([[0, 1000]])],
                              capture_output=True, env=os.environ.copy(), timeout=120)
        assert proc.returncode == 0, proc.stderr
    return {"cache": base}


def test_report_by_user_dataset_and_hit_ratio(filled: Sections) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    with htpdata.Client(**filled) as c:
        rep = build_report(c, by="user", refresh=True)
        rows = {r["user"]: r for r in rep.records()}
        assert set(rows) == {me}
        assert rows[me]["files"] == 3
        assert rows[me]["served_shared"] >= 1000  # the second read was a hit
        assert 0 < rows[me]["hit_ratio"] < 1
        by_ds = build_report(c, by="dataset").records()
        assert {r["dataset"] for r in by_ds} == {"test:/Test/All"}
        data = rep.as_dict()
        assert data["schema"] == "htpdata.report/1"
        assert {"tiers", "records", "daily", "top_datasets", "generated"} <= set(data)
        assert data["tiers"][0]["files"] == 3
        assert data["tiers"][0]["coldest"]
        assert data["daily"]
        assert data["daily"][0]["upstream"] > 0
        assert to_csv(rep).splitlines()[0].startswith("tier,user,bytes,files")
        prom = to_prometheus(rep)
        sample = re.compile(r'^htpdata_[a-z_]+\{[^}]*\} [0-9.e+-]+$')
        for line in prom.splitlines():
            assert line.startswith("# ") or sample.match(line), line
        assert f'htpdata_cache_owner_bytes{{tier="shared",user="{me}"}}' in prom


def test_report_cli_json_csv_and_errors(filled: Sections, tmp_path: Path) -> None:
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_CACHE_SHARED_DIR": str(filled["cache"]["shared_dir"])}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "htpdata", *args], capture_output=True,
                              env=env, timeout=120)

    out = run("report", "--json", "--since", "7d", "--by", "group")
    assert out.returncode == 0, out.stderr
    group = grp.getgrgid(os.getgid()).gr_name
    assert {r["group"] for r in json.loads(out.stdout)["records"]} == {group}
    assert run("report", "--csv").stdout.startswith(b"tier,user,")
    assert run("report", "--since", "soon").returncode == 2
    quota = json.loads(run("quota", "--json").stdout)
    assert {r["kind"] for r in quota} == {"user", "group"}


def test_quota_set_by_the_owner_and_enforced(filled: Sections) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_CACHE_SHARED_DIR": str(filled["cache"]["shared_dir"])}
    proc = subprocess.run([sys.executable, "-m", "htpdata", "quota", "set", "--user", me,
                           "100"], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with htpdata.Client(**filled) as c:
        assert c.cache.usage(c.cache.tier("shared")) > 100
        report = c.cache.evict("shared")
        assert report is not None
        assert report.removed >= 1
        rows = {r["user"]: r for r in build_report(c, by="user", refresh=True).records()}
        assert rows.get(me, {"bytes": 0})["bytes"] <= 100
        assert c.cache.usage(c.cache.tier("shared")) <= 100


def test_everyones_default_limit_is_shown_as_the_users_own(filled: Sections) -> None:
    """A user covered only by the '*' row sees that limit in ``htpdata quota`` and the report,
    as eviction and admission apply it."""
    me = pwd.getpwuid(os.getuid()).pw_name
    env = {**os.environ, "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_CACHE_SHARED_DIR": str(filled["cache"]["shared_dir"])}
    proc = subprocess.run([sys.executable, "-m", "htpdata", "quota", "set", "--user", "*",
                           "5GB"], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = subprocess.run([sys.executable, "-m", "htpdata", "quota", "--json"],
                           capture_output=True, env=env, timeout=60)
    rows = {(r["tier"], r["kind"]): r for r in json.loads(shown.stdout)}
    assert rows[("shared", "user")]["name"] == me
    assert rows[("shared", "user")]["hard"] == 5 * 10**9
    assert rows[("shared", "group")]["hard"] is None  # no group row, no group default
    with htpdata.Client(**filled) as c:
        mine = {r["user"]: r for r in build_report(c, by="user", refresh=True).records()
                if r["tier"] == "shared"}
    assert mine[me]["quota_hard"] == 5 * 10**9


def test_non_operator_cannot_set_quotas(filled: Sections,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """As a user who does not own the tier (the process's uid is what is changed here; the
    real-user version runs in tests/test_tenants_cache.py)."""
    from htpdata.cli.main import main

    monkeypatch.setenv("HTPDATA_CACHE_LOCAL_DIR", "off")
    monkeypatch.setenv("HTPDATA_CACHE_SHARED_DIR", str(filled["cache"]["shared_dir"]))
    htpdata.reset_default_client()
    monkeypatch.setattr(os, "getuid", lambda: 65534)
    monkeypatch.setattr(os, "getgroups", lambda: [])
    assert main(["quota", "set", "--user", "x", "1TB"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("htpdata: error: only the owner of")
    assert "\n" not in err


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def _chromium(args: list[str], page: Path) -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
            pytest.fail("chromium is not installed (Debian package chromium)")
        pytest.skip("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="htpdata-chromium-")
    try:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", *args, page.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_html_report_renders_in_chromium(filled: Sections, tmp_path: Path) -> None:
    """The page an operator opens: not blank, no console errors, and the answers are on it as
    numbers: shares by user, hit ratio, what is hot, what goes next, which quota is over."""
    from htpdata.reporting.quota import set_quota

    me = pwd.getpwuid(os.getuid()).pw_name
    with htpdata.Client(**filled) as c:
        tier = c.cache.tier("shared")
        set_quota(tier, "users", me, 100, 50)  # this user is over it
        set_quota(tier, "users", "nobody", 10**12, None)
        report = build_report(c, by="user", refresh=True)
        page = to_html(report)
        totals = report.tier_totals()[0]
        usage = report.tiers[0].usage
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    shot = tmp_path / "shot.png"
    proc = _chromium(["--window-size=1000,1400", f"--screenshot={shot}"], html_file)
    assert shot.exists(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    width, height, raw = _png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1400)
    assert len(set(raw[::7])) > 10, "the screenshot is blank"

    dom = _chromium(["--dump-dom"], html_file).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    assert f"{totals['hit_ratio']:.1%}" in text  # the hit ratio, as a number
    share = usage["by_user"][me] / usage["total"]
    assert f"{me} ({share:.0%})" in text  # share of the volume by user
    assert "quota(s) near or over their limit" in text
    assert re.search(rf"user\s+{me}\s+[\d.]+ kB\s+50 B\s+100 B\s+[\d.]+%\s+OVER HARD", text), text
    assert "test:/Test/All" in text  # what is hot
    coldest = usage["coldest"][0]["name"]
    assert coldest in text  # what goes next


def test_staged_bytes_and_a_dataset_staged_by_name(tmp_path: Path,
                                                    origin: XRootDServer) -> None:
    """A dataset staged by name is one row of `report --by dataset`, even when another dataset
    lists the same files; its bytes are in the traffic figures as staged, not as reads."""
    from .conftest import TESTDATA, catalog_text

    text = catalog_text([("SITE_A", origin, 1)])
    files = text[text.index('[datasets."/Test/All"]'):].split("files = [", 1)[1]
    text += f'\n[datasets."/Test/Also"]\nnamespace = "test"\nfiles = [{files}'  # same files
    cat = tmp_path / "t.toml"
    cat.write_text(text)
    settings: Sections = {"catalogs": {"path": [str(cat)]},
                          "auth": {"ca_file": str(origin.cert)},
                          "cache": {"local_dir": "off", "shared_dir": str(tmp_path / "shared")}}
    total = sum((TESTDATA / n).stat().st_size for n in TEST_FILES)
    with htpdata.Client(**settings) as c:
        assert c.resolver.dataset_of(f"test:/store/test/{TEST_FILES[0]}") == "test:/Test/Also"
        assert htpdata.stage("test:/Test/All", client=c).ok
        rows = build_report(c, by="dataset", refresh=True).records()
        assert [r["dataset"] for r in rows] == ["test:/Test/All"]
        (row,) = rows
        assert row["files"] == len(TEST_FILES)
        # held bytes are what the packs take on disk: the data, and one 4 KiB head each
        assert total <= row["bytes"] <= total + 4096 * len(TEST_FILES)
        assert row["staged"] == total
        assert row["upstream"] == 0
        assert row["hit_ratio"] is None  # nothing was read yet: staging is not a read
        (tier,) = build_report(c).tier_totals()
        assert tier["staged"] == total
