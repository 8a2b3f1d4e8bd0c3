"""Write-back mode through a real mount: ``-o writeback``, ``kbfs sync``, fsync.

``cp`` returns once the bytes are in the spool; the uploads follow in batch requests (several
``createTaskFile`` calls in one HTTP request); ``kbfs sync`` waits for them and names what is
not on the server; ``fsync`` (``dd conv=fsync``) waits for its file's upload."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.helpers import Mounter, kbfs_cli, random_files, run


def test_cp_returns_first_and_kbfs_sync_waits_for_the_batches(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, tmp_path: Path
) -> None:
    project = kb.project("P")
    task = kb.task(project, "T")
    src = tmp_path / "src"
    blobs = random_files(src, 100, 20_000)
    m = mounter(kb, "writeback", ttl=600)
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    kb.reset_stats()
    run("cp", *sorted(src.iterdir()), d)
    r = kbfs_cli("sync", m.path, timeout=120)
    assert r.returncode == 0, r.stderr
    stats = kb.stats()
    files = {f["name"]: f for f in kb.task_files(task)}
    assert {name: kb.download_task_file(f["id"]) for name, f in files.items()} == blobs
    calls = dict(stats["calls"])
    calls.pop("getAllTaskFiles", 0)  # the two-mount check's listings in the background
    assert calls == {"createTaskFile": 100}, stats
    # Batches of up to 20 files: 100 files in a handful of requests.
    assert stats["http_requests"] <= 15, stats
    assert sorted(os.listdir(d)) == sorted(blobs)


def test_kbfs_sync_names_what_could_not_be_uploaded(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = kb.project("P")
    task = kb.task(project, "T")
    m = mounter(kb, "writeback", "timeout=2", ttl=600)
    m.allow_errors = True
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    kb.fault("createTaskFile", "http500", count=1000)
    src = tmp_path / "a.txt"
    src.write_bytes(b"kept")
    run("cp", src, d / "a.txt")  # returns 0: the bytes are in the spool
    status = kbfs_cli("status", m.path)
    assert b"(write-back: close() returns before the upload)" in status.stdout, status.stdout
    assert b"NOT UPLOADED: 1 file(s)" in status.stdout, status.stdout
    r = kbfs_cli("sync", "--timeout", "10", m.path, timeout=120)
    assert r.returncode == 1
    assert b"a.txt: not on the server" in r.stderr, r.stderr
    assert kb.task_files(task) == []
    kb.clear_faults()
    r = kbfs_cli("sync", m.path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [kb.download_task_file(f["id"]) for f in kb.task_files(task)] == [b"kept"]


def test_fsync_waits_for_the_upload(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = kb.project("P")
    task = kb.task(project, "T")
    m = mounter(kb, "writeback", ttl=600)
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    run("dd", f"of={d / 'log.txt'}", "conv=fsync", "status=none", input=b"synced\n")
    assert [kb.download_task_file(f["id"]) for f in kb.task_files(task)] == [b"synced\n"]


def test_a_crash_before_the_upload_loses_nothing(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """close() returned 0 with the bytes only in the spool (every upload failing), then the
    mount is killed: the next mount of that state dir uploads them."""
    project = kb.project("P")
    task = kb.task(project, "T")
    state = tmp_path / "state"
    m = mounter(kb, "writeback", f"state_dir={state}", ttl=600)
    m.allow_errors = True
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    kb.fault("createTaskFile", "http500", count=1000)
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_bytes(f"saved {i}".encode())
        run("cp", tmp_path / f"f{i}.txt", d)
    m.proc.kill()
    m.proc.wait(timeout=20)
    mounter.unmount(m)
    kb.clear_faults()
    m2 = mounter(kb, "writeback", f"state_dir={state}", ttl=600)
    r = kbfs_cli("sync", m2.path, timeout=120)
    assert r.returncode == 0, r.stderr
    got = {f["name"]: kb.download_task_file(f["id"]) for f in kb.task_files(task)}
    assert got == {f"f{i}.txt": f"saved {i}".encode() for i in range(5)}
