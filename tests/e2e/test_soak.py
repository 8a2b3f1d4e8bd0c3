"""Soak: a busy team on one shared task. Several workers on ONE mount, each in a loop on its own
names in one task directory: save a random file, compare it at once, every 5th round move it
over a ``*-moved.bin`` name, every 9th round remove that, and list the directory every round.

Nothing here is randomly failed: the server answers every call. So every operation a local disk
would accept must succeed (``open(name, "wb")`` included, whatever the other workers do
meanwhile), every compare must find the bytes just written (read-your-writes in one mount), and
the server's call counts are exact: one create per save or move, one removal per superseded,
moved or removed version; at the end the server holds exactly what the workers left.

Half the workers use real tools (``cp``, ``cmp``, ``mv``, ``rm``, ``ls -l``), half Python
(``open``/``write``/``close``, read back, ``os.rename``, ``os.remove``, ``os.listdir`` +
``os.stat``). Short by default (part of the normal suite); ``KBFS_SOAK_SECONDS`` makes it
longer (run it alone with ``pytest -m soak``), and the summary line it prints gives the counts.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter

DURATION = float(os.environ.get("KBFS_SOAK_SECONDS", "20"))
WORKERS = int(os.environ.get("KBFS_SOAK_WORKERS", "4"))
SEED = int(os.environ.get("KBFS_SOAK_SEED", "16"))
MAX_SIZE = 300_000
MAX_FAILURES = 200  # per worker: enough to count a broken build's failure rate, then stop

pytestmark = [pytest.mark.e2e, pytest.mark.soak]


@dataclass
class Tally:
    """What one worker did, and what the server must have seen because of it."""

    rounds: int = 0
    ops: int = 0
    creates: int = 0  # create*File calls its successful saves and moves cost
    removals: int = 0  # remove*File calls: superseded, moved-away and removed versions
    failures: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # failure kind -> count


class SoakWorker:
    """One user in the loop of the module docstring, on its own two names.

    ``present`` is what this worker's names hold on the server now (content, or None): only this
    worker touches them, so after every operation that returned success it is exact.
    """

    def __init__(self, index: int, d: Path, scratch: Path, tools: bool) -> None:
        self.index = index
        self.d = d
        self.tools = tools
        self.rng = random.Random(SEED * 1000 + index)
        self.name = f"w{index}.bin"
        self.moved = f"w{index}-moved.bin"
        self.src = scratch / f"soak-src-{index}"
        self.present: dict[str, bytes | None] = {self.name: None, self.moved: None}
        self.tally = Tally()
        self.certain = True  # False once an operation failed: the end state is unknown

    # ------------------------------------------------------------------ the loop

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline and len(self.tally.failures) < MAX_FAILURES:
            self.tally.rounds += 1
            n = self.tally.rounds
            try:
                self.round(n)
            except subprocess.TimeoutExpired as exc:
                self.fail("hung", f"round {n}: {exc.cmd!r} did not finish")
            except Exception as exc:  # a bug in the test itself must show, not hang the run
                self.fail("error", f"round {n}: {exc!r}")

    def round(self, n: int) -> None:
        data = self.rng.randbytes(self.rng.randint(2, MAX_SIZE))
        if self.save(data, n):
            self.compare(self.name, data, n)
        if n % 5 == 0 and self.present[self.name] is not None:
            self.move(n)
        if n % 9 == 0 and self.present[self.moved] is not None:
            self.remove(n)
        self.listing(n)

    def fail(self, kind: str, message: str) -> None:
        self.tally.failures.append(f"worker {self.index} {message}")
        self.tally.kinds[kind] = self.tally.kinds.get(kind, 0) + 1
        self.certain = False

    def _tool(self, *cmd: str | Path) -> subprocess.CompletedProcess[bytes]:
        self.tally.ops += 1
        return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, check=False)

    @staticmethod
    def _why(proc: subprocess.CompletedProcess[bytes]) -> str:
        return f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-200:]}"

    # ------------------------------------------------------------------ operations

    def save(self, data: bytes, n: int) -> bool:
        target = self.d / self.name
        if self.tools:
            self.src.write_bytes(data)
            proc = self._tool("cp", self.src, target)
            if proc.returncode != 0:
                self.fail("cp", f"round {n}: cp {self.name} {self._why(proc)}")
                return False
        else:
            self.tally.ops += 1
            try:
                out = open(target, "wb")  # noqa: SIM115  # open itself must never fail
            except OSError as exc:
                kind = "open-ENOENT" if exc.errno == errno.ENOENT else "open"
                self.fail(kind, f"round {n}: open({self.name!r}, 'wb'): {exc!r}")
                return False
            try:
                with out:
                    out.write(data)
            except OSError as exc:
                self.fail("write-close", f"round {n}: write/close {self.name}: {exc!r}")
                return False
        self._supersede(self.name)
        self.present[self.name] = data
        self.tally.creates += 1
        return True

    def compare(self, name: str, data: bytes, n: int) -> None:
        if self.tools:
            proc = self._tool("cmp", self.src, self.d / name)
            if proc.returncode != 0:
                self.fail("compare", f"round {n}: cmp {name} ({len(data)} bytes) {self._why(proc)}")
            return
        self.tally.ops += 1
        try:
            got = (self.d / name).read_bytes()
        except OSError as exc:
            self.fail("read", f"round {n}: reading {name} back: {exc!r}")
            return
        if got != data:
            self.fail("compare", f"round {n}: {name} reads {len(got)} bytes, {len(data)} written")

    def move(self, n: int) -> None:
        source, target = self.d / self.name, self.d / self.moved
        if self.tools:
            proc = self._tool("mv", source, target)
            ok = proc.returncode == 0
            why = "" if ok else self._why(proc)
        else:
            self.tally.ops += 1
            try:
                os.rename(source, target)
                ok, why = True, ""
            except OSError as exc:
                ok, why = False, repr(exc)
        if not ok:
            self.fail("mv", f"round {n}: mv {self.name} {self.moved}: {why}")
            return
        data = self.present[self.name]
        assert data is not None
        self.tally.creates += 1  # the upload at the target
        self.tally.removals += 1  # the source
        self._supersede(self.moved)
        self.present[self.moved], self.present[self.name] = data, None
        if self.tools:
            self.src.write_bytes(data)
        self.compare(self.moved, data, n)
        if os.path.lexists(source):
            self.fail("moved-source", f"round {n}: {self.name} still exists after mv")

    def remove(self, n: int) -> None:
        target = self.d / self.moved
        if self.tools:
            proc = self._tool("rm", target)
            ok, why = proc.returncode == 0, self._why(proc)
        else:
            self.tally.ops += 1
            try:
                os.remove(target)
                ok, why = True, ""
            except OSError as exc:
                ok, why = False, repr(exc)
        if not ok:
            self.fail("rm", f"round {n}: rm {self.moved}: {why}")
            return
        self.tally.removals += 1
        self.present[self.moved] = None
        if os.path.lexists(target):
            self.fail("removed", f"round {n}: {self.moved} still exists after rm")

    def listing(self, n: int) -> None:
        """``ls -l``, or listdir + stat of every entry. Other workers' names may go between
        the two (their stat may fail); this worker's own names must be exactly as it left
        them."""
        if self.tools:
            proc = self._tool("ls", "-l", self.d)
            lines = proc.stdout.decode(errors="replace").splitlines()
            names = {line.split()[-1] for line in lines if not line.startswith("total")}
            # As on a local disk, another worker's file may go between readdir and lstat.
            vanished = {name for name in names if f"cannot access '{self.d / name}'" in
                        proc.stderr.decode(errors="replace")}  # fmt: skip
            if proc.returncode != 0 and (not vanished or vanished & set(self.present)):
                self.fail("ls", f"round {n}: ls -l {self._why(proc)}")
                return
        else:
            self.tally.ops += 1
            try:
                names = set(os.listdir(self.d))
            except OSError as exc:
                self.fail("ls", f"round {n}: listdir: {exc!r}")
                return
            for name in names:
                self.tally.ops += 1
                try:
                    os.stat(self.d / name)
                except FileNotFoundError:
                    if name in self.present:
                        self.fail("stat", f"round {n}: stat {name}: ENOENT right after listing")
                except OSError as exc:
                    self.fail("stat", f"round {n}: stat {name}: {exc!r}")
        for name, data in self.present.items():
            if (name in names) != (data is not None):
                shown = "shown" if name in names else "not shown"
                self.fail("listing", f"round {n}: {name} {shown} by the listing")

    def _supersede(self, name: str) -> None:
        """A save or move at ``name`` replaces what was there: one more removal."""
        if self.present[name] is not None:
            self.tally.removals += 1


def _summary(workers: list[SoakWorker], seconds: float) -> str:
    rounds = sum(w.tally.rounds for w in workers)
    ops = sum(w.tally.ops for w in workers)
    kinds: dict[str, int] = {}
    for w in workers:
        for kind, count in w.tally.kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
    failed = sum(kinds.values())
    return (
        f"soak: {len(workers)} workers, {seconds:.0f} s, {rounds} rounds, {ops} operations, "
        f"{failed} failures {dict(sorted(kinds.items()))}"
    )


@pytest.mark.timeout(180 + 2 * DURATION)
def test_workers_on_one_mount_read_their_own_writes(
    kb,  # type: ignore[no-untyped-def]
    mounter: Mounter,
    tmp_path: Path,
) -> None:
    project = kb.project("soak")
    task = kb.task(project, "shared task")
    # A short listing cache: listings then arrive all the time, also while a save's old
    # version or a move's source is being removed (what must never show again).
    m: Mounted = mounter(kb, ttl=0.5)
    d = m.p("projects", project, "tasks", task)
    assert os.listdir(d) == []
    workers = [SoakWorker(i, d, tmp_path, tools=i % 2 == 1) for i in range(WORKERS)]
    kb.reset_stats()
    start = time.monotonic()
    deadline = start + DURATION
    threads = [
        threading.Thread(target=w.run, args=(deadline,), name=f"soak-{w.index}", daemon=True)
        for w in workers
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=DURATION + 150)
    elapsed = time.monotonic() - start
    summary = _summary(workers, elapsed)
    print(summary)
    assert all(not th.is_alive() for th in threads), f"a worker hung\n{summary}"
    failures = [f for w in workers for f in w.tally.failures]
    assert not failures, summary + "\n" + "\n".join(failures[:40])
    assert sum(w.tally.rounds for w in workers) >= WORKERS * 5, summary

    # Every close() and rename returned only once its upload (and the removal of what it
    # superseded) was done: the counts are exact, and the server holds what the workers left.
    calls = kb.stats()["calls"]
    assert calls.get("createTaskFile", 0) == sum(w.tally.creates for w in workers), calls
    assert calls.get("removeTaskFile", 0) == sum(w.tally.removals for w in workers), calls
    on_server: dict[str, list[bytes]] = {}
    for f in kb.task_files(task):
        on_server.setdefault(f["name"], []).append(kb.download_task_file(f["id"]))
    expected = {name: [data] for w in workers for name, data in w.present.items() if data}
    assert {k: [len(x) for x in v] for k, v in on_server.items()} == {
        k: [len(x) for x in v] for k, v in expected.items()
    }
    assert on_server == expected
