"""The multi-tenant test infrastructure itself: real users, exact environments, hard timeouts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from htpdata.testing.users import Tenants, UserRunTimeout

pytestmark = pytest.mark.tenants

REPO = Path(__file__).resolve().parent.parent


def test_users_groups_and_roles(tenants: Tenants) -> None:
    ids = {u.name: tenants.call(u, "os:getgroups").unwrap() for u in tenants.users.values()}
    for u in (tenants.alice, tenants.bob, tenants.mallory, tenants.cache):
        assert tenants.gid in ids[u.name], u
    assert tenants.gid not in ids[tenants.eve.name]
    uids = {tenants.python(u, "import os; result = [os.getuid(), os.geteuid()]").unwrap()[0]
            for u in tenants.users.values()}
    assert len(uids) == 5
    assert 0 not in uids


def test_runs_get_exactly_the_environment_given(tenants: Tenants,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTPDATA_CACHE_SHARED_DIR", "/leaked")
    monkeypatch.setenv("BEARER_TOKEN", "leaked-token-0123456789")
    env = tenants.python(tenants.alice, "import os; result = dict(os.environ)",
                         env={"HTPDATA_X": "1"}).unwrap()
    assert env["HTPDATA_X"] == "1"
    assert "BEARER_TOKEN" not in env
    assert "HTPDATA_CACHE_SHARED_DIR" not in env
    assert env["HOME"] == str(tenants.alice.home)
    assert env["XDG_CONFIG_HOME"].startswith(str(tenants.alice.home))
    mode = os.stat(tenants.alice.home).st_mode
    assert stat.S_IMODE(mode) == 0o700
    assert os.stat(tenants.alice.home).st_uid == tenants.alice.uid


def test_htpdata_cli_runs_as_a_user(tenants: Tenants) -> None:
    r = tenants.htpdata(tenants.bob, "--version").check()
    assert r.out.startswith("htpdata ")
    bad = tenants.htpdata(tenants.bob, "resolve", "no-such-namespace:/x")
    assert bad.returncode == 2
    assert bad.err.startswith("htpdata: error:")


def test_snippet_errors_come_back_typed(tenants: Tenants) -> None:
    out = tenants.python(tenants.mallory, "from htpdata.errors import StoragePermissionError\n"
                         "print('noise')\nraise StoragePermissionError('no', url='x')")
    assert out.error == "StoragePermissionError"
    assert "PermissionError" in out.error_classes
    assert out.exit_code == 4
    assert "noise" in out.run.err
    assert tenants.python(tenants.mallory, "result = args['n'] * 2", args={"n": 21}).unwrap() == 42


def test_timeout_kills_the_whole_process_group(tenants: Tenants) -> None:
    marker = f"sleep {4000 + os.getpid() % 1000}"
    start = time.monotonic()
    with pytest.raises(UserRunTimeout, match="did not finish within 1 s"):
        tenants.run(tenants.mallory, ["sh", "-c", f"{marker} & {marker}; echo never"], timeout=1)
    assert time.monotonic() - start < 30
    left = subprocess.run(["pgrep", "-u", tenants.mallory.name, "-f", marker],
                          capture_output=True, text=True)
    assert left.stdout == ""


def test_tokens_given_to_a_run_are_not_visible_to_other_users(tenants: Tenants) -> None:
    """The environment goes through execve: another user sees neither argv nor environ."""
    token = "eyJ-tenant-secret-0f1e2d3c4b5a"
    victim = subprocess.Popen(
        ["setpriv", f"--reuid={tenants.alice.uid}", f"--regid={tenants.alice.gid}",
         "--init-groups", "--", "sleep", "30"], env={**tenants.env_for(tenants.alice),
                                                     "BEARER_TOKEN": token})
    try:
        seen = tenants.python(tenants.mallory, textwrap.dedent("""
            import os
            seen, denied = [], 0
            for pid in filter(str.isdigit, os.listdir('/proc')):
                for part in ('cmdline', 'environ'):
                    try:
                        seen.append(open(f'/proc/{pid}/{part}', 'rb').read().decode('latin1'))
                    except OSError:
                        denied += 1
            result = [seen, denied]
        """)).unwrap()
        assert not any(token in s for s in seen[0])
        assert seen[1] > 0
    finally:
        victim.kill()
        victim.wait()
    # and through the fixture's own runs
    out = tenants.python(tenants.alice, "result = 1", env={"BEARER_TOKEN": token})
    assert token not in " ".join(out.run.args)


def test_shared_tier_is_set_up_as_the_docs_say(tenants: Tenants) -> None:
    """The root is the trusted writer's alone; every user may make an area of their own under
    users/ (and leave records in drop/), nobody may list them or remove another's."""
    root = tenants.shared_tier()
    st = os.stat(root)
    assert st.st_uid == tenants.cache.uid
    assert st.st_gid == tenants.gid
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "users").st_mode) == 0o1733
    assert stat.S_IMODE(os.stat(root / "trusted").st_mode) == 0o755
    assert tenants.python(tenants.alice, f"open({str(root / 'a')!r}, 'w')").error == \
        "PermissionError"  # nobody but the owner writes in the root
    area = root / "users" / str(tenants.alice.uid)
    made = tenants.python(tenants.alice, f"import os; os.mkdir({str(area)!r}, 0o700)\n"
                          f"result = os.stat({str(area)!r}).st_uid")
    assert made.unwrap() == tenants.alice.uid
    listed = tenants.python(tenants.mallory, f"import os; os.listdir({str(root / 'users')!r})")
    assert listed.error == "PermissionError"  # which users use the cache is not shown
    gone = tenants.python(tenants.mallory, f"import os; os.rmdir({str(area)!r})")
    assert gone.error == "PermissionError"  # sticky: only alice (or the owner) removes it
    assert area.is_dir()


def test_users_run_htpdata_from_a_checkout_they_cannot_traverse(tmp_path: Path) -> None:
    """CI's clean clone may live under /root: the fixture binds it read-only where users can
    reach it, in each run's own mount namespace, and loosens nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create real Unix users (CI runs the suite as root)")
    hidden = tmp_path / "hidden"
    (hidden / "repo").mkdir(parents=True)
    hidden.chmod(0o700)
    script = textwrap.dedent("""
        import json, sys
        from htpdata.testing.users import Tenants
        t = Tenants.start()
        try:
            f = t.fresh(t.base / "t")
            out = f.python(f.alice, "import htpdata; result = htpdata.__file__").unwrap()
            print(json.dumps([t._exposure.mounts != [], out]))
        finally:
            t.cleanup()
    """)
    venv_python = hidden / "repo" / Path(sys.executable).relative_to(REPO)
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         'mount --bind "$0" "$1" && exec "$2" -c "$3"', str(REPO), str(hidden / "repo"),
         str(venv_python), script],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(hidden / "repo" / "src")})
    assert p.returncode == 0, p.stderr
    mounted, where = __import__("json").loads(p.stdout.strip().splitlines()[-1])
    assert mounted
    assert "/exposed/" in where
    assert stat.S_IMODE(os.stat(hidden).st_mode) == 0o700
