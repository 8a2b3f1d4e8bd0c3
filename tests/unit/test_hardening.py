"""What keeps the secret inside the mount process: no core dump, no KBFS_TOKEN left behind,
and a control socket believed only when the mount's own user answers on it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from kbfs.control import status

PROBE = """
import ctypes, os, sys
from kbfs.credentials import harden_process, load_secret
harden_process()
secret = load_secret(None)
print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
print(open("/proc/self/limits").read().count("Max core file size        0                    0"))
print("KBFS_TOKEN" in os.environ, secret.encode() in open("/proc/self/environ", "rb").read())
print(secret)
"""


def test_no_core_dump_and_the_env_token_is_gone_once_read() -> None:
    env = dict(os.environ, KBFS_TOKEN="s3cr3t-t0ken")
    r = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    dumpable, core_limit, leftovers, secret = r.stdout.split("\n")[:4]
    assert dumpable == "0" and core_limit == "1"
    assert leftovers == "False False"  # neither in os.environ nor in /proc/self/environ
    assert secret == "s3cr3t-t0ken"  # read all the same


def test_an_answer_from_another_uid_is_not_believed() -> None:
    """The control socket's peer must be the mount's user (SO_PEERCRED)."""
    base = Path(tempfile.mkdtemp(prefix="kbfs-peer-"))
    path = base / "c.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn, contextlib.suppress(OSError):
                if conn.recv(65536):
                    conn.sendall(json.dumps({"removed": 42}).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        me = os.geteuid()
        with pytest.raises(status.ControlError, match="not by the mount's user"):
            status.ask_daemon(path, {"op": "clear"}, timeout=5, owner=me + 1)
        assert status.ask_daemon(path, {"op": "clear"}, timeout=5, owner=me) == {"removed": 42}
    finally:
        server.close()
        thread.join(timeout=5)
        path.unlink(missing_ok=True)
        base.rmdir()
