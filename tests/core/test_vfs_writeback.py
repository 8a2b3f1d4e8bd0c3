"""Write-back mode (-o writeback, kbfs.upload.writeback): close() returns once the bytes are
in the spool; the uploads run in the background, small files several per batch request."""

from __future__ import annotations

import errno
import os

import trio

from kbfs.client.errors import ServerError

try:
    from conftest import WRITE_NEW, Rig, RigFactory, raises_errno
    from fakekb import Gate
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, RigFactory, raises_errno
    from tests.core.fakekb import Gate


async def writeback_rig(make_rig: RigFactory) -> Rig:
    return await make_rig(writeback=True)


async def queued_behind_a_held_upload(rig: Rig, name: str, data: bytes) -> Gate:
    """Save ``name`` while the write-back queue is busy with a large file whose upload is
    held (released by the gate returned): its close() returned, its upload has not begun."""
    await rig.ls(rig.tasks)
    busy = rig.kb.gate("create_file")
    await rig.save(rig.tasks, "big.bin", b"x" * (2 << 20))  # a single upload, held
    await busy.reached.wait()
    await rig.save(rig.tasks, name, data)
    return busy


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
    assert rig.kb.count("create_file", "create_files") <= 2  # nothing sent twice


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


async def test_a_move_over_a_file_being_uploaded_waits_for_that_upload(
    make_rig: RigFactory,
) -> None:
    """``mv c.txt b.txt`` while b.txt's background upload is under way: replaced at once,
    that upload would still end as a file b.txt on the server, beside the moved one."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    await rig.save(rig.tasks, "c.txt", b"moved content")
    assert await rig.vfs.sync_all(10) == []
    gate = rig.kb.gate("create_file")
    await rig.save(rig.tasks, "b.txt", b"replaced content")
    await gate.reached.wait()  # b.txt's upload is on the wire
    d = await rig.dir(rig.tasks)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, d, "c.txt", d, "b.txt", 0)
        await trio.sleep(0.05)
        gate.release()
    assert await rig.vfs.sync_all(10) == []
    assert rig.kb.contents(rig.tasks) == {"b.txt": b"moved content"}
    assert await rig.ls(rig.tasks) == ["b.txt"]


async def test_opening_with_o_trunc_while_the_upload_settles_the_file(make_rig: RigFactory) -> None:
    """An open(O_TRUNC) waits for the file's background upload, which ends by handing the
    bytes to the cache (nobody had it open): the open must then start from the new server
    version, not fail on content that is gone."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    gate = rig.kb.gate("create_file")
    await rig.save(rig.tasks, "a.txt", b"first")
    await gate.reached.wait()
    d = await rig.dir(rig.tasks)
    node = await rig.vfs.lookup(d, "a.txt")
    opened: list[int] = []

    async def reopen() -> None:
        handle = await rig.vfs.open(node.ino, WRITE_NEW)
        opened.append(handle.fh)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reopen)
        await trio.sleep(0.05)
        gate.release()
    await rig.vfs.write(opened[0], 0, b"second")
    await rig.vfs.flush(opened[0])
    rig.vfs.release(opened[0])
    assert await rig.vfs.sync_all(10) == []
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"second"}


