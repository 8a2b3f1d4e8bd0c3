"""mv through Vfs directly (SEMANTICS.md "Rename", "Scratch files stay local"): upload at the
target, confirmed, then remove the source; a failure changes nothing."""

from __future__ import annotations

import errno
import os

import trio

from kbfs.client.errors import ServerError, TransportError
from kbfs.client.models import Container

try:
    from conftest import RENAME_EXCHANGE, RENAME_NOREPLACE, WRITE_NEW, Rig, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import (
        RENAME_EXCHANGE,
        RENAME_NOREPLACE,
        WRITE_NEW,
        Rig,
        raises_errno,
    )


async def test_rename_within_a_directory(rig: Rig) -> None:
    source = rig.kb.add_file(rig.tasks, "old.txt", b"content")
    dir_ino = await rig.dir(rig.tasks)
    node = await rig.vfs.lookup(dir_ino, "old.txt")
    await rig.vfs.rename(dir_ino, "old.txt", dir_ino, "new.txt", 0)
    assert rig.kb.mutations() == [("create", "new.txt"), ("remove", source)]
    assert rig.kb.contents(rig.tasks) == {"new.txt": b"content"}
    assert await rig.ls(rig.tasks) == ["new.txt"]
    # The inode the kernel moved is the file at its new name.
    assert (await rig.vfs.lookup(dir_ino, "new.txt")).ino == node.ino
    assert await rig.read(rig.tasks, "new.txt") == b"content"


async def test_rename_across_directories_and_projects(rig: Rig) -> None:
    source = rig.kb.add_file(rig.tasks, "doc.txt", b"moving")
    other = Container(rig.kb.add_project("Beta"))
    rig.expire_listings()
    await rig.vfs.rename(await rig.dir(rig.tasks), "doc.txt", await rig.dir(rig.files), "d.txt", 0)
    assert rig.kb.mutations() == [("create", "d.txt"), ("remove", source)]
    assert rig.kb.contents(rig.tasks) == {}
    assert rig.kb.contents(rig.files) == {"d.txt": b"moving"}
    await rig.vfs.rename(await rig.dir(rig.files), "d.txt", await rig.dir(other), "d.txt", 0)
    assert rig.kb.contents(rig.files) == {}
    assert rig.kb.contents(other) == {"d.txt": b"moving"}
    assert await rig.ls(other) == ["d.txt"] and await rig.ls(rig.files) == []


async def test_rename_over_an_existing_file_replaces_it_after_the_upload(rig: Rig) -> None:
    source = rig.kb.add_file(rig.tasks, "src.txt", b"new content")
    target = rig.kb.add_file(rig.tasks, "dst.txt", b"old content")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.rename(dir_ino, "src.txt", dir_ino, "dst.txt", 0)
    mutations = rig.kb.mutations()
    assert mutations[0] == ("create", "dst.txt")
    assert sorted(mutations[1:]) == sorted([("remove", source), ("remove", target)])
    assert rig.kb.contents(rig.tasks) == {"dst.txt": b"new content"}
    assert await rig.ls(rig.tasks) == ["dst.txt"]


async def test_a_failed_upload_leaves_both_names_as_they_were(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "src.txt", b"source")
    rig.kb.add_file(rig.tasks, "dst.txt", b"target")
    dir_ino = await rig.dir(rig.tasks)
    rig.kb.fail("create_file", TransportError("connection refused"))
    await raises_errno(errno.EIO, rig.vfs.rename(dir_ino, "src.txt", dir_ino, "dst.txt", 0))
    assert rig.kb.count("remove_file") == 0
    assert rig.kb.contents(rig.tasks) == {"src.txt": b"source", "dst.txt": b"target"}
    assert await rig.ls(rig.tasks) == ["dst.txt", "src.txt"]
    assert await rig.read(rig.tasks, "src.txt") == b"source"
    assert await rig.read(rig.tasks, "dst.txt") == b"target"
    assert rig.pending_paths() == []  # nothing left to retry: the source still has the bytes
    rig.clock.advance(60)
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 1


