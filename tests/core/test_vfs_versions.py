"""The core on older Kanboard releases (the fake keeps their rules: FakeKanboard(version=...)).

Each test cites the version difference it is about (VERSIONS.md §1 numbers them, §2 gives
the observations), and fails on a core that assumes 1.2.53 everywhere.
"""

from __future__ import annotations

import errno

import pytest

from kbfs.client.models import Container

try:
    from conftest import Rig, RigFactory, raises_errno
    from fakekb import FakeKanboard
except ImportError:  # pragma: no cover
    from tests.core.conftest import Rig, RigFactory, raises_errno
    from tests.core.fakekb import FakeKanboard


async def old_rig(make_rig: RigFactory, version: str = "1.2.20", **config: object) -> Rig:
    return await make_rig(FakeKanboard(version=version), **config)


# ---------------------------------------------------------------- §2.1: shared storage paths


@pytest.mark.parametrize("version", ["1.2.20", "1.2.27", "1.2.53"])
async def test_rapid_saves_in_one_second_keep_the_last_content(
    make_rig: RigFactory, version: str
) -> None:
    """#1: three saves within one server second. Uploaded in that second, every version shares
    one storage path, and removing the superseded rows deletes the new bytes on 1.2.27 and
    older (kanboard-api §12 row 1, "the overwrite pattern"): the file would download as nothing."""
    rig = await old_rig(make_rig, version)
    rig.kb.dates.freeze()  # the server's clock stands still unless kbfs waits for it
    for n in range(3):
        await rig.save(rig.tasks, "rapid.txt", f"version {n + 1}".encode())
    assert rig.kb.contents(rig.tasks) == {"rapid.txt": b"version 3"}
    paths = {r.path for r in rig.kb.records(rig.tasks)}
    assert len(paths) == 1 and rig.kb.stored_paths() == paths  # no bytes left behind
    assert rig.kb.server_clock.waits == 2  # each later save waited for the next second
    rig.expire_listings()
    assert await rig.read(rig.tasks, "rapid.txt") == b"version 3"


async def test_a_save_of_an_old_file_does_not_wait(make_rig: RigFactory) -> None:
    rig = await old_rig(make_rig)
    rig.kb.add_file(rig.tasks, "old.txt", b"from yesterday")
    rig.kb.dates.advance(86400)
    await rig.save(rig.tasks, "old.txt", b"today")
    assert rig.kb.server_clock.waits == 0
    assert rig.kb.contents(rig.tasks) == {"old.txt": b"today"}


async def test_rename_over_a_file_made_in_the_same_second_keeps_the_moved_content(
    make_rig: RigFactory,
) -> None:
    """#1: ``mv src dst`` uploads src's content as dst and removes the old dst; when the old
    dst was made in the same server second, the new dst would share its path (§2.1)."""
    rig = await old_rig(make_rig)
    rig.kb.dates.freeze()
    await rig.save(rig.tasks, "dst.txt", b"old target")
    await rig.save(rig.tasks, "src.txt", b"moved content")
    dir_ino = await rig.dir(rig.tasks)
    await rig.vfs.rename(dir_ino, "src.txt", dir_ino, "dst.txt", 0)
    assert rig.kb.contents(rig.tasks) == {"dst.txt": b"moved content"}


async def test_a_row_sharing_the_path_of_a_kept_row_is_not_removed(make_rig: RigFactory) -> None:
    """#1: two rows of one name made in one second by another client share their bytes; on
    1.2.27 and older removing one deletes the other's content (§2.1), so rm refuses (EBUSY)
    and both stay readable."""
    rig = await old_rig(make_rig)
    rig.kb.dates.freeze()
    rig.kb.add_file(rig.tasks, "dup.txt", b"first")
    second = rig.kb.add_file(rig.tasks, "dup.txt", b"second")
    names = await rig.ls(rig.tasks)
    assert len(names) == 2
    shown = next(n for n in names if n != "dup.txt")
    await raises_errno(errno.EBUSY, rig.vfs.unlink(await rig.dir(rig.tasks), shown))
    assert rig.kb.content(rig.tasks, second) == b"second"
    assert rig.kb.count("remove_file") == 0


async def test_from_1_2_28_a_row_sharing_a_path_can_be_removed(make_rig: RigFactory) -> None:
    """#1 (1.2.28): the bytes stay while another row uses them, so rm of one is harmless."""
    rig = await old_rig(make_rig, "1.2.28")
    rig.kb.dates.freeze()
    rig.kb.add_file(rig.tasks, "dup.txt", b"first")
    rig.kb.add_file(rig.tasks, "dup.txt", b"second")
    names = await rig.ls(rig.tasks)
    shown = next(n for n in names if n != "dup.txt")
    await rig.vfs.unlink(await rig.dir(rig.tasks), shown)
    assert rig.kb.count("remove_file") == 1
    remaining = [r.id for r in rig.kb.records(rig.tasks)]
    assert len(remaining) == 1 and rig.kb.content(rig.tasks, remaining[0]) == b"second"


