"""Listings, lookups, attributes and the structural directories, driven on Vfs directly
(SEMANTICS.md "Other operations": readdir, lookup/stat, mkdir & co, chmod/utimens, statfs;
"Attributes"; "Consistency")."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from kbfs.client.errors import PermissionDenied, TransportError
from kbfs.client.models import Container

try:
    from conftest import WRITE_NEW, Rig, RigFactory, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, RigFactory, raises_errno


async def test_readdir_is_one_listing_call_cached_for_the_ttl(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "a.txt", b"aaa")
    rig.kb.add_file(rig.tasks, "b.txt", b"bb")
    dir_ino = await rig.dir(rig.tasks)
    before = rig.kb.count("list_files")
    names = sorted(name for name, _ in await rig.vfs.list_dir(dir_ino))
    assert names == ["a.txt", "b.txt"]
    assert rig.kb.count("list_files") == before + 1
    # ls -l: stat of every entry needs no call, and a second readdir within the TTL neither.
    calls = rig.kb.count()
    sizes = {name: rig.vfs.getattr(node.ino).size for name, node in await rig.vfs.list_dir(dir_ino)}
    assert sizes == {"a.txt": 3, "b.txt": 2}
    fh = await rig.vfs.opendir(dir_ino)
    assert sorted(n for n, _, _ in rig.vfs.dir_entries(fh)) == ["a.txt", "b.txt"]
    rig.vfs.releasedir(fh)
    assert rig.kb.count() == calls
    # Past the TTL the listing is fetched again and shows changes made elsewhere.
    rig.kb.add_file(rig.tasks, "c.txt", b"c")
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["a.txt", "b.txt", "c.txt"]
    assert rig.kb.count("list_files") == before + 2


async def test_refresh_fetches_at_once(rig: Rig) -> None:
    dir_ino = await rig.dir(rig.files)
    assert await rig.ls(rig.files) == []
    rig.kb.add_file(rig.files, "new.txt", b"x")
    assert await rig.ls(rig.files) == []  # still within the TTL
    await rig.vfs.refresh(dir_ino)
    assert await rig.ls(rig.files) == ["new.txt"]


async def test_tasks_dir_lists_open_and_closed_tasks_in_one_call_and_prefetches(
    rig: Rig,
) -> None:
    closed = rig.kb.add_task(rig.project, "Done already", active=False)
    rig.kb.add_file(Container(rig.project, closed), "old.txt", b"old")
    rig.kb.add_file(rig.tasks, "new.txt", b"new")
    tasks_ino = await rig.ino(f"projects/{rig.project}/tasks")
    calls = rig.kb.count()
    names = sorted(name for name, _ in await rig.vfs.list_dir(tasks_ino))
    assert names == sorted([str(rig.task), str(closed)])
    assert rig.kb.count("get_all_tasks_any_status") == 1
    # The file listings of all tasks came in one batch: walking into them costs nothing more.
    assert rig.kb.count("list_files_many") == 1
    assert await rig.ls(Container(rig.project, closed)) == ["old.txt"]
    assert await rig.ls(rig.tasks) == ["new.txt"]
    assert rig.kb.count() == calls + 2
    assert rig.kb.count("list_files") == 0


async def test_tasks_by_title_and_by_name_are_links(rig: Rig) -> None:
    titles = await rig.ino(f"projects/{rig.project}/tasks-by-title")
    [(name, link)] = await rig.vfs.list_dir(titles)
    assert name == "First task"
    assert rig.vfs.readlink(link.ino) == f"../tasks/{rig.task}"
    by_name = await rig.ino("by-name")
    [(pname, plink)] = await rig.vfs.list_dir(by_name)
    assert (pname, rig.vfs.readlink(plink.ino)) == ("Alpha", f"../projects/{rig.project}")


async def test_duplicate_names_get_the_id_suffix(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "dup.txt", b"one")
    rig.kb.dates.advance(1)  # in the same second the two would share storage (§7)
    second = rig.kb.add_file(rig.tasks, "dup.txt", b"two")
    rig.kb.add_file(rig.tasks, "a/b", b"slash")
    assert await rig.ls(rig.tasks) == sorted(["dup.txt", f"dup (#{second}).txt", "a∕b"])
    assert await rig.read(rig.tasks, f"dup (#{second}).txt") == b"two"


async def test_lookup_of_a_missing_name_is_enoent_without_a_call(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "here.txt", b"x")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.list_dir(dir_ino)
    calls = rig.kb.count()
    await raises_errno(errno.ENOENT, rig.vfs.lookup(dir_ino, "missing.txt"))
    assert (await rig.vfs.lookup(dir_ino, "here.txt")).ino > 0
    assert rig.kb.count() == calls  # answered from the cached listing (negative cache)
    projects = await rig.ino("projects")
    await raises_errno(errno.ENOENT, rig.vfs.lookup(projects, "999"))
    await raises_errno(errno.ENOENT, rig.vfs.lookup(projects, "01"))


async def test_a_failing_listing_serves_the_cached_one(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "kept.txt", b"kept")
    assert await rig.ls(rig.tasks) == ["kept.txt"]
    assert await rig.read(rig.tasks, "kept.txt") == b"kept"
    rig.kb.fail("list_files", TransportError("connection refused"), times=None)
    rig.expire_listings()
    before = rig.kb.count("list_files")
    assert await rig.ls(rig.tasks) == ["kept.txt"]
    assert rig.kb.count("list_files") == before + 1  # it did ask
    dir_ino = await rig.dir(rig.tasks)
    # A name missing from a listing that could not be refreshed: nobody knows (EIO).
    await raises_errno(errno.EIO, rig.vfs.lookup(dir_ino, "other.txt"))
    assert await rig.read(rig.tasks, "kept.txt") == b"kept"  # cached content stays readable


async def test_a_listing_that_never_worked_fails_with_eio(rig: Rig) -> None:
    rig.kb.fail("list_files", TransportError("connection refused"), times=None)
    dir_ino = await rig.dir(rig.tasks)
    await raises_errno(errno.EIO, rig.vfs.list_dir(dir_ino))


async def test_a_forbidden_listing_is_eacces(rig: Rig) -> None:
    rig.kb.fail("list_files", PermissionDenied("Forbidden"))
    dir_ino = await rig.dir(rig.tasks)
    await raises_errno(errno.EACCES, rig.vfs.list_dir(dir_ino))
    assert rig.kb.count("list_files") == 1


async def test_structural_directories_refuse_changes(rig: Rig) -> None:
    """What the FUSE layer's mkdir/rmdir/symlink/link/mknod refuse outright, the Vfs refuses
    for files: nothing can be created, removed or renamed outside file directories."""
    projects = await rig.ino("projects")
    project = await rig.ino(f"projects/{rig.project}")
    tasks = await rig.ino(f"projects/{rig.project}/tasks")
    rig.kb.add_file(rig.tasks, "f.txt", b"f")
    await raises_errno(errno.EPERM, rig.vfs.create(projects, "new.txt", WRITE_NEW))
    await raises_errno(errno.EPERM, rig.vfs.create(tasks, "new.txt", WRITE_NEW))
    await raises_errno(errno.EPERM, rig.vfs.unlink(project, "files"))
    await raises_errno(errno.EPERM, rig.vfs.unlink(tasks, str(rig.task)))
    await raises_errno(errno.EPERM, rig.vfs.rename(tasks, str(rig.task), tasks, "77", 0))
    task_dir = await rig.dir(rig.tasks)
    await raises_errno(errno.EPERM, rig.vfs.rename(task_dir, "f.txt", tasks, "f.txt", 0))
    assert rig.kb.count("create_file", "remove_file") == 0
    assert rig.kb.names(rig.tasks) == ["f.txt"]
    mode = rig.vfs.getattr(tasks).mode
    assert stat.S_ISDIR(mode) and mode & 0o777 == 0o555
    assert rig.vfs.getattr(task_dir).mode & 0o777 == 0o755  # 0777 & ~umask 022


async def test_read_only_mount_refuses_writes_with_eacces(make_rig: RigFactory) -> None:
    rig = await make_rig(read_only=True)
    rig.kb.add_file(rig.tasks, "doc.txt", b"doc")
    dir_ino = await rig.dir(rig.tasks)
    node = await rig.vfs.lookup(dir_ino, "doc.txt")
    assert rig.vfs.getattr(node.ino).mode & 0o222 == 0
    await raises_errno(errno.EACCES, rig.vfs.open(node.ino, os.O_WRONLY))
    await raises_errno(errno.EACCES, rig.vfs.create(dir_ino, "new.txt", WRITE_NEW))
    await raises_errno(errno.EACCES, rig.vfs.unlink(dir_ino, "doc.txt"))
    await raises_errno(errno.EACCES, rig.vfs.rename(dir_ino, "doc.txt", dir_ino, "x.txt", 0))
    assert rig.kb.count("create_file", "remove_file") == 0
    assert await rig.read(rig.tasks, "doc.txt") == b"doc"


async def test_attributes_come_from_the_record(rig: Rig) -> None:
    rig.kb.dates.freeze(1_795_373_822.0)
    rig.kb.add_file(rig.tasks, "a.txt", b"hello")
    attr = await rig.stat(rig.tasks, "a.txt")
    assert attr.size == 5
    assert attr.mtime_ns == attr.ctime_ns == 1_795_373_822 * 1_000_000_000
    assert stat.S_ISREG(attr.mode) and attr.mode & 0o777 == 0o644
    assert (attr.uid, attr.gid) == (os.getuid(), os.getgid())


async def test_chmod_and_utimens_stay_in_memory(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "a.txt", b"hello")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "a.txt")
    calls = rig.kb.count()
    attr = await rig.vfs.setattr(node.ino, None, mode=0o600, mtime_ns=123_000_000_000)
    assert attr.mode & 0o7777 == 0o600
    assert rig.vfs.getattr(node.ino).mtime_ns == 123_000_000_000
    assert rig.kb.count() == calls  # never sent to Kanboard
    assert rig.kb.content(rig.tasks, rig.kb.records(rig.tasks)[0].id) == b"hello"


async def test_statfs_is_synthetic(rig: Rig) -> None:
    calls = rig.kb.count()
    stats = rig.vfs.statfs()
    assert stats["f_bsize"] == 4096
    assert stats["f_bavail"] * stats["f_bsize"] == 1 << 40
    assert stats["f_files"] == stats["f_ffree"] == stats["f_favail"] >= 10**9  # df -i: 0 %
    assert rig.kb.count() == calls


@pytest.mark.parametrize("where", ["files", "tasks"])
async def test_xattrs_show_the_file_id(rig: Rig, where: str) -> None:
    container = rig.files if where == "files" else rig.tasks
    rig.kb.add_user(5, "alice")
    file_id = rig.kb.add_file(container, "pic.txt", b"abc", user_id=5)
    rig.kb.add_file(container, "by-api.txt", b"abc", user_id=0)  # the application API token
    attrs = await rig.xattrs(container, "pic.txt")
    assert attrs["user.kanboard.id"] == str(file_id).encode()
    assert attrs["user.kanboard.uploader"] == b"alice"
    assert attrs["user.kanboard.is_image"] == b"0"
    assert "user.kanboard.uploader" not in await rig.xattrs(container, "by-api.txt")
    assert b"http://kanboard.fake/" in attrs["user.kanboard.url"]
    task_attrs = rig.vfs.xattrs(await rig.dir(rig.tasks))
    assert task_attrs["user.kanboard.title"] == b"First task"
    assert task_attrs["user.kanboard.status"] == b"open"
