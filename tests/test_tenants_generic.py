"""Hostile co-tenants on one facility, whatever the cache's on-disk format.

Real Unix users (``tenants`` fixture: htpalice and htpbob physicists, htpmallory hostile, all in
group htpcms; htpcache the tier's owner; htpeve outside the group) run htpdata against a shared
tier set up as docs/cache.md prescribes, a real XRootD origin and a real token-protected origin.
Each test asserts the exact outcome. The attacks that depend on the cache's format and trust
model are in tests/test_tenants_cache.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from htpdata.testing import XRootDServer
from htpdata.testing.hostile import HUGE, KINDS, plant, tree
from htpdata.testing.tokens import TokenIssuer, TokenOrigin, write_token_file
from htpdata.testing.users import Tenants, UnixUser

from .conftest import TESTDATA, adler32_of, catalog_text
from .figures import check

pytestmark = [pytest.mark.tenants, pytest.mark.xrootd]

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
WANT = (TESTDATA / NANO).read_bytes()


def _folder(tenants: Tenants, name: str, group_writable: bool = False) -> Path:
    """A folder every tenant can read; group-writable (setgid) like a facility's shared one."""
    path = tenants.tmp(name)
    if group_writable:
        os.chown(path, 0, tenants.gid)
        path.chmod(0o2775)
    return path


def _facility_catalog(tenants: Tenants, server: XRootDServer, namespace: str = "test") -> Path:
    """The facility's catalog (root-owned, readable by all): ``namespace`` on ``server``."""
    folder = _folder(tenants, "facility-catalogs")
    (folder / f"{namespace}.toml").write_text(catalog_text([("SITE_A", server, 1)], namespace))
    (folder / f"{namespace}.toml").chmod(0o644)
    return folder


def _env(tier: Path, server: XRootDServer, catalogs: Path | None = None,
         **extra: str) -> dict[str, str]:
    env = {"HTPDATA_CACHE_SHARED_DIR": str(tier), "HTPDATA_CACHE_LOCAL_DIR": "off",
           "HTPDATA_AUTH_CA_FILE": str(server.cert), "HTPDATA_AUTH_CA_DIR": str(server.ca_dir)}
    if catalogs is not None:
        env["HTPDATA_CATALOGS_PATH"] = str(catalogs)
    return {**env, **extra}


def _cat(tenants: Tenants, user: UnixUser, name: str, env: dict[str, str], end: int = 4096,
         timeout: float = 120) -> tuple[int, bytes, str]:
    r = tenants.htpdata(user, "cat", name, "--end", str(end), env=env, timeout=timeout)
    return r.returncode, r.stdout, r.err


def _files_hold(root: Path, secret: bytes) -> list[str]:
    found = []
    for p in root.rglob("*"):
        in_name = secret in str(p).encode()
        if in_name or (p.is_file() and not p.is_symlink() and secret in p.read_bytes()):
            found.append(str(p))
    return found


# -- through the front door: catalogs ------------------------------------------------------
def test_a_co_tenants_catalog_cannot_change_what_another_user_reads(
        tenants: Tenants, origin: XRootDServer) -> None:
    """Mallory's own catalog maps the public name to her file (same size, same adler32 in the
    catalog: public facts); her ordinary read stores it in the shared tier. Alice, with the
    facility catalog, must still read the origin's bytes."""
    tier = tenants.shared_tier()
    facility = _facility_catalog(tenants, origin)
    evil_dir = origin.data / "store" / f"evil-{uuid.uuid4().hex[:8]}"
    evil_dir.mkdir(parents=True)
    forged = bytearray(WANT)
    forged[100:4000] = b"M" * 3900
    (evil_dir / NANO).write_bytes(bytes(forged))
    (evil_dir / NANO).chmod(0o644)
    mallory_cat = tenants.mallory.home / ".config" / "htpdata" / "catalogs"
    tenants.python(tenants.mallory, f"import os; os.makedirs({str(mallory_cat)!r})").unwrap()
    text = ("format = 1\n[namespaces.test]\n[sites.MALLORY]\npreference = 0\nprotocols = [\n"
            '  { scheme = "davs", namespace = "test", rules = [ { path-match = "/(.*)", '
            f'result = "{origin.http_url}store/{evil_dir.name}/{NANO}" }} ] }},\n]\n'
            '[datasets."/Test/All"]\nnamespace = "test"\n'
            f'files = [ {{ name = "/store/test/{NANO}", size = {len(WANT)}, '
            f'adler32 = "{adler32_of(TESTDATA / NANO)}" }} ]\n')
    tenants.python(tenants.mallory, f"open({str(mallory_cat / 'mine.toml')!r}, 'w')"
                   f".write(args)", args=text).unwrap()
    code, out, err = _cat(tenants, tenants.mallory, f"test:/store/test/{NANO}", _env(tier, origin),
                          end=8192)
    assert code == 0, err
    assert out == bytes(forged[:8192])  # she reads her own file, as she may
    code, out, err = _cat(tenants, tenants.alice, f"test:/store/test/{NANO}",
                          _env(tier, origin, facility), end=8192)
    assert code == 0, err
    wrong = sum(a != b for a, b in zip(out, WANT[:8192], strict=False))
    check(out == WANT[:8192], f"alice was served {wrong} of mallory's planted bytes")


