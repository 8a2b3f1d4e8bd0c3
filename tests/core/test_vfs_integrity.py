"""Never publish a broken file, never hide a refused one (SEMANTICS.md "Durability"): content
a write failed on is never uploaded, by close, the retry loop or the next mount; content the
server refuses for good stays in the mount as a local-only file."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from conftest import Rig, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import Rig, raises_errno


class DiskFull:
    """Makes ``os.pwrite`` into one file descriptor fail with ENOSPC (a full spool disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fd: int | None = None
        real = os.pwrite

        def pwrite(fd: int, data: Any, offset: int) -> int:
            if fd == self.fd:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[DiskFull]:
    yield DiskFull(monkeypatch)


async def _write_until_full(rig: Rig, disk_full: DiskFull, fh: int, good: bytes) -> None:
    """One write that fits, then one that hits the full disk (and fails with ENOSPC)."""
    await rig.vfs.write(fh, 0, good)
    disk_full.fd = rig.vfs.handle(fh).fd
    await raises_errno(errno.ENOSPC, rig.vfs.write(fh, len(good), b"the rest" * 100))
    disk_full.fd = None


def spool_data(rig: Rig) -> list[Path]:
    return sorted((rig.root / "spool").glob("*.data"))


# ---------------------------------------------------------------- a write that failed


async def test_a_failed_write_is_never_uploaded_and_the_old_version_stays(
    rig: Rig, disk_full: DiskFull
) -> None:
    rig.kb.add_file(rig.tasks, "big.bin", b"earlier version")
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "big.bin")
    handle = await rig.vfs.open(node.ino, os.O_WRONLY | os.O_TRUNC)
    try:
        await _write_until_full(rig, disk_full, handle.fh, b"A" * 1000)
        await raises_errno(errno.ENOSPC, rig.vfs.flush(handle.fh))  # close() says so too
        [entry] = rig.vfs.status()["pending_uploads"]  # type: ignore[misc]
        assert entry["incomplete"].startswith("incomplete: a write failed")
        assert rig.vfs.xattrs(node.ino)["user.kbfs.state"].startswith(b"incomplete: ")
    finally:
        rig.vfs.release(handle.fh)
    for _ in range(3):  # the retry loop never sends it either
        rig.clock.advance(31)
        await rig.vfs.retry_once()
    assert rig.kb.count("create_file", "remove_file") == 0
    assert rig.kb.contents(rig.tasks) == {"big.bin": b"earlier version"}
    # Kept for the user, with the reason and the byte count; the name shows the server's.
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert "incomplete: a write failed" in recovered["reason"]
    assert recovered["size"] == 1000
    assert Path(recovered["file"]).read_bytes() == b"A" * 1000
    assert rig.pending_paths() == []
    assert await rig.read(rig.tasks, "big.bin") == b"earlier version"
    assert spool_data(rig) == []


async def test_a_failed_write_is_never_uploaded_by_the_next_mount(
    rig: Rig, disk_full: DiskFull
) -> None:
    """The writer never got to close() (a crash): the spool's description says what happened."""
    handle = await rig.vfs.create(await rig.dir(rig.tasks), "new.bin", os.O_WRONLY | os.O_CREAT)
    await _write_until_full(rig, disk_full, handle.fh, b"B" * 500)
    rig.crash()
    again = await rig.remount()
    assert await again.ls(again.tasks) == []  # never shown as if it were the file
    again.clock.advance(31)
    await again.vfs.retry_once()
    assert rig.kb.count("create_file") == 0
    [recovered] = again.vfs.status()["recovered"]  # type: ignore[misc]
    assert recovered["path"] == f"/projects/{rig.project}/tasks/{rig.task}/new.bin"
    assert "incomplete: a write failed" in recovered["reason"]
    assert Path(recovered["file"]).read_bytes() == b"B" * 500


async def test_a_spool_file_shorter_than_described_is_never_uploaded(rig: Rig) -> None:
    """Bytes lost in a crash (the data file was not on disk, its description was)."""
    from kbfs.client.errors import TransportError

    rig.kb.fail("create_file", TransportError("down", request_sent=False), times=None)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"0123456789" * 10))
    rig.crash()
    [data] = spool_data(rig)
    os.truncate(data, 40)
    rig.kb.clear_faults()
    again = await rig.remount()
    await again.vfs.retry_once()
    assert rig.kb.count("create_file") == 1  # only the first, failed, attempt
    assert rig.kb.contents(rig.tasks) == {}
    [recovered] = again.vfs.status()["recovered"]  # type: ignore[misc]
    assert "40 of 100 bytes" in recovered["reason"]


