"""``timeout`` bounds each file operation as a whole, whatever the server does (#18 item 5).

A server call that never ends is a gate never released (the fake's calls have no timeout of
their own, unlike the real client's). Each test bounds itself with ``fail_after`` a few times
the operation's budget: on code without the bound, it fails there instead of hanging.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
import trio
from conftest import RigFactory, raises_errno

OP_TIMEOUT = 0.5  # seconds: each operation's budget in these tests
WAIT = 4 * OP_TIMEOUT  # far beyond the budget, far below pytest's own timeout


async def test_ls_tasks_is_not_held_up_by_a_batched_listing(make_rig: RigFactory) -> None:
    """ls tasks/ fetches the listings of all its tasks in one batch (the prefetch), which had
    no bound: a server that never answered it held `ls` forever. The task entries are known
    already, so they are listed when the budget runs out; each task is fetched on its own
    when it is looked into."""
    rig = await make_rig(op_timeout=OP_TIMEOUT)
    rig.kb.add_task(rig.project, "Second task")
    tasks = await rig.ino(f"projects/{rig.project}/tasks")
    rig.kb.gate("list_files_many")  # never released
    started = trio.current_time()
    with trio.fail_after(WAIT):
        entries = await rig.vfs.list_dir(tasks)
    assert len(entries) == 2
    assert trio.current_time() - started < OP_TIMEOUT + 0.2
    assert rig.kb.calls["list_files_many"] == 1


async def test_rm_ends_within_the_timeout(make_rig: RigFactory) -> None:
    """rm of a file whose removal the server never answers: EIO after the budget."""
    rig = await make_rig(op_timeout=OP_TIMEOUT)
    rig.kb.add_file(rig.tasks, "a.txt", b"content")
    parent = await rig.dir(rig.tasks)
    await rig.vfs.lookup(parent, "a.txt")
    rig.kb.gate("remove_file")  # never released
    started = trio.current_time()
    with trio.fail_after(WAIT):
        exc = await raises_errno(errno.EIO, rig.vfs.unlink(parent, "a.txt"))
    assert "rm: no answer from the server within" in str(exc)
    assert trio.current_time() - started < OP_TIMEOUT + 0.2


async def test_open_for_append_ends_within_its_budget(make_rig: RigFactory) -> None:
    """Opening a server file for writing copies its content first (copy-on-open), which had
    no bound: `>>` hung for as long as the server kept the download open."""
    rig = await make_rig(op_timeout=OP_TIMEOUT)
    rig.kb.add_file(rig.tasks, "a.txt", b"content")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "a.txt")
    rig.kb.gate("download_file")  # never released
    started = trio.current_time()
    with trio.fail_after(WAIT):
        exc = await raises_errno(errno.EIO, rig.vfs.open(node.ino, os.O_WRONLY | os.O_APPEND))
    assert "open for writing: no answer from the server within" in str(exc)
    assert trio.current_time() - started < OP_TIMEOUT + 0.2
    assert rig.pending_paths() == []  # nothing half made


async def test_a_cached_listing_is_still_served_within_the_budget(make_rig: RigFactory) -> None:
    """The operation's bound must not take away the cached listing a server that stopped
    answering leaves: the listing call gives up a little before the operation's deadline,
    and the cached names are served in time."""
    rig = await make_rig(op_timeout=OP_TIMEOUT)
    rig.kb.add_file(rig.tasks, "a.txt", b"content")
    assert await rig.ls(rig.tasks) == ["a.txt"]
    parent = await rig.dir(rig.tasks)
    rig.expire_listings()
    rig.kb.gate("list_files")  # never released
    started = trio.current_time()
    with trio.fail_after(WAIT):
        node = await rig.vfs.lookup(parent, "a.txt")
    assert node.name == "a.txt"
    assert trio.current_time() - started < OP_TIMEOUT + 0.2


async def test_a_read_does_not_wait_for_a_trickling_download(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server sending a file a byte at a time makes progress, so no stall is seen, and the
    whole download's budget grows with the file's size (hours for a large one). A read waits
    only as long as its bytes take at the minimum rate, plus the timeout, from the start of
    the download; bytes already there are served at once."""
    rig = await make_rig(op_timeout=OP_TIMEOUT)
    data = bytes(range(256)) * 400
    rig.kb.add_file(rig.tasks, "big.bin", data)

    async def trickle(container: Any, file_id: int, sink: Any, size: int | None = None) -> int:
        for i in range(len(data)):
            sink.writelines([data[i : i + 1]])
            await trio.sleep(0.005)
        return len(data)

    monkeypatch.setattr(rig.kb, "download_file", trickle)
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "big.bin")
    handle = await rig.vfs.open(node.ino, os.O_RDONLY)
    try:
        with trio.fail_after(WAIT):
            assert bytes(await rig.vfs.read(handle.fh, 0, 10)) == data[:10]
            started = trio.current_time()
            exc = await raises_errno(errno.EIO, rig.vfs.read(handle.fh, 20_000, 4096))
    finally:
        rig.vfs.release(handle.fh)
    assert "the download is too slow" in str(exc)
    assert trio.current_time() - started < OP_TIMEOUT + 0.5
