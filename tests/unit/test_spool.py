"""What a spool description keeps across a crash: the server files an upload supersedes, and
whether its content is incomplete (a write failed, bytes lost)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from kbfs.client.models import Container, FileRecord, Kind
from kbfs.storage import spool as spool_module
from kbfs.storage.spool import Spool, superseded

TASK = Container(project_id=1, task_id=2)
OTHER = Container(project_id=1, task_id=3)


def record(container: Container, file_id: int, name: str) -> FileRecord:
    return FileRecord(
        kind=Kind.TASK,
        id=file_id,
        name=name,
        size=10,
        date=1795386716,
        is_image=False,
        path=f"tasks/{container.task_id}/abc{file_id}",
        etag=f"e{file_id}",
        project_id=None,
        task_id=container.task_id,
        user_id=0,
    )


def test_supersedes_survive_a_reload(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    pending = spool.create(TASK, "final.txt", None)
    pending.path.write_bytes(b"final text\n")
    source = record(OTHER, 7, "draft.txt")
    spool.describe(pending, TASK, "final.txt", None, [(OTHER, source)])
    [(_, meta)] = Spool(tmp_path / "spool", "http://kb/jsonrpc.php").load_leftovers()
    [(where, again)] = superseded(meta)
    assert where == OTHER
    assert (again.id, again.name, again.etag, again.path) == (7, "draft.txt", "e7", source.path)
    assert (again.size, again.date, again.task_id) == (source.size, source.date, 3)


def test_unreadable_supersedes_entries_are_skipped_not_the_upload(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    pending = spool.create(TASK, "final.txt", None)
    pending.path.write_bytes(b"bytes to upload\n")
    spool.describe(pending, TASK, "final.txt", None, [(OTHER, record(OTHER, 7, "draft.txt"))])
    meta = json.loads(pending.meta_path.read_text())
    meta["supersedes"] += [{"project_id": 1}, "junk", None]
    pending.meta_path.write_text(json.dumps(meta))
    [(_, loaded)] = spool.load_leftovers()  # the entry itself is still taken over
    assert [r.id for _, r in superseded(loaded)] == [7]
    assert superseded({"supersedes": 5}) == superseded({}) == []


def reload(tmp_path: Path) -> list[str | None]:
    """What the next mount reads of each leftover: why it is incomplete, if it is."""
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    return [pending.incomplete for pending, _ in spool.load_leftovers()]


def test_a_data_file_shorter_than_its_description_is_incomplete(tmp_path: Path) -> None:
    """Bytes lost in a crash: never taken for the file."""
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    pending = spool.create(TASK, "doc.txt", None)
    pending.path.write_bytes(b"x" * 100)
    spool.describe(pending, TASK, "doc.txt", None)
    assert reload(tmp_path) == [None]
    pending.path.write_bytes(b"x" * 60)  # as a power loss might leave it
    assert reload(tmp_path) == ["incomplete: 60 of 100 bytes survived a crash"]


def test_a_shrink_through_the_spool_is_not_taken_for_lost_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    pending = spool.create(TASK, "doc.txt", None)
    pending.path.write_bytes(b"x" * 100)
    spool.describe(pending, TASK, "doc.txt", None)
    spool.truncate(pending, 10)
    assert reload(tmp_path) == [None]


def test_an_incomplete_mark_survives_a_reload_even_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    first = spool.create(TASK, "a.bin", None)
    spool.mark_incomplete(first, "incomplete: a write failed (No space left on device)", 28)
    second = spool.create(TASK, "b.bin", None)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_json", full)
    spool.mark_incomplete(second, "incomplete: a write failed", 28)
    assert second.marker_path.exists()  # an empty file: it needs no data block
    monkeypatch.undo()
    assert sorted(reload(tmp_path), key=str) == [
        "incomplete: a write failed",
        "incomplete: a write failed (No space left on device)",
    ]
    spool.discard(second)
    assert not second.marker_path.exists()


def test_a_description_that_cannot_be_written_leaves_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool", "http://kb/jsonrpc.php")
    pending = spool.create(TASK, "doc.txt", None)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.json, "dump", full)
    with pytest.raises(OSError):
        spool.describe(pending, TASK, "doc.txt", None)
    left = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert left == sorted([pending.meta_path.name, pending.path.name])
