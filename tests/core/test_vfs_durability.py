"""What survives a crash (SEMANTICS.md "Durability"): a second Vfs on the same spool is the
next mount; the first one is stopped as a kill -9 would stop it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from kbfs.client.errors import TransportError

try:
    from conftest import Rig, raises_errno
except ImportError:  # pragma: no cover
    from tests.core.conftest import Rig, raises_errno


def down() -> TransportError:
    return TransportError("connection refused", request_sent=False)


async def test_unsaved_bytes_are_uploaded_by_the_next_mount(rig: Rig) -> None:
    rig.kb.fail("create_file", down(), times=None)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "report.txt", b"precious"))
    rig.crash()
    rig.kb.clear_faults()
    again = await rig.remount()
    # Shown at once, with the unsaved content, before any upload.
    assert again.pending_paths() == [f"/projects/{rig.project}/tasks/{rig.task}/report.txt"]
    assert await again.ls(again.tasks) == ["report.txt"]
    assert await again.read(again.tasks, "report.txt") == b"precious"
    await again.vfs.retry_once()
    assert rig.kb.contents(rig.tasks) == {"report.txt": b"precious"}
    assert again.pending_paths() == []


async def test_a_queued_removal_is_finished_by_the_next_mount(rig: Rig) -> None:
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    rig.kb.fail("remove_file", down(), times=None)
    await rig.save(rig.tasks, "doc.txt", b"version 2")
    rig.crash()
    rig.kb.clear_faults()
    assert len(rig.kb.records(rig.tasks)) == 2
    again = await rig.remount()
    assert await again.ls(again.tasks) == ["doc.txt"]  # hidden until removed
    await again.vfs.retry_once()
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"version 2"}
    assert rig.kb.mutations()[-1] == ("remove", old)


async def test_a_lost_create_before_a_crash_makes_no_duplicate(rig: Rig) -> None:
    rig.kb.lose_answer("create_file")
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"arrived anyway"))
    rig.crash()
    again = await rig.remount()
    await again.vfs.retry_once()
    assert rig.kb.count("create_file") == 1
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"arrived anyway"}
    assert again.pending_paths() == []
    assert await again.ls(again.tasks) == ["doc.txt"]


async def _edit_then_crash_while_another_client_replaces(rig: Rig, *, reuse_id: bool) -> Rig:
    """This mount's save of doc.txt fails and it crashes; another client then replaces
    doc.txt (removing the old version first gives the new one the old id back, §7)."""
    old = rig.kb.add_file(rig.tasks, "doc.txt", b"version 1")
    await rig.ls(rig.tasks)
    rig.kb.fail("create_file", down(), times=None)
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"my unsaved edit"))
    rig.crash()
    rig.kb.clear_faults()
    rig.kb.dates.advance(5)
    if reuse_id:
        await rig.kb.remove_file(rig.tasks, old)
        assert rig.kb.add_file(rig.tasks, "doc.txt", b"their newer version") == old
    else:
        rig.kb.add_file(rig.tasks, "doc.txt", b"their newer version")
        await rig.kb.remove_file(rig.tasks, old)
    again = await rig.remount()
    await again.vfs.retry_once()
    return again


async def test_content_replaced_on_the_server_meanwhile_goes_to_recovery(rig: Rig) -> None:
    again = await _edit_then_crash_while_another_client_replaces(rig, reuse_id=False)
    assert rig.kb.contents(rig.tasks) == {"doc.txt": b"their newer version"}
    [recovered] = again.vfs.status()["recovered"]  # type: ignore[misc]
    assert Path(recovered["file"]).read_bytes() == b"my unsaved edit"
    assert again.pending_paths() == []


async def test_content_replaced_under_a_reused_id_goes_to_recovery(rig: Rig) -> None:
    again = await _edit_then_crash_while_another_client_replaces(rig, reuse_id=True)
    assert rig.kb.names(rig.tasks) == ["doc.txt"]
    assert len(again.vfs.status()["recovered"]) == 1  # type: ignore[arg-type]


async def test_an_unexpected_error_in_the_background_pass_is_logged_not_fatal(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing the background loop meets may end the mount: it logs and tries again."""
    rig.kb.lose_answer("create_file")
    await raises_errno(errno.EIO, rig.save(rig.tasks, "doc.txt", b"draft"))
    await rig.vfs.unlink(await rig.dir(rig.tasks), "doc.txt")  # the sweep resolves its copy
    rig.kb.fail("list_files", RuntimeError("a bug or a reply nobody expected"))
    await rig.vfs.background_pass()
    assert "background pass failed" in caplog.text
    assert len(rig.kb.records(rig.tasks)) == 1  # the lost copy, still there
    await rig.vfs.background_pass()
    await rig.vfs.background_pass()  # the sweep queued the copy; the queue removes it
    assert rig.kb.records(rig.tasks) == []
