"""What a spool description keeps across a crash: the server files an upload supersedes."""

from __future__ import annotations

import json
from pathlib import Path

from kbfs.client.models import Container, FileRecord, Kind
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
