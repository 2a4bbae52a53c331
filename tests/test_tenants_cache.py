"""Hostile co-tenants against the cache's own format and trust model (issue 14).

Real Unix users (the ``tenants`` fixture: htpalice and htpbob physicists, htpmallory hostile,
all in group htpcms; htpcache the tier's owner; htpeve outside the group) run htpdata against
a shared tier set up as docs/cache.md prescribes, a real XRootD origin and a real
token-protected origin. Every test asserts the exact outcome: the victim's bytes are the
origin's, files outside the tier are intact, runs return within their timeout, private bytes
cannot be opened by anyone else. The generic attacks (catalogs, tokens in URLs) are in
tests/test_tenants_generic.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import TypedDict

import pytest

from htpdata.testing import XRootDServer
from htpdata.testing.cachecheck import packs_under, verify_tier
from htpdata.testing.tokens import TokenIssuer, TokenOrigin, write_token_file
from htpdata.testing.users import Tenants, UnixUser, make_shared_tier

from .conftest import TESTDATA, catalog_text
from .figures import check

pytestmark = [pytest.mark.tenants, pytest.mark.xrootd]

NANO = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
HZZ = "uproot-HZZ.root"
NAME = f"test:/store/test/{NANO}"
WANT = (TESTDATA / NANO).read_bytes()


def _catalogs(tenants: Tenants, server: XRootDServer, namespace: str = "test") -> Path:
    folder = tenants.tmp("facility-catalogs")
    (folder / f"{namespace}.toml").write_text(catalog_text([("SITE_A", server, 1)], namespace))
    (folder / f"{namespace}.toml").chmod(0o644)
    return folder


def _env(tier: Path, server: XRootDServer, catalogs: Path, **extra: str) -> dict[str, str]:
    return {"HTPDATA_CACHE_SHARED_DIR": str(tier), "HTPDATA_CACHE_LOCAL_DIR": "off",
            "HTPDATA_AUTH_CA_FILE": str(server.cert), "HTPDATA_AUTH_CA_DIR": str(server.ca_dir),
            "HTPDATA_CATALOGS_PATH": str(catalogs), **extra}


def _cat(tenants: Tenants, user: UnixUser, env: dict[str, str], name: str = NAME,
         end: int = 200_000, timeout: float = 60) -> tuple[int, bytes, str]:
    r = tenants.htpdata(user, "cat", name, "--end", str(end), env=env, timeout=timeout)
    return r.returncode, r.stdout, r.err


class Read(TypedDict):
    """What :func:`_read` returns: the sha256 of each range read, and the reader's counters."""

    sha: list[str]
    counters: dict[str, int]


def _read(tenants: Tenants, user: UnixUser, env: dict[str, str], name: str = NAME,
          ranges: list[list[int]] | None = None) -> Read:
    """Read through htpdata as ``user``; the bytes' sha256 and the reader's counters."""
    code = ("import hashlib, htpdata\n"
            "c = htpdata.Client()\n"
            "r = c.reader(args['name'])\n"
            "data = r.read_ranges([tuple(x) for x in args['ranges']])\n"
            "c.close()\n"
            "result = {'sha': [hashlib.sha256(d).hexdigest() for d in data],\n"
            "          'counters': r.counters.as_dict()}")
    ranges = ranges or [[0, 200_000]]
    read: Read = tenants.python(user, code, env=env, args={"name": name, "ranges": ranges},
                                timeout=60).unwrap()
    return read


def _sha(ranges: list[list[int]], data: bytes = WANT) -> list[str]:
    return [hashlib.sha256(data[s:e]).hexdigest() for s, e in ranges]


