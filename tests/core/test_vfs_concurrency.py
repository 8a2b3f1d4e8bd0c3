"""Several users in one directory, driven on Vfs directly with the kernel's side played by the
test: what one user's ``ls`` tells the kernel must never undo what another user's ``mv`` or
``rm`` just did, and a save closed just before a ``mv`` is moved on the server too.

The kernel applies a rename, rm or create of a directory between an opendir and the readdir
calls that follow it (it holds the directory's lock only per call), and every READDIRPLUS entry
becomes a dentry that replaces the one it had. The kernel also sends the release of a closed
file after close() returned, so the next operation of the same process may arrive first.
"""

from __future__ import annotations

import os

import pytest
import trio

try:
    from conftest import WRITE_NEW, Rig
except ImportError:  # pragma: no cover
    from tests.core.conftest import WRITE_NEW, Rig


def readdir(rig: Rig, fh: int) -> dict[str, int]:
    """What the kernel learns from a READDIRPLUS of an open directory: name -> inode."""
    return {name: node.ino for name, node, _ in rig.vfs.dir_entries(fh)}


async def kernel_save(rig: Rig, dentries: dict[str, int], name: str, data: bytes) -> None:
    """``open(name, "wb")``, write, close as the kernel runs it: a cached dentry is opened
    with O_TRUNC; only a name it does not know is created."""
    dir_ino = await rig.dir(rig.tasks)
    ino = dentries.get(name)
    if ino is None:
        handle = await rig.vfs.create(dir_ino, name, WRITE_NEW)
    else:
        handle = await rig.vfs.open(ino, WRITE_NEW)
    try:
        await rig.vfs.write(handle.fh, 0, data)
        await rig.vfs.flush(handle.fh)
    finally:
        rig.vfs.release(handle.fh)


@pytest.mark.parametrize("then_rm", [False, True], ids=["mv", "mv-then-rm"])
async def test_a_readdir_answered_after_a_move_never_points_the_old_name_at_the_file(
    rig: Rig, then_rm: bool
) -> None:
    """One user's ``ls`` opens the directory, the owner of ``a.bin`` moves it (and removes
    the result), then the ``ls`` reads the entries. Replied from the opendir snapshot, the
    entry ``a.bin`` would point the name back at the moved inode: the owner's next
    ``open("a.bin", "wb")`` would write into ``a-moved.bin``, or, once that is removed, fail
    with ENOENT."""
    dir_ino = await rig.dir(rig.tasks)
    await rig.save(rig.tasks, "a.bin", b"first")
    await rig.save(rig.tasks, "other.bin", b"someone else's")
    fh = await rig.vfs.opendir(dir_ino)  # another user's ls -l
    await rig.vfs.rename(dir_ino, "a.bin", dir_ino, "a-moved.bin", 0)
    if then_rm:
        await rig.vfs.unlink(dir_ino, "a-moved.bin")
    dentries = readdir(rig, fh)  # ... which reads the entries only now
    rig.vfs.releasedir(fh)
    await kernel_save(rig, dentries, "a.bin", b"second")
    expected = {"a.bin": b"second", "other.bin": b"someone else's"}
    if not then_rm:
        expected["a-moved.bin"] = b"first"
    assert rig.kb.contents(rig.tasks) == expected
    assert await rig.read(rig.tasks, "a.bin") == b"second"
    # Every dentry the reply made is what a lookup of that name gives now.
    for name, ino in dentries.items():
        assert (await rig.vfs.lookup(dir_ino, name)).ino == ino, name
    assert sorted(dentries) == ["other.bin"]


async def test_a_readdir_answers_a_replaced_name_with_the_file_it_shows_now(rig: Rig) -> None:
    """A name a rename replaced after opendir is still there: replied, with its new inode."""
    dir_ino = await rig.dir(rig.tasks)
    await rig.save(rig.tasks, "a.bin", b"moving")
    await rig.save(rig.tasks, "b.bin", b"replaced")
    moving = await rig.vfs.lookup(dir_ino, "a.bin")
    fh = await rig.vfs.opendir(dir_ino)
    await rig.vfs.rename(dir_ino, "a.bin", dir_ino, "b.bin", 0)
    assert readdir(rig, fh) == {"b.bin": moving.ino}
    rig.vfs.releasedir(fh)
    assert rig.kb.contents(rig.tasks) == {"b.bin": b"moving"}


async def test_a_readdir_taken_while_a_move_removes_its_source_names_the_moved_inode(
    rig: Rig,
) -> None:
    """An opendir while a move's upload is confirmed and its source is being removed lists
    the staging node at the target; read after the move, the entry names the inode the
    kernel moved there, which stays openable (the staging node is gone by then)."""
    dir_ino = await rig.dir(rig.tasks)
    await rig.save(rig.tasks, "a.bin", b"content")
    moving = await rig.vfs.lookup(dir_ino, "a.bin")
    gate = rig.kb.gate("remove_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.vfs.rename, dir_ino, "a.bin", dir_ino, "a-moved.bin", 0)
        await gate.reached.wait()  # uploaded at the target; the source is being removed
        fh = await rig.vfs.opendir(dir_ino)
        gate.release()
    dentries = readdir(rig, fh)
    rig.vfs.releasedir(fh)
    assert dentries == {"a-moved.bin": moving.ino}
    handle = await rig.vfs.open(moving.ino, os.O_RDONLY)
    try:
        assert bytes(await rig.vfs.read(handle.fh, 0, 100)) == b"content"
    finally:
        rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"a-moved.bin": b"content"}


async def test_a_move_right_after_a_save_moves_it_on_the_server(rig: Rig) -> None:
    """``cp`` then ``mv``: close() returned (the save is uploaded) and the rename arrives
    before the kernel's release of that file. The move must still upload at the target and
    remove the source, not wait for a close that already happened; a handle that does write
    again saves under the new name."""
    dir_ino = await rig.dir(rig.tasks)
    handle = await rig.vfs.create(dir_ino, "a.bin", WRITE_NEW)
    await rig.vfs.write(handle.fh, 0, b"saved")
    await rig.vfs.flush(handle.fh)  # close() returned 0; its release is still to come
    await rig.vfs.rename(dir_ino, "a.bin", dir_ino, "a-moved.bin", 0)
    assert rig.kb.contents(rig.tasks) == {"a-moved.bin": b"saved"}
    assert await rig.ls(rig.tasks) == ["a-moved.bin"]
    await rig.vfs.write(handle.fh, 5, b" more")  # a writer (dup'ed fd) still has it open
    await rig.vfs.flush(handle.fh)
    rig.vfs.release(handle.fh)
    assert rig.kb.contents(rig.tasks) == {"a-moved.bin": b"saved more"}
    assert await rig.read(rig.tasks, "a-moved.bin") == b"saved more"
    assert [m for m, _ in rig.kb.mutations()] == ["create", "create", "remove", "create", "remove"]
    assert rig.pending_paths() == []
