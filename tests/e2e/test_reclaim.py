"""Nodes of files that are gone are freed (a mount that runs for months must not grow without
end), and never while something can still reach them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Mounted, Mounter


def vfs_counters(m: Mounted) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", "status", "--json", str(m.path)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    [entry] = json.loads(r.stdout)
    return entry["status"]["vfs"]["counters"]


def forget_everything_unused() -> None:
    """Make the kernel drop unused dentries and inodes: it sends FORGET for them."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


def wait_for(m: Mounted, check: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        counters = vfs_counters(m)
        if check(counters):
            return counters
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {counters}")
        forget_everything_unused()
        time.sleep(0.5)


@pytest.mark.timeout(120)
def test_nodes_of_files_gone_from_the_server_are_freed(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("churn")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "stays.txt", b"stays\n")
    m = mounter(kb, ttl=0)
    d = m.p("projects", p, "tasks", t)
    # Another client adds and removes files; every listing here sees a different set.
    for i in range(40):
        fid = kb.upload_task_file(p, t, f"gone-{i}.txt", b"x" * (i + 1))
        assert sorted(os.listdir(d)) == sorted(["stays.txt", f"gone-{i}.txt"])
        assert (d / f"gone-{i}.txt").read_bytes() == b"x" * (i + 1)
        kb.rpc("removeTaskFile", {"file_id": fid})
    assert os.listdir(d) == ["stays.txt"]
    counters = wait_for(m, lambda c: c["reclaimed"] >= 40)
    assert counters["inodes"] < 20, counters
    # What is still there works as before, under the same inode.
    ino = (d / "stays.txt").stat().st_ino
    assert (d / "stays.txt").read_bytes() == b"stays\n"
    assert (d / "stays.txt").stat().st_ino == ino
    for i in range(40):
        assert not (d / f"gone-{i}.txt").exists()


@pytest.mark.timeout(120)
def test_an_open_file_keeps_its_node(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("open")
    t = kb.task(p, "t")
    fid = kb.upload_task_file(p, t, "held.txt", b"still readable\n")
    m = mounter(kb, ttl=0)
    d = m.p("projects", p, "tasks", t)
    with open(d / "held.txt", "rb") as held:
        assert held.read(5) == b"still"
        kb.rpc("removeTaskFile", {"file_id": fid})
        # Churn so that reclaim passes run and free other nodes meanwhile.
        for i in range(10):
            other = kb.upload_task_file(p, t, f"tmp-{i}.txt", b"tmp\n")
            os.listdir(d)
            (d / f"tmp-{i}.txt").read_bytes()
            kb.rpc("removeTaskFile", {"file_id": other})
        os.listdir(d)
        wait_for(m, lambda c: c["reclaimed"] >= 10)
        assert held.read() == b" readable\n"
        assert os.fstat(held.fileno()).st_size == len(b"still readable\n")
    assert os.listdir(d) == []
