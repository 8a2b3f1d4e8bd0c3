"""Older Kanboard releases end to end: the built-in server keeps a release's rules
(``kbfs server --kanboard-version``), the mount reads the release and works by them.

The core scenarios also run against 1.2.20 and 1.2.53 in their own modules (KANBOARD_VERSIONS);
these are the cases where the releases differ (VERSIONS.md §1 numbers the differences).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter, run
from tests.e2e.helpers import kbfs_cli as kbfs

OLDEST = pytest.mark.parametrize("kb", ["1.2.20"], indirect=True)
MISSING_BYTES_REFUSED = pytest.mark.parametrize("kb", ["1.2.42"], indirect=True)


@pytest.fixture
def task(kb):  # type: ignore[no-untyped-def]
    p = kb.project("versions")
    return {"p": p, "t": kb.task(p, "a task")}


def tdir(mnt: Mounted, task) -> Path:  # type: ignore[no-untyped-def]
    return mnt.p("projects", task["p"], "tasks", task["t"])


@OLDEST
def test_rapid_cp_saves_keep_the_last_content(kb, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """#1, kanboard-api §12 row 1: three quick ``cp`` saves of one file. Uploaded within one server
    second they share one storage path, and on 1.2.27 and older removing the superseded
    rows deletes it: the file downloads as nothing while the mount shows version 3."""
    d = tdir(mnt, task)
    sources = []
    for n in (1, 2, 3):
        src = tmp_path / f"v{n}"
        src.write_bytes(f"version {n}\n".encode())
        sources.append(src)
    kb.wait_until_second_boundary()
    for src in sources:
        run("cp", src, d / "rapid.txt")  # each returns 0
    files = kb.task_files(task["t"])
    assert [f["name"] for f in files] == ["rapid.txt"]
    assert kb.download_task_file(files[0]["id"]) == b"version 3\n"
    assert "etag" not in files[0]  # #2: no etag before 1.2.38, kbfs works by path
    assert (d / "rapid.txt").read_bytes() == b"version 3\n"
    assert "waited" in mnt.log_text() and "for the server's next second" in mnt.log_text()


@OLDEST
def test_status_shows_the_release_and_its_rules(kb, mnt: Mounted) -> None:  # type: ignore[no-untyped-def]
    os.listdir(mnt.path)
    r = kbfs("status", mnt.path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "kanboard 1.2.20" in out, out
    assert "removal deletes bytes another row shares" in out
    assert "createTaskFile does not check the task" in out
    r = kbfs("status", "--json", mnt.path)
    [entry] = json.loads(r.stdout)
    assert entry["status"]["vfs"]["kanboard"]["version"].startswith("1.2.20")


@MISSING_BYTES_REFUSED
def test_rm_of_a_file_whose_bytes_are_missing_says_why(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    """kanboard-api §12 row 3: from 1.2.42 the row of a file whose stored bytes are missing
    cannot be removed; rm fails with ENODATA and the log says why."""
    fid = kb.upload_task_file(task["p"], task["t"], "gone.txt", b"gone")
    kb.storage_file(kb.rpc("getTaskFile", {"file_id": fid})["path"]).unlink()
    r = run("rm", tdir(mnt, task) / "gone.txt", check=False)
    assert r.returncode != 0 and os.strerror(errno.ENODATA).encode() in r.stderr, r.stderr
    assert "Kanboard cannot remove a file whose stored bytes are missing" in mnt.log_text()
    assert [f["name"] for f in kb.task_files(task["t"])] == ["gone.txt"]
    mnt.allow_errors = True


@MISSING_BYTES_REFUSED
def test_clear_reports_what_was_left(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    """#3, kanboard-api §12 row 3 F33: removeAllTaskFiles answers false and leaves that row."""
    fid = kb.upload_task_file(task["p"], task["t"], "gone.txt", b"gone")
    kb.upload_task_file(task["p"], task["t"], "fine.txt", b"fine")
    kb.storage_file(kb.rpc("getTaskFile", {"file_id": fid})["path"]).unlink()
    m = mounter(kb, ttl=0.2)
    d = tdir(m, task)
    assert sorted(os.listdir(d)) == ["fine.txt", "gone.txt"]
    r = kbfs("clear", "--yes", d)
    assert r.returncode != 0
    assert b"gone.txt" in r.stderr and b"stored bytes are missing" in r.stderr, r.stderr
    assert [f["name"] for f in kb.task_files(task["t"])] == ["gone.txt"]
