"""Histories the namespace machine (test_namespace_machine.py) finds only now and then, as
plain tests: a late listing must never bring back what this mount superseded or removed."""

from __future__ import annotations

from kbfs.client.models import Container, FileRecord
from kbfs.namespace.names import DEFAULT_LOCAL_NAMES
from kbfs.namespace.tree import Namespace

TASK = Container(1, 10)


def record(file_id: int, name: str = "doc.txt", date: int = 1_000) -> FileRecord:
    return FileRecord(
        kind=TASK.kind,
        id=file_id,
        name=name,
        size=1,
        date=date,
        is_image=False,
        path=f"p/{file_id}",
        etag=f"e{file_id}",
        project_id=None,
        task_id=TASK.task_id,
        user_id=1,
    )


def shown(ns: Namespace) -> dict[str, int]:
    """Visible name -> file id."""
    out = {}
    for name, ino in ns.view(TASK).items():
        node = ns.node(ino)
        assert node.record is not None
        out[name] = node.record.id
    return out


def saved_over(ns: Namespace, old: FileRecord, new: FileRecord) -> None:
    """A save of the file showing ``old``, confirmed as ``new``, its removal of ``old``
    about to run (what the uploader and its cleanup queue do)."""
    node = ns.node(ns.view(TASK)[old.name])
    ns.attach_upload(node, new, old)
    ns.doom(TASK, old)


def test_a_listing_answered_before_the_removal_completes_hides_the_old_version() -> None:
    ns = Namespace(DEFAULT_LOCAL_NAMES)
    old, new = record(1), record(2, date=1_001)
    ns.apply_listing(TASK, [old], ns.listing_asked(TASK))
    saved_over(ns, old, new)
    ns.apply_listing(TASK, [old, new], ns.listing_asked(TASK))  # asked after the save
    assert shown(ns) == {"doc.txt": 2}
    ns.forget_record(TASK, old)  # removed
    assert shown(ns) == {"doc.txt": 2}


def test_a_listing_asked_before_the_removal_and_answered_after_it_hides_the_old_version() -> None:
    ns = Namespace(DEFAULT_LOCAL_NAMES)
    old, new = record(1), record(2, date=1_001)
    ns.apply_listing(TASK, [old], ns.listing_asked(TASK))
    saved_over(ns, old, new)
    asked = ns.listing_asked(TASK)  # the server lists before the removal...
    ns.forget_record(TASK, old)  # ...which completes before the answer arrives
    ns.apply_listing(TASK, [old, new], asked)
    assert shown(ns) == {"doc.txt": 2}


def test_the_replay_drops_only_the_removed_version_not_a_file_that_reused_its_id() -> None:
    ns = Namespace(DEFAULT_LOCAL_NAMES)
    old = record(1)
    ns.apply_listing(TASK, [old], ns.listing_asked(TASK))
    node = ns.node(ns.view(TASK)["doc.txt"])
    asked = ns.listing_asked(TASK)
    ns.removed_on_server(TASK, old, gone=True)
    ns.unlinked(node, "doc.txt")
    reused = record(1, name="other.txt", date=1_005)  # another client's file, same id
    ns.apply_listing(TASK, [reused], asked)
    assert shown(ns) == {"other.txt": 1}


def test_a_listing_older_than_one_applied_is_dropped() -> None:
    """Found by the state machine: a listing asked before another client's upload, answered
    after a newer listing showed that file and after this mount began to edit it, took the
    file for deleted on the server; the edit would have been uploaded beside it as a new file."""
    ns = Namespace(DEFAULT_LOCAL_NAMES)
    older = ns.listing_asked(TASK)  # asked before the other client's upload...
    theirs = record(1)
    assert ns.apply_listing(TASK, [theirs], ns.listing_asked(TASK))
    node = ns.node(ns.view(TASK)["doc.txt"])
    ns.set_pending(node, object())  # type: ignore[arg-type]  # opened for writing
    assert not ns.apply_listing(TASK, [], older)  # ...answered last: dropped
    assert shown(ns) == {"doc.txt": 1}
    assert node.record == theirs  # its save replaces that file, not a new one beside it


def test_a_file_doomed_while_known_by_id_only_leaves_no_key_that_hides_a_reused_id() -> None:
    """A version superseded while its record was known by id only is doomed by id; once it
    is removed, whatever record of it the removal names, that key must go: ids are reused
    (kanboard-api §7), and the next file with that id would stay hidden."""
    ns = Namespace(DEFAULT_LOCAL_NAMES)
    real = record(1)
    provisional = FileRecord(
        kind=TASK.kind, id=1, name="doc.txt", size=1, date=1_000, is_image=False, path="",
        etag=None, project_id=None, task_id=TASK.task_id, user_id=0,
    )  # fmt: skip
    ns.doom(TASK, provisional)
    ns.apply_listing(TASK, [real], ns.listing_asked(TASK))
    assert shown(ns) == {}  # hidden while its removal is due
    ns.forget_record(TASK, real)  # removed, named by the record a listing brought
    reused = record(1, name="other.txt", date=1_050)
    ns.apply_listing(TASK, [reused], ns.listing_asked(TASK))
    assert shown(ns) == {"other.txt": 1}
