"""mount(8), /etc/fstab, mount.fuse3 and systemd: the real ``mount``/``umount`` commands against
the built-in server, a temporary fstab (``mount --fstab``; /etc/fstab is never touched),
``systemd-analyze verify`` on every unit of systemd/, and sd_notify against a test socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounter, _unmount, run

REPO = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) with a helper needs root")


@pytest.fixture
def mp(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "kanboard"
    path.mkdir()
    try:
        yield path
    finally:
        _unmount(path)


def _opts(kb, tmp_path: Path, *extra: str) -> str:  # type: ignore[no-untyped-def]
    return ",".join(
        [
            f"token_file={kb.token_file}",
            f"cache_dir={tmp_path / 'cache'}",
            f"state_dir={tmp_path / 'state'}",
            *extra,
        ]
    )


def _daemon_pid(mp: Path) -> int:
    from kbfs.control import status

    entry = status.mount_containing(mp)
    assert entry is not None
    found = status.find_status(entry)
    assert found.status is not None, found.problem
    return int(found.status["pid"])


def _wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"kbfs process {pid} still running after unmount")


@needs_root
def test_mount_t_fuse_kbfs_then_umount(kb, mount_helper: Path, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"hello\n")
    opts = _opts(kb, tmp_path, "uid=1000,gid=1000,ro,_netdev,nofail")
    r = run("mount", "-t", "fuse.kbfs", kb.url, mp, "-o", opts)
    assert r.returncode == 0
    assert os.path.ismount(mp)  # up by the time mount(8) returned
    f = mp / "projects" / str(p) / "tasks" / str(t) / "a.txt"
    assert f.read_bytes() == b"hello\n"
    st = f.stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    w = run("cp", "/etc/hostname", f.parent / "new.txt", check=False)
    assert w.returncode != 0 and b"Read-only file system" in w.stderr
    assert "fuse.kbfs" in run("findmnt", "-no", "FSTYPE", mp).stdout.decode()
    pid = _daemon_pid(mp)
    assert run("umount", mp).returncode == 0
    assert not os.path.ismount(mp)
    _wait_gone(pid)


@needs_root
def test_fstab_line_with_systemd_options(kb, mount_helper: Path, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fstab = tmp_path / "fstab"
    opts = _opts(
        kb,
        tmp_path,
        "uid=1000,gid=1000,_netdev,noauto,nofail,x-systemd.automount,x-systemd.mount-timeout=30",
    )
    fstab.write_text(f"# test fstab\n{kb.url} {mp} fuse.kbfs {opts} 0 0\n")
    r = run("mount", "--fstab", fstab, mp)
    assert r.returncode == 0
    assert os.path.ismount(mp)
    assert sorted(os.listdir(mp)) == ["by-name", "projects"]
    pid = _daemon_pid(mp)
    assert run("umount", mp).returncode == 0
    assert not os.path.ismount(mp)
    _wait_gone(pid)


@needs_root
def test_helper_flags_as_systemd_passes_them(
    kb, mount_helper: Path, mp: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    r = run(
        mount_helper, kb.url, mp, "-n", "-s", "-v", "-o", _opts(kb, tmp_path), "-t", "fuse.kbfs"
    )
    assert r.returncode == 0
    assert os.path.ismount(mp)
    assert run("umount", mp).returncode == 0
    # -f (fake): options are checked, nothing is mounted
    assert run(mount_helper, kb.url, mp, "-f", "-o", _opts(kb, tmp_path)).returncode == 0
    assert not os.path.ismount(mp)


@needs_root
def test_mount_failures_are_one_line(kb, mount_helper: Path, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad-token"
    bad.write_text("wrong")
    bad.chmod(0o600)
    opts = _opts(kb, tmp_path).replace(str(kb.token_file), str(bad))
    r = run("mount", "-t", "fuse.kbfs", kb.url, mp, "-o", opts, check=False)
    assert r.returncode != 0
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "401" in err, err
    assert not os.path.ismount(mp)
    r = run(
        "mount",
        "-t",
        "fuse.kbfs",
        kb.url,
        mp,
        "-o",
        _opts(kb, tmp_path, "colour=blue"),
        check=False,
    )
    assert r.returncode != 0
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "'colour'" in err, err
    assert not os.path.ismount(mp)


@needs_root
def test_mount_fuse3_route_runs_kbfs_source_mountpoint(kb, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without our helper, mount(8) uses mount.fuse3, which runs ``kbfs SOURCE MP -o OPTS``."""
    mount_fuse3 = shutil.which("mount.fuse3") or "/sbin/mount.fuse3"
    if not os.path.exists(mount_fuse3):
        pytest.skip("no mount.fuse3")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not (Path(sys.executable).parent / "kbfs").exists():
        pytest.skip("no kbfs script next to this interpreter")
    opts = _opts(kb, tmp_path, "_netdev,x-systemd.automount")
    r = subprocess.run(
        [mount_fuse3, kb.url, str(mp), "-t", "fuse.kbfs", "-n", "-o", opts],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mp)
    assert run("umount", mp).returncode == 0


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (scripts/bootstrap --test installs it)")
    units = sorted((REPO / "systemd").iterdir())
    names = {u.name for u in units}
    assert {"mnt-kanboard.mount", "mnt-kanboard.automount", "kbfs@.service"} <= names
    kbfs_bin = "/usr/local/bin/kbfs"
    copies = []
    for unit in units:
        text = unit.read_text()
        if not os.access(kbfs_bin, os.X_OK):
            # verify checks that ExecStart= exists; before `kbfs install-helper` use ours
            text = text.replace(kbfs_bin, str(Path(sys.executable).parent / "kbfs"))
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(str(copy))
    service = (REPO / "systemd" / "kbfs@.service").read_text()
    for needed in ("Type=notify", "LoadCredential=kbfs-token:", "Restart=on-failure", " -f "):
        assert needed in service
    r = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, timeout=60, check=False
    )
    # verify exits 0 on some warnings ("ignoring"); a clean unit prints nothing at all.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr


