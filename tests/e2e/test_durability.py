"""Never lose a byte: failed uploads are retried, survive a crash, are never uploaded twice,
and what the server refuses for good is copied to the recovery folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import KANBOARD_VERSIONS, Mounted, Mounter, run, wait_for


@pytest.fixture
def task(kb):  # type: ignore[no-untyped-def]
    p = kb.project("durable")
    t = kb.task(p, "t")
    return {"p": p, "t": t}


def names(kb, t: int) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(f["name"] for f in kb.task_files(t))


def content(kb, t: int, name: str) -> bytes:  # type: ignore[no-untyped-def]
    (f,) = [f for f in kb.task_files(t) if f["name"] == name]
    return kb.download_task_file(f["id"])


def test_failed_upload_is_retried_in_the_background(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = mnt.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    mnt.allow_errors = True
    kb.fault("createTaskFile", "http500", count=1)
    r = run("dd", f"of={d / 'retry.txt'}", "status=none", input=b"retry me\n", check=False)
    assert r.returncode != 0  # close() reports the first failure ...
    assert (d / "retry.txt").read_bytes() == b"retry me\n"  # ... the mount shows the new version
    wait_for(lambda: "retry.txt" in names(kb, task["t"]), what="background retry")
    assert content(kb, task["t"], "retry.txt") == b"retry me\n"
    wait_for(lambda: not mnt.spool_files(), what="spool to empty")


def crash(mounter: Mounter, m: Mounted) -> None:
    """kill -9 the daemon, and clear the dead mount (which lets the process end)."""
    m.proc.send_signal(signal.SIGKILL)
    mounter.unmount(m)


def crashable(kb, mounter: Mounter, task) -> tuple[Mounted, Path, Path]:  # type: ignore[no-untyped-def]
    """A mount whose state dir the next mount (after a crash) shares, its task directory listed:
    (mount, task directory, state dir)."""
    state = mounter.tmp_path / "shared-state"
    m = mounter(kb, f"state_dir={state}")
    m.allow_errors = True
    d = m.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    return m, d, state


def unsaved(kb, mounter: Mounter, task, name: str, data: bytes) -> tuple[Mounted, Path]:  # type: ignore[no-untyped-def]
    """A mount with a shared state dir, and a file in it whose every upload fails."""
    m, d, state = crashable(kb, mounter, task)
    kb.fault("createTaskFile", "http500", count=1000)
    run("dd", f"of={d / name}", "status=none", input=data, check=False)
    return m, state


@KANBOARD_VERSIONS
def test_crash_then_remount_finishes_the_upload(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    m, state = unsaved(kb, mounter, task, "crash.txt", b"survive a crash\n")
    spool = sorted(state.rglob("*.data"))
    assert [p.read_bytes() for p in spool] == [b"survive a crash\n"]
    meta = json.loads(spool[0].with_suffix(".json").read_text())
    assert meta["name"] == "crash.txt" and meta["task_id"] == task["t"]
    assert oct(spool[0].stat().st_mode & 0o777) == "0o600"
    assert oct(spool[0].parent.stat().st_mode & 0o777) == "0o700"
    crash(mounter, m)
    kb.clear_faults()
    assert names(kb, task["t"]) == []
    m2 = mounter(kb, f"state_dir={state}")
    d2 = m2.p("projects", task["p"], "tasks", task["t"])
    assert (d2 / "crash.txt").read_bytes() == b"survive a crash\n"
    wait_for(lambda: names(kb, task["t"]) == ["crash.txt"], what="upload after remount")
    assert content(kb, task["t"], "crash.txt") == b"survive a crash\n"


@KANBOARD_VERSIONS
def test_a_crash_leaves_no_superseded_version_or_lost_copy_behind(
    kb, mounter: Mounter, task
) -> None:  # type: ignore[no-untyped-def]
    """What is left to clean up on the server survives a crash too (the cleanup journal)."""
    kb.upload_task_file(task["p"], task["t"], "doc.txt", b"old\n")
    m, d, state = crashable(kb, mounter, task)
    # 1. An overwrite whose new version is confirmed but the old one cannot be removed yet.
    kb.fault("removeTaskFile", "http500", count=1000)
    run("dd", f"of={d / 'doc.txt'}", "status=none", input=b"new\n")
    assert names(kb, task["t"]) == ["doc.txt", "doc.txt"]
    assert sorted(os.listdir(d)) == ["doc.txt"]  # the old one is hidden meanwhile
    # 2. A create whose answer was lost, its file then moved away by mv (so no spool entry).
    kb.fault("createTaskFile", "truncated", count=1)
    run("dd", f"of={d / 'lost.txt'}", "status=none", input=b"lost answer\n", check=False)
    kb.fault("removeTaskFile", "http500", count=1000)
    run("mv", d / "lost.txt", d / "kept.txt")
    assert sorted(names(kb, task["t"])) == ["doc.txt", "doc.txt", "kept.txt", "lost.txt"]
    journal = list(state.rglob("cleanup.journal"))
    assert journal and oct(journal[0].stat().st_mode & 0o777) == "0o600"
    crash(mounter, m)
    kb.clear_faults()
    m2 = mounter(kb, f"state_dir={state}")
    d2 = m2.p("projects", task["p"], "tasks", task["t"])
    assert sorted(os.listdir(d2)) == ["doc.txt", "kept.txt"]  # never shown twice
    wait_for(
        lambda: sorted(names(kb, task["t"])) == ["doc.txt", "kept.txt"],
        what="the next mount to finish the cleanup",
    )
    assert content(kb, task["t"], "doc.txt") == b"new\n"
    assert content(kb, task["t"], "kept.txt") == b"lost answer\n"
    wait_for(lambda: not list(state.rglob("cleanup.journal")), what="the journal to empty")


def test_unsaved_content_of_a_file_replaced_meanwhile_is_recovered_not_duplicated(
    kb, mounter: Mounter, task
) -> None:  # type: ignore[no-untyped-def]
    m, state = unsaved(kb, mounter, task, "doc.txt", b"mine, never saved\n")
    crash(mounter, m)
    kb.clear_faults()
    time.sleep(1.1)  # a later second: Kanboard dates have 1 s resolution
    kb.upload_task_file(task["p"], task["t"], "doc.txt", b"theirs, saved after mine\n")
    m2 = mounter(kb, f"state_dir={state}")
    m2.allow_errors = True
    wait_for(lambda: list(state.rglob("recovered/*.json")), what="the conflict to be recovered")
    assert names(kb, task["t"]) == ["doc.txt"]
    assert content(kb, task["t"], "doc.txt") == b"theirs, saved after mine\n"
    kept = [p for p in state.rglob("recovered/*") if p.suffix != ".json"]
    assert [p.read_bytes() for p in kept] == [b"mine, never saved\n"]
    reason = json.loads(next(state.rglob("recovered/*.json")).read_text())
    assert "replaced on the server" in json.dumps(reason)
    d2 = m2.p("projects", task["p"], "tasks", task["t"])
    assert (d2 / "doc.txt").read_bytes() == b"theirs, saved after mine\n"


def test_lost_answer_is_never_uploaded_twice(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = mnt.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    mnt.allow_errors = True
    # "truncated": the server creates the file, then the answer is cut short
    kb.fault("createTaskFile", "truncated", count=1)
    r = run("dd", f"of={d / 'once.txt'}", "status=none", input=b"only once\n", check=False)
    assert r.returncode != 0
    assert names(kb, task["t"]) == ["once.txt"]
    kb.reset_stats()
    time.sleep(5)  # several background retry rounds
    run("touch", d / "once.txt")  # and a close, which retries too
    assert names(kb, task["t"]) == ["once.txt"]
    assert kb.stats()["calls"].get("createTaskFile", 0) == 0
    wait_for(lambda: not mnt.spool_files(), what="spool to empty")  # release() is asynchronous


def test_a_lost_copy_never_shows_after_the_file_moved_away(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    m = mounter(kb, ttl=0.1)
    m.allow_errors = True
    d = m.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    kb.fault("createTaskFile", "truncated", count=1)  # created, but the answer is cut short
    r = run("dd", f"of={d / 'd.bin'}", "status=none", input=b"moved away\n", check=False)
    assert r.returncode != 0
    assert names(kb, task["t"]) == ["d.bin"]  # the copy the lost answer made
    time.sleep(0.2)
    assert os.listdir(d) == ["d.bin"]  # one entry: the unsaved version, no "d (#id).bin"
    run("mv", d / "d.bin", d / "c.txt")
    for _ in range(10):  # fresh listings (ttl 0.1 s) while the lost copy is still on the server
        time.sleep(0.15)
        assert sorted(os.listdir(d)) == ["c.txt"]
    wait_for(lambda: names(kb, task["t"]) == ["c.txt"], what="the lost copy to be removed")
    assert content(kb, task["t"], "c.txt") == b"moved away\n"


def upload_in_flight(kb, mnt: Mounted, task, name: str, data: bytes) -> Path:  # type: ignore[no-untyped-def]
    """A file whose save failed, and whose background retry is now on its way (slowly)."""
    d = mnt.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    mnt.allow_errors = True
    kb.fault("createTaskFile", "http500", count=1)
    r = run("dd", f"of={d / name}", "status=none", input=data, check=False)
    assert r.returncode != 0
    kb.fault("createTaskFile", "delay", count=1, delay=1.5)  # the background retry is slow
    kb.reset_stats()
    wait_for(lambda: kb.stats()["calls"].get("createTaskFile", 0) == 1, what="the retry")
    return d


def test_rm_during_a_background_upload_leaves_nothing(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = upload_in_flight(kb, mnt, task, "x.txt", b"soon removed\n")
    run("rm", d / "x.txt")  # while that create is on its way
    assert names(kb, task["t"]) == []
    assert not (d / "x.txt").exists()
    time.sleep(3)
    assert names(kb, task["t"]) == []
    wait_for(lambda: not mnt.spool_files(), what="spool to empty")


def test_mv_during_a_background_upload_moves_the_new_content(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = upload_in_flight(kb, mnt, task, "x.txt", b"moving target\n")
    run("mv", d / "x.txt", d / "y.txt")  # waits for that upload, then moves its result
    assert names(kb, task["t"]) == ["y.txt"]
    assert content(kb, task["t"], "y.txt") == b"moving target\n"
    assert sorted(os.listdir(d)) == ["y.txt"]
    assert (d / "y.txt").read_bytes() == b"moving target\n"
    wait_for(lambda: not mnt.spool_files(), what="spool to empty")


def test_a_save_after_an_unconfirmed_upload_replaces_it(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    """The read-back of an upload fails while listings already show the new file; the next
    save of that file, failing once and retried in the background, replaces it (no duplicate)."""
    m = mounter(kb, ttl=0.05)
    m.allow_errors = True
    d = m.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    kb.fault("getTaskFile", "rpc_error", count=4)  # the read-back fails, retries included
    stop = threading.Event()

    def list_meanwhile() -> None:
        while not stop.is_set():
            os.listdir(d)
            time.sleep(0.03)

    lister = threading.Thread(target=list_meanwhile)
    lister.start()
    try:
        run("dd", f"of={d / 'a.txt'}", "status=none", input=b"first version\n")
    finally:
        stop.set()
        lister.join()
    assert names(kb, task["t"]) == ["a.txt"]
    kb.fault("createTaskFile", "http500", count=1)
    r = run("dd", f"of={d / 'a.txt'}", "status=none", input=b"second version\n", check=False)
    assert r.returncode != 0
    time.sleep(0.2)
    os.listdir(d)  # a fresh listing, with the file's real record
    on_server = lambda: [kb.download_task_file(f["id"]) for f in kb.task_files(task["t"])]  # noqa: E731
    wait_for(lambda: on_server() == [b"second version\n"], what="the retry, and no duplicate")
    time.sleep(1)
    assert on_server() == [b"second version\n"]
    assert sorted(os.listdir(d)) == ["a.txt"]


def test_sigkill_during_an_upload_never_duplicates(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    m, d, state = crashable(kb, mounter, task)
    kb.config(latency=1.5)
    writer = subprocess.Popen(
        ["dd", f"of={d / 'inflight.txt'}", "status=none"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert writer.stdin is not None
    writer.stdin.write(b"in flight\n")
    writer.stdin.close()
    time.sleep(0.8)  # the create request is at the server now
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=10)
    writer.wait(timeout=10)
    mounter.unmount(m)
    time.sleep(1.5)
    kb.config(latency=0)
    m2 = mounter(kb, f"state_dir={state}")
    wait_for(lambda: not sorted(state.rglob("*.json")), what="spool to drain")
    assert names(kb, task["t"]) == ["inflight.txt"]
    assert content(kb, task["t"], "inflight.txt") == b"in flight\n"
    assert m2.p("projects", task["p"], "tasks", task["t"], "inflight.txt").exists()


def test_permanent_refusals_are_copied_to_the_recovery_folder(kb, mounter: Mounter, task) -> None:  # type: ignore[no-untyped-def]
    state = mounter.tmp_path / "state"
    m = mounter(kb, f"state_dir={state}")
    m.allow_errors = True
    d = m.p("projects", task["p"], "tasks", task["t"])
    os.listdir(d)
    # an image name on content that is not an image: refused before any upload
    r = run("dd", f"of={d / 'fake.png'}", "status=none", input=b"not a png", check=False)
    assert r.returncode != 0 and b"Invalid argument" in r.stderr
    # a 403 for this upload
    kb.fault("createTaskFile", "http403", count=1)
    r = run("dd", f"of={d / 'denied.txt'}", "status=none", input=b"denied bytes", check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    wait_for(
        lambda: len([p for p in state.rglob("recovered/*") if p.suffix != ".json"]) == 2,
        what="recovery",
    )
    recovered = sorted(p for p in state.rglob("recovered/*") if p.suffix != ".json")
    data = sorted(p.read_bytes() for p in recovered)
    assert data == [b"denied bytes", b"not a png"]
    reasons = [json.loads(Path(str(p) + ".json").read_text())["reason"] for p in recovered]
    assert all(reasons)
    assert names(kb, task["t"]) == []
    # Still in the mount, local only (tests/e2e/test_integrity.py); the log says where the
    # copies are.
    assert sorted(os.listdir(d)) == ["denied.txt", "fake.png"]
    assert "it stays in this mount only" in m.log_text()


def test_head_of_a_cold_file_does_not_wait_for_the_whole_download(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(6 * 1024 * 1024)
    kb.upload_task_file(task["p"], task["t"], "big.bin", data)
    f = mnt.p("projects", task["p"], "tasks", task["t"], "big.bin")
    f.stat()
    kb.config(bandwidth=2 * 1024 * 1024)  # the whole download takes about 4 s
    kb.reset_stats()
    try:
        out = run("head", "-c", "100", f).stdout
        assert out == data[:100]
        # head was answered from the first bytes: the server had not sent the file by then
        # (and, nobody reading on, the download is dropped: "nothing downloaded for nobody")
        assert kb.stats()["response_bytes"] < len(data), kb.stats()
        assert run("cat", f, timeout=60).stdout == data
    finally:
        kb.config(bandwidth=0)
    assert not list(mnt.cache_dir.rglob("*.part"))


def test_a_crash_while_a_renamed_file_is_still_open_leaves_no_duplicate(
    kb, mounter: Mounter, task
) -> None:  # type: ignore[no-untyped-def]
    """Renamed while still open for writing (gedit, LibreOffice save this way), then a crash
    before close: the next mount uploads the content under the new name and removes the
    source, which the spool entry remembers (it used to live in memory only: a duplicate)."""
    kb.upload_task_file(task["p"], task["t"], "draft.txt", b"old draft\n")
    m, d, state = crashable(kb, mounter, task)
    fd = os.open(d / "draft.txt", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"final text\n")
        os.rename(d / "draft.txt", d / "final.txt")
        assert sorted(os.listdir(d)) == ["final.txt"]
        crash(mounter, m)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert names(kb, task["t"]) == ["draft.txt"]  # nothing was uploaded before the crash
    m2 = mounter(kb, f"state_dir={state}")
    d2 = m2.p("projects", task["p"], "tasks", task["t"])
    assert sorted(os.listdir(d2)) == ["final.txt"]  # the source stays hidden meanwhile
    wait_for(
        lambda: names(kb, task["t"]) == ["final.txt"],
        what="the upload under the new name and the removal of the source",
    )
    assert content(kb, task["t"], "final.txt") == b"final text\n"
    assert (d2 / "final.txt").read_bytes() == b"final text\n"
