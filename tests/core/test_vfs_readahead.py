"""Read-ahead of small files in batched requests (kbfs.ops.readahead; SEMANTICS.md "Reading").

A read-through (a file opened right after another of the same or a sibling task directory was
read to its end) fetches what comes next in one ``download_files`` batch; nothing else does.
"""

from __future__ import annotations

import os

import trio
import trio.testing

from kbfs.client.errors import TransportError
from kbfs.client.models import Container

try:
    from conftest import Rig
except ImportError:  # pragma: no cover
    from tests.core.conftest import Rig


def fill(rig: Rig, container: Container, n: int, size: int = 2000) -> dict[str, bytes]:
    files = {f"f{i:02d}.bin": os.urandom(size) for i in range(n)}
    for name, data in files.items():
        rig.kb.add_file(container, name, data)
    return files


async def read_all(rig: Rig, container: Container, names: list[str]) -> dict[str, bytes]:
    out = {}
    for name in names:
        out[name] = await rig.read(container, name)
        await trio.testing.wait_all_tasks_blocked()  # let a started batch land
    return out


async def test_reading_a_directory_through_fetches_the_rest_in_one_batch(rig: Rig) -> None:
    files = fill(rig, rig.tasks, 20)
    assert await read_all(rig, rig.tasks, sorted(files)) == files
    # The first two one by one (the second open is what shows a read-through), the rest batched.
    assert rig.kb.count("download_file") == 2
    assert rig.kb.count("download_files") == 1


async def test_one_file_read_alone_fetches_nothing_else(rig: Rig) -> None:
    files = fill(rig, rig.tasks, 5)
    assert await rig.read(rig.tasks, "f02.bin") == files["f02.bin"]
    await trio.testing.wait_all_tasks_blocked()
    assert rig.kb.count("download_files") == 0
    assert rig.kb.count("download_file") == 1


async def test_reading_only_the_start_of_files_fetches_nothing_else(rig: Rig) -> None:
    """A content-type sniff reads the first bytes of each file: not a read-through."""
    fill(rig, rig.tasks, 6)
    for name in ["f00.bin", "f01.bin", "f02.bin"]:
        node = await rig.vfs.lookup(await rig.dir(rig.tasks), name)
        handle = await rig.vfs.open(node.ino, os.O_RDONLY)
        await rig.vfs.read(handle.fh, 0, 100)
        rig.vfs.release(handle.fh)
    await trio.testing.wait_all_tasks_blocked()
    assert rig.kb.count("download_files") == 0


async def test_the_read_ahead_goes_on_into_the_next_tasks(rig: Rig) -> None:
    """cp -r of a project: its tasks' listings come with tasks/, so the batches cross task
    directories; 3 tasks of 10 files take 2 single downloads and one batch."""
    tasks = [rig.task] + [rig.kb.add_task(rig.project, f"t{i}") for i in range(2)]
    content = {t: fill(rig, Container(rig.project, t), 10) for t in tasks}
    await rig.vfs.list_dir(await rig.ino(f"projects/{rig.project}/tasks"))
    for t in tasks:
        got = await read_all(rig, Container(rig.project, t), sorted(content[t]))
        assert got == content[t]
    assert rig.kb.count("download_file") == 2
    assert rig.kb.count("download_files") == 1


async def test_a_failed_batch_leaves_each_file_to_a_single_download(rig: Rig) -> None:
    files = fill(rig, rig.tasks, 8)
    rig.kb.fail("download_files", TransportError("connection reset", request_sent=True), times=None)
    assert await read_all(rig, rig.tasks, sorted(files)) == files
    # One batch tried; after its failure no other for a while (not one per open).
    assert rig.kb.count("download_files") == 1
    assert rig.kb.count("download_file") == 8


async def test_large_files_are_not_read_ahead(rig: Rig) -> None:
    files = fill(rig, rig.tasks, 3)
    big = os.urandom((1 << 20) + 1)
    rig.kb.add_file(rig.tasks, "f99-big.bin", big)
    files["f99-big.bin"] = big
    assert await read_all(rig, rig.tasks, sorted(files)) == files
    assert rig.kb.count("download_files") == 1
    assert rig.kb.count("download_file") == 3  # two before the batch, the big one after
