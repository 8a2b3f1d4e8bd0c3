"""Stress under random server faults: several workers run cp, cat, mv, rm and ls on the mount
for a bounded time while the server fails a share of all calls at random (seeded). Afterwards:
every close() that returned 0 is on the server with the right bytes, every failed upload is on
the server or in the recovery folder, every rm that returned 0 is gone, nothing is duplicated.

Each variant runs twice: ``short`` (SHORT seconds, in the default test run) and ``long``
(``-m stress``, KBFS_STRESS_SECONDS). The workers' seeds are fixed; the fault seed is random
unless KBFS_STRESS_SEED gives it, and a failing run prints it (``fault seed N``) to repeat it.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import STRESS_LENGTHS as LENGTHS
from tests.e2e.helpers import STRESS_SECONDS as DURATION
from tests.e2e.helpers import STRESS_SEED as FAULT_SEED
from tests.e2e.helpers import STRESS_SHORT as SHORT
from tests.e2e.helpers import Mounted, Mounter, unsent

WORKERS = int(os.environ.get("KBFS_STRESS_WORKERS", "4"))
NAMES = ["a.txt", "b.txt", "c.txt", "d.bin"]

Absent = None  # a name with no file


class Worker:
    """Runs random operations on its own task directory and tracks what may be true after."""

    def __init__(self, index: int, d: Path, scratch: Path, seed: int) -> None:
        self.index = index
        self.d = d
        self.scratch = scratch
        self.rng = random.Random(seed)
        # name -> the set of states allowed now (bytes content, or None for absent)
        self.allowed: dict[str, set[bytes | None]] = {n: {Absent} for n in NAMES}
        self.ops = 0
        self.errors: list[str] = []
        self.history: list[str] = []  # what happened, for the failure message

    def run(self, deadline: float, stop: threading.Event) -> None:
        n = 0
        while time.monotonic() < deadline and not stop.is_set():
            n += 1
            op = self.rng.choice(["cp", "cp", "cat", "mv", "rm", "ls"])
            name = self.rng.choice(NAMES)
            try:
                getattr(self, op)(name, n)
            except subprocess.TimeoutExpired:
                self.errors.append(f"{op} {name} hung")
            self.ops += 1

    def _run(self, *cmd: str | Path) -> int:
        start = time.time()
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, check=False)
        args = " ".join(Path(str(c)).name for c in cmd[1:])
        err = proc.stderr.decode(errors="replace").strip()[-80:]
        self.history.append(f"{start:.3f} {cmd[0]} {args} -> {proc.returncode} {err}")
        return proc.returncode

    def cp(self, name: str, n: int) -> None:
        data = f"worker {self.index} op {n} ".encode() * self.rng.randint(1, 3000)
        src = self.scratch / f"src-{self.index}"
        src.write_bytes(data)
        ok = self._run("cp", src, self.d / name) == 0
        self.history[-1] += f" ({len(data)} bytes)"
        self.allowed[name] = {data} if ok else self.allowed[name] | {data}

    def cat(self, name: str, n: int) -> None:
        self._run("cat", self.d / name)

    def mv(self, name: str, n: int) -> None:
        other = self.rng.choice([x for x in NAMES if x != name])
        if Absent in self.allowed[name] and len(self.allowed[name]) == 1:
            return
        ok = self._run("mv", self.d / name, self.d / other) == 0
        if ok:
            self.allowed[other] = self.allowed[name] - {Absent}
            self.allowed[name] = {Absent}
        else:
            self.allowed[other] = self.allowed[other] | self.allowed[name]
            self.allowed[name] = self.allowed[name] | {Absent}

    def rm(self, name: str, n: int) -> None:
        ok = self._run("rm", "-f", self.d / name) == 0
        self.allowed[name] = {Absent} if ok else self.allowed[name] | {Absent}

    def ls(self, name: str, n: int) -> None:
        self._run("ls", "-l", self.d)


def kernel_stacks(pid: int) -> str:
    """Where each thread of a process waits in the kernel (root only)."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            stack = (task / "stack").read_text()
            state = (task / "stat").read_text().split(") ")[1][0]
        except OSError as exc:
            stack, state = str(exc), "?"
        out.append(f"thread {task.name} state {state}:\n{stack}")
    return "\n".join(out)


VARIANTS = [
    pytest.param(crash, mode, length.values[0], id=f"{label}-{name}", marks=length.marks)
    for crash, mode, label in (
        (False, (), "faults"),
        (True, (), "faults-and-kill-9"),
        (False, ("writeback",), "writeback-faults"),
        (True, ("writeback",), "writeback-faults-and-kill-9"),
    )
    for length, name in zip(LENGTHS, ("short", "long"), strict=True)
]


