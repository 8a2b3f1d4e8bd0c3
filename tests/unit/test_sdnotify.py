"""sd_notify against a socket the test creates: path and abstract addresses, no-op without
systemd, and a failure that is logged rather than raised."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from kbfs import sdnotify


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_path_socket_receives_ready_and_status(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _receiver(str(path)) as rx:
        assert sdnotify.notify("READY=1", "STATUS=mounted\nat /x", env={"NOTIFY_SOCKET": str(path)})
        assert rx.recv(4096) == b"READY=1\nSTATUS=mounted at /x"


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"kbfs-test-{os.getpid()}-{tmp_path.name}"
    with _receiver(b"\0" + name.encode()) as rx:
        assert sdnotify.notify("STOPPING=1", env={"NOTIFY_SOCKET": "@" + name})
        assert rx.recv(4096) == b"STOPPING=1"


def test_helpers_use_the_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with _receiver(str(path)) as rx:
        assert sdnotify.ready("up")
        assert rx.recv(4096) == f"READY=1\nSTATUS=up\nMAINPID={os.getpid()}".encode()
        assert sdnotify.stopping("bye")
        assert rx.recv(4096) == b"STOPPING=1\nSTATUS=bye"
        assert sdnotify.status("3 pending")
        assert rx.recv(4096) == b"STATUS=3 pending"


def test_outside_systemd_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "relative/path"}) is False


def test_missing_socket_is_logged_not_raised(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "could not notify systemd" in caplog.text
