"""The mount's status publisher, started the way ``kbfs.mount`` starts it: ``nursery.start``.

Once ``start`` returns, the control socket must already answer (the mount reports ready right
after), and a publisher without a usable runtime dir must neither fail nor keep a task running.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from kbfs.control import status
from kbfs.control.publisher import StatusPublisher
from kbfs.options import MountOptions


class _Vfs:
    """What the publisher reads of a vfs: the endpoint, its status and the upload backlog."""

    client = SimpleNamespace(endpoint="http://127.0.0.1:1/jsonrpc.php")

    def status(self) -> dict[str, Any]:
        return {"inodes": 1}

    def pending_files(self) -> list[Any]:
        return []


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A short path of its own: a unix socket's path is limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="kbfs-rt-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publisher(mountpoint: Path) -> StatusPublisher:
    return StatusPublisher(
        _Vfs(),  # type: ignore[arg-type]
        mountpoint=mountpoint,
        options=MountOptions(read_only=True),
        user="jsonrpc",
        error_counts={"write": 2},
    )


async def test_started_means_the_control_socket_answers(runtime: Path) -> None:
    publisher = _publisher(Path("/mnt/kb"))
    assert publisher.enabled
    assert publisher.control_file.parent == runtime / "kbfs"
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        answer = await trio.to_thread.run_sync(
            status.ask_daemon, publisher.control_file, {"op": "status"}, 5
        )
        assert answer["mountpoint"] == "/mnt/kb"
        assert answer["pid"] == os.getpid()
        assert answer["read_only"] is True and answer["user"] == "jsonrpc"
        assert answer["errors"] == {"write": 2}
        with pytest.raises(status.ControlError, match="unknown request"):
            await trio.to_thread.run_sync(
                status.ask_daemon, publisher.control_file, {"op": "nonsense"}, 5
            )
        with trio.fail_after(5):
            while not publisher.status_file.exists():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    publisher.close()
    assert not publisher.status_file.exists()
    assert not publisher.control_file.exists()


async def test_without_a_runtime_dir_it_publishes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(status, "runtime_dir", lambda: blocker / "kbfs")  # under a file
    publisher = _publisher(Path("/mnt/kb"))
    assert not publisher.enabled
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        # run() has already returned: nothing is left for the nursery to wait for.
    publisher.close()