@pytest.mark.timeout(300 + 2 * max(SHORT, DURATION))
@pytest.mark.parametrize(("crash", "mode", "seconds"), VARIANTS)
def test_random_faults_lose_nothing(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, tmp_path: Path, crash: bool, mode: tuple[str, ...], seconds: float
) -> None:
    """With ``crash``, the daemon is killed (SIGKILL) halfway; the workers go on against the
    dead mount (their operations fail), and a new mount of the same state dir must then
    finish everything: the same checks apply. With ``writeback`` a close() that returned 0
    only had its bytes in the spool: once the spool has drained they must be on the server
    all the same (batches that failed, whole or in part, included)."""
    print(f"fault seed {FAULT_SEED} (KBFS_STRESS_SEED={FAULT_SEED} repeats it)")
    p = kb.project("stress")
    tasks = [kb.task(p, f"worker {i}") for i in range(WORKERS)]
    state = tmp_path / "state"
    m: Mounted = mounter(kb, "timeout=3", f"state_dir={state}", *mode, ttl=0.3)
    m.allow_errors = True
    for t in tasks:
        os.listdir(m.p("projects", p, "tasks", t))
    workers = [
        Worker(i, m.p("projects", p, "tasks", t), tmp_path, seed=1000 + i)
        for i, t in enumerate(tasks)
    ]
    kb.chaos(0.15, seed=FAULT_SEED)
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(deadline, stop)) for w in workers]
    for th in threads:
        th.start()
    if crash:
        time.sleep(seconds / 2)
        stop.set()  # the operations under way when the daemon dies fail (ENOTCONN)
        m.proc.kill()
        try:
            m.proc.wait(timeout=20)  # a killed daemon must be able to exit (nothing stuck)
        except subprocess.TimeoutExpired:
            stacks = kernel_stacks(m.proc.pid)
            raise AssertionError(f"the killed daemon is stuck:\n{stacks}") from None
    for th in threads:
        th.join(timeout=seconds + 120)
    if crash:
        # Only now: on a plain directory, "rm -f" of a missing file would succeed.
        mounter.unmount(m)
    kb.chaos(0)
    kb.clear_faults()
    assert all(not th.is_alive() for th in threads)
    assert not [e for w in workers for e in w.errors]
    print(f"{sum(w.ops for w in workers)} operations")
    assert sum(w.ops for w in workers) > 40
    if crash:
        m = mounter(kb, "timeout=3", f"state_dir={state}", *mode, ttl=0.3)  # takes the spool
        m.allow_errors = True

    # Let the background retries drain the spool (failed uploads and stale removals).
    # (An empty file stays in this mount only, by design: a cp cut short by the kill leaves one;
    # so does content the server refused for good, as a local-only file copied to the
    # recovery folder.)
    deadline = time.monotonic() + 120
    while unsent(state) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not unsent(state), unsent(state)
    # Queued removals (superseded versions, lost copies) run on the retry loop too; the
    # cleanup journal is gone once none is left.
    journal = lambda: list(state.rglob("cleanup.journal"))  # noqa: E731
    while journal() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not journal(), journal()[0].read_text()
    time.sleep(3)

    recovered = {x.read_bytes() for x in state.rglob("recovered/*") if x.suffix != ".json"}
    problems = []
    for w, t in zip(workers, tasks, strict=True):
        on_server: dict[str, list[bytes]] = {}
        for f in kb.task_files(t):
            on_server.setdefault(f["name"], []).append(kb.download_task_file(f["id"]))
        for name in NAMES:
            copies = on_server.get(name, [])
            if len(copies) > 1:
                problems.append(f"worker {w.index} {name}: {len(copies)} copies on the server")
                continue
            actual = copies[0] if copies else Absent
            allowed = w.allowed[name]
            if actual in allowed:
                continue
            if actual is Absent and any(c in recovered for c in allowed if c is not None):
                continue  # refused for good: the bytes are in the recovery folder
            problems.append(
                f"worker {w.index} {name}: server has "
                f"{'nothing' if actual is None else len(actual)}, allowed "
                f"{sorted(-1 if a is None else len(a) for a in allowed)} (-1 = absent)"
            )
        extra = set(on_server) - set(NAMES)
        if extra:
            problems.append(f"worker {w.index}: unexpected files {sorted(extra)}")
    if problems:
        for w in workers:
            if any(f"worker {w.index} " in p for p in problems):
                problems.append(f"--- worker {w.index} history:\n" + "\n".join(w.history))
                files = kb.task_files(tasks[w.index])
                problems.append(
                    "server: "
                    + ", ".join(f"{f['id']}:{f['name']}:{f['size']}@{f['date']}" for f in files)
                )
    assert not problems, "\n".join(problems)
    assert os.path.ismount(m.path)
