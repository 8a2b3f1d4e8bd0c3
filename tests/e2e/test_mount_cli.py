"""`kbfs mount`, `kbfs umount`, `kbfs demo`: start-up checks, background mode, clean stops,
user auth and project roles, a server that goes away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounter, _unmount, kbfs_cli, run


def kbfs(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return kbfs_cli(*args, env=env, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mp(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "mp"
    path.mkdir()
    yield path
    _unmount(path)


def _secret(tmp_path: Path, text: str) -> Path:
    f = tmp_path / f"secret-{abs(hash(text))}"
    f.write_text(text)
    f.chmod(0o600)
    return f


def test_wrong_token_is_one_line_and_no_mount(kb, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = kbfs("mount", kb.url, mp, "--token-file", _secret(tmp_path, "wrong"), "-f")
    assert r.returncode != 0
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "401" in err
    assert not os.path.ismount(mp)
    # background mode too: the parent reports the child's failure
    r = kbfs("mount", kb.url, mp, "--token-file", _secret(tmp_path, "wrong"))
    assert r.returncode != 0 and "401" in r.stderr.decode()
    assert not os.path.ismount(mp)


class _HtmlSite(BaseHTTPRequestHandler):
    """Some web site that is not Kanboard: HTML for every request."""

    def do_POST(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def html_site():  # type: ignore[no-untyped-def]
    server = HTTPServer(("127.0.0.1", 0), _HtmlSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _StatusSite(BaseHTTPRequestHandler):
    """A web server whose path answers POST with 404 or 405 (nginx serving a static site)."""

    def do_POST(self) -> None:
        self.send_response(404 if self.path.startswith("/missing") else 405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_site():  # type: ignore[no-untyped-def]
    server = HTTPServer(("127.0.0.1", 0), _StatusSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def static_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``python3 -m http.server``: answers every POST with HTTP 501."""
    port = _free_port()
    root = tmp_path / "www"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "-d", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_refused_connection_and_non_kanboard_url(  # type: ignore[no-untyped-def]
    kb, mp: Path, html_site: str, status_site: str, static_server: str
) -> None:
    """Something that is not Kanboard at the URL is named as such, with what it answered."""
    cases = [
        (f"http://127.0.0.1:{_free_port()}", "cannot connect"),
        (html_site, "not a Kanboard JSON-RPC endpoint (an HTML page instead of JSON)"),
        (static_server, "not a Kanboard JSON-RPC endpoint (HTTP 501 Unsupported method"),
        (f"{status_site}/missing/", "not a Kanboard JSON-RPC endpoint (HTTP 404 Not Found)"),
        (status_site, "not a Kanboard JSON-RPC endpoint (HTTP 405 Method Not Allowed)"),
    ]
    for url, expected in cases:
        r = kbfs("mount", url, mp, "--token-file", kb.token_file, "-f", "-o", "timeout=5")
        err = r.stderr.decode().strip()
        assert r.returncode != 0, url
        assert len(err.splitlines()) == 1, err
        assert expected in err, err
        assert not os.path.ismount(mp)


