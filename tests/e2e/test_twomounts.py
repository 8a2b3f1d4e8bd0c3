"""Two mounts of one server (two machines): no save whose close() returned 0 is lost.

Kanboard stores two uploads of one name to one task in the same server second at one path,
and both rows then hold the later bytes (kanboard-api §7); the built-in server does the same.
The mounts do not know of each other's uploads (long directory cache time), so each checks
its own once the server's clock is past their second, and uploads again what was overwritten.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter, wait_for

ROUNDS = 8


def held(m: Mounted) -> list[Path]:
    """Uploads whose collision check has not passed yet."""
    return sorted(m.state_dir.rglob("held/*.record"))


def cp_all(jobs: list[tuple[Path, Path]]) -> list[int]:
    """Run one ``cp`` per job at the same moment (one thread each); their exit codes."""
    codes = [0] * len(jobs)

    def run(i: int, src: Path, dst: Path) -> None:
        codes[i] = subprocess.run(["cp", src, dst], capture_output=True, timeout=60).returncode

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return codes


@pytest.mark.timeout(180)
def test_same_name_saves_from_two_mounts_in_one_second_all_stay_on_the_server(
    kb, mounter: Mounter, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("shared")
    t = kb.task(p, "both machines")
    mounts = [mounter(kb, ttl=600), mounter(kb, ttl=600)]
    dirs = [m.p("projects", p, "tasks", t) for m in mounts]
    for d in dirs:
        os.listdir(d)  # listed now, and not again: neither mount sees the other's uploads
    acknowledged: list[bytes] = []
    for r in range(ROUNDS):
        jobs = []
        for i, d in enumerate(dirs):
            src = tmp_path / f"src-{i}"
            src.write_bytes(f"mount {i} round {r} ".encode() * (1 + 7 * i))
            jobs.append((src, d / f"report-{r}.txt"))
        contents = [src.read_bytes() for src, _ in jobs]
        kb.wait_until_second_boundary()
        codes = cp_all(jobs)
        acknowledged += [c for c, code in zip(contents, codes, strict=True) if code == 0]
    assert len(acknowledged) == 2 * ROUNDS
    for m in mounts:
        wait_for(lambda m=m: not held(m), timeout=60, what="the collision checks")
        wait_for(lambda m=m: not m.spool_files(), timeout=60, what="the uploads")

    on_server = [kb.download_task_file(f["id"]) for f in kb.task_files(t)]
    missing = [c[:20] for c in acknowledged if c not in on_server]
    assert not missing, f"acknowledged saves not on the server: {missing}"
    repaired = sum(m.log_text().count("was overwritten on the server") for m in mounts)
    assert repaired >= 1, "no round collided: the test proved nothing"
