"""Everyday programs on the mount: editors, save patterns, cp/rsync/tar, GIO, xattrs, statfs.

Each test runs the real program as a subprocess and checks the server's state afterwards
through the server's API.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import KANBOARD_VERSIONS, Mounted, run


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"test tools missing (scripts/bootstrap --test installs them): {missing}")


@pytest.fixture
def task(kb):  # type: ignore[no-untyped-def]
    p = kb.project("tools")
    t = kb.task(p, "a task")
    f = kb.upload_task_file(p, t, "doc.txt", b"line one\nline two\n")
    return {"p": p, "t": t, "f": f}


def server_files(kb, t: int) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {f["name"]: kb.download_task_file(f["id"]) for f in kb.task_files(t)}


def tdir(mnt: Mounted, task) -> Path:  # type: ignore[no-untyped-def]
    return mnt.p("projects", task["p"], "tasks", task["t"])


@KANBOARD_VERSIONS
def test_vim_default_settings(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    need("vim")
    d = tdir(mnt, task)
    os.listdir(d)
    kb.reset_stats()
    subprocess.run(
        ["vim", "--clean", "-c", "%s/one/ONE/", "-c", "wq", str(d / "doc.txt")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )
    assert server_files(kb, task["t"]) == {"doc.txt": b"line ONE\nline two\n"}
    calls = kb.stats()["calls"]
    # swap file, 4913 and the backup never reach the server: one save = one overwrite
    assert calls.get("createTaskFile") == 1 and calls.get("removeTaskFile") == 1
    assert sorted(os.listdir(d)) == ["doc.txt"]
    assert (d / "doc.txt").read_bytes() == b"line ONE\nline two\n"


def test_vim_new_file(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    need("vim")
    d = tdir(mnt, task)
    subprocess.run(
        ["vim", "--clean", "-c", "normal ihello from vim", "-c", "wq", str(d / "new.txt")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )
    assert server_files(kb, task["t"])["new.txt"] == b"hello from vim\n"
    assert sorted(server_files(kb, task["t"])) == ["doc.txt", "new.txt"]


def test_sed_in_place(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    run("sed", "-i", "s/two/TWO/", d / "doc.txt")
    assert server_files(kb, task["t"]) == {"doc.txt": b"line one\nline TWO\n"}
    assert os.listdir(d) == ["doc.txt"]


@KANBOARD_VERSIONS
def test_python_atomic_save(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    script = (
        "import os, sys, tempfile\n"
        "d = sys.argv[1]\n"
        "fd, tmp = tempfile.mkstemp(dir=d)\n"
        "os.write(fd, b'saved atomically\\n')\n"
        "os.fsync(fd)\n"
        "os.close(fd)\n"
        "os.replace(tmp, os.path.join(d, 'doc.txt'))\n"
    )
    subprocess.run(["python3", "-c", script, str(d)], check=True, timeout=30)
    assert server_files(kb, task["t"]) == {"doc.txt": b"saved atomically\n"}
    assert os.listdir(d) == ["doc.txt"]


def test_libreoffice_lock_and_scratch_files_stay_local(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    os.listdir(d)
    kb.reset_stats()
    scratch = [
        ".~lock.doc.txt#",
        ".doc.txt.swp",
        "4913",
        "doc.txt~",
        ".#doc.txt",
        "lu319145k1q8.tmp",  # LibreOffice writes its save here, then renames it over the file
        ".goutputstream-XYZ123",
    ]
    for name in scratch:
        (d / name).write_bytes(b"scratch data " + name.encode())
    assert set(scratch) <= set(os.listdir(d))
    assert (d / ".~lock.doc.txt#").read_bytes() == b"scratch data .~lock.doc.txt#"
    assert kb.stats()["calls"].get("createTaskFile", 0) == 0
    assert sorted(server_files(kb, task["t"])) == ["doc.txt"]
    # renaming a scratch file to a real name uploads it
    os.rename(d / ".goutputstream-XYZ123", d / "kept.txt")
    assert server_files(kb, task["t"])["kept.txt"] == b"scratch data .goutputstream-XYZ123"
    for name in scratch[:-1]:
        (d / name).unlink()
    assert sorted(os.listdir(d)) == ["doc.txt", "kept.txt"]


@KANBOARD_VERSIONS
def test_rapid_saves_end_with_one_file_holding_the_last_content(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    for attempt in range(2):
        # Saves within one server second would share one storage path, and on 1.2.27 and
        # older removing the superseded rows would delete the last content (kanboard-api §12 row 1):
        # kbfs waits for the server's next second between them.
        kb.wait_until_second_boundary()
        for i in range(3):
            run("dd", f"of={d / 'doc.txt'}", "status=none", input=f"save {attempt}.{i}\n".encode())
        files = kb.task_files(task["t"])
        assert [f["name"] for f in files] == ["doc.txt"]
        assert kb.download_task_file(files[0]["id"]) == f"save {attempt}.2\n".encode()
        assert (d / "doc.txt").read_bytes() == f"save {attempt}.2\n".encode()


def test_cp_p_cp_a_touch_d(kb, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = tdir(mnt, task)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "b.bin").write_bytes(os.urandom(5000))
    os.utime(src / "a.txt", (1_600_000_000, 1_600_000_000))
    run("cp", "-p", src / "a.txt", d / "a.txt")
    run("cp", "-a", src / "b.bin", d / "b.bin")
    run("touch", "-d", "2020-01-02 03:04:05 UTC", d / "doc.txt")
    files = server_files(kb, task["t"])
    assert files["a.txt"] == b"alpha\n" and files["b.bin"] == (src / "b.bin").read_bytes()
    assert files["doc.txt"] == b"line one\nline two\n"
    # times set through the mount are shown (kept in memory; Kanboard cannot store them)
    assert int((d / "a.txt").stat().st_mtime) == 1_600_000_000
    assert int((d / "doc.txt").stat().st_mtime) == 1577934245
    run("chmod", "600", d / "a.txt")
    assert (d / "a.txt").stat().st_mode & 0o777 == 0o600


def test_rsync_archive_into_a_task(kb, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    need("rsync")
    src = tmp_path / "src"
    src.mkdir()
    payload = {f"r{i}.txt": f"rsync file {i}\n".encode() for i in range(5)}
    for name, data in payload.items():
        (src / name).write_bytes(data)
    d = tdir(mnt, task)
    run("rsync", "-a", f"{src}/", f"{d}/")
    files = server_files(kb, task["t"])
    assert {k: v for k, v in files.items() if k != "doc.txt"} == payload
    # a second run finds nothing to do and changes nothing on the server
    kb.reset_stats()
    run("rsync", "-a", f"{src}/", f"{d}/")
    assert kb.stats()["calls"].get("createTaskFile", 0) == 0


def test_tar_extract_into_a_task(kb, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "files.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(4):
            f = tmp_path / f"t{i}.txt"
            f.write_bytes(f"tar member {i}\n".encode())
            tar.add(f, arcname=f.name)
    run("tar", "-xf", archive, "-C", tdir(mnt, task))
    files = server_files(kb, task["t"])
    assert all(files[f"t{i}.txt"] == f"tar member {i}\n".encode() for i in range(4))


def test_gio_list_copy_move_remove_and_trash(kb, mnt: Mounted, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    need("gio")
    d = tdir(mnt, task)
    out = run("gio", "list", d).stdout.decode().split()
    assert out == ["doc.txt"]
    src = tmp_path / "g.txt"
    src.write_bytes(b"via gio\n")
    run("gio", "copy", src, d / "g.txt")
    assert server_files(kb, task["t"])["g.txt"] == b"via gio\n"
    run("gio", "move", d / "g.txt", d / "h.txt")
    assert sorted(server_files(kb, task["t"])) == ["doc.txt", "h.txt"]
    run("gio", "remove", d / "h.txt")
    assert sorted(server_files(kb, task["t"])) == ["doc.txt"]
    r = run("gio", "trash", d / "doc.txt", check=False)
    assert r.returncode != 0  # no trash on Kanboard: fails cleanly ...
    assert server_files(kb, task["t"]) == {"doc.txt": b"line one\nline two\n"}  # ... file kept
    assert (d / "doc.txt").read_bytes() == b"line one\nline two\n"


def test_file_manager_probes_cost_no_call_after_the_first(kb, mounter, task) -> None:  # type: ignore[no-untyped-def]
    m = mounter(kb, ttl=0.2)
    d = tdir(m, task)
    probes = [
        ".hidden",
        ".directory",
        ".Trash",
        f".Trash-{os.getuid()}",
        "autorun.inf",
        "desktop.ini",
        ".DS_Store",
        ".thumbnails",
    ]
    os.listdir(d)
    for _ in range(3):
        time.sleep(0.4)  # the listing is stale now; probes still need no call
        os.stat(d)  # the path itself (structural lookups may refresh: that is not a probe)
        kb.reset_stats()
        for name in probes:
            assert not (d / name).exists()
            assert not m.p(name).exists()
            assert not m.p("projects", name).exists()
            assert not m.p("projects", task["p"], "tasks", name).exists()
        assert sum(kb.stats()["calls"].values()) == 0


def test_statfs_lets_file_managers_copy(mnt: Mounted) -> None:
    out = run("stat", "-f", "-c", "%s %S %a %l", mnt.path).stdout.decode().split()
    bsize, frsize, avail, namemax = map(int, out)
    assert bsize == frsize and avail * frsize >= 1 << 40 and namemax == 255
    assert run("df", mnt.path).returncode == 0
    # df -i: no inodes used of plenty (Kanboard has no such limit), not half of them
    out = run("df", "-i", mnt.path).stdout.decode()
    _fs, total, used, free, percent = out.splitlines()[1].split()[:5]
    assert int(total) == int(free) >= 10**9 and int(used) == 0 and percent in ("0%", "-"), out


def test_ls_la_shows_dot_and_dotdot(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    """``.`` and ``..`` head every listing, with the inodes stat gives them; a directory
    large enough for several readdir calls still lists every name exactly once."""
    d = tdir(mnt, task)
    kb.seed_task_files(task["t"], 1500, prefix="a-rather-long-file-name-so-readdir-needs-calls-")
    for path in (mnt.path, mnt.p("projects"), d):
        names = run("ls", "-a", "-1", "-f", path).stdout.decode().splitlines()
        assert names[:2] == [".", ".."], names[:5]
        assert len(names) == len(set(names)), "a name listed twice"
    lines = run("ls", "-lai", d).stdout.decode().splitlines()
    by_name = {line.split()[-1]: int(line.split()[0]) for line in lines[1:]}
    assert by_name["."] == os.stat(d).st_ino
    assert by_name[".."] == os.stat(d.parent).st_ino
    names = os.listdir(d)  # Python leaves out . and ..: the files are all there
    assert len(names) == 1501 and "doc.txt" in names
    # The entries still work as directories after the listing (no lookup count went wrong).
    assert os.path.isdir(d / ".") and os.path.isdir(d / ".." / str(task["t"]))


def test_xattrs(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    need("getfattr", "setfattr")
    f = tdir(mnt, task) / "doc.txt"
    out = run("getfattr", "-d", "-m", "user.kanboard", f).stdout.decode()
    assert f'user.kanboard.id="{task["f"]}"' in out
    assert 'user.kanboard.is_image="0"' in out
    # sent with the application API token: Kanboard records no user, so no uploader
    assert "user.kanboard.date=" in out and "user.kanboard.uploader" not in out
    assert f"task_id={task['t']}" in out  # user.kanboard.url links to the task page
    out = run("getfattr", "-n", "user.kanboard.title", tdir(mnt, task)).stdout.decode()
    assert 'user.kanboard.title="a task"' in out
    out = run("getfattr", "-n", "user.kanboard.name", mnt.p("projects", task["p"])).stdout
    assert b'user.kanboard.name="tools"' in out
    r = run("setfattr", "-n", "user.x", "-v", "1", f, check=False)
    assert r.returncode != 0 and b"not supported" in r.stderr
    # Other user.* names simply do not exist; other namespaces are not supported at all, which
    # is what lets ls -l stop asking every file for its SELinux label and ACL.
    r = run("getfattr", "-n", "user.other", f, check=False)
    assert r.returncode != 0 and b"No such attribute" in r.stderr
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as info:
            os.getxattr(f, name)
        assert info.value.errno == errno.EOPNOTSUPP, name


def test_find_tasks_and_projects_by_name(kb, mnt: Mounted, task) -> None:  # type: ignore[no-untyped-def]
    """by-name/ and tasks-by-title/ hold links into the id tree, named by name and title."""
    other = kb.project("tools")  # a duplicate project name gets its id as a suffix
    t2 = kb.task(task["p"], "fix/the bug")
    links = sorted(os.listdir(mnt.p("by-name")))
    assert links == ["tools", f"tools (#{other})"]
    assert os.readlink(mnt.p("by-name", "tools")) == f"../projects/{task['p']}"
    assert sorted(os.listdir(mnt.p("by-name", "tools", "tasks-by-title"))) == [
        "a task",
        "fix∕the bug",
    ]
    via_title = mnt.p("by-name", "tools", "tasks-by-title", "a task", "doc.txt")
    assert via_title.read_bytes() == b"line one\nline two\n"
    assert os.readlink(mnt.p("projects", task["p"], "tasks-by-title", "fix∕the bug")) == (
        f"../tasks/{t2}"
    )
    # find walks the id tree once: it does not follow the links
    found = run("find", mnt.path, "-name", "doc.txt").stdout.decode().split()
    assert found == [str(mnt.p("projects", task["p"], "tasks", task["t"], "doc.txt"))]


def test_sample_data_names_each_uploader(kb_sample, mounter) -> None:  # type: ignore[no-untyped-def]
    """The demo's files carry the user who uploaded them, never an empty uploader."""
    need("getfattr")
    m = mounter(kb_sample)
    files = run("find", m.p("projects"), "-type", "f").stdout.decode().splitlines()
    assert len(files) >= 10
    for f in files:
        out = run("getfattr", "--only-values", "-n", "user.kanboard.uploader", f).stdout
        assert out in (b"alice", b"admin"), (f, out)
