"""The filesystem issue end to end: layout, listing, reading, writing on close, unlink.

Each test mounts the built-in server for real, drives the mount with real tools as
subprocesses, and checks the server's state through the server's own API (never through kbfs).
RPC counts come from the server's call counter: they are deterministic.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import KANBOARD_VERSIONS, Mounted, Mounter, run, sh


def calls(kb, *, drop_zero: bool = True) -> dict[str, int]:  # type: ignore[no-untyped-def]
    got = dict(kb.stats()["calls"])
    return {k: v for k, v in got.items() if v or not drop_zero}


def task_check(kb) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The getTask kbfs sends before an upload to a task on Kanboard older than 1.2.47."""
    return {"getTask": 1} if kb.before("1.2.47") else {}


def read_back(kb) -> int:  # type: ignore[no-untyped-def]
    """The getTaskFile after a create, on Kanboard older than 1.2.28: there removing the old
    version deletes bytes the new one shares, so the new record's path is needed first. From
    1.2.28 a save is the create alone (kbfs.namespace.provisional)."""
    return 1 if kb.before("1.2.28") else 0


@pytest.fixture
def tree(kb):  # type: ignore[no-untyped-def]
    """Two projects; project 1 has an open and a closed task with files, and project files."""
    p1 = kb.project("alpha")
    p2 = kb.project("beta")
    t_open = kb.task(p1, "open task")
    t_closed = kb.task(p1, "closed task")
    kb.rpc("closeTask", {"task_id": t_closed})
    t_other = kb.task(p2, "beta task")
    f_hello = kb.upload_task_file(p1, t_open, "hello.txt", b"Hello, world!\n")
    kb.upload_task_file(p1, t_closed, "old.txt", b"closed but here\n")
    kb.upload_project_file(p1, "spec.txt", b"project spec\n")
    return {
        "p1": p1,
        "p2": p2,
        "t_open": t_open,
        "t_closed": t_closed,
        "t_other": t_other,
        "f_hello": f_hello,
    }


