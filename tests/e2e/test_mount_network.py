"""``kbfs mount`` and the network: messages on the terminal, checks before mounting, a token
rotated while mounted (re-read after a 401, or on SIGHUP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Mounter, is_mounted, run, wait_for

HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31mboom\nkbfs: everything is fine"


class _Hostile(BaseHTTPRequestHandler):
    """A 'Kanboard' whose every answer is an error message full of terminal escapes."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        error = {"code": -32000, "message": HOSTILE, "data": HOSTILE}
        body = json.dumps({"jsonrpc": "2.0", "error": error, "id": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/jsonrpc.php"
    srv.shutdown()
    srv.server_close()


def kbfs_mount(
    url: str, tmp_path: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``kbfs mount`` expected to fail before mounting (the mount point is checked after)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o600)
    options = f"state_dir={tmp_path / 'state'},cache_dir={tmp_path / 'cache'}"
    cmd = [sys.executable, "-m", "kbfs", "mount", url, str(mnt), "--token-file", str(token)]
    proc = subprocess.run(
        [*cmd, "-o", options, *args], capture_output=True, text=True, timeout=timeout
    )
    assert not is_mounted(mnt)
    return proc


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "background"])
def test_server_text_reaches_the_terminal_escaped(
    hostile: str, tmp_path: Path, foreground: bool
) -> None:
    proc = kbfs_mount(hostile, tmp_path, *(["-f"] if foreground else []))
    assert proc.returncode == 1
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr and "\x9b" not in proc.stderr
    assert "\\x1b[2J" in proc.stderr and "\\x9b31mboom\\x0akbfs: everything" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cleartext_warning_is_on_the_terminal_before_the_background(tmp_path: Path) -> None:
    """The daemon's log is a file nobody watches while mounting: say it where it is seen."""
    proc = kbfs_mount("http://kbfs-test.invalid/", tmp_path, "-o", "timeout=2")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert "kbfs-test.invalid is plain http" in lines[0] and "WARNING" in lines[0], lines
    assert "cannot use" in lines[-1]
    log = (tmp_path / "state" / "kbfs.log").read_text()
    assert "kbfs-test.invalid is plain http" in log  # and still logged


@pytest.mark.parametrize("content", [None, b"junk\n"], ids=["missing", "junk"])
def test_a_bad_cafile_is_one_line_before_mounting(tmp_path: Path, content: bytes | None) -> None:
    cafile = tmp_path / "ca.pem"
    if content is not None:
        cafile.write_bytes(content)
    proc = kbfs_mount("https://127.0.0.1:9/", tmp_path, "-o", f"cafile={cafile}")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"kbfs: cafile {cafile}: "), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_a_proxy_option_must_be_a_url(tmp_path: Path) -> None:
    proc = kbfs_mount("http://127.0.0.1:9/", tmp_path, "-o", "proxy=socks5://127.0.0.1:1080")
    assert proc.returncode == 1 and "bad value for mount option 'proxy'" in proc.stderr


# ------------------------------------------------------------------------------ a rotated token


def _write_token(path: Path, token: str) -> None:
    path.write_text(token + "\n")
    path.chmod(0o600)


def test_a_rotated_token_is_reread_after_a_401(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "mount-token"
    _write_token(token_file, kb.token)
    first = kb.project("before")
    m = mounter(kb, secret_file=token_file, ttl=0)
    assert os.listdir(m.p("projects")) == [str(first)]
    kb.rotate_token()  # the administrator resets the token...
    _write_token(token_file, kb.token)  # ...and puts the new one in the file
    second = kb.project("after")
    listed = run("ls", m.p("projects")).stdout.decode().split()
    assert listed == sorted([str(first), str(second)])
    assert "retrying with the re-read token" in m.log_text()


def test_sighup_rereads_the_token(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "mount-token"
    _write_token(token_file, kb.token)
    first = kb.project("before")
    m = mounter(kb, secret_file=token_file, ttl=0)
    assert os.listdir(m.p("projects")) == [str(first)]
    kb.rotate_token()
    _write_token(token_file, kb.token)
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: token re-read; changed" in m.log_text(), what="the re-read")
    second = kb.project("after")
    assert sorted(os.listdir(m.p("projects"))) == sorted([str(first), str(second)])
    assert m.proc.poll() is None and is_mounted(m.path)  # SIGHUP no longer unmounts
    assert "credentials refused" not in m.log_text()  # no 401 was needed