def test_token_never_in_argv_and_env_token_works(kb, mp: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, KBFS_TOKEN=kb.token)
    state = tmp_path / "state"
    r = kbfs("mount", kb.url, mp, "-o", f"state_dir={state},cache_dir={tmp_path / 'c'}", env=env)
    assert r.returncode == 0, r.stderr
    try:
        assert os.path.ismount(mp)  # up by the time the command returned
        assert sorted(os.listdir(mp)) == ["by-name", "projects"]
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                assert kb.token.encode() not in cmdline
        log = (state / "kbfs.log").read_text()
        assert kb.token not in log
    finally:
        r = kbfs("umount", mp)
    assert r.returncode == 0
    deadline = time.monotonic() + 10
    while os.path.ismount(mp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.ismount(mp)


def test_sigterm_finishes_and_unmounts(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    m = mounter(kb)
    os.listdir(m.path)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=15) == 0
    assert not os.path.ismount(m.path)


def test_sigint_while_upload_in_flight_finishes_it(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    m = mounter(kb)
    d = m.p("projects", p, "tasks", t)
    os.listdir(d)
    kb.config(latency=1.0)
    writer = subprocess.Popen(["cp", "/etc/hostname", str(d / "slow.txt")])
    time.sleep(0.5)  # the upload is now in flight
    m.proc.send_signal(signal.SIGINT)
    assert writer.wait(timeout=20) == 0
    assert m.proc.wait(timeout=20) == 0
    kb.config(latency=0)
    assert [f["name"] for f in kb.task_files(t)] == ["slow.txt"]


def test_user_auth_roles(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p_member = kb.project("member-project")
    p_viewer = kb.project("viewer-project")
    kb.project("no-access")
    t_member = kb.task(p_member, "t1")
    t_viewer = kb.task(p_viewer, "t2")
    kb.upload_task_file(p_viewer, t_viewer, "readme.txt", b"read me\n")
    uid = kb.rpc("createUser", {"username": "alice", "password": "alice-pass-123"})
    kb.rpc("addProjectUser", {"project_id": p_member, "user_id": uid, "role": "project-member"})
    kb.rpc("addProjectUser", {"project_id": p_viewer, "user_id": uid, "role": "project-viewer"})
    m = mounter(kb, user="alice", secret_file=_secret(tmp_path, "alice-pass-123"))
    assert sorted(os.listdir(m.p("projects"))) == sorted([str(p_member), str(p_viewer)])
    # viewer: readable, shown read-only, writes refused with EACCES
    f = m.p("projects", p_viewer, "tasks", t_viewer, "readme.txt")
    assert f.read_bytes() == b"read me\n"
    assert f.stat().st_mode & 0o222 == 0
    r = run("cp", "/etc/hostname", f.parent / "new.txt", check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = run("rm", f, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # member: can write
    run("cp", "/etc/hostname", m.p("projects", p_member, "tasks", t_member, "host.txt"))
    assert [x["name"] for x in kb.task_files(t_member)] == ["host.txt"]


def test_server_403_becomes_eacces(kb, mnt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    d = mnt.p("projects", p, "tasks", t)
    os.listdir(d)
    kb.fault("createTaskFile", "http403", count=1)
    r = run("cp", "/etc/hostname", d / "x.txt", check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr


def test_server_gone_cached_content_stays_readable(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"cached\n")
    m = mounter(kb, "timeout=3", ttl=0.2)
    m.allow_errors = True
    f = m.p("projects", p, "tasks", t, "a.txt")
    assert f.read_bytes() == b"cached\n"
    kb.stop()
    time.sleep(0.5)
    start = time.monotonic()
    assert run("cat", f).stdout == b"cached\n"
    r = run("cp", "/etc/hostname", f.parent / "new.txt", check=False)
    assert r.returncode != 0
    assert time.monotonic() - start < 20
    assert os.path.ismount(m.path)


def _start_demo(tmp_path: Path, mp: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``kbfs demo`` with its temporary and state directories inside ``tmp_path``."""
    env = dict(
        os.environ, TMPDIR=str(tmp_path / "tmp"), XDG_STATE_HOME=str(tmp_path / "state-home")
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbfs", "demo", str(mp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 30
    while not os.path.ismount(mp):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, env


def test_demo_mounts_sample_data_and_cleans_up(tmp_path: Path) -> None:
    """Ctrl-C: the demo says what it does, keeps a file never uploaded where it says, removes
    its temporary state and the mount point it created."""
    mp = tmp_path / "demo"
    proc, _ = _start_demo(tmp_path, mp)
    try:
        projects = os.listdir(mp / "projects")
        assert len(projects) >= 2
        out = run("find", mp / "projects", "-type", "f").stdout.decode().splitlines()
        assert any(x.endswith(".png") for x in out)
        png = next(x for x in out if x.endswith(".png"))
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        task_dir = next(Path(x).parent for x in out if "/tasks/" in x)
        swap = task_dir / ".notes.txt.swp"  # a local-only name: never uploaded
        source = tmp_path / "notes"
        source.write_bytes(b"unsaved work\n")
        run("cp", source, swap)
        run("cp", source, task_dir / "uploaded.txt")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not os.path.ismount(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
        _unmount(mp)
    said = proc.stdout.read().decode() if proc.stdout else ""
    assert "unmounted" in said and "stopped the built-in server" in said, said
    errors = proc.stderr.read().decode() if proc.stderr else ""
    assert "SIGINT: finishing uploads in flight, then unmounting" in errors, errors
    kept_line = next(line for line in said.splitlines() if "kept 1 file(s)" in line)
    kept = Path(kept_line.split(" in ", 1)[1])
    assert kept.is_relative_to(tmp_path / "state-home" / "kbfs"), kept
    rel = task_dir.relative_to(mp)
    assert (kept / rel / ".notes.txt.swp").read_bytes() == b"unsaved work\n"
    assert [p.name for p in kept.rglob("*") if p.is_file()] == [".notes.txt.swp"]
    assert f"removed the mount point {mp}" in said
    assert not mp.exists()
    assert os.listdir(tmp_path / "tmp") == []  # server data, token, cache: gone


def test_demo_sigterm_leaves_a_given_mount_point(tmp_path: Path) -> None:
    """SIGTERM ends the demo the same way; a mount point that existed before stays, and with
    nothing left unsaved nothing is kept."""
    mp = tmp_path / "given"
    mp.mkdir()
    proc, _ = _start_demo(tmp_path, mp)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _unmount(mp)
    said = proc.stdout.read().decode() if proc.stdout else ""
    assert "unmounted" in said and "kept" not in said and "mount point" not in said, said
    assert mp.is_dir() and not os.path.ismount(mp)
    assert os.listdir(tmp_path / "tmp") == []
    assert not (tmp_path / "state-home").exists()


def test_demo_help_shows_the_real_default_mount_point(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    r = kbfs("demo", "--help", env=env)
    text = r.stdout.decode()
    assert r.returncode == 0 and f"default mount point: {runtime / 'kbfs-demo'}\n" in text, text
    env = dict(os.environ, HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path / "missing"))
    r = kbfs("demo", "--help", env=env)
    text = r.stdout.decode()
    assert f"default mount point: {tmp_path / 'kbfs-demo'}\n" in text, text
