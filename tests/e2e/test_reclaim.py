"""Nodes of files that are gone are freed (a mount that runs for months must not grow without
end), and never while something can still reach them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
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


class _Busy:
    """cp / cat / mv / rm / ls in one task directory; with no faults, each must succeed and
    show exactly what a model of the directory says."""

    NAMES = ("a.txt", "b.txt", "c.bin")

    def __init__(self, index: int, d: Path, scratch: Path) -> None:
        self.index, self.d, self.scratch = index, d, scratch
        self.rng = random.Random(index)
        self.model: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.ops = 0

    def _run(self, *cmd: str | Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, check=False)

    def step(self) -> None:
        self.ops += 1
        op = self.rng.choice(["cp", "cp", "cat", "cat", "mv", "rm", "ls"])
        name = self.rng.choice(self.NAMES)
        path = self.d / name
        if op == "cp":
            data = f"{self.index}:{self.ops} ".encode() * self.rng.randint(1, 2000)
            src = self.scratch / f"busy-{self.index}"
            src.write_bytes(data)
            r = self._run("cp", src, path)
            self.model[name] = data
        elif op == "cat":
            r = self._run("cat", path)
            expected = self.model.get(name)
            if (r.returncode == 0) != (expected is not None) or (
                expected is not None and r.stdout != expected
            ):
                self.errors.append(f"cat {name}: {r.returncode} {r.stderr[-80:]!r}")
            return
        elif op == "mv":
            other = self.rng.choice([n for n in self.NAMES if n != name])
            if name not in self.model:
                return
            r = self._run("mv", path, self.d / other)
            self.model[other] = self.model.pop(name)
        elif op == "rm":
            r = self._run("rm", "-f", path)
            self.model.pop(name, None)
        else:
            r = self._run("ls", self.d)
            shown = sorted(r.stdout.decode().split())
            if shown != sorted(self.model):
                self.errors.append(f"ls shows {shown}, expected {sorted(self.model)}")
        if r.returncode != 0:
            self.errors.append(f"{op} {name}: {r.returncode} {r.stderr[-80:]!r}")


@pytest.mark.timeout(180)
def test_a_busy_mount_while_the_kernel_keeps_forgetting(
    kb, mounter: Mounter, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The kernel is made to forget inodes every 50 ms while files are written, read, moved
    and removed, then the nodes that went are freed: a wrong lookup count or a node freed
    while still needed would show as a failed operation or a wrong listing."""
    p = kb.project("busy")
    tasks = [kb.task(p, f"w{i}") for i in range(3)]
    m = mounter(kb, ttl=0.3)
    workers = [_Busy(i, m.p("projects", p, "tasks", t), tmp_path) for i, t in enumerate(tasks)]
    stop = threading.Event()

    def forget() -> None:
        while not stop.wait(0.05):
            Path("/proc/sys/vm/drop_caches").write_text("2\n")

    def work(w: _Busy) -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not w.errors:
            w.step()

    threads = [threading.Thread(target=forget)]
    threads += [threading.Thread(target=work, args=(w,)) for w in workers]
    for th in threads:
        th.start()
    try:
        for th in threads[1:]:
            th.join(timeout=120)
    finally:
        stop.set()
        threads[0].join(timeout=10)
    assert not [e for w in workers for e in w.errors]
    assert sum(w.ops for w in workers) > 60
    # Nothing is freed while uploads are under way; the first quiet pass frees what went.
    wait_for(m, lambda c: c["reclaimed"] > 0)
    for w, t in zip(workers, tasks, strict=True):
        assert sorted(os.listdir(w.d)) == sorted(w.model)
        for name, data in w.model.items():
            assert (w.d / name).read_bytes() == data
        on_server = {f["name"]: kb.download_task_file(f["id"]) for f in kb.task_files(t)}
        assert on_server == w.model
