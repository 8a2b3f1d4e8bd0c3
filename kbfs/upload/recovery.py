"""Bytes that did not reach the server yet: an earlier mount's leftovers, background retries,
and the recovery folder for bytes the server will never take.

A crash or an unmount with failed uploads leaves spool entries behind; the next mount of that
server shows them in their directories again and uploads them (``start``). Failed uploads
are retried with backoff (``retry_once``, run by the core's background loop). Content the
server refuses for good (``PendingFile.permanent``) stays in the mount as a local-only file,
with a copy in the recovery folder (``keep_local``). Content that must never be uploaded
(a write into it failed, or a newer version reached the server meanwhile) goes to the
recovery folder, out of the mount, never deleted (``recover``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kbfs.client.models import FileRecord
from kbfs.errors import FsError
from kbfs.namespace import refusals
from kbfs.namespace.nodes import Node, is_staging
from kbfs.namespace.tree import Namespace
from kbfs.storage.spool import PendingFile, Spool, superseded
from kbfs.upload.collisions import Collisions
from kbfs.upload.uploader import Uploader

log = logging.getLogger(__name__)


class Recovery:
    """Takes over leftovers, retries failed uploads, moves refused bytes aside."""

    def __init__(
        self,
        namespace: Namespace,
        spool: Spool,
        uploader: Uploader,
        endpoint: str,
        clock: Callable[[], float],
        interval: float = 2.0,
    ) -> None:
        self.ns = namespace
        self.spool = spool
        self.uploader = uploader
        self.endpoint = endpoint
        self.clock = clock
        self.interval = interval
        self.collisions = Collisions(uploader)
        # Files another component is uploading right now or has queued (write-back): the
        # retry pass leaves them to it.
        self.deferred: Callable[[Node], bool] = lambda node: False

    def start(self) -> None:
        """Take over what an earlier mount left: its cleanup journal, then its unsaved
        files (the retry loop, ``Vfs.run``, uploads them)."""
        self.uploader.queue.load()
        self.load_spool()

    def load_spool(self) -> int:
        """Take over the pending uploads an earlier mount of this server left behind.

        They show in their directories at once (with their unsaved content) and the retry loop
        uploads them. Of several unsaved versions of one file, the newest is kept for upload
        and the older ones go to the recovery folder (never deleted).
        """
        leftovers = sorted(self.spool.load_leftovers(), key=lambda e: e[0].created)
        adopted = 0
        for pending, meta in leftovers:
            if pending.incomplete is not None:
                self._recover_leftover(pending, meta)
                continue
            if pending.size_or_zero() == 0:
                # Empty content lives in one mount only (Kanboard cannot store it): like an
                # unmount, a crash ends it. It carries no bytes to lose.
                self.spool.discard(pending)
                continue
            self._adopt(pending, meta)
            adopted += 1
        for orphan in self.spool.leftovers():
            if not orphan.with_suffix(".json").exists():
                orphan.unlink(missing_ok=True)  # uploaded, or never described: nothing to keep
        return adopted

    def _recover_leftover(self, pending: PendingFile, meta: dict[str, Any]) -> None:
        """An earlier mount's content that must never be uploaded: straight to the recovery
        folder, never shown (the name shows the server's version, left untouched)."""
        reason = f"{pending.incomplete}; {pending.size_or_zero()} bytes kept"
        name = str(meta["name"])
        task_id = meta.get("task_id")
        project_id = int(meta["project_id"])
        where = f"/projects/{project_id}/" + ("files" if task_id is None else f"tasks/{task_id}")
        fields = {k: meta.get(k) for k in ("server", "project_id", "task_id", "name")}
        fields["path"] = f"{where}/{name}"
        try:
            target = self.spool.recover(pending, name, reason, fields)
        except OSError as exc:
            log.error("could not move the incomplete %s out of the spool: %s", pending.path, exc)
            return
        log.error(
            "found incomplete content of %s from an earlier mount (%s); moved to %s",
            fields["path"],
            reason,
            target,
        )

    def _adopt(self, pending: PendingFile, meta: dict[str, Any]) -> None:
        project_id = int(meta["project_id"])
        task_id = None if meta.get("task_id") is None else int(meta["task_id"])
        if task_id is None:
            dir_node = self.ns.files_dir_node(project_id)
        else:
            dir_node = self.ns.task_node(project_id, task_id)
        container = dir_node.container
        name = str(meta["name"])
        older = self.ns.inodes.get(self.ns.directory(container).local.get(name, 0))
        if older is not None and older.pending is not None:
            self.recover(older, "a newer unsaved version of the same file was found")
        replaces = None
        if meta.get("replaces_file_id") is not None:
            replaces = FileRecord(
                kind=container.kind,
                id=int(meta["replaces_file_id"]),
                name=str(meta.get("replaces_name") or name),
                size=int(meta.get("replaces_size") or 0),
                date=int(meta.get("replaces_date") or 0),
                is_image=False,
                path=str(meta.get("replaces_path") or ""),
                etag=meta.get("replaces_etag"),
                project_id=project_id if task_id is None else None,
                task_id=task_id,
                user_id=0,
            )
            self.uploader.queue.mark_unverified(replaces)
        # Renamed away while open for writing: hidden under their old names until this
        # upload is confirmed and removes them (checked to be the same file first).
        stale = superseded(meta)
        for _where, record in stale:
            self.uploader.queue.mark_unverified(record)
        lost = [(name, *e) for e in pending.attempts]
        node = self.ns.adopt_leftover(dir_node, name, pending, replaces, stale, lost)
        if pending.refused is not None:
            log.warning(
                "%s is kept in this mount only (%s)", self.ns.path_of(node), pending.refused
            )
            return
        log.warning(
            "found an unsaved file from an earlier mount: %s (%d bytes); uploading it",
            self.ns.path_of(node),
            pending.size_or_zero(),
        )

    async def retry_once(self) -> None:
        now = self.clock()
        await self.collisions.check_due()
        await self.uploader.lost_creates.sweep(self.uploader.name_lock)
        await self._retry_removals()
        for node in self.ns.pending_files():
            pending = node.pending
            if pending is None or node.discarded:
                continue
            if node.writers or self.deferred(node):
                continue  # its writer's close() uploads it, or the write-back queue does
            if is_staging(node) or pending.lock.locked():
                continue  # a move's upload, or an upload under way: not this pass's
            if pending.refused is not None or self.ns.is_scratch(node):
                continue  # local-only until the user renames or removes it
            if pending.incomplete is not None:
                self.recover(node, f"{pending.incomplete}; {pending.size_or_zero()} bytes kept")
                continue
            if pending.size_or_zero() == 0:
                continue
            if not pending.permanent and pending.next_retry > now:
                continue
            if not pending.permanent:
                if not node.linked and self.ns.name_taken(node):
                    # It lost its entry, and another file shows under its name now: sent,
                    # it would stand beside or over that file. Kept for the user instead.
                    self.recover(node, "another file took its name before it was uploaded")
                    continue
                if self.ns.relink(node):
                    log.info("%s: unsaved content shown again", self.ns.path_of(node))
                # upload() logs a failure and schedules the next attempt itself.
                with contextlib.suppress(FsError):
                    await self.uploader.upload(node)
            pending = node.pending
            if pending is None or not pending.permanent:
                continue
            reason = pending.last_error or "refused by the server"
            if pending.conflict or pending.incomplete is not None:
                self.recover(node, reason)
            else:
                self.keep_local(node, reason)

    async def _retry_removals(self) -> None:
        """Each entry leaves the queue (and the journal) only once its file is gone: a crash
        in the middle of this loop must not forget the ones not tried yet."""
        queue = self.uploader.queue
        done = 0
        for entry in list(queue.queued):
            if await self.uploader.remove_replaced(*entry, None, verify=True):
                queue.done(entry)
                done += 1
        if done:
            queue.save()  # not every 2 s while a removal keeps failing: nothing changed

    def _meta(self, node: Node) -> dict[str, Any]:
        container = node.container
        return {
            "server": self.endpoint,
            "project_id": container.project_id,
            "task_id": container.task_id,
            "name": node.name,
            "path": self.ns.path_of(node),
        }

    def keep_local(self, node: Node, reason: str) -> None:
        """The server refuses these bytes for good: they stay at their name as a local-only
        file (see kbfs.namespace.refusals), never retried, with a copy in the recovery
        folder that outlives the mount. Written into the spool's description, so a later
        mount shows them again the same way."""
        pending = node.pending
        if pending is None:
            return
        if pending.recovered_copy is None:
            try:
                copy = self.spool.keep_copy(pending, node.name, reason, self._meta(node))
            except OSError as exc:
                log.error(
                    "could not copy the refused %s to the recovery folder: %s; trying again later",
                    pending.path,
                    exc,
                )
                return
            pending.recovered_copy = str(copy)
        pending.refused = reason
        pending.permanent = False
        try:
            self.spool.redescribe(pending)
        except OSError as exc:
            log.warning("could not record the refusal of %s: %s", pending.path, exc)
        refusals.keep_refused(self.ns, node)
        log.error(
            "%s cannot be stored on the server (%s); it stays in this mount only (a copy is in"
            " %s); rename or remove it",
            self.ns.path_of(node),
            reason,
            pending.recovered_copy,
        )

    def recover(self, node: Node, reason: str) -> None:
        """Move bytes that must never be uploaded to the recovery folder, out of the mount.
        On a full disk this fails (logged) and the next pass tries again."""
        pending = node.pending
        if pending is None:
            return
        try:
            target = self.spool.recover(pending, node.name, reason, self._meta(node))
        except OSError as exc:
            log.error(
                "could not move %s to the recovery folder: %s; trying again later",
                pending.path,
                exc,
            )
            return
        log.error(
            "%s cannot be stored on the server (%s); its bytes were moved to %s",
            self.ns.path_of(node),
            reason,
            target,
        )
        self.ns.recovered(node)