def test_a_bearer_token_variable_in_a_shared_catalog_is_refused(
        tenants: Tenants, origin: XRootDServer) -> None:
    """A catalog in the group's shared folder tries to put the reader's token into a URL of its
    author's choosing; the reader gets one line naming the file and key, and no request."""
    token = "eyJ-alice-private-token-0123456789"
    shared = _folder(tenants, "group-catalogs", group_writable=True)
    evil = shared / "zz-helpful.toml"
    text = ('format = 1\n[namespaces.test]\n[sites.HELPFUL]\npreference = 0\nprotocols = [\n'
            '  { scheme = "https", namespace = "test", prefix = '
            f'"https://localhost:{origin.http_port}/${{BEARER_TOKEN}}/" }},\n]\n')
    tenants.python(tenants.mallory, f"open({str(evil)!r}, 'w').write(args)", args=text).unwrap()
    for args in (("resolve", f"test:/store/test/{NANO}"), ("cat", f"test:/store/test/{NANO}")):
        r = tenants.htpdata(tenants.alice, *args, env=_env(
            tenants.tmp("tier"), origin, shared, BEARER_TOKEN=token), timeout=60)
        check(r.returncode == 7 and token not in r.out + r.err, r.err)
        assert r.out == ""
        line, = r.err.strip().splitlines()
        assert line.startswith(f"htpdata: error: catalog {evil}:")
        assert "sites.HELPFUL.protocols[0].prefix" in line
        assert "${BEARER_TOKEN} cannot be used" in line
        assert token not in r.err
    assert token.encode() not in (origin.log.read_bytes() if origin.log.exists() else b"")


def test_a_redos_rule_from_a_co_tenant_does_not_hang_another_user(
        tenants: Tenants, origin: XRootDServer) -> None:
    shared = _folder(tenants, "group-catalogs", group_writable=True)
    text = ("format = 1\n[namespaces.test]\n[sites.SLOW]\nprotocols = [\n"
            '  { scheme = "root", namespace = "test", rules = [\n'
            f"    {{ path-match = '/(a+)+b', result = '{origin.root_url}/$1' }} ] }},\n]\n")
    tenants.python(tenants.mallory, f"open({str(shared / 'slow.toml')!r}, 'w').write(args)",
                   args=text).unwrap()
    name = "test:/" + "a" * 60  # Python's re: about 2**36 s; RE2: at once
    r = tenants.htpdata(tenants.alice, "resolve", name, env=_env(tenants.tmp("t"), origin, shared),
                        timeout=30)  # a hang raises UserRunTimeout: the check fails
    check(r.returncode == 3, r.err)
    assert "no site rule matches" in r.err