async def test_a_failed_move_to_another_directory_changes_nothing(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"stay")
    rig.kb.fail("create_file", ServerError("HTTP 500", status_code=500))
    src, dst = await rig.dir(rig.tasks), await rig.dir(rig.files)
    await raises_errno(errno.EIO, rig.vfs.rename(src, "doc.txt", dst, "doc.txt", 0))
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"stay"}
    assert rig.kb.contents(rig.files) == {}
    assert await rig.ls(rig.files) == []
    assert await rig.ls(rig.tasks) == ["doc.txt"]


async def test_noreplace_exchange_and_directories_are_refused(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "a.txt", b"a")
    rig.kb.add_file(rig.tasks, "b.txt", b"b")
    dir_ino = await rig.dir(rig.tasks)
    await raises_errno(
        errno.EEXIST, rig.vfs.rename(dir_ino, "a.txt", dir_ino, "b.txt", RENAME_NOREPLACE)
    )
    await raises_errno(
        errno.EINVAL, rig.vfs.rename(dir_ino, "a.txt", dir_ino, "b.txt", RENAME_EXCHANGE)
    )
    projects = await rig.ino("projects")
    await raises_errno(errno.EPERM, rig.vfs.rename(projects, str(rig.project), projects, "9", 0))
    assert rig.kb.count("create_file", "remove_file") == 0
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"a", "b.txt": b"b"}


async def test_rename_to_the_same_name_does_nothing(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "a.txt", b"a")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.rename(dir_ino, "a.txt", dir_ino, "a.txt", 0)
    assert rig.kb.count("create_file", "remove_file") == 0


async def test_a_local_only_file_just_moves(rig: Rig) -> None:
    await rig.save(rig.tasks, "empty.txt", b"")
    assert await rig.ls(rig.files) == []  # the target's listing is fetched before counting
    calls = rig.kb.count()
    await rig.vfs.rename(
        await rig.dir(rig.tasks), "empty.txt", await rig.dir(rig.files), "moved.txt", 0
    )
    assert rig.kb.count() == calls
    assert await rig.ls(rig.files) == ["moved.txt"]
    assert await rig.ls(rig.tasks) == []


async def test_a_file_open_for_writing_uploads_under_its_new_name_at_close(rig: Rig) -> None:
    """gedit's pattern: write a temporary, rename it over the file, then close."""
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    dir_ino = await rig.dir(rig.tasks)
    handle = await rig.vfs.create(dir_ino, ".goutputstream-ABC123", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"version 2")
    await rig.vfs.rename(dir_ino, ".goutputstream-ABC123", dir_ino, "doc.txt", 0)
    assert rig.kb.count("create_file", "remove_file") == 0  # moved in the mount only
    assert await rig.ls(rig.tasks) == ["doc.txt"]
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.mutations() == [("create", "doc.txt"), ("remove", old)]
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}


async def test_a_server_file_renamed_while_open_removes_its_source_after_upload(
    rig: Rig,
) -> None:
    source = rig.kb.add_file(rig.tasks, "draft.txt", b"draft")
    dir_ino = await rig.dir(rig.tasks)
    node = await rig.vfs.lookup(dir_ino, "draft.txt")
    handle = await rig.vfs.open(node.ino, os.O_RDWR)
    await rig.vfs.write(handle.fh, 5, b" and more")
    await rig.vfs.rename(dir_ino, "draft.txt", dir_ino, "final.txt", 0)
    assert rig.kb.names(rig.tasks) == ["draft.txt"]
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.mutations() == [("create", "final.txt"), ("remove", source)]
    assert rig.kb.contents(rig.tasks) == {"final.txt": b"draft and more"}


async def test_a_scratch_backup_rename_costs_one_create_and_one_remove(rig: Rig) -> None:
    """vim: doc.txt -> doc.txt~ (kept on the server, hidden), write a new doc.txt, rm doc.txt~."""
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.rename(dir_ino, "doc.txt", dir_ino, "doc.txt~", 0)
    assert rig.kb.count("create_file", "remove_file") == 0
    assert await rig.ls(rig.tasks) == ["doc.txt~"]
    assert await rig.read(rig.tasks, "doc.txt~") == b"version 1"
    await rig.save(rig.tasks, "doc.txt", b"version 2")
    await rig.vfs.unlink(dir_ino, "doc.txt~")
    assert rig.kb.mutations() == [("create", "doc.txt"), ("remove", old)]
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}
    assert await rig.ls(rig.tasks) == ["doc.txt"]


