"""Every operation through every fault class: a clear error, nothing lost, the mount lives on.

The built-in server injects each fault into the next calls of one procedure. After each fault
the test checks that the operation failed cleanly (or succeeded where kbfs can recover by
itself), that no byte written was lost, and that the same operation works once the fault is
gone: the mount never dies and never hangs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter, run, wait_for

KINDS = [
    "http500",
    "html",
    "garbage",
    "truncated",
    "drop",
    "rpc_error",
    "http401",
    "http403",
    "false",
    "empty",
    "delay",
]
TIMEOUT = 2.0  # -o timeout=: a "delay" fault waits longer than this


@pytest.fixture
def fm(kb, mounter: Mounter) -> Mounted:  # type: ignore[no-untyped-def]
    m = mounter(kb, f"timeout={TIMEOUT}", ttl=0.1)
    m.allow_errors = True
    return m


def inject(kb, method: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    kb.fault(method, kind, count=20, delay=TIMEOUT * 3 if kind == "delay" else None)


def bounded(cmd: list[str | Path], limit: float = 25.0):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    r = run(*cmd, check=False, timeout=limit + 20)
    assert time.monotonic() - start < limit, f"{cmd} took too long"
    return r


@pytest.mark.timeout(600)
def test_listing_faults(kb, fm: Mounted) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    for kind in KINDS:
        t = kb.task(p, f"task for {kind}")
        kb.upload_task_file(p, t, "a.txt", b"abc")
        d = fm.p("projects", p, "tasks", t)
        time.sleep(0.2)  # past the listing cache time: the new task is visible
        os.stat(d)
        inject(kb, "getAllTaskFiles", kind)
        r = bounded(["ls", d])
        if kind != "delay":
            assert r.returncode != 0, kind  # never listed before: nothing cached to show
        kb.clear_faults()
        time.sleep(0.2)
        assert run("ls", d).stdout == b"a.txt\n", kind


@pytest.mark.timeout(600)
def test_task_and_project_listing_faults(kb, fm: Mounted) -> None:  # type: ignore[no-untyped-def]
    os.listdir(fm.p("projects"))
    for kind in KINDS:
        p = kb.project(f"project for {kind}")
        t = kb.task(p, "t")
        time.sleep(0.2)
        inject(kb, "getAllTasks", kind)
        bounded(["ls", fm.p("projects", p, "tasks")])
        kb.clear_faults()
        time.sleep(0.2)
        assert run("ls", fm.p("projects", p, "tasks")).stdout == f"{t}\n".encode(), kind
        p2 = kb.project(f"another for {kind}")
        time.sleep(0.2)
        inject(kb, "getAllProjects", kind)
        r = bounded(["ls", fm.p("projects", p2)])
        assert r.returncode != 0, kind  # not in the cached list: ENOENT or EIO
        kb.clear_faults()
        time.sleep(0.2)
        assert run("ls", fm.p("projects", p2)).stdout == b"files\ntasks\ntasks-by-title\n", kind


@pytest.mark.timeout(600)
def test_download_faults(kb, fm: Mounted) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    d = fm.p("projects", p, "tasks", t)
    for kind in KINDS:
        name = f"{kind}.bin"
        data = os.urandom(50_000)
        kb.upload_task_file(p, t, name, data)
        time.sleep(0.2)
        os.listdir(d)
        inject(kb, "downloadTaskFile", kind)
        r = bounded(["cat", d / name])
        assert r.returncode != 0, kind
        kb.clear_faults()
        assert run("cat", d / name).stdout == data, kind


@pytest.mark.timeout(600)
def test_upload_faults_lose_nothing_and_never_duplicate(kb, fm: Mounted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    d = fm.p("projects", p, "tasks", t)
    os.listdir(d)
    for kind in KINDS:
        src = tmp_path / f"{kind}.txt"
        src.write_bytes(f"payload for {kind}\n".encode())
        inject(kb, "createTaskFile", kind)
        r = bounded(["cp", src, d / src.name])
        kb.clear_faults()
        on_server = [f for f in kb.task_files(t) if f["name"] == src.name]
        if r.returncode == 0:
            assert len(on_server) == 1, kind
            continue

        def landed(name: str = src.name) -> bool:
            files = [f for f in kb.task_files(t) if f["name"] == name]
            recovered = [x for x in fm.state_dir.rglob("recovered/*") if x.name.endswith(name)]
            return len(files) == 1 or bool(recovered)

        wait_for(landed, timeout=30.0)  # retried in the background, or moved to the recovery folder
        files = [f for f in kb.task_files(t) if f["name"] == src.name]
        assert len(files) <= 1, kind
        if files:
            assert kb.download_task_file(files[0]["id"]) == src.read_bytes(), kind
        else:
            (rec,) = [x for x in fm.state_dir.rglob("recovered/*") if x.name.endswith(src.name)]
            assert rec.read_bytes() == src.read_bytes()


@pytest.mark.timeout(600)
def test_confirm_and_remove_faults(kb, fm: Mounted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    d = fm.p("projects", p, "tasks", t)
    os.listdir(d)
    for kind in KINDS:
        src = tmp_path / f"c-{kind}.txt"
        src.write_bytes(b"confirm me")
        inject(kb, "getTaskFile", kind)
        bounded(["cp", src, d / src.name])  # the upload itself went through
        kb.clear_faults()
        wait_for(
            lambda n=src.name: [f["name"] for f in kb.task_files(t)].count(n) == 1, timeout=30.0
        )
        time.sleep(0.3)
        assert (d / src.name).read_bytes() == b"confirm me", kind
        inject(kb, "removeTaskFile", kind)
        r = bounded(["rm", d / src.name])
        kb.clear_faults()
        if r.returncode != 0:
            assert [f["name"] for f in kb.task_files(t)].count(src.name) == 1, kind
            time.sleep(0.2)
            run("rm", d / src.name)
        assert src.name not in [f["name"] for f in kb.task_files(t)], kind
    assert os.path.ismount(fm.path)
    assert run("ls", fm.path).stdout == b"by-name\nprojects\n"
