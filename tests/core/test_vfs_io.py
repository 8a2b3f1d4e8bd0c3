"""Reading and writing through Vfs directly (SEMANTICS.md "Reading", "Writing",
"Durability"; the open/write/truncate/close rows of "Other operations")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import trio
import trio.testing

from kbfs.client.errors import PermissionDenied, ServerError, TransportError
from kbfs.client.models import Container

try:
    from conftest import WRITE_NEW, Rig, RigFactory, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, RigFactory, raises_errno

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16


def down() -> TransportError:
    return TransportError("connection refused", request_sent=False)


# ---------------------------------------------------------------- reading


async def test_read_downloads_once_and_a_second_read_makes_no_call(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"the content")
    assert await rig.read(rig.tasks, "doc.txt") == b"the content"
    assert rig.kb.count("download_file") == 1
    calls = rig.kb.count()
    assert await rig.read(rig.tasks, "doc.txt") == b"the content"
    assert rig.kb.count() == calls


async def test_concurrent_readers_share_one_download(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "big.bin", os.urandom(100_000))
    gate = rig.kb.gate("download_file")
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await rig.read(rig.tasks, "big.bin"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(reader)
        await gate.reached.wait()
        gate.release()
    assert len(results) == 2 and results[0] == results[1]
    assert rig.kb.count("download_file") == 1


async def _open_and_leave(rig: Rig, name: str, *, others: int = 0) -> list[int]:
    """Open ``name`` (its download held in flight by a gate), then close the handle without
    reading, as a file manager sniffing a content type does once it has its first bytes.
    ``others`` more handles stay open; their fhs are returned."""
    gate = rig.kb.gate("download_file")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), name)
    handles = [await rig.vfs.open(node.ino, os.O_RDONLY) for _ in range(1 + others)]
    await gate.reached.wait()
    rig.vfs.release(handles[0].fh)
    await trio.testing.wait_all_tasks_blocked()
    gate.release()
    await trio.testing.wait_all_tasks_blocked()
    return [h.fh for h in handles[1:]]


async def test_a_download_nobody_reads_any_more_is_dropped(rig: Rig) -> None:
    """Nothing downloaded for nobody: the last reader left before the download got far, so it
    ends, its partial bytes go, and the next open starts again (and gets the whole file)."""
    data = os.urandom(1 << 20)
    rig.kb.add_file(rig.tasks, "big.bin", data)
    await _open_and_leave(rig, "big.bin")
    assert [c.outcome for c in rig.kb.log if c.method == "download_file"] == ["pending"]
    assert not list((rig.root / "cache").iterdir())  # no part file, nothing cached
    assert await rig.read(rig.tasks, "big.bin") == data
    assert rig.kb.count("download_file") == 2


async def test_a_download_another_handle_waits_for_goes_on(rig: Rig) -> None:
    data = os.urandom(1 << 20)
    rig.kb.add_file(rig.tasks, "big.bin", data)
    (still,) = await _open_and_leave(rig, "big.bin", others=1)
    assert bytes(await rig.vfs.read(still, 0, len(data))) == data
    rig.vfs.release(still)
    assert await rig.read(rig.tasks, "big.bin") == data
    assert rig.kb.count("download_file") == 1


async def test_a_stalled_download_nobody_waits_for_is_dropped_even_small(rig: Rig) -> None:
    """A small download is finished for nobody only while bytes arrive; one that brought
    nothing yet (a stalled server) is dropped, so the next open asks afresh instead of
    joining a request its last reader gave up on."""
    data = os.urandom(100_000)
    rig.kb.add_file(rig.tasks, "small.bin", data)
    await _open_and_leave(rig, "small.bin")
    assert await rig.read(rig.tasks, "small.bin") == data
    assert rig.kb.count("download_file") == 2


async def test_a_download_answering_empty_is_eio(rig: Rig) -> None:
    file_id = rig.kb.add_file(rig.tasks, "gone.txt", b"content")
    rig.kb.lose_storage(rig.tasks, file_id)
    await raises_errno(errno.EIO, rig.read(rig.tasks, "gone.txt"))


async def test_a_collision_with_shorter_bytes_is_never_served(rig: Rig) -> None:
    """Two uploads of one name in one second share storage (§7): the first row's size no
    longer matches its bytes, and the core refuses them rather than serve another file."""
    rig.kb.dates.freeze()
    first = rig.kb.add_file(rig.tasks, "dup.txt", b"the first, longer content")
    rig.kb.add_file(rig.tasks, "dup.txt", b"short")
    await raises_errno(errno.EIO, rig.read(rig.tasks, "dup.txt"))
    assert rig.kb.records(rig.tasks)[0].id == first
    assert await rig.read(rig.tasks, f"dup (#{first + 1}).txt") == b"short"


async def test_a_collision_with_longer_bytes_is_never_served(rig: Rig) -> None:
    rig.kb.dates.freeze()
    rig.kb.add_file(rig.tasks, "dup.txt", b"short")
    rig.kb.add_file(rig.tasks, "dup.txt", b"the second, longer content")
    await raises_errno(errno.EIO, rig.read(rig.tasks, "dup.txt"))


async def test_open_of_a_removed_node_is_enoent(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"x")
    dir_ino = await rig.dir(rig.tasks)
    node = await rig.vfs.lookup(dir_ino, "doc.txt")
    await rig.vfs.unlink(dir_ino, "doc.txt")
    await raises_errno(errno.ENOENT, rig.vfs.open(node.ino, os.O_RDONLY))


# ---------------------------------------------------------------- writing


async def test_create_write_close_uploads_once(rig: Rig) -> None:
    dir_ino = await rig.dir(rig.tasks)
    handle = await rig.vfs.create(dir_ino, "new.txt", WRITE_NEW)
    assert await rig.vfs.write(handle.fh, 0, b"hello ") == 6
    assert await rig.vfs.write(handle.fh, 6, b"world") == 5
    assert rig.kb.count("create_file") == 0  # writes are local
    await rig.vfs.flush(handle.fh)
    await rig.vfs.flush(handle.fh)  # a second close of a clean file sends nothing
    rig.vfs.release(handle.fh)
    assert rig.kb.count("create_file") == 1
    assert rig.kb.contents(rig.tasks) == {"new.txt": b"hello world"}
    assert rig.pending_paths() == []
    # The upload's bytes became the cached content: reading it back needs no download.
    assert await rig.read(rig.tasks, "new.txt") == b"hello world"
    assert rig.kb.count("download_file") == 0
    assert await rig.ls(rig.tasks) == ["new.txt"]


async def test_project_files_upload_too(rig: Rig) -> None:
    await rig.save(rig.files, "spec.txt", b"spec")
    assert rig.kb.contents(rig.files) == {"spec.txt": b"spec"}
    assert rig.kb.contents(rig.tasks) == {}


async def test_fsync_uploads(rig: Rig) -> None:
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "log.txt", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"line 1\n")
    await rig.vfs.fsync(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"log.txt": b"line 1\n"}
    await rig.vfs.write(handle.fh, 7, b"line 2\n")
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"log.txt": b"line 1\nline 2\n"}
    assert rig.kb.count("create_file") == 2


async def test_overwrite_uploads_the_new_version_then_removes_the_old(rig: Rig) -> None:
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    await rig.save(rig.tasks, "doc.txt", b"version 2")
    assert rig.kb.mutations() == [("create", "doc.txt"), ("remove", old)]
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}
    assert await rig.ls(rig.tasks) == ["doc.txt"]
    assert await rig.read(rig.tasks, "doc.txt") == b"version 2"


async def test_a_failed_create_never_removes_the_old_version(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    rig.kb.fail("create_file", ServerError("HTTP 502", status_code=502))
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"version 2"))
    assert rig.kb.count("remove_file") == 0
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 1"}
    assert await rig.read(rig.tasks, "doc.txt") == b"version 2"  # the mount shows the new bytes


async def test_open_for_writing_copies_the_server_version(rig: Rig) -> None:
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"0123456789")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "doc.txt")
    handle = await rig.vfs.open(node.ino, os.O_RDWR)
    assert rig.kb.count("download_file") == 1  # the copy-on-open needs the content
    await rig.vfs.write(handle.fh, 3, b"abc")
    assert bytes(await rig.vfs.read(handle.fh, 0, 100)) == b"012abc6789"
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"012abc6789"}
    assert rig.kb.mutations() == [("create", "doc.txt"), ("remove", old)]


async def test_open_for_writing_without_change_uploads_nothing(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"same")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "doc.txt")
    handle = await rig.vfs.open(node.ino, os.O_WRONLY)
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.count("create_file", "remove_file") == 0


async def test_rapid_saves_in_one_second_leave_one_file_with_the_last_content(rig: Rig) -> None:
    rig.kb.dates.freeze()  # every upload lands in the same server second (§7 collisions)
    for n in range(3):
        await rig.save(rig.tasks, "doc.txt", f"save number {n}".encode())
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"save number 2"}
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["doc.txt"]
    assert rig.kb.count("create_file") == 3 and rig.kb.count("remove_file") == 2


# ---------------------------------------------------------------- what Kanboard cannot store


async def test_an_empty_file_stays_local(rig: Rig) -> None:
    await rig.save(rig.tasks, "empty.txt", b"")
    assert rig.kb.count("create_file") == 0
    assert rig.kb.contents(rig.tasks) == {}
    assert await rig.ls(rig.tasks) == ["empty.txt"]
    assert (await rig.stat(rig.tasks, "empty.txt")).size == 0
    # Once it gets content it is uploaded like any file.
    await rig.save(rig.tasks, "empty.txt", b"now with content")
    assert rig.kb.contents(rig.tasks) == {"empty.txt": b"now with content"}


async def test_emptying_a_server_file_keeps_the_server_version(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"previous")
    await rig.save(rig.tasks, "doc.txt", b"")
    assert rig.kb.count("create_file", "remove_file") == 0
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"previous"}
    assert (await rig.stat(rig.tasks, "doc.txt")).size == 0


async def test_content_zero_is_einval_before_any_upload(rig: Rig) -> None:
    await raises_errno(errno.EINVAL, rig.save(rig.tasks, "zero.txt", b"0"))
    assert rig.kb.count("create_file") == 0
    assert rig.pending_paths() == [f"/projects/{rig.project}/tasks/{rig.task}/zero.txt"]
    # A permanent refusal: the retry pass keeps it as a local-only file, with a copy in the
    # recovery folder.
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 0
    [entry] = rig.vfs.status()["pending_uploads"]  # type: ignore[misc]
    assert entry["local_only"] and "'0'" in entry["refused"]
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert recovered["name"] == "zero.txt"
    assert Path(recovered["file"]).read_bytes() == b"0"
    assert await rig.ls(rig.tasks) == ["zero.txt"]


async def test_image_name_with_non_image_content_is_einval_and_kept_local_only(rig: Rig) -> None:
    await raises_errno(errno.EINVAL, rig.save(rig.tasks, "shot.png", b"not a picture"))
    assert rig.kb.count("create_file") == 0  # refused before Kanboard's HTTP 500
    assert rig.kb.stored_paths() == set()
    await rig.vfs.retry_once()
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert Path(recovered["file"]).read_bytes() == b"not a picture"
    [entry] = rig.vfs.status()["pending_uploads"]  # type: ignore[misc]
    assert entry["local_only"] and "PNG" in entry["refused"]
    assert await rig.ls(rig.tasks) == ["shot.png"]


async def test_image_name_with_image_content_uploads(rig: Rig) -> None:
    await rig.save(rig.tasks, "shot.png", PNG)
    assert rig.kb.contents(rig.tasks) == {"shot.png": PNG}
    assert (await rig.xattrs(rig.tasks, "shot.png"))["user.kanboard.is_image"] == b"1"


async def test_names_kanboard_would_corrupt_are_refused(rig: Rig) -> None:
    dir_ino = await rig.dir(rig.tasks)
    await raises_errno(errno.ENAMETOOLONG, rig.vfs.create(dir_ino, "x" * 256, WRITE_NEW))
    await raises_errno(errno.EILSEQ, rig.vfs.create(dir_ino, "bad\udcff.txt", WRITE_NEW))
    assert rig.kb.count("create_file") == 0


# ---------------------------------------------------------------- failures at close


async def test_a_failed_upload_fails_close_keeps_the_bytes_and_is_retried(rig: Rig) -> None:
    rig.kb.fail("create_file", down())
    await raises_errno(errno.EIO, rig.save(rig.tasks, "report.txt", b"precious bytes"))
    assert rig.kb.contents(rig.tasks) == {}
    path = f"/projects/{rig.project}/tasks/{rig.task}/report.txt"
    assert rig.pending_paths() == [path]
    [entry] = rig.vfs.status()["pending_uploads"]  # type: ignore[misc]
    assert "connection refused" in entry["last_error"]
    assert Path(entry["spool_file"]).read_bytes() == b"precious bytes"
    assert await rig.read(rig.tasks, "report.txt") == b"precious bytes"  # still in the mount
    # Not before its backoff time...
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 1
    # ...then the retry uploads it.
    rig.clock.advance(31)
    await rig.vfs.retry_once()
    assert rig.kb.contents(rig.tasks) == {"report.txt": b"precious bytes"}
    assert rig.pending_paths() == []


async def test_a_later_close_uploads_what_an_earlier_one_could_not(rig: Rig) -> None:
    rig.kb.fail("create_file", down())
    await raises_errno(errno.EIO, rig.save(rig.tasks, "a.txt", b"first"))
    await rig.save(rig.tasks, "a.txt", b"second")
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"second"}
    assert rig.pending_paths() == []


async def test_a_forbidden_upload_is_eacces_and_goes_to_recovery(rig: Rig) -> None:
    rig.kb.fail("create_file", PermissionDenied("Forbidden"))
    await raises_errno(errno.EACCES, rig.save(rig.tasks, "a.txt", b"bytes"))
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 1  # a 403 is not retried
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert Path(recovered["file"]).read_bytes() == b"bytes"


async def test_a_rejected_upload_goes_to_recovery(rig: Rig) -> None:
    """create answering false (here: the task was deleted meanwhile) is permanent."""
    await rig.ls(rig.tasks)
    assert rig.task is not None
    rig.kb.remove_task(rig.task)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "late.txt", b"bytes"))
    await rig.vfs.retry_once()
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert recovered["name"] == "late.txt"
    assert rig.kb.count("create_file") == 1


async def test_a_lost_create_answer_makes_no_duplicate(rig: Rig) -> None:
    rig.kb.lose_answer("create_file")
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"the content"))
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"the content"}  # it did arrive
    rig.clock.advance(31)
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 1  # found, not sent again
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"the content"}
    assert rig.pending_paths() == []
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["doc.txt"]


async def test_a_lost_create_then_new_content_removes_the_lost_copy(rig: Rig) -> None:
    rig.kb.lose_answer("create_file")
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"draft"))
    [lost] = rig.kb.records(rig.tasks)
    await rig.save(rig.tasks, "doc.txt", b"final text")
    # The copy the lost attempt made is hidden at once and removed by the retry loop.
    assert sorted(r.size for r in rig.kb.records(rig.tasks)) == [5, 10]
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["doc.txt"]
    assert await rig.read(rig.tasks, "doc.txt") == b"final text"
    await rig.vfs.retry_once()
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"final text"}
    assert rig.kb.mutations() == [("create", "doc.txt"), ("create", "doc.txt"), ("remove", lost.id)]
    assert rig.kb.count("create_file") == 2


async def test_a_failed_removal_of_the_old_version_leaves_it_hidden(rig: Rig) -> None:
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    rig.kb.fail("remove_file", down())
    await rig.save(rig.tasks, "doc.txt", b"version 2")  # the save itself succeeded
    assert len(rig.kb.records(rig.tasks)) == 2  # both versions on the server...
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["doc.txt"]  # ...the old one hidden, not "doc (#1).txt"
    assert await rig.read(rig.tasks, "doc.txt") == b"version 2"
    await rig.vfs.retry_once()  # the queued removal
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}
    assert ("remove", old) == rig.kb.mutations()[-1]


async def test_a_superseded_id_reused_meanwhile_is_not_removed(rig: Rig) -> None:
    """The queued removal checks the file is still the one meant: Kanboard reuses ids (§7)."""
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    rig.kb.fail("remove_file", down())
    await rig.save(rig.tasks, "doc.txt", b"version 2")
    new = max(r.id for r in rig.kb.records(rig.tasks))
    # Someone else removes both, then uploads a file that gets the old id again.
    await rig.kb.remove_file(rig.tasks, new)
    await rig.kb.remove_file(rig.tasks, old)
    rig.kb.dates.advance(2)
    assert rig.kb.add_file(rig.tasks, "doc.txt", b"somebody else's") == old
    await rig.vfs.retry_once()
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"somebody else's"}


# ---------------------------------------------------------------- truncate


async def test_truncate_to_a_size_uploads(rig: Rig) -> None:
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"0123456789")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "doc.txt")
    attr = await rig.vfs.setattr(node.ino, None, size=4)
    assert attr.size == 4
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"0123"}
    assert rig.kb.mutations() == [("create", "doc.txt"), ("remove", old)]


async def test_truncate_to_zero_is_local_only(rig: Rig) -> None:
    """truncate(1) to 0 has no close() to upload on, and Kanboard cannot store an empty
    file: the server keeps the previous content until the file gets new content."""
    rig.kb.add_file(rig.tasks, "doc.txt", b"0123456789")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "doc.txt")
    assert (await rig.vfs.setattr(node.ino, None, size=0)).size == 0
    assert rig.kb.count("create_file", "remove_file", "download_file") == 0
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"0123456789"}
    handle = await rig.vfs.open(node.ino, os.O_WRONLY)
    await rig.vfs.write(handle.fh, 0, b"new")
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"new"}


async def test_ftruncate_on_an_open_handle_uploads_at_close(rig: Rig) -> None:
    rig.kb.add_file(rig.tasks, "doc.txt", b"0123456789")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "doc.txt")
    handle = await rig.vfs.open(node.ino, os.O_RDWR)
    await rig.vfs.setattr(node.ino, handle.fh, size=2)
    assert rig.kb.count("create_file") == 0  # local until close
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"01"}


async def test_task_files_of_another_project_are_not_confused(rig: Rig) -> None:
    """Task and project files have separate id sequences: file 1 of each is another file."""
    rig.kb.add_file(rig.tasks, "t.txt", b"task one")
    rig.kb.add_file(rig.files, "p.txt", b"project one")
    assert await rig.read(rig.tasks, "t.txt") == b"task one"
    assert await rig.read(rig.files, "p.txt") == b"project one"
    other = Container(rig.kb.add_project("Beta"))
    rig.expire_listings()
    rig.kb.add_file(other, "q.txt", b"beta one")
    assert await rig.read(other, "q.txt") == b"beta one"


async def test_a_listing_answered_while_the_old_version_is_removed_never_shows_it(
    rig: Rig,
) -> None:
    """Read-your-writes: a listing sent after the new version was confirmed and answered
    before the superseded one is gone lists both; the mount still shows only the save."""
    rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    gate = rig.kb.gate("remove_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.save, rig.tasks, "doc.txt", b"version 2")
        await gate.reached.wait()  # confirmed; the old version is still on the server
        await rig.vfs.refresh(await rig.dir(rig.tasks))  # a listing showing both
        assert sorted(rig.kb.names(rig.tasks)) == ["doc.txt", "doc.txt"]
        assert await rig.ls(rig.tasks) == ["doc.txt"]
        assert await rig.read(rig.tasks, "doc.txt") == b"version 2"
        gate.release()
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}
    assert await rig.read(rig.tasks, "doc.txt") == b"version 2"


async def test_a_write_past_max_file_size_is_efbig_and_nothing_is_uploaded(
    make_rig: RigFactory,
) -> None:
    """-o max_file_size: the write that would pass the limit fails with EFBIG (what was written
    before stays), close fails with EFBIG too, and the truncated copy is never uploaded, not
    even by the background retries; truncating it under the limit makes it a file again."""
    rig = await make_rig(max_file_size=1000)
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "big.bin", WRITE_NEW)
    try:
        assert await rig.vfs.write(handle.fh, 0, b"x" * 600) == 600
        await raises_errno(errno.EFBIG, rig.vfs.write(handle.fh, 600, b"y" * 600))
        await raises_errno(errno.EFBIG, rig.vfs.flush(handle.fh))
    finally:
        rig.vfs.release(handle.fh)
    rig.clock.advance(3600)
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 0 and rig.kb.names(rig.tasks) == []
    assert rig.pending_paths() == [f"/{rig.path(rig.tasks)}/big.bin"]
    assert (await rig.stat(rig.tasks, "big.bin")).size == 600
    rig.crash()  # the next mount does not upload it either
    rig = await rig.remount()
    await rig.vfs.retry_once()
    assert rig.kb.count("create_file") == 0
    assert rig.pending_paths() == [f"/{rig.path(rig.tasks)}/big.bin"]
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "big.bin")
    await raises_errno(errno.EFBIG, rig.vfs.setattr(node.ino, None, size=1001))
    await rig.vfs.setattr(node.ino, None, size=500)  # under the limit: uploaded as it is
    assert rig.kb.count("create_file") == 1
    assert await rig.read(rig.tasks, "big.bin") == b"x" * 500
