"""Security and integrity checks that span the whole mount: the token in no file the mount
writes, server names never used as local paths, a size that does not match the bytes refused."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.helpers import Mounter, run


def test_token_is_in_no_file_the_mount_writes(kb, mounter: Mounter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.upload_task_file(p, t, "a.txt", b"abc")
    m = mounter(kb)  # logs at DEBUG
    m.allow_errors = True
    d = m.p("projects", p, "tasks", t)
    run("cat", d / "a.txt")
    run("cp", "/etc/hostname", d / "b.txt")
    kb.fault("createTaskFile", "http401", count=1)
    run("cp", "/etc/hostname", d / "c.txt", check=False)  # a 401: logged, spooled
    kb.fault("getAllTaskFiles", "garbage", count=3)
    run("ls", m.p("projects", p, "files"), check=False)
    token = kb.token.encode()
    written = [f for top in (m.state_dir, m.cache_dir) for f in top.rglob("*") if f.is_file()]
    written.append(m.log)
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR", "/run")) / "kbfs"
    written += [x for x in runtime.glob("*") if x.is_file()] if runtime.exists() else []
    assert len(written) >= 4
    for f in written:
        assert token not in f.read_bytes(), f
    assert b"DEBUG" in m.log.read_bytes()  # the log really was at its most verbose


def test_server_names_never_become_local_paths(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    for name in ["../../../escape.txt", "/etc/passwd-evil", "a\0b", "..", ".", ""]:
        kb.upload_task_file(p, t, name, b"hostile " + name.encode("unicode_escape"))
    m = mounter(kb)
    d = m.p("projects", p, "tasks", t)
    for entry in os.listdir(d):
        (d / entry).read_bytes()  # cached, each under a name made of ids
        with open(d / entry, "ab") as f:  # and spooled the same way
            f.write(b"!")
    made = {x.name for top in (m.state_dir, m.cache_dir) for x in top.rglob("*")}
    assert made and not any("escape" in x or "passwd" in x for x in made)
    assert not (m.state_dir.parent.parent / "escape.txt").exists()


def test_a_size_that_does_not_match_the_bytes_is_refused(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """Two same-name uploads in one second share storage (kanboard-api §7): the first row's size
    no longer matches its bytes. kbfs refuses to serve it (EIO) instead of serving other bytes."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.wait_until_second_boundary()
    first = kb.upload_task_file(p, t, "same.txt", b"first, longer content\n")
    kb.upload_task_file(p, t, "same.txt", b"second\n")
    m = mounter(kb)
    m.allow_errors = True
    d = m.p("projects", p, "tasks", t)
    names = sorted(os.listdir(d))
    assert names == [f"same (#{first + 1}).txt", "same.txt"]
    r = run("cat", d / "same.txt", check=False)  # the first row: 22 bytes announced, 7 stored
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    assert run("cat", d / names[0]).stdout == b"second\n"
    assert "server sent 7 bytes, its record says 22" in m.log_text()


def test_bytes_beyond_the_record_size_are_never_served(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """The other way round: the first row announces fewer bytes than its storage now holds.
    Serving its first ``size`` bytes would serve another file's content as this one: `cat`
    fails instead and prints nothing, and the download stops at the first byte too many."""
    p = kb.project("p")
    t = kb.task(p, "t")
    kb.wait_until_second_boundary()
    kb.upload_task_file(p, t, "same.txt", b"short\n")
    second = kb.upload_task_file(p, t, "same.txt", b"the second, longer content\n")
    m = mounter(kb)
    m.allow_errors = True
    d = m.p("projects", p, "tasks", t)
    assert sorted(os.listdir(d)) == [f"same (#{second}).txt", "same.txt"]
    r = run("cat", d / "same.txt", check=False)  # 6 bytes announced, 27 stored
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    assert r.stdout == b""
    assert "more than the record's 6 bytes" in m.log_text()