# ---------------------------------------------------------------- §2.2: missing stored bytes


async def test_rm_of_a_file_whose_bytes_are_missing_is_enodata_from_1_2_42(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """#3 (1.2.42): removeTaskFile answers false and the row stays (§2.2 F31b/F31c)."""
    rig = await old_rig(make_rig, "1.2.42")
    file_id = rig.kb.add_file(rig.tasks, "gone.txt", b"g")
    rig.kb.lose_storage(rig.tasks, file_id)
    await raises_errno(errno.ENODATA, rig.vfs.unlink(await rig.dir(rig.tasks), "gone.txt"))
    assert "Kanboard cannot remove a file whose stored bytes are missing" in caplog.text
    assert rig.kb.names(rig.tasks) == ["gone.txt"]


async def test_rm_of_a_file_whose_bytes_are_missing_works_up_to_1_2_40(
    make_rig: RigFactory,
) -> None:
    """#3: up to 1.2.40 the missing file is ignored and the row goes (§2.2 F31b)."""
    rig = await old_rig(make_rig, "1.2.40")
    file_id = rig.kb.add_file(rig.tasks, "gone.txt", b"g")
    rig.kb.lose_storage(rig.tasks, file_id)
    await rig.vfs.unlink(await rig.dir(rig.tasks), "gone.txt")
    assert rig.kb.names(rig.tasks) == []


async def test_a_superseded_version_that_cannot_be_removed_is_not_retried_forever(
    make_rig: RigFactory,
) -> None:
    """#3: the old version of a saved file lost its bytes; its removal is refused for good
    (§2.2), so the cleanup gives up at once instead of queueing it for ever."""
    rig = await old_rig(make_rig, "1.2.53")
    file_id = rig.kb.add_file(rig.tasks, "doc.txt", b"old")
    await rig.ls(rig.tasks)
    rig.kb.lose_storage(rig.tasks, file_id)
    rig.kb.dates.advance(5)
    await rig.save(rig.tasks, "doc.txt", b"new")
    assert rig.vfs.uploader.queue.queued == []
    assert rig.vfs.uploader.unremovable == 1
    before = rig.kb.count("remove_file")
    await rig.vfs.retry_once()
    assert rig.kb.count("remove_file") == before


# ---------------------------------------------------------------- §2.3: createTaskFile checks


async def test_before_1_2_47_no_upload_into_a_task_moved_to_another_project(
    make_rig: RigFactory,
) -> None:
    """#4: before 1.2.47 createTaskFile takes a task of another project (§2.3 F11): the
    task is looked at first, and the upload refused instead of landing elsewhere."""
    rig = await old_rig(make_rig, "1.2.46")
    await rig.ls(rig.tasks)
    other = rig.kb.add_project("Beta")
    rig.kb.move_task(rig.task, other)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "new.txt", b"bytes"))
    assert rig.kb.count("create_file") == 0
    assert rig.kb.names(Container(other, rig.task)) == []


async def test_from_1_2_47_the_server_checks_the_task_itself(make_rig: RigFactory) -> None:
    rig = await old_rig(make_rig, "1.2.47")
    await rig.save(rig.tasks, "new.txt", b"bytes")
    assert rig.kb.count("get_task") == 0


# ---------------------------------------------------------------- §2.4: project files


async def test_before_1_2_50_a_project_file_is_removed_only_once_seen_in_its_project(
    make_rig: RigFactory,
) -> None:
    """#6: before 1.2.50 removeProjectFile removes a file of any project (§2.4 G14). The file
    this mount saw went, and its id now names another project's file: that one stays."""
    rig = await old_rig(make_rig, "1.2.49")
    mine = rig.kb.add_file(rig.files, "mine.txt", b"mine")
    await rig.ls(rig.files)
    other = rig.kb.add_project("Beta")
    rig.kb.remove_file_out_of_band(rig.files, mine)
    theirs = rig.kb.add_file(Container(other), "theirs.txt", b"theirs")
    assert theirs == mine  # ids are reused (kanboard-api §7)
    await rig.vfs.unlink(await rig.dir(rig.files), "mine.txt")
    assert rig.kb.contents(Container(other)) == {"theirs.txt": b"theirs"}
    assert rig.kb.count("remove_file") == 0


async def test_before_1_2_50_another_projects_file_is_never_read_under_a_name(
    make_rig: RigFactory,
) -> None:
    """#6: before 1.2.50 downloadProjectFile sends a file of any project (§2.4 G08): a name
    whose file went, its id now another project's, must not show that project's bytes."""
    rig = await old_rig(make_rig, "1.2.49")
    mine = rig.kb.add_file(rig.files, "mine.txt", b"mine")
    await rig.ls(rig.files)
    other = rig.kb.add_project("Beta")
    rig.kb.remove_file_out_of_band(rig.files, mine)
    assert rig.kb.add_file(Container(other), "theirs.txt", b"secr") == mine  # same size
    await raises_errno(errno.EIO, rig.read(rig.files, "mine.txt"))
    assert rig.kb.count("download_file") == 0  # not one byte of Beta's file fetched