async def test_renaming_a_scratch_file_to_a_real_name_uploads_it(rig: Rig) -> None:
    await rig.save(rig.tasks, ".doc.txt.swp", b"swap content")
    assert rig.kb.count("create_file") == 0  # scratch names never reach Kanboard
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.rename(dir_ino, ".doc.txt.swp", dir_ino, "rescued.txt", 0)
    assert rig.kb.contents(rig.tasks) == {"rescued.txt": b"swap content"}


async def test_a_listing_answered_during_the_move_never_shows_the_source_again(
    rig: Rig,
) -> None:
    """After ``mv a b`` the source never comes back, even when a listing is answered between
    the upload at ``b`` and the removal of ``a`` (it lists both)."""
    rig.kb.add_file(rig.tasks, "a.txt", b"moving")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.lookup(dir_ino, "a.txt")
    gate = rig.kb.gate("remove_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, dir_ino, "a.txt", dir_ino, "b.txt", 0)
        await gate.reached.wait()  # b.txt is confirmed, a.txt still on the server
        await rig.vfs.refresh(dir_ino)
        assert sorted(rig.kb.names(rig.tasks)) == ["a.txt", "b.txt"]
        assert "a.txt" not in await rig.ls(rig.tasks)
        gate.release()
    assert await rig.ls(rig.tasks) == ["b.txt"]
    assert await rig.read(rig.tasks, "b.txt") == b"moving"


async def test_the_retry_pass_leaves_a_move_in_progress_alone(rig: Rig) -> None:
    """The background pass runs while a move's upload waits (for the server's next second,
    for a name lock, for its answer): the move's staging node, in no view, must not be
    "shown again" under the target's name, stealing it from the file there, nor uploaded
    a second time (found by the write-back stress run: the file that lost its name was
    uploaded later all the same, beside the moved one)."""
    await rig.save(rig.tasks, "a.txt", b"target")
    await rig.save(rig.tasks, "c.txt", b"source")
    d = await rig.dir(rig.tasks)
    target = await rig.vfs.lookup(d, "a.txt")
    gate = rig.kb.gate("create_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, d, "c.txt", d, "a.txt", 0)
        await gate.reached.wait()
        nursery.start_soon(rig.vfs.retry_once)
        await trio.sleep(0.05)
        assert rig.vfs.ns.view(rig.tasks).get("a.txt") == target.ino
        gate.release()
    assert await rig.ls(rig.tasks) == ["a.txt"]
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"source"}
    assert rig.kb.count("create_file") == 3


async def test_an_upload_of_the_target_ending_during_the_move_is_superseded_too(
    rig: Rig,
) -> None:
    """``mv c.txt d.bin`` while d.bin holds unsaved content whose upload (the retry pass, a
    write-back batch) starts once the move's own create let go of the name: that upload
    made a version of d.bin too, which the move replaces: it must go as well (found by the
    write-back stress run: two d.bin on the server)."""
    await rig.save(rig.tasks, "d.bin", b"old target")
    await rig.save(rig.tasks, "c.txt", b"source")
    rig.kb.fail("create_file", TransportError("connection refused"))
    await raises_errno(errno.EIO, rig.save(rig.tasks, "d.bin", b"unsaved target"))
    d = await rig.dir(rig.tasks)
    gate = rig.kb.gate("create_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, d, "c.txt", d, "d.bin", 0)
        await gate.reached.wait()  # the move's create, under the name's lock
        nursery.start_soon(rig.vfs.sync_all, 10)  # uploads d.bin once the lock is free
        await trio.sleep(0.05)
        looked = rig.kb.gate("get_file")  # the move then looks at what it supersedes
        gate.release()
        await looked.reached.wait()
        with trio.move_on_after(5):
            while rig.kb.count("create_file") < 5:  # d.bin's own upload went through
                await trio.sleep(0.01)
        looked.release()
    assert rig.kb.count("create_file") == 5, "the target's upload did not run"
    assert rig.kb.contents(rig.tasks) == {"d.bin": b"source"}
    assert await rig.ls(rig.tasks) == ["d.bin"]
    assert await rig.read(rig.tasks, "d.bin") == b"source"
