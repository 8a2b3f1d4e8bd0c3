"""rm through Vfs directly (SEMANTICS.md "Other operations": unlink)."""

from __future__ import annotations

import errno

import trio
import trio.testing

from kbfs.client.errors import ServerError

try:
    from conftest import WRITE_NEW, Rig, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, raises_errno


async def test_unlink_removes_the_server_file(rig: Rig) -> None:
    keep = rig.kb.add_file(rig.tasks, "keep.txt", b"k")
    gone = rig.kb.add_file(rig.tasks, "gone.txt", b"g")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.unlink(dir_ino, "gone.txt")
    assert rig.kb.mutations() == [("remove", gone)]
    assert [r.id for r in rig.kb.records(rig.tasks)] == [keep]
    assert await rig.ls(rig.tasks) == ["keep.txt"]
    await raises_errno(errno.ENOENT, rig.vfs.lookup(dir_ino, "gone.txt"))


async def test_unlink_of_a_duplicate_removes_exactly_that_file(rig: Rig) -> None:
    first = rig.kb.add_file(rig.tasks, "dup.txt", b"one")
    rig.kb.dates.advance(1)  # in the same second the two would share storage (§7)
    second = rig.kb.add_file(rig.tasks, "dup.txt", b"two")
    await rig.vfs.unlink(await rig.dir(rig.tasks), f"dup (#{second}).txt")
    assert [r.id for r in rig.kb.records(rig.tasks)] == [first]
    assert rig.kb.content(rig.tasks, first) == b"one"


async def test_unlink_of_a_missing_name_is_enoent(rig: Rig) -> None:
    await raises_errno(errno.ENOENT, rig.vfs.unlink(await rig.dir(rig.tasks), "nope.txt"))
    assert rig.kb.count("remove_file") == 0


async def test_unlink_of_a_local_only_file_makes_no_call(rig: Rig) -> None:
    await rig.save(rig.tasks, "empty.txt", b"")
    calls = rig.kb.count()
    await rig.vfs.unlink(await rig.dir(rig.tasks), "empty.txt")
    assert rig.kb.count() == calls
    assert await rig.ls(rig.tasks) == []
    assert rig.pending_paths() == []


async def test_unlink_of_a_file_whose_upload_failed_drops_its_bytes(rig: Rig) -> None:
    rig.kb.fail("create_file", ServerError("HTTP 502", status_code=502))
    await raises_errno(errno.EIO, rig.save(rig.tasks, "new.txt", b"bytes"))
    await rig.vfs.unlink(await rig.dir(rig.tasks), "new.txt")
    assert rig.pending_paths() == []
    rig.clock.advance(60)
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 1  # never retried
    assert rig.kb.names(rig.tasks) == []


async def test_a_lost_remove_answer_counts_as_success_once_checked(rig: Rig) -> None:
    file_id = rig.kb.add_file(rig.tasks, "a.txt", b"a")
    rig.kb.lose_answer("remove_file")
    await rig.vfs.unlink(await rig.dir(rig.tasks), "a.txt")
    assert rig.kb.names(rig.tasks) == []
    assert rig.kb.count("get_file") == 1  # it looked: the file is gone
    assert rig.kb.mutations() == [("remove", file_id)]


async def test_a_refused_remove_of_a_file_still_there_is_enodata(rig: Rig) -> None:
    """remove*File answers false and get*File still shows the file: from 1.2.42 a row whose
    stored bytes are missing cannot be removed (kanboard-api §12 row 3), and rm says so."""
    file_id = rig.kb.add_file(rig.tasks, "stuck.txt", b"s")
    rig.kb.lose_storage(rig.tasks, file_id)
    await raises_errno(errno.ENODATA, rig.vfs.unlink(await rig.dir(rig.tasks), "stuck.txt"))
    assert rig.kb.names(rig.tasks) == ["stuck.txt"]
    assert await rig.ls(rig.tasks) == ["stuck.txt"]


async def test_unlink_waits_for_a_running_upload_and_removes_what_it_made(rig: Rig) -> None:
    dir_ino = await rig.dir(rig.tasks)
    handle = await rig.vfs.create(dir_ino, "doc.txt", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"content")
    gate = rig.kb.gate("create_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.flush, handle.fh)
        await gate.reached.wait()  # the upload is on the wire
        nursery.start_soon(rig.vfs.unlink, dir_ino, "doc.txt")
        await trio.testing.wait_all_tasks_blocked()
        assert rig.kb.count("remove_file") == 0  # rm waits for the upload...
        gate.release()
    rig.vfs.release(handle.fh)
    # ...and then removes the file it made: an rm that returned 0 leaves nothing behind.
    assert rig.kb.names(rig.tasks) == []
    assert [m[0] for m in rig.kb.mutations()] == ["create", "remove"]
    assert await rig.ls(rig.tasks) == []
