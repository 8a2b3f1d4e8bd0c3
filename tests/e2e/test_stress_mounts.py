"""Stress with two mounts of one server (two machines, two state dirs) under random faults.

Workers on both mounts run cp, mv, rm, cat and ls on the same few names of one task, and
create new files (``dd conv=excl``) named after the current second, so that both mounts create
the same name in the same second without knowing of each other's file (kanboard-api §7), while
the server fails a share of all calls; halfway, the first mount is killed (SIGKILL) and
mounted again on the same state dir. Afterwards, once both spools are drained:

- no partial content is on the server: every row holds the whole content of some write;
- every write whose close() returned 0 is on the server with its bytes, unless an operation on
  that name (by either mount) overlapped or followed it (that one may rightly replace it). The
  new files are never touched again: each one must be there;
- every write that failed (not cut off by the kill) is on the server, in the recovery folder,
  or kept in a mount as local-only content, under the same proviso.

A worker never overlaps another worker of its own mount on a name (two writers of one file
in one mount interleave their bytes, as on any filesystem); workers of different mounts do.
Short runs are in the default test run, long ones under ``-m stress`` (see test_stress.py).
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import STRESS_LENGTHS as LENGTHS
from tests.e2e.helpers import STRESS_SECONDS as DURATION
from tests.e2e.helpers import STRESS_SEED as FAULT_SEED
from tests.e2e.helpers import STRESS_SHORT as SHORT
from tests.e2e.helpers import Mounted, Mounter, unsent

NAMES = ["a.txt", "b.txt", "c.txt"]
PER_MOUNT = 2  # workers on each mount
# What cp and dd say when opening the target failed (nothing was written).
NOT_OPENED = (b"cannot create regular file", b"failed to open", b"cannot open")


@dataclass
class Op:
    kind: str
    name: str
    other: str | None  # mv's target
    mount: int
    start: float
    end: float = 0.0
    ok: bool = False
    content: bytes | None = None  # what a write wrote (None: the target never opened)
    err: str = ""  # the end of its stderr

    def touches(self, name: str) -> bool:
        return self.kind in ("cp", "new", "mv", "rm") and name in (self.name, self.other)


class Mount:
    """One machine: its mount, its state dir, whether it is up, its per-name locks."""

    def __init__(self, index: int, m: Mounted, state: Path, d: Path) -> None:
        self.index = index
        self.m = m
        self.state = state
        self.d = d
        self.up = threading.Event()
        self.up.set()
        self.names = {n: threading.Lock() for n in NAMES}


class Worker:
    def __init__(self, mount: Mount, index: int, scratch: Path, ops: list[Op]) -> None:
        self.mount = mount
        self.index = index
        self.rng = random.Random(2000 + 10 * mount.index + index)
        self.src = scratch / f"src-{mount.index}-{index}"
        self.ops = ops
        self.hung: list[str] = []

    def run(self, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline:
            self.mount.up.wait(timeout=60)
            n += 1
            kind = self.rng.choice(["cp", "cp", "new", "new", "mv", "rm", "cat", "ls"])
            name = self.rng.choice(NAMES) if kind != "new" else f"new-{int(time.time())}.txt"
            other = self.rng.choice([x for x in NAMES if x != name]) if kind == "mv" else None
            locks = sorted({name, other} - {None}) if kind != "new" else []  # type: ignore[type-var]
            for lock in locks:
                self.mount.names[lock].acquire()  # type: ignore[index]
            try:
                self._one(kind, name, other, n)
            except subprocess.TimeoutExpired:
                self.hung.append(f"{kind} {name}")
            finally:
                for lock in reversed(locks):
                    self.mount.names[lock].release()  # type: ignore[index]

    def _one(self, kind: str, name: str, other: str | None, n: int) -> None:
        d = self.mount.d
        op = Op(kind, name, other, self.mount.index, time.time())
        cmd: list[str | Path]
        if kind in ("cp", "new"):
            op.content = f"mount {self.mount.index} worker {self.index} op {n} ".encode() * (
                self.rng.randint(1, 2000)
            )
            self.src.write_bytes(op.content)
            cmd = ["cp", self.src, d / name]
            if kind == "new":  # O_CREAT|O_EXCL: never over a file this mount shows
                cmd = [
                    "dd",
                    f"if={self.src}",
                    f"of={d / name}",
                    "bs=1M",
                    "conv=excl",
                    "status=none",
                ]
        elif kind == "mv":
            cmd = ["mv", d / name, d / str(other)]
        elif kind == "rm":
            cmd = ["rm", "-f", d / name]
        elif kind == "cat":
            cmd = ["cat", d / name]
        else:
            cmd = ["ls", "-l", d]
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, check=False)
        op.end = time.time()
        op.ok = proc.returncode == 0
        op.err = proc.stderr.decode(errors="replace").strip()[-70:]
        if kind == "new" and b"File exists" in proc.stderr:
            return  # this mount shows that name already: nothing was written
        if kind in ("cp", "new") and any(m in proc.stderr for m in NOT_OPENED):
            op.content = None  # the file was never opened: its bytes never reached the mount
        self.ops.append(op)


def voided(c: Op, ops: list[Op]) -> bool:
    """Whether another operation on ``c``'s name overlapped or followed it. Never for a new
    file: nothing replaces or removes one (a create of that name elsewhere adds a row)."""
    return c.kind != "new" and any(
        o is not c and o.touches(c.name) and o.end > c.start for o in ops
    )


def drained(state: Path) -> bool:
    """Nothing left to upload (but refused content kept local-only), to remove, or to check."""
    return (
        not unsent(state)
        and not list(state.rglob("cleanup.journal"))
        and not list(state.rglob("held/*.record"))
    )


def remount(mounter: Mounter, kb: object, state: Path) -> Mounted:
    """Mount the killed machine again on its state dir, as its user would: a mount that
    fails because the server failed a call made while mounting (the faults go on) is tried
    again. Mounting refuses to start on a server error; that is right, and not what this
    test is about."""
    for _ in range(20):
        try:
            m = mounter(kb, "timeout=3", f"state_dir={state}", ttl=0.3)
        except AssertionError as exc:
            if "cannot use http" not in str(exc):
                raise
            continue
        m.allow_errors = True
        return m
    raise AssertionError("the server failed every one of 20 attempts to mount")


@pytest.mark.timeout(300 + 2 * max(SHORT, DURATION))
@pytest.mark.parametrize("seconds", LENGTHS)
def test_two_mounts_with_faults_and_a_kill_lose_nothing(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, tmp_path: Path, seconds: float
) -> None:
    print(f"fault seed {FAULT_SEED} (KBFS_STRESS_SEED={FAULT_SEED} repeats it)")
    p = kb.project("stress")
    t = kb.task(p, "two machines")
    mounts = []
    for i in range(2):
        state = tmp_path / f"state-{i}"
        m = mounter(kb, "timeout=3", f"state_dir={state}", ttl=0.3)
        m.allow_errors = True
        mounts.append(Mount(i, m, state, m.p("projects", p, "tasks", t)))
        os.listdir(mounts[-1].d)
    ops: list[Op] = []
    workers = [Worker(mt, i, tmp_path, ops) for mt in mounts for i in range(PER_MOUNT)]
    kb.chaos(0.15, seed=FAULT_SEED)
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=w.run, args=(deadline,)) for w in workers]
    for th in threads:
        th.start()

    time.sleep(seconds / 2)
    first = mounts[0]
    first.up.clear()  # its workers start nothing new; what is under way fails (ENOTCONN)
    killed_at = time.time()
    first.m.proc.kill()
    first.m.proc.wait(timeout=20)
    time.sleep(1)  # let the operations under way fail against the dead mount
    mounter.unmount(first.m)
    first.m = remount(mounter, kb, first.state)
    first.d = first.m.p("projects", p, "tasks", t)
    remounted_at = time.time()
    first.up.set()

    for th in threads:
        th.join(timeout=seconds + 180)
    assert all(not th.is_alive() for th in threads)
    kb.chaos(0)
    kb.clear_faults()
    assert not [h for w in workers for h in w.hung]
    assert len(ops) > 20

    deadline = time.monotonic() + 120
    while not all(drained(mt.state) for mt in mounts) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(drained(mt.state) for mt in mounts)

    rows = kb.task_files(t)
    server = {f["id"]: (f["name"], kb.download_task_file(f["id"])) for f in rows}
    writes = [o for o in ops if o.kind in ("cp", "new")]
    written = {o.content for o in writes if o.content is not None}
    kept = set()  # recovery folders, and content kept local-only in a mount
    for mt in mounts:
        kept |= {x.read_bytes() for x in mt.state.rglob("recovered/*") if x.suffix != ".json"}
        kept |= {x.read_bytes() for x in mt.state.rglob("spool/*.data")}
    problems = [
        f"file {fid} {name}: {len(data)} bytes that no write wrote whole"
        for fid, (name, data) in server.items()
        if data not in written
    ]
    for c in writes:
        if c.content is None or voided(c, ops):
            continue
        if c.mount == 0 and c.end >= killed_at and c.start <= remounted_at:
            continue  # cut off by the kill: its bytes may never have reached the mount
        where = [name for name, data in server.values() if data == c.content]
        if c.ok and c.name not in where:
            problems.append(f"acknowledged {c.kind} of {len(c.content or b'')} to {c.name} lost")
        if not c.ok and not where and c.content not in kept:
            problems.append(f"failed {c.kind} of {len(c.content or b'')} to {c.name} lost")
    checked = sum(1 for o in writes if o.ok and not voided(o, ops))
    repaired = sum(m.log_text().count("was overwritten on the server") for m in mounter.mounts)
    print(f"{len(ops)} operations, {checked} acknowledged writes checked, {repaired} repaired")
    if problems:
        problems.append(
            "server: " + ", ".join(f"{f['id']}:{f['name']}:{f['size']}@{f['date']}" for f in rows)
        )
        for o in sorted(ops, key=lambda o: o.start):
            problems.append(
                f"{o.start:.3f}-{o.end:.3f} m{o.mount} {o.kind} {o.name} {o.other or ''}"
                f" {'ok' if o.ok else 'FAILED'} {len(o.content or b'')} {o.err}"
            )
    assert not problems, "\n".join(problems)