def _forge(tenants: Tenants, user: UnixUser, folder: Path, size: int = len(WANT)) -> None:
    """As ``user``, write into ``folder`` a well-formed pack claiming to hold the whole of
    NANO, complete, with bytes of the forger's choice (checksums all correct)."""
    code = ("import os, time\n"
            "from htpdata.cache.identity import Identity\n"
            "from htpdata.cache.pack import COMPLETE, encode\n"
            "i = Identity(args['name'], args['size'], args['adler'])\n"
            "chunks = encode(i.key, i.size, {'name': i.name, 'adler32': i.adler32,\n"
            "                'learnt': time.time()}, [(0, b'X' * i.size)], flags=COMPLETE)\n"
            "os.makedirs(args['folder'], exist_ok=True)\n"
            "p = os.path.join(args['folder'], 'p.0000000000000000.forged.1.1.aaaaaa')\n"
            "open(p, 'wb').write(b''.join(bytes(c) for c in chunks))\n"
            "result = p")
    from .conftest import adler32_of

    tenants.python(user, code, args={"name": NAME, "size": size, "folder": str(folder),
                                     "adler": adler32_of(TESTDATA / NANO)}).unwrap()


def _entry_of(name: str) -> str:
    from htpdata.cache.identity import Identity

    key = Identity(name, 0).name_key
    return f"e/{key[:2]}/{key}"


# -- planted bytes -------------------------------------------------------------------------------
def test_a_pack_planted_for_a_victim_is_never_served(tenants: Tenants,
                                                    origin: XRootDServer) -> None:
    """Mallory forges packs for a public file (checksums right, bytes wrong, marked complete):
    in her own area, and in alice's area made before alice's first read. Alice gets the
    origin's bytes, one line about the planted area, and her stage is not fooled."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    _forge(tenants, tenants.mallory, tier / "users" / str(tenants.mallory.uid) / _entry_of(NAME))
    victim_area = tier / "users" / str(tenants.alice.uid)
    _forge(tenants, tenants.mallory, victim_area / _entry_of(NAME))
    tenants.python(tenants.mallory, f"import os; os.chmod({str(victim_area)!r}, 0o777)")
    code, out, err = _cat(tenants, tenants.alice, env)
    assert code == 0, err
    check(out == WANT[:200_000], "alice was served planted bytes")
    lines = [line for line in err.splitlines() if "planted" in line]
    check(len(lines) == 1 and str(tenants.mallory.uid) in lines[0],
          f"the planted area is not said in one line: {err!r}")
    # Bob's area is his own: the forged complete pack in mallory's area does not make his
    # stage skip the file, and what he stages is the origin's.
    r = tenants.htpdata(tenants.bob, "stage", NAME, "--json", env=env, timeout=120)
    assert r.returncode == 0, r.err
    summary = json.loads(r.out)
    check(summary["staged"] == 1 and summary["already_cached"] == 0,
          f"a planted complete pack made the stage skip: {summary}")
    bobs = tier / "users" / str(tenants.bob.uid)
    got = verify_tier(bobs, {NAME: WANT})
    check(got.wrong_bytes == 0 and got.bytes_checked >= len(WANT), str(got))
    read = _read(tenants, tenants.bob, env, ranges=[[0, len(WANT)]])
    check(read["sha"] == _sha([[0, len(WANT)]]), "bob read wrong bytes")
    check(read["counters"]["upstream"] == 0, "bob's staged file was not served from his area")


def test_a_co_tenant_cannot_write_where_others_read(tenants: Tenants) -> None:
    """The trusted area is the owner's; the group area (with cache.trust = "group") its
    members'; someone outside the group writes in neither."""
    tier = make_shared_tier(tenants.tmp("tier") / "g", trust="group")
    for user, where in ((tenants.mallory, "trusted"), (tenants.eve, "trusted"),
                        (tenants.eve, "group")):
        out = tenants.python(user, f"import os; os.makedirs({str(tier / where / 'e' / 'ab')!r})")
        check(out.error == "PermissionError", f"{user.name} wrote in {where}: {out}")