async def test_moving_a_closed_file_still_counted_open_while_its_upload_runs(
    make_rig: RigFactory,
) -> None:
    """``cp d.bin`` returned (handed over; the kernel's release not in yet, so a writer is
    still counted) and its background upload is on the wire when ``mv d.bin a.txt`` comes:
    the move must not take the open-file shortcut under that upload, which would end as a
    file d.bin on the server and remove a.txt, and the moved file would vanish."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    await rig.save(rig.tasks, "a.txt", b"old a")
    assert await rig.vfs.sync_all(10) == []
    d = await rig.dir(rig.tasks)
    gate = rig.kb.gate("create_file")
    handle = await rig.vfs.create(d, "d.bin", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"new content")
    await rig.vfs.flush(handle.fh)  # close() returned; no release yet
    await gate.reached.wait()  # d.bin's upload is on the wire
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, d, "d.bin", d, "a.txt", 0)
        await trio.sleep(0.05)
        gate.release()
    rig.vfs.release(handle.fh)
    assert await rig.vfs.sync_all(10) == []
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"new content"}
    assert await rig.ls(rig.tasks) == ["a.txt"]
    assert await rig.read(rig.tasks, "a.txt") == b"new content"


async def test_rewriting_a_file_before_its_upload_ran_uploads_it_first(
    make_rig: RigFactory,
) -> None:
    """``cp`` twice to one name, the first copy still queued (the queue busy elsewhere) when
    the second open(O_TRUNC) comes: the first close() was acknowledged, so its bytes reach
    the server before the second writer may destroy them (a crash, or a failed second save,
    would otherwise leave nothing: found by the write-back stress run with a kill -9)."""
    rig = await writeback_rig(make_rig)
    busy = await queued_behind_a_held_upload(rig, "a.txt", b"first")
    assert "a.txt" not in rig.kb.contents(rig.tasks)
    await rig.vfs.open(await rig.ino(f"{rig.path(rig.tasks)}/a.txt"), WRITE_NEW)
    assert rig.kb.contents(rig.tasks)["a.txt"] == b"first"
    rig.crash()  # the second writer never finishes
    again = await rig.remount(writeback=True)
    busy.release()
    assert await again.vfs.sync_all(10) == []
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"first", "big.bin": b"x" * (2 << 20)}


async def test_a_slow_upload_holds_up_only_its_own_name(make_rig: RigFactory) -> None:
    """A large file on the wire (or a name waiting for the server's next second) must not
    keep the files closed after it from their uploads: requests start as soon as a slot and
    the file's name are free."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    slow = rig.kb.gate("create_file")
    await rig.save(rig.tasks, "big.bin", b"x" * (2 << 20))
    await slow.reached.wait()
    for i in range(3):
        await rig.save(rig.tasks, f"small{i}.txt", f"small {i}".encode())
    with trio.move_on_after(5):
        while len(rig.kb.contents(rig.tasks)) < 3:
            await trio.sleep(0.01)
    assert rig.kb.contents(rig.tasks) == {f"small{i}.txt": f"small {i}".encode() for i in range(3)}
    slow.release()
    assert await rig.vfs.sync_all(10) == []
    assert sorted(rig.kb.contents(rig.tasks)) == [
        "big.bin",
        "small0.txt",
        "small1.txt",
        "small2.txt",
    ]


async def test_a_file_renamed_while_its_upload_ends_leaves_both_names_free(
    make_rig: RigFactory,
) -> None:
    """a.txt's upload is ending (removing the version it replaced) when the file, written
    again and still open, is renamed to b.txt and queued under that name: when the first
    upload ends, both names must be free for later uploads (found by the write-back stress
    run: a name stayed taken, and every later save of it waited forever)."""
    rig = await writeback_rig(make_rig)
    await rig.save(rig.tasks, "a.txt", b"v0")
    assert await rig.vfs.sync_all(10) == []
    rig.kb.dates.advance(2)  # v0's second is past: the next save asks nothing before it
    d = await rig.dir(rig.tasks)
    looked = rig.kb.gate("get_file")  # the first upload, ending: looking at what it replaces
    await rig.save(rig.tasks, "a.txt", b"v1")
    await looked.reached.wait()
    handle = await rig.vfs.open(await rig.ino(f"{rig.path(rig.tasks)}/a.txt"), WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"v2")
    await rig.vfs.flush(handle.fh)  # queued again; still open
    await rig.vfs.rename(d, "a.txt", d, "b.txt", 0)
    await trio.sleep(0.5)  # b.txt's upload goes meanwhile
    looked.release()
    rig.vfs.release(handle.fh)
    await rig.save(rig.tasks, "a.txt", b"v3")
    assert await rig.vfs.writeback.settled(5), "a name stayed taken"
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"v3", "b.txt": b"v2"}


async def test_content_a_crashed_mount_acknowledged_is_uploaded_before_a_rewrite(
    make_rig: RigFactory,
) -> None:
    """The spool entry says its content was acknowledged by a write-back close(): after a
    crash, the next mount (write-back or not) uploads it before anyone may change it."""
    rig = await writeback_rig(make_rig)
    busy = await queued_behind_a_held_upload(rig, "a.txt", b"first")
    rig.crash()
    busy.release()
    again = await rig.remount(writeback=False)
    await again.vfs.open(await again.ino(f"{again.path(again.tasks)}/a.txt"), WRITE_NEW)
    assert rig.kb.contents(rig.tasks)["a.txt"] == b"first"


async def test_a_file_of_a_batch_whose_name_is_busy_goes_once_it_is_free(
    make_rig: RigFactory,
) -> None:
    """A batch meets a name whose lock is held (a move, an fsync of it): the other files go
    in the batch, that one on its own once the lock is free."""
    rig = await writeback_rig(make_rig)
    await rig.ls(rig.tasks)
    lock = rig.vfs.uploader.name_lock(rig.tasks, "b.txt")
    await lock.acquire()
    for name in ("a.txt", "b.txt", "c.txt"):
        await rig.save(rig.tasks, name, name.encode())
    with trio.move_on_after(5):
        while len(rig.kb.contents(rig.tasks)) < 2:
            await trio.sleep(0.01)
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"a.txt", "c.txt": b"c.txt"}
    lock.release()
    assert await rig.vfs.writeback.settled(5)
    assert rig.kb.contents(rig.tasks) == {n: n.encode() for n in ("a.txt", "b.txt", "c.txt")}
