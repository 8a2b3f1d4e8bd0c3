"""Rename and move: Kanboard has no rename, so a move is an upload at the target followed by
the removal of the source, each only once the upload is confirmed. Part of ``Vfs``.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from kbfs.errors import (
    Exists,
    FsError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoEntry,
    NotPermitted,
)
from kbfs.inodes import Node, NodeType, doom_key, file_key, id_text
from kbfs.listings import ContainerDir
from kbfs.names import upload_name_error
from kbfs.saving import _size_or_zero_path

if TYPE_CHECKING:
    from kbfs.vfs import Vfs

log = logging.getLogger(__name__)

RENAME_EXCHANGE = 2  # linux/fs.h; pyfuse3 exposes them only as module attributes
RENAME_NOREPLACE = 1


class Renaming:
    """Rename methods of ``Vfs``."""

    async def rename(
        self: Vfs, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> None:
        """Kanboard has no rename: upload under the new name at the target, then remove the
        source (and a replaced target), each only once the upload is confirmed.

        A file still open for writing is moved at once in the mount; its upload happens under
        the new name when the writers close, and the source is removed after that (the
        ``.goutputstream-XXXXXX`` pattern). A file that exists only here just moves.
        """
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("Kanboard cannot exchange two files atomically")
        while not await self._rename_attempt(parent_old, name_old, parent_new, name_new, flags):
            pass  # an upload of the source ended meanwhile: look at both names again

    async def _rename_attempt(
        self: Vfs, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> bool:
        """One try at ``rename``; False if the source changed under it and it must start over."""
        src_dir, dst_dir = self.node(parent_old), self.node(parent_new)
        node = await self.lookup(parent_old, name_old)
        log.debug(
            "rename %s -> %s (inode %d, file %s)",
            name_old,
            name_new,
            node.ino,
            id_text(node.record),
        )
        if node.type is not NodeType.FILE:
            raise NotPermitted("projects and tasks cannot be renamed through kbfs")
        if not dst_dir.type.holds_files:
            raise NotPermitted("files live only in files/ and tasks/<id>/ directories")
        self._check_writable(src_dir)
        self._check_writable(dst_dir)
        problem = upload_name_error(name_new)
        if problem is not None:
            raise NameTooLong(problem) if "255" in problem else FsError(problem, errno.EILSEQ)
        dst_state = await self._refresh_dir(dst_dir)
        target_ino = self._view(dst_state).get(name_new)
        target = self.inodes.get(target_ino) if target_ino is not None else None
        if target is node:
            return True
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists()
            if target.type is not NodeType.FILE:
                raise IsADirectory()
        src_state = self._dir_state(src_dir)
        src_container, source_record = src_dir.container, node.record
        writers = any(h.node is node and h.writable for h in self._handles.values())
        if node.hides is not None and not self.is_local_name(name_new):
            # A scratch copy of a server file gets a real name again: it supersedes the file.
            where, hidden = node.hides
            node.hides = None
            self._dirs.get(where, ContainerDir()).hidden.pop(hidden.id, None)
            node.stale.append((where, hidden))
        if (
            source_record is not None
            and self.is_local_name(name_new)
            and (node.pending is None or not node.pending.dirty)
            and (target is None or target.record is None)
        ):
            # vim's backup rename ("doc.txt" -> "doc.txt~"): keep the server file where it is,
            # out of sight, and give the scratch name a local copy of its content.
            await self._make_pending(node, truncate=False)
            assert node.pending is not None
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                self._drop_local(target)
            src_state.hidden[source_record.id] = source_record
            self._detach(node, src_dir, src_state)
            node.hides = (src_container, source_record)
            node.record = None
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            return True
        if writers:
            # Still open for writing: move it now; its writers' close uploads it under the
            # new name, and that upload removes what it supersedes (rclone does the same).
            assert node.pending is not None
            self._detach(node, src_dir, src_state)
            if source_record is not None:
                node.stale.append((src_container, source_record))
            node.record = None
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                if target.record is not None:
                    node.record = target.record  # replaced once the upload is confirmed
                node.stale += target.stale
                target.stale = []
                self._drop_local(target)
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            self.spool.describe(node.pending, dst_dir.container, name_new, node.record, node.stale)
            return True
        # An upload of the source running meanwhile (a close elsewhere, the retry loop) would
        # put the content under the old name too, and a write would be lost: hold its lock.
        # If one is running now, wait for it and start over: it changes what both names show.
        if await self._waited_for_upload(node):
            return False
        pending = node.pending
        if pending is None:
            await self._rename_locked(node, src_dir, dst_dir, name_new, target)
            return True
        async with pending.lock:
            await self._rename_locked(node, src_dir, dst_dir, name_new, target)
        return True

    async def _rename_locked(
        self: Vfs, node: Node, src_dir: Node, dst_dir: Node, name_new: str, target: Node | None
    ) -> None:
        """Upload the content at the target first, through a staging node that is in no
        view; only once that is confirmed does the moved node take its place and the source
        (and a replaced target) go. A failure changes nothing the user can see (POSIX)."""
        src_container, dst_container = src_dir.container, dst_dir.container
        src_state, dst_state = self._dir_state(src_dir), self._dir_state(dst_dir)
        source_record = node.record
        replaced = target.record if target is not None else None
        if node.pending is not None:
            content = node.pending.path
        elif source_record is not None:
            content = await self.content.ensure(src_container, source_record)
        else:
            raise NoEntry("the file has no content any more (moved to the recovery folder?)")
        if _size_or_zero_path(content) == 0 or self.is_local_name(name_new):
            # Nothing Kanboard could take (empty, or a scratch name): it simply moves here.
            self._detach(node, src_dir, src_state)
            if source_record is not None:
                src_state.hidden[source_record.id] = source_record
                node.hides = (src_container, source_record)
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                self._drop_local(target)
            node.record = None
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            return
        stage = self.inodes.new_local(
            name=name_new,
            parent=dst_dir.ino,
            project_id=dst_dir.project_id,
            task_id=dst_dir.task_id,
        )
        stage.linked = False
        stage.record = replaced
        stage.pending = self.spool.create(dst_container, name_new, replaced, content)
        stage.pending.touch()
        if source_record is not None:
            stage.stale.append((src_container, source_record))
        if node.hides is not None:
            stage.stale.append(node.hides)
        # What the source and the target were already due to supersede goes with them.
        stage.stale += node.stale
        if target is not None:
            stage.stale += target.stale
        try:
            await self.upload(stage)
        except BaseException:
            await self._abandon_stage(stage)
            raise
        record = stage.record
        assert record is not None and record is not replaced
        # Confirmed: the moved node (the inode the kernel now shows at the new name) takes
        # the staging node's identity.
        node.hides = None
        self._detach(node, src_dir, src_state)
        if source_record is not None and (src_container, source_record) not in (
            self._stale_removals
        ):
            # Already removed by the upload: nothing left to hide (a reused id with the same
            # name, size and second would otherwise stay hidden).
            src_state.doomed.discard(doom_key(source_record))
        if target is not None:
            self._detach(target, dst_dir, dst_state)
            self._drop_local(target)
        if node.pending is not None:
            self.spool.discard(node.pending)
            node.pending = None
        node.stale = []
        if target is not None:
            target.stale = []
        if stage.pending is not None:  # not settled yet: its bytes are the new content
            self.content.adopt(record, self.spool.release_data(stage.pending))
            stage.pending = None
        stage.discarded = True
        self.inodes.rekey(stage, ("staged", stage.ino))
        node.record = record
        self.inodes.rekey(node, file_key(record))
        node.parent, node.project_id, node.task_id = (
            dst_dir.ino,
            dst_dir.project_id,
            dst_dir.task_id,
        )
        node.linked = True
        self._apply_records(dst_dir, dst_state)

    async def _abandon_stage(self: Vfs, stage: Node) -> None:
        """A rename's upload failed: drop the staged copy (the source still has the bytes).
        What a lost answer may have created at the target is swept by the retry loop."""
        pending = stage.pending
        stage.discarded = True
        stage.pending = None
        if pending is not None:
            self.spool.discard(pending)

    def _detach(self: Vfs, node: Node, dir_node: Node, state: ContainerDir) -> None:
        """Take ``node`` out of a directory's view (server records and local names)."""
        node.linked = False
        if node.record is not None:
            state.note_remove(node.record.id)
            state.doomed.add(doom_key(node.record))  # until its removal is confirmed
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        self._apply_records(dir_node, state)
        node.linked = False

    def _place(self: Vfs, node: Node, dir_node: Node, state: ContainerDir, name: str) -> None:
        node.parent = dir_node.ino
        node.project_id = dir_node.project_id
        node.task_id = dir_node.task_id
        node.name = name
        node.linked = True
        state.local[name] = node.ino

    def _drop_local(self: Vfs, node: Node) -> None:
        """A node replaced by a rename: its local content goes once nobody has it open."""
        node.linked = False
        node.discarded = True
        if node.open_handles == 0:
            self._settle(node)
