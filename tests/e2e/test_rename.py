"""mv on the mount: Kanboard has no rename, so a move is upload-at-target then remove-source."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess

import pytest

from tests.e2e.helpers import KANBOARD_VERSIONS, Mounted, run

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: os.PathLike[str], new: os.PathLike[str], flags: int) -> None:
    AT_FDCWD = -100
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def tree(kb):  # type: ignore[no-untyped-def]
    p1, p2 = kb.project("one"), kb.project("two")
    t1, t2, t3 = kb.task(p1, "a"), kb.task(p1, "b"), kb.task(p2, "c")
    f = kb.upload_task_file(p1, t1, "doc.txt", b"the document\n")
    return {"p1": p1, "p2": p2, "t1": t1, "t2": t2, "t3": t3, "f": f}


def names(files: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return sorted(x["name"] for x in files)


@KANBOARD_VERSIONS
def test_mv_within_a_directory(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    d = mnt.p("projects", tree["p1"], "tasks", tree["t1"])
    run("mv", d / "doc.txt", d / "renamed.txt")
    files = kb.task_files(tree["t1"])
    assert names(files) == ["renamed.txt"]
    assert kb.download_task_file(files[0]["id"]) == b"the document\n"
    assert os.listdir(d) == ["renamed.txt"]
    assert (d / "renamed.txt").read_bytes() == b"the document\n"


def test_mv_between_tasks_projects_and_files_dirs(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, p2, t1, t2, t3 = (tree[k] for k in ("p1", "p2", "t1", "t2", "t3"))
    run("mv", mnt.p("projects", p1, "tasks", t1, "doc.txt"), mnt.p("projects", p1, "tasks", t2))
    assert kb.task_files(t1) == [] and names(kb.task_files(t2)) == ["doc.txt"]
    run("mv", mnt.p("projects", p1, "tasks", t2, "doc.txt"), mnt.p("projects", p1, "files"))
    assert kb.task_files(t2) == [] and names(kb.project_files(p1)) == ["doc.txt"]
    run("mv", mnt.p("projects", p1, "files", "doc.txt"), mnt.p("projects", p2, "files", "x.txt"))
    assert kb.project_files(p1) == [] and names(kb.project_files(p2)) == ["x.txt"]
    run("mv", mnt.p("projects", p2, "files", "x.txt"), mnt.p("projects", p2, "tasks", t3))
    files = kb.task_files(t3)
    assert names(files) == ["x.txt"] and kb.download_task_file(files[0]["id"]) == b"the document\n"
    assert kb.project_files(p2) == []
    assert mnt.p("projects", p2, "tasks", t3, "x.txt").read_bytes() == b"the document\n"


@KANBOARD_VERSIONS
def test_mv_over_an_existing_file_replaces_it(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t1 = tree["p1"], tree["t1"]
    kb.upload_task_file(p1, t1, "target.txt", b"old target\n")
    d = mnt.p("projects", p1, "tasks", t1)
    run("mv", d / "doc.txt", d / "target.txt")
    files = kb.task_files(t1)
    assert names(files) == ["target.txt"]
    assert kb.download_task_file(files[0]["id"]) == b"the document\n"
    assert (d / "target.txt").read_bytes() == b"the document\n"


def test_rename_noreplace_and_exchange(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1, t1 = tree["p1"], tree["t1"]
    kb.upload_task_file(p1, t1, "other.txt", b"other\n")
    d = mnt.p("projects", p1, "tasks", t1)
    with pytest.raises(OSError) as err:
        renameat2(d / "doc.txt", d / "other.txt", RENAME_NOREPLACE)
    assert err.value.errno == errno.EEXIST
    with pytest.raises(OSError) as err:
        renameat2(d / "doc.txt", d / "other.txt", RENAME_EXCHANGE)
    assert err.value.errno == errno.EINVAL
    assert names(kb.task_files(t1)) == ["doc.txt", "other.txt"]
    renameat2(d / "doc.txt", d / "new.txt", RENAME_NOREPLACE)
    assert names(kb.task_files(t1)) == ["new.txt", "other.txt"]


def test_structural_directories_cannot_be_renamed(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    p1 = tree["p1"]
    for src, dst in [
        (mnt.p("projects", p1, "tasks", tree["t1"]), mnt.p("projects", p1, "tasks", "99")),
        (mnt.p("projects", p1), mnt.p("projects", "99")),
        (mnt.p("projects", p1, "files"), mnt.p("projects", p1, "files2")),
    ]:
        r = run("mv", "-T", src, dst, check=False)
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr, src


def test_rename_of_a_file_still_open_for_writing(kb, mnt: Mounted, tree) -> None:  # type: ignore[no-untyped-def]
    """gedit's pattern: write .goutputstream-XXXXXX, rename it over the real name, close."""
    p1, t1 = tree["p1"], tree["t1"]
    d = mnt.p("projects", p1, "tasks", t1)
    script = (
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "f = open(os.path.join(d, '.goutputstream-ABC123'), 'wb')\n"
        "f.write(b'first half, ')\n"
        "f.flush()\n"
        "os.rename(os.path.join(d, '.goutputstream-ABC123'), os.path.join(d, 'doc.txt'))\n"
        "f.write(b'second half\\n')\n"
        "f.close()\n"
    )
    subprocess.run(["python3", "-c", script, str(d)], check=True, timeout=30)
    files = kb.task_files(t1)
    assert names(files) == ["doc.txt"]
    assert kb.download_task_file(files[0]["id"]) == b"first half, second half\n"
    assert (d / "doc.txt").read_bytes() == b"first half, second half\n"
