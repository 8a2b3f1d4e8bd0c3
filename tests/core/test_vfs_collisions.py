"""Two mounts of one server saving one name in the same server second (kanboard-api §7).

Kanboard stores both uploads at one path and keeps the later bytes for both rows. Neither
mount knows of the other's upload, so each checks its confirmed uploads once the server's
clock is past their second (kbfs.upload.collisions, run by the background pass): a save whose
bytes were overwritten is uploaded again. The fake reproduces the collision with a frozen
server clock.
"""

from __future__ import annotations

from pathlib import Path

try:  # tests/ is not a package; pytest puts this directory on sys.path
    from conftest import WRITE_NEW, Rig, RigFactory, start_vfs
    from fakekb import FakeKanboard
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig, RigFactory, start_vfs
    from tests.core.fakekb import FakeKanboard

NAME = "shared.txt"


async def second_mount(rig: Rig, root: Path) -> Rig:
    """Another machine's mount of the same server: its own cache, spool and namespace."""
    vfs, scope = await start_vfs(rig.kb, root, rig.clock, rig.nursery)
    return Rig(vfs, rig.kb, rig.clock, root, rig.nursery, rig.project, rig.task, {}, scope)


async def collide(a: Rig, b: Rig, first: bytes, second: bytes) -> None:
    """A saves ``first``, then B saves ``second`` in the same server second; B's listing
    predates A's upload, so B does not know of A's file (two machines)."""
    await b.ls(b.tasks)
    a.kb.dates.freeze()
    await a.save(a.tasks, NAME, first)
    await b.save(b.tasks, NAME, second)
    rows = [r for r in a.kb.records(a.tasks) if r.name == NAME]
    assert len(rows) == 2 and rows[0].path == rows[1].path  # the collision happened
    assert {a.kb.content(a.tasks, r.id) for r in rows} == {second}
    a.kb.dates.advance(3)  # the server's clock moves past that second


def server_contents(rig: Rig) -> list[bytes]:
    return sorted(rig.kb.content(rig.tasks, r.id) for r in rig.kb.records(rig.tasks))


async def test_a_save_another_mount_overwrote_in_the_same_second_is_uploaded_again(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    a = await make_rig()
    b = await second_mount(a, tmp_path / "b")
    await collide(a, b, b"saved by A", b"saved by B, a little longer")
    assert await a.read(a.tasks, NAME) == b"saved by A"  # a cached read before the check
    await b.vfs.retry_once()  # B's bytes are the stored ones: nothing to do
    assert a.kb.count("create_file") == 2
    await a.vfs.retry_once()  # A finds its bytes gone, uploads them again
    assert server_contents(a) == [b"saved by A", b"saved by B, a little longer"]
    assert a.kb.count("create_file") == 3
    a.expire_listings()
    names = await a.ls(a.tasks)
    assert names == await b.ls(b.tasks)  # both mounts agree: the race's loser a duplicate
    for mount in (a, b):
        seen = sorted([await mount.read(mount.tasks, n) for n in names])
        assert seen == [b"saved by A", b"saved by B, a little longer"]
    a.kb.dates.advance(3)
    await a.vfs.retry_once()  # the new upload is checked too: alone at its path
    await b.vfs.retry_once()
    assert a.kb.count("create_file") == 3
    assert not list((a.root / "spool" / "held").iterdir())


async def test_a_collision_is_checked_after_a_crash_by_the_next_mount(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    a = await make_rig()
    b = await second_mount(a, tmp_path / "b")
    await collide(a, b, b"saved by A", b"saved by B")
    a.crash()  # before A's background pass checked its upload
    again = await a.remount()
    await again.vfs.retry_once()
    assert server_contents(again) == [b"saved by A", b"saved by B"]


async def test_no_check_downloads_anything_without_a_collision(make_rig: RigFactory) -> None:
    """And the uploads of one directory cost one listing in all (``cp -r`` of many files)."""
    rig = await make_rig()
    for i in range(5):
        await rig.save(rig.tasks, f"{i}-{NAME}", b"one")
    rig.kb.dates.advance(3)
    before = rig.kb.count("download_file", "list_files")
    await rig.vfs.retry_once()
    assert rig.kb.count("download_file") == 0
    assert rig.kb.count("download_file", "list_files") == before + 1  # one listing for all
    await rig.vfs.retry_once()
    assert rig.kb.count("download_file", "list_files") == before + 1  # checked once


async def test_before_1_2_28_the_overwritten_row_stays_and_its_bytes_are_not_served_from_cache(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """Removing our row would delete the other mount's bytes there: it stays, a duplicate
    holding the other's content, and this mount's cache must not serve our bytes for it."""
    a = await make_rig(FakeKanboard(version="1.2.27"))
    b = await second_mount(a, tmp_path / "b")
    await collide(a, b, b"saved by A", b"saved by B")
    await a.vfs.retry_once()
    await b.vfs.retry_once()
    assert server_contents(a) == [b"saved by A", b"saved by B", b"saved by B"]
    a.expire_listings()
    names = await a.ls(a.tasks)
    assert len(names) == 3
    seen = sorted([await a.read(a.tasks, n) for n in names])
    assert seen == [b"saved by A", b"saved by B", b"saved by B"]


async def test_an_overwritten_save_changed_since_is_not_sent_again_with_its_old_bytes(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """A writer that fsyncs and writes on: the version that lost the race is replaced by the
    file's newer content at close, never uploaded again as it was."""
    a = await make_rig()
    b = await second_mount(a, tmp_path / "b")
    await b.ls(b.tasks)
    a.kb.dates.freeze()
    handle = await a.vfs.create(await a.dir(a.tasks), NAME, WRITE_NEW)
    try:
        await a.vfs.write(handle.fh, 0, b"first")
        await a.vfs.fsync(handle.fh)  # uploaded: A's first version
        await b.save(b.tasks, NAME, b"saved by B")  # same second: overwrites it
        await a.vfs.write(handle.fh, 5, b" and more")
        a.kb.dates.advance(3)
        await a.vfs.retry_once()  # the collision is found; the file has changed since
        assert a.kb.count("create_file") == 2
        await a.vfs.flush(handle.fh)
    finally:
        a.vfs.release(handle.fh)
    contents = server_contents(a)
    assert b"first and more" in contents and b"saved by B" in contents
    assert a.kb.count("create_file") == 3


async def test_a_superseded_version_whose_id_another_client_reused_is_not_removed(
    make_rig: RigFactory,
) -> None:
    """Another client removes the file this mount's next save replaces, and a new file of
    theirs gets its id (ids are reused): the save removes nothing of theirs, although this
    mount's listing still shows the old version under that id."""
    rig = await make_rig()
    await rig.save(rig.tasks, NAME, b"version 1")
    (old,) = rig.kb.records(rig.tasks)
    rig.kb.remove_file_out_of_band(rig.tasks, old.id)
    theirs = rig.kb.add_file(rig.tasks, "theirs.txt", b"another client's save")
    assert theirs == old.id
    await rig.save(rig.tasks, NAME, b"version 2")
    assert rig.kb.contents(rig.tasks) == {
        "theirs.txt": b"another client's save",
        NAME: b"version 2",
    }
