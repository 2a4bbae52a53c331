"""The network-filesystem emulator (htpdata.testing.nfsemu) and the syscall counter.

Real FUSE mounts: skipped with the reason when /dev/fuse, fusermount3 or pyfuse3 is missing and
HTPDATA_REQUIRE_SERVERS is unset, a failure when it is set (CI). The tests with other Unix
users run only as root, with the tenants of :mod:`htpdata.testing.users`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htpdata.testing.nfsemu import (
    META_OPS,
    NfsEmulator,
    NfsEmulatorError,
    OpCounts,
    is_mounted,
    unavailable_reason,
)
from htpdata.testing.syscount import count_syscalls, parse_trace, strace_available
from htpdata.testing.users import GROUP, ensure_users, make_shared_tier


def _need(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("HTPDATA_REQUIRE_SERVERS"):
        pytest.fail(f"{reason}, but HTPDATA_REQUIRE_SERVERS is set")
    pytest.skip(reason)


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    folder = tmp_path / "backing"
    folder.mkdir()
    folder.chmod(0o1777)  # a shared volume's top: everyone may create, only owners remove
    return folder


@pytest.fixture
def emu(backing: Path) -> Iterator[NfsEmulator]:
    _need(unavailable_reason())
    with NfsEmulator(backing, mounts=2, meta_latency_ms=0.2) as e:
        yield e


def _users() -> dict[str, pwd.struct_passwd]:
    """The tenants of htpdata.testing.users (created once, reused), or a skip when not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run commands as other Unix users")
    return ensure_users()