def test_a_rule_joining_groups_into_dotdot_cannot_reach_a_victims_file(
        tenants: Tenants, origin: XRootDServer) -> None:
    """Mallory's shared catalog maps names under her public folder; joined groups would climb
    into Alice's home. Alice's read of such a name is an invalid name, not her private file
    (which htpdata would then also have copied into the shared tier)."""
    shared = _folder(tenants, "group-catalogs", group_writable=True)
    public = _folder(tenants, "mallory-public")
    secret = b"alice's private analysis notes\n"
    tenants.python(tenants.alice, f"open({str(tenants.alice.home / 'notes.txt')!r}, 'wb')"
                   ".write(args.encode())", args=secret.decode()).unwrap()
    depth = len(public.parts) - 1  # components below /
    groups = "-".join(["([^/-]*)"] * depth)
    result = "/".join(f"${i}" for i in range(1, depth + 2))
    text = ("format = 1\n[namespaces.pub]\n[sites.PUB]\nprotocols = [\n"
            '  { scheme = "file", namespace = "pub", rules = [\n'
            f"    {{ path-match = '/u/{groups}/(.*)', result = 'file://{public}/{result}' }}"
            " ] },\n]\n")
    tenants.python(tenants.mallory, f"open({str(shared / 'pub.toml')!r}, 'w').write(args)",
                   args=text).unwrap()
    # each '..' comes from a group, none is a segment of the name itself
    name = f"pub:/u/{'-'.join(['..'] * depth)}{tenants.alice.home}/notes.txt"
    tier = tenants.shared_tier()
    r = tenants.htpdata(tenants.alice, "cat", name, env=_env(tier, origin, shared), timeout=60)
    check(secret not in r.stdout and r.returncode == 2, r.err)
    assert "rule maps it to an invalid URL" in r.err
    assert secret not in r.stdout
    assert not _files_hold(tier, secret)


def test_a_fifo_planted_as_a_catalog_does_not_hang_readers(
        tenants: Tenants, origin: XRootDServer) -> None:
    shared = _folder(tenants, "group-catalogs", group_writable=True)
    tenants.python(tenants.mallory,
                   f"import os; os.mkfifo({str(shared / 'trap.toml')!r}, 0o666)").unwrap()
    r = tenants.htpdata(tenants.alice, "resolve", f"test:/store/test/{NANO}",
                        env=_env(tenants.tmp("t"), origin, shared), timeout=30)
    check(r.returncode == 7, r.err)
    assert "not a regular file" in r.err


# -- credentials and private data -----------------------------------------------------------
@pytest.fixture
def token_catalog(tenants: Tenants, token_origin: TokenOrigin) -> Path:
    return _facility_catalog(tenants, token_origin, namespace="tok")


def _token_for(tenants: Tenants, issuer: TokenIssuer, user: UnixUser) -> Path:
    token = issuer.token(user.name, scope="storage.read:/store")
    return write_token_file(user.home, token, owner=user.uid)


def test_tokens_in_urls_never_reach_the_tier_or_reports(
        tenants: Tenants, token_origin: TokenOrigin, token_issuer: TokenIssuer) -> None:
    tier = tenants.shared_tier()
    token = token_issuer.token("htpalice", scope="storage.read:/store")
    env = _env(tier, token_origin)
    url = f"{token_origin.https_url}store/test/{NANO}"
    code, out, err = _cat(tenants, tenants.alice, f"{url}?authz={token}", env, end=20_000)
    assert code == 0, err
    assert out == WANT[:20_000]
    code, out, err = _cat(tenants, tenants.alice, f"{url}?x=1&authz={token}", env, end=100)
    assert code == 0, err
    r = tenants.htpdata(tenants.alice, "report", "--json", "--refresh", env=env, timeout=60)
    assert r.returncode == 0, r.err
    json.loads(r.out)
    check(token not in r.out + r.err, "report --json shows the token")
    check(_files_hold(tier, token.encode()) == [], "the token is stored in the tier")
    check(_files_hold(tenants.alice.home, token.encode()) == [], "the token is in alice's home")