def test_sd_notify_ready_once_mounted_and_stopping(
    kb, mounter: Mounter, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        m = mounter(kb, wait=False)
        messages = []
        while not any("READY=1" in x for x in messages):
            messages.append(rx.recv(4096).decode())
        assert os.path.ismount(m.path)  # READY=1 only once the mount is up
        ready = next(x for x in messages if "READY=1" in x)
        assert f"MAINPID={m.proc.pid}" in ready and "STATUS=mounted" in ready
        m.proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in x for x in messages):
            messages.append(rx.recv(4096).decode())
        assert m.proc.wait(timeout=15) == 0
        assert kb.token not in "".join(messages)
    finally:
        rx.close()


def test_mount_a_remote_of_the_config_file(kb, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[defaults]\ndir_cache_ttl = 0.5\n\n[remotes.dev]\nurl = "{kb.url}"\n'
        f'token_file = "{kb.token_file}"\ncache_dir = "cache"\nstate_dir = "state"\n'
        "ro = true\nuid = 4242\n"
    )
    kbfs = [sys.executable, "-m", "kbfs"]
    r = run(*kbfs, "-v", "mount", "dev", mp, "--config", config, "-o", "uid=1000")
    assert r.returncode == 0
    try:
        assert os.path.ismount(mp)
        st = os.stat(mp / "projects")
        assert st.st_uid == 1000  # the command line beats the file
        assert (tmp_path / "state" / "kbfs.log").exists()  # relative to the config file
        w = run("touch", mp / "projects" / "x", check=False)
        assert w.returncode != 0
    finally:
        run(*kbfs, "umount", mp, check=False)
    config.write_text(f'[remotes.dev]\nurl = "{kb.url}"\nuid = 1000\ncolour = "blue"\n')
    r = run(*kbfs, "mount", "dev", mp, "--config", config, check=False)
    err = r.stderr.decode().strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1
    assert f"{config}:4:" in err and "'colour'" in err, err
    config.write_text(f'[remotes.dev]\nurl = "{kb.url}"\n')
    r = run(*kbfs, "mount", "nosuchremote", mp, "--config", config, check=False)
    assert r.returncode == 1 and b"no remote of that name" in r.stderr
    assert not os.path.ismount(mp)