def _as_user(user: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``user`` (Debian's Python: every user may run it)."""
    return subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c",
                           textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          check=False)


# -- counters: pure ------------------------------------------------------------------------
def test_opcounts_add_subtract_and_meta() -> None:
    a = OpCounts({"lookup": 3, "read": 5, "forget": 2}, bytes_read=100, latency_s=0.5)
    b = OpCounts({"lookup": 1, "create": 2}, bytes_written=7, latency_s=0.25)
    assert (a + b)["lookup"] == 4
    assert (a + b).meta == 6  # lookup 4 + create 2; read is data, forget only counted
    assert (a + b).data == 5
    assert (a + b - b).ops == a.ops
    assert (a - b)["create"] == -2
    assert OpCounts.from_json((a + b).to_json()) == a + b
    assert a["never"] == 0
    assert "lookup" in META_OPS
    assert "read" not in META_OPS


# -- passthrough correctness ---------------------------------------------------------------
@pytest.mark.fuse
def test_bytes_written_on_one_node_are_read_back_on_the_other(emu: NfsEmulator,
                                                              backing: Path) -> None:
    a, b = emu.mounts
    data = os.urandom(3 * 1024 * 1024 + 17)
    (a / "blob").write_bytes(data)
    assert (b / "blob").read_bytes() == data
    assert (backing / "blob").read_bytes() == data
    with open(b / "blob", "rb") as f:
        f.seek(1_000_003)
        assert f.read(65536) == data[1_000_003:1_000_003 + 65536]
    counts = emu.counters()
    assert counts.bytes_written == len(data)
    assert counts.bytes_read >= len(data)
    assert emu.counters(0)["create"] == 1
    assert emu.counters(1)["create"] == 0


@pytest.mark.fuse
def test_o_excl_race_between_the_two_nodes_has_one_winner(emu: NfsEmulator) -> None:
    a, b = emu.mounts
    rounds = 40
    for i in range(rounds):  # both nodes first cache the name as absent
        for m in (a, b):
            assert not (m / f"claim{i}").exists()
    wins: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def contend(node: int, mount: Path) -> None:
        try:
            for i in range(rounds):
                barrier.wait(10)
                try:
                    fd = os.open(mount / f"claim{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                except FileExistsError:
                    continue
                os.write(fd, str(node).encode())
                os.close(fd)
                wins.append((i, node))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(n, m)) for n, m in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(i for i, _ in wins) == list(range(rounds))  # exactly one winner per name
    for i, node in wins:
        assert (a / f"claim{i}").read_text() == str(node)


@pytest.mark.fuse
def test_create_on_a_name_the_node_cached_as_absent_opens_the_other_nodes_file(
        emu: NfsEmulator) -> None:
    a, b = emu.mounts
    assert not (b / "late").exists()  # b caches "no such name" for the negative timeout
    (a / "late").write_text("from a")
    with open(b / "late", "a") as f:  # O_CREAT without O_EXCL: must open a's file, not fail
        f.write(" and b")
    assert (a / "late").read_text() == "from a and b"


@pytest.mark.fuse
def test_rename_over_is_atomic_seen_from_the_other_node(emu: NfsEmulator) -> None:
    a, b = emu.mounts
    size = 256 * 1024
    (a / "target").write_bytes(b"\0" * size)
    stop = threading.Event()
    versions = 0

    def writer() -> None:
        nonlocal versions
        v = 0
        while not stop.is_set():
            v = (v + 1) % 250 + 1
            tmp = a / f".target.{v}.tmp"
            tmp.write_bytes(bytes([v]) * size)
            os.rename(tmp, a / "target")
            versions += 1
            time.sleep(0.002)

    t = threading.Thread(target=writer)
    t.start()
    reads = stale = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                data = (b / "target").read_bytes()
            except OSError as exc:
                # ESTALE can reach a reader when the file is replaced twice within one open
                # (as on NFS); a missing or half-written file never may.
                if exc.errno != errno.ESTALE:
                    raise
                stale += 1
                continue
            reads += 1
            assert len(data) == size
            assert data == data[:1] * size  # one whole version, never a mix
    finally:
        stop.set()
        t.join(30)
    assert versions > 20
    assert reads > 20
    assert stale <= reads  # rare, not the rule


@pytest.mark.fuse
def test_descriptor_calls_and_flags(emu: NfsEmulator, backing: Path) -> None:
    a, b = emu.mounts
    dfd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir("d", 0o755, dir_fd=dfd)
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
        fd = os.open("f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640, dir_fd=sub)
        os.write(fd, b"abcdef")
        assert os.fstat(fd).st_size == 6
        os.ftruncate(fd, 3)
        os.fchmod(fd, 0o600)
        os.close(fd)
        with pytest.raises(FileExistsError):
            os.open("f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600, dir_fd=sub)
        os.rename("f", "g", src_dir_fd=sub, dst_dir_fd=dfd)  # renameat across folders
        os.symlink("g", "link", dir_fd=dfd)
        assert os.readlink("link", dir_fd=dfd) == "g"
        with pytest.raises(OSError, match="Too many levels of symbolic links"):
            os.open("link", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)  # ELOOP
        with pytest.raises(NotADirectoryError):
            os.open("g", os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
        os.link("g", "hard", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.utime("g", ns=(1_000_000_000, 2_000_000_000), dir_fd=dfd)
        os.unlink("hard", dir_fd=dfd)
        os.close(sub)
        os.rmdir("d", dir_fd=dfd)
    finally:
        os.close(dfd)
    st = os.stat(backing / "g")
    assert (st.st_size, oct(st.st_mode & 0o7777), st.st_mtime_ns) == (3, "0o600", 2_000_000_000)
    assert (b / "g").read_bytes() == b"abc"
    assert sorted(os.listdir(b)) == ["g", "link"]
    assert os.stat(a / "g").st_ino == os.stat(b / "g").st_ino == st.st_ino


@pytest.mark.fuse
def test_rename_noreplace_and_exchange(emu: NfsEmulator) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = emu.mounts
    (a / "one").write_text("1")
    (a / "two").write_text("2")

    def renameat2(src: Path, dst: Path, flags: int) -> int:
        ret = libc.renameat2(-100, bytes(src), -100, bytes(dst), flags)  # AT_FDCWD
        return 0 if ret == 0 else ctypes.get_errno()

    assert renameat2(a / "one", a / "two", 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert renameat2(a / "one", a / "two", 2) == 0  # RENAME_EXCHANGE
    assert (b / "one").read_text() == "2"
    assert (b / "two").read_text() == "1"


@pytest.mark.fuse
def test_mode_follows_the_callers_umask_and_setgid_folders(emu: NfsEmulator,
                                                           backing: Path) -> None:
    a, _ = emu.mounts
    old = os.umask(0o027)
    try:
        fd = os.open(a / "m", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(a / "sg", 0o777)
    finally:
        os.umask(old)
    assert oct(os.stat(backing / "m").st_mode & 0o7777) == "0o640"
    os.chown(a / "sg", 0 if os.geteuid() == 0 else -1, os.getgid())
    os.chmod(a / "sg", 0o2775)
    os.mkdir(a / "sg" / "inner")
    assert os.stat(backing / "sg" / "inner").st_mode & 0o2000  # setgid is inherited


@pytest.mark.fuse
def test_other_users_files_are_theirs_and_the_kernel_enforces_permissions(
        emu: NfsEmulator, backing: Path) -> None:
    users = _users()
    alice = users["htpalice"]
    cms = grp.getgrnam(GROUP).gr_gid
    a, b = emu.mounts
    make_shared_tier(a / "shared", trust="group")  # its group area: htpcache:htpcms 3770
    (a / "roots").write_text("root's")
    os.chmod(a / "roots", 0o644)
    r = _as_user("htpalice", f"""
        import os
        os.umask(0o022)
        open('{a}/shared/group/mine', 'w').write('alice')
        os.mkdir('{b}/shared/group/sub')
        os.symlink('mine', '{a}/shared/group/ln')
        open('{b}/private', 'w').write('alice, group from her primary group')
    """)
    assert r.returncode == 0, r.stderr
    for name, gid in [("shared/group/mine", cms), ("shared/group/sub", cms),
                      ("shared/group/ln", cms),
                      ("private", alice.pw_gid)]:
        st = os.lstat(backing / name)
        assert (st.st_uid, st.st_gid) == (alice.pw_uid, gid), name
    assert os.stat(backing / "shared" / "group" / "sub").st_mode & 0o2000  # setgid is inherited
    assert oct(os.stat(backing / "shared" / "group" / "mine").st_mode & 0o777) == "0o644"

    probe = textwrap.dedent("""
        import os, errno
        for what, call in CALLS:
            try:
                call()
                print(what, 'allowed')
            except OSError as e:
                print(what, errno.errorcode[e.errno])
    """)
    mallory = _as_user("htpmallory", probe.replace("CALLS", f"""[
        ('unlink', lambda: os.unlink('{b}/shared/group/mine')),            # sticky: not hers
        ('replace', lambda: os.rename('{b}/shared/group/sub', '{b}/x')),   # nor this
        ('write', lambda: open('{a}/shared/group/mine', 'a')),             # 0644, not hers
        ('chmod', lambda: os.chmod('{b}/roots', 0o666)),
        ('create', lambda: open('{a}/shared/group/mallorys', 'w').close()),  # group-writable tier
    ]"""))
    assert mallory.stdout.split() == ["unlink", "EPERM", "replace", "EPERM", "write", "EACCES",
                                      "chmod", "EPERM", "create", "allowed"], mallory.stderr
    outsider = _as_user("htpeve", probe.replace("CALLS", f"""[
        ('create', lambda: open('{a}/shared/group/eves', 'w').close()),  # not in htpcms
    ]"""))
    assert outsider.stdout.split() == ["create", "EACCES"], outsider.stderr
    assert os.stat(b / "shared" / "group" / "mine").st_uid == alice.pw_uid  # the other node
    assert not (backing / "shared" / "group" / "eves").exists()


# -- caches and consistency ----------------------------------------------------------------
@pytest.mark.fuse
def test_each_node_has_its_own_attribute_cache_and_open_revalidates(backing: Path) -> None:
    _need(unavailable_reason())
    with NfsEmulator(backing, mounts=2, meta_latency_ms=0, attr_timeout=60,
                     entry_timeout=60) as emu:
        a, b = emu.mounts
        (a / "grow").write_bytes(b"1" * 10)
        assert os.stat(b / "grow").st_size == 10
        with open(a / "grow", "ab") as f:
            f.write(b"2" * 10)
        assert os.stat(a / "grow").st_size == 20  # the writer's node knows its writes
        assert os.stat(b / "grow").st_size == 10  # the other node trusts its cache
        assert (b / "grow").read_bytes() == b"1" * 10 + b"2" * 10  # close-to-open
        assert os.stat(b / "grow").st_size == 20
        before = emu.counters(1)
        for _ in range(20):
            os.stat(b / "grow")
        assert (emu.counters(1) - before).meta == 0  # served from the node's cache
        os.unlink(a / "grow")
        with pytest.raises(FileNotFoundError):
            (b / "grow").read_bytes()  # the stale inode answers ESTALE; the kernel looks again


@pytest.mark.fuse
def test_a_node_reaches_many_inodes_by_file_handle_with_few_descriptors(backing: Path) -> None:
    _need(unavailable_reason())
    if os.geteuid() != 0:
        pytest.skip("file handles (open_by_handle_at) need root; otherwise fds are held")
    with NfsEmulator(backing, mounts=2, meta_latency_ms=0, fd_cache=16) as emu:
        a, b = emu.mounts
        for i in range(200):
            (a / f"f{i}").write_text(str(i))
        assert sorted(os.listdir(b), key=lambda n: int(n[1:])) == [f"f{i}" for i in range(200)]
        assert all((b / f"f{i}").read_text() == str(i) for i in range(200))
        state = emu.server_state(1)
        assert state["inodes"] >= 200  # the kernel holds them all
        assert state["open_fds"] < 60  # the server does not
        held = open(b / "f0", "rb")  # noqa: SIM115  (closed below)
        try:
            for i in range(200):
                os.unlink(a / f"f{i}")
            assert held.read() == b"0"  # an open file on this node survives its removal
            with pytest.raises(FileNotFoundError):
                (b / "f150").read_text()  # removed: ESTALE from its handle, then ENOENT
        finally:
            held.close()


@pytest.mark.fuse
def test_latency_is_slept_per_counted_metadata_operation(backing: Path) -> None:
    _need(unavailable_reason())
    with NfsEmulator(backing, mounts=1, meta_latency_ms=5) as emu:
        m = emu.mounts[0]
        start = time.monotonic()
        for i in range(40):
            assert not (m / f"absent{i}").exists()
        elapsed = time.monotonic() - start
        counts = emu.reset()
        assert counts["lookup"] >= 40
        assert counts.latency_s == pytest.approx(counts.meta * 0.005)
        assert counts.meta * 0.005 <= elapsed  # one client, one request at a time
        emu.set_latency(meta_ms=0)
        assert not (m / "absent-again").exists()
        assert emu.counters().latency_s == 0


def test_nfs_round_trips_sleeps_no_opendir_and_no_end_of_listing(backing: Path) -> None:
    """FUSE asks for a folder's open and once more for the end of a listing; an NFS client
    sends neither. With ``nfs_round_trips`` both are counted, not slept."""
    _need(unavailable_reason())
    for name in ("a", "b", "c"):
        (backing / "d").mkdir(exist_ok=True)
        (backing / "d" / name).write_bytes(b"x")
    for nfs in (False, True):
        with NfsEmulator(backing, mounts=1, meta_latency_ms=5, nfs_round_trips=nfs) as emu:
            fd = os.open(emu.mounts[0] / "d", os.O_RDONLY | os.O_DIRECTORY)
            emu.reset()
            try:
                with os.scandir(fd) as it:
                    assert sorted(e.name for e in it) == ["a", "b", "c"]
            finally:
                os.close(fd)
            counts = emu.reset()
            assert counts["readdir"] == 2  # the names, then the end
            slept = 1 if nfs else 2
            assert counts.latency_s == pytest.approx(slept * 0.005 + (
                counts.meta - counts["readdir"]) * 0.005)
            fd = os.open(emu.mounts[0] / "d", os.O_RDONLY | os.O_DIRECTORY)
            os.close(fd)
            counts = emu.reset()
            assert counts["opendir"] == 1
            assert counts.latency_s == pytest.approx(
                (counts.meta - (1 if nfs else 0)) * 0.005)


@pytest.mark.fuse
def test_a_tier_listing_is_one_request_and_complete_over_many_pages(emu: NfsEmulator) -> None:
    """``list_names`` through FUSE: a folder that just changed is listed in one ``readdir``
    (``os.scandir`` adds glibc's ``fstat`` and a ``readdir`` for the end); a folder of many
    names, which FUSE answers a page at a time, is still listed whole."""
    from htpdata.cache.fsops import list_names

    folder = emu.mounts[0] / "entry"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("p.1", "c.2", "a"):
            (folder / name).write_bytes(b"x")
        emu.reset()
        assert sorted(list_names(fd)) == ["a", "c.2", "p.1"]
        counts = emu.reset()
        assert (counts["readdir"], counts["getattr"]) == (1, 0)
        (folder / "c.3").write_bytes(b"x")
        emu.reset()
        with os.scandir(fd) as it:
            assert len(list(it)) == 4
        counts = emu.reset()
        assert (counts["readdir"], counts["getattr"]) == (2, 1)
        many = sorted(f"c.{i:04d}.{'y' * 120}" for i in range(300))
        for name in many:
            (folder / name).write_bytes(b"")
        emu.reset()
        assert sorted(list_names(fd)) == sorted([*many, "a", "c.2", "c.3", "p.1"])
        assert emu.reset()["readdir"] > 2  # many pages
    finally:
        os.close(fd)


@pytest.mark.fuse
def test_counters_and_reset_per_node(emu: NfsEmulator) -> None:
    a, b = emu.mounts
    (a / "x").write_text("x")
    os.mkdir(a / "dir")
    os.rename(a / "x", a / "dir" / "y")
    phase = emu.reset()
    assert phase["create"] == 1
    assert phase["mkdir"] == 1
    assert phase["rename"] == 1
    assert phase["write"] == 1
    assert phase["release"] == 1
    assert emu.counters().total == 0
    os.listdir(b / "dir")
    assert emu.counters(0).total == 0
    assert emu.counters(1)["readdir"] >= 1
    assert emu.counters(1)["opendir"] == 1


# -- robustness ----------------------------------------------------------------------------
_LOOP_CLIENT = """
import os, sys
m, tag = sys.argv[1], sys.argv[2]
fds = [os.open(os.path.join(m, 'held'), os.O_RDONLY)]
print('ready', flush=True)
i = 0
while True:
    i += 1
    p = os.path.join(m, f'{tag}-{i % 50}')
    with open(p, 'wb') as f:
        f.write(b'x' * 4096)
    os.rename(p, p + '.r')
    os.stat(p + '.r')
    os.unlink(p + '.r')
"""


@pytest.mark.fuse
def test_a_killed_client_leaves_a_working_mount(emu: NfsEmulator) -> None:
    a, b = emu.mounts
    (a / "held").write_text("held")
    clients = [subprocess.Popen([sys.executable, "-c", _LOOP_CLIENT, str(m), f"c{n}"],
                                stdout=subprocess.PIPE, text=True) for n, m in enumerate((a, b))]
    try:
        for c in clients:
            assert c.stdout is not None
            assert c.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        for c in clients:
            c.kill()
            c.communicate(timeout=10)
    (a / "after").write_text("still fine")
    assert (b / "after").read_text() == "still fine"
    assert emu.counters()["rename"] > 0


@pytest.mark.fuse
def test_stop_while_a_client_holds_files_open(backing: Path) -> None:
    _need(unavailable_reason())
    emu = NfsEmulator(backing, mounts=2, meta_latency_ms=0.2).start()
    a, b = emu.mounts
    try:
        (a / "held").write_text("held")
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent("""
                import os, sys, time
                fds = [os.open(os.path.join(m, 'held'), os.O_RDONLY) for m in sys.argv[1:]]
                dfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
                print('ready', flush=True)
                sys.stdin.readline()
                try:
                    os.pread(fds[0], 4, 0)
                    print('read ok')
                except OSError as e:
                    print('error', e.errno)
            """), str(a), str(b)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        own = os.open(b / "held", os.O_RDONLY)
    except BaseException:
        emu.stop()
        raise
    start = time.monotonic()
    emu.stop()
    assert time.monotonic() - start < 15
    assert not is_mounted(a)
    assert not is_mounted(b)
    out, _ = holder.communicate("go\n", timeout=15)  # the holder does not hang
    assert out.strip() in ("read ok", f"error {errno.ENOTCONN}", f"error {errno.EIO}")
    with pytest.raises(OSError, match="not connected"):
        os.pread(own, 4, 0)
    with contextlib.suppress(OSError):
        os.close(own)  # the flush fails (ENOTCONN) but the descriptor is closed


@pytest.mark.fuse
def test_a_killed_server_is_unmounted_by_stop(backing: Path) -> None:
    _need(unavailable_reason())
    with NfsEmulator(backing, mounts=2, meta_latency_ms=0) as emu:
        a = emu.mounts[0]
        os.kill(emu.pids[0], signal.SIGKILL)
        emu.procs[0].wait(10)
        with pytest.raises(OSError, match="not connected"):
            os.listdir(a)  # ENOTCONN, at once: no hang
    assert not is_mounted(a)


@pytest.mark.fuse
def test_servers_unmount_when_their_parent_dies(backing: Path, tmp_path: Path) -> None:
    _need(unavailable_reason())
    script = textwrap.dedent(f"""
        import sys
        from htpdata.testing.nfsemu import NfsEmulator
        emu = NfsEmulator({str(backing)!r}, mounts=2).start()
        print(*emu.mounts, flush=True)
        sys.stdin.readline()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    mounts = parent.stdout.readline().split()
    assert len(mounts) == 2
    assert all(is_mounted(m) for m in mounts)
    parent.kill()
    parent.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while any(is_mounted(m) for m in mounts) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(is_mounted(m) for m in mounts)
    for m in mounts:  # what the dead parent would have cleaned up
        shutil.rmtree(Path(m).parent, ignore_errors=True)


def test_a_missing_backing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NfsEmulatorError, match="does not exist"):
        NfsEmulator(tmp_path / "nope")


# -- syscall counting ----------------------------------------------------------------------
_TRACE = """\
100 openat(AT_FDCWD</t>, "claim", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</t/claim>
100 unlinkat(AT_FDCWD</t>, "claim", 0) = 0
100 openat(AT_FDCWD</t>, "/t/e/.tmp1", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 4</t/e/.tmp1>
100 fstat(4</t/e/.tmp1>, {st_mode=S_IFREG|0644, st_size=0, ...}) = 0
101 rename("/t/e/.tmp1", "/t/e/data" <unfinished ...>
100 newfstatat(AT_FDCWD</t>, "/t/e/nope", 0x7ffd, 0) = -1 ENOENT (No such file or directory)
101 <... rename resumed>) = 0
100 openat(AT_FDCWD</t>, "/t/e/data", O_RDONLY|O_CLOEXEC) = 5</t/e/data>
100 openat(AT_FDCWD</t>, "/elsewhere/x", O_RDONLY|O_CREAT, 0644) = 6</elsewhere/x>
100 getdents64(7</t/e>, 0x55 /* 3 entries */, 32768) = 80
100 openat(AT_FDCWD</t>, "old", O_WRONLY|O_CREAT, 0644) = 8</t/old>
100 mkdirat(AT_FDCWD</t>, "sub", 0755) = 0
100 unlinkat(AT_FDCWD</t>, "sub", AT_REMOVEDIR) = 0
100 statx(AT_FDCWD</t>, "e/data", AT_STATX_SYNC_AS_STAT, STATX_ALL, {stx_mask=0x1, ...}) = 0
"""


def test_parse_trace_counts_kinds_and_follows_files_through_renames() -> None:
    counts = parse_trace(_TRACE.splitlines(), ["/t"], existing=["/t/old", "/t/e"])
    assert counts.kinds == {"open_create": 3, "open": 1, "unlink": 1, "stat": 3, "rename": 1,
                            "listdir": 1, "mkdir": 1, "rmdir": 1}
    assert counts.failed == 1
    assert counts.files_transient == 1  # the claim
    assert counts.lasting_paths == ("/t/e/data",)  # the temporary file renamed into place
    assert counts.dirs_created == 1
    assert counts.metadata == 12


def test_parse_trace_counts_only_the_calls_in_a_window() -> None:
    trace = [
        '7 100.5 newfstatat(AT_FDCWD</t>, "a", 0x1, 0) = -1 ENOENT (No such file or directory)',
        '7 101.0 openat(AT_FDCWD</t>, "a", O_WRONLY|O_CREAT|O_EXCL, 0600 <unfinished ...>',
        '8 101.2 getdents64(3</t>, 0x55 /* 2 entries */, 32768) = 48',
        '7 101.5 <... openat resumed>) = 4</t/a>',
        '7 103.0 unlinkat(AT_FDCWD</t>, "a", 0) = 0',
    ]
    counts = parse_trace(trace, ["/t"], since=101.1, until=102.0)
    assert counts.kinds == {"listdir": 1, "open_create": 1}
    assert counts.files_transient == 1  # files are followed through the whole trace


def test_count_syscalls_runs_a_command_under_strace(tmp_path: Path) -> None:
    _need(strace_available())
    work = tmp_path / "tier"
    work.mkdir()
    code = textwrap.dedent(f"""
        import os, subprocess
        os.chdir({str(work)!r})
        for i in range(5):
            fd = os.open(f'claim{{i}}', os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            os.unlink(f'claim{{i}}')
        open('.t', 'w').write('x')
        os.rename('.t', 'data')
        os.listdir('.')
        subprocess.run(['touch', 'bychild'], check=True)
        open('/dev/null').close()
    """)
    counts = count_syscalls([sys.executable, "-c", code], [work])
    assert counts.returncode == 0
    assert counts.files_transient == 5
    assert counts.files_lasting == 2
    assert counts.lasting_paths[0].endswith("bychild")
    assert counts.kind("open_create") == 7
    assert counts.kind("unlink") == 5
    assert counts.kind("rename") == 1
    assert counts.kind("listdir") >= 1


@pytest.mark.fuse
def test_strace_and_the_emulator_see_the_same_creates(emu: NfsEmulator) -> None:
    _need(strace_available())
    a, _ = emu.mounts
    code = ("import os\n"
            f"for i in range(10): open(os.path.join({str(a)!r}, f'f{{i}}'), 'w').close()\n")
    emu.reset()
    counts = count_syscalls([sys.executable, "-c", code], [a])
    ops = emu.counters()
    assert counts.files_lasting == 10 == ops["create"]
