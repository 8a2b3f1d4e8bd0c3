"""``kbfs status`` (every kbfs mount of the machine, readable and --json) and ``kbfs clear``
(one removeAllTaskFiles / removeAllProjectFiles call, made by the mount's own process)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from kbfs.control import status
from tests.e2e.helpers import KANBOARD_VERSIONS, Mounter, run
from tests.e2e.helpers import kbfs_cli as kbfs


def test_status_lists_every_mount(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    a = mounter(kb)
    b = mounter(kb, "ro")
    os.listdir(a.path)
    r = kbfs("status")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert str(a.path) in out and str(b.path) in out
    assert kb.url in out and "(read-only)" in out
    assert "everything written has reached the server" in out
    assert re.search(r"memory +\d+ inodes \(0 freed since mounted\), \d+ listed files", out), out
    r = kbfs("status", "--json", a.p("projects"))
    assert r.returncode == 0, r.stderr
    [entry] = json.loads(r.stdout)
    assert entry["mountpoint"] == str(a.path) and entry["problem"] is None
    assert entry["status"]["pid"] == a.proc.pid
    assert entry["status"]["vfs"]["pending_uploads"] == []
    # the snapshot file: private, atomic, and never the token
    found = status.find_status(status.mount_containing(a.path))  # type: ignore[arg-type]
    assert found.status_file is not None
    assert stat.S_IMODE(found.status_file.stat().st_mode) == 0o600
    assert kb.token not in found.status_file.read_text()
    assert kb.token not in r.stdout.decode()
    r = kbfs("status", "/")
    assert r.returncode == 1 and b"not on a kbfs mount" in r.stderr


def test_status_shows_what_is_not_uploaded(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    m = mounter(kb)
    m.allow_errors = True
    d = m.p("projects", p, "tasks", t)
    os.listdir(d)
    kb.fault("createTaskFile", "http500", count=1000)
    r = run("cp", "/etc/hostname", d / "unsaved.txt", check=False)
    assert r.returncode != 0
    out = kbfs("status", m.path).stdout.decode()
    assert "NOT UPLOADED: 1 file(s)" in out, out
    assert f"/projects/{p}/tasks/{t}/unsaved.txt" in out
    assert "errors   answered to the kernel: flush 1" in out, out  # cp's close() failed
    kb.clear_faults()


@KANBOARD_VERSIONS
def test_clear_task_with_one_call(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t, other = kb.task(p, "t"), kb.task(p, "other")
    for name in ("a.txt", "b.txt", "c.txt"):
        kb.upload_task_file(p, t, name, b"x" + name.encode())
    kb.upload_task_file(p, other, "keep.txt", b"keep")
    m = mounter(kb)  # default 5 s directory cache: clear must not wait for it
    d = m.p("projects", p, "tasks", t)
    assert sorted(os.listdir(d)) == ["a.txt", "b.txt", "c.txt"]
    assert (d / "a.txt").read_bytes() == b"xa.txt"
    kb.reset_stats()
    r = kbfs("clear", "--yes", d)
    assert r.returncode == 0, r.stderr
    assert b"removed 3 file(s)" in r.stdout
    calls = kb.stats()["calls"]
    assert calls.get("removeAllTaskFiles") == 1
    assert not calls.get("removeTaskFile") and not calls.get("removeAllProjectFiles")
    assert kb.task_files(t) == []
    assert [f["name"] for f in kb.task_files(other)] == ["keep.txt"]
    assert os.listdir(d) == []
    assert not (d / "a.txt").exists()
    assert os.listdir(m.p("projects", p, "tasks", other)) == ["keep.txt"]


@KANBOARD_VERSIONS
def test_clear_project_files_with_one_call(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    kb.upload_project_file(p, "one.txt", b"1")
    kb.upload_project_file(p, "two.txt", b"2")
    m = mounter(kb, ttl=0.2)
    d = m.p("projects", p, "files")
    assert len(os.listdir(d)) == 2
    kb.reset_stats()
    r = kbfs("clear", "-y", d)
    assert r.returncode == 0, r.stderr
    calls = kb.stats()["calls"]
    assert calls.get("removeAllProjectFiles") == 1 and not calls.get("removeProjectFile")
    assert kb.project_files(p) == []
    assert os.listdir(d) == []


def test_clear_asks_and_refuses(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"a")
    m = mounter(kb)
    kb.reset_stats()
    d = m.p("projects", p, "tasks", t)
    r = kbfs("clear", d, stdin=b"y\n")  # stdin is no terminal: no silent yes
    assert r.returncode == 1 and b"--yes" in r.stderr
    for wrong in (m.p("projects", p), m.p("projects", p, "tasks"), Path("/tmp")):
        r = kbfs("clear", "--yes", wrong)
        assert r.returncode == 1, wrong
        assert len(r.stderr.decode().strip().splitlines()) == 1
    calls = kb.stats()["calls"]
    assert not calls.get("removeAllTaskFiles") and not calls.get("removeAllProjectFiles")
    assert [f["name"] for f in kb.task_files(t)] == ["a.txt"]
    ro = mounter(kb, "ro")
    r = kbfs("clear", "--yes", ro.p("projects", p, "tasks", t))
    assert r.returncode == 1 and b"read-only" in r.stderr
    assert [f["name"] for f in kb.task_files(t)] == ["a.txt"]
