"""Write-back mode (-o writeback, kbfs.upload.writeback): close() returns once the bytes are
in the spool; the uploads run in the background, small files several per batch request."""

from __future__ import annotations

import errno
import os

import trio

from kbfs.client.errors import ServerError

try:
    from conftest import WRITE_NEW, Rig, RigFactory, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, RigFactory, raises_errno


async def writeback_rig(make_rig: RigFactory) -> Rig:
    return await make_rig(writeback=True)


async def test_close_returns_before_the_upload_and_batches_follow(make_rig: RigFactory) -> None:
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    gates = [rig.kb.gate("create_file"), rig.kb.gate("create_files")]  # hold the first ones
    for i in range(30):
        await rig.save(rig.tasks, f"f{i:02d}.txt", f"content {i}".encode())
    # Every close returned; nothing reached the server yet, all shown, all readable.
    assert rig.kb.contents(rig.tasks) == {}
    assert len(await rig.ls(rig.tasks)) == 30
    assert await rig.read(rig.tasks, "f07.txt") == b"content 7"
    assert len(rig.pending_paths()) == 30  # kbfs status: not uploaded yet
    for gate in gates:
        gate.release()
    assert await rig.vfs.sync_all(10) == []
    expected = {f"f{i:02d}.txt": f"content {i}".encode() for i in range(30)}
    assert rig.kb.contents(rig.tasks) == expected
    # Batches of up to 20 files: far fewer requests than files.
    assert rig.kb.count("create_file", "create_files") <= 5
    assert rig.kb.count("create_files") >= 2
    assert rig.pending_paths() == []


async def test_fsync_waits_for_the_upload(make_rig: RigFactory) -> None:
    rig = await writeback_rig(make_rig)
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "doc.txt", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"durable")
    await rig.vfs.fsync(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"durable"}
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    await rig.vfs.sync_all(10)
    assert rig.kb.count("create_file", "create_files") == 1  # not sent twice


async def test_fsync_fails_when_the_upload_fails(make_rig: RigFactory) -> None:
    rig = await writeback_rig(make_rig)
    rig.kb.fail("create_file", ServerError("HTTP 503", status_code=503), times=None)
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "doc.txt", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"durable")
    await raises_errno(errno.EIO, rig.vfs.fsync(handle.fh))
    await rig.vfs.flush(handle.fh)  # close() itself succeeds: the bytes are in the spool
    rig.vfs.release(handle.fh)
    assert rig.pending_paths() == [f"/{rig.path(rig.tasks)}/doc.txt"]


async def test_a_batch_whose_answer_is_lost_makes_no_duplicates(make_rig: RigFactory) -> None:
    """The batch reached the server, its answer did not (a dropped connection, PHP out of
    memory after the work was done): resolved like a lost create, one file per name."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    gates = [rig.kb.gate("create_file"), rig.kb.gate("create_files")]
    for i in range(5):
        await rig.save(rig.tasks, f"f{i}.txt", f"content {i}".encode())
    rig.kb.lose_answer("create_files")
    for gate in gates:
        gate.release()
    listings = rig.kb.count("list_files")
    left = await rig.vfs.sync_all(10)
    assert left == []
    assert rig.kb.contents(rig.tasks) == {f"f{i}.txt": f"content {i}".encode() for i in range(5)}
    assert sorted(await rig.ls(rig.tasks)) == [f"f{i}.txt" for i in range(5)]
    # One listing told which files of the batch exist (all of them): nothing sent again.
    assert rig.kb.count("list_files") == listings + 1
    assert rig.kb.count("create_file", "create_files") == 2  # the single first, the batch


async def test_a_batch_that_fails_whole_is_retried(make_rig: RigFactory) -> None:
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    gates = [rig.kb.gate("create_file"), rig.kb.gate("create_files")]
    for i in range(4):
        await rig.save(rig.tasks, f"f{i}.txt", f"content {i}".encode())
    rig.kb.fail("create_files", ServerError("HTTP 500", status_code=500))
    for gate in gates:
        gate.release()
    with trio.move_on_after(1):
        while not any(p for p in rig.pending_paths()):
            await trio.sleep(0.01)
    assert await rig.vfs.sync_all(10) == []
    assert rig.kb.contents(rig.tasks) == {f"f{i}.txt": f"content {i}".encode() for i in range(4)}


async def test_content_kanboard_cannot_hold_fails_at_close(make_rig: RigFactory) -> None:
    """Checked before close() returns, as without write-back: a file whose whole content is
    "0" (kanboard-api §5) is refused at once and never queued."""
    rig = await writeback_rig(make_rig)
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "zero.txt", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"0")
    await raises_errno(errno.EINVAL, rig.vfs.flush(handle.fh))
    rig.vfs.release(handle.fh)
    assert rig.kb.count("create_file", "create_files") == 0


async def test_sync_names_what_is_not_on_the_server(make_rig: RigFactory) -> None:
    rig = await writeback_rig(make_rig)
    rig.kb.fail("create_file", ServerError("HTTP 503", status_code=503), times=None)
    rig.kb.fail("create_files", ServerError("HTTP 503", status_code=503), times=None)
    await rig.save(rig.tasks, "a.txt", b"a")
    await rig.save(rig.tasks, "b.txt", b"b")
    left = dict(await rig.vfs.sync_all(10))
    assert sorted(left) == [f"/{rig.path(rig.tasks)}/a.txt", f"/{rig.path(rig.tasks)}/b.txt"]
    assert all("503" in why for why in left.values())
    assert os.path.exists(rig.root)  # the spool keeps them