def test_every_user_and_the_operator_can_report_one_after_another(
        tenants: Tenants, origin: XRootDServer) -> None:
    """Each user's report folds only what that user owns (the old format let the first user
    own ``traffic/`` and everyone else's report failed with PermissionError)."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _facility_catalog(tenants, origin))
    code, _, err = _cat(tenants, tenants.alice, f"test:/store/test/{NANO}", env)
    assert code == 0, err
    for user in (tenants.alice, tenants.bob, tenants.cache):
        r = tenants.htpdata(user, "report", "--json", "--refresh", env=env, timeout=60)
        check(r.returncode == 0, f"report as {user.name}: {r.err}")


def test_a_token_protected_file_is_not_served_to_users_without_the_token(
        tenants: Tenants, token_origin: TokenOrigin, token_issuer: TokenIssuer,
        token_catalog: Path) -> None:
    """Alice reads her token-protected file through the shared tier; Bob (same group, no token)
    and Eve (outside the group) must be refused, not served from the cache."""
    tier = tenants.shared_tier()
    name = f"tok:/store/test/{NANO}"
    env = _env(tier, token_origin, token_catalog)
    alice_token = _token_for(tenants, token_issuer, tenants.alice)
    code, out, err = _cat(tenants, tenants.alice, name,
                          {**env, "BEARER_TOKEN_FILE": str(alice_token)}, end=50_000)
    assert code == 0, err
    assert out == WANT[:50_000]
    for other in (tenants.bob, tenants.eve):
        code, out, err = _cat(tenants, other, name, env, end=50_000)
        check(out == b"" and code == 4,
              f"{other.name} got {len(out)} private bytes from the cache (exit {code})")


def test_the_token_origin_refuses_users_without_a_token_when_nothing_is_cached(
        tenants: Tenants, token_origin: TokenOrigin, token_catalog: Path) -> None:
    code, out, err = _cat(tenants, tenants.bob, f"tok:/store/test/{NANO}",
                          _env(tenants.shared_tier(), token_origin, token_catalog))
    check((code, out) == (4, b""), err)
    assert err.startswith("htpdata: error:")


# -- the planter --------------------------------------------------------------------------
def test_the_planter_plants_every_kind_as_a_hostile_user(tenants: Tenants) -> None:
    """A template of an entry (folders and files), planted by mallory in a shared tier with the
    docs' modes: every kind lands except devices (root only), and nothing outside changes."""
    template = tenants.tmp("template")
    area = f"users/{tenants.alice.uid}"  # the victim's own area, before she makes it
    (template / area / "e" / "ab" / "KEY").mkdir(parents=True)
    (template / area / "e" / "ab" / "KEY" / "pin").write_text("{}")
    (template / area / "e" / "ab" / "KEY" / "p.0.node.1.1.abc").write_bytes(b"0123456789")
    layout = [p for p in tree(template) if p[0] != "users"]  # users/ is the owner's
    assert layout[0] == (area, True)
    outside = _folder(tenants, "outside")
    os.chown(outside, tenants.mallory.uid, tenants.gid)
    victim_file = outside / "victim-file"
    victim_file.write_bytes(b"precious")
    results: dict[str, list[dict[str, object]]] = {}
    for kind in KINDS:
        tier = tenants.shared_tier()
        out = tenants.call(tenants.mallory, "htpdata.testing.hostile:plant", str(tier), layout,
                           kind, str(outside)).unwrap()
        results[kind] = out
        planted = [r for r in out if r["planted"]]
        if kind == "device":
            assert not planted
            assert all("CAP_MKNOD" in str(r["why"]) for r in out)
            continue
        assert planted, (kind, out)
        first = tier / str(planted[0]["path"])
        st = os.lstat(first)
        assert st.st_uid == tenants.mallory.uid
        expect = {"symlink-out": stat.S_ISLNK, "symlink-loop": stat.S_ISLNK,
                  "fifo": stat.S_ISFIFO, "hardlink": stat.S_ISREG, "huge": stat.S_ISREG,
                  "wrong-type": stat.S_ISREG, "future": stat.S_ISDIR}[kind]
        assert expect(st.st_mode), (kind, oct(st.st_mode))
        if kind == "huge":
            assert st.st_size == HUGE
        if kind == "future":
            leaf = tier / layout[-1][0]
            assert os.lstat(leaf).st_mtime > os.path.getmtime(victim_file) + 9 * 365 * 86400
        if kind == "hardlink":
            assert st.st_nlink >= 2
    assert victim_file.read_bytes() == b"precious"
    # symlink-out at the top folder covers everything below it, said so per path
    assert results["symlink-out"][0]["planted"]
    assert all("already planted" in str(r["why"]) for r in results["symlink-out"][1:])


def test_plant_refuses_to_replace_what_the_planter_may_not_remove(tmp_path: Path) -> None:
    """Pure: in a sticky folder owned by someone else, existing names stay (as root here, the
    sticky rule does not bind, so this checks the bookkeeping only)."""
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "f").write_text("x")
    out = plant(str(tmp_path / "t"), [("a", True), ("a/f", False)], "fifo", str(tmp_path))
    assert out[0]["planted"] is False  # a non-empty folder cannot be removed
    assert "cannot be replaced" in str(out[0]["why"])
    assert out[1]["planted"] is True
    assert stat.S_ISFIFO(os.lstat(tmp_path / "t" / "a" / "f").st_mode)
    with pytest.raises(ValueError, match="unknown kind"):
        plant(str(tmp_path), [], "nope", str(tmp_path))
    shutil.rmtree(tmp_path / "t")
