"""``-o timeout=T`` bounds every operation end to end, retries included (#18 item 5).

The built-in server's ``slow`` fault answers a byte a second: every read gets its byte in time,
so no per-read timeout ever fires, and each call used to be retried with 2 x T + 1 s per
attempt. Each test measures that the operation returns before ``LIMIT`` (three times the
timeout: a bound that leaves room for process start-up and a loaded machine, not a speed
target), with a clear error where the operation cannot succeed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.e2e.helpers import Mounted, Mounter, run

T = 3.0  # -o timeout=
LIMIT = 3 * T
SLOW = {"count": 100_000, "delay": 1.0}  # every call from now on: one byte a second


def timed(*cmd: str | Path) -> tuple[float, int, bytes, bytes]:
    started = time.monotonic()
    r = run(*cmd, check=False, timeout=120)
    return time.monotonic() - started, r.returncode, r.stdout, r.stderr


def slow_mount(kb, mounter: Mounter) -> Mounted:  # type: ignore[no-untyped-def]
    m = mounter(kb, f"timeout={T:g}", ttl=60)  # what was listed stays fresh
    m.allow_errors = True
    return m


def test_mounting_ends_within_the_timeout(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """The server check at mount time: one budget, so the default 30 s keeps a mount
    attempt within the 60 s TimeoutSec of the shipped .mount unit."""
    kb.fault("*", "slow", **SLOW)
    started = time.monotonic()
    m = mounter(kb, f"timeout={T:g}", wait=False)
    m.allow_errors = True
    rc = m.proc.wait(timeout=120)
    elapsed = time.monotonic() - started
    assert rc != 0
    err = m.proc.stderr.read().decode(errors="replace") if m.proc.stderr else ""
    assert "getVersion" in err + m.log_text()
    assert elapsed < LIMIT, f"mounting took {elapsed:.1f} s"


def test_ls_tasks_ends_within_the_timeout(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """ls tasks/ fetches every task's listing in one batch: that batch is cut off at the
    operation's deadline and the tasks (known already) are listed."""
    p = kb.project("p")
    tasks = [kb.task(p, f"t{i}") for i in range(3)]
    for t in tasks:
        kb.upload_task_file(p, t, "a.txt", b"abc")
    m = slow_mount(kb, mounter)
    run("stat", m.p("projects", p, "tasks", tasks[0]))  # the task list, without the batch
    kb.fault("*", "slow", **SLOW)
    elapsed, rc, out, err = timed("ls", m.p("projects", p, "tasks"))
    assert elapsed < LIMIT, f"ls took {elapsed:.1f} s"
    assert rc == 0, err
    assert sorted(out.split()) == sorted(str(t).encode() for t in tasks)


def test_rm_ends_within_the_timeout(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"abc")
    m = slow_mount(kb, mounter)
    d = m.p("projects", p, "tasks", t)
    assert run("ls", d).stdout == b"a.txt\n"
    kb.fault("*", "slow", **SLOW)
    elapsed, rc, _, err = timed("rm", d / "a.txt")
    assert elapsed < LIMIT, f"rm took {elapsed:.1f} s"
    assert rc != 0 and b"Input/output error" in err
    assert "unlink: " in m.log_text() and "timeout (EIO)" in m.log_text()


def test_append_ends_within_the_timeout(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """Opening a server file for appending copies its content first (copy-on-open): that
    download is bounded by the operation's budget (the timeout, plus the file's share)."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"abc")
    m = slow_mount(kb, mounter)
    d = m.p("projects", p, "tasks", t)
    assert run("ls", d).stdout == b"a.txt\n"
    kb.fault("*", "slow", **SLOW)
    append = f"open({str(d / 'a.txt')!r}, 'ab').write(b'more')"
    elapsed, rc, _, err = timed(sys.executable, "-c", append)
    assert elapsed < LIMIT, f">> took {elapsed:.1f} s"
    assert rc != 0 and b"Input/output error" in err
    assert "open for writing: no answer from the server within" in m.log_text()
    kb.clear_faults()
    assert run("cat", d / "a.txt").stdout == b"abc"  # nothing changed, the mount lives on


def test_cat_of_a_trickling_download_ends_within_the_timeout(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """A download that keeps streaming under the record's size: its whole time is fixed when
    it starts (the timeout plus the size's share), not pushed on by each byte."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"some content\n" * 10)
    m = slow_mount(kb, mounter)
    d = m.p("projects", p, "tasks", t)
    assert run("ls", d).stdout == b"a.txt\n"
    kb.fault("downloadTaskFile", "slow", **SLOW)
    started = time.monotonic()
    elapsed, rc, out, err = timed("cat", d / "a.txt")
    assert elapsed < LIMIT, f"cat took {elapsed:.1f} s"
    assert rc != 0 and b"Input/output error" in err and out == b""
    # The download itself (which outlives the read) ends too, retries included.
    while "download of task file" not in m.log_text():
        assert time.monotonic() - started < LIMIT, "the download went on"
        time.sleep(0.1)
