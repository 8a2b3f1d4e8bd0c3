"""Rename and move. Kanboard has no rename, so a move is an upload at the target followed by
the removal of the source (and of a replaced target), each only once the upload is confirmed.

Three cases, decided in ``_attempt``:

- a scratch name (vim's ``doc.txt`` -> ``doc.txt~``), empty content: the file simply moves in
  this mount; a server file it stood for stays on the server, hidden, until a new version of
  its name is uploaded or the scratch file is removed;
- a file still open for writing with unsaved bytes: it moves at once in the mount, and its
  writers' close uploads it under the new name (the ``.goutputstream-XXXXXX`` pattern; rclone
  does the same). Only with unsaved bytes: the kernel sends a release after close() returned,
  so a file saved and closed just before is often still counted as open for writing, and no
  close will come to upload it;
- anything else: the content is uploaded at the target through a staging node that is in no
  view; only once that is confirmed does the moved node take its place. A failure changes
  nothing the user can see (POSIX).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from kbfs.client.models import FileRecord
from kbfs.errors import Exists, InvalidArgument, IsADirectory, NoEntry, NotPermitted
from kbfs.namespace import moves
from kbfs.namespace.names import check_upload_name
from kbfs.namespace.nodes import Node, NodeType, id_text, same_file
from kbfs.namespace.tree import Namespace
from kbfs.remote.refresher import Refresher
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.spool import PendingFile, Spool
from kbfs.upload.uploader import Uploader, waited_for

log = logging.getLogger(__name__)

RENAME_EXCHANGE = 2  # linux/fs.h; pyfuse3 exposes them only as module attributes
RENAME_NOREPLACE = 1


class Mover:
    """rename(2) on Kanboard. See the module docstring."""

    def __init__(
        self,
        namespace: Namespace,
        refresher: Refresher,
        uploader: Uploader,
        spool: Spool,
        content: ContentCache,
        lookup: Callable[[int, str], Awaitable[Node]],
        check_writable: Callable[[Node], None],
    ) -> None:
        self.lookup = lookup  # the facade's lookup: listings refreshed as a user's lookup would
        self.check_writable = check_writable
        self.ns = namespace
        self.refresher = refresher
        self.uploader = uploader
        self.spool = spool
        self.content = content

    async def rename(
        self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("Kanboard cannot exchange two files atomically")
        while not await self._try(parent_old, name_old, parent_new, name_new, flags):
            pass  # an upload of the source ended meanwhile: look at both names again

    async def _try(
        self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> bool:
        """One try at ``rename``; False if the source changed under it and it must start over."""
        src_dir, dst_dir = self.ns.node(parent_old), self.ns.node(parent_new)
        node = await self.lookup(parent_old, name_old)
        log.debug("rename %s -> %s (inode %d, file %s)", name_old, name_new, node.ino,
                  id_text(node.record))  # fmt: skip
        if node.type is not NodeType.FILE:
            raise NotPermitted("projects and tasks cannot be renamed through kbfs")
        if not dst_dir.type.holds_files:
            raise NotPermitted("files live only in files/ and tasks/<id>/ directories")
        self.check_writable(src_dir)
        self.check_writable(dst_dir)
        check_upload_name(name_new)
        await self.refresher.files(dst_dir)
        target_ino = self.ns.view(dst_dir.container).get(name_new)
        target = self.ns.inodes.get(target_ino) if target_ino is not None else None
        if target is node:
            return True
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists()
            if target.type is not NodeType.FILE:
                raise IsADirectory()
        return await self._attempt(node, dst_dir, name_new, target)

    async def _attempt(self, node: Node, dst_dir: Node, name_new: str, target: Node | None) -> bool:
        if target is not None and await self.uploader.waited_for_upload(target):
            # The file about to be replaced is being uploaded (a write-back batch, the retry
            # pass): replaced now, that upload would still end as a file at that name.
            return False
        if await self.uploader.waited_for_upload(node):
            # So is the source (a close elsewhere, a write-back batch, the retry pass): moved
            # now, that upload would put it under the old name and remove what it replaces.
            return False
        scratch_name = self.ns.is_local_name(name_new)
        if not scratch_name:
            # A scratch copy of a server file gets a real name again: it supersedes the file.
            moves.supersede_hidden(self.ns, node)
        if (
            node.record is not None
            and scratch_name
            and (node.pending is None or not node.pending.dirty)
            and (target is None or target.record is None)
        ):
            # vim's backup rename ("doc.txt" -> "doc.txt~"): keep the server file where it is,
            # out of sight, and give the scratch name a local copy of its content.
            await self.uploader.open_for_change(node, truncate=False)
            self._move_in_mount(node, dst_dir, name_new, target)
            return True
        if node.writers and node.pending is not None and node.pending.dirty:
            moves.move_open_file(self.ns, node, dst_dir, name_new, target)
            if target is not None:
                self.uploader.settle(target)
            self.spool.describe(node.pending, dst_dir.container, name_new, node.record, node.stale)
            return True
        # Hold the source's lock while its content is uploaded at the target: an upload of
        # it starting meanwhile would put the content under the old name too.
        pending = node.pending
        if pending is None:
            await self._move_locked(node, dst_dir, name_new, target)
            return True
        async with pending.lock:
            await self._move_locked(node, dst_dir, name_new, target)
        return True

    def _move_in_mount(self, node: Node, dst_dir: Node, name: str, target: Node | None) -> None:
        moves.move_as_scratch(self.ns, node, dst_dir, name, target)
        if target is not None:
            self.uploader.settle(target)

    async def _move_locked(
        self, node: Node, dst_dir: Node, name_new: str, target: Node | None
    ) -> None:
        """Upload the content at the target first; only once that is confirmed do the
        source and a replaced target go."""
        if node.pending is not None:
            content = node.pending.path
        elif node.record is not None:
            content = await self.content.ensure(node.container, node.record)
        else:
            raise NoEntry("the file has no content any more (moved to the recovery folder?)")
        if _size_or_zero(content) == 0 or self.ns.is_local_name(name_new):
            # Nothing Kanboard could take (empty, or a scratch name): it simply moves here.
            self._move_in_mount(node, dst_dir, name_new, target)
            return
        source, src_container = node.record, node.container
        replaced = target.record if target is not None else None
        pending = self.spool.create(dst_dir.container, name_new, replaced, content)
        pending.touch()
        stage = moves.stage_move(self.ns, node, dst_dir, name_new, target, pending)
        try:
            await self.uploader.upload(stage)
        except BaseException:
            # The source still has the bytes; what a lost answer may have created at the
            # target is swept by the retry loop.
            abandoned = moves.abandon_stage(self.ns, stage)
            if abandoned is not None:
                self.spool.discard(abandoned)
            raise
        record = stage.record
        assert record is not None and record is not replaced
        source_gone = source is not None and not self.uploader.queue.is_queued(
            src_container, source
        )
        target_pending = target.pending if target is not None else None
        old, staged = moves.complete_move(
            self.ns, node, stage, dst_dir, target, source_gone=source_gone
        )
        if target is not None:
            self.uploader.settle(target)
        if old is not None:
            self.spool.discard(old)
        elif node.pending is not None:
            # Kept for the handles still open for writing: the server has these bytes at the
            # target now, so no later mount may take it for unsaved content of the old name.
            self.spool.release_data(node.pending)
        if staged is not None:  # not settled yet: its bytes are the new content
            self.content.adopt(record, self.spool.release_data(staged))
        if target is not None:
            await self._supersede_late_upload(target, target_pending, replaced, record)

    async def _supersede_late_upload(
        self,
        target: Node,
        target_pending: PendingFile | None,
        replaced: FileRecord | None,
        record: FileRecord,
    ) -> None:
        """The replaced file's own unsaved content may have been uploaded while the move's
        upload was under way (the retry pass, a write-back batch: the name's lock is free
        between the move's create and its end). The move replaces that version too: it goes,
        as the version the move was set to replace does. An upload of it still in flight
        ends first (the target is replaced now: no new one starts)."""
        await waited_for(target_pending)
        late = target.record
        if (
            late is None
            or late.id == record.id
            or (replaced is not None and same_file(late, replaced))
        ):
            return
        log.info(
            "%s: removing file %d, an upload of the file the move replaced",
            self.ns.path_of(target),
            late.id,
        )
        await self.uploader.supersede(target, [(target.container, late)])


def _size_or_zero(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
