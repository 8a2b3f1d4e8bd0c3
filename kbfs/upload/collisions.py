"""After an upload: did another client's upload of the same name, in the same second, overwrite it?

Kanboard names a stored file ``sha1(name . time())``: two uploads of one name to one task (or
project) in the same server second get one storage path, and the later one's bytes are what
both rows hold (kanboard-api §7). Within one mount the release guard keeps uploads of a name
in separate seconds; two mounts (two machines) do not know of each other. So once the server's
clock is past a confirmed upload's second (no later upload can get that path any more), its
container is listed once: if another row shares the path, the stored bytes are downloaded and
compared with the held copy of ours (kbfs.storage.held). If ours were overwritten, they are
uploaded again, in a later second, through the normal upload path, which then removes only our
own colliding row (Kanboard keeps the shared bytes while another row uses them; on 1.2.27 and
older removing it would delete them, so the row stays and the log says so). Cached content of
every row at that path is dropped: it may be bytes the server no longer holds for that row.

The result, after concurrent saves from two mounts: every save whose ``close()`` returned 0 is
on the server with its bytes; the one that lost the race shows as a ``name (#id)`` duplicate.

The check runs in the background loop (``Recovery.retry_once``), after ``close()`` returned:
saves are not slowed. Its listing is applied like any other, so it is also what confirms, a
few seconds after ``close()``, the uploads known by id only (kbfs.namespace.provisional).
Until the check has passed, the held copy keeps the bytes, across a crash too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter

import trio

from kbfs.client.errors import KanboardError, NotFound
from kbfs.client.models import Container, FileRecord
from kbfs.errors import FsError
from kbfs.namespace.nodes import Node, file_key, is_provisional, same_file
from kbfs.storage.held import Held
from kbfs.storage.spool import digest
from kbfs.upload.uploader import Uploader

log = logging.getLogger(__name__)


class Collisions:
    """Checks held uploads for a same-second overwrite by another client, and repairs them.

    State it owns: counters only (the held copies are ``uploader.held``'s).
    """

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader
        self.ns = uploader.ns
        self.client = uploader.client
        self.held = uploader.held
        self.checked = 0  # uploads checked
        self.overwritten = 0  # of them, overwritten by another client and uploaded again

    def due(self) -> list[Held]:
        """Held uploads whose second the server's clock has passed, with a second to spare
        (a request that took its path in that second may still be writing its row)."""
        clock = self.client.server_clock
        return [h for h in self.held.entries() if clock.passed(h.record.date + _margin(h))]

    async def check_due(self) -> None:
        """Check every due upload: one listing per directory for all of them (a ``cp -r`` of
        many files costs one listing per pass, not one per file); only an upload another row
        shares its path with is looked at closer. One that cannot be checked now waits for the
        next pass."""
        by_container: dict[Container, list[Held]] = {}
        for held in self.due():
            by_container.setdefault(held.container, []).append(held)
        for container, entries in by_container.items():
            ticket = self.ns.listing_asked(container)
            try:
                listing = await self.client.list_files(container)
            except NotFound:
                listing = []  # the task (or project) is gone, and its files with it
            except KanboardError as exc:
                log.info("the collision checks in %s are postponed: %s", container, exc)
                continue
            else:
                # A listing like any other: it also brings the full records of the uploads
                # known by id only (kbfs.namespace.provisional), seconds after close().
                self.uploader.refresher.take(container, listing, ticket)
            by_id = {r.id: r for r in listing}
            paths = Counter(r.path for r in listing if r.path)
            for held in entries:
                ours = by_id.get(held.record.id)
                if ours is None or not _is(ours, held.record) or paths[ours.path] < 2:
                    self.checked += 1
                    self.held.release(held)  # gone (replaced, removed) or alone at its path
                    continue
                try:
                    await self.check(held)
                except (KanboardError, OSError) as exc:
                    log.info(
                        "the collision check of %s file %d is postponed: %s",
                        held.record.kind.value,
                        held.record.id,
                        exc,
                    )

    async def check(self, held: Held) -> None:
        """List the container again, under the name's lock; repair the upload if another row
        overwrote its bytes."""
        record = held.record
        node: Node | None = None
        # Under the name's lock: no upload of this name from this mount runs meanwhile, so
        # the listing and what the namespace shows agree.
        async with self.uploader.name_lock(held.container, record.name):
            listing = await self.client.list_files(held.container)
            ours = next((r for r in listing if _is(r, record)), None)
            sharing = [] if ours is None else [r for r in listing if _shares(r, ours)]
            if ours is None or not sharing:
                self.checked += 1
                self.held.release(held)  # gone (replaced, removed) or alone at its path
                return
            for other in sharing:
                self.uploader.content.forget(other)  # may hold our bytes now
            if await self._survived(held, ours):
                log.info(
                    "%s file %d (%r) shares its stored bytes with file %s (same name, same"
                    " second, another client): they are this mount's",
                    ours.kind.value,
                    ours.id,
                    ours.name,
                    ", ".join(str(r.id) for r in sharing),
                )
                self.checked += 1
                self.held.release(held)
                return
            self.uploader.content.forget(ours)
            self.overwritten += 1
            if not self.client.rules.keeps_shared_bytes:
                # Removing our row would delete the other's bytes: it stays (and a log says so).
                self.uploader.guard.note_shared(held.container, ours, sharing[0])
            if not await trio.to_thread.run_sync(held.intact):
                # Written again locally since (a writer that fsynced and wrote on): that later
                # save replaces it; these bytes are not here any more to send.
                log.error(
                    "%s file %d (%r) was overwritten on the server by file %d, and its local"
                    " copy has changed since: it cannot be uploaded again",
                    ours.kind.value,
                    ours.id,
                    ours.name,
                    sharing[0].id,
                )
                self.held.release(held)
                return
            log.warning(
                "%s file %d (%r) was overwritten on the server by file %d (another client's"
                " upload in the same second); uploading its content again",
                ours.kind.value,
                ours.id,
                ours.name,
                sharing[0].id,
            )
            node = self._restore(held, ours)
            self.checked += 1
            self.held.release(held)  # the bytes are in the spool now (or superseded)
        if node is not None:
            with contextlib.suppress(FsError):  # kept in the spool and retried, as any upload
                await self.uploader.upload(node)

    async def _survived(self, held: Held, ours: FileRecord) -> bool:
        """Whether the bytes stored at our path are still ours: downloaded and compared."""
        scratch = held.copy.with_suffix(".check")
        try:
            with open(scratch, "wb") as sink:
                got = await self.client.download_file(held.container, ours.id, sink, ours.size)
            if got != held.size:
                return False
            return await trio.to_thread.run_sync(digest, scratch) == held.digest
        finally:
            with contextlib.suppress(OSError):
                os.unlink(scratch)

    def _restore(self, held: Held, ours: FileRecord) -> Node | None:
        """Give the file that stands for ``ours`` its bytes back as unsaved local content (the
        normal upload path sends them); None when a newer local version replaces it anyway."""
        spool = self.uploader.spool
        node = self.ns.inodes.by_key(file_key(ours)) or self.ns.inodes.by_key(file_key(held.record))
        if node is not None and not node.discarded:
            pending = node.pending
            if pending is not None:
                if pending.dirty:
                    return None  # changed since: that version supersedes this one
                pending.touch()  # unchanged since the upload: the same bytes, to send again
                return node
            pending = spool.create(held.container, ours.name, ours, held.copy)
            self.ns.set_pending(node, pending)
            return node
        if held.container.task_id is None:
            dir_node = self.ns.files_dir_node(held.container.project_id)
        else:
            dir_node = self.ns.task_node(held.container.project_id, held.container.task_id)
        pending = spool.create(held.container, ours.name, ours, held.copy)
        return self.ns.adopt_leftover(dir_node, ours.name, pending, ours, [], [])


def _is(row: FileRecord, record: FileRecord) -> bool:
    """Whether a listed row is the uploaded ``record`` (ids are reused: the path must match;
    an upload known by id only must match in name, size and time)."""
    return same_file(row, record)


def _margin(held: Held) -> int:
    """Seconds past a held upload's date before its check: one, and one more for a record
    known by id only, whose date is the server clock's bound when the answer came (kbfs's
    view of the server's clock lags it by up to a second)."""
    return 2 if is_provisional(held.record) else 1


def _shares(row: FileRecord, ours: FileRecord) -> bool:
    return row.id != ours.id and bool(ours.path) and row.path == ours.path
