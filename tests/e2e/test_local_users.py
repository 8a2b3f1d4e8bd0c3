"""Other local users: what one account can make another's kbfs believe, read or write.

The other user is a uid without an account: commands run as it with ``setpriv``, and files it
"made" are made by the test and given to it with chown. Everything it owns is removed at the
end (a directory under /tmp of its own, the processes it ran).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbfs.control import status
from tests.e2e.helpers import Mounter, _unmount, wait_for
from tests.e2e.helpers import kbfs_cli as kbfs

if os.geteuid() != 0 or shutil.which("setpriv") is None:
    pytest.skip("needs root and setpriv to act as a second user", allow_module_level=True)


@dataclass
class OtherUser:
    uid: int
    home: Path  # a private directory of theirs under /tmp

    def argv(self, *cmd: str | os.PathLike[str]) -> list[str]:
        ids = [f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        return ["setpriv", *ids, *map(str, cmd)]

    def env(self) -> dict[str, str]:
        """Their own home, none of root's session."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}

    def kbfs(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(sys.executable, "-m", "kbfs", *args),
            capture_output=True,
            timeout=60,
            cwd="/",
            env=self.env(),
            check=False,
        )

    def give(self, path: Path) -> Path:
        os.chown(path, self.uid, self.uid, follow_symlinks=False)
        return path


