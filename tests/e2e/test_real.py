"""The core scenarios against a real Kanboard (opt-in: ``pytest -m real``).

Needs ``KBFS_REAL_URL`` (e.g. ``http://127.0.0.1:8080/jsonrpc.php``) and
``KBFS_REAL_TOKEN_FILE`` (the application API token, mode 0600). Any Kanboard from 1.2.20 to
1.2.53 will do; Kanboard's own repository runs with Debian's ``php-cli php-sqlite3 php-gd
php-mbstring php-xml`` as ``php -S 127.0.0.1:PORT -t TREE`` (the first request creates the
SQLite database, and the token in its ``settings`` table). Every test works in a project of its
own and removes it afterwards. The server is checked through its API, never through kbfs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter, run
from tests.kbserver import KanboardServer

pytestmark = pytest.mark.real

URL = os.environ.get("KBFS_REAL_URL", "")
TOKEN_FILE = os.environ.get("KBFS_REAL_TOKEN_FILE", "")


@pytest.fixture
def real() -> Iterator[KanboardServer]:
    if not URL or not TOKEN_FILE:
        pytest.skip("set KBFS_REAL_URL and KBFS_REAL_TOKEN_FILE to test against a real Kanboard")
    server = KanboardServer().connect(URL, Path(TOKEN_FILE))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def task(real: KanboardServer) -> Iterator[dict[str, int]]:
    project = real.project(f"kbfs-real-{secrets.token_hex(4)}")
    try:
        yield {"p": project, "t": real.task(project, "a task")}
    finally:
        real.rpc("removeProject", {"project_id": project})


@pytest.fixture
def mnt(real: KanboardServer, mounter: Mounter) -> Mounted:
    return mounter(real)


def tdir(mnt: Mounted, task: dict[str, int]) -> Path:
    return mnt.p("projects", task["p"], "tasks", task["t"])


def contents(real: KanboardServer, task_id: int) -> dict[str, bytes]:
    files = real.task_files(task_id)
    names = [f["name"] for f in files]
    assert len(names) == len(set(names)), f"duplicates on the server: {names}"
    return {f["name"]: real.download_task_file(f["id"]) for f in files}


def test_rapid_saves_rename_rm(real: KanboardServer, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """kanboard-api §12 row 1: on 1.2.27 and older, saves within one second lost the content."""
    d = tdir(mnt, task)
    real.wait_until_second_boundary()
    for n in (1, 2, 3):
        src = tmp_path / f"v{n}"
        src.write_bytes(f"version {n}\n".encode())
        run("cp", src, d / "rapid.txt")
    assert contents(real, task["t"]) == {"rapid.txt": b"version 3\n"}
    run("mv", d / "rapid.txt", d / "moved.txt")
    assert contents(real, task["t"]) == {"moved.txt": b"version 3\n"}
    (tmp_path / "t").write_bytes(b"target\n")
    run("cp", tmp_path / "t", d / "target.txt")
    run("mv", d / "moved.txt", d / "target.txt")  # over a file made a moment ago
    assert contents(real, task["t"]) == {"target.txt": b"version 3\n"}
    assert (d / "target.txt").read_bytes() == b"version 3\n"
    run("rm", d / "target.txt")
    assert contents(real, task["t"]) == {}


def test_editor_saves(real: KanboardServer, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    (d / "doc.txt").write_bytes(b"line one\n")
    script = (
        "import os, sys, tempfile\n"
        "fd, tmp = tempfile.mkstemp(dir=sys.argv[1])\n"
        "os.write(fd, b'saved atomically\\n')\n"
        "os.close(fd)\n"
        "os.replace(tmp, os.path.join(sys.argv[1], 'doc.txt'))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(d)], check=True, timeout=30)
    assert contents(real, task["t"]) == {"doc.txt": b"saved atomically\n"}
    subprocess.run(
        ["vim", "--clean", "-c", "%s/saved/SAVED/", "-c", "wq", str(d / "doc.txt")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )
    assert contents(real, task["t"]) == {"doc.txt": b"SAVED atomically\n"}
    assert sorted(os.listdir(d)) == ["doc.txt"]


def test_project_files_and_status(real: KanboardServer, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = mnt.p("projects", task["p"], "files")
    for n in (1, 2):
        (tmp_path / "spec").write_bytes(f"spec {n}\n".encode())
        run("cp", tmp_path / "spec", d / "spec.txt")
    files = real.project_files(task["p"])
    assert [f["name"] for f in files] == ["spec.txt"]
    assert real.download_project_file(task["p"], files[0]["id"]) == b"spec 2\n"
    version = real.rpc("getVersion")
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", "status", str(mnt.path)], capture_output=True, timeout=60
    )
    assert f"kanboard {version}" in r.stdout.decode(), r.stdout
    run("rm", d / "spec.txt")
    assert real.project_files(task["p"]) == []


def test_writeback_batches_and_one_round_trip_saves(  # type: ignore[no-untyped-def]
    real: KanboardServer, mounter: Mounter, task, tmp_path: Path
) -> None:
    """Write-back's batched creates (many createTaskFile calls in one JSON-RPC request), and
    default-mode saves whose records come with the next listing, on the real server."""
    src = tmp_path / "src"
    src.mkdir()
    blobs = {f"f{n:02d}.bin": os.urandom(5000 + n) for n in range(30)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    wb = mounter(real, "writeback")
    run("cp", *sorted(src.iterdir()), tdir(wb, task))
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", "sync", str(wb.path)], capture_output=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert contents(real, task["t"]) == blobs
    plain = mounter(real, ttl=0.1)
    d = tdir(plain, task)
    (tmp_path / "new").write_bytes(b"one round trip\n")
    run("cp", tmp_path / "new", d / "new.txt")
    run("cp", tmp_path / "new", d / "again.txt")
    run("mv", d / "again.txt", d / "moved.txt")
    assert (d / "moved.txt").read_bytes() == b"one round trip\n"
    assert contents(real, task["t"]) == blobs | {
        "new.txt": b"one round trip\n",
        "moved.txt": b"one round trip\n",
    }
    assert sorted(os.listdir(d)) == sorted([*blobs, "new.txt", "moved.txt"])