async def test_writing_the_file_anew_sets_the_incomplete_content_aside(
    rig: Rig, disk_full: DiskFull
) -> None:
    """A second ``cp`` once space was freed, before the retry loop ran: it is the file now."""
    d = await rig.dir(rig.tasks)
    handle = await rig.vfs.create(d, "copy.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        await _write_until_full(rig, disk_full, handle.fh, b"C" * 300)
        await raises_errno(errno.ENOSPC, rig.vfs.flush(handle.fh))
    finally:
        rig.vfs.release(handle.fh)
    # mv would upload it under the new name: refused.
    await raises_errno(errno.EIO, rig.vfs.rename(d, "copy.bin", d, "moved.bin", 0))
    await rig.save(rig.tasks, "copy.bin", b"the whole file")
    assert rig.kb.contents(rig.tasks) == {"copy.bin": b"the whole file"}
    [recovered] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert Path(recovered["file"]).read_bytes() == b"C" * 300
    assert rig.kb.count("create_file") == 1


# ---------------------------------------------------------------- content refused for good


async def _refused(rig: Rig, name: str, data: bytes) -> None:
    await raises_errno(errno.EINVAL, rig.save(rig.tasks, name, data))
    await rig.vfs.retry_once()


async def test_refused_content_stays_in_the_mount_as_a_local_only_file(rig: Rig) -> None:
    await _refused(rig, "fake.png", b"not a picture")
    assert await rig.ls(rig.tasks) == ["fake.png"]
    assert await rig.read(rig.tasks, "fake.png") == b"not a picture"
    state = (await rig.xattrs(rig.tasks, "fake.png"))["user.kbfs.state"]
    assert state.startswith(b"local-only: ") and b"image" in state
    [entry] = rig.vfs.status()["pending_uploads"]  # type: ignore[misc]
    assert entry["local_only"] and entry["refused"]
    [copy] = rig.vfs.status()["recovered"]  # type: ignore[misc]
    assert Path(copy["file"]).read_bytes() == b"not a picture"
    rig.clock.advance(31)
    await rig.vfs.retry_once()  # never retried, never copied twice
    assert rig.kb.count("create_file") == 0
    assert len(rig.vfs.status()["recovered"]) == 1  # type: ignore[arg-type]


async def test_renaming_a_refused_file_uploads_it(rig: Rig) -> None:
    await _refused(rig, "fake.png", b"not a picture")
    d = await rig.dir(rig.tasks)
    await rig.vfs.rename(d, "fake.png", d, "fake.txt", 0)
    assert rig.kb.contents(rig.tasks) == {"fake.txt": b"not a picture"}
    assert await rig.ls(rig.tasks) == ["fake.txt"]
    assert rig.pending_paths() == []
    assert (await rig.xattrs(rig.tasks, "fake.txt"))["user.kbfs.state"] == b"on the server"


async def test_removing_a_refused_file_drops_it_and_its_spool_entry(rig: Rig) -> None:
    await _refused(rig, "zero.txt", b"0")
    assert await rig.ls(rig.tasks) == ["zero.txt"]
    await rig.vfs.unlink(await rig.dir(rig.tasks), "zero.txt")
    assert await rig.ls(rig.tasks) == []
    assert rig.pending_paths() == []
    assert spool_data(rig) == []
    assert len(rig.vfs.status()["recovered"]) == 1  # type: ignore[arg-type]
    assert rig.kb.count("create_file", "remove_file") == 0


async def test_a_refused_file_is_local_only_again_after_a_remount(rig: Rig) -> None:
    await _refused(rig, "fake.png", b"not a picture")
    rig.crash()
    again = await rig.remount()
    assert await again.ls(again.tasks) == ["fake.png"]
    assert await again.read(again.tasks, "fake.png") == b"not a picture"
    state = (await again.xattrs(again.tasks, "fake.png"))["user.kbfs.state"]
    assert state.startswith(b"local-only: ")
    again.clock.advance(31)
    await again.vfs.retry_once()
    assert rig.kb.count("create_file") == 0
    assert len(again.vfs.status()["recovered"]) == 1  # type: ignore[arg-type]


async def test_a_lost_create_of_content_refused_since_is_resolved_and_the_journal_ends(
    rig: Rig,
) -> None:
    """An HTTP 500 may hide a create that happened: it is remembered (cleanup journal) and
    looked for. When the same content is then refused for good (500 three times), it stays
    local-only, never uploaded again, so nothing but the sweep resolves that entry: it must
    (found by the two-mount stress test: the journal stayed forever)."""
    from kbfs.client.errors import ServerError

    def error() -> BaseException:
        return ServerError("HTTP 500", status_code=500, method="create_file")

    rig.kb.fail("create_file", error, times=None)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "report.txt", b"the report"))
    for _ in range(3):
        rig.clock.advance(60)  # past the retry's backoff
        await rig.vfs.retry_once()
    assert rig.vfs.status()["pending_uploads"][0]["refused"]  # type: ignore[index]
    journal = rig.root / "spool" / "cleanup.journal"
    rig.kb.clear_faults()
    await rig.vfs.retry_once()
    assert not journal.exists()
    assert await rig.ls(rig.tasks) == ["report.txt"]  # still there, local-only
    assert rig.kb.names(rig.tasks) == []