# -- private data --------------------------------------------------------------------------------
def test_private_bytes_and_names_stay_with_their_owner(
        tenants: Tenants, token_origin: TokenOrigin, token_issuer: TokenIssuer) -> None:
    """Alice reads a token-protected file through the shared tier: her bytes, her records and
    her traffic are hers alone (0600 in a 0700 area); nothing another user can read names the
    file, her or its dataset."""
    tier = tenants.shared_tier()
    catalogs = _catalogs(tenants, token_origin, "tok")
    token = token_issuer.token(tenants.alice.name, scope="storage.read:/store")
    env = _env(tier, token_origin, catalogs,
               BEARER_TOKEN_FILE=str(write_token_file(tenants.alice.home, token,
                                                      owner=tenants.alice.uid)))
    name = f"tok:/store/test/{NANO}"
    code, out, err = _cat(tenants, tenants.alice, env, name, end=50_000)
    assert code == 0, err
    assert out == WANT[:50_000]
    r = tenants.htpdata(tenants.alice, "report", "--json", "--refresh", env=env, timeout=60)
    assert r.returncode == 0, r.err
    area = tier / "users" / str(tenants.alice.uid)
    assert list(packs_under(area)), "alice's read was not cached in her area"
    loose = [str(p) for p in area.rglob("*")
             if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    check(loose == [], f"alice's private files readable by others: {loose}")
    assert stat.S_IMODE(area.stat().st_mode) == 0o700
    pack = next(packs_under(area))
    for other in (tenants.bob, tenants.mallory, tenants.eve):
        opened = tenants.python(other, f"open({str(pack)!r}, 'rb').read(10)")
        check(opened.error == "PermissionError", f"{other.name} opened alice's pack")
    # every file anyone else can read under the tier: nothing of alice's in it
    walk = ("import os\n"
            "seen = []\n"
            "for folder, dirs, files in os.walk(args['tier']):\n"
            "    for f in files:\n"
            "        p = os.path.join(folder, f)\n"
            "        try:\n"
            "            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)\n"
            "        except OSError:\n"
            "            continue\n"
            "        with os.fdopen(fd, 'rb') as fh:\n"
            "            seen.append(fh.read(1 << 20).decode('latin-1'))\n"
            "result = seen")
    for other in (tenants.bob, tenants.eve):
        seen = tenants.python(other, walk, args={"tier": str(tier)}).unwrap()
        leaked = [s[:80] for s in seen if NANO in s or "htpalice" in s or "/store/test" in s]
        check(leaked == [], f"{other.name} reads alice's names in: {leaked}")


# -- harm outside the tier -----------------------------------------------------------------------
def test_traps_in_the_drop_box_do_not_hang_or_reach_outside(tenants: Tenants,
                                                             origin: XRootDServer) -> None:
    """Mallory fills the drop box with a FIFO, a symlink to a victim's file, a huge sparse
    file, a hard link and garbled and hostile stage requests; the owner's pass and its run of
    the requests finish, follow nothing and leave everything outside the tier as it was."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    outside = tenants.tmp("outside", 0o777)
    victim = outside / "victim-file"
    victim.write_bytes(b"precious")
    victim.chmod(0o666)  # writable by all: a follower would change it
    drop = tier / "drop"
    code = ("import os, json, time\n"
            "d = args['drop']\n"
            "os.mkfifo(os.path.join(d, 'r.fifo'))\n"
            "os.mkfifo(os.path.join(d, 'q.fifo'))\n"
            "os.symlink(args['victim'], os.path.join(d, 'r.link'))\n"
            "os.symlink(args['victim'], os.path.join(d, 'q.link'))\n"
            "fd = os.open(os.path.join(d, 'r.huge'), os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "os.ftruncate(fd, 1 << 40); os.close(fd)\n"
            "mine = os.path.join(args['outside'], 'mallory-file')\n"
            "open(mine, 'w').write('mallory')\n"
            "os.link(mine, os.path.join(d, 'r.hard'))\n"
            "open(os.path.join(d, 'q.garbage'), 'w').write('{not json')\n"
            "open(os.path.join(d, 'q.url'), 'w').write(json.dumps({'v': 1, 'names':\n"
            "    ['root://evil.example//store/x.root']}))\n"
            "open(os.path.join(d, 'r.future'), 'w').write(json.dumps({'v': 1,\n"
            "    'proc': 'x.1.1', 'in_use': ['a' * 40], 'closed': False}))\n"
            "t = time.time() + 10 * 365 * 86400\n"
            "os.utime(os.path.join(d, 'r.future'), (t, t))\n"
            "result = sorted(os.listdir(args['outside']))")
    tenants.python(tenants.mallory, code, args={"drop": str(drop), "victim": str(victim),
                                                "outside": str(outside)}).unwrap()
    assert _cat(tenants, tenants.alice, env, end=1000)[0] == 0
    t0 = time.monotonic()
    evicted = tenants.htpdata(tenants.cache, "cache", "evict", "--tier", "shared", "--json",
                              env=env, timeout=60)
    served = tenants.htpdata(tenants.cache, "stage", "--requests", "--json", env=env,
                             timeout=60)
    check(time.monotonic() - t0 < 60, "the owner's runs hung")
    assert evicted.returncode == 0, evicted.err
    assert served.returncode == 0, served.err
    refused = json.loads(served.out)["refused"]
    check(len(refused) >= 3, f"hostile requests were not refused: {refused}")
    check(victim.read_bytes() == b"precious" and not victim.is_symlink(),
          "the victim's file outside the tier changed")
    check((outside / "mallory-file").read_text() == "mallory", "a hard-linked file changed")


def test_clear_and_evict_never_delete_outside_even_as_root(tenants: Tenants,
                                                           origin: XRootDServer) -> None:
    """Mallory turns her own area into traps (entries, fan-out folders, records and trash
    replaced by symlinks into folders outside the tier, FIFOs for files); root, the owner and
    mallory herself clear and evict: nothing outside the tier is removed or written, and no
    run hangs."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    for name in (NAME, f"test:/store/test/{HZZ}"):
        assert _cat(tenants, tenants.mallory, env, name, end=1000)[0] == 0
    assert _cat(tenants, tenants.alice, env, end=1000)[0] == 0
    outside = tenants.tmp("outside", 0o777)
    for owner, label in ((0, "roots"), (tenants.mallory.uid, "mallorys")):
        d = outside / label
        d.mkdir()
        (d / "keep").write_text(label)
        os.chown(d, owner, owner)
        os.chown(d / "keep", owner, owner)
    area = tier / "users" / str(tenants.mallory.uid)
    code = ("import os, shutil\n"
            "a, out = args['area'], args['outside']\n"
            "fans = [os.path.join(a, 'e', f) for f in os.listdir(os.path.join(a, 'e'))]\n"
            "for i, fan in enumerate(fans):\n"
            "    for key in os.listdir(fan):\n"
            "        shutil.rmtree(os.path.join(fan, key))\n"
            "        os.symlink(os.path.join(out, 'roots' if i % 2 else 'mallorys'),\n"
            "                   os.path.join(fan, key))\n"
            "os.makedirs(os.path.join(a, 'e', 'ff'), exist_ok=True)\n"
            "os.symlink(os.path.join(out, 'roots'), os.path.join(a, 'e', 'ff', 'f' * 40))\n"
            "shutil.rmtree(os.path.join(a, 'r'), ignore_errors=True)\n"
            "os.symlink(os.path.join(out, 'roots'), os.path.join(a, 'r'))\n"
            "os.symlink(os.path.join(out, 'mallorys'), os.path.join(a, 'trash'))\n"
            "os.mkfifo(os.path.join(a, 'usage.json'))\n"
            "result = True")
    tenants.python(tenants.mallory, code, args={"area": str(area),
                                                "outside": str(outside)}).unwrap()
    runs = [(tenants.mallory, ("cache", "clear", "--yes")),
            (tenants.mallory, ("cache", "evict", "--tier", "shared")),
            (tenants.cache, ("cache", "evict", "--tier", "shared")),
            (tenants.alice, ("report", "--refresh", "--json"))]
    t0 = time.monotonic()
    for user, args in runs:
        r = tenants.htpdata(user, *args, env=env, timeout=60)
        assert r.returncode == 0, (user.name, args, r.err)
    for root_args in (["cache", "clear", "--yes"], ["cache", "evict", "--tier", "shared"]):
        as_root = subprocess.run([tenants._exposure.python, "-m", "htpdata", *root_args],
                                 timeout=60, env={**os.environ, **env}, capture_output=True)
        assert as_root.returncode == 0, as_root.stderr
    check(time.monotonic() - t0 < 120, "clear or evict hung on planted traps")
    for label in ("roots", "mallorys"):
        check((outside / label / "keep").read_text() == label,
              f"a file outside the tier ({label}) was removed or changed")
    check(sorted(os.listdir(outside)) == ["mallorys", "roots"], "something was made outside")
    check(_cat(tenants, tenants.alice, env, end=1000)[1] == WANT[:1000],
          "alice's bytes after the traps")


# -- sidecars that steer -------------------------------------------------------------------------
def test_sidecars_written_by_others_steer_nothing(tenants: Tenants,
                                                  origin: XRootDServer) -> None:
    """A quota.json and usage.json not written by the tier's owner are ignored; usage cannot
    be charged to a declared user; the owner's quota is honoured."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    forged = {"users": {tenants.alice.name: {"hard": 1, "soft": 1}}}
    (tier / "quota.json").write_text(json.dumps(forged))
    os.chown(tier / "quota.json", tenants.mallory.uid, tenants.gid)
    (tier / "trusted" / "usage.json").write_text(json.dumps({"total": 10**15}))
    os.chown(tier / "trusted" / "usage.json", tenants.mallory.uid, tenants.gid)
    assert _cat(tenants, tenants.alice, env, end=1000)[0] == 0
    area = tier / "users" / str(tenants.alice.uid)
    check(bool(list(packs_under(area))), "a quota.json by another user stopped alice caching")
    declared = tenants.htpdata(tenants.mallory, "cat", NAME, "--end", "10",
                               env={**env, "HTPDATA_CACHE_USER": tenants.alice.name})
    check(declared.returncode == 7 and declared.err.count("\n") == 1,
          f"usage charged to a declared user: {declared.err}")
    owner_quota = tenants.htpdata(tenants.cache, "quota", "set", "--user", tenants.bob.name,
                                  "1", env=env)
    assert owner_quota.returncode == 0, owner_quota.err
    for name in (NAME, f"test:/store/test/{HZZ}"):  # the first write puts bob past it
        code, _, err = _cat(tenants, tenants.bob, env, name, end=1000)
        assert code == 0, err
    # At most the one write that crossed the limit stays; the eviction pass that being over
    # starts in the background may have removed it before bob's process ended, or not.
    bobs = verify_tier(tier / "users" / str(tenants.bob.uid), {}).packs
    check(bobs <= 1, f"the owner's quota was not honoured: bob has {bobs} packs")


def test_a_forged_claim_does_not_stall_a_cold_read(tenants: Tenants,
                                                   origin: XRootDServer) -> None:
    """With cache.trust = "group", mallory (a member) plants a claim for alice's next read in
    the group area: dated ten years ahead, naming root's init as its process. Alice's cold read
    does not wait for it."""
    tier = make_shared_tier(tenants.tmp("tier") / "g", trust="group")
    env = _env(tier, origin, _catalogs(tenants, origin), HTPDATA_CACHE_TRUST="group")
    entry = tier / "group" / _entry_of(NAME)
    with open("/proc/1/stat", "rb") as fh:
        raw = fh.read()
    start = raw[raw.rindex(b")") + 2:].split()[19].decode()
    node = os.uname().nodename
    code = ("import os, json, time\n"
            "os.makedirs(args['entry'])\n"
            "p = os.path.join(args['entry'], args['name'])\n"
            "open(p, 'w').write(json.dumps({'ranges': [[0, args['size']]]}))\n"
            "t = time.time() + 10 * 365 * 86400\n"
            "os.utime(p, (t, t))\n"
            "result = p")
    safe_node = "".join(c if c.isalnum() or c in "-_" else "_" for c in node)[:64]
    claim = f"c.{time.time_ns():016x}.0-{len(WANT):x}.{safe_node}.1.{start}"
    tenants.python(tenants.mallory, code, args={"entry": str(entry), "name": claim,
                                                "size": len(WANT)}).unwrap()
    t0 = time.monotonic()
    code_, out, err = _cat(tenants, tenants.alice, env, end=100_000)
    took = time.monotonic() - t0
    assert code_ == 0, err
    check(out == WANT[:100_000], "alice's bytes")
    check(took < 20, f"a forged claim stalled a cold read for {took:.0f} s")


# -- eviction and clearing by any user -----------------------------------------------------------
def test_a_members_clear_skips_what_others_own_and_says_so(tenants: Tenants,
                                                           origin: XRootDServer) -> None:
    tier = make_shared_tier(tenants.tmp("tier") / "g", trust="group")
    env = _env(tier, origin, _catalogs(tenants, origin), HTPDATA_CACHE_TRUST="group")
    assert _cat(tenants, tenants.alice, env, end=1000)[0] == 0
    assert _cat(tenants, tenants.bob, env, f"test:/store/test/{HZZ}", end=1000)[0] == 0
    r = tenants.htpdata(tenants.bob, "cache", "clear", "--tier", "shared", "--yes", "--json",
                        env=env, timeout=60)
    check(r.returncode == 0, f"bob's clear stopped: {r.err}")
    done = json.loads(r.out)
    check(done["entries"] == 1 and done["skipped"] >= 1, f"bob's clear: {done}")
    read = _read(tenants, tenants.bob, env, ranges=[[0, 1000]])
    check(read["counters"]["upstream"] == 0, "alice's entry went with bob's clear")
    check(read["sha"] == _sha([[0, 1000]]), "bob read wrong bytes")
    r = tenants.htpdata(tenants.cache, "cache", "evict", "--tier", "shared", "--json", env=env,
                        timeout=60)
    assert r.returncode == 0, r.err


# -- limits from the filesystem ------------------------------------------------------------------
def test_a_filesystem_quota_on_a_users_area(tenants: Tenants, origin: XRootDServer) -> None:
    """A 64 kB tmpfs mounted as alice's area (as an operator would set a CephFS directory
    quota or an XFS project quota): her writes past it fail, her reads go on uncached with
    one warning, and nothing torn is ever served."""
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    area = tier / "users" / str(tenants.alice.uid)
    area.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o",
                              f"size=64k,mode=0700,uid={tenants.alice.uid},"
                              f"gid={tenants.alice.gid}", "tmpfs", str(area)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        for _ in range(2):
            code, out, err = _cat(tenants, tenants.alice, env, end=len(WANT))
            assert code == 0, err
            check(out == WANT, "alice's bytes through a full area")
        warned = [line for line in err.splitlines() if "No space left" in line]
        check(len(warned) <= 1, f"more than one warning: {err!r}")
        check(verify_tier(area, {NAME: WANT}).wrong_bytes == 0, "torn bytes in the area")
    finally:
        subprocess.run(["umount", str(area)], check=False)


# -- data a user stages for a team ---------------------------------------------------------------
def test_a_stage_request_makes_data_trusted_for_everyone(tenants: Tenants,
                                                         origin: XRootDServer) -> None:
    tier = tenants.shared_tier()
    env = _env(tier, origin, _catalogs(tenants, origin))
    r = tenants.htpdata(tenants.alice, "stage", "--request", "test:/Test/All", env=env)
    assert r.returncode == 0, r.err
    listed = tenants.python(tenants.bob, f"import os; os.listdir({str(tier / 'drop')!r})")
    check(listed.error == "PermissionError", "another user lists the requests")
    r = tenants.htpdata(tenants.cache, "stage", "--requests", "--json", env=env, timeout=120)
    assert r.returncode == 0, r.err
    served = json.loads(r.out)
    assert served["names"] == ["test:/Test/All"]
    assert served["stage"]["failed"] == 0
    check(not list((tier / "drop").iterdir()), "requests were left behind")
    read = _read(tenants, tenants.eve, env, ranges=[[0, len(WANT)]])
    check(read["sha"] == _sha([[0, len(WANT)]]), "eve read wrong bytes")
    check(read["counters"]["shared"] == len(WANT) and read["counters"]["upstream"] == 0,
          f"the staged file was not served from the trusted area: {read['counters']}")
    # Her read is counted in her own area (her report shows it, with the names).
    r = tenants.htpdata(tenants.eve, "report", "--refresh", "--json", env=env, timeout=60)
    assert r.returncode == 0, r.err
    mine = [x for x in json.loads(r.out)["records"] if x.get("user") == tenants.eve.name]
    check(sum(x["served_shared"] for x in mine) == len(WANT),
          f"eve's report does not show her read of the trusted area: {mine}")
    # The trusted area's owner sees whom it served (from eve's drop-box record: bytes, no names).
    r = tenants.htpdata(tenants.cache, "report", "--refresh", "--json", env=env, timeout=60)
    assert r.returncode == 0, r.err
    served = [x for x in json.loads(r.out)["records"] if x.get("user") == tenants.eve.name]
    check(sum(x["served_shared"] for x in served) == len(WANT),
          f"the owner's report does not show eve's read of the trusted area: {served}")


# -- every trap at every name of an entry --------------------------------------------------------
@pytest.mark.slow
def test_traps_planted_at_every_name_of_an_entry_are_neither_followed_nor_hang(
        tenants: Tenants, origin: XRootDServer) -> None:
    """With cache.trust = "group" (the only area where another user may write), mallory plants
    each kind of trap at every name an honest read of NANO makes (folders, packs, claims,
    pins, stamps, records): alice's reads return the origin's bytes within their timeout, her
    clear and the owner's pass finish, and nothing outside the tier changes."""
    from htpdata.testing.hostile import KINDS, tree

    catalogs = _catalogs(tenants, origin)
    honest = make_shared_tier(tenants.tmp("tier") / "honest", trust="group")
    env = _env(honest, origin, catalogs, HTPDATA_CACHE_TRUST="group")
    assert _cat(tenants, tenants.bob, env, end=1000)[0] == 0
    r = tenants.htpdata(tenants.bob, "report", "--refresh", env=env, timeout=60)
    assert r.returncode == 0, r.err
    layout = [p for p in tree(honest) if p[0].startswith("group/")]
    layout += [("group/e/ab", True), ("group/trash", True), ("group/r", True)]
    assert any("/p." in p for p, _ in layout)
    outside = tenants.tmp("outside", 0o777)
    (outside / "victim-file").write_bytes(b"precious")
    (outside / "victim-file").chmod(0o666)
    for kind in [k for k in KINDS if k != "device"]:
        tier = make_shared_tier(tenants.tmp("tier") / kind, trust="group")
        env = _env(tier, origin, catalogs, HTPDATA_CACHE_TRUST="group")
        planted = tenants.call(tenants.mallory, "htpdata.testing.hostile:plant", str(tier),
                               layout, kind, str(outside)).unwrap()
        assert any(p["planted"] for p in planted), (kind, planted)
        code, out, err = _cat(tenants, tenants.alice, env, end=50_000, timeout=60)
        check(code == 0 and out == WANT[:50_000], f"{kind}: alice's read: {err[-300:]}")
        for user, args in ((tenants.alice, ("cache", "clear", "--yes")),
                           (tenants.cache, ("cache", "evict", "--tier", "shared"))):
            r = tenants.htpdata(user, *args, env=env, timeout=60)
            check(r.returncode == 0, f"{kind}: {user.name} {args}: {r.err[-300:]}")
        check((outside / "victim-file").read_bytes() == b"precious",
              f"{kind}: the file outside the tier changed")
