"""Moves in the namespace: what a rename changes at which name, in its three shapes (see
``kbfs.ops.mover``). Functions over a ``Namespace`` built from its primitives (detach, place,
replace); part of the namespace package, so they may set the fields it owns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kbfs.namespace.nodes import Node, file_key
from kbfs.namespace.tree import Namespace

if TYPE_CHECKING:
    from kbfs.storage.spool import PendingFile


def supersede_hidden(ns: Namespace, node: Node) -> None:
    """A scratch copy of a server file gets a real name again: it supersedes the file."""
    if node.hides is None:
        return
    where, hidden = node.hides
    node.hides = None
    ns.directory(where).hidden.pop(hidden.id, None)
    node.stale.append((where, hidden))


def move_as_scratch(
    ns: Namespace, node: Node, dst_dir: Node, name: str, target: Node | None
) -> None:
    """Move ``node`` as content of this mount only (a scratch name, or nothing Kanboard
    could take). Its server file stays where it is, out of sight, until the scratch file
    is removed or a new version of that name is uploaded (vim's "doc.txt" -> "doc.txt~")."""
    if target is not None:
        ns.replace(target)
    source = node.record
    src_container = node.container
    if source is not None:
        ns.directory(src_container).hidden[source.id] = source
    ns.detach(node)
    if source is not None:
        node.hides = (src_container, source)
    node.record = None
    ns.inodes.rekey(node, ("moved", node.ino))
    ns.place(node, dst_dir, name)


def move_open_file(
    ns: Namespace, node: Node, dst_dir: Node, name: str, target: Node | None
) -> None:
    """Move a file still open for writing at once: its writers' close uploads it under
    the new name, and that upload removes what it supersedes (the source, the target)."""
    source = node.record
    src_container = node.container
    ns.detach(node)
    if source is not None:
        node.stale.append((src_container, source))
    node.record = None
    if target is not None:
        ns.detach(target)
        if target.record is not None:
            node.record = target.record  # replaced once the upload is confirmed
        node.stale += target.stale
        target.stale = []
        target.linked = False
        target.discarded = True
    ns.inodes.rekey(node, ("moved", node.ino))
    ns.place(node, dst_dir, name)


def stage_move(
    ns: Namespace, node: Node, dst_dir: Node, name: str, target: Node | None, pending: PendingFile
) -> Node:
    """A staging node for a move's upload: in no view; it carries what the move
    supersedes (the source, what the source and the target were already due to)."""
    stage = ns.content_node(dst_dir, name, pending)
    ns.inodes.rekey(stage, ("staging", stage.ino))  # never relinked by the retry pass
    stage.linked = False
    stage.record = target.record if target is not None else None
    if node.record is not None:
        stage.stale.append((node.container, node.record))
    if node.hides is not None:
        stage.stale.append(node.hides)
    stage.stale += node.stale
    if target is not None:
        stage.stale += target.stale
    return stage


def abandon_stage(ns: Namespace, stage: Node) -> PendingFile | None:
    """A move's upload failed: the staging node goes; its spool entry is handed over."""
    pending, stage.pending = stage.pending, None
    stage.discarded = True
    return pending


def complete_move(
    ns: Namespace, node: Node, stage: Node, dst_dir: Node, target: Node | None, *, source_gone: bool
) -> tuple[PendingFile | None, PendingFile | None]:
    """A move's upload is confirmed: the moved node (the inode the kernel now shows at
    the new name) takes the staging node's identity. Returns the source's spool entry
    (to discard) and the stage's (its bytes are the new content), for the caller.

    A source still open for writing (its content already saved: the kernel sends the
    release of a closed file after close() returned, so a rename right after a save finds
    its writer still counted) keeps its spool entry: its handles write into it, and it
    holds the very bytes now uploaded at the target, so it stays clean until they do."""
    record = stage.record
    assert record is not None
    source = node.record
    src_container = node.container
    node.hides = None
    ns.detach(node)
    if source is not None and source_gone:
        # Already removed by the upload: nothing left to hide (a reused id with the same
        # name, size and second would otherwise stay hidden).
        ns.undoom(src_container, source)
    if target is not None:
        ns.replace(target)
        target.stale = []
    old_pending = None
    if not node.writers:
        old_pending, node.pending = node.pending, None
    node.stale = []
    staged, stage.pending = stage.pending, None
    stage.discarded = True
    ns.inodes.rekey(stage, ("staged", stage.ino))
    node.record = record
    ns.inodes.rekey(node, file_key(record))
    ns.provisional.note(node, record)  # the listing that confirms it must find this node
    node.parent, node.project_id, node.task_id = (
        dst_dir.ino,
        dst_dir.project_id,
        dst_dir.task_id,
    )
    node.linked = True
    ns.rebuild(dst_dir.container)
    return old_pending, staged