@KANBOARD_VERSIONS
def test_layout(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    assert sorted(os.listdir(mnt.path)) == ["by-name", "projects"]
    assert sorted(os.listdir(mnt.p("projects"))) == sorted([str(tree["p1"]), str(tree["p2"])])
    assert sorted(os.listdir(mnt.p("projects", tree["p1"]))) == ["files", "tasks", "tasks-by-title"]
    tasks = sorted(os.listdir(mnt.p("projects", tree["p1"], "tasks")))
    assert tasks == sorted([str(tree["t_open"]), str(tree["t_closed"])])  # open AND closed
    assert os.listdir(mnt.p("projects", tree["p1"], "tasks", tree["t_closed"])) == ["old.txt"]
    assert os.listdir(mnt.p("projects", tree["p1"], "files")) == ["spec.txt"]
    out = run("find", mnt.path).stdout.decode().splitlines()
    assert str(mnt.p("projects", tree["p1"], "tasks", tree["t_open"], "hello.txt")) in out
    assert not mnt.p("projects", "999").exists()
    assert not mnt.p("projects", tree["p1"], "tasks", tree["t_other"]).exists()


def test_attributes(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    f = mnt.p("projects", tree["p1"], "tasks", tree["t_open"], "hello.txt")
    st = f.stat()
    record = kb.rpc("getTaskFile", {"file_id": tree["f_hello"]})
    assert st.st_size == 14
    assert int(st.st_mtime) == record["date"] and int(st.st_ctime) == record["date"]
    assert stat.S_IMODE(st.st_mode) == 0o644 and stat.S_ISREG(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    d = mnt.p("projects", tree["p1"], "tasks", tree["t_open"]).stat()
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o755
    # inode numbers are stable for the life of the mount
    assert f.stat().st_ino == st.st_ino
    out = run("stat", "-c", "%s %a %U", f).stdout.decode().split()
    assert out[:2] == ["14", "644"]


def test_uid_gid_umask_options(kb, mounter: Mounter, tree) -> None:  # type: ignore[no-untyped-def]
    m = mounter(kb, "uid=1234,gid=4321,umask=027")
    st = m.p("projects", tree["p1"], "files", "spec.txt").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
    assert stat.S_IMODE(m.p("projects", tree["p1"], "files").stat().st_mode) == 0o750


def test_ls_l_of_100_files_is_one_call_and_stat_after_is_free(kb, mnt: Mounted, tree):  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    for i in range(99):
        kb.upload_task_file(p1, t, f"file{i:03}.txt", f"content {i}\n".encode())
    d = mnt.p("projects", p1, "tasks", t)
    os.stat(d)  # warm the structural levels (a lookup: no listing of tasks/)
    kb.reset_stats()
    out = run("ls", "-l", d).stdout.decode()
    assert out.count("\n") == 101  # "total" + 100 files
    assert calls(kb) == {"getAllTaskFiles": 1}
    kb.reset_stats()
    run("stat", d / "file042.txt")
    run("ls", "-l", d)
    assert calls(kb) == {}


@KANBOARD_VERSIONS
def test_cold_cat_downloads_once_then_serves_from_cache(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    f = mnt.p("projects", tree["p1"], "tasks", tree["t_open"], "hello.txt")
    run("ls", "-l", f.parent)
    kb.reset_stats()
    assert run("cat", f).stdout == b"Hello, world!\n"
    assert calls(kb) == {"downloadTaskFile": 1}
    kb.reset_stats()
    assert run("cat", f).stdout == b"Hello, world!\n"
    assert calls(kb) == {}
    # project files too
    pf = mnt.p("projects", tree["p1"], "files", "spec.txt")
    assert run("cat", pf).stdout == b"project spec\n"


def test_concurrent_readers_share_one_download(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    data = os.urandom(3 * 1024 * 1024)
    kb.upload_task_file(p1, t, "big.bin", data)
    f = mnt.p("projects", p1, "tasks", t, "big.bin")
    f.stat()
    kb.config(latency=0.3)
    kb.reset_stats()
    procs = [subprocess.Popen(["cat", str(f)], stdout=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=30)[0] for p in procs]
    kb.config(latency=0)
    assert all(o == data for o in outs)
    assert calls(kb) == {"downloadTaskFile": 1}


@KANBOARD_VERSIONS
def test_cp_new_file_is_one_create(kb, mnt: Mounted, tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    src = tmp_path / "report.pdf"
    src.write_bytes(os.urandom(200_000))
    d = mnt.p("projects", p1, "tasks", t)
    run("ls", d)
    kb.reset_stats()
    run("cp", src, d / "report.pdf")
    # One round trip from 1.2.28: the create answers with the id, and close() returns. Before
    # 1.2.47 createTaskFile takes a task of any project: kbfs looks at it first.
    expected = {"createTaskFile": 1, "getTaskFile": read_back(kb)} | task_check(kb)
    assert calls(kb) == {k: n for k, n in expected.items() if n}
    files = {f["name"]: f for f in kb.task_files(t)}
    assert kb.download_task_file(files["report.pdf"]["id"]) == src.read_bytes()
    # visible at once, same content, no further calls (content kept from the upload)
    kb.reset_stats()
    assert (d / "report.pdf").read_bytes() == src.read_bytes()
    assert "report.pdf" in os.listdir(d)
    assert calls(kb) == {}


def test_cp_into_project_files(kb, mnt: Mounted, tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "plan.md"
    src.write_text("# plan\n")
    run("cp", src, mnt.p("projects", tree["p2"], "files"))
    names = {f["name"]: f for f in kb.project_files(tree["p2"])}
    assert kb.download_project_file(tree["p2"], names["plan.md"]["id"]) == b"# plan\n"


@KANBOARD_VERSIONS
def test_overwrite_is_create_then_remove(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "hello.txt")
    run("cat", f)
    kb.reset_stats()
    sh(f"printf 'new content\\n' > '{f}'")
    # getTaskFile: the old version looked at before its removal (another client may have
    # removed it and its id gone to a new file: ids are reused), and on old releases the new
    # file read back first. Before 1.2.47 createTaskFile takes a task of any project: kbfs
    # looks at it first.
    get = 1 + read_back(kb)
    expected = {"createTaskFile": 1, "getTaskFile": get, "removeTaskFile": 1} | task_check(kb)
    assert calls(kb) == expected
    files = kb.task_files(t)
    assert [x["name"] for x in files] == ["hello.txt"]
    assert files[0]["id"] != tree["f_hello"]
    assert kb.download_task_file(files[0]["id"]) == b"new content\n"
    assert f.read_bytes() == b"new content\n"


def test_append_fetches_old_content_first(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "hello.txt")
    sh(f"echo 'second line' >> '{f}'")
    files = kb.task_files(t)
    assert len(files) == 1
    assert kb.download_task_file(files[0]["id"]) == b"Hello, world!\nsecond line\n"
    assert run("cat", f).stdout == b"Hello, world!\nsecond line\n"


def test_writes_at_any_offset_with_dd(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "blocks.bin")
    run("dd", "if=/dev/zero", f"of={f}", "bs=1k", "count=8", "status=none")
    sh(f"printf 'XY' | dd of='{f}' bs=1 seek=4096 conv=notrunc status=none")
    expected = bytearray(8192)
    expected[4096:4098] = b"XY"
    files = kb.task_files(t)
    blocks = [x for x in files if x["name"] == "blocks.bin"]
    assert len(blocks) == 1
    assert kb.download_task_file(blocks[0]["id"]) == bytes(expected)


@KANBOARD_VERSIONS
def test_rm_is_one_remove(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "hello.txt")
    run("ls", f.parent)
    kb.reset_stats()
    run("rm", f)
    assert calls(kb) == {"removeTaskFile": 1}
    assert kb.task_files(t) == []
    assert not f.exists()
    r = run("rm", f, check=False)
    assert r.returncode != 0 and b"No such file" in r.stderr


@KANBOARD_VERSIONS
def test_rm_project_file(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    run("rm", mnt.p("projects", tree["p1"], "files", "spec.txt"))
    assert kb.project_files(tree["p1"]) == []


def test_upload_failure_fails_close_and_keeps_bytes(kb, mnt: Mounted, tree, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    src = tmp_path / "precious.txt"
    src.write_bytes(b"do not lose me\n")
    d = mnt.p("projects", p1, "tasks", t)
    kb.fault("createTaskFile", "http500", count=1)
    r = run("cp", src, d / "precious.txt", check=False)
    assert r.returncode != 0
    assert b"Input/output error" in r.stderr
    assert "precious.txt" not in [f["name"] for f in kb.task_files(t)]
    # the bytes survive: in the spool on disk, and visible in the mount
    assert any(p.read_bytes() == b"do not lose me\n" for p in mnt.spool_files())
    assert (d / "precious.txt").read_bytes() == b"do not lose me\n"
    assert "precious.txt" in mnt.log_text() and "kept in" in mnt.log_text()
    # a later close retries the upload
    run("touch", d / "precious.txt")
    files = [f for f in kb.task_files(t) if f["name"] == "precious.txt"]
    assert len(files) == 1 and kb.download_task_file(files[0]["id"]) == b"do not lose me\n"


def test_failed_overwrite_keeps_the_old_version_on_the_server(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "hello.txt")
    kb.fault("createTaskFile", "drop", count=1)
    # dd, unlike a shell redirection, reports a failing close()
    r = run("dd", f"of={f}", "status=none", input=b"replacement", check=False)
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    files = kb.task_files(t)
    assert [x["id"] for x in files] == [tree["f_hello"]]
    assert kb.download_task_file(tree["f_hello"]) == b"Hello, world!\n"


def test_empty_file_stays_local_until_it_has_content(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    f = mnt.p("projects", p1, "tasks", t, "later.txt")
    kb.reset_stats()
    run("touch", f)
    assert f.exists() and f.stat().st_size == 0
    assert "createTaskFile" not in calls(kb)
    assert "later.txt" not in [x["name"] for x in kb.task_files(t)]
    sh(f"echo filled >> '{f}'")
    files = [x for x in kb.task_files(t) if x["name"] == "later.txt"]
    assert len(files) == 1 and kb.download_task_file(files[0]["id"]) == b"filled\n"


def test_content_zero_is_refused_clearly(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    f = mnt.p("projects", tree["p1"], "tasks", tree["t_open"], "zero.txt")
    kb.reset_stats()
    r = run("dd", f"of={f}", "status=none", input=b"0", check=False)
    assert r.returncode != 0 and b"Invalid argument" in r.stderr
    assert "createTaskFile" not in calls(kb)
    assert f.read_bytes() == b"0"  # kept locally


def test_structural_directories_cannot_change(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1 = tree["p1"]
    for path in [
        mnt.p("projects", "77"),
        mnt.p("projects", p1, "tasks", "77"),
        mnt.p("projects", p1, "files", "sub"),
    ]:
        r = run("mkdir", path, check=False)
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr, path
    r = run("rmdir", mnt.p("projects", p1, "tasks", tree["t_open"]), check=False)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = run("touch", mnt.p("projects", p1, "notes.txt"), check=False)
    assert r.returncode != 0
    r = run("touch", mnt.p("projects", "x.txt"), check=False)
    assert r.returncode != 0
    assert kb.task_files(tree["t_open"])[0]["name"] == "hello.txt"


def test_names_kanboard_cannot_hold_are_refused(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    d = mnt.p("projects", tree["p1"], "tasks", tree["t_open"])
    kb.reset_stats()
    with pytest.raises(OSError) as err:
        (d / ("x" * 256)).write_bytes(b"data")
    assert err.value.errno == errno.ENAMETOOLONG
    ok = "é" * 127  # 254 bytes: fits
    (d / ok).write_bytes(b"data")
    assert ok in [f["name"] for f in kb.task_files(tree["t_open"])]


def test_hostile_server_names_each_get_one_usable_entry(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t = tree["p1"], tree["t_open"]
    weird = {
        "dir/sub/file.txt": b"slash",
        ".": b"dot",
        "..": b"dotdot",
        "": b"empty",
        "nul\0byte.txt": b"nul",
        "../../etc/passwd": b"traversal",
    }
    ids = {name: kb.upload_task_file(p1, t, name, data) for name, data in weird.items()}
    dup1 = kb.upload_task_file(p1, t, "dup.txt", b"first")
    time.sleep(1.05)  # a later second: its own storage path (kanboard-api §7)
    dup2 = kb.upload_task_file(p1, t, "dup.txt", b"second")
    d = mnt.p("projects", p1, "tasks", t)
    entries = sorted(os.listdir(d))
    expected = {
        "dir∕sub∕file.txt": b"slash",
        "_.": b"dot",
        "_..": b"dotdot",
        "_": b"empty",
        "nul␀byte.txt": b"nul",
        "..∕..∕etc∕passwd": b"traversal",
        "dup.txt": b"first",
        f"dup (#{dup2}).txt": b"second",
        "hello.txt": b"Hello, world!\n",
    }
    assert entries == sorted(expected)
    for name, data in expected.items():
        assert (d / name).read_bytes() == data, name
    # each is removable, and removes exactly its own server file
    run("rm", d / "dir∕sub∕file.txt", d / "_..", d / f"dup (#{dup2}).txt")
    left = {f["id"] for f in kb.task_files(t)}
    assert ids["dir/sub/file.txt"] not in left and ids[".."] not in left and dup2 not in left
    assert dup1 in left and ids["."] in left


def test_remote_changes_appear_after_the_cache_time(kb, mounter: Mounter, tree) -> None:  # type: ignore[no-untyped-def]
    m = mounter(kb, ttl=0.5)
    p1, t = tree["p1"], tree["t_open"]
    d = m.p("projects", p1, "tasks", t)
    assert os.listdir(d) == ["hello.txt"]
    kb.upload_task_file(p1, t, "from-web.txt", b"web")
    new_task = kb.task(p1, "new task")
    time.sleep(1.6)
    assert sorted(os.listdir(d)) == ["from-web.txt", "hello.txt"]
    assert str(new_task) in os.listdir(m.p("projects", p1, "tasks"))
    kb.rpc("removeTaskFile", {"file_id": tree["f_hello"]})
    time.sleep(1.6)
    assert os.listdir(d) == ["from-web.txt"]
