"""A save is one round trip: close() returns once create*File answered with an id.

The new file's record is known by id only (kbfs.namespace.provisional) until a listing brings
the rest; the collision check's listing does so within seconds of close(). Where the storage
path must be known before anything is removed (Kanboard 1.2.27 and older) or a project file
must be seen in its project (before 1.2.50), the read-back stays.
"""

from __future__ import annotations

import pytest

from kbfs.errors import FsError
from kbfs.namespace.nodes import is_provisional

try:
    from conftest import Rig, RigFactory
    from fakekb import FakeKanboard
except ImportError:  # pragma: no cover
    from tests.core.conftest import Rig, RigFactory
    from tests.core.fakekb import FakeKanboard


async def node_record(rig: Rig, name: str):  # type: ignore[no-untyped-def]
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), name)
    return node.ino, node.record


async def test_a_new_file_costs_one_create_and_nothing_else(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await rig.ls(rig.tasks)
    before = dict(rig.kb.calls)
    await rig.save(rig.tasks, "new.txt", b"content")
    made = {m: n - before.get(m, 0) for m, n in rig.kb.calls.items() if n != before.get(m, 0)}
    assert made == {"create_file": 1}
    _, record = await node_record(rig, "new.txt")
    assert record is not None and is_provisional(record)
    assert (await rig.stat(rig.tasks, "new.txt")).size == 7
    # Read back from the adopted spool bytes: no download.
    assert await rig.read(rig.tasks, "new.txt") == b"content"
    assert rig.kb.count("download_file") == 0


async def test_the_next_listing_confirms_the_upload_on_the_same_inode(
    make_rig: RigFactory,
) -> None:
    """The listing brings path, etag and date; the node (and the cached bytes) follow."""
    rig = await make_rig()
    await rig.save(rig.tasks, "new.txt", b"content")
    ino, _ = await node_record(rig, "new.txt")
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["new.txt"]
    again, record = await node_record(rig, "new.txt")
    server = next(r for r in rig.kb.records(rig.tasks) if r.name == "new.txt")
    assert again == ino
    assert record is not None and not is_provisional(record)
    assert record.path == server.path and record.date == server.date
    assert await rig.read(rig.tasks, "new.txt") == b"content"
    assert rig.kb.count("download_file") == 0  # the cached copy moved to the real key


async def test_the_collision_check_confirms_without_anyone_listing(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await rig.save(rig.tasks, "new.txt", b"content")
    rig.kb.dates.advance(3)  # past the upload's second, and the margin
    listings = rig.kb.count("list_files")
    await rig.vfs.retry_once()
    assert rig.kb.count("list_files") == listings + 1  # the check's own listing, nothing more
    _, record = await node_record(rig, "new.txt")
    assert record is not None and not is_provisional(record)
    assert not list((rig.root / "spool" / "held").iterdir())


async def test_a_reused_id_is_not_taken_for_the_upload(make_rig: RigFactory) -> None:
    """Another client removed the new file and made one that got its id (ids are reused,
    kanboard-api §7): the listing's record of that id is another file, not ours."""
    rig = await make_rig()
    await rig.save(rig.tasks, "mine.txt", b"content")
    ino, record = await node_record(rig, "mine.txt")
    assert record is not None
    rig.kb.remove_file_out_of_band(rig.tasks, record.id)
    other = rig.kb.add_file(rig.tasks, "theirs.txt", b"another file")
    assert other == record.id
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["theirs.txt"]
    theirs = await rig.vfs.lookup(await rig.dir(rig.tasks), "theirs.txt")
    assert theirs.ino != ino
    assert await rig.read(rig.tasks, "theirs.txt") == b"another file"


async def test_overwrite_removes_the_old_version_after_one_create(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.kb.add_file(rig.tasks, "doc.txt", b"old")
    rig.kb.dates.advance(5)
    await rig.ls(rig.tasks)
    before = dict(rig.kb.calls)
    await rig.save(rig.tasks, "doc.txt", b"new")
    made = {m: n - before.get(m, 0) for m, n in rig.kb.calls.items() if n != before.get(m, 0)}
    # The old version is looked at before its removal (ids are reused), not the new one.
    assert made == {"create_file": 1, "get_file": 1, "remove_file": 1}
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"new"}


@pytest.mark.parametrize("version", ["1.2.20", "1.2.27"])
async def test_old_releases_read_the_new_record_back(make_rig: RigFactory, version: str) -> None:
    """Removing a row deletes bytes another row shares there (kanboard-api §12 row 1): the
    new record's storage path must be known before the old version goes."""
    rig = await make_rig(FakeKanboard(version=version))
    await rig.ls(rig.tasks)
    await rig.save(rig.tasks, "new.txt", b"content")
    assert rig.kb.count("get_file") == 1
    _, record = await node_record(rig, "new.txt")
    assert record is not None and not is_provisional(record)


async def test_project_files_before_1_2_50_are_read_back(make_rig: RigFactory) -> None:
    rig = await make_rig(FakeKanboard(version="1.2.40"))
    await rig.ls(rig.files)
    before = rig.kb.count("get_file")
    await rig.save(rig.files, "new.txt", b"content")
    assert rig.kb.count("get_file") == before + 1
    await rig.save(rig.tasks, "task.txt", b"content")  # task files: one round trip there
    assert rig.kb.count("get_file") == before + 1


async def test_a_moved_upload_is_confirmed_on_the_moved_inode(make_rig: RigFactory) -> None:
    """A move of a file known by id only: the moved inode takes the new file's record, and
    the listing that confirms that record must find it (not the staging node it came
    from, which is gone: the file would vanish from the listing's readers)."""
    rig = await make_rig()
    await rig.save(rig.tasks, "a.txt", b"x")
    d = await rig.dir(rig.tasks)
    moved = await rig.vfs.lookup(d, "a.txt")
    await rig.vfs.rename(d, "a.txt", d, "b.txt", 0)
    await rig.save(rig.tasks, "a.txt", b"y")
    rig.expire_listings()
    assert await rig.ls(rig.tasks) == ["a.txt", "b.txt"]
    node = await rig.vfs.lookup(d, "b.txt")
    assert node.ino == moved.ino and node.record is not None
    assert not is_provisional(node.record)
    assert await rig.read(rig.tasks, "b.txt") == b"x"
    assert await rig.read(rig.tasks, "a.txt") == b"y"


async def test_a_quick_second_save_asks_the_exact_second_instead_of_waiting_longer(
    make_rig: RigFactory,
) -> None:
    """The date of an upload known by id only is the server clock's bound, a second wide:
    the next save of that name would wait a second more than needed. One get*File gives the
    exact second; the wait is then only for the server's next second."""
    rig = await make_rig()
    rig.kb.dates.freeze(1_800_000_000.25)
    await rig.save(rig.tasks, "a.txt", b"first")
    gets = rig.kb.count("get_file")
    await rig.save(rig.tasks, "a.txt", b"second")
    # The exact date, and the old version looked at before its removal.
    assert rig.kb.count("get_file") == gets + 2
    assert rig.kb.server_clock.waited == pytest.approx(0.75)  # to 1_800_000_001, not one more
    assert rig.kb.contents(rig.tasks) == {"a.txt": b"second"}


async def test_a_removed_upload_leaves_its_id_free_for_a_lost_create(
    make_rig: RigFactory,
) -> None:
    """An upload known by id only is removed; the next create, whose answer is lost, gets
    that id (ids are reused). The removed upload is no longer this mount's: the lost create's
    file must be found and adopted, not sent again beside it (nor left as a copy)."""
    rig = await make_rig()
    await rig.ls(rig.tasks)
    await rig.save(rig.tasks, "gone.txt", b"short-lived")
    _, record = await node_record(rig, "gone.txt")
    assert record is not None and is_provisional(record)
    await rig.vfs.unlink(await rig.dir(rig.tasks), "gone.txt")
    rig.kb.lose_answer("create_file")
    with pytest.raises(FsError):
        await rig.save(rig.tasks, "doc.txt", b"arrived anyway")
    assert [r.id for r in rig.kb.records(rig.tasks)] == [record.id]  # the id, reused
    assert await rig.vfs.sync_all(10) == []  # kbfs sync: the upload, now
    assert rig.kb.count("create_file") == 2  # nothing sent again
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"arrived anyway"}
    assert rig.pending_paths() == []
    assert await rig.ls(rig.tasks) == ["doc.txt"]
