"""Never publish a broken file, never hide a refused one, through a real mount: a copy that
ran out of spool space never reaches the server (checked in the server's own records), and
content the server refuses for good stays in the mount as a local-only file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter, run, wait_for

STATE_KEY = "user.kbfs.state"


@pytest.fixture
def task(kb):  # type: ignore[no-untyped-def]
    p = kb.project("integrity")
    t = kb.task(p, "t")
    return {"p": p, "t": t}


def kbfs_status(m: Mounted) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "kbfs", "status", str(m.path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return r.stdout.decode(errors="replace")


def kbfs_state(path: Path) -> bytes:
    """``user.kbfs.state`` as getfattr reads it."""
    return run("getfattr", "--only-values", "-n", STATE_KEY, path).stdout


def recovered(state: Path) -> list[dict[str, object]]:
    out = []
    for meta in sorted(state.glob("**/recovered/*.json")):
        out.append({**json.loads(meta.read_text()), "file": meta.with_suffix("")})
    return out


def test_a_copy_that_ran_out_of_spool_space_never_reaches_the_server(  # type: ignore[no-untyped-def]
    kb, mounter: Mounter, task, tmp_path: Path
) -> None:
    state = tmp_path / "small-state"
    state.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", state)
    m = None
    try:
        m = mounter(kb, f"state_dir={state}")
        m.allow_errors = True
        d = m.p("projects", task["p"], "tasks", task["t"])
        earlier = b"the earlier version\n"
        run("dd", f"of={d / 'big.bin'}", "status=none", input=earlier)
        [before] = kb.task_files(task["t"])
        kb.reset_stats()
        source = tmp_path / "source.bin"
        source.write_bytes(os.urandom(20 << 20))
        r = run("cp", source, d / "big.bin", check=False)
        assert r.returncode != 0
        assert b"No space left on device" in r.stderr, r.stderr
        # Free space, and let the background passes do what they do with the partial bytes.
        run("mount", "-o", "remount,size=64m", state)
        wait_for(lambda: not list(state.rglob("spool/*.data")), what="the spool to settle")
        # The server never got a byte of it, and its earlier version is intact.
        assert kb.stats()["calls"].get("createTaskFile", 0) == 0
        assert kb.stats()["calls"].get("removeTaskFile", 0) == 0
        [after] = kb.task_files(task["t"])
        assert after["id"] == before["id"] and int(after["size"]) == len(earlier)
        assert kb.download_task_file(after["id"]) == earlier
        # The partial bytes are kept for the user, with the reason and their size.
        [kept] = recovered(state)
        assert "incomplete: a write failed" in str(kept["reason"])
        partial = Path(str(kept["file"])).read_bytes()
        assert 0 < len(partial) < 20 << 20 and kept["size"] == len(partial)
        wait_for(lambda: (d / "big.bin").read_bytes() == earlier, what="the earlier version")
        out = kbfs_status(m)
        assert "incomplete: a write failed" in out, out
    finally:
        if m is not None:
            mounter.unmount(m)
        subprocess.run(["umount", str(state)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(state)], check=False, capture_output=True)


def test_refused_content_stays_in_the_mount_as_local_only(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    state = mounter.tmp_path / "shared-state"
    m = mounter(kb, f"state_dir={state}")
    m.allow_errors = True
    d = m.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    r = run("cp", "/dev/stdin", d / "fake.png", input=b"not an image\n", check=False)
    assert r.returncode != 0 and b"Invalid argument" in r.stderr, r.stderr
    r = run("dd", f"of={d / 'zero.txt'}", "status=none", input=b"0", check=False)
    assert r.returncode != 0
    wait_for(lambda: len(recovered(state)) == 2, what="copies in the recovery folder")
    # Still there, readable, and marked as not on the server.
    assert sorted(os.listdir(d)) == ["fake.png", "zero.txt"]
    assert run("cat", d / "fake.png").stdout == b"not an image\n"
    assert kbfs_state(d / "fake.png").startswith(b"local-only: ")
    assert kbfs_state(d / "zero.txt").startswith(b"local-only: ")
    out = kbfs_status(m)
    assert "REFUSED: 2 file(s)" in out and "fake.png" in out, out
    assert kb.task_files(task["t"]) == []
    # rm drops it (the recovery copy stays); mv to a name the server takes uploads it.
    run("rm", d / "zero.txt")
    run("mv", d / "fake.png", d / "fake.txt")
    [uploaded] = kb.task_files(task["t"])
    assert uploaded["name"] == "fake.txt"
    assert kb.download_task_file(uploaded["id"]) == b"not an image\n"
    assert sorted(os.listdir(d)) == ["fake.txt"]
    assert kbfs_state(d / "fake.txt") == b"on the server"
    assert len(recovered(state)) == 2
    # A refused file survives an unmount: the next mount shows it as local-only again.
    r = run("dd", f"of={d / 'again.gif'}", "status=none", input=b"no gif", check=False)
    assert r.returncode != 0
    wait_for(lambda: len(recovered(state)) == 3, what="a copy in the recovery folder")
    mounter.unmount(m)
    m2 = mounter(kb, f"state_dir={state}")
    m2.allow_errors = True
    d2 = m2.p("projects", task["p"], "tasks", task["t"])
    assert sorted(os.listdir(d2)) == ["again.gif", "fake.txt"]
    assert run("cat", d2 / "again.gif").stdout == b"no gif"
    assert kbfs_state(d2 / "again.gif").startswith(b"local-only: ")
    assert [f["name"] for f in kb.task_files(task["t"])] == ["fake.txt"]
    assert len(recovered(state)) == 3