@pytest.fixture
def other() -> Iterator[OtherUser]:
    """A uid no account uses (random, so that tests running at once do not share one)."""
    while True:
        uid = random.randrange(40000, 60000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            break
    home = Path(tempfile.mkdtemp(prefix="kbfs-other-"))
    os.chown(home, uid, uid)
    made = [home, Path(tempfile.gettempdir()) / f"kbfs-{uid}"]
    try:
        yield OtherUser(uid, home)
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


FAKE_SERVER = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
sock.listen(8)
print("ready", flush=True)
while True:
    conn, _ = sock.accept()
    with conn:
        request = json.loads(conn.makefile().readline())
        answer = {"removed": 42} if request.get("op") == "clear" else json.loads(sys.argv[2])
        conn.sendall(json.dumps(answer).encode() + b"\\n")
"""


def test_status_and_clear_believe_no_other_user(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, other: OtherUser, tmp_path: Path, monkeypatch
) -> None:
    """Another user publishes a snapshot for our mount in their own /tmp/kbfs-UID and answers
    on a socket named in it. ``kbfs status`` must not show it, ``kbfs clear`` must not report
    their "removed 42 file(s)"."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"a")
    # The mount publishes where `kbfs status` below does not look (a session's runtime dir
    # the command does not know): only the other user's snapshot can be found.
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    m = mounter(kb)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    theirs = Path(tempfile.gettempdir()) / f"kbfs-{other.uid}"
    theirs.mkdir(mode=0o700)
    other.give(theirs)
    key = status.mount_key(str(m.path))
    fake = {
        "pid": os.getpid(),
        "mountpoint": str(m.path),
        "url": "https://EVIL.example",
        "user": "EVIL",
        "control": str(theirs / f"{key}.sock"),
        "vfs": {"pending_uploads": []},
    }
    snapshot = theirs / f"{key}.json"
    snapshot.write_text(json.dumps(fake))
    other.give(snapshot)
    server = subprocess.Popen(
        other.argv(sys.executable, "-c", FAKE_SERVER, theirs / f"{key}.sock", json.dumps(fake)),
        stdout=subprocess.PIPE,
        cwd="/",
        env=other.env(),
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        r = kbfs("status", m.path)
        assert r.returncode == 0, r.stderr
        assert b"EVIL" not in r.stdout, r.stdout
        assert str(m.path).encode() in r.stdout
        r = kbfs("status", "--json")
        assert b"EVIL" not in r.stdout
        r = kbfs("clear", "--yes", m.p("projects", p, "tasks", t))
        assert r.returncode == 1 and b"removed 42" not in r.stdout + r.stderr, r
        assert [f["name"] for f in kb.task_files(t)] == ["a.txt"]
    finally:
        server.kill()
        server.wait(timeout=10)


def test_status_as_another_user_lists_the_mount_without_details(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, other: OtherUser
) -> None:
    m = mounter(kb)
    os.listdir(m.path)
    for args in (["status"], ["status", "--json"]):
        r = other.kbfs(*args)
        assert r.returncode == 0, r.stderr
        assert b"Traceback" not in r.stderr and r.stderr == b"", r.stderr
        assert str(m.path).encode() in r.stdout
        assert b"details for that user and root" in r.stdout, r.stdout
        assert kb.url.encode() not in r.stdout


def _mount_argv(kb, mp: Path, *opts: str, token_file: Path | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        "mount",
        kb.url,
        str(mp),
        "--token-file",
        str(token_file or kb.token_file),
        "-o",
        ",".join(opts),
    ]


@pytest.mark.parametrize("which", ["cache_dir", "state_dir"])
def test_a_cache_or_state_dir_of_another_user_is_refused(  # type: ignore[no-untyped-def]
    kb, other: OtherUser, tmp_path: Path, which: str
) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    dirs = {"cache_dir": tmp_path / "cache", "state_dir": tmp_path / "state"}
    dirs[which].mkdir()
    other.give(dirs[which])
    try:
        r = kbfs(*_mount_argv(kb, mp, *(f"{k}={v}" for k, v in dirs.items())), "-f")
        assert r.returncode == 1
        err = r.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and str(dirs[which]) in err, err
        assert f"belongs to uid {other.uid}" in err
        assert not os.path.ismount(mp)
    finally:
        _unmount(mp)


def test_a_log_symlink_in_the_state_dir_is_not_followed(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mp, state = tmp_path / "mp", tmp_path / "state"
    mp.mkdir()
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (state / "kbfs.log").symlink_to(victim)
    try:
        r = kbfs(*_mount_argv(kb, mp, f"state_dir={state}", f"cache_dir={tmp_path / 'c'}"))
        assert r.returncode == 1
        err = r.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "symlink" in err and str(state) in err, err
        assert victim.read_bytes() == b"precious\n"
        assert not os.path.ismount(mp)
    finally:
        _unmount(mp)


def test_the_cache_serves_only_its_own_files_of_the_records_size(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, other: OtherUser, tmp_path: Path
) -> None:
    """A file put in the cache under a file id's name (by another user, or a symlink) is not
    served as that file: what the cache serves is its user's regular file of the record's
    size, checked on the opened file."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"the real a\n")
    kb.upload_task_file(p, t, "b.txt", b"the real b\n")
    cache = tmp_path / "shared-cache"
    m = mounter(kb, f"cache_dir={cache}")
    d = m.p("projects", p, "tasks", t)
    assert (d / "a.txt").read_bytes() == b"the real a\n"
    assert (d / "b.txt").read_bytes() == b"the real b\n"
    mounter.unmount(m)
    cached = sorted(cache.rglob("task-*"))
    assert len(cached) == 2
    planted = tmp_path / "planted"
    planted.write_bytes(b"PLANTED!!!\n")  # the same size as both
    cached[0].unlink()
    cached[0].symlink_to(planted)
    cached[1].write_bytes(b"PLANTED!!!\n")
    other.give(cached[1])
    m = mounter(kb, f"cache_dir={cache}")
    d = m.p("projects", p, "tasks", t)
    assert (d / "a.txt").read_bytes() == b"the real a\n"
    assert (d / "b.txt").read_bytes() == b"the real b\n"
    assert planted.read_bytes() == b"PLANTED!!!\n"


def test_log_is_private_and_dirs_kbfs_makes_are_0700(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mp = tmp_path / "mp"
    mp.mkdir()
    state, cache = tmp_path / "s" / "deep" / "state", tmp_path / "c" / "deep" / "cache"
    old_umask = os.umask(0o022)
    try:
        r = kbfs(*_mount_argv(kb, mp, f"state_dir={state}", f"cache_dir={cache}"))
        assert r.returncode == 0, r.stderr
        os.listdir(mp)
    finally:
        os.umask(old_umask)
        _unmount(mp)
    log = state / "kbfs.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    made = [state, state.parent, cache, cache.parent, *state.iterdir(), *cache.iterdir()]
    made = [x for x in made if x.is_dir()]
    assert len(made) == 6
    for directory in made:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    # A log an older kbfs left readable by others is made private too.
    log.chmod(0o644)
    try:
        r = kbfs(*_mount_argv(kb, mp, f"state_dir={state}", f"cache_dir={cache}"))
        assert r.returncode == 0, r.stderr
    finally:
        _unmount(mp)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_default_dirs_an_older_kbfs_made_by_the_umask_become_private(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    cache, state = home / ".cache" / "kbfs", home / ".local" / "state" / "kbfs"
    cache.mkdir(parents=True)
    state.mkdir(parents=True)
    cache.chmod(0o775)  # what mkdir -p gives under umask 002
    state.chmod(0o755)
    (state / "kbfs.log").write_text("an old line\n")
    (state / "kbfs.log").chmod(0o644)
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["HOME"] = str(home)
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", "mount", kb.url, mp, "--token-file", kb.token_file],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        assert r.returncode == 0, r.stderr
    finally:
        _unmount(mp)
    for directory in (cache, state, *cache.iterdir(), *state.iterdir()):
        if directory.is_dir():
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE((state / "kbfs.log").stat().st_mode) == 0o600
    assert (state / "kbfs.log").read_text().startswith("an old line\n")


@pytest.mark.parametrize("which", ["cache_dir", "state_dir"])
def test_an_unwritable_cache_or_state_dir_is_one_line(  # type: ignore[no-untyped-def]
    kb, other: OtherUser, which: str
) -> None:
    """As a user who may not write there: one line naming the directory, no traceback."""
    home = other.home
    mp = home / "mp"
    mp.mkdir()
    other.give(mp)
    token = home / "token"
    token.write_text(kb.token)
    token.chmod(0o600)
    other.give(token)
    dirs = {"cache_dir": home / "cache", "state_dir": home / "state"}
    for directory in dirs.values():
        directory.mkdir(mode=0o700)
        other.give(directory)
    dirs[which].chmod(0o500)
    if which == "state_dir":
        dirs[which] = dirs[which] / "sub"  # kbfs has to create it; the cache dir exists
    try:
        r = other.kbfs(
            *_mount_argv(kb, mp, *(f"{k}={v}" for k, v in dirs.items()), token_file=token), "-f"
        )
        assert r.returncode == 1
        err = r.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and str(dirs[which]) in err, err
        assert "Permission denied" in err or "not writable" in err
    finally:
        _unmount(mp)


def test_the_token_leaves_the_environment_and_there_is_no_core_dump(  # type: ignore[no-untyped-def]
    kb, tmp_path: Path
) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    env = dict(os.environ, KBFS_TOKEN=kb.token)
    argv = ["mount", kb.url, str(mp), "-o", f"state_dir={tmp_path / 's'},cache_dir={tmp_path}/c"]
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", *argv], env=env, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    try:
        found = status.find_status(status.mount_containing(mp))  # type: ignore[arg-type]
        pid = int((found.status or {})["pid"])
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert kb.token.encode() not in environ
        assert b"PATH=" in environ  # the rest of the environment is still there
        limits = Path(f"/proc/{pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
        assert sorted(os.listdir(mp)) == ["by-name", "projects"]  # the token still works
    finally:
        _unmount(mp)
        wait_for(lambda: not os.path.ismount(mp), what="unmount")


def test_install_helper_does_not_follow_a_planted_temporary_file(tmp_path: Path) -> None:
    sbin, bindir = tmp_path / "sbin", tmp_path / "bin"
    sbin.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (sbin / ".mount.fuse.kbfs.kbfs-tmp").symlink_to(victim)
    r = kbfs("install-helper", "--sbin", sbin, "--bin", bindir)
    assert r.returncode == 0, r.stderr
    helper = sbin / "mount.fuse.kbfs"
    assert not helper.is_symlink() and "kbfs.mounthelper" in helper.read_text()
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
